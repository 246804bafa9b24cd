"""What the lifecycle does to memories, each action journaled with how to undo it.

- ``demote``: keep the vector and metadata, drop the text (and every index of
  its words: full text, entity mentions, title, extractive summary, the text in
  history). The summary becomes the inverter's reconstruction when one exists.
  An explicit ``Memory.demote`` is final; a sleep cycle's demotion keeps the text
  in the journal's undo payload for the undo window, then forgets it.
- ``archive``: take a memory out of every index, keeping it whole (vector, edges)
  in the ``archive`` table so that an undo puts it back.
- ``merge``: one new record (level ``merged``) standing for several, with
  ``sources`` and ``merged_from`` edges. Lossless: an extractive union of the
  texts (each distinct sentence once, in time order, speakers kept), embedded
  afresh. Lossy: the normalised weighted mean of the vectors, text reconstructed
  by the inverter when one is shipped. The originals are kept, demoted or
  archived.

Every function takes the engine's ``Core`` (latentmem/core.py) and holds its lock for
one short transaction, so a background cycle interleaves with searches. The statements
are the store's (``store.base.Journal``, ``Archive``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from latentmem.encode import segment
from latentmem.errors import InvalidInputError, NotFoundError
from latentmem.ids import new_id
from latentmem.inputs import check_scope_value, content_hash, index_text_for
from latentmem.lifecycle import journal, pacing
from latentmem.store.base import StoredRow
from latentmem.types import Edge, Record

if TYPE_CHECKING:
    from latentmem.core import Core

MERGE_MODES = ("lossless", "lossy")
ORIGINALS = ("keep", "demote", "archive")
_SPACE = re.compile(r"\s+")
_RESTORE = {"op": "restore"}  # the undo of an archiving


def reconstruct(core: Core, vectors: np.ndarray) -> list[str]:
    """Text for vectors from the inverter, or empty strings when none is available."""
    inverter = core.inverter()
    if inverter is None or len(vectors) == 0:
        return [""] * len(vectors)
    return list(inverter.invert(np.asarray(vectors, dtype=np.float32)))


# -- demote ------------------------------------------------------------------------


def _why(reason: str | Mapping[str, str], record_id: str) -> str:
    return reason if isinstance(reason, str) else reason[record_id]


def demote(core: Core, ids: Sequence[str], reason: str | Mapping[str, str], *,
           cycle: str | None = None, undoable: bool = False, reconstruct_text: bool = True,
           ) -> list[str]:
    """Drop the text of these memories for good (or, ``undoable``, until the undo window
    passes), in one transaction. ``reason``: one for all, or one per id. Already-lossy
    memories are skipped. Returns the ids demoted. ``reconstruct_text``: store the
    inverter's reading of the vector as the summary (when an inverter is shipped); sleep
    cycles pass False, because inverting costs tens of milliseconds a memory and a cycle
    may demote thousands (``m.invert(id)`` reads any of them back on demand)."""
    invert = reconstruct_text and core.inverter() is not None  # vectors are read only for it
    rows = [r for r in core.store.get_rows_by_id(list(ids), with_vector=invert)
            if r.record.text is not None]
    if not rows:
        return []
    recon = [""] * len(rows)
    if invert:
        recon = reconstruct(core, np.stack([r.record.vector for r in rows
                                           if r.record.vector is not None]))
    now = time.time()
    with pacing.between_searches(core), core.store.transaction():
        core.store.drop_texts({row.rowid: text for row, text in zip(rows, recon, strict=True)}, now)
        core.store.blank_history([r.record.id for r in rows])
        core.store.log_history("DEMOTE", now, [(r.record.id, _why(reason, r.record.id)) for r in rows])
        core.store.log_events("demote", [
            (r.record.id, r.record.user_id, _why(reason, r.record.id),
             {"op": "demote", "text": r.record.text, "index_text": r.index_text,
              "title": r.record.title, "summary": r.record.summary} if undoable else None)
            for r in rows], cycle)
    return [r.record.id for r in rows]


def _undo_demote(core: Core, record_id: str, payload: dict[str, Any]) -> None:
    row = core.store.get_row(record_id)
    if row.record.text is not None:
        raise InvalidInputError(f"{record_id} has text again; nothing to undo")
    with core.store.transaction():
        core.store.restore_text(replace(row.record, text=payload["text"], title=payload["title"],
                                        summary=payload["summary"]),
                                row.rowid, payload["index_text"])
        core.store.add_history(record_id, "RESTORE", time.time(), new_text=payload["text"])


# -- archive -----------------------------------------------------------------------


class Unindexer:
    """Takes archived memories out of the vector index, in bulk for a caller archiving
    many batches (a sleep cycle). Removing rowids from a user's partition rewrites the
    whole partition (16 ms at 100k vectors, however few leave), so per batch of a hundred
    it would hold the Memory's lock, which every search takes, longer than the batch's
    transaction. Until ``flush`` the index still holds those vectors (searches drop them:
    their rows are gone) and the store's vector epoch stays as it was, so no search takes
    the index for stale and rebuilds it. An index file saved meanwhile disagrees with the
    store's count, so it is rebuilt on open."""

    def __init__(self, core: Core, every: int = 5000) -> None:
        self.core, self.every = core, every
        self.pending: dict[str, list[int]] = {}
        self.count = 0

    def add(self, user_id: str, rowids: Sequence[int]) -> None:
        self.pending.setdefault(user_id, []).extend(rowids)
        self.count += len(rowids)
        if self.count >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        core = self.core
        with core.lock:
            core.sync_index()  # rebuilt (without them) only if another process wrote meanwhile
            before = core.index.epoch
            for user, rowids in self.pending.items():
                core.index.remove(user, np.asarray(rowids, dtype=np.int64))
            core.store.bump_epoch()
            core.claim_epoch(before)
        self.pending, self.count = {}, 0

    def __enter__(self) -> Unindexer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def archive(core: Core, ids: Sequence[str], reason: str | Mapping[str, str], *,
            cycle: str | None = None, action: str = "archive",
            unindex: Unindexer | None = None) -> list[str]:
    """Move memories out of every index into ``archive`` in one transaction; undo brings
    them back. ``reason``: one for all, or one per id. Returns the ids archived (those
    that were live). Each statement handles the whole batch, so the transaction costs
    tens of microseconds per memory, and it runs between searches (``pacing``).
    ``unindex``: leave the vector index to it (by default it is updated at once)."""
    now = time.time()
    with pacing.between_searches(core), core.store.transaction():
        found = core.store.archive(list(dict.fromkeys(ids)), now)
        if not found:
            return []
        core.store.log_history("ARCHIVE", now, [(rid, _why(reason, rid)) for _, rid, _ in found])
        core.store.log_events(action, [(rid, user, _why(reason, rid), _RESTORE)
                                       for _, rid, user in found], cycle)
    by_user: dict[str, list[int]] = {}
    for rowid, _, user in found:
        by_user.setdefault(user, []).append(rowid)
    later = unindex or Unindexer(core)
    for user, rows in by_user.items():  # one pass over the index per user, not per row
        later.add(user, rows)
    if unindex is None:
        later.flush()
    return [rid for _, rid, _ in found]


def archived(core: Core, record_id: str) -> tuple[Record, str, list[Edge]] | None:
    return core.store.archived(record_id)


def restore(core: Core, record_id: str) -> None:
    """Put an archived memory back into the store and every index."""
    found = core.store.archived(record_id)
    if found is None:
        raise NotFoundError(f"{record_id} is not archived")
    rec, index_text, edges = found
    with core.lock:
        core.sync_index()
        with core.store.transaction():
            live = {r.record.id for r in core.store.get_rows_by_id(
                list({e.src for e in edges} | {e.dst for e in edges}))} | {rec.id}
            keep = [e for e in edges if e.src in live and e.dst in live]
            rowids = core.store.insert([(rec, index_text)], keep, history_event="RESTORE")
            core.store.unarchive(record_id)
        assert rec.vector is not None
        core.index_added(rec.user_id, rowids, rec.vector.reshape(1, -1))


# -- merge -------------------------------------------------------------------------


def union_text(rows: Sequence[StoredRow]) -> tuple[str, str | None]:
    """The extractive union of several memories: every distinct sentence once, in time
    order. One speaker: (text, speaker); several: each line prefixed by its speaker."""
    ordered = sorted(rows, key=lambda r: (r.record.event_time or datetime.min.replace(tzinfo=UTC),
                                          r.rowid))
    speakers = {r.record.speaker for r in ordered}
    one = len(speakers) == 1
    seen: set[str] = set()
    lines: list[str] = []
    for row in ordered:
        kept = []
        for sentence in segment.sentences(row.record.text or ""):
            key = _SPACE.sub(" ", sentence.lower()).strip(" .!?")
            if key and key not in seen:
                seen.add(key)
                kept.append(sentence)
        if kept:
            body = " ".join(kept)
            who = row.record.speaker
            lines.append(body if one or not who else f"{who}: {body}")
    return (" ".join(lines) if one else "\n".join(lines)), (ordered[0].record.speaker if one else None)


def merge(core: Core, ids: Sequence[str], *, weights: Sequence[float] | None = None,
          mode: str = "lossless", originals: str = "keep", reason: str = "merged on request",
          cycle: str | None = None, user_id: str | None = None,
          vector: np.ndarray | None = None, unindex: Unindexer | None = None) -> Record:
    """Merge memories of one user into a new record; see the module docstring.
    ``vector``: the lossless union's embedding when the caller embedded it already.
    ``unindex``: archived originals leave the vector index through it (see ``archive``)."""
    if isinstance(ids, str) or len(set(ids)) < 2:
        raise InvalidInputError("merge needs at least two distinct memory ids")
    if mode not in MERGE_MODES:
        raise InvalidInputError(f"mode must be one of {MERGE_MODES}, found {mode!r}")
    if originals not in ORIGINALS:
        raise InvalidInputError(f"originals must be one of {ORIGINALS}, found {originals!r}")
    id_list = list(dict.fromkeys(ids))
    if weights is None:
        w = np.ones(len(id_list), dtype=np.float32)
    else:
        try:
            with np.errstate(over="ignore"):  # past float32: infinite, refused below
                w = np.asarray(list(weights), dtype=np.float64).astype(np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError("weights must be positive numbers, one per distinct id; "
                                    f"found {weights.__class__.__name__}") from exc
        if w.shape != (len(id_list),) or not np.isfinite(w).all() or (w <= 0).any():
            raise InvalidInputError("weights must be positive numbers, one per distinct id")
    rows = [core.owned(rid, user_id, with_vector=True) for rid in id_list]
    users = {r.record.user_id for r in rows}
    if len(users) != 1:
        raise InvalidInputError("merge only combines memories of one user")
    vecs = np.stack([r.record.vector for r in rows if r.record.vector is not None])
    mean = (w[:, None] * vecs).sum(axis=0)
    mean = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    text: str | None
    speaker: str | None
    if mode == "lossless" and all(r.record.text is not None for r in rows):
        text, speaker = union_text(rows)
        if vector is None:
            vector = core.embedder.embed_batch([index_text_for(text, speaker)])[0]
        summary = segment.derive_summary(text)
    else:  # lossy, or lossless over memories some of which are lossy already
        text, speaker = None, None
        vector = mean
        summary = reconstruct(core, mean.reshape(1, -1))[0]
    recs = [r.record for r in rows]
    times = [t for t in (r.event_time for r in recs) if t is not None]
    common = {r.session_id for r in recs}
    agents = {r.agent_id for r in recs}
    now = datetime.now(UTC)
    merged = Record(
        id=new_id(), user_id=recs[0].user_id, text=text,
        agent_id=agents.pop() if len(agents) == 1 else None,
        session_id=common.pop() if len(common) == 1 else None,
        level="merged", title=segment.derive_title(text) if text else "",
        type=recs[0].type, summary=summary,
        metadata={"merge_mode": mode, "event_times": [t.isoformat() for t in sorted(times)]},
        speaker=speaker, event_time=max(times) if times else now, created_at=now, updated_at=now,
        importance=max(r.importance for r in recs), access_count=sum(r.access_count for r in recs),
        strength=max(r.strength for r in recs), sources=id_list,
        content_hash=content_hash(text) if text else "", vector=vector,
    )
    edges = [Edge(merged.id, rid, "merged_from", float(wi), now) for rid, wi in zip(id_list, w, strict=True)]
    with core.lock:
        core.sync_index()
        with core.store.transaction():
            rowids = core.store.insert([(merged, index_text_for(text or "", speaker))], edges,
                                       history_event="MERGE")
            core.store.log_event("merge", merged.id, merged.user_id,
                                 f"{reason}: {len(id_list)} memories, {mode}, originals {originals}",
                                 {"op": "unmerge", "originals": originals}, cycle)
        core.index_added(merged.user_id, rowids, vector.reshape(1, -1))
    why = f"merged into {merged.id}"
    if originals == "archive":
        archive(core, id_list, why, cycle=cycle, unindex=unindex)
    elif originals == "demote":
        demote(core, id_list, why, cycle=cycle, undoable=True, reconstruct_text=False)
    return core.store.get_row(merged.id).record


def _undo_merge(core: Core, record_id: str) -> None:
    """Delete the merged record and bring its originals back as they were."""
    from latentmem.lifecycle import purge

    row, sources, steps = _merge_steps(core, record_id)
    for seq in steps:
        undo(core, seq)
    # Consolidation leaves memories alone once a merge of theirs was undone: someone
    # decided they should stay apart.
    core.store.mark_unmerged(sources, record_id)
    if row is not None:
        with core.lock:
            purge.delete(core, [record_id], None)


def _merge_steps(core: Core, record_id: str) -> tuple[StoredRow | None, list[str], list[int]]:
    """A merged record (None when gone), its sources, and the events an undo of the merge
    undoes: each source's archiving or demotion for it, newest first."""
    try:
        row: StoredRow | None = core.store.get_row(record_id)
    except NotFoundError:
        row = None
    sources = row.record.sources if row is not None else []
    steps = [event.seq for rid in sources for event in reversed(journal.for_record(core.store, rid))
             if event.undone_at is None and event.undoable
             and event.reason == f"merged into {record_id}"]
    return row, sources, steps


# -- undo --------------------------------------------------------------------------


def _blocked(core: Core, event: journal.Event, payload: dict[str, Any]) -> Exception | None:
    """What undoing ``event`` would fail with, found before anything changes. An undo of
    a merge undoes several events (the archiving or demotion of each source): one of them
    failing halfway left the others undone and the merge in place (a source demoted by
    one merge and archived by another; found by the state machine of
    tests/test_properties.py)."""
    rid = event.record_id
    op = payload.get("op")
    if op == "demote":
        try:
            text = core.store.get_row(str(rid)).record.text
        except NotFoundError:
            return NotFoundError(f"{rid} is not live (archived or deleted since its demotion); "
                                 "its text cannot be put back")
        if text is not None:
            return InvalidInputError(f"{rid} has text again; nothing to undo")
    elif op == "restore" and core.store.archived(str(rid)) is None:
        return NotFoundError(f"{rid} is not archived")
    elif op == "unmerge":
        for seq in _merge_steps(core, str(rid))[2]:
            step, step_payload = core.store.event(seq)
            problem = _blocked(core, step, step_payload or {})
            if problem is not None:
                return type(problem)(
                    f"event #{event.seq} (merge) cannot be undone: its step #{seq} ({step.action} "
                    f"of {step.record_id}) cannot: {problem}")
    return None



def undo(core: Core, seq: int, user_id: str | None = None) -> journal.Event:
    """Reverse one journaled action. Deliberate deletions and explicit demotions, and
    actions older than the undo window, cannot be undone: they raise and change nothing.
    ``user_id``: only that user's events (another's is "no lifecycle event")."""
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise InvalidInputError(f"event must be an integer, found {seq!r}")
    if not 1 <= seq <= journal.MAX_EVENT:
        raise NotFoundError(f"no lifecycle event #{seq}")
    user = check_scope_value("user_id", user_id)
    event, payload = core.store.event(seq)
    if user is not None and event.user_id != user:
        raise NotFoundError(f"no lifecycle event #{seq}")
    if event.undone_at is not None:
        raise InvalidInputError(f"event #{seq} was already undone")
    if payload is None or event.record_id is None:
        raise InvalidInputError(
            f"event #{seq} ({event.action}) cannot be undone: it was final by design, or its "
            "undo window has passed")
    op = payload.get("op")
    with core.lock:
        problem = _blocked(core, event, payload)
        if problem is not None:
            raise problem
        if op == "demote":
            _undo_demote(core, event.record_id, payload)
        elif op == "restore":
            restore(core, event.record_id)
        elif op == "unmerge":
            _undo_merge(core, event.record_id)
        elif op == "strength":
            core.store.set_strengths({core.store.get_row(event.record_id).rowid: payload["strength"]})
        else:
            raise InvalidInputError(f"event #{seq} has an unknown undo operation {op!r}")
        if op in ("demote", "restore"):
            # Undoing a forgetting says the memory matters: it counts as a recall, or the
            # next cycle would forget it again at once.
            core.store.touch([core.store.get_row(event.record_id).rowid])
        with core.store.transaction():
            core.store.mark_undone(seq)
            core.store.log_event("undo", event.record_id, event.user_id,
                                 f"undid #{seq} ({event.action})")
    return core.store.event(seq)[0]
