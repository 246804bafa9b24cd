"""How a sleep cycle writes beside searches without holding them up.

A search reads under the Memory's lock, taking the store's lock for each read, so a
cycle writes in short transactions, each taken between two searches (``between_searches``):
- ``Pacer`` sizes batches so that each transaction holds the lock about ``TX_TARGET_S``,
  from the measured cost per memory (archiving 100k memories in batches of 50 took 1,930
  transactions; the right size differs by machine, store size and action), and pauses
  ``TX_PAUSE_S`` after each so that a search waiting for the lock gets it.
- After each transaction it merges a few full-text pages and, now and then, checkpoints
  the WAL, so that no transaction of the cycle has to do either at length (FTS5's own
  automatic merging is off meanwhile: ``FTS_AUTOMERGE``).
- ``actions.Unindexer`` takes archived memories out of the vector index in bulk.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from latentmem.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from latentmem.memory import Memory

# How long one write transaction may hold the store's lock. A search waits for it at most
# this long (plus its own work), so batch sizes follow the measured cost per memory, which
# differs by machine, store size and action (archiving ~0.15 ms, a strength update ~0.02).
TX_TARGET_S = 0.020
# After each transaction the cycle pauses this long: a search waiting for the lock gets it
# (a lock released and taken again at once by the same thread is never handed over).
TX_PAUSE_S = 0.001
# Full-text pages merged after each transaction, where a level holds several segments (see
# SQLiteStore.merge_fts): archiving 100k memories, the longest transaction went from 370 to
# 34 ms, and the full-text work of the cycle from 1.9 to 1.1 s.
FTS_MERGE_PAGES = 64
# WAL pages a cycle lets pile up before it checkpoints (16 MB). Each checkpoint syncs the
# files, so fewer and larger ones cost less: archiving 100k memories, 10.5 s of checkpoints
# at 800 pages (SQLite's own threshold is 1,000), 5.5 s at 4,000.
CHECKPOINT_PAGES = 4_000
# FTS5 merges segments on its own after each write once a level holds this many ('automerge',
# SQLite's default 4), inside the writing transaction. A cycle turns that off while it
# writes, its own merge steps between slices doing the work instead, and restores it after:
# archiving at 100k, a batch's transaction sometimes carried an automerge of ~250 pages
# (longest transaction 64-105 ms against a 20 ms target; 34 ms without). A process that
# crashes mid-cycle leaves it off until the next cycle's optimise phase puts it back;
# meanwhile FTS5's 'crisismerge' (16 segments a level) still bounds the index.
FTS_AUTOMERGE = 4


@contextmanager
def between_searches(mem: Memory) -> Iterator[None]:
    """The store's lock, taken once no search is under way: a search holds the Memory's
    lock while it reads (several times the store's lock), so taking that first lets a
    search finish its reads before a write starts, instead of waiting for one write per
    read. The Memory's lock is let go at once: a search may start its vector scan meanwhile
    (at 100k with searches back to back: forgetting took 50 s holding the Memory's lock
    throughout each write, and searches 61 ms on average taking the store's alone)."""
    with mem._lock:
        mem.store.lock.acquire()
    try:
        yield
    finally:
        mem.store.lock.release()


class Pacer:
    """Slices of a list of memories, one write transaction each, sized so that each holds
    the store's lock about ``TX_TARGET_S``: the cost per memory of the last transactions
    (a moving average of the time they held the lock, not of the time spent waiting for
    it) sets the next size. Stops at the deadline.

    Between slices it also checkpoints the WAL, on a connection of its own and outside
    every lock. Otherwise SQLite does it inside the commit that takes the WAL past 1,000
    pages: 4 MB copied into the database file and synced while the store's lock is held
    (commits of up to 170 ms, measured archiving at 100k). Checkpointing in the background
    instead does not work while the cycle writes: the WAL never empties, so it never
    starts over, and grows by the whole cycle (2 GB for 100k archived memories)."""

    def __init__(self, store: SQLiteStore, first: int = 50, lo: int = 8, hi: int = 2000) -> None:
        self.store = store
        self.size, self.lo, self.hi = first, lo, hi
        self.per_item: float | None = None
        self._side: sqlite3.Connection | None = None
        self._every, self._since = 1, 0  # slices between checkpoints, and since the last

    def batches(self, idx: Sequence[int] | np.ndarray, deadline: float) -> Iterator[Any]:
        if len(idx) == 0:  # nothing to write: leave every setting as it is
            return
        start = 0
        with self.store.lock:  # SQLite's own checkpoint only if this one falls behind
            saved = int(self.store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            self.store.conn.execute(f"PRAGMA wal_autocheckpoint={2 * CHECKPOINT_PAGES}")
            self.store.set_fts_automerge(0)
        try:
            while start < len(idx) and time.perf_counter() <= deadline:
                part = idx[start:start + self.size]
                held = self.store.write_seconds
                yield part
                self._took(len(part), self.store.write_seconds - held)
                start += len(part)
                self.store.merge_fts(FTS_MERGE_PAGES)
                self._since += 1
                if self._since >= self._every:
                    self._checkpoint()
                time.sleep(TX_PAUSE_S)
        finally:
            with self.store.lock:
                self.store.conn.execute(f"PRAGMA wal_autocheckpoint={saved}")
                self.store.set_fts_automerge(FTS_AUTOMERGE)
            if self._side is not None:
                self._side.close()
                self._side = None

    def _took(self, n: int, seconds: float) -> None:
        cost = seconds / max(n, 1)
        self.per_item = cost if self.per_item is None else 0.7 * self.per_item + 0.3 * cost
        self.size = int(min(self.hi, max(self.lo, round(TX_TARGET_S / max(self.per_item, 1e-7)))))

    def _checkpoint(self) -> None:
        """A PASSIVE checkpoint (it never waits for a reader or a writer), every so many
        slices that each copies about ``CHECKPOINT_PAGES``."""
        if self._side is None:
            self._side = sqlite3.connect(str(self.store.path), timeout=30.0,
                                         check_same_thread=False)
        _, frames, _ = self._side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        per_slice = max(int(frames), 1) / self._since
        self._every = max(1, int(CHECKPOINT_PAGES / per_slice))
        self._since = 0
