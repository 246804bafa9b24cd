"""Sleep cycles: consolidate, forget, preload, optimise, in that order, journaled.

``run_cycle`` is one pass with a time budget (seconds); each phase checks the
deadline between small steps and says where it stopped, and the next cycle
carries on (consolidation keeps a watermark; forgetting recomputes). Heavy reads
and all similarity search use a snapshot of the store (``store.snapshot()``: for
SQLite, a read-only connection of its own) and no lock; each
write is a short transaction (hundreds of rows at most), so searches interleave
with a cycle instead of waiting for it.

A cycle is safe to kill at any point: each action is one transaction that also
journals it, and the vector index is a cache rebuilt from the store when stale.

``Sleeper`` runs cycles in a daemon thread every ``every`` seconds (the server and
``latentmem sleep --every``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from latentmem.errors import InvalidInputError
from latentmem.ids import new_id
from latentmem.lifecycle import consolidate, forget, optimise, preload
from latentmem.store.base import Snapshot

if TYPE_CHECKING:
    from latentmem.core import Core

PHASES = ("consolidate", "forget", "preload", "optimise")


@dataclass
class SleepReport:
    cycle: str
    seconds: float
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = []
        for name, rep in self.phases.items():
            shown = {k: v for k, v in rep.items() if not k.endswith("_ms") and k != "budget"}
            parts.append(f"{name} " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        return f"cycle {self.cycle} in {self.seconds:.2f}s: " + "; ".join(parts)


def _phase(name: str, core: Core, snapshot: Snapshot, deadline: float, cycle: str,
           now: float | None) -> dict[str, Any]:
    if name == "consolidate":
        return consolidate.run(core, snapshot, deadline, cycle) if core.config.lifecycle.consolidate else {}
    if name == "forget":
        return forget.run(core, snapshot, deadline, cycle, now)
    if name == "preload":
        return preload.run(core, deadline)
    return optimise.run(core, snapshot, deadline)


def run_cycle(core: Core, budget: float | None = None,
              phases: tuple[str, ...] = PHASES, now: float | None = None) -> SleepReport:
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float)
                               or not budget > 0):
        raise InvalidInputError(f"budget must be a positive number of seconds, found {budget!r}")
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise InvalidInputError(f"unknown sleep phases {unknown}; expected some of {list(PHASES)}")
    # One cycle at a time per Memory (a server's thread, a request). Its commits are not
    # fsynced: a cycle that a power loss undoes is redone by the next (store.unsynced).
    # Across processes, the store's guard (PostgreSQL: an advisory lock): a cycle that finds
    # another under way elsewhere leaves the work to it.
    with core.cycle_lock, core.store.cycle_guard() as mine, core.store.unsynced():
        if not mine:
            return SleepReport(cycle="", seconds=0.0,
                               phases={"skipped": {"reason": "another process runs a cycle"}})
        return _run_cycle(core, budget, phases, now)


def _run_cycle(core: Core, budget: float | None, phases: tuple[str, ...],
               now: float | None) -> SleepReport:
    core.settle()  # the access counts of searches so far count in this cycle
    t0 = time.perf_counter()
    deadline = t0 + (budget if budget is not None else float("inf"))
    cycle = "c-" + new_id()
    report = SleepReport(cycle=cycle, seconds=0.0)
    snapshot = core.store.snapshot()
    try:
        for name in (p for p in PHASES if p in phases):
            t = time.perf_counter()
            rep = _phase(name, core, snapshot, deadline, cycle, now)
            rep["ms"] = round((time.perf_counter() - t) * 1e3, 1)
            report.phases[name] = rep
            snapshot.refresh()  # the next phase sees this one's writes
    finally:
        snapshot.close()
    report.seconds = round(time.perf_counter() - t0, 3)
    core.store.log_event("sleep", None, None, report.summary(), cycle=cycle)
    return report


# How many reports and errors a Sleeper keeps: a server sleeping every 10 minutes for
# months would otherwise keep every one (``cycles`` and ``failures`` count them all).
SLEEPER_KEEPS = 100


class Sleeper:
    """Background sleep cycles every ``every`` seconds until ``stop()``."""

    def __init__(self, core: Core, every: float, budget: float | None = None) -> None:
        if every <= 0:
            raise InvalidInputError(f"every must be positive seconds, found {every!r}")
        self.core, self.every, self.budget = core, every, budget
        self.reports: deque[SleepReport] = deque(maxlen=SLEEPER_KEEPS)
        self.errors: deque[str] = deque(maxlen=SLEEPER_KEEPS)
        self.cycles = self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="latentmem-sleep", daemon=True)

    def start(self) -> Sleeper:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.reports.append(run_cycle(self.core, self.budget))
                self.cycles += 1
            except Exception as exc:  # noqa: BLE001 - a failed cycle must not kill the thread
                self.errors.append(f"{exc.__class__.__name__}: {exc}")
                self.failures += 1

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)
