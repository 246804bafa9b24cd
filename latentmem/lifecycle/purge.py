"""True deletion: nothing of a deleted memory may remain anywhere latentmem writes.

Where a memory's text or vector can live, and what clears it:
- ``records`` row (text, index text, title, summary, vector): deleted; the
  connection runs with ``secure_delete`` so freed pages are zeroed, and the WAL
  is checkpointed and truncated so no old page image survives beside the file.
- full text: the FTS5 row is deleted, then the index is merged into one segment
  (``purge_fts``), because FTS5 keeps a deleted row's terms in older segments.
- entity mentions, edges, ``history`` texts: deleted or blanked.
- ``archive`` (archived memories): deleted.
- journal undo payloads (which hold the text an undo would restore): cleared.
- feedback rows about it: deleted. (The controller's replay buffer keeps the feature
  numbers of past feedback, never text.)
- embedding cache (keyed by a hash of the text, holding the vector): deleted.
- the vector index in memory and its file: removed, and the file rewritten.
- derived merges: a merge with a deleted source is deleted too; when two or more
  of its other sources remain it is derived again from them (same mode), and a
  lone remaining source that was archived for the merge is restored.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from latentmem.encode.cache import cache_key
from latentmem.errors import NotFoundError
from latentmem.inputs import index_text_for
from latentmem.lifecycle import actions, journal
from latentmem.retrieve import topics

if TYPE_CHECKING:
    from latentmem.memory import Memory


def _archived_users(mem: Memory, ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    with mem.store.lock:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(mem.store.conn.execute(
                f"SELECT id, user_id FROM archive WHERE id IN ({marks})", chunk).fetchall())
    return out


def derived_from(mem: Memory, ids: set[str]) -> dict[str, tuple[list[str], str]]:
    """Merged records (live or archived) with a source in ``ids``: id -> (sources, mode)."""
    out: dict[str, tuple[list[str], str]] = {}
    with mem.store.lock:
        live = mem.store.conn.execute(
            "SELECT id, sources, metadata FROM records WHERE level = 'merged'").fetchall()
        kept = mem.store.conn.execute(
            "SELECT id, json_extract(row, '$.record.sources'), json_extract(row, '$.record.metadata') "
            "FROM archive WHERE json_extract(row, '$.record.level') = 'merged'").fetchall()
    for rid, sources, meta in [*live, *kept]:
        src = json.loads(sources or "[]")
        if ids.intersection(src):
            out[rid] = (src, json.loads(meta or "{}").get("merge_mode", "lossless"))
    return out


def _originals_policy(mem: Memory, merged_id: str) -> str:
    for event in journal.for_record(mem.store, merged_id):
        if event.action == "merge":
            _, payload = journal.get(mem.store, event.seq)
            if payload:
                return str(payload.get("originals", "keep"))
    return "keep"


def delete(mem: Memory, ids: list[str], user_id: str | None, finish: bool = True) -> int:
    """See the module docstring. Validates everything before changing anything.
    ``finish=False`` (a sleep cycle deleting in batches) leaves the full-text purge, the
    WAL truncation and the index file to the cycle's optimise phase."""
    archived = _archived_users(mem, ids)
    for rid in ids:
        if rid in archived:
            if user_id is not None and archived[rid] != user_id:
                raise NotFoundError(f"no memory with id {rid!r}")
        else:
            mem._owned(rid, user_id)
    doomed = set(ids)
    derived: dict[str, tuple[list[str], str]] = {}
    frontier = set(ids)
    while frontier:  # merges of merges
        found = {k: v for k, v in derived_from(mem, frontier).items() if k not in doomed}
        derived.update(found)
        doomed |= set(found)
        frontier = set(found)
    policies = {m: _originals_policy(mem, m) for m in derived}

    in_archive = set(_archived_users(mem, sorted(doomed)))
    rows = mem.store.get_rows_by_id(sorted(doomed - in_archive))
    gone_archive = sorted(in_archive)
    cache_texts: list[str] = [index_text_for(r.record.text or "", r.record.speaker) for r in rows
                              if r.record.text is not None]
    mem._sync_index()
    if rows:
        mem.store.delete([r.record.id for r in rows])
        for row in rows:
            mem.index.remove(row.record.user_id, np.array([row.rowid]))
    with mem.store.transaction() as conn:
        for rid in gone_archive:
            got = conn.execute("SELECT index_text FROM archive WHERE id = ?", (rid,)).fetchone()
            if got is not None:
                if got[0]:
                    cache_texts.append(got[0])
                conn.execute("DELETE FROM archive WHERE id = ?", (rid,))
                conn.execute("UPDATE history SET old_text = NULL, new_text = NULL "
                             "WHERE record_id = ?", (rid,))
        journal.drop_undo(conn, sorted(doomed))
        for start in range(0, len(doomed), 500):
            chunk = sorted(doomed)[start:start + 500]
            conn.execute(f"DELETE FROM feedback WHERE record_id IN ({','.join('?' * len(chunk))})",
                         chunk)
        # A user's topics are derived from their vectors (a one-memory topic's centroid is
        # that memory's vector): they go, and are built again without it.
        owners = {r.record.user_id for r in rows} | set(archived.values())
        conn.executemany("DELETE FROM models WHERE name = ?",
                         [(topics.MODEL_PREFIX + u,) for u in sorted(owners)])
        mem.store.bump_epoch(conn)
    for user in owners:
        mem.forget_topics(user)
    mem.index.epoch = mem.store.vector_epoch()
    if mem._cache is not None and cache_texts:
        mem._cache.delete([cache_key(mem.embedder.name, t) for t in cache_texts])

    # Re-derive merges that keep enough sources.
    for merged_id, (sources, mode) in derived.items():
        remaining = [s for s in sources if s not in doomed]
        for rid in remaining:
            if actions.archived(mem, rid) is not None:
                actions.restore(mem, rid)
        if len(remaining) >= 2:
            actions.merge(mem, remaining, mode=mode, originals=policies[merged_id],
                          reason=f"derived again after a source of {merged_id} was deleted")
    if finish:
        mem.store.purge_fts()
        mem.store.checkpoint()
        mem.flush()
    else:
        mem.store.set_meta("index_file_stale", "1")
    return len(ids)
