"""How well latentmem's calibrated relevance (retrieve/relevance.py) is calibrated.

``bench locomo`` and ``bench longmemeval`` collect, for every question, the features
and the shipped model's relevance of the top ``DEPTH`` hits, and whether each hit is an
evidence turn. From them, over the questions with evidence:

* expected calibration error (ten equal-width bins) and the reliability diagram;
* precision and recall at the thresholds 0.3 / 0.5 / 0.7: of the top-``DEPTH`` hits at or
  above the threshold, the share that are evidence; of all the evidence turns, the share
  found in the top ``DEPTH`` at or above it;
* for the questions with no evidence in the store (LoCoMo category 5, LongMemEval's
  ``_abs``): the share whose every hit falls below the threshold, i.e. where a caller
  holding that threshold gets "nothing relevant", which is the right answer.

Beside the shipped model's figures, the same figures *cross-validated*: the model is
refitted in folds on the run's own questions (leave one unit out, at most five folds),
and each question is scored by the model that did not see it. On dev data the shipped
model was fitted on these very questions, so the cross-validated figure is the one that
predicts held-out data; on data the model never saw, the shipped figure is the honest one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.retrieve import relevance as R
from latentmem.types import Hit

DEPTH = 10  # hits per question that the figures are over
FIT_DEPTH = 20  # hits per question a model is fitted on
THRESHOLDS = (0.3, 0.5, 0.7)
FOLDS = 5
# The foreign questions of a data set weigh at most this share of its answerable ones in a
# fit: no more than the answerable ones. Cross-validated against no cap, 0.5, 0.25 and 0.1
# (BENCHMARKS.md, "Calibrated relevance"): smaller shares calibrate LongMemEval a little
# better and let more questions about nothing score above 0.5.
FOREIGN_WEIGHT = 1.0


@dataclass(eq=False)
class Sample:
    """One question's top hits."""

    unit: str
    category: str
    apart: bool  # no evidence in the store (the answer is not there)
    x: np.ndarray  # features, one row per hit
    y: np.ndarray  # 1 = evidence turn
    p: np.ndarray  # the shipped model's relevance
    gold: int  # evidence turns of the question
    query: str = ""
    hits: list[Hit] = field(default_factory=list)  # kept with ``Collector(keep=True)``


@dataclass
class Collector:
    samples: list[Sample] = field(default_factory=list)
    keep: bool = False  # keep each question's hits, so features can be computed again

    def add(self, unit: str, category: str, apart: bool, query: str, hits: list[Hit],
            keys: list[str], gold: list[str]) -> None:
        hits = hits[:FIT_DEPTH]
        wanted = set(gold)
        y = np.array([0.0 if apart else float(k in wanted) for k in keys[:len(hits)]])
        p = np.array([h.relevance if h.relevance is not None else np.nan for h in hits])
        self.samples.append(Sample(unit, category, apart, R.features(query, hits), y, p,
                                   0 if apart else len(wanted), query,
                                   list(hits) if self.keep else []))


def fold_of(unit: str, units: list[str]) -> int:
    """Leave one unit out when there are at most ``FOLDS``; else a stable hash."""
    if len(units) <= FOLDS:
        return units.index(unit)
    return zlib.crc32(unit.encode()) % FOLDS


def folds(samples: list[Sample]) -> list[str]:
    """Each sample's fold. A unit named "data/name" is folded within its data set (the
    fit command pools LoCoMo's conversations with LongMemEval's questions)."""
    parts = [s.unit.split("/", 1) if "/" in s.unit else ["", s.unit] for s in samples]
    members: dict[str, set[str]] = {}
    for data, name in parts:
        members.setdefault(data, set()).add(name)
    ordered = {data: sorted(names) for data, names in members.items()}
    return [f"{data}:{fold_of(name, ordered[data])}" for data, name in parts]


def balanced(samples: list[Sample]) -> np.ndarray:
    """Per hit of ``samples``, a weight that gives each data set ("data/unit") the same
    total: LoCoMo's 760 questions would otherwise drown LongMemEval's hundred. Within a
    data set, its questions without an answer in the store (foreign ones) together weigh
    at most ``FOREIGN_WEIGHT`` times its answerable ones (retrieve/relevance.py says why)."""
    data = [s.unit.split("/", 1)[0] if "/" in s.unit else "" for s in samples]
    hits: dict[str, int] = {}
    answerable: dict[str, int] = {}
    apart: dict[str, int] = {}
    for d, s in zip(data, samples, strict=True):
        hits[d] = hits.get(d, 0) + len(s.y)
        kept = apart if s.apart else answerable
        kept[d] = kept.get(d, 0) + len(s.y)
    share = {d: min(1.0, FOREIGN_WEIGHT * answerable.get(d, 0) / apart[d]) if apart.get(d)
             and answerable.get(d) else 1.0 for d in hits}
    mass = {d: answerable.get(d, 0) + apart.get(d, 0) * share[d] for d in hits}
    total = sum(hits.values())
    return np.concatenate([np.full(len(s.y), (share[d] if s.apart else 1.0) * total
                                   / (len(hits) * mass[d]))
                           for d, s in zip(data, samples, strict=True)])


def cross_validated(samples: list[Sample], l2: float = 1.0) -> list[np.ndarray]:
    """Each sample's relevance from a model fitted on the other folds' answerable
    questions (top ``FIT_DEPTH`` hits)."""
    fold = folds(samples)
    out: list[np.ndarray] = [np.zeros(0)] * len(samples)
    for f in sorted(set(fold)):
        train = [s for s, g in zip(samples, fold, strict=True)
                 if g != f and (not s.apart or s.category == "foreign")]
        if not train or not any(s.y.any() for s in train):
            continue
        model = R.fit(np.vstack([s.x for s in train]), np.concatenate([s.y for s in train]), l2,
                      weights=balanced(train))
        for i, g in enumerate(fold):
            if g == f:
                out[i] = model.predict(samples[i].x)
    return out


def figures(samples: list[Sample], preds: list[np.ndarray]) -> dict[str, Any]:
    answerable = [(s, p[:DEPTH]) for s, p in zip(samples, preds, strict=True)
                  if not s.apart and len(p)]
    out: dict[str, Any] = {"questions": len(answerable)}
    if answerable:
        p = np.concatenate([p for _, p in answerable])
        y = np.concatenate([s.y[:DEPTH] for s, _ in answerable])
        gold = sum(s.gold for s, _ in answerable)
        out.update({
            "hits": len(p), "evidence_rate": round(float(y.mean()), 4),
            "mean_relevance": round(float(p.mean()), 4),
            "ece": round(R.expected_calibration_error(p, y), 4),
            "reliability": R.reliability(p, y),
        })
        for t in THRESHOLDS:
            kept = p >= t
            out[f"precision@{t}"] = round(float(y[kept].mean()), 4) if kept.any() else None
            out[f"recall@{t}"] = round(float(y[kept].sum()) / gold, 4) if gold else None
            out[f"answered@{t}"] = round(_share([bool((q >= t).any()) for _, q in answerable]), 4)
    apart = [(s.category, p[:DEPTH]) for s, p in zip(samples, preds, strict=True) if s.apart]
    if apart:
        out["no_evidence_questions"] = len(apart)
        for t in THRESHOLDS:
            out[f"no_evidence_below@{t}"] = round(
                _share([not bool((q >= t).any()) for _, q in apart]), 4)
        for cat in sorted({c for c, _ in apart}):
            part = [q for c, q in apart if c == cat]
            out[f"no_evidence:{cat}"] = {"questions": len(part), **{
                f"below@{t}": round(_share([not bool((q >= t).any()) for q in part]), 4)
                for t in THRESHOLDS}}
    return out


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def report(collector: Collector) -> dict[str, Any]:
    samples = [s for s in collector.samples if len(s.y)]
    if not samples:
        return {}
    shipped = [s.p for s in samples]
    out: dict[str, Any] = {"depth": DEPTH, "thresholds": list(THRESHOLDS),
                           "model": R.default_calibrator().meta.get("fitted", {}),
                           "shipped": figures(samples, shipped)}
    if len({s.unit for s in samples}) >= 2 and any(s.y.any() for s in samples):
        out["cross_validated"] = figures(samples, cross_validated(samples))
    by_cat: dict[str, Any] = {}
    for cat in sorted({s.category for s in samples if not s.apart}):
        part = [(s, p) for s, p in zip(samples, shipped, strict=True) if s.category == cat]
        by_cat[cat] = {k: v for k, v in figures([s for s, _ in part], [p for _, p in part]).items()
                       if k != "reliability"}
    out["shipped_by_category"] = by_cat
    return out


def plot(cal: dict[str, Any], path: Path, title: str) -> Path:
    """The reliability diagram: observed evidence rate against predicted relevance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for key, label in (("shipped", "shipped model"), ("cross_validated", "cross-validated")):
        bins = [b for b in cal.get(key, {}).get("reliability", []) if b["n"]]
        if bins:
            ece = cal[key]["ece"]
            ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o",
                    label=f"{label} (ECE {ece:.3f})")
    ax.set_xlabel("predicted relevance")
    ax.set_ylabel("observed share of evidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
