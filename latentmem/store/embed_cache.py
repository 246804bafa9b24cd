"""The embedding cache's table (``encode/cache.py`` says what it is for): in the store's
own database, so deleting a memory can also delete its cached vector, or in a file of its
own that several stores share, as the benchmarks do across LongMemEval haystacks."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from latentmem.store.codec import VectorCodec

# A rowid table: a WITHOUT ROWID row keeps at most ~1 KB in its page (4 KB pages), so each
# 1.5 KB float32 vector spilled into an overflow page of its own, 4.6 KB an entry (008).
_SCHEMA = "CREATE TABLE IF NOT EXISTS embed_cache (key BLOB NOT NULL UNIQUE, vector BLOB NOT NULL)"


class EmbeddingCache:
    """``codec``: the store's vector codec, when the cache lives in a store whose vectors
    are int8 or fp16: the cache then keeps each vector as the store does (388 bytes at
    384-d in int8, not 1,536: as float32 the cache took twice what the rest of a default
    memory did, BENCHMARKS.md "Storage profiles", at scale), and gives back what it keeps,
    so a text gives the same vector whether it was cached or not (``CachedEmbedder``).
    A shared cache file keeps float32."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock | None = None,
                 own: bool = False, codec: VectorCodec | None = None) -> None:
        self.conn = conn
        self.own = own  # the connection is the cache's own (a file of its own), not a store's
        self.lock = lock or threading.RLock()
        self.codec = codec
        with self.lock:
            self.conn.execute(_SCHEMA)

    @classmethod
    def open(cls, path: str | Path) -> EmbeddingCache:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return cls(conn, own=True)

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
                    if self.codec is not None and len(blob) == self._size:
                        found[bytes(key)] = self.codec.decode(bytes(blob))
                        continue
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape[0] == dim:  # float32 (written before the store's tier was)
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
                    [(k, self.encode(v)) for k, v in items],
                )
            except BaseException:
                if not in_tx:
                    self.conn.execute("ROLLBACK")
                raise
            if not in_tx:
                self.conn.execute("COMMIT")

    @property
    def _size(self) -> int:
        assert self.codec is not None
        return self.codec.dim + 4 if self.codec.tier == "int8" else 2 * self.codec.dim

    def encode(self, vector: np.ndarray) -> bytes:
        if self.codec is None:
            return np.asarray(vector, dtype=np.float32).tobytes()
        return self.codec.encode_one(vector)

    def kept(self, vectors: np.ndarray) -> np.ndarray:
        """What the cache gives back for ``vectors`` (itself for float32)."""
        return vectors if self.codec is None else self.codec.quantise(vectors)

    def delete(self, keys: Sequence[bytes]) -> None:
        with self.lock:
            self.conn.executemany("DELETE FROM embed_cache WHERE key = ?", [(k,) for k in keys])

    def close(self) -> None:
        """Close the cache's own connection (one it shares with a store is the store's)."""
        if self.own:
            self.conn.close()

