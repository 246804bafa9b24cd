"""What kind of answer a query wants, from its wording alone (no LLM).

``is_listing``: the query asks for a set ("how many times…", "what books has
Ana read?", "list every…", "which cities…"), so its evidence is spread over
several memories, usually in several sessions, and the ranking should cover
them rather than stack near-copies of the best one. The cues are English
question forms, not anything specific to a data set: counting words, explicit
listing verbs and quantifiers, and a plural noun right after the question word
("what activities does", "which places have").

``asks_when``: the query asks for a time or a duration, so the context shows the
dates that relative words in its memories stand for (``context.py``).
"""

from __future__ import annotations

import re

_CUES = re.compile(
    r"\bhow (many|often|much)\b|\b(list|enumerate)\b|\bname (all|every|each|the)\b"
    r"|\b(all|every|each) (the |of )?\w+|\bwhat (kinds?|types?|sorts?) of\b|\bin what ways\b",
    re.IGNORECASE,
)
_PLURAL_AFTER_WH = re.compile(
    r"\b(?:what|which) (?:\S+ )?(\w{3,}s) (?:has|have|does|do|did|are|were|can|could|would)\b",
    re.IGNORECASE,
)
# Words ending in s that are not plurals, as they follow "what"/"which".
_NOT_PLURAL = frozenset(
    "this was does has is its his hers yours ours theirs always perhaps sometimes news "
    "series class business address process status less miss boss loss dress glass grass bus "
    "gas plus thus yes".split()
)


def is_listing(query: str) -> bool:
    text = " ".join(query.split())
    if _CUES.search(text):
        return True
    return any(m.group(1).lower() not in _NOT_PLURAL for m in _PLURAL_AFTER_WH.finditer(text))


# "When" as the question ("When did...", "...since when?"), not as a clause ("how did Ana
# feel when she won?").
_WHEN = re.compile(
    r"^\W*when\b|\bwhen (?:did|do|does|was|were|is|are|will|would|has|have|had)\b"
    r"|\bwhat (?:date|day|time|year|month|week)\b|\bwhich (?:date|day|year|month|week)\b"
    r"|\bhow long\b|\bhow many (?:days|weeks|months|years)\b|\bsince when\b",
    re.IGNORECASE,
)


def asks_when(query: str) -> bool:
    """The query asks for a time ("When did Ana move?", "How long ago...", "What year...")."""
    return bool(_WHEN.search(query))
