"""Vector storage tiers: how a store keeps each vector, as one SQLite blob.

======  ============================================  =============  ==================
tier    blob                                          bytes (384-d)  LoCoMo dev, conv-26
======  ============================================  =============  ==================
fp32    float32                                       1536           R@10 0.832, 1.000
fp16    float16                                       768            R@10 0.832, 1.000
int8    float32 scale, then one int8 per component    388            R@10 0.832, 0.996
pq      FAISS PQ: one 4-bit code per dimension        192            R@10 0.822, 0.957
======  ============================================  =============  ==================

(The last column: ``latentmem bench storage --data locomo10_dev.json --conversations
conv-26``: recall@10, and the overlap of the engine's dense top 10 with exact fp32 search.
The same command without --conversations gives all five dev conversations.)

The tier is chosen when a store is created (its profile's, store/profiles.py: int8 for
``default``, pq for ``compact``, unless ``vector_tier`` says otherwise) and kept in its
``meta`` table; a store from before tiers holds fp32 (``DEFAULT_TIER``). The blob's
length tells its format (the four lengths differ for every dim above 4), so one store may
hold blobs of several formats: a ``pq`` store writes fp16 until it holds ``PQ_TRAIN_MIN``
vectors, then trains its codebook on them and re-encodes everything, and a memory demoted
to lossy can hold PQ codes in a store of any tier that has a codebook.

PQ. FAISS ProductQuantizer with one dimension per sub-quantizer and 16 centroids each
(4 bits): a learned, non-uniform 4-bit scalar code, which FAISS's fast-scan searches with
SIMD table lookups. Measured on conv-26 against 2-d sub-quantizers (96 bytes): R@10 0.812
(-2.0 points) and dense overlap 0.881, against 0.822 (-1.0) and 0.957 at 192 bytes; the
issue's bound is one point. 8-bit codes were not an option: their codebook (256 centroids
per sub-space) is 16 times larger, up to 400 KB, which a store of a few hundred memories
pays per memory, and needs thousands of vectors to train. The codebook here is 12 KB as
fp16, trains well on a few hundred vectors, and is trained once and never again (the
original vectors are gone by then). Centroids are rounded to fp16 before use, so what is
stored is exactly what encodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

from latentmem.errors import InvalidInputError, StoreError

TIERS = ("fp32", "fp16", "int8", "pq")
DEFAULT_TIER = "fp32"  # what a store that records no tier holds (older SQLite; PostgreSQL)
PQ_SUB_DIMS = 1  # dimensions per sub-quantizer
PQ_BITS = 4  # fast-scan needs 4-bit codes, and an even number of sub-quantizers
# A pq store trains its codebook once it holds this many vectors (16 points per centroid),
# on at most PQ_TRAIN_MAX of them.
PQ_TRAIN_MIN = 256
PQ_TRAIN_MAX = 20_000


def check_tier(tier: object) -> str:
    if tier not in TIERS:
        raise InvalidInputError(f"vector_tier must be one of {list(TIERS)}, found {tier!r}")
    return str(tier)


def pq_decode(pq: faiss.ProductQuantizer, codes: np.ndarray) -> np.ndarray:
    """PQ codes -> unit vectors. Stored vectors are unit length, and the length of a
    reconstruction is only error: dividing it out brings the cosine top 10 of LoCoMo dev
    2-3 points closer to exact (0.863 -> 0.885 on conv-26, 2-d sub-quantizers)."""
    out = pq.decode(np.ascontiguousarray(codes, dtype=np.uint8))
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.asarray(out, dtype=np.float32)


class VectorCodec:
    """Encodes vectors into a tier's blobs and decodes blobs of any tier (by length)."""

    def __init__(self, tier: str, dim: int, codebook: bytes | None = None,
                 sub_dims: int = PQ_SUB_DIMS) -> None:
        """``sub_dims``: dimensions per PQ sub-quantizer (a store's own, in its ``meta``;
        the compact profile uses 2: half the bytes, store/profiles.py)."""
        self.tier = check_tier(tier)
        self.dim = dim
        self.sub_dims = sub_dims
        self.pq: faiss.ProductQuantizer | None = None
        pq_ok = dim % sub_dims == 0 and (dim // sub_dims) % 2 == 0
        if tier == "pq" and not pq_ok:
            raise InvalidInputError(f"vector_tier 'pq' needs a dimension divisible by "
                                    f"{2 * sub_dims}, found {dim}")
        sizes = {"fp32": 4 * dim, "fp16": 2 * dim, "int8": dim + 4}
        if pq_ok:
            sizes["pq"] = self.pq_bytes
        # Lengths are distinct above 4 dimensions; below, the store's own tier wins.
        self._formats = {sizes[self.tier]: self.tier}
        for fmt, size in sizes.items():
            self._formats.setdefault(size, fmt)
        if codebook is not None:
            self.load_codebook(codebook)

    @property
    def pq_bytes(self) -> int:
        return self.dim // self.sub_dims * PQ_BITS // 8

    @property
    def writes(self) -> str:
        """The format new blobs get: a pq store writes fp16 until its codebook exists."""
        return "fp16" if self.tier == "pq" and self.pq is None else self.tier

    def needs_training(self, count: int) -> bool:
        return self.tier == "pq" and self.pq is None and count >= PQ_TRAIN_MIN

    # -- codebook -------------------------------------------------------------

    def _new_pq(self) -> faiss.ProductQuantizer:
        pq = faiss.ProductQuantizer(self.dim, self.dim // self.sub_dims, PQ_BITS)
        pq.cp.min_points_per_centroid = 1  # a few hundred points suffice for 16 centroids
        pq.verbose = False
        return pq

    def train(self, vectors: np.ndarray) -> bytes:
        """Train the PQ codebook on ``vectors`` (a sample, evenly spread, if there are
        many); returns the codebook as stored (fp16 centroids)."""
        x = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(x) > PQ_TRAIN_MAX:
            x = x[np.linspace(0, len(x) - 1, PQ_TRAIN_MAX).astype(np.int64)]
        pq = self._new_pq()
        pq.train(x)
        codebook = faiss.vector_to_array(pq.centroids).astype("<f2").tobytes()
        self.load_codebook(codebook)
        return codebook

    def load_codebook(self, codebook: bytes) -> None:
        pq = self._new_pq()
        centroids = np.frombuffer(codebook, dtype="<f2").astype(np.float32)
        if centroids.size != pq.M * pq.ksub * pq.dsub:
            raise StoreError(f"PQ codebook holds {centroids.size} numbers; a {self.dim}-d "
                             f"codebook holds {pq.M * pq.ksub * pq.dsub}")
        faiss.copy_array_to_vector(centroids, pq.centroids)
        pq.sync_transposed_centroids()
        self.pq = pq

    # -- blobs ----------------------------------------------------------------

    def encode(self, vectors: np.ndarray, tier: str | None = None) -> list[bytes]:
        """One blob per row of ``vectors``, in ``tier`` (default: what this store writes)."""
        x = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        fmt = tier or self.writes
        if fmt == "fp32":
            raw = x.astype("<f4")
        elif fmt == "fp16":
            raw = x.astype("<f2")
        elif fmt == "int8":
            step = np.abs(x).max(axis=1, keepdims=True) / 127.0
            step[step == 0] = 1.0
            codes = np.clip(np.rint(x / step), -127, 127).astype(np.int8)
            # The stored scale makes the decoded vector unit length (stored vectors are;
            # what a decoded one has beyond it is quantisation error) and depends on the
            # codes alone: a decoded vector encodes to the same bytes, so an export
            # imports exactly (an import re-normalises what is not unit length).
            norm = np.linalg.norm(codes.astype(np.float32), axis=1, keepdims=True)
            scale = (1.0 / np.where(norm > 0, norm, 1.0)).astype(np.float32)
            return [s.astype("<f4").tobytes() + c.tobytes()
                    for s, c in zip(scale, codes, strict=True)]
        elif fmt == "pq":
            if self.pq is None:
                raise StoreError("this store has no PQ codebook yet")
            raw = self.pq.compute_codes(x)
        else:
            check_tier(fmt)
        return [row.tobytes() for row in raw]

    def encode_one(self, vector: np.ndarray) -> bytes:
        return self.encode(vector)[0]

    def format_of(self, blob: bytes) -> str:
        fmt = self._formats.get(len(blob))
        if fmt is None:
            raise StoreError(f"a {len(blob)}-byte vector blob is no known format for "
                             f"{self.dim}-d vectors")
        return fmt

    def decode(self, blob: bytes) -> np.ndarray:
        return self.decode_many([blob])[0]

    def decode_many(self, blobs: Sequence[bytes]) -> np.ndarray:
        """Float32 vectors, one row per blob; blobs of different formats may be mixed."""
        out = np.empty((len(blobs), self.dim), dtype=np.float32)
        groups: dict[str, list[int]] = {}
        for i, blob in enumerate(blobs):
            groups.setdefault(self.format_of(blob), []).append(i)
        for fmt, rows in groups.items():
            joined = b"".join(blobs[i] for i in rows)
            if fmt == "fp32":
                out[rows] = np.frombuffer(joined, dtype="<f4").reshape(len(rows), self.dim)
            elif fmt == "fp16":
                out[rows] = np.frombuffer(joined, dtype="<f2").reshape(len(rows), self.dim)
            elif fmt == "int8":
                raw = np.frombuffer(joined, dtype=np.uint8).reshape(len(rows), self.dim + 4)
                scale = raw[:, :4].copy().view("<f4")
                out[rows] = raw[:, 4:].view(np.int8) * scale
            else:
                if self.pq is None:
                    raise StoreError("PQ-coded vectors found but the store has no codebook")
                codes = np.frombuffer(joined, dtype=np.uint8).reshape(len(rows), -1)
                out[rows] = pq_decode(self.pq, codes)
        return out

    def quantise(self, vectors: np.ndarray) -> np.ndarray:
        """What the store will give back for ``vectors``: encode, then decode."""
        return self.decode_many(self.encode(vectors))
