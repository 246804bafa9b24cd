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
- derived merges: a merge with a deleted source is deleted too; its other sources that
  were archived for it are restored, and when two or more of its other sources are then
  live it is derived again from them (same mode and originals policy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from latentmem.encode.cache import cache_key
from latentmem.errors import NotFoundError
from latentmem.inputs import index_text_for
from latentmem.lifecycle import actions, journal
from latentmem.retrieve import topics

if TYPE_CHECKING:
    from latentmem.core import Core


def derived_from(core: Core, ids: set[str]) -> dict[str, tuple[list[str], str]]:
    """Merged records (live or archived) with a source in ``ids``: id -> (sources, mode)."""
    return {rid: (sources, mode) for rid, sources, mode in core.store.merged_sources()
            if ids.intersection(sources)}


def _originals_policy(core: Core, merged_id: str) -> str:
    for event in journal.for_record(core.store, merged_id):
        if event.action == "merge":
            _, payload = core.store.event(event.seq)
            if payload:
                return str(payload.get("originals", "keep"))
    return "keep"


def _bring_back(core: Core, rid: str, merged_id: str) -> None:
    """Restore a source that was archived for a merge being deleted, its archiving then
    undone. One archived for another merge, which still stands, stays with that one: it
    came back too, beside the merge that stood for it (the same memory twice), and that
    merge's undo could only fail on it ("not archived"; both found by the state machine
    of tests/test_properties.py)."""
    for event in journal.for_record(core.store, rid):
        if event.action == "archive" and event.undone_at is None \
                and event.reason == f"merged into {merged_id}" \
                and core.store.archived(rid) is not None:
            actions.restore(core, rid)
            core.store.mark_undone(event.seq)


def delete(core: Core, ids: list[str], user_id: str | None, finish: bool = True) -> int:
    """See the module docstring. Validates everything before changing anything.
    ``finish=False`` (a sleep cycle deleting in batches) leaves the full-text purge, the
    WAL truncation and the index file to the cycle's optimise phase."""
    archived = core.store.archived_users(ids)
    for rid in ids:
        if rid in archived:
            if user_id is not None and archived[rid] != user_id:
                raise NotFoundError(f"no memory with id {rid!r}")
        else:
            core.owned(rid, user_id)
    doomed = set(ids)
    derived: dict[str, tuple[list[str], str]] = {}
    frontier = set(ids)
    while frontier:  # merges of merges
        found = {k: v for k, v in derived_from(core, frontier).items() if k not in doomed}
        derived.update(found)
        doomed |= set(found)
        frontier = set(found)
    policies = {m: _originals_policy(core, m) for m in derived}

    in_archive = set(core.store.archived_users(sorted(doomed)))
    rows = core.store.get_rows_by_id(sorted(doomed - in_archive))
    gone_archive = sorted(in_archive)
    cache_texts: list[str] = [index_text_for(r.record.text or "", r.record.speaker) for r in rows
                              if r.record.text is not None]
    core.sync_index()
    before = core.index.epoch
    if rows:
        core.store.delete([r.record.id for r in rows])
        for row in rows:
            core.index.remove(row.record.user_id, np.array([row.rowid]))
    with core.store.transaction():
        for rid in gone_archive:
            index_text = core.store.delete_archived(rid)
            if index_text:
                cache_texts.append(index_text)
        core.store.drop_undo(sorted(doomed))
        core.store.delete_feedback(sorted(doomed))
        # A user's topics are derived from their vectors (a one-memory topic's centroid is
        # that memory's vector): they go, and are built again without it.
        owners = {r.record.user_id for r in rows} | set(archived.values())
        core.store.delete_models([topics.MODEL_PREFIX + u for u in sorted(owners)])
        core.store.bump_epoch()
    for user in owners:
        core.forget_topics(user)
    core.claim_epoch(before, 2 if rows else 1)  # the deletion's bump, then the one above
    if core.cache is not None and cache_texts:
        core.cache.delete([cache_key(core.embedder.name, t) for t in cache_texts])

    # Re-derive merges that keep enough sources.
    for merged_id, (sources, mode) in derived.items():
        remaining = [s for s in sources if s not in doomed]
        for rid in remaining:
            _bring_back(core, rid, merged_id)
        live = {r.record.id for r in core.store.get_rows_by_id(remaining)}
        again = [s for s in remaining if s in live]
        if len(again) >= 2:
            actions.merge(core, again, mode=mode, originals=policies[merged_id],
                          reason=f"derived again after a source of {merged_id} was deleted")
    if finish:
        core.store.purge_fts()
        core.store.checkpoint()
        core.flush()
    else:
        core.store.set_meta("index_file_stale", "1")
    return len(ids)
