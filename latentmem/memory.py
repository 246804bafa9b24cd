"""Memory: the public facade. It checks a call's arguments, then hands the call to the
module that does the work, over the engine's ``Core`` (latentmem/core.py):
- writes: ``write.py`` (records built, embedded, stored, indexed);
- reads: ``retrieve/search.py`` (every stage of a search, and context packing);
- lifecycle: ``lifecycle/`` (sleep cycles, merges, demotion, true deletion, undo);
- inversion: ``invert/``.
It holds no retrieval stage and builds no record itself (docs/design.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.config import Config, ScoringWeights, resolve_home
from latentmem.core import DEFAULT_USER, INDEX_FILE, Core
from latentmem.encode.base import Embedder
from latentmem.errors import InputTooLargeError, InvalidInputError, NotFoundError
from latentmem.inputs import (
    Content,
    check_chars,
    check_count,
    check_id,
    check_ids,
    check_metadata,
    check_scope_value,
    check_share,
    check_vector,
    normalise_items,
)
from latentmem.retrieve import search as searching
from latentmem.retrieve.timeparse import parse_time
from latentmem.store import DB_FILE, redacted
from latentmem.store.base import Scope, Store
from latentmem.store.vector_index import VectorIndex
from latentmem.types import Context, Edge, Hit, Receipt, Record

__all__ = ["DB_FILE", "DEFAULT_USER", "INDEX_FILE", "MAX_K", "Memory"]

MAX_K = 1000


class Memory:
    """Long-term memory for one store: a folder holding a SQLite store (``memory.db``), or a
    PostgreSQL database given by URL (``Memory("postgresql://user@host/db")``).

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
            config = config.replace(**settings)
        if embedder is not None and isinstance(embedder, str):
            config = config.replace(embedder=embedder)
        if isinstance(self.home, Path):
            try:  # after the settings passed their checks
                self.home.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as exc:
                raise InvalidInputError(f"the store's home {str(self.home)!r} is not a folder "
                                        f"({exc.strerror}); expected a folder's path") from exc
        self.core = Core(self.home, config, embedder)

    # -- the parts, for tools and tests -----------------------------------------------

    @property
    def config(self) -> Config:
        return self.core.config

    @config.setter
    def config(self, config: Config) -> None:
        """Settings that may change while the store is open (retrieval, lifecycle)."""
        self.core.config = config

    @property
    def location(self) -> str:
        """Where the store lives, fit to print: a folder, or a URL without its password."""
        if isinstance(self.home, Path):
            return str(self.home)
        return redacted(self.home)

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def index(self) -> VectorIndex:
        return self.core.index

    @property
    def embedder(self) -> Embedder:
        return self.core.embedder

    @property
    def dim(self) -> int:
        return self.core.dim

    @property
    def controller(self) -> Any:
        return self.core.controller

    @property
    def preloaded(self) -> dict[str, set[int]]:
        return self.core.preloaded

    # -- lifecycle of the object ----------------------------------------------------------

    def flush(self) -> None:
        """Persist the vector index (the store itself is always durable)."""
        self.core.flush()

    def close(self) -> None:
        self.core.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settle(self) -> None:
        """Wait until the bookkeeping writes of earlier searches are stored."""
        self.core.settle()

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
        started = time.perf_counter()
        scope = self.core.scope(user_id, agent_id, session_id)
        metadata = check_metadata(metadata)
        if importance is not None and not (
            isinstance(importance, int | float) and 0.0 <= importance <= 1.0
        ):
            raise InvalidInputError(f"importance must be a number in [0, 1], found {importance!r}")
        if type is not None and (not isinstance(type, str) or not type.strip()):
            raise InvalidInputError(f"type must be a non-empty string, found {type!r}")
        if type is not None:
            check_chars(type, "type")
        storage = self.config.storage
        items = normalise_items(
            content, {"event_time": parse_time(event_time), "role": role, "speaker": speaker},
            storage.max_batch, storage.max_text_chars)
        given = None
        if vector is not None:
            if len(items) != 1:
                raise InvalidInputError("a vector can only be given with a single text")
            given = check_vector(vector, self.dim)
        from latentmem import write

        return write.add(self.core, items, user=scope.user_id, agent=scope.agent_id,
                         session=scope.session_id, metadata=metadata, type=type,
                         importance=importance, vector=given, supersedes=supersedes,
                         started=started)

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
        from latentmem import write

        changes = write.update_changes(text, metadata, event_time, importance, title, type,
                                       self.config.storage.max_text_chars)
        return write.update(self.core, id, changes, user_id)

    def delete(self, ids: str | Sequence[str], *, user_id: str | None = None) -> int:
        """Delete memories for good, archived ones included, leaving no trace: the record,
        its vector (store, index and index file), full-text entries (purged, not just
        marked), cached embedding, the text kept in history and in undo payloads, and the
        merges derived from it (deleted; a merge that keeps two or more other sources is
        derived again from them). Unknown ids (or, with ``user_id``, another user's) raise
        and delete nothing. Deletions are final: they cannot be undone."""
        from latentmem.lifecycle import purge

        id_list = check_ids(ids)
        with self.core.lock:
            return purge.delete(self.core, id_list, user_id)

    def forget(self, id: str, *, reason: str = "forgotten on request", cycle: str | None = None,
               user_id: str | None = None) -> None:
        """Delete one memory for good, journaled with its reason (see ``delete``)."""
        if not isinstance(reason, str):
            raise InvalidInputError(f"reason must be a string, found {reason.__class__.__name__}")
        check_chars(reason, "reason")
        if cycle is not None:
            check_id(cycle, "cycle")
        row = self.core.owned(id, user_id)
        self.delete([id])
        self.store.log_event("forget", id, row.record.user_id, reason, None, cycle)

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
        with self.core.lock:
            return self.controller.feedback(self.store, self.core.owned(id, user_id), useful)

    # -- read path ----------------------------------------------------------------

    def get(self, id: str, include_vector: bool = False, *, user_id: str | None = None) -> Record:
        return self.core.owned(id, user_id, include_vector).record

    def history(self, id: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """Every ADD/UPDATE/DELETE of a memory. Deleted memories keep their events, not their
        text; with ``user_id`` only a live memory of that user is shown."""
        check_id(id)
        if user_id is not None:
            self.core.owned(id, user_id)
        events = self.store.history(id)
        if not events:
            raise NotFoundError(f"no memory with id {id!r} has ever existed here")
        return events

    def edges(self, id: str, *, user_id: str | None = None) -> list[Edge]:
        self.core.owned(id, user_id)
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
        scope = self.core.scope(user_id, agent_id, session_id)
        if limit is not None:
            check_count("limit", limit, 0)
        check_count("offset", offset, 0)
        rows = self.store.list_rows(scope, limit, offset, with_vector=include_vectors, order="time")
        return [r.record for r in rows]

    def _query(self, query: object, user_id: str | None, agent_id: str | None,
               session_id: str | None, as_of: object, now: object) -> tuple[Scope, Any]:
        """A checked query's scope (limited by ``as_of``) and reference time."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query is empty")
        limit = self.config.storage.max_text_chars
        if len(query) > limit:
            raise InputTooLargeError(f"query is {len(query)} characters; the limit is {limit}")
        check_chars(query, "query")
        scope = self.core.scope(user_id, agent_id, session_id)
        reference = parse_time(as_of, "as_of")
        scope = searching.as_of(scope, reference)
        asked = parse_time(now, "now")
        return scope, asked if asked is not None else reference

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
        threshold: float | None = None,
    ) -> list[Hit]:
        """Hybrid search inside one scope. Each Hit carries its score components.

        ``query_vector`` skips embedding the query (the caller embedded it with
        this store's embedder, as given: the speaker names that a search takes out of
        the text it embeds stay in); the text is still used for BM25. ``learned``
        overrides ``config.retrieval.learned_rerank`` for this call. ``now``: when the
        query is asked (a datetime, ISO-8601 or Unix time); relative time in it ("last
        week", "10 days ago") and recency are read from that moment. Without it: ``as_of``,
        else the latest event time in the scope. Unlike ``as_of`` it hides nothing.
        ``threshold`` (0-1): only the hits whose calibrated ``relevance`` (the estimated
        probability that the memory helps answer the query) reaches it; none may.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be an integer in [1, {MAX_K}], found {k!r}")
        if weights is not None and not isinstance(weights, ScoringWeights):
            raise InvalidInputError(f"weights must be ScoringWeights, found {weights.__class__.__name__}")
        threshold = check_share("threshold", threshold)
        scope, reference = self._query(query, user_id, agent_id, session_id, as_of, now)
        qvec = None if query_vector is None else check_vector(query_vector, self.dim, "query_vector")
        return searching.search(self.core, query, scope, k, reference=reference, weights=weights,
                                qvec=qvec, learned=learned, track_access=track_access,
                                threshold=threshold)

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
        min_relevance: float | None = None,
    ) -> Context:
        """Pack the best memories for ``query``, verbatim and dated, into a token budget.
        ``as_of`` and ``now`` as in ``search``; ``min_relevance`` (0-1): pack only the
        memories whose calibrated relevance reaches it (an empty context is a valid answer:
        nothing in the store is relevant)."""
        if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < 1:
            raise InvalidInputError(
                f"budget_tokens must be a positive integer, found {budget_tokens!r}")
        k = k or min(MAX_K, max(20, budget_tokens // 10))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be an integer in [1, {MAX_K}], found {k!r}")
        min_relevance = check_share("min_relevance", min_relevance)
        scope, reference = self._query(query, user_id, agent_id, session_id, as_of, now)
        return searching.context(self.core, query, scope, budget_tokens, k, reference=reference,
                                 min_relevance=min_relevance)

    # -- the topic level (latentmem/retrieve/topics.py) ---------------------------------

    def topics(self, user_id: str | None = None, *, rebuild: bool = False) -> list[dict[str, Any]]:
        """The user's sessions rolled up into topics, each with its sessions and key
        memories. ``rebuild``: build them again now and keep them (else a sleep cycle does)."""
        from latentmem.retrieve import topics

        user = self.core.scope(user_id).user_id
        kept = self.core.topics_of(user) if not rebuild else None
        if kept is None:
            kept = topics.refresh(self.store, user)
            self.core.forget_topics(user)
        return [] if kept is None else topics.describe(kept, self.store)

    # -- lifecycle (latentmem/lifecycle/) ---------------------------------------------

    def sleep(self, budget: float | None = None, *, phases: Sequence[str] | None = None) -> Any:
        """One sleep cycle (consolidate, forget, preload, optimise) within ``budget``
        seconds; returns its report. Every action it takes is journaled (``explain``)."""
        from latentmem.lifecycle import sleep

        if phases is not None and (isinstance(phases, str) or not isinstance(phases, Sequence)
                                   or not all(isinstance(p, str) for p in phases)):
            raise InvalidInputError(f"phases must be a list of some of {list(sleep.PHASES)}, "
                                    f"found {phases.__class__.__name__}")
        return sleep.run_cycle(self.core, budget, tuple(phases) if phases else sleep.PHASES)

    def start_sleeping(self, every: float, budget: float | None = None) -> Any:
        """Run sleep cycles in a background thread every ``every`` seconds; returns the
        ``Sleeper`` (call ``stop()``)."""
        from latentmem.lifecycle import sleep

        return sleep.Sleeper(self.core, every, budget).start()

    def explain(self, id: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """What the lifecycle did to a memory (live, archived or deleted) and why."""
        check_id(id)
        events = self.store.events(record_id=id)
        if user_id is not None:
            events = [e for e in events if e.user_id == user_id]
        if not events:
            raise NotFoundError(f"the lifecycle has no event about {id!r}")
        return [e.to_dict() for e in events]

    def journal(self, limit: int = 50, *, user_id: str | None = None,
                cycle: str | None = None) -> list[dict[str, Any]]:
        """The newest lifecycle events (of one user's memories, or of one sleep cycle)."""
        check_count("limit", limit, 1)
        user = check_scope_value("user_id", user_id)
        if cycle is not None:
            check_id(cycle, "cycle")
            events = [e for e in self.store.events(cycle=cycle) if user is None or e.user_id == user]
            return [e.to_dict() for e in events[:limit]]
        return [e.to_dict() for e in self.store.events(user_id=user, limit=limit, newest_first=True)]

    def undo(self, event: int, *, user_id: str | None = None) -> dict[str, Any]:
        """Reverse a journaled lifecycle action (not deletions; see ``explain``). With
        ``user_id``, only an event about that user's memories: another user's is reported
        exactly like a missing one."""
        from latentmem.lifecycle import actions

        return actions.undo(self.core, event, user_id).to_dict()

    def demote(self, ids: str | Sequence[str], *, user_id: str | None = None) -> list[str]:
        """Make memories lossy for good: the text is dropped, the vector and metadata kept
        (search still finds them by meaning; text is reconstructed by the inverter when
        one is shipped). Returns the ids that had text."""
        from latentmem.lifecycle import actions

        id_list = check_ids(ids)
        for rid in id_list:
            self.core.owned(rid, user_id)
        done = actions.demote(self.core, id_list, "demoted on request")
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

        return actions.merge(self.core, check_ids(ids), weights=weights, mode=mode,
                             originals=originals, user_id=user_id)

    # -- latent memory (latentmem/invert/) ------------------------------------------------

    def inverter(self) -> Any:
        """The embedding inverter for this store's embedder, or None when none is shipped."""
        return self.core.inverter()

    def invert(self, vector_or_id: str | Sequence[float] | np.ndarray, *, steps: int | None = None,
               user_id: str | None = None) -> str:
        """The text latentmem's trained inverter reads back from a vector, or from the stored
        vector of memory ``id``, after ``steps`` correction rounds (default
        ``latentmem.invert.DEFAULT_STEPS``). docs/inversion.md says how close it gets."""
        from latentmem import invert

        _check_steps(steps, none_ok=True)
        if isinstance(vector_or_id, str):
            vector = self.core.owned(vector_or_id, user_id, with_vector=True).record.vector
        else:
            vector = check_vector(vector_or_id, self.dim, "vector")
        inverter = self.core.required_inverter()
        return invert.invert_one(inverter, np.asarray(vector, dtype=np.float32),
                                 invert.DEFAULT_STEPS if steps is None else steps)

    def audit_inversion(self, *, user_id: str | None = None, limit: int = 200, steps: int = 0,
                        seed: int = 0) -> dict[str, Any]:
        """How much of one user's stored text the inverter reads back from the stored vectors
        alone: the privacy risk of leaking the vectors (Morris et al. 2023). Up to ``limit``
        memories that still hold text, drawn at random (``seed``), are inverted with ``steps``
        correction rounds and compared with their text (token F1, BLEU, exact match, x100)
        and their vector (cosine of the re-embedded inversion). ``vector_noise`` is the dial
        that lowers it."""
        from latentmem.invert.audit import audit

        user = check_scope_value("user_id", DEFAULT_USER if user_id is None else user_id) or DEFAULT_USER
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError(f"limit must be a positive integer, found {limit!r}")
        _check_steps(steps, none_ok=False)
        return audit(self.core, user, limit, steps, seed)

    # -- the store ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        users = self.store.users()
        db = self.store.file_bytes()
        index_bytes = self.core.index_file_bytes()
        total = sum(n for _, n in users)
        return {
            "home": self.location,
            "records": total,
            "users": len(users),
            "per_user": dict(users),
            "embedder": self.store.get_meta("embedder"),
            "dim": self.dim,
            "schema_version": self.store.schema_version,
            "vector_tier": self.store.codec.tier,
            "profile": self.store.profile.name,
            "index_vectors": self.index.count(),
            "db_bytes": db,
            "index_bytes": index_bytes,
            # Everything on disk: the store and, in the fp32 tier, the index file.
            "bytes_per_memory": ((db + index_bytes) / total) if total else None,  # JSON has no NaN
        }

    def check(self, *, repair: bool = False) -> dict[str, Any]:
        """Verify the store and its vector index (latentmem/check.py); ``ok`` is False with
        a line per problem. ``repair`` rebuilds what is derived from the memories first."""
        from latentmem.check import check

        return check(self.core, repair)

    def convert_vectors(self, tier: str) -> int:
        """Re-encode every stored vector into another tier (see latentmem/store/codec.py)
        and make it this store's tier. Towards a smaller tier this loses precision for
        good. Returns the number of vectors re-encoded."""
        core = self.core
        with core.lock:
            count = core.store.convert_vectors(tier)
            core.rebuild_index()
            core.config = core.config.replace(vector_tier=tier)
        return count

    def import_records(self, records: Sequence[Record], edges: Sequence[Edge] = (),
                       on_conflict: str = "error") -> int:
        """Insert fully formed records (ids, times and vectors kept) in one transaction.

        ``on_conflict``: ``error`` refuses the whole import if any id exists;
        ``skip`` leaves existing records as they are.
        """
        from latentmem import write

        return write.import_records(self.core, records, edges, on_conflict)

    def export_rows(self, user_id: str | None = None) -> tuple[list[Record], list[Edge]]:
        scope = None if user_id is None else self.core.scope(user_id)
        rows = self.store.list_rows(scope, with_vector=True)
        return [r.record for r in rows], self.store.all_edges(user_id)


def _check_steps(steps: object, none_ok: bool) -> None:
    if isinstance(steps, bool) or not (none_ok and steps is None
                                       or isinstance(steps, int) and 0 <= steps <= 10):
        raise InvalidInputError(f"steps must be an integer from 0 to 10, found {steps!r}")
