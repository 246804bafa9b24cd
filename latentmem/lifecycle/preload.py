"""Preloading: predict the memories the next searches will return, and warm them.

Signal: ``accesses``, the results of each tracked search. A memory is predicted in
proportion to how recently it was returned, how often it was returned together
with recently returned memories (co-access), and whether it sits next to one in
its conversation (``next`` edges: the turn after an answer is often the next
answer). The top ``preload_size`` are read through the store's connection, which
puts their rows in the store's page cache, and kept in ``Core.preloaded``.

Honesty: each cycle scores the previous prediction against the searches made
since (hit rate = share of returned memories that were predicted), next to what
"the most recently returned ones" alone would have scored.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latentmem.core import Core

RECENT = 20  # searches that seed the prediction
HISTORY = 2_000  # searches co-access is learned from
KEEP = 20_000  # accesses rows kept by each cycle


def predict(core: Core, user: str, size: int) -> tuple[list[int], list[int]]:
    """(predicted rowids, recency-only baseline rowids), best first."""
    history = core.store.accesses(user, HISTORY)
    if not history:
        return [], []
    recent = history[:RECENT]
    score: defaultdict[int, float] = defaultdict(float)
    baseline: list[int] = []
    for age, (_, rowids) in enumerate(recent):
        w = 0.9 ** age
        for r in rowids:
            score[r] += w
            if r not in baseline:
                baseline.append(r)
    seeds = set(score)
    together: dict[int, Counter[int]] = defaultdict(Counter)
    for _, rowids in history[RECENT:]:
        hit = seeds.intersection(rowids)
        for s in hit:
            for r in rowids:
                if r != s:
                    together[s][r] += 1
    for s, w in list(score.items()):
        for r, n in together[s].most_common(20):
            score[r] += 0.5 * w * min(1.0, n / 3)
    for r, w in _next_neighbours(core, list(seeds), score):
        score[r] += 0.3 * w
    ranked = [r for r, _ in sorted(score.items(), key=lambda x: (-x[1], x[0]))][:size]
    return ranked, baseline[:size]


def _next_neighbours(core: Core, rowids: list[int],
                     score: defaultdict[int, float]) -> list[tuple[int, float]]:
    if not rowids:
        return []
    rows = core.store.get_rows_by_rowid(rowids)
    by_id = {row.record.id: row.rowid for row in rows.values()}
    pairs = core.store.next_pairs_around(list(by_id), 1)
    ids = {x for pair in pairs for x in pair} - set(by_id)
    rowid_of = {r.id: r.rowid for r in core.store.light_rows("id", list(ids))}
    out: list[tuple[int, float]] = []
    for a, b in pairs:
        for seed, other in ((a, b), (b, a)):
            if seed in by_id and other in rowid_of:
                out.append((rowid_of[other], score[by_id[seed]]))
    return out


def run(core: Core, deadline: float) -> dict[str, Any]:
    size = core.config.lifecycle.preload_size
    report: dict[str, Any] = {"users": 0, "preloaded": 0}
    rates: list[tuple[int, int, int]] = []
    for user, _ in core.store.users():
        if time.perf_counter() > deadline:
            report["stopped"] = "budget"
            break
        prev = core.store.get_meta(f"preload:{user}")
        if prev:
            state = json.loads(prev)
            predicted, base = set(state["rowids"]), set(state["baseline"])
            returned = [r for _, ids in core.store.accesses(user, HISTORY, state["at"]) for r in ids]
            if returned:
                rates.append((sum(r in predicted for r in returned),
                              sum(r in base for r in returned), len(returned)))
        ranked, baseline = predict(core, user, size)
        if not ranked:
            continue
        # The read is the warming. Only this user's rows: the access log names rows by
        # rowid, and a SQLite store written before rowids stopped being reused
        # (``SQLiteStore._next_rowid``) may have given a logged one to another user.
        mine = {r.rowid for r in core.store.light_rows("rowid", ranked) if r.user_id == user}
        ranked = [r for r in ranked if r in mine]
        core.preloaded[user] = set(ranked)
        core.store.set_meta(f"preload:{user}", json.dumps(
            {"at": time.time(), "rowids": ranked, "baseline": baseline}))
        report["users"] += 1
        report["preloaded"] += len(ranked)
    if rates:
        total = sum(n for _, _, n in rates)
        report["hit_rate"] = round(sum(h for h, _, _ in rates) / total, 4)
        report["recency_baseline_hit_rate"] = round(sum(b for _, b, _ in rates) / total, 4)
        report["returned_scored"] = total
    core.store.trim_accesses(KEEP)
    return report
