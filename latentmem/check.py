"""``latentmem check``: is this store whole, and does its vector index agree with it?

The store checks itself (``Store.integrity``, store/integrity.py: SQLite's own integrity
check, the full-text index against the texts, dangling edges and mentions, every stored
vector finite and of the store's dimension). Then the vector index is compared with the
store, user by user: the same rowids, each indexed vector equal to the stored one (cosine
>= 0.999: the index may keep 16 bits), and for a few probe vectors per user the scores an
exact scan of the stored vectors gives. The saved index file's state at open is reported
beside it; a damaged file was already replaced by a rebuild then. A ``pq`` store's index
holds 4-bit codes scanned approximately, so there only the rowids are compared.

``repair=True`` rebuilds the derived parts (store/integrity.py says which) and the vector
index, then checks again. It never changes a memory, so it cannot lose one; problems that
remain after it are damage to the memories themselves (RELIABILITY.md, "Recovery").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from latentmem.core import Core
from latentmem.errors import InvalidInputError, StoreCorruptError
from latentmem.store.vector_index import FaissIndex

PROBES = 3  # probe searches per user
TOP = 10
MATCH = 0.999  # least cosine between an indexed vector and the stored one
SCORE_ATOL = 5e-3  # an fp16 index's scores against the exact ones


class NoEmbedding:
    """Stands in for a store's embedder when nothing will be embedded (``latentmem check``
    opens a store whatever model wrote it, without loading that model)."""

    def __init__(self, name: str, dim: int) -> None:
        self.name = name
        self.dim = dim

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        raise InvalidInputError("this store was opened to be checked; it embeds nothing")


def check(core: Core, repair: bool = False) -> dict[str, Any]:
    repaired: list[str] = []
    problems = _problems(core)
    if repair and problems and not any(p.startswith("sqlite:") for p in problems):
        repaired = core.store.repair()
        core.rebuild_index()
        repaired.append("rebuilt the vector index")
        problems = _problems(core)
    try:
        memories: int | None = core.store.count()
        users: int | None = len(core.store.users())
    except StoreCorruptError:  # already among the problems
        memories = users = None
    return {"memories": memories, "users": users,
            "schema_version": core.store.schema_version,
            "vector_index": _index_kind(core), "index_file": core.index_file_status,
            "problems": problems, "repaired": repaired, "ok": not problems}


def _index_kind(core: Core) -> str:
    return "FAISS, in memory" if isinstance(core.index, FaissIndex) else \
        "the backend's own (not compared: it is the store)"


def _problems(core: Core) -> list[str]:
    # SQLite's integrity check does not look inside the full-text index's own tables, so
    # a later read may still meet damage it passed over: that is a finding, not a failure.
    try:
        problems = core.store.integrity()
        if any(p.startswith("sqlite:") for p in problems):
            return problems  # reading the vectors again would meet the same damage
        with core.lock:
            core.sync_index()
            if isinstance(core.index, FaissIndex):
                problems += index_problems(core.store, core.index)
    except StoreCorruptError as exc:
        return [f"sqlite: {exc}"]
    return problems


def index_problems(store: Any, index: FaissIndex) -> list[str]:
    """How ``index`` differs from the vectors ``store`` holds; empty when it agrees."""
    problems: list[str] = []
    compare = store.codec.tier != "pq"  # a PQ index holds codes, not vectors
    held: dict[str, list[np.ndarray]] = {}
    probes: dict[str, np.ndarray] = {}
    mismatched = 0
    for user, rowids, vectors in store.iter_vectors():
        held.setdefault(user, []).append(rowids)
        if user not in probes:
            probes[user] = vectors[:PROBES].copy()
        if not compare:
            continue
        present = set(index.ids(user).tolist())
        for rowid, vector in zip(rowids.tolist(), vectors, strict=True):
            if rowid not in present:
                continue
            got = index.reconstruct(user, rowid)
            norm = float(np.linalg.norm(got) * np.linalg.norm(vector))
            if norm == 0.0 or float(got @ vector) / norm < MATCH:
                mismatched += 1
    if mismatched:
        problems.append(f"vector index: {mismatched} indexed vectors differ from the stored ones")
    for user in sorted(set(held) | set(index.users())):
        stored = np.concatenate(held[user]) if user in held else np.zeros(0, dtype=np.int64)
        indexed = index.ids(user)
        missing = np.setdiff1d(stored, indexed).size
        extra = np.setdiff1d(indexed, stored).size
        if len(np.unique(indexed)) != len(indexed):
            problems.append(f"vector index: user {user!r} has rowids indexed twice")
        if missing or extra:
            problems.append(f"vector index: user {user!r}: {missing} memories missing from the "
                            f"index, {extra} indexed vectors of memories that are gone")
        elif user in probes and compare:
            problems += _probe(store, index, user, probes[user])
    return problems


def _probe(store: Any, index: FaissIndex, user: str, queries: np.ndarray) -> list[str]:
    """The index's top scores against an exact scan over the stored vectors."""
    exact = np.full((len(queries), TOP), -np.inf, dtype=np.float32)
    for who, _, vectors in store.iter_vectors():
        if who != user:
            continue
        scores = vectors @ queries.T  # (n, probes)
        exact = -np.sort(-np.concatenate([exact, scores.T], axis=1), axis=1)[:, :TOP]
    problems = []
    for q, best in zip(queries, exact, strict=True):
        _, scores = index.search(user, q, TOP, exact=True)
        want = best[np.isfinite(best)][:len(scores)]
        if len(scores) != len(want) or not np.allclose(np.sort(scores)[::-1], want,
                                                       atol=SCORE_ATOL):
            problems.append(f"vector index: user {user!r}: a search differs from the exact scan")
            break
    return problems
