"""The scope's own name, read as first person.

What ``ana`` tells an assistant is stored as she said it: "I moved to Lisbon", "my sister
works in Porto". Questions about her name her: "where does Ana live", "what is Ana's
job". Embedded as they are, such questions sit nearer to memories that mention other
people by name than to her own first-person ones (all-MiniLM-L6-v2: "where does ana live"
scores 0.300 against the sister's memory and 0.259 against "I moved to Lisbon", while
"where do I live" scores 0.178 and 0.380).

So when a query names the scope's user (or agent), it is also read in the first person
("where does ana live" -> "where do I live", "Ana's job" -> "my job"), and the query
vector is the normalised sum of both readings: memories in the first person come closer,
and memories that name her (a friend's notes: "Ana moved...") stay close. BM25 needs no
change: the pronouns are stop words there, and the name keeps matching memories that
spell it.

A name is the part of the user id after a tenant prefix (``acme:ana`` -> ``ana``), whole or
by its parts (``ana.silva`` -> "ana silva", "ana", "silva"); ids that are not names (the
default user, ids with digits, stop words) are never read as one.

Rejected: rewriting to the first person only (a memory that names the user by name would
lose its match), and adding the pronouns to BM25 (they are stop words, and would match
every memory anyway).
"""

from __future__ import annotations

import re

from latentmem.store.lexicon import FTS_STOPWORDS

_NOT_NAMES = frozenset({"default", "user", "users", "me", "you", "agent", "assistant", "system"})
_PART = re.compile(r"^[^\W\d_]{2,}$")

# (before the name, after the name) -> replacement, tried in order; \b-bounded, any case.
_AUXILIARY = {"does": "do", "is": "am", "has": "have", "was": "was", "did": "did",
              "can": "can", "will": "will", "would": "would", "should": "should"}


def names_of(scope_id: str | None) -> list[str]:
    """The names a scope id may go by in a query, longest first."""
    if not scope_id:
        return []
    base = scope_id.split(":", 1)[-1]
    parts = [p for p in re.split(r"[._\-\s]+", base) if p]
    if not parts or not all(_PART.match(p) for p in parts):
        return []
    found = {" ".join(parts).lower()} | {p.lower() for p in parts}
    return sorted((n for n in found if n not in _NOT_NAMES and n not in FTS_STOPWORDS),
                  key=lambda n: (-len(n), n))


def first_person(query: str, names: list[str]) -> str | None:
    """``query`` with the first of ``names`` it holds read as the speaker ("I", "my",
    "me"); None when it names none of them."""
    for name in names:
        word = r"\b" + r"\s+".join(re.escape(w) for w in name.split()) + r"\b"
        if not re.search(word, query, re.IGNORECASE):
            continue
        text = re.sub(word + r"(?:'s|’s|s')", "my", query, flags=re.IGNORECASE)
        for aux, mine in _AUXILIARY.items():
            text = re.sub(rf"\b{aux}\s+{word}", f"{mine} I", text, flags=re.IGNORECASE)
        text = re.sub(word + r"\s+is\b", "I am", text, flags=re.IGNORECASE)
        text = re.sub(word + r"\s+has\b", "I have", text, flags=re.IGNORECASE)
        text = re.sub(r"\b(about|for|with|to|from|by|of|at|tell|told|asked|gave|give|"
                      r"remind|help|helped|call|called)\s+" + word, r"\1 me", text,
                      flags=re.IGNORECASE)
        text = re.sub(word, "I", text, flags=re.IGNORECASE)
        return text
    return None
