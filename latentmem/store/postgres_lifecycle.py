"""The PostgreSQL statements of the lifecycle (journal, archive, learned state, scans,
upkeep): the counterpart of ``sqlite_lifecycle.py``, mixed into ``PostgresStore``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from latentmem.errors import NotFoundError
from latentmem.store.base import Entry, Event, events_query
from latentmem.store.codec import VectorCodec
from latentmem.store.formats.records import record_from_dict
from latentmem.types import Edge, Record

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

_EVENT_COLS = ("seq, at, cycle, action, record_id, nullif(user_id, ''), reason, undo IS NOT NULL, "
               "undone_at")
_TABLES = ("lm_records", "lm_edges", "lm_history", "lm_events", "lm_feedback", "lm_models",
           "lm_archive", "lm_accesses", "lm_entity_mentions", "lm_user_stats", "lm_term_stats",
           "lm_embed_cache", "lm_meta")


def _vec(value: Any) -> np.ndarray:
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


class PgScans:
    """The long reads of a sleep cycle (``base.Scans``) over ``_fetch``."""

    if TYPE_CHECKING:
        @property
        def codec(self) -> VectorCodec: ...

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def max_rowid(self) -> int:
        return int(self._fetch("SELECT max(rowid) FROM lm_records")[0][0] or 0)

    def first_new_by_user(self, after_rowid: int) -> dict[str, int]:
        return dict(self._fetch(
            "SELECT user_id, min(rowid) FROM lm_records WHERE rowid > %s AND level != 'merged' "
            "GROUP BY user_id ORDER BY user_id", (after_rowid,)))

    def mergeable_vectors(self, user_id: str, upto_rowid: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._fetch(
            "SELECT rowid, vector::vector FROM lm_records WHERE user_id = %s AND level != 'merged' "
            "AND NOT metadata ? 'unmerged' AND rowid <= %s ORDER BY rowid", (user_id, upto_rowid))
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.codec.dim), dtype=np.float32)
        return (np.array([r[0] for r in rows], dtype=np.int64), np.stack([_vec(r[1]) for r in rows]))

    def texts_of(self, rowids: Sequence[int]) -> dict[int, str | None]:
        return dict(self._fetch("SELECT rowid, text FROM lm_records WHERE rowid = ANY(%s)",
                                ([int(r) for r in rowids],)))

    def ids_of(self, rowids: Sequence[int]) -> dict[int, str]:
        return dict(self._fetch("SELECT rowid, id FROM lm_records WHERE rowid = ANY(%s)",
                                ([int(r) for r in rowids],)))

    def strength_rows(self, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        vector_bytes = self.codec.dim * (4 if self.codec.tier == "fp32" else 2)
        rows = self._fetch(
            "SELECT rowid, greatest(created_at, coalesce(last_accessed_at, created_at)), "
            "importance, access_count, strength, (text IS NULL)::int, "
            "octet_length(coalesce(text, '')) + %s, %s, id, user_id FROM lm_records",
            (vector_bytes, vector_bytes))
        for start in range(0, len(rows), batch):
            yield rows[start:start + batch]

    def session_signature(self, user_id: str) -> list[float]:
        row = self._fetch("SELECT count(*), coalesce(max(rowid), 0), coalesce(max(updated_at), 0) "
                          "FROM lm_records WHERE user_id = %s AND session_id IS NOT NULL",
                          (user_id,))[0]
        return [float(v) for v in row]

    def session_vectors(self, user_id: str) -> tuple[list[str], list[str], np.ndarray]:
        rows = self._fetch("SELECT id, session_id, vector::vector FROM lm_records WHERE user_id = %s "
                           "AND session_id IS NOT NULL ORDER BY session_id, rowid", (user_id,))
        if not rows:
            return [], [], np.zeros((0, self.codec.dim), dtype=np.float32)
        return ([str(r[0]) for r in rows], [str(r[1]) for r in rows],
                np.stack([_vec(r[2]) for r in rows]))

    def text_index_disagreement(self) -> tuple[int, int]:
        return 0, 0  # the terms live in each row: they cannot disagree with it


class PgSnapshot(PgScans):
    """A read-only, repeatable-read transaction of its own on a pooled connection."""

    def __init__(self, pool: ConnectionPool[Any], codec: VectorCodec) -> None:
        self._codec = codec
        self._pool = pool
        self.conn: psycopg.Connection[Any] = pool.getconn()
        self._begin()

    @property
    def codec(self) -> VectorCodec:
        return self._codec

    def _begin(self) -> None:
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def refresh(self) -> None:
        self.conn.execute("COMMIT")
        self._begin()

    def close(self) -> None:
        try:
            self.conn.execute("COMMIT")
        finally:
            self._pool.putconn(self.conn)


class PgEmbeddingCache:
    """The embedding cache in the store's database (``encode/cache.py``)."""

    def __init__(self, store: PgLifecycle) -> None:
        self.store = store

    def get_many(self, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        rows = self.store._fetch("SELECT key, vector FROM lm_embed_cache WHERE key = ANY(%s)",
                                 (list(keys),))
        found = {}
        for key, blob in rows:
            vec = np.frombuffer(bytes(blob), dtype=np.float32)
            if vec.shape[0] == dim:
                found[bytes(key)] = vec
        return found

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        if not items:
            return
        with self.store.unsynced(), self.store.transaction() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO lm_embed_cache (key, vector) VALUES (%s, %s) "
                            "ON CONFLICT (key) DO NOTHING",
                            [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items])

    def kept(self, vectors: np.ndarray) -> np.ndarray:
        """Float32 in, float32 back (see EmbeddingCache.kept)."""
        return vectors

    def delete(self, keys: Sequence[bytes]) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM lm_embed_cache WHERE key = ANY(%s)", (list(keys),))

    def close(self) -> None:
        pass


class PgLifecycle(PgScans):
    """Mixed into ``PostgresStore``: the journal, archive, learned-state and upkeep roles."""

    if TYPE_CHECKING:
        lock: threading.RLock
        pool: ConnectionPool[Any]

        def transaction(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...

        def unsynced(self) -> AbstractContextManager[None]: ...

        def _exec(self, sql: str, params: Sequence[Any] = ()) -> int: ...

        def get_rows_by_id(self, ids: Sequence[str], with_vector: bool = False) -> list[Any]: ...

    def _user_of(self, record_id: str) -> str:
        rows = self._fetch("SELECT user_id FROM lm_records WHERE id = %s UNION ALL "
                           "SELECT user_id FROM lm_archive WHERE id = %s LIMIT 1",
                           (record_id, record_id))
        return str(rows[0][0]) if rows else ""

    def snapshot(self) -> PgSnapshot:
        return PgSnapshot(self.pool, self.codec)

    def embedding_cache(self) -> PgEmbeddingCache:
        return PgEmbeddingCache(self)

    # -- journal and history ---------------------------------------------------------

    def add_history(self, record_id: str, event: str, at: float, *,
                    new_text: str | None = None) -> None:
        self._exec("INSERT INTO lm_history (user_id, record_id, event, new_text, at) VALUES "
                   "(%s, %s, %s, %s, %s)", (self._user_of(record_id), record_id, event, new_text, at))

    def log_history(self, event: str, at: float, reasons: Sequence[tuple[str, str]]) -> None:
        self._exec(
            "INSERT INTO lm_history (user_id, record_id, event, at, detail) "
            "SELECT coalesce((SELECT user_id FROM lm_records WHERE id = x.rid LIMIT 1), "
            "(SELECT user_id FROM lm_archive WHERE id = x.rid LIMIT 1), ''), x.rid, %s, %s, "
            "jsonb_build_object('reason', x.why) FROM jsonb_to_recordset(%s::jsonb) "
            "AS x(rid text, why text)",
            (event, at, json.dumps([{"rid": r, "why": w} for r, w in reasons])))

    def blank_history(self, record_ids: Sequence[str]) -> None:
        self._exec("UPDATE lm_history SET old_text = NULL, new_text = NULL WHERE record_id = ANY(%s)",
                   (list(record_ids),))

    def log_event(self, action: str, record_id: str | None, user_id: str | None, reason: str,
                  undo: dict[str, Any] | None = None, cycle: str | None = None) -> int:
        with self.transaction() as conn:
            row = conn.execute(
                "INSERT INTO lm_events (user_id, at, cycle, action, record_id, reason, undo) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING seq",
                (user_id or "", time.time(), cycle, action, record_id, reason,
                 None if undo is None else json.dumps(undo))).fetchone()
        assert row is not None
        return int(row[0])

    def log_events(self, action: str, entries: Sequence[Entry], cycle: str | None = None) -> None:
        at = time.time()
        with self.transaction() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO lm_events (user_id, at, cycle, action, record_id, reason, undo) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(user or "", at, cycle, action, rid, reason,
                  None if undo is None else json.dumps(undo)) for rid, user, reason, undo in entries])

    def events(self, *, record_id: str | None = None, cycle: str | None = None,
               user_id: str | None = None, limit: int | None = None,
               newest_first: bool = False) -> list[Event]:
        sql, params = events_query("lm_events", _EVENT_COLS, "%s", record_id, cycle, user_id,
                                   limit, newest_first)
        return [Event.from_row(r) for r in self._fetch(sql, params)]

    def event(self, seq: int) -> tuple[Event, dict[str, Any] | None]:
        rows = self._fetch(f"SELECT {_EVENT_COLS}, undo FROM lm_events WHERE seq = %s", (seq,))
        if not rows:
            raise NotFoundError(f"no lifecycle event #{seq}")
        row = rows[0]
        return Event.from_row(row[:9]), row[9]

    def mark_undone(self, seq: int) -> None:
        self._exec("UPDATE lm_events SET undone_at = %s, undo = NULL WHERE seq = %s",
                   (time.time(), seq))

    def drop_undo(self, record_ids: Sequence[str]) -> None:
        self._exec("UPDATE lm_events SET undo = NULL WHERE record_id = ANY(%s)", (list(record_ids),))

    def expire_undo(self, before: float) -> int:
        return self._exec("UPDATE lm_events SET undo = NULL WHERE undo IS NOT NULL AND at < %s",
                          (before,))

    # -- learned state ---------------------------------------------------------------

    def save_model(self, name: str, state_json: str) -> None:
        self._exec("INSERT INTO lm_models (user_id, name, state, updated_at) VALUES ('', %s, %s, %s) "
                   "ON CONFLICT (user_id, name) DO UPDATE SET state = excluded.state, "
                   "updated_at = excluded.updated_at", (name, state_json, time.time()))

    def load_model(self, name: str) -> str | None:
        rows = self._fetch("SELECT state FROM lm_models WHERE user_id = '' AND name = %s", (name,))
        return None if not rows else str(rows[0][0])

    def lock_model(self, name: str) -> None:
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('latentmem:model:' || %s))", (name,))

    def delete_models(self, names: Sequence[str]) -> None:
        self._exec("DELETE FROM lm_models WHERE user_id = '' AND name = ANY(%s)", (list(names),))

    def add_feedback(self, items: Sequence[tuple[str, str, bool, str]], at: float) -> None:
        with self.transaction() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO lm_feedback (user_id, record_id, useful, source, at) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            [(user, rid, bool(useful), source, at)
                             for rid, user, useful, source in items])

    def feedback_counts(self, record_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        rows = self._fetch("SELECT record_id, count(*), sum(useful::int) FROM lm_feedback "
                           "WHERE source = 'explicit' AND record_id = ANY(%s) GROUP BY record_id",
                           (list(record_ids),))
        return {str(r): (int(n), int(u)) for r, n, u in rows}

    def delete_feedback(self, record_ids: Sequence[str]) -> None:
        self._exec("DELETE FROM lm_feedback WHERE record_id = ANY(%s)", (list(record_ids),))

    def accesses(self, user_id: str, limit: int, after: float = 0.0) -> list[tuple[float, list[int]]]:
        rows = self._fetch("SELECT at, rowids FROM lm_accesses WHERE user_id = %s AND at > %s "
                           "ORDER BY seq DESC LIMIT %s", (user_id, after, limit))
        return [(float(at), list(ids)) for at, ids in rows]

    def trim_accesses(self, keep: int) -> None:
        self._exec("DELETE FROM lm_accesses WHERE seq <= (SELECT max(seq) FROM lm_accesses) - %s",
                   (keep,))

    # -- the archive -----------------------------------------------------------------

    def archive(self, ids: Sequence[str], at: float) -> list[tuple[int, str, str]]:
        with self.transaction() as conn:
            rows = self.get_rows_by_id(list(dict.fromkeys(ids)), with_vector=True)
            if not rows:
                return []
            done = [r.record.id for r in rows]
            edges = conn.execute("SELECT src, dst, type, weight FROM lm_edges WHERE src = ANY(%s) "
                                 "OR dst = ANY(%s)", (done, done)).fetchall()
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO lm_archive (user_id, id, row, index_text, vector, archived_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, id) DO UPDATE SET "
                    "row = excluded.row, index_text = excluded.index_text, "
                    "vector = excluded.vector, archived_at = excluded.archived_at",
                    [(r.record.user_id, r.record.id, json.dumps({
                        "record": r.record.to_dict(),
                        "edges": [list(e) for e in edges if r.record.id in (e[0], e[1])]}),
                      r.index_text, np.asarray(r.record.vector, dtype=np.float32).tolist(), at)
                     for r in rows])
            # Provenance stays: a merged record keeps its merged_from edges.
            conn.execute("DELETE FROM lm_edges WHERE (src = ANY(%s) OR dst = ANY(%s)) "
                         "AND type != 'merged_from'", (done, done))
            conn.execute("DELETE FROM lm_entity_mentions WHERE rowid = ANY(%s)",
                         ([r.rowid for r in rows],))
            conn.execute("DELETE FROM lm_records WHERE rowid = ANY(%s)", ([r.rowid for r in rows],))
        return [(r.rowid, r.record.id, r.record.user_id) for r in rows]

    def archived(self, record_id: str) -> tuple[Record, str, list[Edge]] | None:
        rows = self._fetch("SELECT row, index_text, vector FROM lm_archive WHERE id = %s",
                           (record_id,))
        if not rows:
            return None
        payload, index_text, vector = rows[0]
        rec = record_from_dict(payload["record"], np.asarray(vector, dtype=np.float32),
                               f"archived {record_id}")
        return rec, index_text, [Edge(s, d, t, w) for s, d, t, w in payload["edges"]]

    def archived_users(self, ids: Sequence[str]) -> dict[str, str]:
        return dict(self._fetch("SELECT id, user_id FROM lm_archive WHERE id = ANY(%s)", (list(ids),)))

    def unarchive(self, record_id: str) -> None:
        self._exec("DELETE FROM lm_archive WHERE id = %s", (record_id,))

    def delete_archived(self, record_id: str) -> str | None:
        with self.transaction() as conn:
            got = conn.execute("DELETE FROM lm_archive WHERE id = %s RETURNING index_text",
                               (record_id,)).fetchone()
            if got is None:
                return None
            conn.execute("UPDATE lm_history SET old_text = NULL, new_text = NULL "
                         "WHERE record_id = %s", (record_id,))
        return str(got[0] or "")

    def merged_sources(self) -> list[tuple[str, list[str], str]]:
        rows = self._fetch(
            "SELECT id, sources, metadata ->> 'merge_mode' FROM lm_records WHERE level = 'merged' "
            "UNION ALL SELECT id, row -> 'record' -> 'sources', "
            "row -> 'record' -> 'metadata' ->> 'merge_mode' FROM lm_archive "
            "WHERE row -> 'record' ->> 'level' = 'merged'")
        return [(str(rid), list(sources or []), mode or "lossless") for rid, sources, mode in rows]

    # -- upkeep ----------------------------------------------------------------------

    @contextmanager
    def bulk_writes(self) -> Iterator[Callable[[], None]]:
        yield lambda: None  # PostgreSQL checkpoints and vacuums on its own

    def reset_bulk_settings(self) -> None:
        pass

    def checkpoint(self) -> None:
        pass

    def optimize(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("ANALYZE lm_records")

    def compact(self, free_share: float) -> dict[str, Any]:
        return {"free_pages": 0}  # autovacuum keeps the tables; ``vacuum`` forces it

    def vacuum(self) -> None:
        with self.pool.connection() as conn:
            for table in _TABLES:
                conn.execute(f"VACUUM {table}")

    def bytes_by_column(self) -> dict[str, int] | None:
        return None  # PostgreSQL compresses and moves columns out of line (TOAST) itself

    def bytes_by_object(self) -> dict[str, int] | None:
        return {str(t): int(n) for t, n in self._fetch(
            "SELECT t, pg_total_relation_size(t) FROM unnest(%s::text[]) AS t", (list(_TABLES),))}

    def file_bytes(self) -> int:
        return sum((self.bytes_by_object() or {}).values())

    @contextmanager
    def cycle_guard(self) -> Iterator[bool]:
        """A session advisory lock for a sleep cycle: one at a time across every process."""
        with self.pool.connection() as conn:
            got = bool(conn.execute("SELECT pg_try_advisory_lock(hashtext('latentmem:sleep'))")
                       .fetchone()[0])  # type: ignore[index]
            try:
                yield got
            finally:
                if got:
                    conn.execute("SELECT pg_advisory_unlock(hashtext('latentmem:sleep'))")
