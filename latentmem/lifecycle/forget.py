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
found by meaning; ``m.invert(id)`` reads its text back, not done here because inverting
costs tens of milliseconds a memory); below ``archive_threshold`` the configured
``forget_action`` archives it (undoable) or deletes it. Automatic demotions keep
their text in the journal for ``undo_days`` so a cycle's decisions can be reversed.

Budget: when a user's memories take more than ``budget_bytes_per_user`` (text plus
vector bytes, the part a user controls), the lowest-priority memories are demoted,
then archived, until the user fits. Priority = strength x (0.5 + importance).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from latentmem.lifecycle import actions, pacing, purge
from latentmem.store.base import Scans

if TYPE_CHECKING:
    from latentmem.core import Core

DAY = 86_400.0
IMPORTANCE_GAIN = 3.0
_FETCH = 2_000  # rows per fetch of a scan


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


def scan(source: Scans, now: float, half_life_days: float) -> Scan:
    """Every memory's strength now, beside what decides its fate (``source``: a store or a
    sleep cycle's snapshot of it)."""
    numbers: list[np.ndarray] = [np.zeros((8, 0))]
    ids: list[str] = []
    users: list[str] = []
    # In parts, each turned into arrays at once: a hundred thousand row tuples alive
    # together would outlive the young GC generations and bring on a full collection,
    # which stops every thread (searches too) for hundreds of ms.
    for rows in source.strength_rows(_FETCH):
        col = list(zip(*rows, strict=True))
        numbers.append(np.array(col[:8], dtype=np.float64))
        ids.extend(col[8])
        users.extend(col[9])
    rowid, last, importance, recalls, old, lossy, nbytes, vbytes = np.concatenate(numbers, axis=1)
    return Scan(
        rowid=rowid.astype(np.int64), ids=ids, users=users,
        strength=retention((now - last) / DAY, importance, recalls, half_life_days),
        old_strength=old, importance=importance, lossy=lossy.astype(bool),
        nbytes=nbytes.astype(np.int64), vector_bytes=vbytes.astype(np.int64),
    )


def run(core: Core, reader: Scans, deadline: float, cycle: str,
        now: float | None = None) -> dict[str, Any]:
    """One forgetting pass. Returns counts for the cycle report."""
    cfg = core.config.lifecycle
    now = time.time() if now is None else now
    s = scan(reader, now, cfg.strength_half_life_days)
    report: dict[str, Any] = {"scanned": len(s.ids), "updated": 0, "demoted": 0,
                              "archived": 0, "deleted": 0, "over_budget_users": 0}
    removing = cfg.forget_action != "none"
    gone = np.nonzero(s.strength < cfg.archive_threshold)[0] if removing else np.zeros(0, int)
    # Memories about to leave keep their old strength: writing it first would double the
    # writes of a cycle that archives most of the store.
    changed = np.abs(s.strength - s.old_strength) > 0.005
    changed[gone] = False
    for part in pacing.Pacer(core.store).batches(np.nonzero(changed)[0], deadline):
        with pacing.between_searches(core):
            core.store.set_strengths(dict(zip(s.rowid[part].tolist(), s.strength[part].tolist(),
                                              strict=True)))
        report["updated"] += len(part)
    if changed.sum() > report["updated"]:
        report["stopped"] = "budget"
        return report

    def why(i: int, limit: float, what: str) -> str:
        return (f"strength {s.strength[i]:.3f} < {limit} ({what}); importance "
                f"{s.importance[i]:.2f}")

    # Below the archive threshold a memory leaves at once (the archive keeps its text for
    # an undo); between the two thresholds it loses its text.
    floor = cfg.archive_threshold if removing else -1.0
    weak = np.nonzero((s.strength < cfg.forget_threshold) & (s.strength >= floor)
                      & ~s.lossy)[0].tolist()
    report["demoted"] += _demote(core, s, weak, deadline, cycle,
                                 lambda i: why(i, cfg.forget_threshold, "demote threshold"))
    if removing:
        report["archived" if cfg.forget_action == "archive" else "deleted"] += _remove(
            core, s, gone.tolist(), deadline, cycle,
            lambda i: why(i, cfg.archive_threshold, f"{cfg.forget_action} threshold"))
    if cfg.budget_bytes_per_user is not None:
        _enforce_budget(core, s, deadline, cycle, report)
    return report


def _demote(core: Core, s: Scan, idx: list[int], deadline: float, cycle: str,
            reason: Any) -> int:
    done = 0
    for part in pacing.Pacer(core.store).batches(idx, deadline):
        done += len(actions.demote(core, [s.ids[i] for i in part],
                                   {s.ids[i]: reason(i) for i in part}, cycle=cycle, undoable=True,
                                   reconstruct_text=False))
        s.lossy[part] = True
        s.nbytes[part] = s.vector_bytes[part]
    return done


def _remove(core: Core, s: Scan, idx: list[int], deadline: float, cycle: str,
            reason: Any) -> int:
    done = 0
    delete = core.config.lifecycle.forget_action == "delete"
    with actions.Unindexer(core) as later:
        for part in pacing.Pacer(core.store).batches(idx, deadline):
            if delete:
                with core.lock:
                    purge.delete(core, [s.ids[i] for i in part], None, finish=False)
                core.store.log_events("forget", [(s.ids[i], s.users[i], reason(i) + "; deleted",
                                                  None) for i in part], cycle)
            else:
                actions.archive(core, [s.ids[i] for i in part],
                                {s.ids[i]: reason(i) for i in part}, cycle=cycle,
                                action="forget", unindex=later)
            s.nbytes[part] = 0
            done += len(part)
    return done


def _enforce_budget(core: Core, s: Scan, deadline: float, cycle: str,
                    report: dict[str, Any]) -> None:
    """Fit each user in the budget: when the vectors alone exceed it, the least valuable
    memories leave first (dropping text could not be enough); then texts are dropped
    from the least valuable up."""
    budget = core.config.lifecycle.budget_bytes_per_user
    assert budget is not None
    users = np.asarray(s.users, dtype=object)
    priority = s.strength * (0.5 + s.importance)
    removed = "archived" if core.config.lifecycle.forget_action != "delete" else "deleted"
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
        report[removed] += _remove(core, s, leave, deadline, cycle,
                                   lambda j, why=why: why + f"{priority[j]:.3f}")
        report["demoted"] += _demote(core, s, drop, deadline, cycle,
                                     lambda j, why=why: why + f"{priority[j]:.3f}")
        report.setdefault("budget", {})[user] = {"bytes": used, "budget": budget}


def days_until_demotion(importance: float, recalls: int, half_life_days: float,
                        threshold: float) -> float:
    """How long an untouched memory keeps its text (for docs and explain output)."""
    stability = half_life_days * (1 + IMPORTANCE_GAIN * importance) * (1 + math.log1p(recalls))
    return stability * math.log2(1 / threshold)
