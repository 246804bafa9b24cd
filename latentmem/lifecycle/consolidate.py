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
asks for its ``NEIGHBOURS`` nearest memories of the same user. Up to
``EXACT_LIMIT`` memories that is an exact flat scan; above, an IVF index trained
on the user's vectors for this cycle (probing 8 of ~4 sqrt(n) lists; near-duplicates
sit in the same or a neighbouring cell, so the recall loss is small). All of it
runs on one core and on a read-only connection, outside every lock: searches keep
running beside it.

Rejected: MinHash over the text (misses rewordings, and lossy memories have no
text), and merging across users (scope isolation is structural).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from latentmem.encode import segment
from latentmem.errors import NotFoundError
from latentmem.inputs import index_text_for
from latentmem.lifecycle import actions
from latentmem.store.sqlite import StoredRow

if TYPE_CHECKING:
    from latentmem.memory import Memory

LOW_INFO_WORDS = 3
MAX_CLUSTER = 16
NEIGHBOURS = 8
EXACT_LIMIT = 20_000
WATERMARK = "consolidated_upto"


def information(text: str | None) -> int:
    """Distinct content words: what a repeat like "lol ok" lacks."""
    if text is None:
        return LOW_INFO_WORDS + 1  # lossy: unknown, treat as informative
    return len({w for w in segment.words(text) if w not in segment.STOPWORDS})


def similar_pairs(vectors: np.ndarray, queries: np.ndarray, k: int,
                  floor: float) -> list[tuple[int, int, float]]:
    """(i, j, cosine) with i a query position, j != i, cosine >= floor."""
    n = len(vectors)
    if n < 2 or len(queries) == 0:
        return []
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        if n <= EXACT_LIMIT:
            index: faiss.Index = faiss.IndexFlatIP(vectors.shape[1])
        else:
            nlist = int(4 * math.sqrt(n))
            quantizer = faiss.IndexFlatIP(vectors.shape[1])
            ivf = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = vectors[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
            ivf.cp.niter = 10
            ivf.train(sample)
            ivf.nprobe = 8
            index = ivf
        index.add(vectors)
        sims, nbrs = index.search(vectors[queries], min(k + 1, n))
    finally:
        faiss.omp_set_num_threads(threads)
    out = []
    for qi, (row_s, row_n) in enumerate(zip(sims, nbrs, strict=True)):
        i = int(queries[qi])
        for sim, j in zip(row_s, row_n, strict=True):
            if j >= 0 and j != i and sim >= floor:
                out.append((i, int(j), float(sim)))
    return out


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


def run(mem: Memory, reader: sqlite3.Connection, deadline: float, cycle: str) -> dict[str, Any]:
    cfg = mem.config
    report: dict[str, Any] = {"clusters": 0, "merged": 0, "pairs": 0}
    upto = int(mem.store.get_meta(WATERMARK) or 0)
    top = reader.execute("SELECT max(rowid) FROM records").fetchone()[0] or 0
    users = [u for (u,) in reader.execute(
        "SELECT DISTINCT user_id FROM records WHERE rowid > ? AND level != 'merged'", (upto,))]
    finished = True
    for user in users:
        rows = reader.execute(
            "SELECT rowid, id, text, vector FROM records WHERE user_id = ? AND level != 'merged' "
            "AND json_extract(metadata, '$.unmerged') IS NULL AND rowid <= ? ORDER BY rowid",
            (user, top)).fetchall()
        if len(rows) < 2:
            continue
        rowids = np.array([r[0] for r in rows], dtype=np.int64)
        vectors = mem.store.decode_vectors([r[3] for r in rows])
        low = np.array([information(r[2]) <= LOW_INFO_WORDS for r in rows])
        queries = np.nonzero(rowids > upto)[0]
        floor = min(cfg.duplicate_threshold, cfg.repeat_threshold)
        pairs = similar_pairs(vectors, queries, NEIGHBOURS, floor)
        report["pairs"] += len(pairs)

        groups = clusters(pairs, lambda i, j, sim, low=low: sim >= cfg.duplicate_threshold or (
            sim >= cfg.repeat_threshold and bool(low[i]) and bool(low[j])))
        ids = [r[1] for r in rows]
        done = _merge_groups(mem, [[ids[i] for i in g] for g in groups], deadline, cycle,
                             [("near-duplicates" if not all(low[g]) else "low-information repeats")
                              for g in groups])
        report["clusters"] += done
        report["merged"] += sum(len(g) for g in groups[:done])
        if done < len(groups):
            finished = False
            report["stopped"] = "budget"
            break
    if finished:
        mem.store.set_meta(WATERMARK, str(top))
    return report


def _merge_groups(mem: Memory, groups: list[list[str]], deadline: float, cycle: str,
                  kinds: list[str]) -> int:
    """Merge each group; lossless unions are embedded in one batch first."""
    cfg = mem.config
    vectors: list[np.ndarray | None] = [None] * len(groups)
    if cfg.consolidate_mode == "lossless" and groups:
        texts: list[str] = []
        where: list[int] = []
        for gi, group in enumerate(groups):
            rows: list[StoredRow] = mem.store.get_rows_by_id(group)
            if len(rows) == len(group) and all(r.record.text is not None for r in rows):
                text, speaker = actions.union_text(rows)
                texts.append(index_text_for(text, speaker))
                where.append(gi)
        for gi, vec in zip(where, mem.embedder.embed_batch(texts) if texts else [], strict=True):
            vectors[gi] = vec
    done = 0
    for group, kind, vec in zip(groups, kinds, vectors, strict=True):
        if time.perf_counter() > deadline:
            break
        try:
            actions.merge(mem, group, mode=cfg.consolidate_mode,
                          originals=cfg.consolidate_originals,
                          reason=f"consolidated {kind}", cycle=cycle, vector=vec)
        except NotFoundError:  # a member was deleted since the scan: leave the group
            pass
        done += 1
    return done
