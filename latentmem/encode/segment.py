"""Turning raw input into records' text fields, without an LLM.

* **Title**: the first sentence, cut at a word boundary to 60 characters.
  Conversation turns are short, so their first sentence names their subject
  far more often than any keyword list does.
* **Summary**: for one or two sentences, the text itself (cut to 240
  characters). For longer text, extractive: the sentences with the highest
  centrality (sum of word overlap with every other sentence, normalised by
  length), kept in their original order, up to 240 characters.
* **Type**: ``message`` for chat turns; otherwise ``preference`` for first-person
  likes and dislikes, ``event`` when the text holds a date or a time, ``fact``
  for other first-person statements, ``document`` for long text, ``note`` else.
* **Importance prior**: a [0, 1] score from cheap features (length, numbers,
  dates, capitalised names, first-person facts); the learned controller
  replaces it later.
* **Chunks**: text longer than the chunk budget is split at sentence
  boundaries into chunks of at most that many embedder tokens (estimated as
  words x 1.3, so no tokenizer runs on the write path).
"""

from __future__ import annotations

import math
import re
from collections import Counter

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n{2,}|\n(?=[-*•\d])")
_WORD = re.compile(r"[A-Za-z0-9']+")
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?\b")
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_DATEISH = re.compile(
    rf"\b(?:(?:{_MONTHS})\b|\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}[:.]\d{{2}}\s*(?:am|pm)?"
    r"|yesterday|today|tomorrow|last (?:week|month|year|night)|next (?:week|month|year)"
    r"|(?:mon|tues|wednes|thurs|fri|satur|sun)day)",
    re.IGNORECASE,
)
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|my|me|we|our)\b", re.IGNORECASE)
_PREFERENCE = re.compile(
    r"\b(?:i|we)\s+(?:really\s+|don't\s+|do not\s+)?(?:like|love|prefer|enjoy|hate|dislike|"
    r"can't stand|adore|favou?r)\b|\bmy favou?rite\b",
    re.IGNORECASE,
)
_STOP = frozenset(
    "a an and are as at be but by for from has have he her his i in is it its me my of on or "
    "our she so that the their them they this to was we were will with you your".split()
)
STOPWORDS = _STOP  # public name for other modules

TITLE_CHARS = 60
SUMMARY_CHARS = 240


def sentences(text: str) -> list[str]:
    parts = [p.strip() for p in _SENTENCE.split(text.strip())]
    return [p for p in parts if p]


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def derive_title(text: str) -> str:
    sents = sentences(text)
    return _cut(sents[0] if sents else text, TITLE_CHARS)


def derive_summary(text: str) -> str:
    sents = sentences(text)
    if len(sents) <= 2:
        return _cut(text, SUMMARY_CHARS)
    bags = [Counter(w for w in words(s) if w not in _STOP) for s in sents]
    # Each sentence's overlap with the others, sum over j != i of sum over w of
    # min(count_i(w), count_j(w)), computed word by word among the sentences that hold
    # the word (one pass, not every pair of sentences: a 1,000-character turn spent
    # 1.3 ms here).
    holders: dict[str, list[tuple[int, int]]] = {}
    for i, bag in enumerate(bags):
        for w, c in bag.items():
            holders.setdefault(w, []).append((i, c))
    overlap = [0] * len(bags)
    for held in holders.values():
        if len(held) < 2:
            continue
        if all(c == 1 for _, c in held):
            for i, _ in held:
                overlap[i] += len(held) - 1
            continue
        for i, c in held:
            overlap[i] += sum(min(c, d) for j, d in held if j != i)
    scores = [overlap[i] / math.sqrt(1 + sum(bag.values())) - 0.01 * i
              for i, bag in enumerate(bags)]
    chosen: list[int] = []
    used = 0
    for i in sorted(range(len(sents)), key=lambda i: -scores[i]):
        if used + len(sents[i]) + 1 > SUMMARY_CHARS and chosen:
            continue
        chosen.append(i)
        used += len(sents[i]) + 1
        if used >= SUMMARY_CHARS * 0.8:
            break
    return _cut(" ".join(sents[i] for i in sorted(chosen)), SUMMARY_CHARS)


def derive_type(text: str, role: str | None) -> str:
    if role is not None:
        return "message"
    if _PREFERENCE.search(text):
        return "preference"
    if _DATEISH.search(text):
        return "event"
    if _FIRST_PERSON.search(text):
        return "fact"
    if len(text) > 2000:
        return "document"
    return "note"


def importance_prior(text: str) -> float:
    """Cheap [0, 1] prior: informative, specific, first-person text scores higher."""
    toks = words(text)
    if not toks:
        return 0.0
    content = [t for t in toks if t not in _STOP]
    length = min(1.0, math.log1p(len(content)) / math.log1p(40))
    names = sum(1 for w in _WORD.findall(text)[1:] if w[:1].isupper())
    specifics = min(1.0, 0.25 * (len(_NUMBER.findall(text)) + names)) + (
        0.3 if _DATEISH.search(text) else 0.0
    )
    personal = 0.3 if _PREFERENCE.search(text) else 0.15 if _FIRST_PERSON.search(text) else 0.0
    score = 0.15 + 0.35 * length + 0.3 * min(1.0, specifics) + personal
    return round(min(1.0, score), 4)


def estimate_tokens(text: str) -> int:
    return int(len(text.split()) * 1.3) + 1


def chunk(text: str, max_tokens: int) -> list[str]:
    """Split at sentence boundaries into pieces of at most ``max_tokens`` (estimated)."""
    if estimate_tokens(text) <= max_tokens:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for sent in sentences(text):
        n = estimate_tokens(sent)
        if n > max_tokens:
            # A single overlong sentence: cut it by words.
            ws = sent.split()
            step = max(1, int(max_tokens / 1.3))
            parts = [" ".join(ws[i : i + step]) for i in range(0, len(ws), step)]
        else:
            parts = [sent]
        for part in parts:
            n = estimate_tokens(part)
            if current and size + n > max_tokens:
                pieces.append(" ".join(current))
                current, size = [], 0
            current.append(part)
            size += n
    if current:
        pieces.append(" ".join(current))
    return pieces
