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
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from latentmem.encode import segment
from latentmem.errors import InvalidInputError, NotFoundError
from latentmem.ids import new_id
from latentmem.inputs import check_scope_value, content_hash, index_text_for
from latentmem.lifecycle import journal, pacing
from latentmem.store.formats.records import record_from_dict
from latentmem.store.sqlite import StoredRow
from latentmem.types import Edge, Record, from_ts, iso

if TYPE_CHECKING:
    from latentmem.memory import Memory

MERGE_MODES = ("lossless", "lossy")
ORIGINALS = ("keep", "demote", "archive")
_SPACE = re.compile(r"\s+")
# A batch of ids or rowids as one JSON array parameter: one statement, any batch size.
_IN = "IN (SELECT value FROM json_each(?))"
_RESTORE = {"op": "restore"}  # the undo of an archiving


def reconstruct(mem: Memory, vectors: np.ndarray) -> list[str]:
    """Text for vectors from the inverter, or empty strings when none is available."""
    inverter = mem.inverter()
    if inverter is None or len(vectors) == 0:
        return [""] * len(vectors)
    return list(inverter.invert(np.asarray(vectors, dtype=np.float32)))


# -- demote ------------------------------------------------------------------------


def _why(reason: str | Mapping[str, str], record_id: str) -> str:
    return reason if isinstance(reason, str) else reason[record_id]


def _history(conn: sqlite3.Connection, event: str, at: float,
             reasons: Sequence[tuple[str, str]]) -> None:
    """One history event per memory, with its reason, in one statement (see journal.log_many)."""
    conn.execute("INSERT INTO history(record_id, event, at, detail) "
                 "SELECT json_extract(value, '$[0]'), ?, ?, "
                 "json_object('reason', json_extract(value, '$[1]')) FROM json_each(?)",
                 (event, at, json.dumps(reasons)))


def demote(mem: Memory, ids: Sequence[str], reason: str | Mapping[str, str], *,
           cycle: str | None = None, undoable: bool = False, reconstruct_text: bool = True,
           ) -> list[str]:
    """Drop the text of these memories for good (or, ``undoable``, until the undo window
    passes), in one transaction. ``reason``: one for all, or one per id. Already-lossy
    memories are skipped. Returns the ids demoted. ``reconstruct_text``: store the
    inverter's reading of the vector as the summary (when an inverter is shipped); sleep
    cycles pass False, because inverting costs tens of milliseconds a memory and a cycle
    may demote thousands (``m.invert(id)`` reads any of them back on demand)."""
    invert = reconstruct_text and mem.inverter() is not None  # vectors are read only for it
    rows = [r for r in mem.store.get_rows_by_id(list(ids), with_vector=invert)
            if r.record.text is not None]
    if not rows:
        return []
    recon = [""] * len(rows)
    if invert:
        recon = reconstruct(mem, np.stack([r.record.vector for r in rows
                                           if r.record.vector is not None]))
    now = time.time()
    rowids = [r.rowid for r in rows]
    done = json.dumps([r.record.id for r in rows])
    with pacing.between_searches(mem), mem.store.transaction() as conn:
        conn.execute(
            "UPDATE records SET text = NULL, index_text = '', title = '', summary = j.value, "
            "updated_at = ? FROM json_each(?) j WHERE records.rowid = CAST(j.key AS INTEGER)",
            (now, json.dumps({str(row.rowid): text for row, text in zip(rows, recon, strict=True)})))
        mem.store.drop_texts(conn, rowids)
        conn.execute(f"UPDATE history SET old_text = NULL, new_text = NULL WHERE record_id {_IN}",
                     (done,))
        _history(conn, "DEMOTE", now, [(r.record.id, _why(reason, r.record.id)) for r in rows])
        journal.log_many(conn, "demote", [
            (r.record.id, r.record.user_id, _why(reason, r.record.id),
             {"op": "demote", "text": r.record.text, "index_text": r.index_text,
              "title": r.record.title, "summary": r.record.summary} if undoable else None)
            for r in rows], cycle)
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


# The archive's copy of a memory, made by SQLite in one statement per batch: the record's
# fields as Record.to_dict names them but with times as Unix seconds ("times": "unix"),
# every real written with 17 digits (json_object keeps 15, and an undo must restore the
# exact value), and its edges. ``archived`` reads both this and the older ISO form.
_REALS = ("event_time", "created_at", "updated_at", "valid_to", "importance",
          "last_accessed_at", "strength")
_TIMES = ("event_time", "created_at", "updated_at", "valid_to", "last_accessed_at")
_FIELD_SQL = {"summary": "coalesce(r.summary, latentmem_plain(r.text))",
              "metadata": "json(r.metadata)", "sources": "json(r.sources)",
              **{f: f"CASE WHEN r.{f} IS NULL THEN NULL ELSE json(printf('%!.17g', r.{f})) END"
                 for f in _REALS}}
_RECORD_JSON = "json_object(" + ", ".join(
    f"'{f.name}', {_FIELD_SQL.get(f.name, 'r.' + f.name)}" for f in fields(Record)
    if f.name != "vector") + ")"
_EDGES_JSON = ("(SELECT json_group_array(json_array(e.src, e.dst, e.type, "
               "json(printf('%!.17g', e.weight)))) FROM edges e WHERE e.src = r.id OR e.dst = r.id)")
_ARCHIVE = (
    "INSERT OR REPLACE INTO archive(id, user_id, row, index_text, vector, archived_at) "
    f"SELECT r.id, r.user_id, json_object('times', 'unix', 'record', {_RECORD_JSON}, "
    f"'edges', {_EDGES_JSON}), x.index_text, r.vector, ? "
    "FROM records r JOIN records_indexed x ON x.rowid = r.rowid "
    "WHERE r.rowid IN (SELECT value FROM json_each(?))")
class Unindexer:
    """Takes archived memories out of the vector index, in bulk for a caller archiving
    many batches (a sleep cycle). Removing rowids from a user's partition rewrites the
    whole partition (16 ms at 100k vectors, however few leave), so per batch of a hundred
    it would hold the Memory's lock, which every search takes, longer than the batch's
    transaction. Until ``flush`` the index still holds those vectors (searches drop them:
    their rows are gone) and the store's vector epoch stays as it was, so no search takes
    the index for stale and rebuilds it. An index file saved meanwhile disagrees with the
    store's count, so it is rebuilt on open."""

    def __init__(self, mem: Memory, every: int = 5000) -> None:
        self.mem, self.every = mem, every
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
        mem = self.mem
        with mem._lock:
            mem._sync_index()  # rebuilt (without them) only if another process wrote meanwhile
            for user, rowids in self.pending.items():
                mem.index.remove(user, np.asarray(rowids, dtype=np.int64))
            with mem.store.transaction() as conn:
                mem.store.bump_epoch(conn)
            mem.index.epoch = mem.store.vector_epoch()
        self.pending, self.count = {}, 0

    def __enter__(self) -> Unindexer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def archive(mem: Memory, ids: Sequence[str], reason: str | Mapping[str, str], *,
            cycle: str | None = None, action: str = "archive",
            unindex: Unindexer | None = None) -> list[str]:
    """Move memories out of every index into ``archive`` in one transaction; undo brings
    them back. ``reason``: one for all, or one per id. Returns the ids archived (those
    that were live). Each statement handles the whole batch, so the transaction costs
    tens of microseconds per memory, and it runs between searches (``pacing``).
    ``unindex``: leave the vector index to it (by default it is updated at once)."""
    wanted = json.dumps(list(dict.fromkeys(ids)))
    now = time.time()
    codec = mem.store.codec
    with pacing.between_searches(mem), mem.store.transaction() as conn:
        found = conn.execute(f"SELECT rowid, id, user_id, length(vector) = ? FROM records "
                             f"WHERE id {_IN}", (4 * codec.dim, wanted)).fetchall()
        if not found:
            return []
        rowids = json.dumps([r[0] for r in found])
        done = json.dumps([r[1] for r in found])
        conn.execute(_ARCHIVE, (now, rowids))
        # The archive keeps float32 vectors; a compact tier's blobs are decoded here.
        other = [r[1] for r in found if not r[3]]
        if other:
            blobs = conn.execute(f"SELECT id, vector FROM archive WHERE id {_IN}",
                                 (json.dumps(other),)).fetchall()
            vectors = codec.decode_many([v for _, v in blobs]).astype("<f4")
            conn.executemany("UPDATE archive SET vector = ? WHERE id = ?",
                             [(v.tobytes(), i) for (i, _), v in zip(blobs, vectors, strict=True)])
        mem.store.drop_texts(conn, [r[0] for r in found], purge=False)
        # Provenance stays: a merged record keeps its merged_from edges.
        for end in ("src", "dst"):
            conn.execute(f"DELETE FROM edges WHERE {end} {_IN} AND type != 'merged_from'",
                         (done,))
        conn.execute(f"DELETE FROM records WHERE rowid {_IN}", (rowids,))
        _history(conn, "ARCHIVE", now, [(rid, _why(reason, rid)) for _, rid, _, _ in found])
        journal.log_many(conn, action, [(rid, user, _why(reason, rid), _RESTORE)
                                        for _, rid, user, _ in found], cycle)
    by_user: dict[str, list[int]] = {}
    for rowid, _, user, _ in found:
        by_user.setdefault(user, []).append(rowid)
    later = unindex or Unindexer(mem)
    for user, rows in by_user.items():  # one pass over the index per user, not per row
        later.add(user, rows)
    if unindex is None:
        later.flush()
    return [rid for _, rid, _, _ in found]


def archived(mem: Memory, record_id: str) -> tuple[Record, str, list[Edge]] | None:
    with mem.store.lock:
        row = mem.store.conn.execute(
            "SELECT row, index_text, vector FROM archive WHERE id = ?", (record_id,)).fetchone()
    if row is None:
        return None
    payload = json.loads(row[0])
    data = payload["record"]
    if payload.get("times") == "unix":
        data = {**data, **{k: iso(from_ts(data[k])) for k in _TIMES}}
    rec = record_from_dict(data, np.frombuffer(row[2], dtype="<f4"), f"archived {record_id}")
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
        archive(mem, id_list, why, cycle=cycle, unindex=unindex)
    elif originals == "demote":
        demote(mem, id_list, why, cycle=cycle, undoable=True, reconstruct_text=False)
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


def undo(mem: Memory, seq: int, user_id: str | None = None) -> journal.Event:
    """Reverse one journaled action. Deliberate deletions and explicit demotions, and
    actions older than the undo window, cannot be undone: they raise and change nothing.
    ``user_id``: only that user's events (another's is "no lifecycle event")."""
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise InvalidInputError(f"event must be an integer, found {seq!r}")
    user = check_scope_value("user_id", user_id)
    event, payload = journal.get(mem.store, seq)
    if user is not None and event.user_id != user:
        raise NotFoundError(f"no lifecycle event #{seq}")
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
