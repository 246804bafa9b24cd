"""PostgreSQL + pgvector store: the same roles as the SQLite store (``store/base.py``), for
deployments that outgrow one machine. Chosen by URL: ``Memory("postgresql://...")``.

- **Connections.** A psycopg 3 pool (autocommit connections). A write is one
  transaction on one pooled connection, kept per thread while it lasts, so every store
  call made inside ``with store.transaction():`` joins it; a read outside one borrows a
  connection for one statement. A lost connection is replaced by the pool; a
  transaction it was in rolls back whole.
- **Schema.** Numbered migrations in ``pg_migrations/`` (table ``lm_schema``), run under
  an advisory lock so that several processes starting at once migrate once. Every table
  of user data leads its primary key with ``user_id`` (distributable, docs/scale-out.md).
- **Dense side.** pgvector: ``vector(dim)`` for the fp32 tier, ``halfvec(dim)`` for fp16,
  each with an HNSW index (cosine) made when the embedder is bound. The vector index is
  the database's own (``PgVectorIndex``): nothing to rebuild or keep in step per process.
  The int8 and pq tiers are SQLite's (their blobs are scanned by FAISS); they are refused.
- **Lexical side.** BM25 computed from stored term statistics: each memory's terms with
  their counts (``tf``; a GIN index keyed by user and term, so a search reads its own
  user's posting lists) and length; per user the number of documents and
  terms (``lm_user_stats``) and each term's document frequency (``lm_term_stats``), kept
  by triggers in the writing transaction (``pg_migrations/003`` says why), so a query
  reads them as lookups. Terms are cut by SQLite's own FTS5 tokenizer
  (``lexicon.py``), so the terms and the formula are those of the SQLite store. One
  difference: FTS5's statistics cover the whole file, these cover the user (the tenant
  boundary); in a store of one user they are the same.
- **Versions.** ``vector_epoch`` is a sequence bumped after each commit that changes
  vectors, which caches in every process (topics, speakers) compare against.
- **Sleep cycles.** One at a time across every process: ``cycle_guard`` holds a session
  advisory lock for the cycle.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from importlib import resources
from typing import Any

import numpy as np

from latentmem.errors import (
    ConflictError,
    InvalidInputError,
    MissingExtraError,
    NotFoundError,
    StoreError,
)
from latentmem.store import redacted
from latentmem.store.base import LightRow, Scope, StoredRow, column_values, scope_condition
from latentmem.store.codec import DEFAULT_TIER, VectorCodec, check_tier
from latentmem.store.integrity import PostgresIntegrity
from latentmem.store.keys import KeyTable
from latentmem.store.lexicon import K1, B, Lexicon, affordable, query_words
from latentmem.store.postgres_lifecycle import PgLifecycle
from latentmem.store.profiles import DEFAULT_PROFILE, check_profile
from latentmem.types import Edge, Record, from_ts, to_ts

try:
    import psycopg
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb as _Json
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # the `postgres` extra (tests/test_store_backends.py simulates it)
    raise MissingExtraError("a PostgreSQL store needs psycopg, psycopg-pool and pgvector: "
                            "pip install 'latentmem[postgres]'") from exc

# How many postings one BM25 query may score (lexicon.affordable).
BM25_POSTINGS = 5_000
# Rows of the user that hold any of the given "user\x1fterm" keys: the expression of the
# per-user posting lists' index (pg_migrations/004), which a query must repeat to use it.
USER_TERMS = "lm_user_terms(user_id, tf) && %s::text[]"
# Candidates an HNSW scan looks at (pgvector's ef_search): at least this, or 2 k. Recall@10
# against an exact scan fell with the store's size at 200 (bench perf's vectors, one user:
# 0.971 at 100k, 0.879 at 300k, 0.690 at 1M); at 800 it was 0.957 at 300k, for 12 ms a
# query instead of 4 (BENCHMARKS.md, "side by side at 100k and 1M"). pgvector allows 1000.
EF_SEARCH = 800
TIERS = ("fp32", "fp16")
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_COLUMNS = (
    "id, user_id, agent_id, session_id, level, parent_id, text, index_text, title, type, "
    "summary, metadata, role, speaker, event_time, created_at, updated_at, valid_to, "
    "superseded_by, importance, access_count, last_accessed_at, strength, sources, content_hash"
)
_SELECT = f"SELECT rowid, {_COLUMNS} FROM lm_records"
_SELECT_V = f"SELECT rowid, {_COLUMNS}, vector::vector FROM lm_records"
# The binary COPY types of _COLUMNS, after the rowid.
_COPY_TYPES = ("int8", "text", "text", "text", "text", "text", "text", "text", "text", "text",
               "text", "text", "jsonb", "text", "text", "float8", "float8", "float8", "float8",
               "text", "float8", "int4", "float8", "float8", "jsonb", "text")
_LIGHT = ("SELECT rowid, id, user_id, agent_id, session_id, speaker, event_time, importance, "
          "access_count, vector::vector, valid_to, length(text), strpos(text, '?') > 0 "
          "FROM lm_records")


def _where(scope: Scope, alias: str = "") -> tuple[str, list[Any]]:
    return scope_condition(scope, alias, "%s")


def migrations() -> list[tuple[int, str]]:
    files = resources.files("latentmem.store") / "pg_migrations"
    found = sorted((int(m.group(1)), entry.read_text()) for entry in files.iterdir()
                   if (m := _NAME.match(entry.name)))
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise StoreError(f"migrations must be numbered 1..N without gaps, found {numbers}")
    return found


class PostgresStore(PgLifecycle, PostgresIntegrity, KeyTable):
    _KEYS_TABLE = "lm_api_keys"
    _MARK = "%s"

    def __init__(self, url: str, durability: str = "full", pool_size: int = 8) -> None:
        self.url = url
        self.lock = threading.RLock()
        self._durable = durability == "full"
        self._local = threading.local()  # .conn: this thread's transaction; .unsynced
        self._speakers: dict[tuple[Any, ...], tuple[int, list[str]]] = {}
        self._codec: VectorCodec | None = None
        self.lexicon = Lexicon()
        self.write_seconds = 0.0
        self.write_longest = 0.0
        self.entity_extractor: Callable[[str], list[str]] | None = None
        # Texts stay as PostgreSQL keeps them (TOAST) and vectors are pgvector columns: the
        # compact profile's levers are SQLite's (store/profiles.py).
        self.profile = check_profile(DEFAULT_PROFILE)
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                self.schema_version = self._migrate(conn)
            self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True,
                                       kwargs={"autocommit": True}, configure=_configure,
                                       timeout=30.0)
            self.pool.wait(timeout=30.0)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot connect to PostgreSQL at {redacted(url)}: {first}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the PostgreSQL store at {redacted(url)}: {exc}") from exc

    @property
    def path(self) -> str:
        return redacted(self.url)

    def _migrate(self, conn: psycopg.Connection[Any]) -> int:
        steps = migrations()
        latest = steps[-1][0]
        conn.execute("SELECT pg_advisory_lock(hashtext('latentmem:migrate'))")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS lm_schema (version integer NOT NULL)")
            row = conn.execute("SELECT max(version) FROM lm_schema").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            if version > latest:
                raise StoreError(f"store schema version {version} is newer than this latentmem "
                                 f"supports ({latest}); upgrade latentmem")
            for number, sql in steps:
                if number <= version:
                    continue
                with conn.transaction():
                    conn.execute(sql)  # type: ignore[arg-type]
                    conn.execute("INSERT INTO lm_schema (version) VALUES (%s)", (number,))
                version = number
            return version
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('latentmem:migrate'))")

    def close(self) -> None:
        self.pool.close()

    # -- transactions -------------------------------------------------------

    def _live(self) -> psycopg.Connection[Any]:
        """A pooled connection that answers: one the server dropped (a restart, a killed
        backend) is thrown away and another taken."""
        for _ in range(self.pool.max_size + 1):
            conn = self.pool.getconn()
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.OperationalError:
                self.pool.putconn(conn)  # broken: the pool discards it
        raise StoreError(f"PostgreSQL at {self.path} does not answer")

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with self.lock:
            conn = self._live()
            began = time.perf_counter()
            self._local.conn, self._local.after = conn, []
            committed = False
            try:
                with conn.transaction():
                    if not self._durable or getattr(self._local, "unsynced", False):
                        conn.execute("SET LOCAL synchronous_commit = off")
                    yield conn
                committed = True
            finally:
                after, self._local.conn, self._local.after = self._local.after, None, []
                try:
                    if committed:
                        for fn in after:
                            fn(conn)
                finally:
                    self.pool.putconn(conn)  # a broken one is thrown away
            held = time.perf_counter() - began
            self.write_seconds += held
            self.write_longest = max(self.write_longest, held)

    @contextmanager
    def unsynced(self) -> Iterator[None]:
        """Commits this thread makes inside do not wait for the WAL flush
        (``synchronous_commit = off``): see ``SQLiteStore.unsynced`` for who uses it."""
        before = getattr(self._local, "unsynced", False)
        self._local.unsynced = True
        try:
            yield
        finally:
            self._local.unsynced = before

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows in binary form (a vector read as text is 384 numbers to parse). Outside a
        transaction a read that meets a dropped connection is tried again on another:
        reads change nothing."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn.execute(sql, params, binary=True).fetchall()  # type: ignore[arg-type]
        for attempt in range(self.pool.max_size + 1):
            try:
                with self.pool.connection() as conn:
                    return conn.execute(sql, params, binary=True).fetchall()  # type: ignore[arg-type]
            except psycopg.OperationalError:
                if attempt == self.pool.max_size:
                    raise
        raise AssertionError("unreachable")

    def _batches(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[Any]]:
        rows = self._fetch(sql, params)
        for start in range(0, len(rows), size):
            yield rows[start:start + size]

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount  # type: ignore[arg-type]

    # -- meta and versions ----------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._fetch("SELECT value FROM lm_meta WHERE key = %s", (key,))
        return None if not rows else str(rows[0][0])

    def set_meta(self, key: str, value: str) -> None:
        self._exec("INSERT INTO lm_meta (key, value) VALUES (%s, %s) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def delete_meta(self, key: str) -> None:
        self._exec("DELETE FROM lm_meta WHERE key = %s", (key,))

    def vector_epoch(self) -> int:
        row = self._fetch("SELECT last_value, is_called FROM lm_epoch")[0]
        return int(row[0]) if row[1] else 0

    def bump_epoch(self) -> None:
        """The bump lands after the commit: a process that sees the new epoch sees the
        writes behind it (a sequence is not transactional)."""
        with self.transaction():
            after = self._local.after
            if not any(getattr(fn, "epoch", False) for fn in after):
                def bump(conn: psycopg.Connection[Any]) -> None:
                    conn.execute("SELECT nextval('lm_epoch')")
                bump.epoch = True  # type: ignore[attr-defined]
                after.append(bump)

    def bind_embedder(self, name: str, dim: int) -> None:
        with self.transaction() as conn:
            conn.execute("LOCK TABLE lm_meta IN SHARE ROW EXCLUSIVE MODE")
            stored_name, stored_dim = self.get_meta("embedder"), self.get_meta("dim")
            if stored_name is None:
                self.set_meta("embedder", name)
                self.set_meta("dim", str(dim))
                return
        if stored_name != name or int(stored_dim or 0) != dim:
            raise ConflictError(
                f"store {self.path} holds vectors from embedder {stored_name!r} ({stored_dim}-d); "
                f"it cannot be used with {name!r} ({dim}-d)")

    def bind_vector_tier(self, tier: str | None, dim: int) -> VectorCodec:
        if tier is not None and check_tier(tier) not in TIERS:
            raise InvalidInputError(
                f"a PostgreSQL store keeps its vectors as fp32 (vector) or fp16 (halfvec); "
                f"vector_tier={tier!r} is for SQLite stores")
        with self.transaction() as conn:
            conn.execute("LOCK TABLE lm_meta IN SHARE ROW EXCLUSIVE MODE")
            stored = self.get_meta("vector_tier")
            if stored is None:
                stored = tier or DEFAULT_TIER
                kind = "vector" if stored == "fp32" else "halfvec"
                ops = "vector_cosine_ops" if stored == "fp32" else "halfvec_cosine_ops"
                conn.execute(f"ALTER TABLE lm_records ALTER COLUMN vector TYPE {kind}({int(dim)}) "
                             f"USING vector::{kind}({int(dim)})")
                conn.execute(f"CREATE INDEX IF NOT EXISTS lm_records_hnsw ON lm_records "
                             f"USING hnsw (vector {ops})")
                self.set_meta("vector_tier", stored)
        if tier is not None and tier != stored:
            raise ConflictError(
                f"store {self.path} keeps its vectors as {stored}; it cannot be opened with "
                f"vector_tier={tier!r}")
        self._codec = VectorCodec(stored, dim)
        return self._codec

    @property
    def codec(self) -> VectorCodec:
        if self._codec is None:
            dim = self.get_meta("dim")
            if dim is None:
                raise StoreError(f"store {self.path} has no embedder yet; bind one first")
            self._codec = VectorCodec(self.get_meta("vector_tier") or DEFAULT_TIER, int(dim))
        return self._codec

    def convert_vectors(self, tier: str) -> int:
        raise InvalidInputError("a PostgreSQL store keeps the tier it was made with; export "
                                "it and import it into a store made with the other tier")

    def decode_vectors(self, blobs: Sequence[Any]) -> np.ndarray:
        if not len(blobs):
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([_f32(b) for b in blobs])

    def native_index(self) -> PgVectorIndex:
        return PgVectorIndex(self)

    # -- writes ---------------------------------------------------------------

    def _terms(self, index_texts: list[str]) -> list[tuple[_Json, int]]:
        return [(_Json(dict(c)), sum(c.values())) for c in self.lexicon.terms(index_texts)]

    def insert(self, rows: Sequence[tuple[Record, str]], edges: Sequence[Edge] = (),
               history_event: str = "ADD", supersede: Sequence[str] = ()) -> list[int]:
        """One add or import, however many records: rowids drawn in one round trip, the
        rows sent by one binary COPY, their history, entity mentions and edges by one
        statement each, all in one transaction (a failure anywhere leaves nothing)."""
        now = time.time()
        terms = self._terms([t for _, t in rows])
        rowids: list[int] = []
        with self.transaction() as conn:
            if rows:
                got = conn.execute(
                    "SELECT (SELECT id FROM lm_records WHERE id = ANY(%s) LIMIT 1), "
                    "array(SELECT nextval('lm_rowid') FROM generate_series(1, %s))",
                    ([r.id for r, _ in rows], len(rows))).fetchone()
                assert got is not None
                if got[0] is not None:
                    raise ConflictError(f"a record with id {got[0]!r} already exists")
                rowids = sorted(int(x) for x in got[1])  # in the records' order
            if supersede and rows:
                newest = rows[-1][0]
                until = to_ts(newest.event_time) or now
                for old_id in supersede:
                    conn.execute("UPDATE lm_records SET valid_to = %s, superseded_by = %s, "
                                 "updated_at = %s WHERE id = %s", (until, newest.id, now, old_id))
                    conn.execute("INSERT INTO lm_history (user_id, record_id, event, at, detail) "
                                 "VALUES (%s, %s, 'SUPERSEDED', %s, %s)",
                                 (newest.user_id, old_id, now, json.dumps({"by": newest.id})))
            if rows:
                try:
                    self._copy_records(conn, rows, terms, rowids)
                except psycopg.errors.UniqueViolation as exc:
                    raise ConflictError(f"a record's id already exists: {exc}") from exc
                except psycopg.errors.IntegrityError as exc:
                    raise ConflictError(f"a record breaks a store constraint: {exc}") from exc
                except psycopg.errors.DataException as exc:
                    raise InvalidInputError(f"a record cannot be stored: {exc}") from exc
                conn.execute(
                    "INSERT INTO lm_history (user_id, record_id, event, new_text, at) "
                    "SELECT u, r, %s, t, %s FROM unnest(%s::text[], %s::text[], %s::text[]) "
                    "AS x(u, r, t)",
                    (history_event, now, [r.user_id for r, _ in rows], [r.id for r, _ in rows],
                     [r.text for r, _ in rows]))
                self._mentions(conn, [(r, rowid) for (r, _), rowid in zip(rows, rowids,
                                                                         strict=True)])
            self._insert_edges(conn, edges)
            if rows:
                self.bump_epoch()
        return rowids

    def _copy_records(self, conn: psycopg.Connection[Any], rows: Sequence[tuple[Record, str]],
                      terms: Sequence[tuple[_Json, int]], rowids: Sequence[int]) -> None:
        """The rows by binary COPY (one INSERT a record was 96 a second at 100k)."""
        half = self.codec.tier != "fp32"
        types = [*_COPY_TYPES, "halfvec" if half else "vector", "jsonb", "int4"]
        with conn.cursor() as cur, cur.copy(
                f"COPY lm_records (rowid, {_COLUMNS}, vector, tf, doc_len) FROM STDIN "
                "(FORMAT BINARY)") as copy:
            copy.set_types(types)
            for (r, index_text), (tf, length), rowid in zip(rows, terms, rowids, strict=True):
                assert r.vector is not None
                vector = np.asarray(r.vector, dtype=np.float32)
                copy.write_row((
                    rowid, r.id, r.user_id, r.agent_id, r.session_id, r.level, r.parent_id,
                    r.text, index_text, r.title, r.type, r.summary, _Json(r.metadata), r.role,
                    r.speaker, to_ts(r.event_time), to_ts(r.created_at), to_ts(r.updated_at),
                    to_ts(r.valid_to), r.superseded_by, float(r.importance),
                    int(r.access_count), to_ts(r.last_accessed_at), float(r.strength),
                    _Json(r.sources), r.content_hash, HalfVector(vector) if half else vector,
                    tf, length))

    def _mentions(self, conn: psycopg.Connection[Any], items: Sequence[tuple[Record, int]]) -> None:
        """Record the entities each record names and link it to the latest other mention
        of each: the one in the store before these records, or the one before it among
        them (``items`` in rowid order)."""
        if self.entity_extractor is None:
            return
        named = [(r, rowid, list(dict.fromkeys(self.entity_extractor(r.text))))
                 for r, rowid in items if r.text]
        pairs = sorted({(r.user_id, e) for r, _, found in named for e in found})
        if not pairs:
            return
        # No filter on these records' ids: none has a mention stored yet (new, or its
        # mentions just deleted), and that filter, 10,000 ids long in an import, made
        # this lookup take minutes.
        latest: dict[tuple[str, str], str | None] = {
            (u, e): x for u, e, x in conn.execute(
                "SELECT p.u, p.e, l.id FROM unnest(%s::text[], %s::text[]) AS p(u, e) "
                "LEFT JOIN LATERAL (SELECT x.id FROM lm_entity_mentions m JOIN lm_records x "
                "ON x.user_id = m.user_id AND x.rowid = m.rowid WHERE m.user_id = p.u AND "
                "m.entity = p.e ORDER BY m.rowid DESC LIMIT 1) AS l ON true",
                ([u for u, _ in pairs], [e for _, e in pairs])).fetchall()}
        links: list[tuple[str, str, str]] = []
        mentions: list[tuple[str, str, int]] = []
        for r, rowid, found in named:
            for entity in found:
                before = latest[(r.user_id, entity)]
                if before is not None and before != r.id:
                    links.append((r.user_id, before, r.id))
                latest[(r.user_id, entity)] = r.id
                mentions.append((r.user_id, entity, rowid))
        if links:
            conn.execute(
                "INSERT INTO lm_edges (user_id, src, dst, type, weight, created_at) "
                "SELECT u, s, d, 'entity', 1.0, %s FROM unnest(%s::text[], %s::text[], "
                "%s::text[]) AS x(u, s, d) ON CONFLICT DO NOTHING",
                (time.time(), *map(list, zip(*links, strict=True))))
        conn.execute(
            "INSERT INTO lm_entity_mentions (user_id, entity, rowid) SELECT * FROM "
            "unnest(%s::text[], %s::text[], %s::bigint[]) ON CONFLICT DO NOTHING",
            tuple(map(list, zip(*mentions, strict=True))))

    def _mention(self, conn: psycopg.Connection[Any], r: Record, rowid: int) -> None:
        self._mentions(conn, [(r, rowid)])

    def mentioning(self, scope: Scope, entity: str, limit: int) -> list[int]:
        clause, params = _where(scope, "r")
        rows = self._fetch(
            "SELECT m.rowid FROM lm_entity_mentions m JOIN lm_records r "
            "ON r.user_id = m.user_id AND r.rowid = m.rowid "
            f"WHERE m.user_id = %s AND m.entity = %s AND {clause} ORDER BY m.rowid DESC LIMIT %s",
            [scope.user_id, entity, *params, limit])
        return [int(x[0]) for x in rows]

    def _insert_edges(self, conn: psycopg.Connection[Any], edges: Sequence[Edge]) -> None:
        if not edges:
            return
        now = time.time()
        ids = sorted({e.src for e in edges})
        owner = dict(conn.execute("SELECT id, user_id FROM lm_records WHERE id = ANY(%s)",
                                  (ids,)).fetchall())
        rows = [(owner.get(e.src, ""), e.src, e.dst, e.type, e.weight, to_ts(e.created_at) or now)
                for e in edges]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO lm_edges (user_id, src, dst, type, weight, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, src, dst, type) "
                "DO UPDATE SET weight = excluded.weight, created_at = excluded.created_at", rows)

    def add_edges(self, edges: Sequence[Edge]) -> None:
        with self.transaction() as conn:
            self._insert_edges(conn, edges)

    def update(self, record_id: str, changes: dict[str, Any], index_text: str | None = None,
               vector: np.ndarray | None = None) -> StoredRow:
        sets = column_values(changes)
        with self.transaction() as conn:
            old = self.get_row(record_id)
            text = changes.get("text", old.record.text)
            if index_text is not None:
                sets["index_text"] = index_text
                sets["tf"], sets["doc_len"] = self._terms([index_text])[0]
            if vector is not None:
                sets["vector"] = np.asarray(vector, dtype=np.float32)
            assignments = ", ".join(f"{k} = %s" for k in sets)
            conn.execute(f"UPDATE lm_records SET {assignments} WHERE user_id = %s AND rowid = %s",
                         [*sets.values(), old.record.user_id, old.rowid])
            if "text" in changes:
                conn.execute("DELETE FROM lm_entity_mentions WHERE user_id = %s AND rowid = %s",
                             (old.record.user_id, old.rowid))
                conn.execute("DELETE FROM lm_edges WHERE user_id = %s AND dst = %s AND type = 'entity'",
                             (old.record.user_id, record_id))
                self._mention(conn, replace(old.record, text=changes["text"]), old.rowid)
            if vector is not None:
                self.bump_epoch()
            conn.execute("INSERT INTO lm_history (user_id, record_id, event, old_text, new_text, at, "
                         "detail) VALUES (%s, %s, 'UPDATE', %s, %s, %s, %s)",
                         (old.record.user_id, record_id, old.record.text, text, time.time(),
                          json.dumps(sorted(changes))))
            return self.get_row(record_id)

    def delete(self, record_ids: Sequence[str]) -> list[StoredRow]:
        with self.transaction() as conn:
            rows = [self.get_row(rid) for rid in record_ids]
            now = time.time()
            for row in rows:
                rid, user = row.record.id, row.record.user_id
                conn.execute("DELETE FROM lm_records WHERE user_id = %s AND rowid = %s",
                             (user, row.rowid))
                conn.execute("DELETE FROM lm_entity_mentions WHERE user_id = %s AND rowid = %s",
                             (user, row.rowid))
                conn.execute("DELETE FROM lm_edges WHERE src = %s OR dst = %s", (rid, rid))
                conn.execute("UPDATE lm_history SET old_text = NULL, new_text = NULL "
                             "WHERE record_id = %s", (rid,))
                conn.execute("INSERT INTO lm_history (user_id, record_id, event, at) "
                             "VALUES (%s, %s, 'DELETE', %s)", (user, rid, now))
            if rows:
                self.bump_epoch()
        return rows

    def touch(self, rowids: Sequence[int], when: float | None = None,
              user_id: str | None = None) -> None:
        if not len(rowids):
            return
        when = time.time() if when is None else when
        ids = [int(r) for r in rowids]
        mine = "" if user_id is None else " AND user_id = %s"
        with self.transaction() as conn:
            conn.execute("UPDATE lm_records SET access_count = access_count + 1, "
                         "last_accessed_at = %s WHERE rowid = ANY(%s)" + mine,
                         (when, ids) if user_id is None else (when, ids, user_id))
            if user_id is not None:
                conn.execute("INSERT INTO lm_accesses (user_id, at, rowids) VALUES (%s, %s, %s)",
                             (user_id, when, json.dumps(ids)))

    def drop_texts(self, summaries: dict[int, str], at: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE lm_records r SET text = NULL, index_text = '', title = '', "
                "summary = j.value, updated_at = %s, tf = '{}', doc_len = 0 "
                "FROM jsonb_each_text(%s::jsonb) j WHERE r.rowid = j.key::bigint",
                (at, json.dumps({str(k): v for k, v in summaries.items()})))
            conn.execute("DELETE FROM lm_entity_mentions WHERE rowid = ANY(%s)",
                         ([int(r) for r in summaries],))

    def restore_text(self, record: Record, rowid: int, index_text: str) -> None:
        tf, length = self._terms([index_text])[0]
        with self.transaction() as conn:
            conn.execute("UPDATE lm_records SET text = %s, index_text = %s, title = %s, "
                         "summary = %s, updated_at = %s, tf = %s, doc_len = %s "
                         "WHERE user_id = %s AND rowid = %s",
                         (record.text, index_text, record.title, record.summary, time.time(), tf,
                          length, record.user_id, rowid))
            conn.execute("DELETE FROM lm_entity_mentions WHERE user_id = %s AND rowid = %s",
                         (record.user_id, rowid))
            self._mention(conn, record, rowid)

    def set_importance(self, items: Sequence[tuple[int, float]]) -> None:
        if not items:
            return
        with self.transaction() as conn:
            conn.execute("UPDATE lm_records r SET importance = j.value::float8 "
                         "FROM jsonb_each_text(%s::jsonb) j WHERE r.rowid = j.key::bigint",
                         (json.dumps({str(int(r)): float(v) for r, v in items}),))

    def set_strengths(self, strengths: dict[int, float]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE lm_records r SET strength = j.value::float8 "
                         "FROM jsonb_each_text(%s::jsonb) j WHERE r.rowid = j.key::bigint",
                         (json.dumps({str(int(r)): float(v) for r, v in strengths.items()}),))

    def mark_unmerged(self, record_ids: Sequence[str], merged_id: str) -> None:
        self._exec("UPDATE lm_records SET metadata = metadata || jsonb_build_object('unmerged', "
                   "%s::text) WHERE id = ANY(%s)", (merged_id, list(record_ids)))

    # -- the lexical side -------------------------------------------------------

    def bm25(self, query: str, scope: Scope, limit: int) -> list[tuple[int, float]]:
        """BM25 over the scope (see the module docstring), highest first."""
        words = query_words(query)
        if not words:
            return []
        stems = self.lexicon.stems(words)
        pairs = [(w, s) for w, s in zip(words, stems, strict=True) if s is not None]
        if not pairs:
            return []
        unique = list(dict.fromkeys(s for _, s in pairs))
        # The user's statistics and each term's document frequency: lookups, one round trip.
        found = self._fetch(
            "SELECT docs, terms, (SELECT jsonb_object_agg(term, df) FROM lm_term_stats "
            "WHERE user_id = %s AND term = ANY(%s)) FROM lm_user_stats WHERE user_id = %s",
            (scope.user_id, unique, scope.user_id))
        if not found:
            return []
        n_docs, n_terms = int(found[0][0] or 0), int(found[0][1] or 0)
        if n_docs == 0:
            return []
        counted = found[0][2] or {}
        df = {s: int(counted.get(s, 0)) for s in unique}
        if len(unique) > 2 and n_docs > BM25_POSTINGS:
            unique = affordable(unique, [df[s] for s in unique], BM25_POSTINGS)
        unique = [s for s in unique if df[s] > 0]
        if not unique:
            return []
        clause, params = _where(scope)
        rows = self._fetch(
            "SELECT rowid, doc_len, " + ", ".join(["(tf ->> %s)::int"] * len(unique)) +
            f" FROM lm_records WHERE {clause} AND {USER_TERMS}",
            [*unique, *params, [f"{scope.user_id}\x1f{s}" for s in unique]])
        if not rows:
            return []
        data = np.array([[float(v or 0) for v in r[1:]] for r in rows], dtype=np.float64)
        dl, tf = data[:, 0], data[:, 1:]
        idf = np.array([max(np.log((n_docs - df[s] + 0.5) / (df[s] + 0.5)), 1e-6) for s in unique])
        avgdl = n_terms / n_docs
        norm = K1 * (1 - B + B * dl / avgdl)
        scores = (idf * tf * (K1 + 1) / (tf + norm[:, None])).sum(axis=1)
        order = np.lexsort((np.array([r[0] for r in rows]), -scores))[:limit]
        return [(int(rows[i][0]), float(scores[i])) for i in order]

    def merge_fts(self, pages: int) -> int:
        return 0  # the terms live in the rows: nothing to merge

    def set_fts_automerge(self, segments: int) -> None:
        pass

    def purge_fts(self) -> None:
        pass  # a deleted row's terms went with it (VACUUM reclaims its space)

    def rebuild_text_index(self) -> None:
        rows = self._fetch("SELECT user_id, rowid, index_text FROM lm_records")
        terms = self._terms([r[2] for r in rows])
        with self.transaction() as conn, conn.cursor() as cur:
            cur.executemany("UPDATE lm_records SET tf = %s, doc_len = %s WHERE user_id = %s AND "
                            "rowid = %s", [(tf, n, r[0], r[1]) for r, (tf, n) in zip(rows, terms,
                                                                                     strict=True)])

    # -- reads ----------------------------------------------------------------

    def _row(self, row: Sequence[Any], with_vector: bool) -> StoredRow:
        record = Record(
            id=row[1], user_id=row[2], agent_id=row[3], session_id=row[4], level=row[5],
            parent_id=row[6], text=row[7], title=row[9], type=row[10], summary=row[11],
            metadata=row[12], role=row[13], speaker=row[14], event_time=from_ts(row[15]),
            created_at=from_ts(row[16]), updated_at=from_ts(row[17]), valid_to=from_ts(row[18]),
            superseded_by=row[19], importance=float(row[20]), access_count=int(row[21]),
            last_accessed_at=from_ts(row[22]), strength=float(row[23]), sources=row[24],
            content_hash=row[25])
        if with_vector:
            record.vector = _f32(row[26])
        return StoredRow(record=record, rowid=int(row[0]), index_text=row[8])

    def get_row(self, record_id: str, with_vector: bool = False) -> StoredRow:
        rows = self._fetch((_SELECT_V if with_vector else _SELECT) + " WHERE id = %s", (record_id,))
        if not rows:
            raise NotFoundError(f"no memory with id {record_id!r}")
        return self._row(rows[0], with_vector)

    def light_rows(self, column: str, keys: Sequence[Any]) -> list[LightRow]:
        assert column in ("rowid", "id")
        keys = [int(k) for k in keys] if column == "rowid" else list(keys)
        rows = self._fetch(f"{_LIGHT} WHERE {column} = ANY(%s)", (keys,))
        return [LightRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], _f32(r[9]), r[10],
                         r[11], bool(r[12])) for r in rows]

    def get_rows_by_id(self, ids: Sequence[str], with_vector: bool = False) -> list[StoredRow]:
        rows = self._fetch((_SELECT_V if with_vector else _SELECT) + " WHERE id = ANY(%s)",
                           (list(ids),))
        return [self._row(r, with_vector) for r in rows]

    def get_rows_by_rowid(self, rowids: Sequence[int],
                          with_vector: bool = False) -> dict[int, StoredRow]:
        rows = self._fetch((_SELECT_V if with_vector else _SELECT) + " WHERE rowid = ANY(%s)",
                           ([int(r) for r in rowids],))
        return {int(r[0]): self._row(r, with_vector) for r in rows}

    def next_pairs_around(self, ids: Sequence[str], hops: int) -> list[tuple[str, str]]:
        pairs: set[tuple[str, str]] = set()
        frontier, seen = set(ids), set(ids)
        for _ in range(hops):
            if not frontier:
                break
            chunk = list(frontier)
            rows = self._fetch("SELECT src, dst FROM lm_edges WHERE type = 'next' AND "
                               "(src = ANY(%s) OR dst = ANY(%s))", (chunk, chunk))
            frontier = set()
            for src, dst in rows:
                pairs.add((src, dst))
                for node in (src, dst):
                    if node not in seen:
                        seen.add(node)
                        frontier.add(node)
        return sorted(pairs)

    def list_rows(self, scope: Scope | None, limit: int | None = None, offset: int = 0,
                  with_vector: bool = False, order: str = "rowid") -> list[StoredRow]:
        params: list[Any] = []
        where = ""
        if scope is not None:
            clause, params = _where(scope)
            where = f" WHERE {clause}"
        order_by = {"rowid": "rowid", "time": "event_time, rowid"}[order]
        sql = f"{_SELECT_V if with_vector else _SELECT}{where} ORDER BY {order_by}"
        if limit is not None:
            sql += " LIMIT %s OFFSET %s"
            params += [limit, offset]
        return [self._row(r, with_vector) for r in self._fetch(sql, params)]

    def count(self, scope: Scope | None = None) -> int:
        if scope is None:
            return int(self._fetch("SELECT count(*) FROM lm_records")[0][0])
        clause, params = _where(scope)
        return int(self._fetch(f"SELECT count(*) FROM lm_records WHERE {clause}", params)[0][0])

    def rowids_in_scope(self, scope: Scope, with_text: bool = False) -> np.ndarray:
        clause, params = _where(scope)
        if with_text:
            clause += " AND text IS NOT NULL"
        rows = self._fetch(f"SELECT rowid FROM lm_records WHERE {clause}", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        last = 0
        while True:
            rows = self._fetch("SELECT rowid, user_id, vector::vector FROM lm_records WHERE rowid > %s "
                               "ORDER BY rowid LIMIT %s", (last, batch))
            if not rows:
                return
            last = rows[-1][0]
            by_user: dict[str, list[tuple[int, Any]]] = {}
            for rowid, user, vec in rows:
                by_user.setdefault(user, []).append((rowid, vec))
            for user, items in by_user.items():
                yield (user, np.array([i for i, _ in items], dtype=np.int64),
                       np.stack([_f32(v) for _, v in items]))

    def session_centroids(self, scope: Scope, sessions: Sequence[str]) -> dict[str, np.ndarray]:
        if not sessions:
            return {}
        clause, params = _where(scope)
        rows = self._fetch(f"SELECT session_id, vector::vector FROM lm_records WHERE {clause} "
                           "AND session_id = ANY(%s)", [*params, list(sessions)])
        sums: dict[str, np.ndarray] = {}
        for sid, vec in rows:
            v = _f32(vec)
            sums[sid] = sums[sid] + v if sid in sums else v.copy()
        return {sid: v / max(float(np.linalg.norm(v)), 1e-12) for sid, v in sums.items()}

    def _column(self, expr: str, rowids: Sequence[int]) -> list[tuple[int, Any]]:
        if not len(rowids):
            return []
        return self._fetch(f"SELECT rowid, {expr} FROM lm_records WHERE rowid = ANY(%s) "
                           f"AND {expr} IS NOT NULL", ([int(r) for r in rowids],))

    def index_texts(self, rowids: Sequence[int]) -> dict[int, str]:
        return {int(r): str(t) for r, t in self._column("index_text", rowids)}

    def event_times(self, rowids: Sequence[int]) -> dict[int, float]:
        return {int(r): float(t) for r, t in self._column("event_time", rowids)}

    def latest_event_time(self, scope: Scope) -> float | None:
        clause, params = _where(scope)
        row = self._fetch(f"SELECT max(event_time) FROM lm_records WHERE {clause}", params)[0]
        return None if row[0] is None else float(row[0])

    def rowids_in_window(self, scope: Scope, start: float, end: float, limit: int) -> np.ndarray:
        clause, params = _where(scope)
        rows = self._fetch(f"SELECT rowid FROM lm_records WHERE {clause} AND event_time >= %s "
                           "AND event_time < %s LIMIT %s", [*params, start, end, limit])
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def speakers(self, scope: Scope) -> list[str]:
        key = (scope.user_id, scope.agent_id, scope.session_id, scope.until)
        epoch = self.vector_epoch()
        cached = self._speakers.get(key)
        if cached is not None and cached[0] == epoch:
            return list(cached[1])
        clause, params = _where(scope)
        found = [str(r[0]) for r in self._fetch(
            f"SELECT DISTINCT speaker FROM lm_records WHERE {clause} AND speaker IS NOT NULL",
            params)]
        if len(self._speakers) > 1000:
            self._speakers.clear()
        self._speakers[key] = (epoch, found)
        return list(found)

    def last_in_session(self, scope: Scope) -> str | None:
        clause, params = _where(scope)
        rows = self._fetch(f"SELECT id FROM lm_records WHERE {clause} AND level = 'turn' "
                           "ORDER BY rowid DESC LIMIT 1", params)
        return None if not rows else str(rows[0][0])

    def edges_of(self, record_id: str) -> list[Edge]:
        rows = self._fetch("SELECT src, dst, type, weight, created_at FROM lm_edges "
                           "WHERE src = %s OR dst = %s", (record_id, record_id))
        return [Edge(r[0], r[1], r[2], r[3], from_ts(r[4])) for r in rows]

    def all_edges(self, user_id: str | None = None) -> list[Edge]:
        sql = "SELECT src, dst, type, weight, created_at FROM lm_edges"
        params: list[Any] = []
        if user_id is not None:
            sql += " WHERE user_id = %s"
            params.append(user_id)
        rows = self._fetch(sql + " ORDER BY src, dst, type", params)
        return [Edge(r[0], r[1], r[2], r[3], from_ts(r[4])) for r in rows]

    def history(self, record_id: str) -> list[dict[str, Any]]:
        rows = self._fetch("SELECT seq, event, old_text, new_text, at, detail FROM lm_history "
                           "WHERE record_id = %s ORDER BY seq", (record_id,))
        return [{"seq": r[0], "event": r[1], "old_text": r[2], "new_text": r[3],
                 "at": from_ts(r[4]), "detail": r[5]} for r in rows]

    def session_count(self, user_id: str) -> int:
        return int(self._fetch("SELECT count(DISTINCT session_id) FROM lm_records "
                               "WHERE user_id = %s", (user_id,))[0][0])

    def users(self) -> list[tuple[str, int]]:
        rows = self._fetch("SELECT user_id, count(*) FROM lm_records GROUP BY user_id "
                           "ORDER BY user_id")
        return [(str(u), int(n)) for u, n in rows]

    def previous_vectors(self, user_id: str, session_id: str | None, before_rowid: int | None,
                         limit: int) -> np.ndarray:
        # "= %s" or "IS NULL", not "IS NOT DISTINCT FROM %s", which no index serves.
        sql = "SELECT vector::vector FROM lm_records WHERE user_id = %s AND " + (
            "session_id IS NULL" if session_id is None else "session_id = %s")
        params: list[Any] = [user_id] if session_id is None else [user_id, session_id]
        if before_rowid is not None:
            sql += " AND rowid < %s"
            params.append(before_rowid)
        rows = self._fetch(sql + " ORDER BY rowid DESC LIMIT %s", [*params, limit])
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([_f32(r[0]) for r in reversed(rows)])


def _f32(value: Any) -> np.ndarray:
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def _configure(conn: psycopg.Connection[Any]) -> None:
    register_vector(conn)
    conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
    # A filtered HNSW scan (one user's memories) goes on until it has found enough rows.
    conn.execute("SET hnsw.iterative_scan = relaxed_order")


class PgVectorIndex:
    """The ``VectorIndex`` of a PostgreSQL store: the HNSW index inside the database. The
    store's writes keep it, so ``add`` and ``remove`` have nothing to do, and there is no
    file to save or cache to rebuild."""

    persistent = False
    stale = False

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    @property
    def epoch(self) -> int:
        return self.store.vector_epoch()

    @epoch.setter
    def epoch(self, value: int) -> None:
        pass

    def add(self, user_id: str, rowids: np.ndarray, vectors: np.ndarray) -> None:
        pass

    def remove(self, user_id: str, rowids: np.ndarray) -> None:
        pass

    def save(self, path: Any) -> None:
        pass

    def count(self) -> int:
        return self.store.count()

    def search(self, user_id: str, query: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(query, dtype=np.float32)
        cast = "vector" if self.store.codec.tier == "fp32" else "halfvec"
        extra, params = "", [q, user_id]
        if allowed is not None:
            extra, params = " AND rowid = ANY(%s)", [*params, [int(r) for r in allowed]]
        sql = (f"SELECT rowid, 1 - (vector <=> %s::{cast}) AS s FROM lm_records WHERE user_id = %s"
               f"{extra} ORDER BY vector <=> %s::{cast} LIMIT %s")
        if 2 * k <= EF_SEARCH:  # the connection's own setting is enough: one round trip
            rows = self.store._fetch(sql, [*params, q, k])
        else:
            with self.store.pool.connection() as conn, conn.transaction():
                conn.execute(f"SET LOCAL hnsw.ef_search = {int(2 * k)}")
                rows = conn.execute(sql, [*params, q, k], binary=True).fetchall()
        return (np.array([r[0] for r in rows], dtype=np.int64),
                np.array([r[1] for r in rows], dtype=np.float32))
