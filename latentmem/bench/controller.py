"""``latentmem bench controller``: does learned importance find the turns that matter?

Every LoCoMo conversation goes into one store, as its own user (what a deployment with
several users looks like). Feedback comes from the *fit* conversations only (conv-26 and
conv-30 by default, as in ``bench ablate``): each question of categories 1-4 is searched
(k = 10) once, with the untrained controller; a hit that is an evidence turn of the
question is ``feedback(id, useful=True)``, every other hit ``useful=False``. These events
are streamed through ``Memory.feedback`` in a fixed shuffled order, one shuffle per seed.

Every run and seed starts from the store as ingested: stored importances and the feedback
log are restored first (feedback changes both, and retrieval reads importance).

After 0, 10, 50, 100 and 500 events, every turn of the *held-out* conversations is scored
with the current model, and the figure is the AUC of that importance for telling apart
the turns that are evidence for some question (categories 1-4) from the rest, over all
held-out turns pooled. The reference is ``importance_prior``, the fixed score the
controller starts from. The held-out conversations never give feedback.

More figures, all on the held-out conversations:

* ``with_implicit``: the same stream as in use, where each question's context is packed
  (``Memory.context``, the implicit signal) before the first feedback on its hits.
* ``implicit``: contexts of the fit questions and no feedback at all: what the implicit
  signal alone learns.
* ``retrieval``: recall@5/10 and context recall before and after the held-out memories'
  stored importance is refreshed (``Controller.rescore``) with the model trained on every
  fit event, at the default importance weight and a heavier one. One store holds every
  conversation here, so BM25 statistics span them all, and these figures differ a little
  from ``bench locomo``'s.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.bench import metrics as M
from latentmem.bench.ablate import FIT
from latentmem.bench.report import stamp, table, write_json
from latentmem.encode import segment
from latentmem.lifecycle.controller import FEATURES, scope_features
from latentmem.store.sqlite import Scope

EVENTS = (10, 50, 100, 500)
HEAVY_IMPORTANCE = 0.2


def auc(scores: Any, labels: Any) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _ingest(memory: Any, units: list[Any]) -> None:
    for unit in units:
        for session in unit.sessions:
            msgs = [{"role": t.role, "name": t.speaker, "content": t.text, "event_time": t.time,
                     "metadata": {"key": t.key}} for t in session.turns]
            memory.add(msgs, user_id=unit.name, session_id=session.id)


def _gold(unit: Any) -> set[str]:
    return {g for q in unit.questions if not q.apart for g in q.gold}


def _held_out_features(memory: Any, units: list[Any]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Features, labels and prior of every held-out turn."""
    xs, ys, priors = [], [], []
    for unit in units:
        gold = _gold(unit)
        for rows, x in scope_features(memory.store, Scope(unit.name)):
            xs.append(x)
            ys += [r.record.metadata["key"] in gold for r in rows]
            priors += [segment.importance_prior(r.record.text or "") for r in rows]
    return np.vstack(xs), np.asarray(ys), priors


def _retrieval(memory: Any, units: list[Any], budget: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    weights = memory.config.retrieval.weights
    for name, w in (("default", weights), ("heavy", replace(weights, importance=HEAVY_IMPORTANCE))):
        parts: dict[str, list[float]] = {"recall@5": [], "recall@10": [], "context_recall": []}
        saved = memory.config
        memory.config = saved.replace(weights=w)
        try:
            for unit in units:
                for q in unit.questions:
                    if q.apart:
                        continue
                    hits = memory.search(q.text, user_id=unit.name, k=10, track_access=False)
                    ranked = [h.record.metadata["key"] for h in hits]
                    ctx = memory.context(q.text, user_id=unit.name, budget_tokens=budget)
                    parts["recall@5"].append(M.recall_at_k(ranked, q.gold, 5))
                    parts["recall@10"].append(M.recall_at_k(ranked, q.gold, 10))
                    parts["context_recall"].append(M.context_recall(ctx.text, q.gold_texts))
        finally:
            memory.config = saved
        out[name] = {k: round(M.mean(v), 4) for k, v in parts.items()}
        out[name]["importance_weight"] = w.importance
    return out


Event = tuple[int, str, bool]  # (question number, memory id, useful)


def _shuffled(items: list[Any], seed: int) -> list[Any]:
    out = items[:]
    random.Random(seed).shuffle(out)
    return out


def _snapshot(memory: Any) -> list[tuple[int, float]]:
    """Every memory's stored importance, which feedback changes (and retrieval reads)."""
    memory.settle()
    with memory.store.lock:
        rows = memory.store.conn.execute("SELECT rowid, importance FROM records").fetchall()
    return [(int(r), float(v)) for r, v in rows]


def _restore(memory: Any, saved: list[tuple[int, float]]) -> None:
    """Undo what an earlier run did to the store: stored importances and the feedback log
    (a memory's own feedback is blended into its importance), so that runs, and seeds,
    do not see each other's feedback."""
    memory.settle()
    memory.store.set_importance(saved)
    with memory.store.transaction() as conn:
        conn.execute("DELETE FROM feedback")


def _stream(memory: Any, questions: list[tuple[str, str]], events: list[Event],
            checkpoints: list[int], contexts: bool, budget: int,
            held: tuple[np.ndarray, np.ndarray],
            saved: list[tuple[int, float]] | None = None) -> dict[int, float]:
    """Feed ``events`` to a fresh controller through ``Memory.feedback`` (with
    ``contexts``, each question's context is packed before its first event, as in use);
    the held-out AUC at each checkpoint. ``saved``: the store's state to start from."""
    if saved is not None:
        _restore(memory, saved)
    ctl = memory.controller
    ctl.reset()
    asked: set[int] = set()
    out: dict[int, float] = {}
    given = 0
    for n in checkpoints:
        for qi, rid, useful in events[given:n]:
            user, text = questions[qi]
            if contexts and qi not in asked:
                asked.add(qi)
                memory.context(text, user_id=user, budget_tokens=budget)
            memory.feedback(rid, useful, user_id=user)
        given = n
        ctl.refit()
        out[n] = auc(ctl.score(held[0]), held[1])
    return out


def _summary(runs: dict[int, list[float]], how: Any) -> dict[str, float]:
    return {str(n): round(float(how(v)), 4) for n, v in runs.items()}


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.bench.cli import _setup, prewarm
    from latentmem.bench.locomo import load_split
    from latentmem.memory import Memory

    units, fit_names = load_split(args.data, args.fit)
    fit = [u for u in units if u.name in fit_names]
    held = [u for u in units if u.name not in fit_names]
    started = stamp()
    setup = _setup(args)
    prewarm(setup, units, args.quiet)
    t0 = time.perf_counter()
    home = tempfile.mkdtemp(prefix="lm-bench-controller-")
    memory = Memory(Path(home) / "store", embedder=setup.embedder,
                    embed_cache_path=setup.cache_path, track_access=False, **setup.settings)
    try:
        _ingest(memory, units)
        ctl = memory.controller
        implicit_weight = ctl.implicit_weight
        x_held, y_held, priors = _held_out_features(memory, held)
        questions: list[tuple[str, str]] = []
        events: list[Event] = []
        ctl.implicit_weight = 0.0  # contexts teach only in the runs that say so
        for unit in fit:
            for q in unit.questions:
                if q.apart:
                    continue
                for hit in memory.search(q.text, user_id=unit.name, k=args.k, track_access=False):
                    events.append((len(questions), hit.record.id,
                                   hit.record.metadata["key"] in q.gold))
                questions.append((unit.name, q.text))
        before = _retrieval(memory, held, args.budget)
        saved = _snapshot(memory)
        checkpoints = [0, *[n for n in args.events if n <= len(events)]]
        runs: dict[str, dict[int, list[float]]] = {}
        for run, weight in (("explicit", 0.0), ("explicit+implicit", implicit_weight)):
            runs[run] = {n: [] for n in checkpoints}
            for seed in range(args.seeds):
                ctl.implicit_weight = weight
                curve = _stream(memory, questions, _shuffled(events, seed), checkpoints,
                                weight > 0, args.budget, (x_held, y_held), saved)
                for n, value in curve.items():
                    runs[run][n].append(value)
                if not args.quiet:
                    print(f"{run}, seed {seed}: "
                          + ", ".join(f"{n}: {v:.3f}" for n, v in curve.items()),
                          file=sys.stderr, flush=True)
        # The model trained on every fit event (seed 0's order; the buffer keeps the last
        # 1,000, explicit only) scores the held-out store.
        ctl.implicit_weight = 0.0
        all_events_auc = _stream(memory, questions, _shuffled(events, 0), [len(events)], False,
                                 args.budget, (x_held, y_held), saved)[len(events)]
        learned = {f: round(float(w), 3) for f, w in zip(FEATURES, ctl.weights, strict=True)}
        for unit in held:
            ctl.rescore(memory.store, Scope(unit.name))
        after = _retrieval(memory, held, args.budget)
        # Implicit only: contexts of the fit questions, nothing explicit, on the store as it
        # was before any feedback.
        _restore(memory, saved)
        ctl.reset()
        ctl.implicit_weight = implicit_weight
        implicit: dict[int, float] = {}
        order_q = _shuffled(questions, 0)
        marks = [n for n in (10, 25, 50, 100, 200) if n < len(order_q)] + [len(order_q)]
        done = 0
        for n in marks:
            for user, text in order_q[done:n]:
                memory.context(text, user_id=user, budget_tokens=args.budget)
            done = n
            ctl.refit()  # contexts refit every few; score what has been seen so far
            implicit[n] = round(auc(ctl.score(x_held), y_held), 4)
    finally:
        memory.close()
        shutil.rmtree(home, ignore_errors=True)

    positives = sum(1 for e in events if e[2])
    out: dict[str, Any] = {
        "benchmark": "controller", "data": str(args.data), "fit": sorted(fit_names),
        "held_out": sorted(u.name for u in held), "k": args.k, "seeds": args.seeds,
        "events_available": len(events), "useful_share": round(positives / len(events), 4),
        "held_out_turns": len(y_held), "held_out_evidence_share": round(float(y_held.mean()), 4),
        "prior_auc": round(auc(priors, y_held), 4),
        "auc_by_events": _summary(runs["explicit"], np.mean),
        "auc_by_events_min": _summary(runs["explicit"], np.min),
        "auc_by_events_max": _summary(runs["explicit"], np.max),
        "with_implicit_auc_by_events": _summary(runs["explicit+implicit"], np.mean),
        "with_implicit_auc_by_events_min": _summary(runs["explicit+implicit"], np.min),
        "auc_all_events": round(all_events_auc, 4),
        "implicit_auc_by_contexts": {str(n): v for n, v in implicit.items()},
        "implicit_weight": implicit_weight,
        "weights_after_all_events": learned,
        "retrieval": {"before": before, "after": after},
        "settings": setup.settings, "seconds": round(time.perf_counter() - t0, 1), **started,
    }
    _print(out)
    write_json(out, args.json_out)
    return 0


def _print(out: dict[str, Any]) -> None:
    rows = [["importance_prior (reference)", "-", out["prior_auc"], "", ""]]
    for n, mean in out["auc_by_events"].items():
        rows.append(["controller", n, mean, out["auc_by_events_min"][n],
                     out["auc_by_events_max"][n]])
    rows.append(["controller", f"all {out['events_available']}", out["auc_all_events"], "", ""])
    for n, mean in out["with_implicit_auc_by_events"].items():
        rows.append(["controller, contexts too", n, mean,
                     out["with_implicit_auc_by_events_min"][n], ""])
    print(table(rows, ["importance", "feedback events", "held-out AUC",
                       f"min of {out['seeds']} seeds", "max"]))
    print("\nimplicit only (contexts of fit questions): " + ", ".join(
        f"{n}: {v}" for n, v in out["implicit_auc_by_contexts"].items()))
    rows = []
    for when in ("before", "after"):
        for r in out["retrieval"][when].values():
            rows.append([when, r["importance_weight"], r["recall@5"], r["recall@10"],
                         r["context_recall"]])
    print("\nheld-out retrieval, stored importance before/after rescoring with the model:")
    print(table(rows, ["importance", "weight", "R@5", "R@10", "context recall"]))
    print(f"\nfit: {', '.join(out['fit'])} ({out['events_available']} events, "
          f"{out['useful_share']:.0%} useful); held out: {', '.join(out['held_out'])} "
          f"({out['held_out_turns']} turns, {out['held_out_evidence_share']:.0%} evidence); "
          f"{out['seconds']} s, commit {out['commit']}")


def _events(text: str) -> list[int]:
    from latentmem.bench.cli import _int_list

    return _int_list(text)


def add_parser(subparsers: Any) -> None:
    from latentmem.bench.cli import engine_args

    p = subparsers.add_parser("controller",
                              help="learned importance vs the prior, AUC of evidence turns on LoCoMo")
    p.add_argument("--data", required=True, help="LoCoMo JSON (list of samples)")
    p.add_argument("--fit", default=",".join(FIT),
                   help="conversations that give feedback (default conv-26,conv-30); "
                        "the others are held out")
    p.add_argument("--events", type=_events, default=list(EVENTS),
                   help="feedback counts to measure after (default 10,50,100,500)")
    p.add_argument("--seeds", type=int, default=5, help="shuffles of the event stream")
    p.add_argument("--k", type=int, default=10, help="hits per question that get feedback")
    p.add_argument("--budget", type=int, default=1000, help="context budget in tokens")
    engine_args(p)
    p.set_defaults(func=run_cli)
