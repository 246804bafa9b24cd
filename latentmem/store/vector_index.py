"""The FAISS index: a derived, rebuildable cache of the vectors in SQLite.

One inner-product index per user, keyed by SQLite rowid, holding the vectors
as fp16 (``IndexScalarQuantizer(QT_fp16)`` in an ``IndexIDMap2``). A flat scan
is memory-bound, so half the bytes is about half the time: 100k vectors, one
thread, top 100: 11.9 ms fp32 vs 6.3 ms fp16, with the same top 100 (overlap
1.000 on random unit vectors; fp16 keeps 3 significant digits of a cosine).
The index only *proposes* candidates: their scores are recomputed exactly
from the fp32 vectors in SQLite, so rounding never reaches a score. 8-bit
scalar quantisation was slower here (7.7 ms, decode cost) and lost 1.2% of
the top 100. Partitioning by user makes scope isolation structural (a
search only ever sees its own user's vectors) and keeps each search as small
as the user's memory, not the whole store. Narrower scopes (agent, session)
pass an ``IDSelectorBatch`` of allowed rowids.

The file ``vectors.faiss.npz`` holds every partition plus a manifest with the
store's vector epoch and row count at save time. On open, a missing file, an
unreadable one, or one whose epoch or count differ from the store's is
discarded and the index is rebuilt from SQLite. Exact search is the right
default up to a few hundred thousand vectors per user; IVF/PQ tiers come with
the storage-tier work.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np


class VectorIndex(Protocol):
    epoch: int

    def add(self, user_id: str, rowids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, user_id: str, rowids: np.ndarray) -> None: ...

    def search(
        self, user_id: str, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def count(self) -> int: ...


class FaissIndex:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.epoch = -1
        self._parts: dict[str, faiss.IndexIDMap2] = {}

    def _part(self, user_id: str) -> faiss.IndexIDMap2:
        part = self._parts.get(user_id)
        if part is None:
            base = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
            part = faiss.IndexIDMap2(base)
            self._parts[user_id] = part
        return part

    def add(self, user_id: str, rowids: np.ndarray, vectors: np.ndarray) -> None:
        if len(rowids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(rowids), self.dim)
        self._part(user_id).add_with_ids(vecs, np.asarray(rowids, dtype=np.int64))

    def remove(self, user_id: str, rowids: np.ndarray) -> None:
        part = self._parts.get(user_id)
        if part is None or len(rowids) == 0:
            return
        part.remove_ids(np.asarray(rowids, dtype=np.int64))
        if part.ntotal == 0:
            del self._parts[user_id]

    def search(
        self, user_id: str, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        part = self._parts.get(user_id)
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if part is None or part.ntotal == 0 or k <= 0:
            return empty
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        params = None
        limit = part.ntotal
        if allowed is not None:
            if len(allowed) == 0:
                return empty
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed.astype(np.int64)))
            limit = min(limit, len(allowed))
        k = min(k, limit)
        # One query is a single pass over the vectors: FAISS's OpenMP team makes it slower
        # (100k vectors, 2 cores: 13 ms vs 6 ms; 1M: 145 ms vs 61 ms), and its threads keep
        # spinning afterwards, stealing the cores from the next query's embedding (18 ms vs
        # 9 ms). omp_set_num_threads changes only the calling thread's setting.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, ids = part.search(q, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def count(self) -> int:
        return sum(p.ntotal for p in self._parts.values())

    def users(self) -> list[str]:
        return sorted(self._parts)

    def reconstruct(self, user_id: str, rowid: int) -> np.ndarray:
        return np.asarray(self._parts[user_id].reconstruct(int(rowid)), dtype=np.float32)

    # -- persistence ------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write all partitions and the manifest atomically (temp file, then rename)."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        manifest = {
            "dim": self.dim,
            "epoch": self.epoch,
            "count": self.count(),
            "users": list(self._parts),
        }
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest))
            for i, part in enumerate(self._parts.values()):
                zf.writestr(f"part-{i}.faiss", faiss.serialize_index(part).tobytes())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int) -> FaissIndex | None:
        """Read a saved index; None when it is absent, unreadable or of another dimension."""
        if not path.exists():
            return None
        try:
            with zipfile.ZipFile(path) as zf:
                manifest = json.loads(zf.read("manifest.json"))
                if manifest["dim"] != dim:
                    return None
                index = cls(dim)
                index.epoch = int(manifest["epoch"])
                for i, user in enumerate(manifest["users"]):
                    raw = np.frombuffer(zf.read(f"part-{i}.faiss"), dtype=np.uint8)
                    index._parts[user] = faiss.deserialize_index(raw)
                if index.count() != manifest["count"]:
                    return None
                return index
        except (OSError, KeyError, ValueError, RuntimeError, zipfile.BadZipFile):
            return None
