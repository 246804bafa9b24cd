"""The SQLite statements of the lifecycle: journal, archive, learned state, the long scans
of a sleep cycle, and upkeep. ``SQLiteStore`` (sqlite.py) mixes these in; the lifecycle
modules (``latentmem/lifecycle/``) decide what to do and call them through the role
protocols of ``store/base.py``.

Batches of ids or rowids go in as one JSON array parameter (``json_each``): one
statement for any batch size. ``executemany`` gives up the GIL at every row and may wait
for it each time (5 ms when a search thread holds it), inside the transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentmem.errors import NotFoundError
from latentmem.store.base import Entry, Event, events_query
from latentmem.store.codec import VectorCodec
from latentmem.store.formats.records import record_from_dict
from latentmem.store.sqlite_errors import connect
from latentmem.store.textcodec import register
from latentmem.types import Edge, Record, from_ts, iso

_IN = "IN (SELECT value FROM json_each(?))"
# The ADD event of memories about to leave records (SQLiteStore.history gives it from the
# record until then; migration 008).
KEEP_ADD = (
    "INSERT INTO history(record_id, event, at) SELECT r.id, 'ADD', r.created_at FROM records r "
    "WHERE r.rowid IN (SELECT value FROM json_each(?)) AND NOT EXISTS (SELECT 1 FROM history h "
    "WHERE h.record_id = r.id AND h.event IN ('ADD', 'IMPORT', 'MERGE'))")

# -- the archive's copy of a memory ---------------------------------------------------
# Made by SQLite in one statement per batch: the record's fields as Record.to_dict names
# them but with times as Unix seconds ("times": "unix"), every real written with 17 digits
# (json_object keeps 15, and an undo must restore the exact value), and its edges.
# ``archived`` reads both this and the older ISO form.
_REALS = ("event_time", "created_at", "updated_at", "valid_to", "importance",
          "last_accessed_at", "strength")
_TIMES = ("event_time", "created_at", "updated_at", "valid_to", "last_accessed_at")
_FIELD_SQL = {"summary": "coalesce(r.summary, latentmem_plain(r.text))",
              "text": "latentmem_text(r.text)",
              "title": "CASE WHEN r.title = '' AND r.text IS NOT NULL "
                       "THEN latentmem_title(r.text) ELSE r.title END",
              "content_hash": "CASE WHEN r.content_hash = '' AND r.text IS NOT NULL "
                              "THEN latentmem_hash(r.text) ELSE r.content_hash END",
              "metadata": "json(r.metadata)", "sources": "json(r.sources)",
              **{f: f"CASE WHEN r.{f} IS NULL THEN NULL ELSE json(printf('%!.17g', r.{f})) END"
                 for f in _REALS}}
_RECORD_JSON = "json_object(" + ", ".join(
    f"'{f.name}', {_FIELD_SQL.get(f.name, 'r.' + f.name)}" for f in fields(Record)
    if f.name != "vector") + ")"
_EDGES_JSON = ("(SELECT json_group_array(json_array(e.src, e.dst, e.type, "
               "json(printf('%!.17g', e.weight)))) FROM edge_list e WHERE e.src = r.id OR e.dst = r.id)")
_ARCHIVE = (
    "INSERT OR REPLACE INTO archive(id, user_id, row, index_text, vector, archived_at) "
    f"SELECT r.id, r.user_id, json_object('times', 'unix', 'record', {_RECORD_JSON}, "
    f"'edges', {_EDGES_JSON}), x.index_text, r.vector, ? "
    "FROM records r JOIN records_indexed x ON x.rowid = r.rowid "
    f"WHERE r.rowid {_IN}")

_EVENT_COLS = "seq, at, cycle, action, record_id, user_id, reason, undo IS NOT NULL, undone_at"
_SIGNATURE = ("SELECT count(*), coalesce(max(rowid), 0), coalesce(max(updated_at), 0) "
              "FROM records WHERE user_id = ? AND session_id IS NOT NULL")

# Bulk writes (lifecycle/pacing.py). WAL pages a run lets pile up before it checkpoints
# (16 MB): each checkpoint syncs the files, so fewer and larger ones cost less (archiving
# 100k memories: 10.5 s of checkpoints at 800 pages, SQLite's own threshold being 1,000;
# 5.5 s at 4,000).
CHECKPOINT_PAGES = 4_000
# Full-text pages merged after each transaction, where a level holds several segments
# (``merge_fts``): archiving 100k memories, the longest transaction went from 370 to 34 ms,
# and the full-text work of the cycle from 1.9 to 1.1 s.
FTS_MERGE_PAGES = 64
# FTS5 merges segments on its own after each write once a level holds this many
# ('automerge', SQLite's default 4), inside the writing transaction. A bulk run turns that
# off while it writes, its own merge steps between slices doing the work instead, and
# restores it after: archiving at 100k, a batch's transaction sometimes carried an
# automerge of ~250 pages (longest transaction 64-105 ms against a 20 ms target; 34 ms
# without). A process that crashes mid-run leaves it off until the next cycle's optimise
# phase puts it back; meanwhile FTS5's 'crisismerge' (16 segments a level) still bounds it.
FTS_AUTOMERGE = 4


class ScanSQL:
    """The long reads of a sleep cycle (``base.Scans``), over ``_fetch``/``_batches``: the
    store answers them under its lock, a snapshot on its own read-only connection."""

    if TYPE_CHECKING:
        @property
        def codec(self) -> VectorCodec: ...

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _batches(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[Any]]:
        raise NotImplementedError

    def max_rowid(self) -> int:
        return int(self._fetch("SELECT max(rowid) FROM records")[0][0] or 0)

    def first_new_by_user(self, after_rowid: int) -> dict[str, int]:
        return dict(self._fetch(
            "SELECT user_id, min(rowid) FROM records WHERE rowid > ? AND level != 'merged' "
            "GROUP BY user_id ORDER BY user_id", (after_rowid,)))

    def mergeable_vectors(self, user_id: str, upto_rowid: int) -> tuple[np.ndarray, np.ndarray]:
        rowids: list[np.ndarray] = []
        vectors: list[np.ndarray] = []
        for rows in self._batches(
                "SELECT rowid, vector FROM records WHERE user_id = ? AND level != 'merged' "
                "AND json_extract(metadata, '$.unmerged') IS NULL AND rowid <= ? ORDER BY rowid",
                (user_id, upto_rowid), 1_000):
            rowids.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
            vectors.append(self.codec.decode_many([r[1] for r in rows]))
        if not rowids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.codec.dim), dtype=np.float32)
        return np.concatenate(rowids), np.concatenate(vectors)

    def _scan_column(self, column: str, rowids: Sequence[int]) -> dict[int, Any]:
        marks = ",".join(str(int(r)) for r in rowids)
        return dict(self._fetch(f"SELECT rowid, {column} FROM records WHERE rowid IN ({marks})"))

    def texts_of(self, rowids: Sequence[int]) -> dict[int, str | None]:
        return self._scan_column("latentmem_text(text)", rowids)

    def ids_of(self, rowids: Sequence[int]) -> dict[int, str]:
        return self._scan_column("id", rowids)

    def strength_rows(self, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        return self._batches(
            "SELECT rowid, max(created_at, coalesce(last_accessed_at, created_at)), "
            "importance, access_count, strength, text IS NULL, "
            "length(CAST(coalesce(text, '') AS BLOB)) + length(vector), length(vector), id, "
            "user_id FROM records", (), batch)

    def session_signature(self, user_id: str) -> list[float]:
        return [float(v) for v in self._fetch(_SIGNATURE, (user_id,))[0]]

    def session_vectors(self, user_id: str) -> tuple[list[str], list[str], np.ndarray]:
        rows = self._fetch("SELECT id, session_id, vector FROM records WHERE user_id = ? AND "
                           "session_id IS NOT NULL ORDER BY session_id, rowid", (user_id,))
        if not rows:
            return [], [], np.zeros((0, self.codec.dim), dtype=np.float32)
        vectors = np.asarray(self.codec.decode_many([r[2] for r in rows]), dtype=np.float32)
        return [str(r[0]) for r in rows], [str(r[1]) for r in rows], vectors

    def text_index_disagreement(self) -> tuple[int, int]:
        missing = self._fetch(
            "SELECT count(*) FROM records r WHERE (r.text IS NOT NULL OR r.index_text <> '') "
            "AND NOT EXISTS (SELECT 1 FROM records_fts_docsize d WHERE d.id = r.rowid)")[0][0]
        extra = self._fetch(
            "SELECT count(*) FROM records_fts_docsize d "
            "WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.rowid = d.id)")[0][0]
        return int(missing), int(extra)


class SQLiteSnapshot(ScanSQL):
    """A read-only connection of its own: long scans take no lock of the store's. Reads
    see one state until ``refresh``."""

    def __init__(self, path: Path, codec: VectorCodec) -> None:
        self._codec = codec
        self.conn = connect(f"file:{path}?mode=ro", uri=True, timeout=30.0,
                            check_same_thread=False)
        self.conn.execute("PRAGMA query_only=ON")
        register(self.conn)  # texts and derived fields read through these (textcodec.py)

    @property
    def codec(self) -> VectorCodec:
        return self._codec

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def _batches(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[Any]]:
        cur = self.conn.execute(sql, params)
        while rows := cur.fetchmany(size):
            yield rows

    def refresh(self) -> None:
        self.conn.rollback()  # end the read snapshot: the next read sees the latest writes

    def close(self) -> None:
        self.conn.close()


class LifecycleSQL(ScanSQL):
    """Mixed into ``SQLiteStore``: the journal, archive, learned-state and upkeep roles."""

    if TYPE_CHECKING:
        conn: sqlite3.Connection
        lock: threading.RLock
        path: Path

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def bump_epoch(self) -> None: ...

        def merge_fts(self, pages: int) -> int: ...

        def set_fts_automerge(self, segments: int) -> None: ...

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def _batches(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[Any]]:
        rows = self._fetch(sql, params)
        for start in range(0, len(rows), size):
            yield rows[start:start + size]

    def snapshot(self) -> SQLiteSnapshot:
        return SQLiteSnapshot(self.path, self.codec)

    # -- journal and history ---------------------------------------------------------

    def add_history(self, record_id: str, event: str, at: float, *,
                    new_text: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO history(record_id, event, new_text, at) VALUES (?, ?, ?, ?)",
                         (record_id, event, new_text, at))

    def log_history(self, event: str, at: float, reasons: Sequence[tuple[str, str]]) -> None:
        """One history event per memory, with its reason, in one statement."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO history(record_id, event, at, detail) "
                         "SELECT json_extract(value, '$[0]'), ?, ?, "
                         "json_object('reason', json_extract(value, '$[1]')) FROM json_each(?)",
                         (event, at, json.dumps(list(reasons))))

    def blank_history(self, record_ids: Sequence[str]) -> None:
        """Forget the texts history holds for these memories."""
        with self.transaction() as conn:
            conn.execute(f"UPDATE history SET old_text = NULL, new_text = NULL WHERE record_id {_IN}",
                         (json.dumps(list(record_ids)),))

    def log_event(self, action: str, record_id: str | None, user_id: str | None, reason: str,
                  undo: dict[str, Any] | None = None, cycle: str | None = None) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO events(at, cycle, action, record_id, user_id, reason, undo) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), cycle, action, record_id, user_id, reason,
                 None if undo is None else json.dumps(undo)))
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def log_events(self, action: str, entries: Sequence[Entry], cycle: str | None = None) -> None:
        at = time.time()
        dumped: dict[int, str] = {}  # one payload shared by many entries is serialised once

        def dump(undo: dict[str, Any]) -> str:
            text = dumped.get(id(undo))
            if text is None:
                text = dumped[id(undo)] = json.dumps(undo)
            return text

        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO events(at, cycle, action, record_id, user_id, reason, undo) "
                "SELECT ?, ?, ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
                "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)",
                (at, cycle, action, json.dumps([[rid, user, reason, None if undo is None else dump(undo)]
                                                for rid, user, reason, undo in entries])))

    def events(self, *, record_id: str | None = None, cycle: str | None = None,
               user_id: str | None = None, limit: int | None = None,
               newest_first: bool = False) -> list[Event]:
        sql, params = events_query("events", _EVENT_COLS, "?", record_id, cycle, user_id,
                                   limit, newest_first)
        return [Event.from_row(r) for r in self._fetch(sql, params)]

    def event(self, seq: int) -> tuple[Event, dict[str, Any] | None]:
        rows = self._fetch(f"SELECT {_EVENT_COLS}, undo FROM events WHERE seq = ?", (seq,))
        if not rows:
            raise NotFoundError(f"no lifecycle event #{seq}")
        row = rows[0]
        return Event.from_row(row[:9]), (json.loads(row[9]) if row[9] is not None else None)

    def mark_undone(self, seq: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE events SET undone_at = ?, undo = NULL WHERE seq = ?",
                         (time.time(), seq))

    def drop_undo(self, record_ids: Sequence[str]) -> None:
        with self.transaction() as conn:
            conn.execute(f"UPDATE events SET undo = NULL WHERE record_id {_IN}",
                         (json.dumps(list(record_ids)),))

    def expire_undo(self, before: float) -> int:
        with self.transaction() as conn:
            cur = conn.execute("UPDATE events SET undo = NULL WHERE undo IS NOT NULL AND at < ?",
                               (before,))
        return cur.rowcount

    # -- learned state ---------------------------------------------------------------

    def lock_model(self, name: str) -> None:
        """A write transaction (BEGIN IMMEDIATE) already excludes every other writer."""

    def delete_models(self, names: Sequence[str]) -> None:
        with self.transaction() as conn:
            conn.executemany("DELETE FROM models WHERE name = ?", [(n,) for n in names])

    def delete_feedback(self, record_ids: Sequence[str]) -> None:
        with self.transaction() as conn:
            conn.execute(f"DELETE FROM feedback WHERE record_id {_IN}",
                         (json.dumps(list(record_ids)),))

    def accesses(self, user_id: str, limit: int, after: float = 0.0) -> list[tuple[float, list[int]]]:
        rows = self._fetch(
            "SELECT at, rowids FROM accesses WHERE user_id = ? AND at > ? ORDER BY seq DESC LIMIT ?",
            (user_id, after, limit))
        return [(float(at), json.loads(ids)) for at, ids in rows]

    def trim_accesses(self, keep: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM accesses WHERE seq <= (SELECT max(seq) FROM accesses) - ?",
                         (keep,))

    # -- per-memory lifecycle writes -------------------------------------------------

    def set_strengths(self, strengths: dict[int, float]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE records SET strength = j.value FROM json_each(?) j "
                         "WHERE records.rowid = CAST(j.key AS INTEGER)", (json.dumps(strengths),))

    def mark_unmerged(self, record_ids: Sequence[str], merged_id: str) -> None:
        """Consolidation leaves these alone from now on: their merge was undone."""
        with self.transaction() as conn:
            conn.executemany("UPDATE records SET metadata = json_set(metadata, '$.unmerged', ?) "
                             "WHERE id = ?", [(merged_id, rid) for rid in record_ids])

    # -- the archive -----------------------------------------------------------------

    def archive(self, ids: Sequence[str], at: float) -> list[tuple[int, str, str]]:
        codec = self.codec
        with self.transaction() as conn:
            found = conn.execute(f"SELECT rowid, id, user_id, length(vector) = ? FROM records "
                                 f"WHERE id {_IN}", (4 * codec.dim, json.dumps(list(ids)))).fetchall()
            if not found:
                return []
            rowids = json.dumps([r[0] for r in found])
            done = json.dumps([r[1] for r in found])
            conn.execute(_ARCHIVE, (at, rowids))
            # The archive keeps float32 vectors; a compact tier's blobs are decoded here.
            other = [r[1] for r in found if not r[3]]
            if other:
                blobs = conn.execute(f"SELECT id, vector FROM archive WHERE id {_IN}",
                                     (json.dumps(other),)).fetchall()
                vectors = codec.decode_many([v for _, v in blobs]).astype("<f4")
                conn.executemany("UPDATE archive SET vector = ? WHERE id = ?",
                                 [(v.tobytes(), i) for (i, _), v in zip(blobs, vectors, strict=True)])
            self._unindex_texts([r[0] for r in found], purge=False)
            # Provenance stays: a merged record keeps its merged_from edges.
            for end in ("src", "dst"):
                conn.execute(f"DELETE FROM edges WHERE {end} {_IN} AND type != 'merged_from'",
                             (done,))
            conn.execute(KEEP_ADD, (rowids,))
            conn.execute(f"UPDATE records SET prev = NULL WHERE prev {_IN}", (rowids,))
            conn.execute(f"DELETE FROM records WHERE rowid {_IN}", (rowids,))
        return [(int(r[0]), str(r[1]), str(r[2])) for r in found]

    def _unindex_texts(self, rowids: Sequence[int], purge: bool = True) -> None:
        raise NotImplementedError

    def archived(self, record_id: str) -> tuple[Record, str, list[Edge]] | None:
        rows = self._fetch("SELECT row, index_text, vector FROM archive WHERE id = ?", (record_id,))
        if not rows:
            return None
        row = rows[0]
        payload = json.loads(row[0])
        data = payload["record"]
        if payload.get("times") == "unix":
            data = {**data, **{k: iso(from_ts(data[k])) for k in _TIMES}}
        rec = record_from_dict(data, np.frombuffer(row[2], dtype="<f4"), f"archived {record_id}")
        edges = [Edge(s, d, t, w) for s, d, t, w in payload["edges"]]
        return rec, row[1], edges

    def archived_users(self, ids: Sequence[str]) -> dict[str, str]:
        return dict(self._fetch(f"SELECT id, user_id FROM archive WHERE id {_IN}",
                                (json.dumps(list(ids)),)))

    def unarchive(self, record_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM archive WHERE id = ?", (record_id,))

    def delete_archived(self, record_id: str) -> str | None:
        with self.transaction() as conn:
            got = conn.execute("SELECT index_text FROM archive WHERE id = ?", (record_id,)).fetchone()
            if got is None:
                return None
            conn.execute("DELETE FROM archive WHERE id = ?", (record_id,))
            conn.execute("UPDATE history SET old_text = NULL, new_text = NULL WHERE record_id = ?",
                         (record_id,))
        return str(got[0] or "")

    def merged_sources(self) -> list[tuple[str, list[str], str]]:
        with self.lock:
            live = self.conn.execute(
                "SELECT id, sources, metadata FROM records WHERE level = 'merged'").fetchall()
            kept = self.conn.execute(
                "SELECT id, json_extract(row, '$.record.sources'), "
                "json_extract(row, '$.record.metadata') FROM archive "
                "WHERE json_extract(row, '$.record.level') = 'merged'").fetchall()
        return [(str(rid), json.loads(sources or "[]"),
                 json.loads(meta or "{}").get("merge_mode", "lossless"))
                for rid, sources, meta in [*live, *kept]]

    # -- upkeep ----------------------------------------------------------------------

    @contextmanager
    def bulk_writes(self) -> Iterator[Callable[[], None]]:
        """See ``base.Maintenance.bulk_writes``. Between slices: a few full-text merge
        pages, and now and then a PASSIVE checkpoint on a connection of its own, outside
        every lock. Otherwise SQLite checkpoints inside the commit that takes the WAL past
        1,000 pages: 4 MB copied into the database file and synced while the store's lock
        is held (commits of up to 170 ms, archiving at 100k). A background checkpoint
        instead does not work while the run writes: the WAL never empties, so it never
        starts over, and grows by the whole run (2 GB for 100k archived memories)."""
        with self.lock:  # SQLite's own checkpoint only if this one falls behind
            saved = int(self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            self.conn.execute(f"PRAGMA wal_autocheckpoint={2 * CHECKPOINT_PAGES}")
            self.set_fts_automerge(0)
        side: sqlite3.Connection | None = None
        every, since = 1, 0  # slices between checkpoints, and since the last

        def between() -> None:
            nonlocal side, every, since
            self.merge_fts(FTS_MERGE_PAGES)
            since += 1
            if since < every:
                return
            if side is None:
                side = connect(self.path, timeout=30.0, check_same_thread=False)
            _, frames, _ = side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            per_slice = max(int(frames), 1) / since
            every, since = max(1, int(CHECKPOINT_PAGES / per_slice)), 0

        try:
            yield between
        finally:
            with self.lock:
                self.conn.execute(f"PRAGMA wal_autocheckpoint={saved}")
                self.set_fts_automerge(FTS_AUTOMERGE)
            if side is not None:
                side.close()

    def native_index(self) -> None:
        """None: the engine keeps a FAISS index beside the file (store/vector_index.py)."""
        return None

    @contextmanager
    def cycle_guard(self) -> Iterator[bool]:
        """One process owns a SQLite store's sleep cycles (the ``Core`` serialises its own
        threads); the file is not locked across processes."""
        yield True

    def reset_bulk_settings(self) -> None:
        """Put back what ``bulk_writes`` changes: a run killed midway leaves it changed."""
        self.set_fts_automerge(FTS_AUTOMERGE)

    def optimize(self) -> None:
        """Statistics for the query planner."""
        with self.transaction() as conn:
            conn.execute("PRAGMA optimize")

    def compact(self, free_share: float) -> dict[str, Any]:
        """VACUUM on a connection of its own when over ``free_share`` of the file is free
        pages (freed pages are zeroed there too: ``secure_delete``)."""
        with self.lock:
            pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
            free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        report: dict[str, Any] = {"free_pages": int(free)}
        if pages and free / pages > free_share:
            t = time.perf_counter()
            self.vacuum()
            report["vacuum_ms"] = round((time.perf_counter() - t) * 1e3, 1)
        return report

    def vacuum(self) -> None:
        """Rewrite the file without free pages (on a connection of its own)."""
        other = connect(self.path, timeout=30.0)
        register(other)
        try:
            other.execute("PRAGMA secure_delete=ON")
            other.execute("VACUUM")
        finally:
            other.close()

    def bytes_by_object(self) -> dict[str, int] | None:
        """Bytes per table and index (None where SQLite was built without ``dbstat``)."""
        try:
            rows = self._fetch("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
        except sqlite3.Error:
            return None
        return {str(n): int(s) for n, s in rows}

    def bytes_by_column(self) -> dict[str, int] | None:
        """Bytes of each column of the memories' rows as SQLite's record format keeps them
        (a blob's or a UTF-8 text's length; an integer, or a real with an integral value,
        in 0-8 bytes by size; other reals 8), summed over the records; without the record
        headers and page overhead."""
        def ints(x: str) -> str:
            return (f"CASE WHEN {x} IN (0, 1) THEN 0 WHEN {x} BETWEEN -128 AND 127 THEN 1 "
                    f"WHEN {x} BETWEEN -32768 AND 32767 THEN 2 WHEN {x} BETWEEN -8388608 AND "
                    f"8388607 THEN 3 WHEN {x} BETWEEN -2147483648 AND 2147483647 THEN 4 "
                    f"WHEN {x} BETWEEN -140737488355328 AND 140737488355327 THEN 6 ELSE 8 END")

        cols = [str(r[1]) for r in self._fetch("PRAGMA table_info(records)")]
        sums = ", ".join(
            f"sum(CASE typeof({c}) WHEN 'integer' THEN {ints(c)} WHEN 'real' THEN "
            f"(CASE WHEN {c} = CAST({c} AS INTEGER) AND abs({c}) < 1e15 THEN "
            f"{ints(f'CAST({c} AS INTEGER)')} ELSE 8 END) "
            f"WHEN 'null' THEN 0 ELSE length(CAST({c} AS BLOB)) END)" for c in cols)
        (row,) = self._fetch(f"SELECT {sums} FROM records")
        return {c: int(v or 0) for c, v in zip(cols, row, strict=True)}
