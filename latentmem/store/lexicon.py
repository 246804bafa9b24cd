"""Terms for BM25 outside SQLite, cut exactly as the SQLite store's full-text index cuts them.

The SQLite store's BM25 is FTS5 with the ``porter unicode61`` tokenizer. A backend that
keeps its own term statistics (PostgreSQL) must see the same terms, or the lexical side
ranks differently on the same data. So the terms come from that very tokenizer: an
in-memory SQLite database (the standard library's, no file) with a scratch FTS5 table
and an ``fts5vocab`` view over it, which says which stems a text holds and how often.

Rejected: PostgreSQL's ``to_tsvector('english', ...)``: the Snowball stemmer, a stop
list of its own and a different word splitter give other terms and other document
lengths, so BM25 would rank differently from SQLite's; and a Porter stemmer package,
a dependency that still splits words differently from unicode61.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections import Counter

# Words that carry no retrieval signal in a question; removed from BM25 queries only.
FTS_STOPWORDS = frozenset(
    """a about after again all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves
    out over own same she should so some such than that the their theirs them themselves then
    there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours yourself yourselves""".split()
)
_FTS_TERM = re.compile(r"\w+", re.UNICODE)
# FTS5's bm25() constants.
K1 = 1.2
B = 0.75


def query_words(query: str) -> list[str]:
    """The words of a query that BM25 scores: lowercased, stopwords out (unless nothing
    else is left), each once."""
    terms = [t.lower() for t in _FTS_TERM.findall(query)]
    kept = list(dict.fromkeys(t for t in terms if t not in FTS_STOPWORDS))
    return kept or list(dict.fromkeys(terms))


def affordable(words: list[str], postings: list[int], budget: int) -> list[str]:
    """The words whose postings (``postings[i]``: the documents holding ``words[i]``) fit
    in ``budget``, taken rarest first; the two rarest are always kept. In query order.

    BM25 scores every document that holds any word of an OR query, so one common word
    ("like", "think") makes a search over 100k memories score tens of thousands of them.
    The rarest words carry nearly all of BM25's weight (idf), so words are taken in order
    of document frequency until their postings would exceed the budget."""
    ranked = sorted(range(len(words)), key=lambda i: (postings[i], i))
    kept: list[int] = []
    total = 0
    for i in ranked:
        if len(kept) >= 2 and total + postings[i] > budget:
            break
        kept.append(i)
        total += postings[i]
    return [words[i] for i in sorted(kept)]


class Lexicon:
    """Text -> {stem: count}, as FTS5 ``porter unicode61`` indexes it."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._conn.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize = 'porter unicode61')")
        self._conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, instance)")
        self._lock = threading.Lock()

    def terms(self, texts: list[str]) -> list[Counter[str]]:
        """The stems of each text with their counts."""
        out: list[Counter[str]] = [Counter() for _ in texts]
        if not texts:
            return out
        with self._lock:
            self._conn.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)", list(enumerate(texts)))
            try:
                for doc, term, n in self._conn.execute(
                        "SELECT doc, term, count(*) FROM v GROUP BY doc, term"):
                    out[int(doc)][str(term)] = int(n)
            finally:
                self._conn.execute("DELETE FROM t")
        return out

    def stems(self, words: list[str]) -> list[str | None]:
        """Each word's stem (None for a word that holds no term)."""
        found = self.terms(words)
        return [next(iter(c)) if c else None for c in found]
