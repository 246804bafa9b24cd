"""Memory: the public facade. Thin on purpose: validation and orchestration live
here; storage, indexing, scoring and packing live in their own modules.

Write path (``add``): validate everything -> split into records -> embed in
batches (through the content-hash cache) -> one SQLite transaction (records,
vectors, FTS rows, ``next`` edges, history) -> vector index -> receipt. No LLM,
and nothing is written unless everything validated and embedded.

Read path (``search``): embed the query -> dense top-N from the user's FAISS
partition and BM25 top-N from FTS5, both inside the scope -> reciprocal rank
fusion -> multi-factor rescoring -> top k, each with its score components.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from latentmem.config import Config, ScoringWeights, resolve_home
from latentmem.encode import segment
from latentmem.encode.base import Embedder, get_embedder
from latentmem.encode.cache import CachedEmbedder, EmbeddingCache
from latentmem.errors import InputTooLargeError, InvalidInputError, NotFoundError
from latentmem.graph import causal, entities
from latentmem.ids import new_id
from latentmem.inputs import (
    Content,
    check_scope_value,
    check_vector,
    content_hash,
    index_text_for,
    is_unit_f32,
    normalise_items,
)
from latentmem.lifecycle.controller import Controller
from latentmem.retrieve import hybrid, rerank, topics
from latentmem.retrieve import learned as learned_stage
from latentmem.retrieve.context import pack
from latentmem.retrieve.intent import asks_when, is_listing
from latentmem.retrieve.scoring import rescore_many
from latentmem.retrieve.timeparse import parse_time
from latentmem.retrieve.timequery import (
    TimeWindow,
    anchored_window,
    event_anchor,
    parse_query_time,
)
from latentmem.store.sqlite import Scope, SQLiteStore, StoredRow
from latentmem.store.vector_index import FaissIndex
from latentmem.types import Context, Edge, Hit, Receipt, Record, from_ts

DB_FILE = "memory.db"
INDEX_FILE = "vectors.faiss.npz"
DEFAULT_USER = "default"
MAX_K = 1000



class Memory:
    """Long-term memory for one store (a directory holding ``memory.db``).

    >>> m = Memory(path="/tmp/mem")                              # doctest: +SKIP
    >>> m.add("I moved to Lisbon in May", user_id="ana")          # doctest: +SKIP
    >>> m.search("where does Ana live?", user_id="ana")[0].text   # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        embedder: str | Embedder | None = None,
        config: Config | None = None,
        **settings: Any,
    ) -> None:
        self.home = resolve_home(path)
        if config is None:
            config = Config.load(self.home, **settings)
        elif settings:
            config = Config.from_dict({**config.to_dict(), **settings})
        if embedder is not None and isinstance(embedder, str):
            config = replace(config, embedder=embedder)
        self.config = config
        self.home.mkdir(parents=True, exist_ok=True)  # after the settings passed their checks
        self._lock = threading.RLock()
        self.cycle_lock = threading.Lock()  # sleep cycles run one at a time (lifecycle/sleep.py)
        # By user: (vector epoch when looked, topics or None); see _topics_of.
        self._topics: dict[str, tuple[int, topics.Topics | None]] = {}
        self.store = SQLiteStore(self.home / DB_FILE, config.durability)
        self.store.entity_extractor = entities.extract
        base = get_embedder(embedder if embedder is not None else config.embedder)
        self.store.bind_embedder(base.name, base.dim)
        self.store.bind_vector_tier(config.vector_tier, base.dim)
        self.embedder: Embedder = base
        self._cache: EmbeddingCache | None = None
        # A noised store keeps no clean vectors: its own cache would hold them. A shared
        # cache file (embed_cache_path) is the caller's choice and stays.
        if config.embed_cache and (config.embed_cache_path or not config.vector_noise):
            if config.embed_cache_path:
                self._cache = EmbeddingCache.open(config.embed_cache_path)
            else:
                self._cache = EmbeddingCache(self.store.conn, self.store.lock)
            self.embedder = CachedEmbedder(base, self._cache)
        self.dim = base.dim
        self._saved_epoch: int | None = None  # the epoch of the index file on disk
        # Runs a search's BM25 query while FAISS scans: SQLite and FAISS both release the
        # GIL, so the two overlap.
        self._pool: ThreadPoolExecutor | None = None
        # Writes a search causes (access counts) run here, after the search returns: a
        # search must never wait for SQLite's write lock, which a sleep cycle or another
        # process may hold for a while.
        self._writer: ThreadPoolExecutor | None = None
        self._background_errors: list[Exception] = []
        self.index = self._open_index()
        self.controller = Controller.load(self.store, config.controller_implicit_weight)
        self._inverter: Any = False  # loaded on first use; None when there is none
        self._ranker: tuple[str, learned_stage.Ranker] | None = None
        # Rowids the last sleep cycle predicted per user (latentmem/lifecycle/preload.py).
        self.preloaded: dict[str, set[int]] = {}
        self._closed = False

    # -- lifecycle ------------------------------------------------------------

    def _open_index(self) -> FaissIndex:
        path = self.home / INDEX_FILE
        index = FaissIndex.load(path, self.dim, self.store.codec)
        epoch = self.store.vector_epoch()
        if index is not None and index.epoch == epoch and index.count() == self.store.count():
            self._saved_epoch = epoch
            return index
        return self._rebuild_index(epoch)

    def _rebuild_index(self, epoch: int | None = None) -> FaissIndex:
        index = FaissIndex(self.dim, self.store.codec)
        with self._lock:
            index.epoch = self.store.vector_epoch() if epoch is None else epoch
            for user, rowids, vectors in self.store.iter_vectors():
                index.add(user, rowids, vectors)
        return index

    def _sync_index(self) -> None:
        """Rebuild when another process changed the vectors since we last looked, or when
        the store's PQ codebook was trained since the index was built."""
        if self.store.vector_epoch() != self.index.epoch or self.index.stale:
            self.index = self._rebuild_index()

    def flush(self) -> None:
        """Persist the vector index (the store itself is always durable). An index that has
        not changed since it was loaded or saved is not written again: at 1M memories that
        is 1.5 GB on every close."""
        with self._lock:
            self._sync_index()
            path = self.home / INDEX_FILE
            if not self.index.persistent:  # compact tiers rebuild it from the store
                path.unlink(missing_ok=True)
                return
            if self.index.epoch == self._saved_epoch and path.exists():
                return
            self.index.save(path)
            self._saved_epoch = self.index.epoch

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if self._writer is not None:
                self._writer.shutdown(wait=True)
            self.flush()
            self.store.close()
            if self._cache is not None and self._cache.conn is not self.store.conn:
                self._cache.conn.close()
            self._closed = True

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- write path ---------------------------------------------------------------

    def add(
        self,
        content: Content,
        user_id: str | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        event_time: object = None,
        metadata: Mapping[str, Any] | None = None,
        role: str | None = None,
        speaker: str | None = None,
        type: str | None = None,
        importance: float | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        supersedes: str | Sequence[str] | None = None,
    ) -> Receipt:
        """Remember text, a message, or a list of messages. All or nothing.

        Messages are dicts with ``role`` and ``content`` (or ``text``), and
        optionally ``name``/``speaker``, ``event_time``/``timestamp`` and
        ``metadata``. Consecutive items are linked by ``next`` edges, and the
        first is linked to the session's previous last turn.

        ``supersedes``: ids of this user's memories that the new one replaces ("I moved
        to Porto" after "I live in Lisbon"). They are kept, not overwritten: each gets
        ``valid_to`` = the new memory's event time and ``superseded_by``, and a
        ``supersedes`` edge links new to old. Searches rank them lower, and a search
        ``as_of`` a date before the change still sees them as current.
        """
        t0 = time.perf_counter()
        user = check_scope_value("user_id", DEFAULT_USER if user_id is None else user_id)
        assert user is not None
        agent = check_scope_value("agent_id", agent_id)
        session = check_scope_value("session_id", session_id)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidInputError(f"metadata must be a dict, found {metadata.__class__.__name__}")
        if importance is not None and not (
            isinstance(importance, int | float) and 0.0 <= importance <= 1.0
        ):
            raise InvalidInputError(f"importance must be a number in [0, 1], found {importance!r}")
        if type is not None and (not isinstance(type, str) or not type.strip()):
            raise InvalidInputError(f"type must be a non-empty string, found {type!r}")
        items = normalise_items(
            content,
            {
                "event_time": parse_time(event_time),
                "role": role,
                "speaker": speaker,
            },
            self.config.max_batch,
            self.config.max_text_chars,
        )
        if vector is not None:
            if len(items) != 1:
                raise InvalidInputError("a vector can only be given with a single text")
            given = check_vector(vector, self.dim)
        replaced = self._superseded(supersedes, user)
        now = datetime.now(UTC)
        # Expand items into records (long texts become several chunks).
        pieces: list[tuple[dict[str, Any], str, int, int]] = []
        for item in items:
            is_message = item.get("is_message", False) or item.get("role") is not None
            chunks = (
                [item["text"]]
                if is_message or vector is not None
                else segment.chunk(item["text"], self.config.chunk_tokens)
            )
            for ci, text in enumerate(chunks):
                pieces.append((item, text, ci, len(chunks)))
        index_texts = [index_text_for(text, item.get("speaker")) for item, text, _, _ in pieces]
        t_valid = time.perf_counter()
        cached_before = getattr(self.embedder, "hits", 0)
        if vector is not None:
            vectors = given.reshape(1, -1)
        else:
            vectors = self.embedder.embed_batch(index_texts)
            if not np.isfinite(vectors).all():
                raise InvalidInputError("the embedder returned NaN or infinity; nothing was stored")
        cached = getattr(self.embedder, "hits", 0) - cached_before
        vectors = self._noised(vectors)
        t_embed = time.perf_counter()

        texts = [text for _, text, _, _ in pieces]
        learned = iter(self.controller.score_new(
            self.store, user, session, texts, [item.get("role") for item, _, _, _ in pieces], vectors,
        ) if self.config.controller else [segment.importance_prior(text) for text in texts])
        records: list[tuple[Record, str]] = []
        for (item, text, ci, nchunks), itext, vec in zip(pieces, index_texts, vectors, strict=True):
            meta = dict(metadata or {})
            meta.update(item.get("metadata") or {})
            if nchunks > 1:
                meta.update({"chunk": ci, "chunks": nchunks})
            rtype = type or segment.derive_type(text, item.get("role"))
            rec = Record(
                id=new_id(),
                user_id=user,
                agent_id=agent,
                session_id=session,
                level="turn",
                text=text,
                title=segment.derive_title(text),
                type=rtype,
                summary=segment.derive_summary(text),
                metadata=meta,
                role=item.get("role"),
                speaker=item.get("speaker"),
                event_time=item.get("event_time") or now,
                created_at=now,
                updated_at=now,
                importance=float(importance) if importance is not None else next(learned),
                content_hash=content_hash(text),
                vector=vec,
            )
            records.append((rec, itext))
        if self.config.mode == "lossy":
            records = self._lossy(records)
        edges = [
            Edge(a.id, b.id, "next", 1.0, now)
            for (a, _), (b, _) in zip(records, records[1:], strict=False)
        ]
        with self._lock:
            if session is not None:
                prev = self.store.last_in_session(Scope(user, agent, session))
                if prev is not None:
                    edges.insert(0, Edge(prev, records[0][0].id, "next", 1.0, now))
            by_id = {r.id: r for r, _ in records}
            for e in [e for e in edges if e.type == "next"]:
                way = causal.direction(by_id[e.dst].text or "")
                if way:
                    src, dst = (e.src, e.dst) if way > 0 else (e.dst, e.src)
                    edges.append(Edge(src, dst, "causal", 1.0, now))
            self._sync_index()
            if replaced:
                newest = records[-1][0]
                edges += [Edge(newest.id, old, "supersedes", 1.0, now) for old in replaced]
            rowids = self.store.insert(records, edges, supersede=replaced)
            t_store = time.perf_counter()
            self.index.add(user, np.asarray(rowids, dtype=np.int64), vectors)
            self.index.epoch = self.store.vector_epoch()
        t_index = time.perf_counter()
        return Receipt(
            ids=[r.id for r, _ in records],
            timings_ms={
                "validate": (t_valid - t0) * 1e3,
                "embed": (t_embed - t_valid) * 1e3,
                "store": (t_store - t_embed) * 1e3,
                "index": (t_index - t_store) * 1e3,
                "total": (t_index - t0) * 1e3,
            },
            cached_embeddings=cached,
        )

    def _noised(self, vectors: np.ndarray) -> np.ndarray:
        """Stored vectors with ``config.vector_noise`` (fresh Gaussian noise each time)."""
        scale = self.config.vector_noise
        if not scale:
            return vectors
        noisy = vectors + scale * np.random.default_rng().standard_normal(vectors.shape)
        return (noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)).astype(np.float32)

    def _lossy(self, records: list[tuple[Record, str]]) -> list[tuple[Record, str]]:
        """``mode="lossy"``: keep vectors and metadata only. Nothing derived from the text
        is stored (title, summary, content hash, full text, entity mentions); the summary
        holds the inverter's reconstruction when one is shipped, and hits show it marked
        as reconstructed."""
        from latentmem.lifecycle.actions import reconstruct

        recon = reconstruct(self, np.stack([r.vector for r, _ in records if r.vector is not None]))
        return [(replace(r, text=None, title="", summary=text, content_hash=""), "")
                for (r, _), text in zip(records, recon, strict=True)]

    def _superseded(self, supersedes: str | Sequence[str] | None, user: str) -> list[str]:
        if supersedes is None:
            return []
        ids = [supersedes] if isinstance(supersedes, str) else list(supersedes)
        if not all(isinstance(i, str) and i for i in ids):
            raise InvalidInputError("supersedes must be a memory id or a list of ids")
        for rid in ids:
            self._owned(rid, user)  # NotFoundError for unknown ids and other users' memories
        return list(dict.fromkeys(ids))

    def update(
        self,
        id: str,
        text: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        event_time: object = None,
        importance: float | None = None,
        title: str | None = None,
        type: str | None = None,
        user_id: str | None = None,
    ) -> Record:
        """Change a memory. New text is re-embedded and re-indexed; history keeps the old text.

        With ``user_id``, a memory of another user is treated as absent.
        """
        changes: dict[str, Any] = {}
        if text is not None:
            item = normalise_items(text, {}, 1, self.config.max_text_chars)[0]
            changes["text"] = item["text"]
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise InvalidInputError(
                f"metadata must be a dict, found {metadata.__class__.__name__}"
            )
            changes["metadata"] = dict(metadata)
        if event_time is not None:
            changes["event_time"] = parse_time(event_time)
        if importance is not None:
            if not (isinstance(importance, int | float) and 0.0 <= importance <= 1.0):
                raise InvalidInputError(f"importance must be in [0, 1], found {importance!r}")
            changes["importance"] = float(importance)
        if title is not None:
            changes["title"] = str(title)
        if type is not None:
            changes["type"] = str(type)
        if not changes:
            raise InvalidInputError(
                "nothing to update: give text, metadata, event_time, importance, title or type"
            )
        with self._lock:
            old = self._owned(id, user_id)
            index_text = vector = None
            if "text" in changes:
                new_text = changes["text"]
                index_text = index_text_for(new_text, old.record.speaker)
                vector = self.embedder.embed_batch([index_text])[0]
                if not np.isfinite(vector).all():
                    raise InvalidInputError("the embedder returned NaN or infinity; nothing changed")
                vector = self._noised(vector.reshape(1, -1))[0]
                changes.setdefault("title", segment.derive_title(new_text))
                changes["summary"] = segment.derive_summary(new_text)
                changes["content_hash"] = content_hash(new_text)
            self._sync_index()
            new = self.store.update(id, changes, index_text=index_text, vector=vector)
            if vector is not None:
                user = new.record.user_id
                self.index.remove(user, np.array([new.rowid]))
                self.index.add(user, np.array([new.rowid]), vector.reshape(1, -1))
                self.index.epoch = self.store.vector_epoch()
        return new.record

    def delete(self, ids: str | Sequence[str], *, user_id: str | None = None) -> int:
        """Delete memories for good, archived ones included, leaving no trace: the record,
        its vector (store, index and index file), full-text entries (purged, not just
        marked), cached embedding, the text kept in history and in undo payloads, and the
        merges derived from it (deleted; a merge that keeps two or more other sources is
        derived again from them). Unknown ids (or, with ``user_id``, another user's) raise
        and delete nothing. Deletions are final: they cannot be undone."""
        from latentmem.lifecycle import purge

        id_list = [ids] if isinstance(ids, str) else list(ids)
        if not id_list:
            raise InvalidInputError("no ids given")
        with self._lock:
            count = purge.delete(self, id_list, user_id)
        return count

    def forget(self, id: str, *, reason: str = "forgotten on request", cycle: str | None = None,
               user_id: str | None = None) -> None:
        """Delete one memory for good, journaled with its reason (see ``delete``)."""
        from latentmem.lifecycle import journal

        row = self._owned(id, user_id)
        self.delete([id])
        with self.store.transaction() as conn:
            journal.log(conn, "forget", id, row.record.user_id, reason, None, cycle)

    def delete_all(self, user_id: str) -> int:
        user = check_scope_value("user_id", user_id, required=True)
        ids = [r.record.id for r in self.store.list_rows(Scope(user or DEFAULT_USER))]
        return self.delete(ids) if ids else 0

    def feedback(self, id: str, useful: bool, *, user_id: str | None = None) -> float:
        """Say whether a memory was useful. The importance controller learns from it
        (latentmem/lifecycle/controller.py) and the memory's own importance moves towards
        the answer; returns that new importance. With ``user_id``, another user's memory is
        treated as absent."""
        if not isinstance(useful, bool):
            raise InvalidInputError(f"useful must be True or False, found {useful!r}")
        with self._lock:
            return self.controller.feedback(self.store, self._owned(id, user_id), useful)

    # -- read path ----------------------------------------------------------------

    def _owned(self, id: object, user_id: str | None, with_vector: bool = False) -> StoredRow:
        """The row for ``id``; another user's memory is reported exactly like a missing one."""
        if not isinstance(id, str):
            raise InvalidInputError(f"id must be a string, found {id.__class__.__name__}")
        user = check_scope_value("user_id", user_id)
        row = self.store.get_row(id, with_vector=with_vector)
        if user is not None and row.record.user_id != user:
            raise NotFoundError(f"no memory with id {id!r}")
        return row

    def get(self, id: str, include_vector: bool = False, *, user_id: str | None = None) -> Record:
        return self._owned(id, user_id, include_vector).record

    def history(self, id: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """Every ADD/UPDATE/DELETE of a memory. Deleted memories keep their events, not their
        text; with ``user_id`` only a live memory of that user is shown."""
        if user_id is not None:
            self._owned(id, user_id)
        events = self.store.history(id)
        if not events:
            raise NotFoundError(f"no memory with id {id!r} has ever existed here")
        return events

    def edges(self, id: str, *, user_id: str | None = None) -> list[Edge]:
        self._owned(id, user_id)
        return self.store.edges_of(id)

    def all(
        self,
        user_id: str | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        include_vectors: bool = False,
    ) -> list[Record]:
        scope = self._scope(user_id, agent_id, session_id)
        rows = self.store.list_rows(scope, limit, offset, with_vector=include_vectors, order="time")
        return [r.record for r in rows]

    def _scope(self, user_id: str | None, agent_id: str | None, session_id: str | None) -> Scope:
        user = check_scope_value("user_id", DEFAULT_USER if user_id is None else user_id)
        assert user is not None
        return Scope(
            user,
            check_scope_value("agent_id", agent_id),
            check_scope_value("session_id", session_id),
        )

    def search(
        self,
        query: str,
        user_id: str | None = None,
        *,
        k: int = 10,
        agent_id: str | None = None,
        session_id: str | None = None,
        weights: ScoringWeights | None = None,
        as_of: object = None,
        track_access: bool | None = None,
        query_vector: Sequence[float] | np.ndarray | None = None,
        learned: bool | None = None,
        now: object = None,
    ) -> list[Hit]:
        """Hybrid search inside one scope. Each Hit carries its score components.

        ``query_vector`` skips embedding the query (the caller embedded it with
        this store's embedder, as given: the speaker names that a search takes out of
        the text it embeds stay in); the text is still used for BM25. ``learned``
        overrides ``config.learned_rerank`` for this call. ``now``: when the query is
        asked (a datetime, ISO-8601 or Unix time); relative time in it ("last week",
        "10 days ago") and recency are read from that moment. Without it: ``as_of``,
        else the latest event time in the scope. Unlike ``as_of`` it hides nothing.
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query is empty")
        if len(query) > self.config.max_text_chars:
            raise InputTooLargeError(
                f"query is {len(query)} characters; the limit is {self.config.max_text_chars}"
            )
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be an integer in [1, {MAX_K}], found {k!r}")
        scope = self._scope(user_id, agent_id, session_id)
        reference = parse_time(as_of, "as_of")
        if reference is not None:
            scope = replace(scope, until=reference.timestamp())
        asked = parse_time(now, "now")
        if asked is not None:
            reference = asked
        weights = weights or self.config.weights
        if query_vector is not None:
            qvec = check_vector(query_vector, self.dim, "query_vector")
        n = max(self.config.candidates, k)
        sparse = None
        with self._lock:
            named = hybrid.named_speakers(query, self.store.speakers(scope))
            window = None
            if self.config.time_boost > 0:
                anchor = reference
                if anchor is None:
                    latest = self.store.latest_event_time(scope)
                    anchor = from_ts(latest) if latest is not None else None
                window = parse_query_time(query, anchor)
                if window is None and self.config.anchor_days > 0:
                    window = self._event_window(query, scope)
            if self.config.use_bm25:
                # BM25 needs only the text: it runs on the other core while the query is
                # embedded on one thread (see encode/minilm.py), then while FAISS scans.
                # 100k memories, 2 cores: p95 35.9 -> 21.6 ms, against embedding on two
                # threads with BM25 started after it (which, with a two-thread embedding,
                # had been the faster order: p50 52 vs 57 ms).
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="latentmem-bm25")
                sparse = self._pool.submit(self.store.bm25, query, scope, n)
        if query_vector is None:
            embedded = query if self.config.speaker_names_in_vector else hybrid.dense_text(query, named)
            qvec = self.embedder.embed_batch([embedded])[0]
        with self._lock:
            self._sync_index()
            cands = hybrid.retrieve(
                self.store, self.index, scope, query, qvec, self.config, n, window, sparse, named,
            )
        if not cands:
            return []
        if reference is None:
            times = [c.row.event_time for c in cands if c.row.event_time is not None]
            reference = from_ts(max(times)) if times else None
        cfg = self.config
        topic_scores = None
        if cfg.topic_weight > 0:
            kept = self._topics_of(scope.user_id)
            if kept is not None:
                sids = sorted({c.row.session_id for c in cands if c.row.session_id is not None})
                topic_scores = topics.scores(kept, self.store, scope, sids, qvec)
        rerank.session_scale(self.store, scope, qvec, cands, cfg, topic_scores)
        factors = rescore_many(
            [c.row.event_time for c in cands], [c.row.importance for c in cands],
            [c.row.access_count for c in cands], [c.relevance for c in cands], weights,
            reference.timestamp() if reference is not None else None,
        )
        scored: list[tuple[float, str, int, dict[str, float]]] = []
        for cand, (score, rel, rec, imp, acc) in zip(cands, factors, strict=True):
            parts = {"relevance": rel, "recency": rec, "importance": imp, "access": acc,
                     **cand.parts, "final": score}
            scored.append((score, cand.row.id, cand.row.rowid, parts))
        scored.sort(key=lambda x: (-x[0], x[1]))
        tokens = getattr(self.embedder, "token_vectors", None)
        if cfg.maxsim_weight > 0 and tokens is not None and scored:
            scored = self._late_interaction(query, scored, tokens)
        diversity = cfg.session_diversity
        if cfg.listing_diversity > 0 and is_listing(query):
            diversity += cfg.listing_diversity
        if diversity > 0 or cfg.mmr > 0:
            by_rowid = {c.row.rowid: c.row for c in cands}
            rows = [by_rowid[x[2]] for x in scored]
            vectors = np.stack([r.vector for r in rows]) if cfg.mmr > 0 else None
            order = rerank.diversify([x[0] for x in scored], [r.session_id for r in rows],
                                     vectors, k, diversity, cfg.mmr, max(cfg.rerank_depth, k))
            scored = [scored[i] for i in order]
        if cfg.learned_rerank if learned is None else learned:
            scored = learned_stage.rerank(scored, {c.row.rowid: c.row for c in cands}, self.ranker())
        top = scored[:k]
        records = self.store.get_rows_by_rowid([rowid for _, _, rowid, _ in top])
        hits = [Hit(records[rowid].record, score, parts) for score, _, rowid, parts in top
                if rowid in records]
        if self.config.track_access if track_access is None else track_access:
            self.in_background(self.store.touch, [rowid for _, _, rowid, _ in top],
                               time.time(), scope.user_id)
        return hits

    def _event_window(self, query: str, scope: Scope) -> TimeWindow | None:
        """"before the trip to Oslo": the window near the memory that best matches "the trip
        to Oslo" (BM25, which needs no model call), or None (retrieve/timequery.py)."""
        found = event_anchor(query)
        if found is None:
            return None
        relation, phrase = found
        hits = self.store.bm25(phrase, scope, 5)
        times = self.store.event_times([rowid for rowid, _ in hits])
        for rowid, _ in hits:
            when = from_ts(times.get(rowid))
            if when is not None:
                return anchored_window(relation, when, self.config.anchor_days, phrase)
        return None

    def _late_interaction(
        self,
        query: str,
        scored: list[tuple[float, str, int, dict[str, float]]],
        tokens: Any,
    ) -> list[tuple[float, str, int, dict[str, float]]]:
        """Add ``maxsim_weight`` x min-max-normalised MaxSim to the top ``maxsim_depth``."""
        depth = min(len(scored), self.config.maxsim_depth)
        head = scored[:depth]
        texts = self.store.index_texts([rowid for _, _, rowid, _ in head])
        vecs = tokens([query, *[texts.get(rowid, "") for _, _, rowid, _ in head]])
        sims = rerank.maxsim(vecs[0], vecs[1:])
        lo, hi = float(sims.min()), float(sims.max())
        rescored = []
        for (score, rid, rowid, parts), sim in zip(head, sims, strict=True):
            value = self.config.maxsim_weight * ((sim - lo) / (hi - lo) if hi > lo else 0.0)
            parts = {**parts, "maxsim": float(sim), "final": score + value}
            rescored.append((score + value, rid, rowid, parts))
        rescored.sort(key=lambda x: (-x[0], x[1]))
        return rescored + scored[depth:]

    def context(
        self,
        query: str,
        user_id: str | None = None,
        *,
        budget_tokens: int = 1000,
        agent_id: str | None = None,
        session_id: str | None = None,
        k: int | None = None,
        as_of: object = None,
        now: object = None,
    ) -> Context:
        """Pack the best memories for ``query``, verbatim and dated, into a token budget.
        ``as_of`` and ``now`` as in ``search``."""
        if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < 1:
            raise InvalidInputError(
                f"budget_tokens must be a positive integer, found {budget_tokens!r}"
            )
        k = k or min(MAX_K, max(20, budget_tokens // 10))
        # The learned stage is fitted for precision at the top of a ranking and prefers
        # long memories; a budget is better spent on more of them (see learned.py).
        hits = self.search(
            query, user_id, k=k, agent_id=agent_id, session_id=session_id, as_of=as_of,
            track_access=False, learned=self.config.learned_rerank and self.config.learned_in_context,
            now=now,
        )
        ctx = pack(query, hits, budget_tokens, dates=self.config.context_dates and asks_when(query))
        # Learned from after the caller has its context: a search path never writes.
        self.in_background(self.controller.observe_context, self.store, ctx)
        return ctx

    # -- the topic level (latentmem/retrieve/topics.py) ---------------------------------

    def _topics_of(self, user_id: str) -> topics.Topics | None:
        """The user's topics: kept in memory, else read from the store, else built now (in
        memory only: a search writes nothing) when the user is small enough; a bigger one
        waits for a sleep cycle to build them. "None" is remembered until the store's
        vectors change."""
        epoch = self.store.vector_epoch()
        seen = self._topics.get(user_id)
        if seen is not None and (seen[1] is not None or seen[0] == epoch):
            return seen[1]
        found = topics.load(self.store, user_id)
        if found is None and self.store.session_count(user_id) <= topics.LAZY_SESSIONS:
            found = topics.build(self.store, user_id)
        self._topics[user_id] = (epoch, found)
        return found

    def forget_topics(self, user_id: str) -> None:
        """Drop the in-memory copy (the store's changed); the next search reads it again."""
        self._topics.pop(user_id, None)

    def topics(self, user_id: str | None = None, *, rebuild: bool = False) -> list[dict[str, Any]]:
        """The user's sessions rolled up into topics, each with its sessions and key
        memories. ``rebuild``: build them again now and keep them (else a sleep cycle does)."""
        user = self._scope(user_id, None, None).user_id
        kept = self._topics_of(user) if not rebuild else None
        if kept is None:
            kept = topics.refresh(self.store, user)
            self.forget_topics(user)
        return [] if kept is None else topics.describe(kept, self.store)

    # -- lifecycle (latentmem/lifecycle/) ---------------------------------------------

    def in_background(self, fn: Any, *args: Any) -> None:
        """Run a bookkeeping write after the caller returns, in order; ``settle()`` waits
        for all of them. Nobody is told these writes landed (access counts, what a context
        teaches the controller), so they are not fsynced: a synced commit holds the store's
        lock ~0.5 ms longer, which the next search would wait out."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="latentmem-writer")

        def run() -> None:
            try:
                with self.store.unsynced():
                    fn(*args)
            except Exception as exc:  # noqa: BLE001 - kept for settle() to report
                self._background_errors.append(exc)

        self._writer.submit(run)

    def settle(self) -> None:
        """Wait until the bookkeeping writes of earlier searches are stored."""
        if self._writer is not None:
            self._writer.submit(lambda: None).result()
        if self._background_errors:
            errors, self._background_errors = self._background_errors, []
            raise errors[0]

    def ranker(self) -> learned_stage.Ranker:
        """The fitted last-stage model (``config.ranker_path``, else the shipped one)."""
        path = self.config.ranker_path
        if path is None:
            return learned_stage.default_ranker()
        if self._ranker is None or self._ranker[0] != path:
            self._ranker = (path, learned_stage.Ranker.load(path))
        return self._ranker[1]

    def inverter(self) -> Any:
        """The embedding inverter for this store's embedder, or None when none is shipped."""
        if self._inverter is False:
            try:
                from latentmem.invert import load_default
            except ImportError:
                self._inverter = None
            else:
                inv = load_default()
                self._inverter = inv if inv is not None and inv.embedder == self.embedder.name else None
        return self._inverter

    def sleep(self, budget: float | None = None, *, phases: Sequence[str] | None = None) -> Any:
        """One sleep cycle (consolidate, forget, preload, optimise) within ``budget``
        seconds; returns its report. Every action it takes is journaled (``explain``)."""
        from latentmem.lifecycle import sleep

        return sleep.run_cycle(self, budget, tuple(phases) if phases else sleep.PHASES)

    def start_sleeping(self, every: float, budget: float | None = None) -> Any:
        """Run sleep cycles in a background thread every ``every`` seconds; returns the
        ``Sleeper`` (call ``stop()``)."""
        from latentmem.lifecycle import sleep

        return sleep.Sleeper(self, every, budget).start()

    def explain(self, id: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """What the lifecycle did to a memory (live, archived or deleted) and why."""
        from latentmem.lifecycle import journal

        if not isinstance(id, str) or not id:
            raise InvalidInputError("id must be a non-empty string")
        events = journal.for_record(self.store, id)
        if user_id is not None:
            events = [e for e in events if e.user_id == user_id]
        if not events:
            raise NotFoundError(f"the lifecycle has no event about {id!r}")
        return [e.to_dict() for e in events]

    def undo(self, event: int, *, user_id: str | None = None) -> dict[str, Any]:
        """Reverse a journaled lifecycle action (not deletions; see ``explain``). With
        ``user_id``, only an event about that user's memories: another user's is reported
        exactly like a missing one."""
        from latentmem.lifecycle import actions

        return actions.undo(self, event, user_id).to_dict()

    def demote(self, ids: str | Sequence[str], *, user_id: str | None = None) -> list[str]:
        """Make memories lossy for good: the text is dropped, the vector and metadata kept
        (search still finds them by meaning; text is reconstructed by the inverter when
        one is shipped). Returns the ids that had text."""
        from latentmem.lifecycle import actions

        id_list = [ids] if isinstance(ids, str) else list(ids)
        if not id_list:
            raise InvalidInputError("no ids given")
        for rid in id_list:
            self._owned(rid, user_id)
        done = actions.demote(self, id_list, "demoted on request")
        if done:  # final: the dropped words leave the full-text index now, not next cycle
            self.store.purge_fts()
            self.store.checkpoint()
        return done

    def merge(self, ids: Sequence[str], weights: Sequence[float] | None = None, *,
              mode: str = "lossless", originals: str = "keep",
              user_id: str | None = None) -> Record:
        """Merge memories of one user into a new one with ``sources`` and ``merged_from``
        edges. ``lossless``: extractive union of the texts; ``lossy``: normalised weighted
        mean of the vectors (text reconstructed when an inverter is shipped).
        ``originals``: keep, demote or archive them."""
        from latentmem.lifecycle import actions

        return actions.merge(self, ids, weights=weights, mode=mode, originals=originals,
                             user_id=user_id)

    def _required_inverter(self) -> Any:
        """The shipped inverter (``MissingExtraError`` without one), if it reads this store's
        vectors."""
        from latentmem import invert

        inverter = invert.require_default()
        if self.embedder.name != inverter.embedder:
            raise InvalidInputError(f"the inverter reads {inverter.embedder} vectors; this store "
                                    f"holds {self.embedder.name} vectors")
        return inverter

    def invert(self, vector_or_id: str | Sequence[float] | np.ndarray, *, steps: int | None = None,
               user_id: str | None = None) -> str:
        """The text latentmem's trained inverter reads back from a vector, or from the stored
        vector of memory ``id``, after ``steps`` correction rounds (default
        ``latentmem.invert.DEFAULT_STEPS``). docs/inversion.md says how close it gets."""
        from latentmem import invert

        _check_steps(steps, none_ok=True)
        if isinstance(vector_or_id, str):
            vector = self._owned(vector_or_id, user_id, with_vector=True).record.vector
        else:
            vector = check_vector(vector_or_id, self.dim, "vector")
        inverter = self._required_inverter()
        return invert.invert_one(inverter, np.asarray(vector, dtype=np.float32),
                                 invert.DEFAULT_STEPS if steps is None else steps)

    def audit_inversion(self, *, user_id: str | None = None, limit: int = 200, steps: int = 0,
                        seed: int = 0) -> dict[str, Any]:
        """How much of one user's stored text the inverter reads back from the stored vectors
        alone: the privacy risk of leaking the vectors (Morris et al. 2023). Up to ``limit``
        memories that still hold text, drawn at random (``seed``), are inverted with ``steps``
        correction rounds and compared with their text (token F1, BLEU, exact match, x100)
        and their vector (cosine of the re-embedded inversion). ``config.vector_noise``
        is the dial that lowers it."""
        from latentmem.invert import metrics

        user = check_scope_value("user_id", DEFAULT_USER if user_id is None else user_id) or DEFAULT_USER
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError(f"limit must be a positive integer, found {limit!r}")
        _check_steps(steps, none_ok=False)
        inverter = self._required_inverter()
        rowids = self.store.rowids_in_scope(Scope(user), with_text=True)
        with_text = len(rowids)
        if with_text > limit:
            rowids = np.sort(np.random.default_rng(seed).choice(rowids, size=limit, replace=False))
        rows = [r for r in self.store.get_rows_by_rowid(rowids.tolist(), with_vector=True).values()
                if r.record.text and r.record.vector is not None]
        report: dict[str, Any] = {"user_id": user, "steps": steps, "with_text": with_text,
                                  "vector_noise": self.config.vector_noise,
                                  "bleu_impl": metrics.bleu_impl(),
                                  "vector_tier": self.store.codec.tier}
        if not rows:
            return {**report, "n": 0, "cosine": None, "token_f1": None, "bleu": None,
                    "exact": None, "examples": []}
        vectors = np.stack([np.asarray(r.record.vector, dtype=np.float32) for r in rows])
        texts = inverter.invert(vectors, steps)
        again = self.embedder.embed_batch(texts)
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        cosines = np.sum(again * unit, axis=1).tolist()
        refs = [r.record.text or "" for r in rows]
        f1 = [metrics.token_f1(h, t) for h, t in zip(texts, refs, strict=True)]
        best = sorted(range(len(rows)), key=lambda i: -f1[i])[:3]  # the most recovered
        return {**report, **metrics.scores(texts, refs, cosines),
                "examples": [{"id": rows[i].record.id, "text": refs[i], "inverted": texts[i],
                              "token_f1": round(100 * f1[i], 1)} for i in best]}

    def stats(self) -> dict[str, Any]:
        users = self.store.users()
        db = self.store.file_bytes()
        index_path = self.home / INDEX_FILE
        index_bytes = index_path.stat().st_size if index_path.exists() else 0
        total = sum(n for _, n in users)
        return {
            "home": str(self.home),
            "records": total,
            "users": len(users),
            "per_user": dict(users),
            "embedder": self.store.get_meta("embedder"),
            "dim": self.dim,
            "schema_version": self.store.schema_version,
            "vector_tier": self.store.codec.tier,
            "index_vectors": self.index.count(),
            "db_bytes": db,
            "index_bytes": index_bytes,
            # Everything on disk: the store and, in the fp32 tier, the index file.
            "bytes_per_memory": ((db + index_bytes) / total) if total else None,  # JSON has no NaN
        }

    def convert_vectors(self, tier: str) -> int:
        """Re-encode every stored vector into another tier (see latentmem/store/codec.py)
        and make it this store's tier. Towards a smaller tier this loses precision for
        good. Returns the number of vectors re-encoded."""
        with self._lock:
            count = self.store.convert_vectors(tier)
            self.index = self._rebuild_index()
            self.config = replace(self.config, vector_tier=tier)
        return count

    # -- bulk import (used by the formats module) ---------------------------------

    def import_records(self, records: Sequence[Record], edges: Sequence[Edge] = (),
                       on_conflict: str = "error") -> int:
        """Insert fully formed records (ids, times and vectors kept) in one transaction.

        ``on_conflict``: ``error`` refuses the whole import if any id exists;
        ``skip`` leaves existing records as they are.
        """
        if on_conflict not in ("error", "skip"):
            raise InvalidInputError(f"on_conflict must be 'error' or 'skip', found {on_conflict!r}")
        rows: list[tuple[Record, str]] = []
        for pos, rec in enumerate(records):
            if rec.vector is None:
                raise InvalidInputError(f"record {pos} ({rec.id}) has no vector")
            rec.vector = check_vector(rec.vector, self.dim, f"record {pos} ({rec.id}) vector") \
                if not is_unit_f32(rec.vector, self.dim) else rec.vector
            check_scope_value("user_id", rec.user_id, required=True)
            if rec.text is not None and not isinstance(rec.text, str):
                raise InvalidInputError(f"record {pos} ({rec.id}): text must be a string or null")
            rows.append((rec, index_text_for(rec.text or "", rec.speaker)))
        with self._lock:
            if on_conflict == "skip":
                existing = set()
                for rec, _ in rows:
                    try:
                        self.store.get_row(rec.id)
                        existing.add(rec.id)
                    except NotFoundError:
                        pass
                rows = [(r, t) for r, t in rows if r.id not in existing]
            self._sync_index()
            rowids = self.store.insert(rows, edges, history_event="IMPORT")
            for (rec, _), rowid in zip(rows, rowids, strict=True):
                assert rec.vector is not None
                self.index.add(rec.user_id, np.array([rowid]), rec.vector.reshape(1, -1))
            self.index.epoch = self.store.vector_epoch()
        return len(rows)

    def export_rows(self, user_id: str | None = None) -> tuple[list[Record], list[Edge]]:
        scope = None if user_id is None else self._scope(user_id, None, None)
        rows: list[StoredRow] = self.store.list_rows(scope, with_vector=True)
        return [r.record for r in rows], self.store.all_edges(user_id)


def _check_steps(steps: object, none_ok: bool) -> None:
    if isinstance(steps, bool) or not (none_ok and steps is None
                                       or isinstance(steps, int) and 0 <= steps <= 10):
        raise InvalidInputError(f"steps must be an integer from 0 to 10, found {steps!r}")
