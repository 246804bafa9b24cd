"""``latentmem bench fit-relevance``: fit the calibrated-relevance model
(latentmem/retrieve/relevance.py) and say how well it is calibrated out of sample.

Data. Every question with evidence of the LoCoMo file (``--data``) and, with
``--longmemeval``, of a LongMemEval file: the top ``FIT_DEPTH`` hits of latentmem's own
search (the shipped ranking, the learned stage on), an evidence turn a positive and any
other hit a negative. Questions without evidence in the store (LoCoMo category 5,
LongMemEval's ``_abs``) are not fitted on; their share below each threshold is reported.

Fit. Unweighted L2 logistic regression by Newton's method (deterministic). Before the
model is written, the same fit runs in folds: each LoCoMo conversation left out in turn,
LongMemEval's questions in five folds by a hash of their id; every question is scored by
the model that did not see it, and those cross-validated figures are printed and stored
in the file beside the fitted (in-sample) ones.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.bench import calibration as C
from latentmem.bench.report import stamp, table
from latentmem.retrieve import relevance as R

OUT = Path(__file__).resolve().parent.parent / "data" / "relevance.json"
FOREIGN_CROSS = 10  # questions of the other data set asked of each unit, at most


def collect(args: argparse.Namespace, units: list[Any], name: str) -> C.Collector:
    from tqdm import tqdm

    from latentmem.bench.cli import _setup, prewarm
    from latentmem.bench.runner import run_system

    setup = _setup(args)
    prewarm(setup, units, args.quiet)
    collector = C.Collector(keep=True)
    total = sum(len(u.questions) for u in units)
    with tqdm(total=total, desc=name, unit="q", file=sys.stderr, disable=args.quiet) as bar:
        run_system("latentmem", units, setup, [10], 1000, C.FIT_DEPTH, bar.update, collector)
    for s in collector.samples:
        s.unit = f"{name}/{s.unit}"
    return collector


def with_foreign(units: list[Any], share: float, pool: list[Any] | None = None) -> list[Any]:
    """Each unit also asked ``share`` of the next unit's questions, whose answers it does
    not hold (category "foreign", every hit a negative), and with ``pool`` (the other data
    set's questions) a slice of those, about another world altogether: without them the
    model only sees questions whose answer is in the store, and cannot learn that a weak
    best match means nothing here is relevant."""
    from dataclasses import replace

    if share <= 0 or len(units) < 2:
        return units
    out = []
    step = max(1, round(1 / share))
    for i, unit in enumerate(units):
        other = [q for q in units[(i + 1) % len(units)].questions if not q.apart][::step]
        if pool:
            other += [q for q in pool if not q.apart][i::len(units)][:FOREIGN_CROSS]
        foreign = [replace(q, id=f"{q.id}@{unit.name}", category="foreign", apart=True)
                   for q in other]
        out.append(replace(unit, questions=[*unit.questions, *foreign]))
    return out


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.bench.locomo import load_locomo
    from latentmem.bench.longmemeval import load_longmemeval

    started = stamp()
    cached = Path(args.samples) if args.samples else None
    if cached is not None and cached.exists():
        with cached.open("rb") as read:  # this command's own file (--samples), not user input
            parts = pickle.load(read)  # noqa: S301
        print(f"read the searched questions from {cached}")
    else:
        locomo = load_locomo(args.data)
        lme = load_longmemeval(args.longmemeval, None, args.per_type) if args.longmemeval else []
        lme_questions = [q for u in lme for q in u.questions]
        locomo_questions = [q for u in locomo for q in u.questions]
        parts = {"locomo": collect(args, with_foreign(locomo, args.foreign, lme_questions),
                                   "locomo")}
        if lme:
            parts["longmemeval"] = collect(args, with_foreign(lme, args.foreign,
                                                              locomo_questions), "longmemeval")
        if cached is not None:
            with cached.open("wb") as dump:
                pickle.dump(parts, dump)
    samples = [s for c in parts.values() for s in c.samples]
    for s in samples:  # the features as this code computes them
        s.x = R.features(s.query, s.hits)
    fit = [s for s in samples if not s.apart or s.category == "foreign"]
    model = R.fit(np.vstack([s.x for s in fit]), np.concatenate([s.y for s in fit]),
                  l2=args.l2, weights=C.balanced(fit))
    # Cross-validated: LoCoMo's conversations are its folds, LongMemEval's questions are
    # hashed into five; one fold at a time, every other part's questions are fitted on.
    cv_pred = C.cross_validated(samples, args.l2)
    rows, figures = [], {}
    for name in parts:
        idx = [i for i, s in enumerate(samples) if s.unit.startswith(name + "/")]
        part = [samples[i] for i in idx]
        fitted = C.figures(part, [model.predict(s.x) for s in part])
        cv = C.figures(part, [cv_pred[i] for i in idx])
        figures[name] = {"fitted": _short(fitted), "cross_validated": _short(cv)}
        for label, f in (("fitted", fitted), ("cross-validated", cv)):
            rows.append([name, label, f.get("questions"), f.get("ece"), f.get("precision@0.5"),
                         f.get("recall@0.5"), f.get("no_evidence_below@0.5")])
    print(table(rows, ["data", "model", "questions", "ECE", "precision@0.5", "recall@0.5",
                       "no-evidence below 0.5"]))
    model = R.Calibrator(model.weights, model.bias, model.mean, model.scale, meta={
        "command": "latentmem bench fit-relevance " + " ".join(sys.argv[3:]),
        "data": {"locomo": str(args.data), "longmemeval": args.longmemeval},
        "examples": int(sum(len(s.y) for s in fit)),
        "positives": int(sum(s.y.sum() for s in fit)),
        "depth": C.FIT_DEPTH, "l2": args.l2, "fitted": started, "figures": figures,
    })
    out = Path(args.out)
    out.write_text(model.to_json())
    print(f"wrote {out}")
    print(json.dumps(dict(zip(R.FEATURES, [round(w, 3) for w in model.weights], strict=True))))
    return 0


def _short(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k != "reliability"}


def add_parser(sub: Any) -> None:
    from latentmem.bench.cli import engine_args

    p = sub.add_parser("fit-relevance", help="fit the calibrated-relevance model")
    p.add_argument("--data", required=True, help="LoCoMo JSON (every conversation is used)")
    p.add_argument("--longmemeval", default=None, help="LongMemEval JSON or JSON.gz (optional)")
    p.add_argument("--per-type", type=int, default=None,
                   help="LongMemEval: at most N questions of each type")
    p.add_argument("--l2", type=float, default=1.0, help="L2 penalty (standardised features)")
    p.add_argument("--foreign", type=float, default=0.5,
                   help="share of the next conversation's questions each LoCoMo store is "
                        "also asked (no answer there: negatives); 0 for none")
    p.add_argument("--samples", default=None, metavar="FILE",
                   help="keep the searched questions here and read them back next time, so a "
                        "change of features is refitted without searching again")
    p.add_argument("--out", default=str(OUT), help=f"where to write the model (default {OUT})")
    engine_args(p)
    p.set_defaults(func=run_cli)
