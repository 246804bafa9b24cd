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

Every function takes the owning ``Memory`` and holds its lock for one short
transaction, so a background cycle interleaves with searches.
"""

from __future__ import annotations

import json
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
from latentmem.inputs import content_hash, index_text_for
from latentmem.lifecycle import journal
from latentmem.store.formats.records import record_from_dict
from latentmem.store.sqlite import StoredRow
from latentmem.types import Edge, Record

if TYPE_CHECKING:
    from latentmem.memory import Memory

MERGE_MODES = ("lossless", "lossy")
ORIGINALS = ("keep", "demote", "archive")
_SPACE = re.compile(r"\s+")


def reconstruct(mem: Memory, vectors: np.ndarray) -> list[str]:
    """Text for vectors from the inverter, or empty strings when none is available."""
    inverter = mem.inverter()
    if inverter is None or len(vectors) == 0:
        return [""] * len(vectors)
    return list(inverter.invert(np.asarray(vectors, dtype=np.float32)))


# -- demote ------------------------------------------------------------------------


def _why(reason: str | Mapping[str, str], record_id: str) -> str:
    return reason if isinstance(reason, str) else reason[record_id]


def demote(mem: Memory, ids: Sequence[str], reason: str | Mapping[str, str], *,
           cycle: str | None = None, undoable: bool = False) -> list[str]:
    """Drop the text of these memories for good (or, ``undoable``, until the undo window
    passes), in one transaction. ``reason``: one for all, or one per id. Already-lossy
    memories are skipped. Returns the ids demoted."""
    rows = [r for r in mem.store.get_rows_by_id(list(ids), with_vector=True)
            if r.record.text is not None]
    if not rows:
        return []
    vectors = np.stack([r.record.vector for r in rows if r.record.vector is not None])
    recon = reconstruct(mem, vectors)
    now = time.time()
    with mem._lock, mem.store.transaction() as conn:
        for row, text in zip(rows, recon, strict=True):
            rec = row.record
            undo = None
            if undoable:
                undo = {"op": "demote", "text": rec.text, "index_text": row.index_text,
                        "title": rec.title, "summary": rec.summary}
            conn.execute(
                "UPDATE records SET text = NULL, index_text = '', title = '', summary = ?, "
                "updated_at = ? WHERE rowid = ?", (text, now, row.rowid))
            mem.store.drop_text(conn, row.rowid)
            conn.execute("UPDATE history SET old_text = NULL, new_text = NULL "
                         "WHERE record_id = ?", (rec.id,))
            why = _why(reason, rec.id)
            conn.execute("INSERT INTO history(record_id, event, at, detail) "
                         "VALUES (?, 'DEMOTE', ?, ?)", (rec.id, now, json.dumps({"reason": why})))
            journal.log(conn, "demote", rec.id, rec.user_id, why, undo, cycle)
    return [r.record.id for r in rows]


def _undo_demote(mem: Memory, record_id: str, payload: dict[str, Any]) -> None:
    row = mem.store.get_row(record_id)
    if row.record.text is not None:
        raise InvalidInputError(f"{record_id} has text again; nothing to undo")
    with mem.store.transaction() as conn:
        mem.store.restore_text(conn, replace(row.record, text=payload["text"],
                                             title=payload["title"], summary=payload["summary"]),
                               row.rowid, payload["index_text"])
        conn.execute("INSERT INTO history(record_id, event, new_text, at) "
                     "VALUES (?, 'RESTORE', ?, ?)", (record_id, payload["text"], time.time()))


# -- archive -----------------------------------------------------------------------


def archive(mem: Memory, ids: Sequence[str], reason: str | Mapping[str, str], *,
            cycle: str | None = None, action: str = "archive") -> list[str]:
    """Move memories out of every index into ``archive`` in one transaction; undo brings
    them back. ``reason``: one for all, or one per id."""
    rows = mem.store.get_rows_by_id(list(ids), with_vector=True)
    if not rows:
        return []
    now = time.time()
    with mem._lock:
        mem._sync_index()
        with mem.store.transaction() as conn:
            for row in rows:
                rec = row.record
                assert rec.vector is not None
                edges = [[e.src, e.dst, e.type, e.weight] for e in mem.store.edges_of(rec.id)]
                payload = {"record": rec.to_dict(), "edges": edges}
                conn.execute(
                    "INSERT OR REPLACE INTO archive(id, user_id, row, index_text, vector, archived_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (rec.id, rec.user_id, json.dumps(payload), row.index_text,
                     np.ascontiguousarray(rec.vector, dtype="<f4").tobytes(), now))
                conn.execute("DELETE FROM records WHERE rowid = ?", (row.rowid,))
                mem.store.drop_text(conn, row.rowid)
                # Provenance stays: a merged record keeps its merged_from edges.
                conn.execute("DELETE FROM edges WHERE (src = ? OR dst = ?) AND type != 'merged_from'",
                             (rec.id, rec.id))
                why = _why(reason, rec.id)
                conn.execute("INSERT INTO history(record_id, event, at, detail) "
                             "VALUES (?, 'ARCHIVE', ?, ?)",
                             (rec.id, now, json.dumps({"reason": why})))
                journal.log(conn, action, rec.id, rec.user_id, why, {"op": "restore"}, cycle)
            mem.store.bump_epoch(conn)
        by_user: dict[str, list[int]] = {}
        for row in rows:
            by_user.setdefault(row.record.user_id, []).append(row.rowid)
        for user, rowids in by_user.items():  # one pass over the index per user, not per row
            mem.index.remove(user, np.asarray(rowids, dtype=np.int64))
        mem.index.epoch = mem.store.vector_epoch()
    return [r.record.id for r in rows]


def archived(mem: Memory, record_id: str) -> tuple[Record, str, list[Edge]] | None:
    with mem.store.lock:
        row = mem.store.conn.execute(
            "SELECT row, index_text, vector FROM archive WHERE id = ?", (record_id,)).fetchone()
    if row is None:
        return None
    payload = json.loads(row[0])
    rec = record_from_dict(payload["record"], np.frombuffer(row[2], dtype="<f4"),
                           f"archived {record_id}")
    edges = [Edge(s, d, t, w) for s, d, t, w in payload["edges"]]
    return rec, row[1], edges


def restore(mem: Memory, record_id: str) -> None:
    """Put an archived memory back into the store and every index."""
    found = archived(mem, record_id)
    if found is None:
        raise NotFoundError(f"{record_id} is not archived")
    rec, index_text, edges = found
    with mem._lock:
        mem._sync_index()
        with mem.store.transaction() as conn:
            live = {r.record.id for r in mem.store.get_rows_by_id(
                list({e.src for e in edges} | {e.dst for e in edges}))} | {rec.id}
            keep = [e for e in edges if e.src in live and e.dst in live]
            rowids = mem.store.insert([(rec, index_text)], keep, history_event="RESTORE")
            conn.execute("DELETE FROM archive WHERE id = ?", (record_id,))
        assert rec.vector is not None
        mem.index.add(rec.user_id, np.asarray(rowids, dtype=np.int64), rec.vector.reshape(1, -1))
        mem.index.epoch = mem.store.vector_epoch()


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


def merge(mem: Memory, ids: Sequence[str], *, weights: Sequence[float] | None = None,
          mode: str = "lossless", originals: str = "keep", reason: str = "merged on request",
          cycle: str | None = None, user_id: str | None = None,
          vector: np.ndarray | None = None) -> Record:
    """Merge memories of one user into a new record; see the module docstring.
    ``vector``: the lossless union's embedding when the caller embedded it already."""
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
        w = np.asarray(list(weights), dtype=np.float64).astype(np.float32)
        if len(w) != len(id_list) or not np.isfinite(w).all() or (w <= 0).any():
            raise InvalidInputError("weights must be positive numbers, one per distinct id")
    rows = [mem._owned(rid, user_id, with_vector=True) for rid in id_list]
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
            vector = mem.embedder.embed_batch([index_text_for(text, speaker)])[0]
        summary = segment.derive_summary(text)
    else:  # lossy, or lossless over memories some of which are lossy already
        text, speaker = None, None
        vector = mean
        summary = reconstruct(mem, mean.reshape(1, -1))[0]
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
    with mem._lock:
        mem._sync_index()
        with mem.store.transaction() as conn:
            rowids = mem.store.insert([(merged, index_text_for(text or "", speaker))], edges,
                                      history_event="MERGE")
            journal.log(conn, "merge", merged.id, merged.user_id,
                        f"{reason}: {len(id_list)} memories, {mode}, originals {originals}",
                        {"op": "unmerge", "originals": originals}, cycle)
        mem.index.add(merged.user_id, np.asarray(rowids, dtype=np.int64), vector.reshape(1, -1))
        mem.index.epoch = mem.store.vector_epoch()
    why = f"merged into {merged.id}"
    if originals == "archive":
        archive(mem, id_list, why, cycle=cycle)
    elif originals == "demote":
        demote(mem, id_list, why, cycle=cycle, undoable=True)
    return mem.store.get_row(merged.id).record


def _undo_merge(mem: Memory, record_id: str) -> None:
    """Delete the merged record and bring its originals back as they were."""
    try:
        row = mem.store.get_row(record_id)
    except NotFoundError:
        row = None
    sources = row.record.sources if row is not None else []
    for rid in sources:
        for event in reversed(journal.for_record(mem.store, rid)):
            if event.undone_at is None and event.undoable and event.reason == f"merged into {record_id}":
                undo(mem, event.seq)
    # Consolidation leaves memories alone once a merge of theirs was undone: someone
    # decided they should stay apart.
    with mem.store.transaction() as conn:
        conn.executemany("UPDATE records SET metadata = json_set(metadata, '$.unmerged', ?) "
                         "WHERE id = ?", [(record_id, rid) for rid in sources])
    if row is not None:
        mem.delete([record_id])


# -- undo --------------------------------------------------------------------------


def undo(mem: Memory, seq: int) -> journal.Event:
    """Reverse one journaled action. Deliberate deletions and explicit demotions, and
    actions older than the undo window, cannot be undone: they raise and change nothing."""
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise InvalidInputError(f"event must be an integer, found {seq!r}")
    event, payload = journal.get(mem.store, seq)
    if event.undone_at is not None:
        raise InvalidInputError(f"event #{seq} was already undone")
    if payload is None or event.record_id is None:
        raise InvalidInputError(
            f"event #{seq} ({event.action}) cannot be undone: it was final by design, or its "
            "undo window has passed")
    op = payload.get("op")
    with mem._lock:
        if op == "demote":
            _undo_demote(mem, event.record_id, payload)
        elif op == "restore":
            restore(mem, event.record_id)
        elif op == "unmerge":
            _undo_merge(mem, event.record_id)
        elif op == "strength":
            with mem.store.transaction() as conn:
                conn.execute("UPDATE records SET strength = ? WHERE id = ?",
                             (payload["strength"], event.record_id))
        else:
            raise InvalidInputError(f"event #{seq} has an unknown undo operation {op!r}")
        if op in ("demote", "restore"):
            # Undoing a forgetting says the memory matters: it counts as a recall, or the
            # next cycle would forget it again at once.
            mem.store.touch([mem.store.get_row(event.record_id).rowid])
        with mem.store.transaction() as conn:
            journal.mark_undone(conn, seq)
            journal.log(conn, "undo", event.record_id, event.user_id,
                        f"undid #{seq} ({event.action})")
    return journal.get(mem.store, seq)[0]
