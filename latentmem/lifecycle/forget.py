"""Forgetting: strength decays on an Ebbinghaus-style curve; weak memories lose their
text, then leave the store; a per-user byte budget is enforced.

Strength is retention ``R = 2 ** (-age / S)``: ``age`` is the time since the memory
was last recalled (or recorded, if never), ``S`` its stability in days:

    S = half_life_days * (1 + importance_gain * importance) * (1 + ln(1 + recalls))

so recall both resets the clock and lengthens it (the spacing effect), and important
memories fade slower. With the defaults (30 days, gain 3) an untouched memory of
importance 0.5 falls below the demotion threshold 0.05 after about 11 months, one of
importance 0 after about 4. The clock runs on record time (``created_at``), never on
``event_time``: importing a 2019 chat log must not forget it on arrival.

Below ``forget_threshold`` a memory is demoted (text dropped, vector kept: still
found by meaning, shown reconstructed); below ``archive_threshold`` the configured
``forget_action`` archives it (undoable) or deletes it. Automatic demotions keep
their text in the journal for ``undo_days`` so a cycle's decisions can be reversed.

Budget: when a user's memories take more than ``budget_bytes_per_user`` (text plus
vector bytes, the part a user controls), the lowest-priority memories are demoted,
then archived, until the user fits. Priority = strength x (0.5 + importance).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from latentmem.lifecycle import actions, journal, purge

if TYPE_CHECKING:
    from latentmem.memory import Memory

DAY = 86_400.0
IMPORTANCE_GAIN = 3.0
_WRITE_BATCH = 500  # rows per transaction: each one holds the write lock for a few ms
_ACTION_BATCH = 50  # memories demoted or archived per transaction (~10-20 ms of lock each)


def retention(age_days: np.ndarray, importance: np.ndarray, recalls: np.ndarray,
              half_life_days: float) -> np.ndarray:
    stability = half_life_days * (1.0 + IMPORTANCE_GAIN * importance) * (1.0 + np.log1p(recalls))
    return np.power(2.0, -np.maximum(age_days, 0.0) / stability)


@dataclass
class Scan:
    rowid: np.ndarray
    ids: list[str]
    users: list[str]
    strength: np.ndarray
    old_strength: np.ndarray
    importance: np.ndarray
    lossy: np.ndarray
    nbytes: np.ndarray
    vector_bytes: np.ndarray


def scan(conn: sqlite3.Connection, now: float, half_life_days: float) -> Scan:
    rows = conn.execute(
        "SELECT rowid, id, user_id, created_at, last_accessed_at, importance, access_count, "
        "strength, text IS NULL, length(CAST(coalesce(text, '') AS BLOB)) + length(vector), "
        "length(vector) "
        "FROM records"
    ).fetchall()
    if not rows:
        empty = np.zeros(0)
        return Scan(np.zeros(0, np.int64), [], [], empty, empty, empty, np.zeros(0, bool),
                    np.zeros(0, np.int64), np.zeros(0, np.int64))
    col = list(zip(*rows, strict=True))
    created = np.asarray(col[3], dtype=np.float64)
    accessed = np.array([c if a is None else a for a, c in zip(col[4], col[3], strict=True)],
                        dtype=np.float64)
    importance = np.asarray(col[5], dtype=np.float64)
    strength = retention((now - np.maximum(created, accessed)) / DAY, importance,
                         np.asarray(col[6], dtype=np.float64), half_life_days)
    return Scan(
        rowid=np.asarray(col[0], dtype=np.int64), ids=list(col[1]), users=list(col[2]),
        strength=strength, old_strength=np.asarray(col[7], dtype=np.float64),
        importance=importance, lossy=np.asarray(col[8], dtype=bool),
        nbytes=np.asarray(col[9], dtype=np.int64), vector_bytes=np.asarray(col[10], dtype=np.int64),
    )


def run(mem: Memory, reader: sqlite3.Connection, deadline: float, cycle: str,
        now: float | None = None) -> dict[str, Any]:
    """One forgetting pass. Returns counts for the cycle report."""
    cfg = mem.config
    now = time.time() if now is None else now
    s = scan(reader, now, cfg.strength_half_life_days)
    report: dict[str, Any] = {"scanned": len(s.ids), "updated": 0, "demoted": 0,
                              "archived": 0, "deleted": 0, "over_budget_users": 0}
    changed = np.nonzero(np.abs(s.strength - s.old_strength) > 0.005)[0]
    for start in range(0, len(changed), _WRITE_BATCH):
        if time.perf_counter() > deadline:
            report["stopped"] = "budget"
            return report
        part = changed[start:start + _WRITE_BATCH]
        with mem.store.transaction() as conn:
            conn.executemany("UPDATE records SET strength = ? WHERE rowid = ?",
                             [(float(s.strength[i]), int(s.rowid[i])) for i in part])
        report["updated"] += len(part)

    def why(i: int, limit: float, what: str) -> str:
        return (f"strength {s.strength[i]:.3f} < {limit} ({what}); importance "
                f"{s.importance[i]:.2f}")

    # Below the archive threshold a memory leaves at once (the archive keeps its text for
    # an undo); between the two thresholds it loses its text.
    floor = cfg.archive_threshold if cfg.forget_action != "none" else -1.0
    weak = [int(i) for i in np.nonzero((s.strength < cfg.forget_threshold)
                                       & (s.strength >= floor))[0] if not s.lossy[i]]
    report["demoted"] += _demote(mem, s, weak, deadline, cycle,
                                 lambda i: why(i, cfg.forget_threshold, "demote threshold"))
    if cfg.forget_action != "none":
        gone = [int(i) for i in np.nonzero(s.strength < cfg.archive_threshold)[0]]
        report["archived" if cfg.forget_action == "archive" else "deleted"] += _remove(
            mem, s, gone, deadline, cycle,
            lambda i: why(i, cfg.archive_threshold, f"{cfg.forget_action} threshold"))
    if cfg.budget_bytes_per_user is not None:
        _enforce_budget(mem, s, deadline, cycle, report)
    return report


def _batches(idx: list[int], deadline: float) -> Iterator[list[int]]:
    """Slices of ``idx`` for one transaction each, until the deadline passes."""
    for start in range(0, len(idx), _ACTION_BATCH):
        if time.perf_counter() > deadline:
            return
        yield idx[start:start + _ACTION_BATCH]


def _demote(mem: Memory, s: Scan, idx: list[int], deadline: float, cycle: str,
            reason: Any) -> int:
    done = 0
    for part in _batches(idx, deadline):
        done += len(actions.demote(mem, [s.ids[i] for i in part],
                                   {s.ids[i]: reason(i) for i in part}, cycle=cycle, undoable=True))
        for i in part:
            s.lossy[i] = True
            s.nbytes[i] = s.vector_bytes[i]
    return done


def _remove(mem: Memory, s: Scan, idx: list[int], deadline: float, cycle: str,
            reason: Any) -> int:
    done = 0
    for part in _batches(idx, deadline):
        if mem.config.forget_action == "delete":
            with mem._lock:
                purge.delete(mem, [s.ids[i] for i in part], None, finish=False)
            with mem.store.transaction() as conn:
                for i in part:
                    journal.log(conn, "forget", s.ids[i], s.users[i], reason(i) + "; deleted")
        else:
            actions.archive(mem, [s.ids[i] for i in part], {s.ids[i]: reason(i) for i in part},
                            cycle=cycle, action="forget")
        for i in part:
            s.nbytes[i] = 0
        done += len(part)
    return done


def _enforce_budget(mem: Memory, s: Scan, deadline: float, cycle: str,
                    report: dict[str, Any]) -> None:
    """Fit each user in the budget: when the vectors alone exceed it, the least valuable
    memories leave first (dropping text could not be enough); then texts are dropped
    from the least valuable up."""
    budget = mem.config.budget_bytes_per_user
    assert budget is not None
    users = np.asarray(s.users, dtype=object)
    priority = s.strength * (0.5 + s.importance)
    removed = "archived" if mem.config.forget_action != "delete" else "deleted"
    for user in sorted(set(s.users)):
        mine = np.nonzero(users == user)[0]
        used = int(s.nbytes[mine].sum())
        if used <= budget:
            continue
        report["over_budget_users"] += 1
        order = [int(i) for i in mine[np.argsort(priority[mine], kind="stable")]
                 if s.nbytes[i] > 0]
        why = f"user over budget ({used} > {budget} bytes); priority "
        vectors = int(s.vector_bytes[order].sum()) if order else 0
        leave: list[int] = []
        for i in order:  # the vectors alone overflow: dropping text cannot be enough
            if vectors <= budget:
                break
            leave.append(i)
            vectors -= int(s.vector_bytes[i])
            used -= int(s.nbytes[i])
        drop: list[int] = []
        for i in order[len(leave):]:
            if used <= budget:
                break
            if not s.lossy[i]:
                drop.append(i)
                used -= int(s.nbytes[i] - s.vector_bytes[i])
        report[removed] += _remove(mem, s, leave, deadline, cycle,
                                   lambda j, why=why: why + f"{priority[j]:.3f}")
        report["demoted"] += _demote(mem, s, drop, deadline, cycle,
                                     lambda j, why=why: why + f"{priority[j]:.3f}")
        report.setdefault("budget", {})[user] = {"bytes": used, "budget": budget}


def days_until_demotion(importance: float, recalls: int, half_life_days: float,
                        threshold: float) -> float:
    """How long an untouched memory keeps its text (for docs and explain output)."""
    stability = half_life_days * (1 + IMPORTANCE_GAIN * importance) * (1 + math.log1p(recalls))
    return stability * math.log2(1 / threshold)
