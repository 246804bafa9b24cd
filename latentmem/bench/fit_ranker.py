"""``latentmem bench fit-ranker``: fit the last-stage model (latentmem/retrieve/learned.py).

Data. The fit part of a LoCoMo file only (``--fit``, default conv-26 and
conv-30, the conversations every other default was chosen on); the other
conversations are never read, so the held-out column of ``bench ablate`` stays
held out. Each question of categories 1-4 is searched with the learned stage
switched off; its top ``--depth`` hits are the examples, an evidence turn is a
positive, every other hit a negative.

Fit. Logistic regression on standardised features, positives weighted up to
balance the classes (about 2% of the examples are evidence), L2 penalty,
full-batch gradient descent from zero for a fixed number of steps: no random
state, so the same data gives the same file. The file records the command,
data, commit and the fit part's recall before and after.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.bench import metrics as M
from latentmem.bench.report import stamp
from latentmem.retrieve.learned import FEATURES, Ranker, features


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0,
                 steps: int = 500, rate: float = 0.5) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """(weights, bias, mean, scale) of a class-balanced logistic model of ``y`` on ``x``."""
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("need both positive and negative examples to fit")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    weight = np.where(y > 0, (1 - y.mean()) / y.mean(), 1.0)
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        g = (p - y) * weight
        w -= rate * (z.T @ g / len(y) + l2 * w / len(y))
        b -= rate * float(g.mean())
    return w, b, mean, scale


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.bench.cli import _setup, prewarm
    from latentmem.bench.locomo import load_split
    from latentmem.bench.systems import LatentMemSystem

    units, fit = load_split(args.data, args.fit)
    units = [u for u in units if u.name in fit]
    started = stamp()
    setup = _setup(args)
    setup.settings["learned_rerank"] = False
    prewarm(setup, units, args.quiet)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    lists: list[tuple[list[str], list[str]]] = []
    for unit in units:
        system = LatentMemSystem(setup)
        try:
            system.ingest(unit.sessions)
            for q in unit.questions:
                if q.apart:
                    continue
                hits = system.memory.search(q.text, user_id="bench", k=args.depth, track_access=False)
                keys = [h.record.metadata["key"] for h in hits]
                xs.append(features([h.score for h in hits],
                                   [None if h.text is None else len(h.text) for h in hits],
                                   ["?" in (h.text or "") for h in hits],
                                   [h.record.speaker for h in hits]))
                ys.append(np.array([k in q.gold for k in keys], dtype=np.float64))
                lists.append((keys, list(q.gold)))
        finally:
            system.close()
    x, y = np.concatenate(xs), np.concatenate(ys)
    w, b, mean, scale = fit_logistic(x, y, args.l2, args.steps)
    ranker = Ranker(tuple(w.tolist()), b, tuple(mean.tolist()), tuple(scale.tolist()), args.depth)
    before: dict[str, list[float]] = {"recall@5": [], "recall@10": []}
    after: dict[str, list[float]] = {"recall@5": [], "recall@10": []}
    for xq, (keys, gold) in zip(xs, lists, strict=True):
        order = np.argsort(-ranker.logits(xq), kind="stable")
        reordered = [keys[i] for i in order]
        for k in (5, 10):
            before[f"recall@{k}"].append(M.recall_at_k(keys, gold, k))
            after[f"recall@{k}"].append(M.recall_at_k(reordered, gold, k))
    summary = {name: {k: round(M.mean(v), 4) for k, v in part.items()}
               for name, part in (("before", before), ("after", after))}
    meta: dict[str, Any] = {
        "command": "latentmem bench fit-ranker " + " ".join(sys.argv[3:]),
        "data": str(args.data), "fit": sorted(fit), "questions": len(lists),
        "examples": int(len(y)), "positives": int(y.sum()), "l2": args.l2, "steps": args.steps,
        "fit_part_recall": summary, **started,
    }
    ranker = replace(ranker, meta=meta)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(ranker.to_json())
    for name, value in zip(FEATURES, ranker.weights, strict=True):
        print(f"{name:16s} {value:+.3f}")
    print(f"fit part ({', '.join(sorted(fit))}, {len(lists)} questions): "
          f"R@10 {summary['before']['recall@10']:.3f} -> {summary['after']['recall@10']:.3f}, "
          f"R@5 {summary['before']['recall@5']:.3f} -> {summary['after']['recall@5']:.3f}; "
          f"wrote {args.out}")
    return 0


def add_parser(subparsers: Any) -> None:
    from latentmem.bench.ablate import split_args
    from latentmem.bench.cli import engine_args

    p = subparsers.add_parser("fit-ranker", help="fit the last-stage ranking model on LoCoMo's fit part")
    split_args(p, "the only conversations read")
    p.add_argument("--out", default="latentmem/data/ranker.json", help="where the model is written")
    p.add_argument("--depth", type=int, default=100, help="hits per question the model reorders")
    p.add_argument("--l2", type=float, default=1.0, help="L2 penalty")
    p.add_argument("--steps", type=int, default=500, help="gradient steps")
    engine_args(p)
    p.set_defaults(func=run_cli)
