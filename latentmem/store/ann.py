"""The approximate index a large user partition switches to: FAISS IVF over fp16 vectors.

Why IVF. A flat scan reads every vector: 68 ms per query for 1M fp16 vectors on this
2-core machine, the largest part of a search at that size. ``IndexIVFScalarQuantizer``
(inner product, fp16 codes, not residuals) keeps the same fp16 vectors in ``nlist``
lists around k-means centroids and reads the ``nprobe`` lists nearest the query. The
recall and time at 1M are in BENCHMARKS.md (Speed); ``latentmem bench ann`` sweeps nlist
and nprobe. HNSW was rejected: FAISS's HNSW indexes cannot remove a vector (each delete
would rebuild the partition, or leave tombstones to filter), their graph links add ~250
bytes per vector, and building one for 1M vectors on two cores takes far longer than
training and filling an IVF.

How it stays derived. Nothing here is persisted on its own: the partition's vectors are
the store's, its centroids are trained on a sample of them, and a rebuild from SQLite
gives the same kind of partition. ``FaissIndex`` decides per partition (``Ann``): flat
below ``min_vectors``, IVF from there; an IVF partition that grows to twice the size it
was trained at is built again from the store (``Core.claim_epoch``; its lists would
otherwise lengthen, so a search would read ever more), and one that shrinks below half
of ``min_vectors`` is flat again. A
search limited to some rowids (an agent or session scope) probes proportionally more
lists, up to all of them, so a small scope is an exact scan of its own rows.

The fp16 codes are the vectors (``by_residual`` off), so a partition's contents are read
back without a decoder: a conversion copies them in chunks rather than holding the whole
partition twice as fp32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np

# k-means points per list (FAISS warns below 39) and iterations: the centroids only route
# queries, and 10 iterations at nlist 1,024 train in seconds; more changed recall by <0.001.
TRAIN_PER_LIST = 40
TRAIN_ITERATIONS = 10
MIN_LISTS = 8
SMALL_ADD = 1_000  # fewer vectors than this are added on the calling thread alone
CHUNK = 50_000  # vectors copied per step when a partition is converted or retrained
# A scope of at most 1/EXACT_SHARE of the partition is scored from its own vectors
# (IVFPart.search). Measured at 200k vectors: fetching one vector by rowid costs about
# what scanning 100-200 vectors with an id filter does (2,000 rowids: 15 ms either way).
EXACT_SHARE = 200


@dataclass(frozen=True)
class Ann:
    """When a partition uses IVF (``min_vectors``; None: never) and how many lists a
    search reads (``nprobe``). ``Config.storage.ann_min_vectors`` and ``ann_nprobe``."""

    min_vectors: int | None = 200_000
    nprobe: int = 64

    def wants_ivf(self, n: int) -> bool:
        return self.min_vectors is not None and n >= self.min_vectors

    def wants_flat(self, n: int) -> bool:
        """An IVF partition goes back to flat below half the threshold (not at it, so a
        partition that hovers around it is not converted back and forth)."""
        return self.min_vectors is None or 2 * n < self.min_vectors


def nlist_for(n: int) -> int:
    """Lists for ``n`` vectors: the power of two nearest sqrt(n) (1,024 at 1M), so a list
    holds about sqrt(n) vectors and a search reads about nprobe * sqrt(n)."""
    return max(MIN_LISTS, 2 ** round(math.log2(math.sqrt(max(n, 1)))))


class IVFPart:
    """One user's IVF partition; ``trained`` is the size it was trained for."""

    def __init__(self, index: faiss.IndexIVFScalarQuantizer, trained: int,
                 quantizer: faiss.Index | None = None) -> None:
        self.index = index
        self.trained = trained
        self._quantizer = quantizer  # a new index does not own its quantizer: keep it alive

    @classmethod
    def train(cls, dim: int, sample: np.ndarray, n: int) -> IVFPart:
        """An empty partition for about ``n`` vectors, its centroids trained on ``sample``."""
        # A sample too small for nlist_for(n) lists (a low min_vectors) gets fewer lists.
        nlist = max(1, min(nlist_for(n), len(sample) // (TRAIN_PER_LIST - 1)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        index.by_residual = False
        index.cp.niter = TRAIN_ITERATIONS
        index.cp.seed = 1234
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove and reconstruct by rowid
        return cls(index, n, quantizer)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    def add(self, rowids: np.ndarray, vectors: np.ndarray) -> None:
        # One thread for a few vectors: an OpenMP team per call (an import adds one vector
        # at a time) cost 1.5 ms against 0.26 ms per vector on this busy 2-core machine.
        threads = faiss.omp_get_max_threads()
        if len(rowids) < SMALL_ADD:
            faiss.omp_set_num_threads(1)
        try:
            self.index.add_with_ids(vectors, rowids)
        finally:
            faiss.omp_set_num_threads(threads)

    def remove(self, rowids: np.ndarray) -> None:
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # as for add: a delete is a handful of rowids
        try:
            self.index.remove_ids(rowids)
        finally:
            faiss.omp_set_num_threads(threads)

    def search(self, q: np.ndarray, k: int, nprobe: int, allowed: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``nprobe`` lists; with ``allowed``, proportionally more (a scope holding a tenth
        of the partition reads ten times the lists), so as many of its rows are compared
        as an unfiltered search compares. A small scope (a session, a time window; see
        ``EXACT_SHARE``) is scored directly from its own vectors: reading every list to
        find them would cost a full scan, which grows with the partition."""
        sel = None
        if allowed is not None and len(allowed) * EXACT_SHARE <= self.ntotal:
            try:
                vectors = self.index.reconstruct_batch(allowed)
            except RuntimeError:  # a rowid the partition does not hold: filter the lists
                pass
            else:
                scores = (vectors @ q[0]).astype(np.float32)
                top = np.argsort(-scores, kind="stable")[:k]
                return allowed[top], scores[top]
        if allowed is not None:
            nprobe = math.ceil(nprobe * self.ntotal / max(1, len(allowed)))
            sel = faiss.IDSelectorBatch(allowed)
        params = faiss.SearchParametersIVF(nprobe=min(self.nlist, nprobe), sel=sel)
        dists, ids = self.index.search(q, k, params=params)
        return ids[0], dists[0]

    def reconstruct(self, rowid: int) -> np.ndarray:
        return np.asarray(self.index.reconstruct(int(rowid)), dtype=np.float32)

    def ids(self) -> np.ndarray:
        lists = self.index.invlists
        parts = [np.zeros(0, dtype=np.int64)]
        for i in range(self.nlist):
            size = lists.list_size(i)
            if size:
                parts.append(np.array(faiss.rev_swig_ptr(lists.get_ids(i), size), dtype=np.int64))
        return np.concatenate(parts)


def contents(part: faiss.IndexIDMap2 | IVFPart, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A flat fp16 or IVF partition's (rowids, fp32 vectors), in chunks of about CHUNK."""
    if isinstance(part, IVFPart):
        lists = part.index.invlists
        ids: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        held = 0
        for i in range(part.nlist):
            size = lists.list_size(i)
            if not size:
                continue
            ids.append(np.array(faiss.rev_swig_ptr(lists.get_ids(i), size), dtype=np.int64))
            raw = faiss.rev_swig_ptr(lists.get_codes(i), size * part.index.code_size)
            codes.append(np.frombuffer(raw, dtype=np.float16).reshape(size, dim).astype(np.float32))
            held += size
            if held >= CHUNK:
                yield np.concatenate(ids), np.concatenate(codes)
                ids, codes, held = [], [], 0
        if held:
            yield np.concatenate(ids), np.concatenate(codes)
        return
    all_ids = faiss.vector_to_array(part.id_map).astype(np.int64)
    base = faiss.downcast_index(part.index)
    raw = faiss.rev_swig_ptr(base.codes.data(), len(all_ids) * base.code_size)  # a view, no copy
    flat = np.frombuffer(raw, dtype=np.float16).reshape(-1, dim)
    for lo in range(0, len(all_ids), CHUNK):
        yield all_ids[lo:lo + CHUNK], flat[lo:lo + CHUNK].astype(np.float32)


def sample_of(chunks: Iterator[tuple[np.ndarray, np.ndarray]], n: int, want: int) -> np.ndarray:
    """Every (n // want)-th vector of ``chunks`` (n vectors in all): a training sample that
    spans the whole partition without holding it."""
    stride = max(1, n // max(1, want))
    taken: list[np.ndarray] = []
    seen = 0
    for _, vectors in chunks:
        first = (-seen) % stride
        taken.append(vectors[first::stride].copy())  # not a view: it would keep the chunk
        seen += len(vectors)
    return np.concatenate(taken) if taken else np.zeros((0, 0), dtype=np.float32)


def training_size(n: int) -> int:
    return TRAIN_PER_LIST * nlist_for(n)
