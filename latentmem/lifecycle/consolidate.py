"""Consolidation: near-duplicates and low-information repeats become one merged record.

Two memories of one user are merged when their cosine is at least
``duplicate_threshold`` (0.95: the same statement reworded or repeated), or at least
``repeat_threshold`` (0.85) when both carry little information (at most
``LOW_INFO_WORDS`` distinct content words: "haha yes!", "thanks so much!").
Clusters are grown greedily from the most similar pair down, capped at
``MAX_CLUSTER`` members so that similarity cannot chain a whole conversation
into one record. Each cluster becomes one ``actions.merge`` with the configured
mode (lossless extractive union by default) and originals policy (archived by
default, so an undo restores them exactly). Memories whose merge was undone are
marked ``unmerged`` in their metadata and left alone from then on.

Finding pairs: each memory added since the last cycle (a watermark in ``meta``)
asks for its ``NEIGHBOURS`` nearest memories of the same user, so a steady cycle
looks at its new memories only. When that is cheap (few new memories, or a small
store) it is an exact flat scan. Otherwise (a store's first cycle, a large import)
the user's vectors are cut into ~sqrt(n) k-means cells, each memory is filed under
its nearest cell, and each new memory is compared with the memories of its
``PROBES`` nearest cells, one matrix product per cell (BLAS, so about 30 times
faster per comparison than an IVF index scanning one query at a time): at 100k
memories all of them against 100k costs seconds instead of half a minute, and a
near-duplicate (cosine >= 0.85) lies in one of those cells. New memories are taken
in chunks of ``QUERY_CHUNK`` in record order; the deadline is checked between
chunks and the watermark moves past every chunk whose clusters were merged, so a
cycle stopped by its budget leaves the rest to the next one. It all runs on one core
(FAISS releases the GIL) and on the cycle's snapshot of the store, outside every lock:
searches keep running beside it.

Rejected: MinHash over the text (misses rewordings, and lossy memories have no
text), and merging across users (scope isolation is structural).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from latentmem.encode import segment
from latentmem.errors import NotFoundError
from latentmem.inputs import index_text_for
from latentmem.lifecycle import actions, pacing
from latentmem.store.base import Scans, StoredRow

if TYPE_CHECKING:
    from latentmem.core import Core

LOW_INFO_WORDS = 3
MAX_CLUSTER = 16
NEIGHBOURS = 8
PROBES = 8  # cells each new memory is compared with
QUERY_CHUNK = 20_000  # new memories per step between deadline checks
CELL_MIN = 5_000  # below this many memories a flat scan is always cheap enough
WATERMARK = "consolidated_upto"


def information(text: str | None) -> int:
    """Distinct content words: what a repeat like "lol ok" lacks."""
    if text is None:
        return LOW_INFO_WORDS + 1  # lossy: unknown, treat as informative
    return len({w for w in segment.words(text) if w not in segment.STOPWORDS})


@contextmanager
def _one_thread() -> Iterator[None]:
    """FAISS (and its BLAS) on this thread's one core: the other is the searches'."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


class Cells:
    """A user's vectors filed under k-means cells, for comparing many new memories with
    all of them (see the module docstring)."""

    def __init__(self, vectors: np.ndarray, probes: int = PROBES) -> None:
        n, dim = vectors.shape
        self.vectors = vectors
        nlist = max(1, int(math.sqrt(n)))
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
        self.centroids = faiss.IndexFlatIP(dim)
        clustering = faiss.Clustering(dim, nlist)
        clustering.niter = 10
        clustering.seed = 0
        clustering.train(sample, self.centroids)
        self.probes = min(probes, nlist)
        _, self.near = self.centroids.search(vectors, self.probes)  # each row's nearest cells
        home = self.near[:, 0]
        self.order = np.argsort(home, kind="stable")
        self.bounds = np.searchsorted(home[self.order], np.arange(nlist + 1))

    def neighbours(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(sims, positions) of the ``k`` nearest memories in each query's cells; -1 where
        fewer are found."""
        sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        nbrs = np.full((len(queries), k), -1, dtype=np.int64)
        cells = self.near[queries]  # (q, probes)
        flat_q = np.repeat(np.arange(len(queries)), self.probes)
        flat_c = cells.ravel()
        by_cell = np.argsort(flat_c, kind="stable")
        starts = np.searchsorted(flat_c[by_cell], np.arange(len(self.bounds)))
        for c in np.unique(flat_c):
            members = self.order[self.bounds[c]:self.bounds[c + 1]]
            if len(members) == 0:
                continue
            asking = flat_q[by_cell[starts[c]:starts[c + 1]]]
            index = faiss.IndexFlatIP(self.vectors.shape[1])
            index.add(self.vectors[members])
            s, j = index.search(self.vectors[queries[asking]], min(k, len(members)))
            found = np.where(j >= 0, members[np.maximum(j, 0)], -1)
            # Keep each query's best k over its cells so far.
            both_s = np.concatenate([sims[asking], s], axis=1)
            both_n = np.concatenate([nbrs[asking], found], axis=1)
            best = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
            sims[asking] = np.take_along_axis(both_s, best, axis=1)
            nbrs[asking] = np.take_along_axis(both_n, best, axis=1)
        return sims, nbrs


def similar_pairs(vectors: np.ndarray, queries: np.ndarray, k: int,
                  floor: float, cells: Cells | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows (i, j) with i a query position, j != i its neighbour, cosine >= floor; and
    their cosines. ``cells``: compare through them instead of with every vector."""
    n = len(vectors)
    if n < 2 or len(queries) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    kk = min(k + 1, n)
    with _one_thread():
        if cells is None:
            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(vectors)
            sims, nbrs = index.search(vectors[queries], kk)
        else:
            sims, nbrs = cells.neighbours(queries, kk)
    qi = np.broadcast_to(queries[:, None], nbrs.shape)
    keep = (nbrs >= 0) & (nbrs != qi) & (sims >= floor)
    return np.stack([qi[keep], nbrs[keep]], axis=1), sims[keep]


def use_cells(n: int, queries: int) -> bool:
    """Cells when a flat scan would cost more: it compares every new memory with all n,
    filing n memories under sqrt(n) cells costs about n * sqrt(n) comparisons."""
    return n >= CELL_MIN and queries > 4 * math.sqrt(n)


def clusters(pairs: list[tuple[int, int, float]], accept: Any) -> list[list[int]]:
    """Greedy single-link clusters from the most similar accepted pair down, capped."""
    parent: dict[int, int] = {}
    size: dict[int, int] = defaultdict(lambda: 1)

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for i, j, sim in sorted(pairs, key=lambda p: -p[2]):
        if not accept(i, j, sim):
            continue
        a, b = find(i), find(j)
        if a == b or size[a] + size[b] > MAX_CLUSTER:
            continue
        parent[b] = a
        size[a] += size[b]
    groups: dict[int, list[int]] = defaultdict(list)
    for x in parent:
        groups[find(x)].append(x)
    return [sorted(set(g) | {root}) for root, g in groups.items() if len(set(g) | {root}) > 1]


def _pairs(core: Core, reader: Scans, user: str, upto: int, top: int, floor: float,
           deadline: float, report: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int | None]:
    """A user's similar pairs as rowids, their cosines, and the first new rowid left
    unchecked at the deadline (None when all were checked)."""
    empty = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    rowids, vectors = reader.mergeable_vectors(user, top)
    queries = np.nonzero(rowids > upto)[0]
    if len(rowids) < 2 or len(queries) == 0:
        return *empty, None
    cells = None
    if use_cells(len(rowids), len(queries)):
        with _one_thread():
            cells = Cells(vectors)
        report["cells"] = report.get("cells", 0) + len(cells.bounds) - 1
    found, sims = [empty[0]], [empty[1]]
    for start in range(0, len(queries), QUERY_CHUNK):
        if time.perf_counter() > deadline:
            return np.concatenate(found), np.concatenate(sims), int(rowids[queries[start]])
        chunk = queries[start:start + QUERY_CHUNK]
        p, s = similar_pairs(vectors, chunk, NEIGHBOURS, floor, cells)
        found.append(rowids[p])
        sims.append(s)
        report["checked"] += len(chunk)
    return np.concatenate(found), np.concatenate(sims), None


def run(core: Core, reader: Scans, deadline: float, cycle: str) -> dict[str, Any]:
    cfg = core.config.lifecycle
    report: dict[str, Any] = {"clusters": 0, "merged": 0, "pairs": 0, "checked": 0}
    upto = int(core.store.get_meta(WATERMARK) or 0)
    top = reader.max_rowid()
    first_new = reader.first_new_by_user(upto)
    floor = min(cfg.duplicate_threshold, cfg.repeat_threshold)
    mark = top  # the next watermark: every new memory up to it was handled
    for user in first_new:
        pairs, cos, stopped = _pairs(core, reader, user, upto, top, floor, deadline, report)
        if stopped is not None:
            mark = min(mark, stopped - 1)
        report["pairs"] += len(pairs)
        if len(pairs):
            low = {rowid: information(text) <= LOW_INFO_WORDS
                   for rowid, text in reader.texts_of(np.unique(pairs).tolist()).items()}
            groups = clusters(
                list(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), cos.tolist(), strict=True)),
                lambda a, b, sim, low=low: sim >= cfg.duplicate_threshold or (
                    sim >= cfg.repeat_threshold and low[a] and low[b]))
            ids = reader.ids_of(sorted({r for g in groups for r in g}))
            done = _merge_groups(
                core, [[ids[r] for r in g] for g in groups], deadline, cycle,
                [("near-duplicates" if not all(low[r] for r in g) else "low-information repeats")
                 for g in groups])
            report["clusters"] += done
            report["merged"] += sum(len(g) for g in groups[:done])
            if done < len(groups):
                stopped = min(r for g in groups[done:] for r in g if r > upto)
                mark = min(mark, stopped - 1)
        if stopped is not None:
            report["stopped"] = "budget"
            later = [r for u, r in first_new.items() if u > user]
            mark = min([mark, *(r - 1 for r in later)])
            break
    if mark > upto:
        core.store.set_meta(WATERMARK, str(mark))
    return report


def _merge_groups(core: Core, groups: list[list[str]], deadline: float, cycle: str,
                  kinds: list[str]) -> int:
    """Merge each group; lossless unions are embedded in one batch first."""
    cfg = core.config.lifecycle
    vectors: list[np.ndarray | None] = [None] * len(groups)
    if cfg.consolidate_mode == "lossless" and groups:
        texts: list[str] = []
        where: list[int] = []
        for gi, group in enumerate(groups):
            rows: list[StoredRow] = core.store.get_rows_by_id(group)
            if len(rows) == len(group) and all(r.record.text is not None for r in rows):
                text, speaker = actions.union_text(rows)
                texts.append(index_text_for(text, speaker))
                where.append(gi)
        for gi, vec in zip(where, core.embedder.embed_batch(texts) if texts else [], strict=True):
            vectors[gi] = vec
    done = 0
    with actions.Unindexer(core) as later:
        for group, kind, vec in zip(groups, kinds, vectors, strict=True):
            if time.perf_counter() > deadline:
                break
            try:
                actions.merge(core, group, mode=cfg.consolidate_mode,
                              originals=cfg.consolidate_originals,
                              reason=f"consolidated {kind}", cycle=cycle, vector=vec,
                              unindex=later)
            except NotFoundError:  # a member was deleted since the scan: leave the group
                pass
            done += 1
            time.sleep(pacing.TX_PAUSE_S)
    return done
