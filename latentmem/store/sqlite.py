"""SQLite (WAL) store: the source of truth for records, vectors, BM25 and edges.

One connection per ``SQLiteStore`` in autocommit mode; every write is an
explicit ``BEGIN IMMEDIATE`` ... ``COMMIT`` so a batch lands whole or not at
all. Reads and writes are serialised by one re-entrant lock: SQLite would
serialise writers anyway, and one connection avoids cross-connection
visibility surprises inside a process. Other processes may open the same file;
WAL lets their readers run beside our writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.config import DURABILITY
from latentmem.encode.segment import derive_title
from latentmem.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from latentmem.inputs import content_hash, index_text_for
from latentmem.store.base import LightRow, Scope, StoredRow, column_values, scope_condition
from latentmem.store.codec import DEFAULT_TIER, PQ_SUB_DIMS, PQ_TRAIN_MAX, VectorCodec, check_tier
from latentmem.store.embed_cache import EmbeddingCache
from latentmem.store.integrity import SQLiteIntegrity
from latentmem.store.keys import KeyTable
from latentmem.store.lexicon import affordable, query_words
from latentmem.store.migrate import migrate
from latentmem.store.profiles import DEFAULT_PROFILE, LEAN_DROPPED, Profile, check_profile
from latentmem.store.sqlite_errors import connect
from latentmem.store.sqlite_lifecycle import KEEP_ADD, LifecycleSQL
from latentmem.store.textcodec import RETRAIN_GROWTH, RETRAIN_MAX, TRAIN_MIN, TextCodec
from latentmem.store.textcodec import register as register_functions
from latentmem.store.textcodec import train as train_dictionary
from latentmem.types import Edge, Record, from_ts, to_ts

_COLUMNS = (
    "id, user_id, agent_id, session_id, level, parent_id, text, index_text, title, type, "
    "summary, metadata, role, speaker, event_time, created_at, updated_at, valid_to, "
    "superseded_by, importance, access_count, last_accessed_at, strength, sources, "
    "content_hash, vector"
)
# The highest rowid ever given (``SQLiteStore._next_rowid``), in ``meta``.
_ROWID_HIGH = "rowid_high"
# index_text and summary are stored only when they differ from what is derived from the
# text (NULL otherwise, migration 006): index_text's derivation is SQL, as in the full-text
# triggers, and must stay equal to inputs.index_text_for; summary's is _plain.
_INDEX_TEXT = ("coalesce(index_text, CASE WHEN speaker IS NOT NULL AND speaker <> '' "
               "THEN speaker || ': ' || coalesce(latentmem_text(text), '') "
               "ELSE coalesce(latentmem_text(text), '') END)")
_READ = _COLUMNS.replace("index_text", _INDEX_TEXT, 1)
_SELECT = "SELECT rowid, " + _READ.replace(", vector", "") + " FROM records"
_SELECT_V = "SELECT rowid, " + _READ + " FROM records"
# How many postings one BM25 query may score (see SQLiteStore._affordable_terms).
BM25_POSTINGS = 5_000


def _where(scope: Scope, alias: str = "") -> tuple[str, list[Any]]:
    return scope_condition(scope, alias, "?")


_LIGHT = (
    "SELECT rowid, id, user_id, agent_id, session_id, speaker, event_time, importance, "
    "access_count, vector, valid_to, length(latentmem_text(text)), "
    "instr(latentmem_text(text), '?') > 0 FROM records"
)


def _plain(text: str | None) -> str:
    """A summary stored as NULL: the text with its whitespace collapsed, which is what
    segment.derive_summary gives for the usual short memory. (Re-running derive_summary on
    read would cost up to 0.25 ms a row, and a context reads a hundred.)"""
    return " ".join(text.split()) if text else ""


def _stored_title(title: str, text: str | None) -> str:
    """What to store as a title: '' when it is the one derived from the text (008); so a
    memory with text whose title was set to '' reads back with the derived one."""
    return "" if text is not None and title == derive_title(text) else title


def _title(stored: str, text: str | None) -> str:
    return derive_title(text) if not stored and text else stored


def _stored_hash(r: Record) -> str:
    """What to store as a record's content hash: '' when it is the hash of its text (008)."""
    return "" if r.text is not None and r.content_hash == content_hash(r.text) else r.content_hash


def _unless_derived(value: str | None, derived: str) -> str | None:
    """What to store for a derivable field: NULL when it is what would be derived."""
    return None if value == derived else value


# History events that record a text written to the memory; they store NULL when it is the
# text the memory held next (see SQLiteStore.history).
_TEXT_EVENTS = frozenset({"ADD", "IMPORT", "MERGE", "RESTORE", "UPDATE"})
# Events that create a memory; an ADD is not written (008) unless the memory leaves
# ``records`` (``_keep_add_events``): SQLiteStore.history gives it from the record.
_CREATED = ("ADD", "IMPORT", "MERGE")


class SQLiteStore(LifecycleSQL, SQLiteIntegrity, KeyTable):
    def __init__(self, path: str | Path, durability: str = "full",
                 profile: str | None = None) -> None:
        """``durability``: "full" (fsync at every commit: an acknowledged write survives power
        loss) or "normal" (WAL without that fsync: it survives the process dying only).
        ``profile``: what a new store spends per memory (store/profiles.py); None: the
        store's own, "default" for a new one."""
        if durability not in DURABILITY:
            raise InvalidInputError(
                f"durability must be one of {list(DURABILITY)}, found {durability!r}")
        wanted = None if profile is None else check_profile(profile)
        self.texts = TextCodec(self._dictionary)
        self._train_tried = 0  # the store's size when a text dictionary was last trained
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._durable = DURABILITY[durability]  # the setting of this store's commits
        self._sync = self._durable  # the connection's synchronous setting now
        self._local = threading.local()  # .unsynced: this thread's commits skip the fsync
        self._speakers: dict[tuple[Any, ...], tuple[int, list[str]]] = {}
        self._row_count: tuple[int, int] | None = None
        self._rowid = 0  # the next record's rowid, while ``insert`` runs (``_next_rowid``)
        self._encoded: dict[str, bytes] = {}  # the batch's vector blobs, while ``insert`` runs
        # Time write transactions held the lock, in all (a sleep cycle sizes its batches on
        # it: latentmem/lifecycle/pacing.py), and the longest one (bench perf reports it).
        self.write_seconds = 0.0
        self.write_longest = 0.0
        # Set by the owner (Memory) to record entity mentions and `entity` edges on insert.
        self.entity_extractor: Callable[[str], list[str]] | None = None
        try:
            self.conn = connect(self.path, check_same_thread=False, isolation_level=None,
                                timeout=30.0)
            new = not self.conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
            if new:  # only a database without a page yet takes a page size
                page = (wanted or check_profile(DEFAULT_PROFILE)).page_size
                self.conn.execute(f"PRAGMA page_size={page}")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={self._durable}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA busy_timeout=30000")
            self.conn.execute("PRAGMA cache_size=-65536")  # 64 MB of page cache
            # Freed pages are zeroed: a deleted memory's text must not linger in the file.
            self.conn.execute("PRAGMA secure_delete=ON")
            self.schema_version = migrate(self.conn)
            # Texts may be compressed and some fields are derived (006, 008): SQL reads them
            # through these functions (store/textcodec.py).
            register_functions(self.conn, self.texts)
            self.profile = self._bind_profile(wanted)
            self._load_dictionary()
            self._codec: VectorCodec | None = None
            # Per-connection helpers in the temp schema (nothing written to the file):
            # the document frequency of each indexed term, and a scratch FTS table with the
            # same tokenizer, which tells what a query word stems to.
            self.conn.execute("CREATE VIRTUAL TABLE temp.records_vocab "
                              "USING fts5vocab(main, records_fts, row)")
            self.conn.execute("CREATE VIRTUAL TABLE temp.query_fts "
                              "USING fts5(t, tokenize = 'porter unicode61')")
            self.conn.execute("CREATE VIRTUAL TABLE temp.query_vocab "
                              "USING fts5vocab(temp, query_fts, instance)")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # -- the profile and compressed texts (store/profiles.py, store/textcodec.py) ------

    def _plain_of(self, text: object) -> str:
        return _plain(self.texts.decode(text))

    def _bind_profile(self, wanted: Profile | None) -> Profile:
        """Record the profile of a new store (and lay out what it changes); refuse another
        one afterwards. A store from before profiles is a ``default`` one."""
        stored = self.get_meta("profile")
        if stored is None:
            fresh = self.get_meta("embedder") is None and self._rows() == 0
            profile = wanted if wanted is not None and fresh else check_profile(DEFAULT_PROFILE)
            with self.transaction() as conn:
                if fresh and profile.fts_detail != "full":
                    conn.execute("DROP TABLE records_fts")
                    conn.execute(
                        "CREATE VIRTUAL TABLE records_fts USING fts5(index_text, "
                        "content = 'records_indexed', content_rowid = 'rowid', "
                        f"tokenize = 'porter unicode61', detail = {profile.fts_detail})")
                if fresh and profile.lean_indexes:
                    for name in LEAN_DROPPED:
                        conn.execute(f"DROP INDEX IF EXISTS {name}")
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('profile', ?)",
                             (profile.name,))
                if fresh and profile.pq_sub_dims != PQ_SUB_DIMS:
                    conn.execute("INSERT OR REPLACE INTO meta(key, value) "
                                 "VALUES ('pq_sub_dims', ?)", (str(profile.pq_sub_dims),))
            stored = profile.name
        if wanted is not None and wanted.name != stored:
            raise ConflictError(
                f"store {self.path} was made with profile {stored!r}; it cannot be opened with "
                f"profile={wanted.name!r} (leave profile unset, or export the store and import "
                f"it into a new one)")
        return check_profile(stored)

    def _dictionary(self, generation: int) -> bytes | None:
        with self.lock:
            row = self.conn.execute("SELECT data FROM text_dicts WHERE generation = ?",
                                    (generation,)).fetchone()
        return None if row is None else bytes(row[0])

    def _load_dictionary(self) -> tuple[int, int]:
        """Write new texts with the newest dictionary; returns (its generation, the number of
        texts it was trained on), (0, 0) when there is none. Every write of a text calls it
        inside its transaction: another process may have trained a newer dictionary and
        deleted the one this process last used."""
        with self.lock:
            row = self.conn.execute("SELECT generation, trained_on FROM text_dicts "
                                    "ORDER BY generation DESC LIMIT 1").fetchone()
            if row is None:
                return 0, 0
            if row[0] != self.texts.generation:  # the dictionary's bytes only when new
                (data,) = self.conn.execute("SELECT data FROM text_dicts WHERE generation = ?",
                                            (row[0],)).fetchone()
                self.texts.use(int(row[0]), bytes(data))
        return int(row[0]), int(row[1])

    def _maybe_train_texts(self) -> None:
        """Train the store's first text dictionary once it holds ``TRAIN_MIN`` texts, and a
        new one each time it has grown ``RETRAIN_GROWTH`` times since (up to ``RETRAIN_MAX``
        texts), re-encoding every text with it. Never inside a caller's transaction."""
        if self.conn.in_transaction:
            return
        generation, trained_on = self._load_dictionary()
        count = self._rows()
        due = count >= TRAIN_MIN if generation == 0 else (
            trained_on < RETRAIN_MAX and count >= RETRAIN_GROWTH * trained_on)
        if not due or count < 2 * self._train_tried:
            return
        self._train_tried = count
        try:
            with self.transaction() as conn:
                if self._load_dictionary()[0] != generation:  # another process was first
                    return
                rows = conn.execute("SELECT rowid, text FROM records WHERE text IS NOT NULL"
                                    ).fetchall()
                texts = [self.texts.decode(r[1]) or "" for r in rows]
                data = train_dictionary(texts)
                if data is None:
                    return
                fresh = generation % 255 + 1
                conn.execute("INSERT OR REPLACE INTO text_dicts(generation, data, trained_on) "
                             "VALUES (?, ?, ?)", (fresh, data, len(texts)))
                self.texts.use(fresh, data)
                conn.executemany("UPDATE records SET text = ? WHERE rowid = ?",
                                 [(self.texts.encode(t), r[0])
                                  for t, r in zip(texts, rows, strict=True)])
                conn.execute("DELETE FROM text_dicts WHERE generation <> ?", (fresh,))
        except BaseException:
            self.texts.clear()  # back to what the store holds
            self._load_dictionary()
            raise
        if generation:
            self.texts.forget(generation)

    # -- transactions -------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            if self.conn.in_transaction:
                yield self.conn
                return
            sync = "NORMAL" if getattr(self._local, "unsynced", False) else self._durable
            if sync != self._sync:  # per connection, set between transactions; no I/O
                self.conn.execute(f"PRAGMA synchronous={sync}")
                self._sync = sync
            self.conn.execute("BEGIN IMMEDIATE")
            began = time.perf_counter()
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk, an I/O
                # error), and a ROLLBACK then would replace the error that matters.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            held = time.perf_counter() - began
            self.write_seconds += held
            self.write_longest = max(self.write_longest, held)

    @contextmanager
    def unsynced(self) -> Iterator[None]:
        """Commits this thread makes inside are not fsynced (synchronous=NORMAL), whatever
        the store's durability: for work that is simply done again if a power loss takes
        it (a sleep cycle: an interrupted cycle is safe, lifecycle/sleep.py) or that nobody
        was told had landed (a search's access counts: Core.in_background). Other threads'
        writes keep their durability, and the next synced commit carries these to disk too,
        since the WAL is written in order. With "full", a cycle's longest transaction at
        100k memories held the lock 45 ms against 37 without the fsync."""
        before = getattr(self._local, "unsynced", False)
        self._local.unsynced = True
        try:
            yield
        finally:
            self._local.unsynced = before

    # -- meta ----------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    def vector_epoch(self) -> int:
        return int(self.get_meta("vector_epoch") or 0)

    def bump_epoch(self) -> None:
        """A new vector epoch: every process's vector index is stale (inside the caller's
        transaction when there is one)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) "
                "WHERE key = 'vector_epoch'"
            )

    def bind_embedder(self, name: str, dim: int) -> None:
        """Record the embedder on first use; refuse a different one afterwards."""
        stored_name = self.get_meta("embedder")
        stored_dim = self.get_meta("dim")
        if stored_name is None:
            with self.transaction() as conn:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('embedder', ?)", (name,))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
            return
        if stored_name != name or int(stored_dim or 0) != dim:
            raise ConflictError(
                f"store {self.path} holds vectors from embedder {stored_name!r} ({stored_dim}-d); "
                f"it cannot be used with {name!r} ({dim}-d)"
            )

    def bind_vector_tier(self, tier: str | None, dim: int) -> VectorCodec:
        """Record the vector tier on first use (the profile's unless ``tier`` says otherwise);
        refuse another one afterwards. A store from before tiers holds fp32 vectors."""
        stored = self.get_meta("vector_tier")
        if stored is None:
            if self.count() == 0:
                stored = check_tier(tier) if tier is not None else self.profile.vector_tier
            else:
                stored = DEFAULT_TIER
            if tier is None or tier == stored:
                self.set_meta("vector_tier", stored)
        if tier is not None and check_tier(tier) != stored:
            raise ConflictError(
                f"store {self.path} keeps its vectors as {stored}; it cannot be opened with "
                f"vector_tier={tier!r} (leave vector_tier unset, or convert the store with "
                f"Memory.convert_vectors({tier!r}))"
            )
        self._codec = VectorCodec(stored, dim, self._codebook(), self._sub_dims())
        return self._codec

    def _sub_dims(self) -> int:
        """Dimensions per PQ sub-quantizer: the store's own, fixed with its profile."""
        got = self.get_meta("pq_sub_dims")
        return int(got) if got is not None else PQ_SUB_DIMS

    def _codebook(self) -> bytes | None:
        with self.lock:
            row = self.conn.execute("SELECT data FROM vector_codebook WHERE name = 'pq'").fetchone()
        return None if row is None else bytes(row[0])

    @property
    def codec(self) -> VectorCodec:
        """How this store's vectors are kept (latentmem/store/codec.py)."""
        codec = self._codec
        if codec is None:
            dim = self.get_meta("dim")
            if dim is None:
                raise StoreError(f"store {self.path} has no embedder yet; bind one first")
            codec = self._codec = VectorCodec(self.get_meta("vector_tier") or DEFAULT_TIER,
                                              int(dim), self._codebook(), self._sub_dims())
        elif codec.tier == "pq" and codec.pq is None:
            book = self._codebook()  # another process may have trained it
            if book is not None:
                codec.load_codebook(book)
        return codec

    def _maybe_train(self) -> None:
        """Train a pq store's codebook once it holds enough vectors, and re-encode the
        vectors written before (fp16) with it. Never inside a caller's transaction: the
        codebook must not outlive a rollback."""
        codec = self.codec
        if self.conn.in_transaction or not codec.needs_training(self._rows()):
            return
        with self.transaction() as conn:
            if self._codebook() is not None:  # another process was first
                book = self._codebook()
            else:
                rows = conn.execute("SELECT rowid, vector FROM records").fetchall()
                fresh = VectorCodec(codec.tier, codec.dim, sub_dims=codec.sub_dims)
                vectors = codec.decode_many([r[1] for r in rows])
                book = fresh.train(vectors)
                conn.execute("INSERT INTO vector_codebook(name, data) VALUES ('pq', ?)", (book,))
                conn.executemany("UPDATE records SET vector = ? WHERE rowid = ?",
                                 zip(fresh.encode(vectors, "pq"), (r[0] for r in rows),
                                     strict=True))
                self.bump_epoch()
        assert book is not None
        codec.load_codebook(book)
        # The re-encoded rows shrank in place and left their pages part empty (LoCoMo
        # conv-26: 2.3 KB per memory as written, 1.8 KB after VACUUM). A store this young
        # is small, so compacting it now is quick; a busy one is left for the optimiser.
        if self._rows() <= PQ_TRAIN_MAX:
            try:
                with self.lock:
                    self.conn.execute("VACUUM")
            except sqlite3.OperationalError:
                pass

    def convert_vectors(self, tier: str) -> int:
        """Re-encode every vector into ``tier`` and make it the store's tier. Lossy towards
        smaller tiers; converting back does not bring the precision back. Returns the
        number of vectors re-encoded."""
        check_tier(tier)
        codec = self.codec
        fresh = VectorCodec(tier, codec.dim, self._codebook(), codec.sub_dims)
        with self.transaction() as conn:
            rows = conn.execute("SELECT rowid, vector FROM records").fetchall()
            vectors = codec.decode_many([r[1] for r in rows])
            if fresh.needs_training(len(rows)):
                book = fresh.train(vectors)
                conn.execute("INSERT INTO vector_codebook(name, data) VALUES ('pq', ?)", (book,))
            conn.executemany("UPDATE records SET vector = ? WHERE rowid = ?",
                             zip(fresh.encode(vectors), (r[0] for r in rows), strict=True))
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('vector_tier', ?)",
                         (tier,))
            self.bump_epoch()
        self._codec = fresh
        return len(rows)

    # -- writes ---------------------------------------------------------------

    def insert(
        self,
        rows: Sequence[tuple[Record, str]],
        edges: Sequence[Edge] = (),
        history_event: str = "ADD",
        supersede: Sequence[str] = (),
    ) -> list[int]:
        """Insert records (with their index text) and edges in one transaction. The
        records named in ``supersede`` become valid until the last new record's event
        time, superseded by it."""
        now = time.time()
        rowids: list[int] = []
        with self.transaction() as conn:
            self._load_dictionary()  # another process may have trained a newer one
            if supersede and rows:
                newest = rows[-1][0]
                until = to_ts(newest.event_time) or now
                for old_id in supersede:
                    conn.execute(
                        "UPDATE records SET valid_to = ?, superseded_by = ?, updated_at = ? "
                        "WHERE id = ?", (until, newest.id, now, old_id))
                    conn.execute(
                        "INSERT INTO history(record_id, event, at, detail) "
                        "VALUES (?, 'SUPERSEDED', ?, ?)",
                        (old_id, now, json.dumps({"by": newest.id})))
            self._rowid = self._next_rowid(conn)
            # One encoding call for the batch: FAISS encodes a lone vector into 2-d PQ codes
            # in ~2 ms, twenty at once in 0.1 ms.
            given = [(r.id, r.vector) for r, _ in rows if r.vector is not None]
            self._encoded = dict(zip((i for i, _ in given), self.codec.encode(
                np.stack([v for _, v in given])), strict=True)) if given else {}
            for record, index_text in rows:
                rowids.append(self._insert_record(conn, record, index_text))
                if history_event == "ADD":
                    continue  # history gives it from the record (008)
                conn.execute(
                    "INSERT INTO history(record_id, event, old_text, new_text, at) "
                    "VALUES (?, ?, NULL, ?, ?)",
                    (record.id, history_event,
                     None if history_event in _TEXT_EVENTS else record.text, now),
                )
            self._insert_edges(conn, self._link_next(conn, rows, rowids, edges, now))
            if rows:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                             (_ROWID_HIGH, str(rowids[-1])))
                self.bump_epoch()
        self._maybe_train()
        self._maybe_train_texts()
        return rowids

    def _link_next(self, conn: sqlite3.Connection, rows: Sequence[tuple[Record, str]],
                   rowids: Sequence[int], edges: Sequence[Edge], now: float) -> list[Edge]:
        """Keep the ``next`` edges into the new records that have the write path's form
        (weight 1, made with the record) as the record's ``prev`` (008); returns the edges
        left to store as rows."""
        made = {r.id: (rowid, to_ts(r.created_at)) for (r, _), rowid in
                zip(rows, rowids, strict=True)}
        linked: set[str] = set()
        rest: list[Edge] = []
        for e in edges:
            dst = made.get(e.dst)
            if (e.type != "next" or dst is None or e.dst in linked or e.weight != 1.0
                    or (to_ts(e.created_at) or now) != dst[1]):
                rest.append(e)
                continue
            src = made.get(e.src)
            if src is None:
                got = conn.execute("SELECT rowid FROM records WHERE id = ?", (e.src,)).fetchone()
                src = None if got is None else (int(got[0]), None)
            if src is None:  # not a live memory (an import's edge to an archived one)
                rest.append(e)
                continue
            conn.execute("UPDATE records SET prev = ? WHERE rowid = ?", (src[0], dst[0]))
            linked.add(e.dst)
        return rest

    def _next_rowid(self, conn: sqlite3.Connection) -> int:
        """The rowid of the next memory: past every rowid this store ever gave, as
        PostgreSQL's sequence does. SQLite alone would give the rowid of a deleted or
        archived newest memory to the next one written, while what names memories by
        rowid still named the one that left: a vector index emptied in bulk
        (``actions.Unindexer``), the access log preloading reads, the watermark of
        consolidation (a reused rowid is below it, so the new memory was never compared),
        or a search's access count written after it returned. Another user's memory
        could then be returned, counted or preloaded as the first user's. Rejected:
        ``AUTOINCREMENT``, which needs the records table rebuilt."""
        row = conn.execute(
            "SELECT max(coalesce((SELECT max(rowid) FROM records), 0), "
            "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0))",
            (_ROWID_HIGH,)).fetchone()
        return int(row[0]) + 1

    def _insert_record(self, conn: sqlite3.Connection, r: Record, index_text: str) -> int:
        """Insert one record with the next rowid (``_rowid``, which ``insert`` sets)."""
        assert r.vector is not None
        rowid, self._rowid = self._rowid, self._rowid + 1
        try:
            cur = conn.execute(
                f"INSERT INTO records(rowid, {_COLUMNS}) VALUES ({','.join('?' * 27)})",
                (
                    rowid, r.id, r.user_id, r.agent_id, r.session_id, r.level, r.parent_id,
                    self.texts.encode(r.text),
                    _unless_derived(index_text, index_text_for(r.text or "", r.speaker)),
                    _stored_title(r.title, r.text), r.type,
                    _unless_derived(r.summary, _plain(r.text)),
                    json.dumps(r.metadata),
                    r.role, r.speaker, to_ts(r.event_time), to_ts(r.created_at),
                    to_ts(r.updated_at), to_ts(r.valid_to), r.superseded_by, r.importance,
                    r.access_count, to_ts(r.last_accessed_at), r.strength,
                    json.dumps(r.sources), _stored_hash(r),
                    self._encoded.pop(r.id, None) or self.codec.encode_one(r.vector),
                ),
            )
        except sqlite3.IntegrityError as exc:
            # The id is the only unique key a caller controls; any other constraint (a NOT
            # NULL or CHECK column) is reported as what SQLite said, not as a duplicate.
            if "UNIQUE" in str(exc) and "records.id" in str(exc):
                raise ConflictError(f"a record with id {r.id!r} already exists") from exc
            raise ConflictError(f"record {r.id!r} breaks a store constraint: {exc}") from exc
        rowid = int(cur.lastrowid or 0)  # its full-text row comes from a trigger (006)
        self._mention(conn, r, rowid)
        return rowid

    def _mention(self, conn: sqlite3.Connection, r: Record, rowid: int) -> None:
        """Record the entities ``r`` names; link it to the previous mention of each."""
        if self.entity_extractor is None or not r.text or not self.profile.entities:
            return
        for entity in self.entity_extractor(r.text):
            prev = conn.execute(
                "SELECT r.id FROM entity_mentions m JOIN records r ON r.rowid = m.rowid_ "
                "WHERE m.user_id = ? AND m.entity = ? ORDER BY m.rowid_ DESC LIMIT 1",
                (r.user_id, entity),
            ).fetchone()
            conn.execute("INSERT OR IGNORE INTO entity_mentions VALUES (?, ?, ?)",
                         (r.user_id, entity, rowid))
            if prev is not None and prev[0] != r.id:
                conn.execute(
                    "INSERT OR IGNORE INTO edges(src, dst, type, weight, created_at) "
                    "VALUES (?, ?, 'entity', 1.0, ?)", (prev[0], r.id, time.time()),
                )

    def mentioning(self, scope: Scope, entity: str, limit: int) -> list[int]:
        """Rowids of the scope's memories that mention ``entity``, newest first."""
        clause, params = _where(scope, "r")
        with self.lock:
            rows = self.conn.execute(
                "SELECT m.rowid_ FROM entity_mentions m JOIN records r ON r.rowid = m.rowid_ "
                f"WHERE m.user_id = ? AND m.entity = ? AND {clause} ORDER BY m.rowid_ DESC LIMIT ?",
                [scope.user_id, entity, *params, limit],
            ).fetchall()
        return [int(x[0]) for x in rows]

    def _insert_edges(self, conn: sqlite3.Connection, edges: Sequence[Edge]) -> None:
        now = time.time()
        conn.executemany(
            "INSERT OR REPLACE INTO edges(src, dst, type, weight, created_at) VALUES (?,?,?,?,?)",
            [(e.src, e.dst, e.type, e.weight, to_ts(e.created_at) or now) for e in edges],
        )

    def add_edges(self, edges: Sequence[Edge]) -> None:
        with self.transaction() as conn:
            self._insert_edges(conn, edges)

    def update(
        self,
        record_id: str,
        changes: dict[str, Any],
        index_text: str | None = None,
        vector: np.ndarray | None = None,
    ) -> StoredRow:
        """Apply column changes; re-index text and vector when given. Returns the new row."""
        sets = column_values(changes)
        with self.transaction() as conn:
            self._load_dictionary()
            old = self.get_row(record_id)
            text = changes.get("text", old.record.text)
            if "summary" in sets:
                sets["summary"] = _unless_derived(sets["summary"], _plain(text))
            if index_text is not None:
                sets["index_text"] = _unless_derived(
                    index_text, index_text_for(text or "", old.record.speaker))
            if vector is not None:
                sets["vector"] = self.codec.encode_one(vector)
            if "content_hash" in sets and text is not None \
                    and sets["content_hash"] == content_hash(text):
                sets["content_hash"] = ""
            if "title" in sets:
                sets["title"] = _stored_title(sets["title"], text)
            elif "text" in sets and old.record.title != derive_title(text or ""):
                sets["title"] = old.record.title  # was derived from the old text: keep it
            if "text" in sets:
                sets["text"] = self.texts.encode(sets["text"])
            assignments = ", ".join(f"{k} = ?" for k in sets)
            # The full-text row follows by trigger (006).
            conn.execute(
                f"UPDATE records SET {assignments} WHERE rowid = ?", [*sets.values(), old.rowid]
            )
            if "text" in changes:
                conn.execute("DELETE FROM entity_mentions WHERE rowid_ = ?", (old.rowid,))
                conn.execute("DELETE FROM edges WHERE dst = ? AND type = 'entity'", (record_id,))
                self._mention(conn, replace(old.record, text=changes["text"]), old.rowid)
            if vector is not None:
                self.bump_epoch()
            conn.execute(
                "INSERT INTO history(record_id, event, old_text, new_text, at, detail) "
                "VALUES (?, 'UPDATE', ?, ?, ?, ?)",
                (
                    record_id,
                    old.record.text if text != old.record.text else None,
                    text if text != old.record.text else None,
                    time.time(),
                    json.dumps(sorted(changes)),
                ),
            )
            return self.get_row(record_id)

    def delete(self, record_ids: Sequence[str]) -> list[StoredRow]:
        """Delete records, their full-text rows and edges; scrub their text from history."""
        with self.transaction() as conn:
            rows = [self.get_row(rid) for rid in record_ids]
            now = time.time()
            for row in rows:
                rid = row.record.id
                conn.execute(KEEP_ADD, (json.dumps([row.rowid]),))
                conn.execute("UPDATE records SET prev = NULL WHERE prev = ?", (row.rowid,))
                conn.execute("DELETE FROM records WHERE rowid = ?", (row.rowid,))
                self._unindex_texts([row.rowid])
                conn.execute("DELETE FROM edges WHERE src = ? OR dst = ?", (rid, rid))
                conn.execute(
                    "UPDATE history SET old_text = NULL, new_text = NULL WHERE record_id = ?",
                    (rid,),
                )
                conn.execute(
                    "INSERT INTO history(record_id, event, at) VALUES (?, 'DELETE', ?)", (rid, now)
                )
            if rows:
                self.bump_epoch()
        return rows

    def touch(self, rowids: Sequence[int], when: float | None = None,
              user_id: str | None = None) -> None:
        """Count an access of each memory; with ``user_id``, also log the search's results
        together (``accesses``: what preloading learns co-access from), and count only
        that user's memories: the write comes after the search, and a store written before
        rowids stopped being reused (``_next_rowid``) may give a rowid to another user."""
        if not rowids:
            return
        when = time.time() if when is None else when
        mine = "" if user_id is None else " AND user_id = ?"
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE records SET access_count = access_count + 1, last_accessed_at = ? "
                "WHERE rowid = ?" + mine,
                [(when, r) if user_id is None else (when, r, user_id) for r in rowids],
            )
            if user_id is not None:
                conn.execute("INSERT INTO accesses(at, user_id, rowids) VALUES (?, ?, ?)",
                             (when, user_id, json.dumps([int(r) for r in rowids])))

    def _unindex_texts(self, rowids: Sequence[int], purge: bool = True) -> None:
        """Remove memories' words from every text index (full text, entity mentions), one
        statement per index whatever their number, inside the caller's transaction; the
        records rows are the caller's. ``purge``: mark the full-text index for a purging
        merge (see ``purge_fts``); an archived memory needs none, as the archive keeps its
        text anyway."""
        if not rowids:
            return
        marks = json.dumps([int(r) for r in rowids])
        with self.transaction() as conn:
            # The index reads records (006): a row it no longer holds must not be deleted again.
            conn.execute(
                "INSERT INTO records_fts(records_fts, rowid, index_text) SELECT 'delete', "
                "x.rowid, x.index_text FROM records_indexed x WHERE x.rowid IN "
                "(SELECT value FROM json_each(?)) "
                "AND EXISTS (SELECT 1 FROM records_fts_docsize d WHERE d.id = x.rowid)", (marks,))
            conn.execute("DELETE FROM entity_mentions WHERE rowid_ IN "
                         "(SELECT value FROM json_each(?))", (marks,))
            if purge:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('fts_dirty', '1')")

    def drop_texts(self, summaries: dict[int, str], at: float) -> None:
        """Make memories lossy (see ``base.Records.drop_texts``)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE records SET text = NULL, index_text = '', title = '', summary = j.value, "
                "content_hash = CASE WHEN content_hash = '' AND text IS NOT NULL "
                "THEN latentmem_hash(text) ELSE content_hash END, "
                "updated_at = ? FROM json_each(?) j WHERE records.rowid = CAST(j.key AS INTEGER)",
                (at, json.dumps({str(rowid): text for rowid, text in summaries.items()})))
            self._unindex_texts(list(summaries))

    def restore_text(self, record: Record, rowid: int, index_text: str) -> None:
        """Give a lossy memory its text (``record.text``, title, summary) back, indexed."""
        text = record.text or ""
        with self.transaction() as conn:
            self._load_dictionary()
            conn.execute(
                "UPDATE records SET text = ?, index_text = ?, title = ?, summary = ?, "
                "updated_at = ? WHERE rowid = ?",
                (self.texts.encode(record.text),
                 _unless_derived(index_text, index_text_for(text, record.speaker)),
                 _stored_title(record.title, record.text),
                 _unless_derived(record.summary, _plain(text)), time.time(), rowid))
            self._unindex_texts([rowid])
            # The index must hold exactly what it reads back from records (external content).
            conn.execute("INSERT INTO records_fts(rowid, index_text) SELECT rowid, index_text "
                         "FROM records_indexed WHERE rowid = ?", (rowid,))
            self._mention(conn, record, rowid)

    def rebuild_text_index(self) -> None:
        """Build the full-text index again from the records (after a crash left them apart)."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO records_fts(records_fts) VALUES ('rebuild')")

    def embedding_cache(self) -> EmbeddingCache:
        """The store's own cache, its vectors in the store's tier where that is int8 or
        fp16 (a PQ code is too lossy to stand for a query; fp32 is kept as it is)."""
        kept = self.codec if self.codec.tier in ("int8", "fp16") else None
        return EmbeddingCache(self.conn, self.lock, codec=kept)

    def decode_vectors(self, blobs: Sequence[bytes]) -> np.ndarray:
        """Stored vector blobs (of any tier) -> an (n, dim) float32 matrix."""
        if not blobs:
            return np.zeros((0, 0), dtype=np.float32)
        return self.codec.decode_many(blobs)

    def merge_fts(self, pages: int) -> int:
        """One incremental merge step of the full-text index (FTS5 'merge'), writing about
        ``abs(pages)`` pages in a transaction of its own. Positive: only where a level holds
        several segments, which is what keeps a run of deletions from piling them up until
        FTS5 merges a whole level inside one write (370 ms, archiving at 100k). Negative:
        wherever two or more are left. Returns the rows it changed (< 2: nothing to merge)."""
        with self.transaction() as conn:
            before = conn.total_changes
            conn.execute("INSERT INTO records_fts(records_fts, rank) VALUES ('merge', ?)", (pages,))
            return conn.total_changes - before

    def set_fts_automerge(self, segments: int) -> None:
        """FTS5's 'automerge' (0: off; see lifecycle/pacing.py). Kept in the index's own
        config table, so it outlives this connection; written only when it changes."""
        with self.transaction() as conn:
            row = conn.execute("SELECT v FROM records_fts_config WHERE k = 'automerge'").fetchone()
            if (4 if row is None else int(row[0])) == int(segments):  # absent: FTS5's default
                return
            conn.execute("INSERT INTO records_fts(records_fts, rank) VALUES ('automerge', ?)",
                         (int(segments),))

    def purge_fts(self) -> None:
        """Rewrite the full-text index into one segment. FTS5 (SQLite < 3.42 has no
        secure-delete) keeps a deleted row's terms in old segments until they merge;
        this merge is what makes a deletion leave no term behind."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO records_fts(records_fts) VALUES ('optimize')")
            conn.execute("DELETE FROM meta WHERE key = 'fts_dirty'")

    # -- reads ----------------------------------------------------------------

    def _row(self, row: Sequence[Any], with_vector: bool) -> StoredRow:
        text = self.texts.decode(row[7])
        record = Record(
            id=row[1],
            user_id=row[2],
            agent_id=row[3],
            session_id=row[4],
            level=row[5],
            parent_id=row[6],
            text=text,
            title=_title(row[9], text),
            type=row[10],
            summary=self._plain_of(row[7]) if row[11] is None else row[11],
            metadata=json.loads(row[12]),
            role=row[13],
            speaker=row[14],
            event_time=from_ts(row[15]),
            created_at=from_ts(row[16]),
            updated_at=from_ts(row[17]),
            valid_to=from_ts(row[18]),
            superseded_by=row[19],
            importance=float(row[20]),
            access_count=int(row[21]),
            last_accessed_at=from_ts(row[22]),
            strength=float(row[23]),
            sources=json.loads(row[24]),
            content_hash=row[25],
        )
        if not record.content_hash and record.text is not None:
            record.content_hash = content_hash(record.text)  # stored as '' (008)
        if with_vector:
            record.vector = self.codec.decode(row[26])
        return StoredRow(record=record, rowid=int(row[0]), index_text=row[8])

    def get_row(self, record_id: str, with_vector: bool = False) -> StoredRow:
        sql = (_SELECT_V if with_vector else _SELECT) + " WHERE id = ?"
        with self.lock:
            row = self.conn.execute(sql, (record_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no memory with id {record_id!r}")
        return self._row(row, with_vector)

    def light_rows(self, column: str, keys: Sequence[Any]) -> list[LightRow]:
        """Light rows by ``rowid`` or ``id``."""
        assert column in ("rowid", "id")
        out: list[LightRow] = []
        with self.lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(f"{_LIGHT} WHERE {column} IN ({marks})", chunk).fetchall()
                vectors = self.codec.decode_many([r[9] for r in rows])
                for r, vec in zip(rows, vectors, strict=True):
                    out.append(LightRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                                        vec, r[10], r[11], bool(r[12])))
        return out

    def get_rows_by_id(self, ids: Sequence[str], with_vector: bool = False) -> list[StoredRow]:
        base = _SELECT_V if with_vector else _SELECT
        out: list[StoredRow] = []
        with self.lock:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                out.extend(
                    self._row(row, with_vector)
                    for row in self.conn.execute(f"{base} WHERE id IN ({marks})", chunk)
                )
        return out

    def next_pairs_around(self, ids: Sequence[str], hops: int) -> list[tuple[str, str]]:
        """``next`` edges (src, dst) within ``hops`` steps of ``ids``, in both directions."""
        pairs: set[tuple[str, str]] = set()
        frontier = set(ids)
        seen = set(ids)
        with self.lock:
            for _ in range(hops):
                if not frontier:
                    break
                chunk = list(frontier)
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    f"SELECT src, dst FROM edges WHERE type = 'next' AND src IN ({marks}) "
                    f"UNION SELECT src, dst FROM edges WHERE type = 'next' AND dst IN ({marks}) "
                    f"UNION SELECT p.id, r.id FROM records p JOIN records r ON r.prev = p.rowid "
                    f"WHERE p.id IN ({marks}) "
                    f"UNION SELECT p.id, r.id FROM records r JOIN records p ON p.rowid = r.prev "
                    f"WHERE r.id IN ({marks})",
                    chunk * 4,
                ).fetchall()
                frontier = set()
                for src, dst in rows:
                    pairs.add((src, dst))
                    for node in (src, dst):
                        if node not in seen:
                            seen.add(node)
                            frontier.add(node)
        return sorted(pairs)

    def get_rows_by_rowid(
        self, rowids: Sequence[int], with_vector: bool = False
    ) -> dict[int, StoredRow]:
        out: dict[int, StoredRow] = {}
        base = _SELECT_V if with_vector else _SELECT
        with self.lock:
            for start in range(0, len(rowids), 500):
                chunk = [int(r) for r in rowids[start : start + 500]]
                marks = ",".join("?" * len(chunk))
                for row in self.conn.execute(f"{base} WHERE rowid IN ({marks})", chunk):
                    stored = self._row(row, with_vector)
                    out[stored.rowid] = stored
        return out

    def list_rows(
        self,
        scope: Scope | None,
        limit: int | None = None,
        offset: int = 0,
        with_vector: bool = False,
        order: str = "rowid",
    ) -> list[StoredRow]:
        base = _SELECT_V if with_vector else _SELECT
        params: list[Any] = []
        where = ""
        if scope is not None:
            clause, params = _where(scope)
            where = f" WHERE {clause}"
        order_by = {"rowid": "rowid", "time": "event_time, rowid"}[order]
        sql = f"{base}{where} ORDER BY {order_by}"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        with self.lock:
            return [self._row(r, with_vector) for r in self.conn.execute(sql, params)]

    def count(self, scope: Scope | None = None) -> int:
        where = ""
        params: list[Any] = []
        if scope is not None:
            clause, params = _where(scope)
            where = f" WHERE {clause}"
        with self.lock:
            row = self.conn.execute(f"SELECT count(*) FROM records{where}", params).fetchone()
        return int(row[0])

    def rowids_in_scope(self, scope: Scope, with_text: bool = False) -> np.ndarray:
        """Rowids of the scope's memories (``with_text``: only those that still hold text)."""
        clause, params = _where(scope)
        if with_text:
            clause += " AND text IS NOT NULL"
        with self.lock:
            rows = self.conn.execute(f"SELECT rowid FROM records WHERE {clause}", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """Yield (user_id, rowids, vectors) in batches, for rebuilding the vector index."""
        last = 0
        while True:
            with self.lock:
                rows = self.conn.execute(
                    "SELECT rowid, user_id, vector FROM records WHERE rowid > ? "
                    "ORDER BY rowid LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            by_user: dict[str, list[tuple[int, bytes]]] = {}
            for rowid, user, blob in rows:
                by_user.setdefault(user, []).append((rowid, blob))
            for user, items in by_user.items():
                ids = np.array([i for i, _ in items], dtype=np.int64)
                yield user, ids, self.codec.decode_many([b for _, b in items])

    def bm25(self, query: str, scope: Scope, limit: int) -> list[tuple[int, float]]:
        """BM25 over the scope. Returns (rowid, score) with higher = better."""
        terms = query_words(query)
        if not terms:
            return []
        if len(terms) > 2 and self._rows() > BM25_POSTINGS:  # else every word is affordable
            terms = self._affordable_terms(terms)
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        clause, params = _where(scope, "r")
        sql = (
            "SELECT f.rowid, bm25(records_fts) AS s FROM records_fts f "
            "JOIN record_scope r ON r.rowid = f.rowid "
            f"WHERE records_fts MATCH ? AND {clause} ORDER BY s LIMIT ?"
        )
        with self.lock:
            rows = self.conn.execute(sql, [match, *params, limit]).fetchall()
        return [(int(r), -float(s)) for r, s in rows]

    def session_centroids(self, scope: Scope, sessions: Sequence[str]) -> dict[str, np.ndarray]:
        """Unit-normalised mean vector of each session's memories in the scope."""
        if not sessions:
            return {}
        clause, params = _where(scope)
        marks = ",".join("?" * len(sessions))
        with self.lock:
            rows = self.conn.execute(
                f"SELECT session_id, vector FROM records WHERE {clause} AND session_id IN ({marks})",
                [*params, *sessions],
            ).fetchall()
        sums: dict[str, np.ndarray] = {}
        vectors = self.codec.decode_many([r[1] for r in rows])
        for (sid, _), vec in zip(rows, vectors, strict=True):
            sums[sid] = sums[sid] + vec if sid in sums else vec.copy()
        return {sid: v / max(float(np.linalg.norm(v)), 1e-12) for sid, v in sums.items()}

    def _column(self, expr: str, rowids: Sequence[int]) -> list[tuple[int, Any]]:
        """(rowid, ``expr``) for each of ``rowids`` where ``expr`` is not NULL."""
        if not rowids:
            return []
        marks = ",".join("?" * len(rowids))
        with self.lock:
            return self.conn.execute(
                f"SELECT rowid, {expr} FROM records WHERE rowid IN ({marks}) AND {expr} IS NOT NULL",
                list(rowids),
            ).fetchall()

    def index_texts(self, rowids: Sequence[int]) -> dict[int, str]:
        return {int(r): str(t) for r, t in self._column(_INDEX_TEXT, rowids)}

    def event_times(self, rowids: Sequence[int]) -> dict[int, float]:
        """The event time of each of ``rowids`` that has one."""
        return {int(r): float(t) for r, t in self._column("event_time", rowids)}

    def latest_event_time(self, scope: Scope) -> float | None:
        clause, params = _where(scope)
        with self.lock:
            row = self.conn.execute(f"SELECT max(event_time) FROM records WHERE {clause}",
                                    params).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def rowids_in_window(self, scope: Scope, start: float, end: float, limit: int) -> np.ndarray:
        """Rowids of the scope's memories with start <= event time < end (at most ``limit``)."""
        clause, params = _where(scope)
        sql = (f"SELECT rowid FROM records WHERE {clause} AND event_time >= ? AND event_time < ? "
               "LIMIT ?")
        with self.lock:
            rows = self.conn.execute(sql, [*params, start, end, limit]).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def _rows(self) -> int:
        """Row count of the whole store, cached until the next write (count(*) is a scan)."""
        epoch = self.vector_epoch()
        if self._row_count is None or self._row_count[0] != epoch:
            self._row_count = (epoch, self.count())
        return self._row_count[1]

    def _affordable_terms(self, words: list[str]) -> list[str]:
        """The query words whose postings fit in ``BM25_POSTINGS`` (``lexicon.affordable``).
        Below the budget (stores of a few thousand memories) nothing changes. Frequencies
        come from FTS5's own vocabulary, after its own stemming."""
        with self.lock:
            conn = self.conn
            conn.executemany("INSERT INTO temp.query_fts(rowid, t) VALUES (?, ?)",
                             list(enumerate(words)))
            try:
                stems = dict(conn.execute("SELECT doc, term FROM temp.query_vocab").fetchall())
            finally:
                conn.execute("DELETE FROM temp.query_fts")
            df: dict[str, int] = {}
            for stem in set(stems.values()):
                row = conn.execute("SELECT doc FROM temp.records_vocab WHERE term = ?",
                                   (stem,)).fetchone()
                df[stem] = int(row[0]) if row else 0
        return affordable(words, [df.get(stems.get(i, ""), 0) for i in range(len(words))],
                          BM25_POSTINGS)

    def speakers(self, scope: Scope) -> list[str]:
        """The scope's distinct speakers. DISTINCT walks the whole (user, speaker) index,
        several ms at 100k memories, so the answer is kept until the next write."""
        key = (scope.user_id, scope.agent_id, scope.session_id, scope.until)
        with self.lock:
            epoch = self.vector_epoch()
            cached = self._speakers.get(key)
            if cached is not None and cached[0] == epoch:
                return list(cached[1])
            clause, params = _where(scope)
            rows = self.conn.execute(
                f"SELECT DISTINCT speaker FROM records WHERE {clause} AND speaker IS NOT NULL",
                params,
            ).fetchall()
            found = [str(r[0]) for r in rows]
            if len(self._speakers) > 1000:
                self._speakers.clear()
            self._speakers[key] = (epoch, found)
        return list(found)

    def last_in_session(self, scope: Scope) -> str | None:
        clause, params = _where(scope)
        with self.lock:
            row = self.conn.execute(
                f"SELECT id FROM records WHERE {clause} AND level = 'turn' "
                "ORDER BY rowid DESC LIMIT 1",
                params,
            ).fetchone()
        return None if row is None else str(row[0])

    def edges_of(self, record_id: str) -> list[Edge]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT src, dst, type, weight, created_at FROM edge_list "
                "WHERE src = ? OR dst = ?",
                (record_id, record_id),
            ).fetchall()
        return [Edge(r[0], r[1], r[2], r[3], from_ts(r[4])) for r in rows]

    def all_edges(self, user_id: str | None = None) -> list[Edge]:
        sql = "SELECT e.src, e.dst, e.type, e.weight, e.created_at FROM edge_list e"
        params: list[Any] = []
        if user_id is not None:
            sql += " JOIN records r ON r.id = e.src WHERE r.user_id = ?"
            params.append(user_id)
        with self.lock:
            rows = self.conn.execute(sql + " ORDER BY e.src, e.dst, e.type", params).fetchall()
        return [Edge(r[0], r[1], r[2], r[3], from_ts(r[4])) for r in rows]

    def history(self, record_id: str) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, event, old_text, new_text, at, detail FROM history "
                "WHERE record_id = ? ORDER BY seq",
                (record_id,),
            ).fetchall()
            current = self.conn.execute("SELECT text, created_at FROM records WHERE id = ?",
                                        (record_id,)).fetchone()
        # An ADD is written only when the memory leaves records (008); before, it is the
        # record's creation. Written late, it still comes first.
        if current is not None and not any(r[1] in _CREATED for r in rows):
            rows.insert(0, (0, "ADD", None, None, current[1], "{}"))
        rows.sort(key=lambda r: (r[1] != "ADD", r[0]))
        # Events that wrote the text the memory held next store NULL (006): walking back
        # from the current text, each text-changing UPDATE tells the text before it.
        after = self.texts.decode(current[0]) if current else None
        texts: list[tuple[str | None, str | None]] = []
        for r in reversed(rows):
            old, new = r[2], r[3]
            if r[1] in ("DELETE", "DEMOTE"):  # they scrubbed every text before them
                after = None
            elif old is None and new is None and r[1] in _TEXT_EVENTS:
                old, new = (after, after) if r[1] == "UPDATE" else (None, after)
            elif old is not None:
                after = old
            texts.append((old, new))
        texts.reverse()
        return [
            {
                "seq": r[0],
                "event": r[1],
                "old_text": old,
                "new_text": new,
                "at": from_ts(r[4]),
                "detail": json.loads(r[5]),
            }
            for r, (old, new) in zip(rows, texts, strict=True)
        ]

    def session_count(self, user_id: str) -> int:
        with self.lock:
            row = self.conn.execute("SELECT count(DISTINCT session_id) FROM records "
                                    "WHERE user_id = ?", (user_id,)).fetchone()
        return int(row[0])

    def users(self) -> list[tuple[str, int]]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT user_id, count(*) FROM records GROUP BY user_id ORDER BY user_id"
            ).fetchall()
        return [(str(u), int(n)) for u, n in rows]

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def checkpoint(self) -> None:
        with self.lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- the importance controller (latentmem/lifecycle/controller.py) ----------------

    def previous_vectors(self, user_id: str, session_id: str | None, before_rowid: int | None,
                         limit: int) -> np.ndarray:
        """The vectors of the ``limit`` latest memories of a user's session (session-less
        memories form one), oldest first; with ``before_rowid``, those stored before it."""
        sql = "SELECT vector FROM records WHERE user_id = ? AND session_id IS ?"
        params: list[Any] = [user_id, session_id]
        if before_rowid is not None:
            sql += " AND rowid < ?"
            params.append(before_rowid)
        with self.lock:
            rows = self.conn.execute(sql + " ORDER BY rowid DESC LIMIT ?",
                                     [*params, limit]).fetchall()
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return self.codec.decode_many([r[0] for r in reversed(rows)])

    def set_importance(self, items: Sequence[tuple[int, float]]) -> None:
        """Set ``records.importance`` by rowid (no history event: it is derived, not said)."""
        if not items:
            return
        with self.transaction() as conn:
            conn.executemany("UPDATE records SET importance = ? WHERE rowid = ?",
                             [(float(v), int(r)) for r, v in items])

    def add_feedback(self, items: Sequence[tuple[str, str, bool, str]], at: float) -> None:
        """Log feedback events: (record id, user id, useful, source)."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO feedback(record_id, user_id, useful, source, at) VALUES (?, ?, ?, ?, ?)",
                [(rid, user, int(useful), source, at) for rid, user, useful, source in items])

    def feedback_counts(self, record_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(events, useful events) of explicit feedback per memory that has any."""
        out: dict[str, tuple[int, int]] = {}
        with self.lock:
            for start in range(0, len(record_ids), 500):
                chunk = list(record_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for rid, n, useful in self.conn.execute(
                    "SELECT record_id, count(*), sum(useful) FROM feedback WHERE source = "
                    f"'explicit' AND record_id IN ({marks}) GROUP BY record_id", chunk):
                    out[str(rid)] = (int(n), int(useful))
        return out

    def save_model(self, name: str, state_json: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO models(name, state, updated_at) VALUES (?, ?, ?)",
                         (name, state_json, time.time()))

    def load_model(self, name: str) -> str | None:
        with self.lock:
            row = self.conn.execute("SELECT state FROM models WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])
