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
discarded and the index is rebuilt from SQLite.

Storage tiers (latentmem/store/codec.py). Only an ``fp32`` store (the default)
writes the file: its fp16 index is a second, smaller copy worth keeping. In the
compact tiers the store's blobs already hold what the index holds, so no second
copy goes to disk and the index is rebuilt from SQLite on open (100k vectors:
well under a second). ``fp16`` and ``int8`` use the same fp16 scan (int8 over its
decoded vectors, so an index built incrementally equals a rebuilt one). ``pq``
uses FAISS fast-scan PQ over the store's own codebook: 4-bit codes scanned with
SIMD table lookups, top 100 in 1.7 ms per 100k vectors and 26 ms per 1M (one
thread, 384-d, this 2-core machine under load), against 9.9 and 113 ms for the
fp16 scan. So IVF-PQ is not used: up to 1M vectors per user a flat fast-scan is
4-6 times faster than the default tier, and IVF would add a trained coarse
quantiser, an nprobe to tune and recall lost on top of PQ's. A user partition
well past 1M vectors is where it would start to pay. Fast-scan cannot filter by id,
so a PQ partition also keeps its codes in rowid order and a narrowed search
decodes just the allowed rows. A pq store holds fp16 until its codebook exists;
its index is then rebuilt (``stale`` says so).

Large partitions (``Ann``, latentmem/store/ann.py). In the fp32, fp16 and int8 tiers a
user partition of ``ann_min_vectors`` or more (200k by default) is an IVF index over the
same fp16 vectors: at 1M a search reads ~6% of them instead of all (ann.py says why IVF
and not HNSW; BENCHMARKS.md has its recall). Below the threshold
the flat scan costs a few ms and is exact, so it stays.

The file. Each partition is written with ``faiss.write_index`` straight into its zip
member (``PyCallbackIOWriter``) and read back the same way, never serialised into a
buffer first: at 1M vectors a buffer and its copy were 1.5 GB on top of the index.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeAlias

import faiss
import numpy as np

from latentmem.store.ann import Ann, IVFPart, contents, sample_of, training_size
from latentmem.store.codec import VectorCodec, pq_decode

Part: TypeAlias = "faiss.IndexIDMap2 | IVFPart"  # a flat fp16 partition, or IVF


class VectorIndex(Protocol):
    """A derived, rebuildable index of a store's vectors, partitioned by user and keyed by
    the store's rowids. ``epoch`` is the store's vector epoch it was built or last brought
    up to; ``stale`` says it must be built again (a PQ codebook trained since);
    ``persistent`` says it is worth saving to a file beside the store."""

    epoch: int

    @property
    def stale(self) -> bool: ...

    @property
    def persistent(self) -> bool: ...

    def save(self, path: Path) -> None: ...

    def add(self, user_id: str, rowids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, user_id: str, rowids: np.ndarray) -> None: ...

    def search(
        self, user_id: str, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def count(self) -> int: ...


class _PQPart:
    """One user's PQ partition: fast-scan for whole-partition searches, plus the codes in
    rowid order for searches limited to some rowids (fast-scan has no id filter)."""

    def __init__(self, pq: faiss.ProductQuantizer) -> None:
        flat = faiss.IndexPQ(pq.d, pq.M, pq.nbits, faiss.METRIC_INNER_PRODUCT)
        flat.pq = pq
        flat.is_trained = True
        self.pq = pq
        self.index = faiss.IndexIDMap2(faiss.IndexPQFastScan(flat))
        self._ids = [np.zeros(0, dtype=np.int64)]
        self._codes = [np.zeros((0, pq.code_size), dtype=np.uint8)]

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self._ids) > 1:
            ids, codes = np.concatenate(self._ids), np.concatenate(self._codes)
            order = np.argsort(ids, kind="stable")
            self._ids, self._codes = [ids[order]], [codes[order]]
        return self._ids[0], self._codes[0]

    def add(self, rowids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, rowids)
        self._ids.append(rowids)
        self._codes.append(self.pq.compute_codes(vectors))

    def remove(self, rowids: np.ndarray) -> None:
        self.index.remove_ids(rowids)
        ids, codes = self._merged()
        keep = ~np.isin(ids, rowids)
        self._ids, self._codes = [ids[keep]], [codes[keep]]

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None:
            scores, ids = self.index.search(q, k)
            return ids[0], scores[0]
        all_ids, codes = self._merged()
        mask = np.isin(all_ids, allowed)
        ids = all_ids[mask]
        scores = (pq_decode(self.pq, codes[mask]) @ q[0]).astype(np.float32)
        top = np.argsort(-scores, kind="stable")[:k]
        return ids[top], scores[top]

    def reconstruct(self, rowid: int) -> np.ndarray:
        ids, codes = self._merged()
        pos = int(np.searchsorted(ids, rowid))
        if pos >= len(ids) or ids[pos] != rowid:
            raise KeyError(rowid)
        return pq_decode(self.pq, codes[pos:pos + 1])[0]


class FaissIndex:
    def __init__(self, dim: int, codec: VectorCodec | None = None, ann: Ann | None = None) -> None:
        self.dim = dim
        self.epoch = -1
        self.codec = codec
        self.ann = ann if ann is not None else Ann()
        # PQ partitions once the store's codebook exists; fp16 ones otherwise.
        self.pq = codec.pq if codec is not None and codec.tier == "pq" else None
        self._parts: dict[str, Part | _PQPart] = {}

    @property
    def persistent(self) -> bool:
        """Whether the index is worth a file of its own (see the module docstring)."""
        return self.codec is None or self.codec.tier == "fp32"

    @property
    def stale(self) -> bool:
        """The store trained its PQ codebook after this index was built."""
        return self.pq is None and self.codec is not None and self.codec.tier == "pq" \
            and self.codec.pq is not None

    def _flat(self) -> faiss.IndexIDMap2:
        base = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16,
                                          faiss.METRIC_INNER_PRODUCT)
        return faiss.IndexIDMap2(base)

    def _part(self, user_id: str) -> Part | _PQPart:
        part = self._parts.get(user_id)
        if part is None:
            part = _PQPart(self.pq) if self.pq is not None else self._flat()
            self._parts[user_id] = part
        return part

    def _settle(self, user_id: str) -> None:
        """Give the partition the kind its size calls for (``Ann``): flat becomes IVF at
        ``min_vectors``, and IVF becomes flat again below half of it. The vectors move in
        chunks. (An IVF partition that outgrew its training is ``due`` for ``refill``.)"""
        part = self._parts.get(user_id)
        if part is None or isinstance(part, _PQPart):
            return
        n = part.ntotal
        if isinstance(part, IVFPart):
            if not self.ann.wants_flat(n):
                return
            target: Part = self._flat()
        elif self.ann.wants_ivf(n):
            target = IVFPart.train(self.dim, sample_of(contents(part, self.dim), n,
                                                       training_size(n)), n)
        else:
            return
        for rowids, vectors in contents(part, self.dim):
            if isinstance(target, IVFPart):
                target.add(rowids, vectors)
            else:
                target.add_with_ids(vectors, rowids)
        self._parts[user_id] = target

    def due(self) -> list[str]:
        """Users whose IVF partition holds over twice what it was trained for: its lists
        have grown, so a search reads ever more. ``refill`` trains them again."""
        return [u for u, p in self._parts.items() if isinstance(p, IVFPart) and p.ntotal > 2 * p.trained]

    def refill(self, user_id: str, chunks: Callable[[], Iterable[tuple[str, np.ndarray, np.ndarray]]],
               size: int) -> None:
        """Build one user's partition again from the store (``chunks`` as in ``fill``). The
        old partition goes first: retraining it in place from its own codes would hold it
        twice (2.4 GB at 800k vectors), while the store has every vector."""
        self._parts.pop(user_id, None)
        self.fill(lambda: ((u, r, v) for u, r, v in chunks() if u == user_id), {user_id: size})

    def fill(self, chunks: Callable[[], Iterable[tuple[str, np.ndarray, np.ndarray]]],
             sizes: dict[str, int]) -> None:
        """Fill an empty index from the store. ``chunks()`` yields (user, rowids, vectors)
        afresh each call; ``sizes`` says how many each user holds. A user large enough for
        IVF costs one more pass: a strided sample to train its lists on, so no partition
        is built flat first and converted (at 1M that would hold it twice)."""
        big = {u: n for u, n in sizes.items() if self.pq is None and self.ann.wants_ivf(n)}
        if big:
            stride = {u: max(1, n // training_size(n)) for u, n in big.items()}
            seen = dict.fromkeys(big, 0)
            taken: dict[str, list[np.ndarray]] = {u: [] for u in big}
            for user, _, vectors in chunks():
                if user in big:
                    first = (-seen[user]) % stride[user]
                    taken[user].append(np.array(vectors[first::stride[user]], dtype=np.float32))
                    seen[user] += len(vectors)
            for user, n in big.items():
                if taken[user]:
                    self._parts[user] = IVFPart.train(self.dim, np.concatenate(taken[user]), n)
        for user, rowids, vectors in chunks():
            self._add(user, rowids, vectors)
        for user in list(self._parts):  # not before: a part filling up is not yet its size
            self._settle(user)

    def add(self, user_id: str, rowids: np.ndarray, vectors: np.ndarray) -> None:
        self._add(user_id, rowids, vectors)
        self._settle(user_id)

    def _add(self, user_id: str, rowids: np.ndarray, vectors: np.ndarray) -> None:
        if len(rowids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(rowids), self.dim)
        if self.codec is not None and self.codec.tier == "int8":
            vecs = self.codec.quantise(vecs)  # what a rebuild from the store would add
        ids = np.asarray(rowids, dtype=np.int64)
        part = self._part(user_id)
        if isinstance(part, _PQPart | IVFPart):
            part.add(ids, vecs)
        else:
            part.add_with_ids(vecs, ids)

    def remove(self, user_id: str, rowids: np.ndarray) -> None:
        part = self._parts.get(user_id)
        if part is None or len(rowids) == 0:
            return
        ids = np.asarray(rowids, dtype=np.int64)
        if isinstance(part, _PQPart | IVFPart):
            part.remove(ids)
        else:
            part.remove_ids(ids)
        if part.ntotal == 0:
            del self._parts[user_id]
        else:
            self._settle(user_id)

    def search(
        self, user_id: str, query: np.ndarray, k: int, allowed: np.ndarray | None = None,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (rowids, inner products) of the user's partition, among
        ``allowed`` if given. An IVF partition reads ``ann.nprobe`` lists, or every list
        with ``exact`` (``latentmem check`` compares the index with the store that way)."""
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
            allowed = allowed.astype(np.int64)
            if not isinstance(part, _PQPart | IVFPart):
                params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            limit = min(limit, len(allowed))
        k = min(k, limit)
        # One query is a single pass over the vectors: FAISS's OpenMP team makes it slower
        # (100k vectors, 2 cores: 13 ms vs 6 ms; 1M: 145 ms vs 61 ms), and its threads keep
        # spinning afterwards, stealing the cores from the next query's embedding (18 ms vs
        # 9 ms). omp_set_num_threads changes only the calling thread's setting.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            if isinstance(part, _PQPart):
                found, scores = part.search(q, k, allowed)
            elif isinstance(part, IVFPart):
                found, scores = part.search(q, k, part.nlist if exact else self.ann.nprobe,
                                            allowed)
            else:
                dists, ids = part.search(q, k, params=params)
                found, scores = ids[0], dists[0]
        finally:
            faiss.omp_set_num_threads(threads)
        keep = found >= 0
        return found[keep], scores[keep]

    def count(self) -> int:
        return sum(p.ntotal for p in self._parts.values())

    def users(self) -> list[str]:
        return sorted(self._parts)

    def ids(self, user_id: str) -> np.ndarray:
        """The rowids a user's partition holds (in no particular order)."""
        part = self._parts.get(user_id)
        if part is None:
            return np.zeros(0, dtype=np.int64)
        if isinstance(part, _PQPart):
            return part._merged()[0].copy()
        if isinstance(part, IVFPart):
            return part.ids()
        return faiss.vector_to_array(part.id_map).astype(np.int64)

    def kinds(self) -> dict[str, str]:
        """Each user's partition kind in words ("flat", "ivf1024", "pq")."""
        return {u: "pq" if isinstance(p, _PQPart) else f"ivf{p.nlist}" if isinstance(p, IVFPart)
                else "flat" for u, p in self._parts.items()}

    def reconstruct(self, user_id: str, rowid: int) -> np.ndarray:
        part = self._parts[user_id]
        if isinstance(part, _PQPart | IVFPart):
            return part.reconstruct(rowid)
        return np.asarray(part.reconstruct(int(rowid)), dtype=np.float32)

    # -- persistence ------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write all partitions and the manifest atomically (temp file, then rename)."""
        if self.pq is not None:
            raise ValueError("a PQ index is rebuilt from the store, never saved")
        tmp = path.with_suffix(path.suffix + ".tmp")
        manifest = {
            "dim": self.dim,
            "epoch": self.epoch,
            "count": self.count(),
            "users": list(self._parts),
            # The size each IVF partition was trained for (0: flat), for _settle.
            "trained": [p.trained if isinstance(p, IVFPart) else 0 for p in self._parts.values()],
        }
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr("manifest.json", json.dumps(manifest))
                for i, part in enumerate(self._parts.values()):
                    assert not isinstance(part, _PQPart)
                    with zf.open(f"part-{i}.faiss", "w", force_zip64=True) as member:
                        writer = faiss.PyCallbackIOWriter(member.write)
                        faiss.write_index(part.index if isinstance(part, IVFPart) else part, writer)
                        del writer  # flushes its last block into the member
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, dim: int, codec: VectorCodec | None = None,
             ann: Ann | None = None) -> FaissIndex | None:
        """Read a saved index; None when it is absent, unreadable, of another dimension,
        or of a store whose tier is rebuilt from SQLite."""
        return cls.read(path, dim, codec, ann)[0]

    @classmethod
    def read(cls, path: Path, dim: int, codec: VectorCodec | None = None,
             ann: Ann | None = None) -> tuple[FaissIndex | None, str]:
        """``load``, and what became of the file in words (``latentmem check`` reports it).
        Every member of the zip carries a CRC-32 that reading verifies, so a flipped bit
        anywhere in the vectors is found here, not served."""
        if not cls(dim, codec).persistent:
            return None, "not kept: this tier's index is rebuilt from the store"
        if not path.exists():
            return None, "absent"
        try:
            with zipfile.ZipFile(path) as zf:
                manifest = json.loads(zf.read("manifest.json"))
                if manifest["dim"] != dim:
                    return None, f"of {manifest['dim']}-d vectors, not {dim}-d"
                index = cls(dim, codec, ann)
                index.epoch = int(manifest["epoch"])
                trained = manifest.get("trained") or [0] * len(manifest["users"])
                for i, user in enumerate(manifest["users"]):
                    with zf.open(f"part-{i}.faiss") as member:
                        reader = faiss.PyCallbackIOReader(member.read)
                        part = faiss.read_index(reader)
                        del reader
                        if member.read(1):  # reading to the end is what checks the CRC
                            return None, "unreadable (bytes after a partition)"
                    if part.d != dim:
                        return None, f"unreadable (a partition of {part.d}-d vectors)"
                    index._parts[str(user)] = (IVFPart(part, int(trained[i]))
                                               if isinstance(part, faiss.IndexIVF) else part)
                if index.count() != manifest["count"]:
                    return None, (f"unreadable (holds {index.count()} vectors, its manifest "
                                  f"says {manifest['count']})")
                kinds = index.kinds()
                for user in list(index._parts):  # a changed ann_min_vectors applies here
                    index._settle(user)
                if index.kinds() != kinds:
                    return index, "read; partitions converted for ann_min_vectors"
                return index, "read"
        # A damaged file can fail in the zip reader, the JSON, the manifest's shape or
        # FAISS's deserialiser, each with its own exception; whatever it is, the index is
        # derived and is rebuilt from the store.
        except Exception as exc:  # noqa: BLE001
            return None, f"unreadable ({type(exc).__name__}: {exc})"
