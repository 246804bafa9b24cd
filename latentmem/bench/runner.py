"""Running systems over benchmark units and aggregating the figures.

A *unit* is what gets a fresh store: one LoCoMo conversation, or one
LongMemEval question with its haystack. Each question is answered with one
``search`` (k = the largest k asked for) and one ``context`` at the budget.
Questions in the ``apart`` group (LoCoMo category 5, LongMemEval abstention)
are answered the same way but reported separately, never in the overall mean.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from latentmem.bench import metrics as M
from latentmem.bench.calibration import Collector
from latentmem.bench.systems import BenchSetup, Session, System, make_system


@dataclass
class Question:
    id: str
    category: str
    text: str
    gold: list[str]  # turn keys
    gold_texts: list[str]
    gold_sessions: list[str] = field(default_factory=list)
    apart: bool = False
    asked_at: datetime | None = None  # when the data says the question was asked


@dataclass
class Unit:
    name: str
    sessions: list[Session]
    questions: list[Question]


@dataclass
class QuestionResult:
    question: Question
    ranked: list[str]
    context: str
    search_ms: float
    context_ms: float


def session_of(key: str) -> str:
    return key.rsplit("#", 1)[0]


def score_question(r: QuestionResult, ks: Sequence[int]) -> dict[str, float]:
    q = r.question
    out: dict[str, float] = {}
    if q.gold:  # LongMemEval has questions whose answer no turn holds
        for k in ks:
            out[f"recall@{k}"] = M.recall_at_k(r.ranked, q.gold, k)
            out[f"recall_all@{k}"] = M.recall_all_at_k(r.ranked, q.gold, k)
        out["ndcg@10"] = M.ndcg_at_k(r.ranked, q.gold, 10)
        out["context_recall"] = M.context_recall(r.context, q.gold_texts)
    if q.gold_sessions:
        # LongMemEval names its turn-level figures turn_recall@k.
        for k in ks:
            if f"recall@{k}" in out:
                out[f"turn_recall@{k}"] = out[f"recall@{k}"]
        sessions = M.dedupe(session_of(k) for k in r.ranked)
        for k in (1, 5, 10):
            out[f"session_recall_any@{k}"] = M.recall_any_at_k(sessions, q.gold_sessions, k)
        out["session_ndcg@10"] = M.ndcg_at_k(sessions, q.gold_sessions, 10)
    return out


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for row in rows for k in row})
    out: dict[str, float] = {"questions": float(len(rows))}
    for key in keys:
        out[key] = round(M.mean([row[key] for row in rows if key in row]), 4)
    return out


def run_system(
    name: str,
    units: Iterable[Unit],
    setup: BenchSetup,
    ks: Sequence[int],
    budget: int,
    search_k: int,
    tick: Callable[[int], None] | None = None,
    collector: Collector | None = None,
) -> dict[str, Any]:
    """``collector``: given each question's hits when the system keeps them
    (``last_hits``), for the calibration figures (bench/calibration.py)."""
    per_q: list[tuple[Question, dict[str, float]]] = []
    search_ms: list[float] = []
    context_ms: list[float] = []
    ingest_s = 0.0
    turns = 0
    for unit in units:
        system: System = make_system(name, setup)
        try:
            t0 = time.perf_counter()
            turns += system.ingest(unit.sessions)
            ingest_s += time.perf_counter() - t0
            for q in unit.questions:
                t1 = time.perf_counter()
                ranked = system.search(q.text, search_k, now=q.asked_at)
                t2 = time.perf_counter()
                hits = getattr(system, "last_hits", None)
                if collector is not None and hits is not None:
                    collector.add(unit.name, q.category, q.apart or not q.gold, q.text, hits,
                                  ranked, q.gold)
                ctx = system.context(q.text, budget, now=q.asked_at)
                t3 = time.perf_counter()
                result = QuestionResult(q, ranked, ctx, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
                search_ms.append(result.search_ms)
                context_ms.append(result.context_ms)
                per_q.append((q, score_question(result, ks)))
                if tick:
                    tick(1)
        finally:
            system.close()
    main = [s for q, s in per_q if not q.apart]
    apart = [s for q, s in per_q if q.apart]
    by_cat: dict[str, list[dict[str, float]]] = defaultdict(list)
    for q, s in per_q:
        if not q.apart:
            by_cat[q.category].append(s)
    apart_by_cat: dict[str, list[dict[str, float]]] = defaultdict(list)
    for q, s in per_q:
        if q.apart:
            apart_by_cat[q.category].append(s)
    summary: dict[str, Any] = aggregate(main)
    summary["questions"] = len(main)
    summary.update({
        "by_category": {c: aggregate(rows) for c, rows in sorted(by_cat.items())},
        "apart": {c: aggregate(rows) for c, rows in sorted(apart_by_cat.items())},
        "apart_overall": aggregate(apart) if apart else {},
        "search_ms_p50": round(M.percentile(search_ms, 50), 3),
        "search_ms_p95": round(M.percentile(search_ms, 95), 3),
        "context_ms_p50": round(M.percentile(context_ms, 50), 3),
        "context_ms_p95": round(M.percentile(context_ms, 95), 3),
        "ingest_turns": turns,
        "ingest_seconds": round(ingest_s, 3),
        "ingest_turns_per_s": round(turns / ingest_s, 2) if ingest_s else None,
        "search_ms": [round(x, 3) for x in search_ms],
    })
    return summary


def ratios(systems: dict[str, dict[str, Any]], primary: str, keys: Sequence[str]) -> dict[str, Any]:
    """primary / baseline for each quality key and each other system of the same run."""
    out: dict[str, Any] = {}
    base = systems[primary]
    for name, other in systems.items():
        if name == primary:
            continue
        out[name] = {
            key: round(base[key] / other[key], 3) if other.get(key) else None
            for key in keys if key in base
        }
    return out
