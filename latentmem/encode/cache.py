"""Embedding cache keyed by content hash: the same text is never embedded twice.

The key is the first 16 bytes of sha256(model name + NUL + text). The cache
lives in a SQLite table (by default in the store's own database, so deleting a
memory can also delete its cached vector) or in a separate file that several
stores share, as the benchmarks do across LongMemEval haystacks.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latentmem.encode.base import Embedder

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS embed_cache (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID"
)


def cache_key(model: str, text: str) -> bytes:
    return hashlib.sha256(model.encode() + b"\x00" + text.encode()).digest()[:16]


class EmbeddingCache:
    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock | None = None) -> None:
        self.conn = conn
        self.lock = lock or threading.RLock()
        with self.lock:
            self.conn.execute(_SCHEMA)

    @classmethod
    def open(cls, path: str | Path) -> EmbeddingCache:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return cls(conn)

    def get_many(self, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self.lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    f"SELECT key, vector FROM embed_cache WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape[0] == dim:
                        found[bytes(key)] = vec
        return found

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        if not items:
            return
        with self.lock:
            in_tx = self.conn.in_transaction
            if not in_tx:
                self.conn.execute("BEGIN")
            try:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO embed_cache(key, vector) VALUES (?, ?)",
                    [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items],
                )
            except BaseException:
                if not in_tx:
                    self.conn.execute("ROLLBACK")
                raise
            if not in_tx:
                self.conn.execute("COMMIT")

    def delete(self, keys: Sequence[bytes]) -> None:
        with self.lock:
            self.conn.executemany("DELETE FROM embed_cache WHERE key = ?", [(k,) for k in keys])


class CachedEmbedder:
    """Wraps an embedder; looks each text up in the cache before embedding it."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.dim = inner.dim
        self.hits = 0
        self.misses = 0

    def token_vectors(self, texts: Sequence[str], max_tokens: int = 64) -> list[np.ndarray]:
        """Not cached: token vectors are 30-60x the size of a text's embedding."""
        inner = getattr(self.inner, "token_vectors", None)
        if inner is None:
            raise AttributeError(f"{self.name} has no token vectors")
        return list(inner(texts, max_tokens))

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        keys = [cache_key(self.name, t) for t in texts]
        found = self.cache.get_many(list(dict.fromkeys(keys)), self.dim)
        missing = [i for i, k in enumerate(keys) if k not in found]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            if key in found:
                out[i] = found[key]
        if missing:
            unique = list(dict.fromkeys(texts[i] for i in missing))
            vectors = self.inner.embed_batch(unique)
            by_text = dict(zip(unique, vectors, strict=True))
            for i in missing:
                out[i] = by_text[texts[i]]
            self.cache.put_many(
                [(cache_key(self.name, t), v) for t, v in by_text.items() if np.isfinite(v).all()]
            )
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        return out
