"""How a sleep cycle writes beside searches without holding them up.

A search reads under the core's lock, taking the store's lock for each read, so a
cycle writes in short transactions, each taken between two searches (``between_searches``):
- ``Pacer`` sizes batches so that each transaction holds the lock about ``TX_TARGET_S``,
  from the measured cost per memory (archiving 100k memories in batches of 50 took 1,930
  transactions; the right size differs by machine, store size and action), and pauses
  ``TX_PAUSE_S`` after each so that a search waiting for the lock gets it.
- Between transactions the store keeps itself tidy (``store.bulk_writes``: for SQLite, a
  few full-text pages merged and, now and then, the WAL checkpointed), so that no
  transaction of the cycle has to do that at length.
- ``actions.Unindexer`` takes archived memories out of the vector index in bulk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from latentmem.store.base import Store

if TYPE_CHECKING:
    from latentmem.core import Core

# How long one write transaction may hold the store's lock. A search waits for it at most
# this long (plus its own work), so batch sizes follow the measured cost per memory, which
# differs by machine, store size and action (archiving ~0.15 ms, a strength update ~0.02).
TX_TARGET_S = 0.020
# After each transaction the cycle pauses this long: a search waiting for the lock gets it
# (a lock released and taken again at once by the same thread is never handed over).
TX_PAUSE_S = 0.001


@contextmanager
def between_searches(core: Core) -> Iterator[None]:
    """The store's lock, taken once no search is under way: a search holds the core's
    lock while it reads (several times the store's lock), so taking that first lets a
    search finish its reads before a write starts, instead of waiting for one write per
    read. The core's lock is let go at once: a search may start its vector scan meanwhile
    (at 100k with searches back to back: forgetting took 50 s holding the core's lock
    throughout each write, and searches 61 ms on average taking the store's alone)."""
    with core.lock:
        core.store.lock.acquire()
    try:
        yield
    finally:
        core.store.lock.release()


class Pacer:
    """Slices of a list of memories, one write transaction each, sized so that each holds
    the store's lock about ``TX_TARGET_S``: the cost per memory of the last transactions
    (a moving average of the time they held the lock, not of the time spent waiting for
    it) sets the next size. Stops at the deadline."""

    def __init__(self, store: Store, first: int = 50, lo: int = 8, hi: int = 2000) -> None:
        self.store = store
        self.size, self.lo, self.hi = first, lo, hi
        self.per_item: float | None = None

    def batches(self, idx: Sequence[int] | np.ndarray, deadline: float) -> Iterator[Any]:
        if len(idx) == 0:  # nothing to write: leave every setting as it is
            return
        start = 0
        with self.store.bulk_writes() as between:
            while start < len(idx) and time.perf_counter() <= deadline:
                part = idx[start:start + self.size]
                held = self.store.write_seconds
                yield part
                self._took(len(part), self.store.write_seconds - held)
                start += len(part)
                between()
                time.sleep(TX_PAUSE_S)

    def _took(self, n: int, seconds: float) -> None:
        cost = seconds / max(n, 1)
        self.per_item = cost if self.per_item is None else 0.7 * self.per_item + 0.3 * cost
        self.size = int(min(self.hi, max(self.lo, round(TX_TARGET_S / max(self.per_item, 1e-7)))))
