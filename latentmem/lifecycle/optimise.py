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

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from latentmem.lifecycle import journal, pacing
from latentmem.retrieve import topics

if TYPE_CHECKING:
    from latentmem.memory import Memory

DAY = 86_400.0
VACUUM_FREE_SHARE = 0.25
FTS_STEP_PAGES = 64  # pages one merge step writes (~256 KB, a few ms)


def _repair_fts(mem: Memory, reader: sqlite3.Connection) -> dict[str, int]:
    """The full-text index reads records (an external-content FTS5 table kept by
    triggers): after a crash it may disagree with them. Count memories with words but no
    index entry, and entries without a memory (on the cycle's reader: no lock); rebuild
    the index from records if any."""
    missing = reader.execute(
        "SELECT count(*) FROM records r WHERE (r.text IS NOT NULL OR r.index_text <> '') "
        "AND NOT EXISTS (SELECT 1 FROM records_fts_docsize d WHERE d.id = r.rowid)"
    ).fetchone()[0]
    extra = reader.execute(
        "SELECT count(*) FROM records_fts_docsize d "
        "WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.rowid = d.id)").fetchone()[0]
    if missing or extra:
        with mem.store.transaction() as conn:
            conn.execute("INSERT INTO records_fts(records_fts) VALUES ('rebuild')")
    return {"fts_missing": int(missing), "fts_extra": int(extra)}


def _merge_fts(mem: Memory, deadline: float) -> tuple[int, str]:
    """Merge full-text segments in small steps (each a short transaction, so searches
    interleave). When memories lost their words for good since the last purge (demoted,
    deleted: ``fts_dirty``), until FTS5 has nothing left to merge: then the index is one
    segment and their terms are gone. Otherwise only where a level holds several segments:
    a full merge after a large archiving reads every segment in one step (0.3-0.5 s of the
    lock at 100k), and the words of archived memories are kept in the archive anyway.
    ``delete`` purges at once."""
    purge = mem.store.get_meta("fts_dirty") is not None
    steps = 0
    while time.perf_counter() < deadline:
        wrote = mem.store.merge_fts(-FTS_STEP_PAGES if purge else FTS_STEP_PAGES)
        steps += 1
        if wrote < 2:
            if purge:
                with mem.store.transaction() as conn:
                    conn.execute("DELETE FROM meta WHERE key = 'fts_dirty'")
            return steps, "merged" if purge else "tidy"
    return steps, "partly merged (budget)"


def _topics(mem: Memory, reader: sqlite3.Connection, deadline: float) -> int:
    """Build again the topic level (retrieve/topics.py) of each user whose memories changed
    since it was built; how many were built."""
    built = 0
    for user, _ in mem.store.users():
        if time.perf_counter() > deadline:
            break
        kept = topics.load(mem.store, user)
        reader.rollback()  # a fresh snapshot: what the cycle's earlier phases wrote
        if kept is None or kept.signature != topics.signature(mem.store, user, reader):
            if topics.refresh(mem.store, user, reader) is not None:
                built += 1
            mem.forget_topics(user)
    return built


def run(mem: Memory, reader: sqlite3.Connection, deadline: float) -> dict[str, Any]:
    report: dict[str, Any] = {}
    t0 = time.perf_counter()
    report.update(_repair_fts(mem, reader))
    mem.store.set_fts_automerge(pacing.FTS_AUTOMERGE)  # a cycle killed while it wrote left it off
    with mem._lock:
        mem._sync_index()
        rebuilt = mem.index.count() != mem.store.count()
        if rebuilt:
            mem.index = mem._rebuild_index()
    report["index_rebuilt"] = rebuilt
    report["consistency_ms"] = round((time.perf_counter() - t0) * 1e3, 1)

    t = time.perf_counter()
    report["topics_built"] = _topics(mem, reader, deadline)
    report["topics_ms"] = round((time.perf_counter() - t) * 1e3, 1)

    t = time.perf_counter()
    report["fts_merge_steps"], report["fts"] = _merge_fts(mem, deadline)
    report["fts_ms"] = round((time.perf_counter() - t) * 1e3, 1)

    with mem.store.transaction() as conn:
        report["undo_expired"] = journal.expire(conn, time.time() - mem.config.undo_days * DAY)
        conn.execute("PRAGMA optimize")

    with mem.store.lock:
        pages = mem.store.conn.execute("PRAGMA page_count").fetchone()[0]
        free = mem.store.conn.execute("PRAGMA freelist_count").fetchone()[0]
    report["free_pages"] = int(free)
    if pages and free / pages > VACUUM_FREE_SHARE and time.perf_counter() < deadline:
        t = time.perf_counter()
        other = sqlite3.connect(str(mem.store.path), timeout=30.0)
        try:
            other.execute("PRAGMA secure_delete=ON")
            other.execute("VACUUM")
        finally:
            other.close()
        report["vacuum_ms"] = round((time.perf_counter() - t) * 1e3, 1)
    mem.store.checkpoint()
    if mem.store.get_meta("index_file_stale"):  # deletions this cycle: their vectors go too
        mem.flush()
        with mem.store.transaction() as conn:
            conn.execute("DELETE FROM meta WHERE key = 'index_file_stale'")
        report["index_saved"] = True
    return report
