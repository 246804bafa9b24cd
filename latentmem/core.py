"""The engine's shared state for one store: what ``retrieve/``, ``lifecycle/`` and the
write path receive instead of the ``Memory`` facade.

A ``Core`` holds the store (the role protocols of ``store/base.py``), the vector index
(a derived cache, ``VectorIndex``), the embedder, the settings, and the two locks:
``lock`` orders index changes and the reads a search makes; ``cycle_lock`` lets one sleep
cycle run at a time. Everything here is public on purpose: these are the parts the
modules are allowed to use, so none of them reaches into the facade.

Rejected: passing ``Memory`` itself (what lifecycle did until December 2026). The
modules then reached for the facade's private members (its lock, its index sync, its
embedding cache), and ``optimise`` reassigned the facade's index: every change of the
facade risked breaking a background cycle.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.config import Config
from latentmem.encode.base import Embedder, get_embedder
from latentmem.encode.cache import CachedEmbedder, EmbeddingCache
from latentmem.errors import InvalidInputError, NotFoundError, StoreCorruptError
from latentmem.graph import entities
from latentmem.inputs import check_id, check_scope_value
from latentmem.lifecycle.controller import Controller
from latentmem.retrieve import learned as learned_stage
from latentmem.retrieve import relevance, topics
from latentmem.store import open_store
from latentmem.store.ann import Ann
from latentmem.store.base import Scope, Store, StoredRow
from latentmem.store.vector_index import FaissIndex, VectorIndex

log = logging.getLogger("latentmem")
INDEX_FILE = "vectors.faiss.npz"
DEFAULT_USER = "default"


class Core:
    """One open store and everything derived from it. ``Memory`` makes one; tests and
    tools may too."""

    def __init__(self, home: Path | str, config: Config,
                 embedder: str | Embedder | None = None) -> None:
        self.home = home
        self.config = config
        self.lock = threading.RLock()
        self.cycle_lock = threading.Lock()  # sleep cycles run one at a time (lifecycle/sleep.py)
        # By user: (vector epoch when looked, topics or None); see topics_of.
        self._topics: dict[str, tuple[int, topics.Topics | None]] = {}
        self.store: Store = open_store(home, config.storage)
        self.store.entity_extractor = entities.extract
        base = get_embedder(embedder if embedder is not None else config.embedder)
        self.store.bind_embedder(base.name, base.dim)
        self.store.bind_vector_tier(config.storage.vector_tier, base.dim)
        self.embedder: Embedder = base
        self.cache: EmbeddingCache | None = None
        storage = config.storage
        # A noised store keeps no clean vectors: its own cache would hold them. A shared
        # cache file (embed_cache_path) is the caller's choice and stays.
        # A compact store keeps no cache of its own (store/profiles.py): a full vector per
        # text would be several times what the memory itself takes.
        own_cache = not storage.vector_noise and self.store.profile.embed_cache
        if storage.embed_cache and (storage.embed_cache_path or own_cache):
            if storage.embed_cache_path:
                self.cache = EmbeddingCache.open(storage.embed_cache_path)
            else:
                self.cache = self.store.embedding_cache()
            self.embedder = CachedEmbedder(base, self.cache)
        self.dim = base.dim
        self._saved_epoch: int | None = None  # the epoch of the index file on disk
        # Runs a search's BM25 query while FAISS scans: SQLite and FAISS both release the
        # GIL, so the two overlap.
        self._side: ThreadPoolExecutor | None = None
        # Writes a search causes (access counts) run here, after the search returns: a
        # search must never wait for the store's write lock, which a sleep cycle or another
        # process may hold for a while.
        self._writer: ThreadPoolExecutor | None = None
        self._background_errors: list[Exception] = []
        self._native = False  # set by _open_index: the backend keeps its own vector index
        # What became of the saved index file at open, in words (latentmem check reports it).
        self.index_file_status = "none: the backend keeps its own index"
        self.index: VectorIndex = self._open_index()
        self.controller = Controller.load(self.store, config.lifecycle.controller_implicit_weight)
        self._inverter: Any = False  # loaded on first use; None when there is none
        self._ranker: tuple[str, learned_stage.Ranker] | None = None
        self._calibrator: tuple[str, relevance.Calibrator] | None = None
        # Rowids the last sleep cycle predicted per user (latentmem/lifecycle/preload.py).
        self.preloaded: dict[str, set[int]] = {}
        self.closed = False

    # -- the vector index ------------------------------------------------------------

    def _index_file(self) -> Path | None:
        """Where the FAISS index is saved beside a SQLite store (None: the backend has its own)."""
        return self.home / INDEX_FILE if isinstance(self.home, Path) else None

    def _open_index(self) -> VectorIndex:
        native: VectorIndex | None = self.store.native_index()
        self._native = native is not None
        if native is not None:
            return native
        path = self._index_file()
        if path is None:
            return self._build_index()
        index, self.index_file_status = FaissIndex.read(path, self.dim, self.store.codec,
                                                        self._ann())
        epoch = self.store.vector_epoch()
        if index is not None:
            if index.epoch == epoch and index.count() == self.store.count():
                # A partition converted at load (FaissIndex.read) makes the file worth saving.
                self._saved_epoch = epoch if self.index_file_status == "read" else None
                return index
            self.index_file_status = (f"out of date (epoch {index.epoch} and {index.count()} "
                                      f"vectors; the store: epoch {epoch}, {self.store.count()})")
        if self.index_file_status != "absent" and not self.index_file_status.startswith("not"):
            self.index_file_status += "; rebuilt from the store"
        try:
            return self._build_index(epoch)
        except StoreCorruptError as exc:
            # A damaged page under the vectors: the store still opens, so that `latentmem
            # check` and the reads that do not meet the damage work. The index is left empty
            # and out of date (epoch -1), so every search and write rebuilds it first
            # (sync_index) and meets the same error: nothing answers from a partial index.
            log.warning("the vector index could not be built: %s", exc)
            self.index_file_status += f"; could not be rebuilt ({exc})"
            index = FaissIndex(self.dim, self.store.codec, self._ann())
            index.epoch = -1
            return index

    def _ann(self) -> Ann:
        storage = self.config.storage
        return Ann(storage.ann_min_vectors, storage.ann_nprobe)

    def _build_index(self, epoch: int | None = None) -> VectorIndex:
        index = FaissIndex(self.dim, self.store.codec, self._ann())
        with self.lock:
            index.epoch = self.store.vector_epoch() if epoch is None else epoch
            index.fill(self.store.iter_vectors, dict(self.store.users()))
        return index

    def rebuild_index(self) -> None:
        """Build the vector index again from the store."""
        with self.lock:
            if self.store.native_index() is None:
                self.index = self._build_index()

    def sync_index(self) -> None:
        """Rebuild when another process changed the vectors since we last looked, or when
        the store's PQ codebook was trained since the index was built. Call it holding
        ``lock``, before changing the index."""
        if not self._native and not self._index_fresh():  # a native index is the store's
            self.index = self._build_index()

    def _index_fresh(self) -> bool:
        return self.store.vector_epoch() == self.index.epoch and not self.index.stale

    def index_current(self) -> bool:
        """Whether the index holds every vector the store does (no other process wrote
        since this one last looked). An index that could not be built (epoch -1, a
        damaged store: ``_open_index``) is built now, so a write meets the damage as a
        search does. Call it holding ``lock``."""
        if self._native:
            return True
        if self.index.epoch < 0:
            self.sync_index()
            return True  # just built from the store
        return self._index_fresh()

    def index_added(self, user_id: str, rowids: Any, vectors: np.ndarray) -> None:
        """The vectors a store write just added, into the index; the index then takes the
        store's epoch if no other process wrote meanwhile (``claim_epoch``). Call it
        holding ``lock``, after the write."""
        if self._native:
            return
        before = self.index.epoch
        self.index.add(user_id, np.asarray(rowids, dtype=np.int64), vectors)
        self.claim_epoch(before)

    def claim_epoch(self, before: int, bumps: int = 1) -> None:
        """After this process changed the store (``bumps`` epoch bumps) and its index the
        same way: the index is current only if the store's epoch is exactly ``before +
        bumps``. Any other value means another process wrote between this process's
        ``sync_index`` and now; the index then keeps ``before``, so the next ``sync_index``
        rebuilds it with that write. (Taking the store's epoch unconditionally was a race:
        under four writing processes an index kept a row another process had deleted, and
        could miss rows another had added; ``latentmem bench reliability``'s concurrency
        scenario found it.)"""
        now = self.store.vector_epoch()
        self.index.epoch = now if now == before + bumps else before
        if self.index.epoch == now and isinstance(self.index, FaissIndex) and self.index.due():
            self._retrain(self.index)

    def _retrain(self, index: FaissIndex) -> None:
        """Partitions that outgrew their IVF training, built again from the store (the store
        is the truth and holds every vector; see ``FaissIndex.refill``)."""
        sizes = dict(self.store.users())
        try:
            for user in index.due():
                index.refill(user, self.store.iter_vectors, sizes.get(user, 0))
        except BaseException:
            index.epoch = -1  # half refilled: the next sync_index rebuilds it
            raise

    def flush(self) -> None:
        """Persist the vector index (the store itself is always durable). An index that has
        not changed since it was loaded or saved is not written again: at 1M memories that
        is 1.5 GB on every close."""
        with self.lock:
            path = self._index_file()
            if path is None or self._native:
                return
            if not self.index.persistent:  # compact tiers rebuild it from the store
                path.unlink(missing_ok=True)
                return
            self.sync_index()
            if self.index.epoch == self._saved_epoch and path.exists():
                return
            try:
                self.index.save(path)
            except OSError as exc:
                # The file is only a cache of the store: without it the next open rebuilds
                # the index. A full disk must not turn a close into a failure.
                log.warning("the vector index was not saved to %s (%s); it will be rebuilt "
                            "from the store at the next open", path, exc)
                return
            self._saved_epoch = self.index.epoch

    def index_file_bytes(self) -> int:
        path = self._index_file()
        return path.stat().st_size if path is not None and path.exists() else 0

    def close(self) -> None:
        if self.closed:
            return
        with self.lock:
            if self._side is not None:
                self._side.shutdown(wait=True)
            if self._writer is not None:
                self._writer.shutdown(wait=True)
            self.flush()
            self.store.close()
            if self.cache is not None:
                self.cache.close()
            self.closed = True

    # -- threads -----------------------------------------------------------------------

    def beside(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the side thread (a search's BM25 while the query is embedded and
        FAISS scans); returns its future."""
        if self._side is None:
            self._side = ThreadPoolExecutor(1, thread_name_prefix="latentmem-bm25")
        return self._side.submit(fn, *args)

    def in_background(self, fn: Callable[..., Any], *args: Any) -> None:
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

    # -- reads every module needs --------------------------------------------------------

    def owned(self, id: object, user_id: str | None, with_vector: bool = False) -> StoredRow:
        """The row for ``id``; another user's memory is reported exactly like a missing one."""
        rid = check_id(id)
        user = check_scope_value("user_id", user_id)
        row = self.store.get_row(rid, with_vector=with_vector)
        if user is not None and row.record.user_id != user:
            raise NotFoundError(f"no memory with id {id!r}")
        return row

    def scope(self, user_id: str | None, agent_id: str | None = None,
              session_id: str | None = None) -> Scope:
        user = check_scope_value("user_id", DEFAULT_USER if user_id is None else user_id)
        assert user is not None
        return Scope(user, check_scope_value("agent_id", agent_id),
                     check_scope_value("session_id", session_id))

    def noised(self, vectors: np.ndarray) -> np.ndarray:
        """Stored vectors with ``vector_noise`` (fresh Gaussian noise each time)."""
        scale = self.config.storage.vector_noise
        if not scale:
            return vectors
        noisy = vectors + scale * np.random.default_rng().standard_normal(vectors.shape)
        return (noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)).astype(np.float32)

    # -- the topic level (latentmem/retrieve/topics.py) ---------------------------------

    def topics_of(self, user_id: str) -> topics.Topics | None:
        """The user's topics: kept in memory, else read from the store, else built now (in
        memory only: a search writes nothing) when the user is small enough; a bigger one
        waits for a sleep cycle to build them. What is kept is read again once the store's
        vectors change: another process's cycle may have built them anew. A user with no
        session memories left has none, whatever was kept (a user whose memories were all
        archived is no longer among the users a sleep cycle rebuilds)."""
        epoch = self.store.vector_epoch()
        seen = self._topics.get(user_id)
        if seen is not None and seen[0] == epoch:
            return seen[1]
        sessions = self.store.session_count(user_id)
        found = topics.load(self.store, user_id) if sessions else None
        if found is None and 0 < sessions <= topics.LAZY_SESSIONS:
            found = topics.build(self.store, user_id)
        self._topics[user_id] = (epoch, found)
        return found

    def forget_topics(self, user_id: str) -> None:
        """Drop the in-memory copy (the store's changed); the next search reads it again."""
        self._topics.pop(user_id, None)

    # -- models loaded on first use ------------------------------------------------------

    def ranker(self) -> learned_stage.Ranker:
        """The fitted last-stage model (``ranker_path``, else the shipped one)."""
        path = self.config.retrieval.ranker_path
        if path is None:
            return learned_stage.default_ranker()
        if self._ranker is None or self._ranker[0] != path:
            self._ranker = (path, learned_stage.Ranker.load(path))
        return self._ranker[1]

    def calibrator(self) -> relevance.Calibrator:
        """The calibrated-relevance model (``relevance_path``, else the shipped one)."""
        path = self.config.retrieval.relevance_path
        if path is None:
            return relevance.default_calibrator()
        if self._calibrator is None or self._calibrator[0] != path:
            self._calibrator = (path, relevance.Calibrator.load(path))
        return self._calibrator[1]

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

    def required_inverter(self) -> Any:
        """The shipped inverter (``MissingExtraError`` without one), if it reads this store's
        vectors."""
        from latentmem import invert

        inverter = invert.require_default()
        if self.embedder.name != inverter.embedder:
            raise InvalidInputError(f"the inverter reads {inverter.embedder} vectors; this store "
                                    f"holds {self.embedder.name} vectors")
        return inverter
