"""Entities without an LLM: names and proper noun phrases found by their shape.

A memory's entities are the runs of capitalised words (joined by "of", "the",
"de", "&" and hyphens: "Bank of Portugal", "Jean-Luc"), all-caps acronyms
("LGBTQ", "NASA"), and quoted titles ("Charlotte's Web" in double quotes).
A capitalised word that opens a sentence counts only when it is not an
ordinary word (the stopword list, pronouns, greetings and discourse words), so
"Yesterday I met Ana" gives "ana" and nothing else. Keys are lowercased.

This is deliberately cheap (one regex pass, no tagger): it runs on every add.
It misses lowercase common-noun topics ("pottery class"); those are the
business of dense and BM25 retrieval, while entities carry the links between
memories that share a *name*, which is what multi-hop questions follow.
Rejected: spaCy NER (a model download and ~10 ms per add), n-gram keyphrase
extraction on every add (noisy on chat text).
"""

from __future__ import annotations

import re

from latentmem.store.lexicon import FTS_STOPWORDS

_NOT_NAMES = FTS_STOPWORDS | frozenset(
    """hey hi hello thanks thank yeah yes no oh wow ok okay sure well so great good nice
    awesome cool sorry please lol haha hmm congrats congratulations anyway also really
    just still maybe definitely absolutely totally honestly actually love glad hope let
    im i'm i've i'll i'd it's that's what's don't can't didn't you're we're they're
    monday tuesday wednesday thursday friday saturday sunday today tomorrow yesterday
    january february march april may june july august september october november december
    mr mrs ms dr""".split()
)
_CONNECTORS = frozenset({"of", "the", "de", "da", "del", "la", "le", "van", "von", "&"})
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'\-]*|[.!?]|&|\"")
_QUOTED = re.compile(r"[\"“]([^\"”]{3,60})[\"”]")
MAX_ENTITIES = 12


def _is_cap(word: str) -> bool:
    return word[0].isupper() and not word.isupper() or (word.isupper() and len(word) >= 2)


def extract(text: str) -> list[str]:
    """Entity keys of ``text``, lowercased, in order of first appearance (at most 12)."""
    found: dict[str, None] = {}
    for title in _QUOTED.findall(text):
        words = title.split()
        if 1 <= len(words) <= 8 and any(w[:1].isupper() for w in words):
            found[" ".join(words).lower().strip(" .,!?")] = None
    tokens = _TOKEN.findall(_QUOTED.sub(" . ", text))
    run: list[str] = []
    sentence_start = True

    def close() -> None:
        while run and run[-1].lower() in _CONNECTORS:
            run.pop()
        if run:
            key = " ".join(run).lower().removesuffix("'s").strip("'-")
            if key and key not in _NOT_NAMES and len(key) > 1:
                found[key] = None
        run.clear()

    for tok in tokens:
        if tok in ".!?\"":
            close()
            sentence_start = tok != '"'
            continue
        low = tok.lower()
        if _is_cap(tok) and not (sentence_start and low in _NOT_NAMES) and low not in _NOT_NAMES:
            run.append(tok.removesuffix("'s"))
            if tok.endswith("'s"):  # a possessive ends the name: "NASA's Ross"
                close()
        elif run and low in _CONNECTORS:
            run.append(low)
        else:
            close()
        sentence_start = False
    close()
    return list(found)[:MAX_ENTITIES]
