"""Optimisation: keep the store consistent, compact and fast.

In order, each step bounded so a search never waits long behind it:
1. Consistency (a store a crashing process left behind): every live memory has
   its full-text row and no full-text row outlives its memory; the vector index
   holds exactly the store's vectors (else it is rebuilt from SQLite).
2. Full text: incremental merges in short steps; until one segment is left when memories
   were demoted or deleted, which is what drops their terms for good.
3. Topics: the topic level of every user whose memories changed is built again
   (latentmem/retrieve/topics.py).
4. Journal: undo payloads older than ``undo_days`` are cleared (they hold text).
5. SQLite: ``PRAGMA optimize`` (statistics for the planner); ``VACUUM`` on a
   separate connection when over a quarter of the file is free pages; the WAL is
   checkpointed and truncated.
The vector index file is rewritten here only after deletions (their vectors must leave
the disk): saving holds the index lock for the whole write (hundreds of ms at 100k).
Otherwise it is written at ``flush``/``close``, and a stale file is rebuilt on open.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from latentmem.retrieve import topics
from latentmem.store.base import Scans, Snapshot

if TYPE_CHECKING:
    from latentmem.core import Core

DAY = 86_400.0
VACUUM_FREE_SHARE = 0.25
FTS_STEP_PAGES = 64  # pages one merge step writes (~256 KB, a few ms)


def _repair_fts(core: Core, reader: Scans) -> dict[str, int]:
    """The full-text index reads records (for SQLite, an external-content FTS5 table kept
    by triggers): after a crash it may disagree with them. Count memories with words but
    no index entry, and entries without a memory (on the cycle's snapshot: no lock);
    rebuild the index from records if any."""
    missing, extra = reader.text_index_disagreement()
    if missing or extra:
        core.store.rebuild_text_index()
    return {"fts_missing": int(missing), "fts_extra": int(extra)}


def _merge_fts(core: Core, deadline: float) -> tuple[int, str]:
    """Merge full-text segments in small steps (each a short transaction, so searches
    interleave). When memories lost their words for good since the last purge (demoted,
    deleted: ``fts_dirty``), until FTS5 has nothing left to merge: then the index is one
    segment and their terms are gone. Otherwise only where a level holds several segments:
    a full merge after a large archiving reads every segment in one step (0.3-0.5 s of the
    lock at 100k), and the words of archived memories are kept in the archive anyway.
    ``delete`` purges at once."""
    purge = core.store.get_meta("fts_dirty") is not None
    steps = 0
    while time.perf_counter() < deadline:
        wrote = core.store.merge_fts(-FTS_STEP_PAGES if purge else FTS_STEP_PAGES)
        steps += 1
        if wrote < 2:
            if purge:
                core.store.delete_meta("fts_dirty")
            return steps, "merged" if purge else "tidy"
    return steps, "partly merged (budget)"


def _topics(core: Core, reader: Snapshot, deadline: float) -> int:
    """Build again the topic level (retrieve/topics.py) of each user whose memories changed
    since it was built; how many were built."""
    built = 0
    for user, _ in core.store.users():
        if time.perf_counter() > deadline:
            break
        kept = topics.load(core.store, user)
        reader.refresh()  # a fresh snapshot: what the cycle's earlier phases wrote
        if kept is None or kept.signature != topics.signature(reader, user):
            if topics.refresh(core.store, user, reader) is not None:
                built += 1
            core.forget_topics(user)
    return built


def run(core: Core, reader: Snapshot, deadline: float) -> dict[str, Any]:
    report: dict[str, Any] = {}
    t0 = time.perf_counter()
    report.update(_repair_fts(core, reader))
    core.store.reset_bulk_settings()  # a cycle killed while it wrote left them changed
    with core.lock:
        core.sync_index()
        rebuilt = core.index.count() != core.store.count()
        if rebuilt:
            core.rebuild_index()
    report["index_rebuilt"] = rebuilt
    report["consistency_ms"] = round((time.perf_counter() - t0) * 1e3, 1)

    t = time.perf_counter()
    report["topics_built"] = _topics(core, reader, deadline)
    report["topics_ms"] = round((time.perf_counter() - t) * 1e3, 1)

    t = time.perf_counter()
    report["fts_merge_steps"], report["fts"] = _merge_fts(core, deadline)
    report["fts_ms"] = round((time.perf_counter() - t) * 1e3, 1)

    report["undo_expired"] = core.store.expire_undo(
        time.time() - core.config.lifecycle.undo_days * DAY)
    core.store.optimize()
    report.update(core.store.compact(
        VACUUM_FREE_SHARE if time.perf_counter() < deadline else math.inf))
    core.store.checkpoint()
    if core.store.get_meta("index_file_stale"):  # deletions this cycle: their vectors go too
        core.flush()
        core.store.delete_meta("index_file_stale")
        report["index_saved"] = True
    return report
