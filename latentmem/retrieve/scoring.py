"""Fusion of first-stage rankings and multi-factor rescoring.

Reciprocal rank fusion (Cormack et al. 2009): each retriever contributes
1 / (k + rank). It needs no score calibration between cosine and BM25, which
live on unrelated scales. The fused value is divided by its maximum (first in
every list), so ``relevance`` is in [0, 1] and the factor weights in
``ScoringWeights`` read as shares of the final score:

    score = w_rel * relevance + w_rec * recency + w_imp * importance + w_acc * access

* recency    = 0.5 ** (age_days / half_life), age measured from ``as_of`` or,
               when not given, from the newest candidate, so old archives are
               not all flattened to zero by the wall clock;
* importance = the record's importance in [0, 1];
* access     = log(1 + access_count) / log(1 + 20), capped at 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from latentmem.config import ScoringWeights


def rrf(rankings: Sequence[Sequence[int]], k: int) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    return fused


def recency(event: datetime | None, reference: datetime | None, half_life_days: float) -> float:
    if event is None or reference is None or half_life_days <= 0:
        return 0.0
    age_days = max(0.0, (reference - event).total_seconds() / 86400.0)
    return 0.5 ** (age_days / half_life_days)


def access_factor(count: int) -> float:
    return min(1.0, math.log1p(max(0, count)) / math.log1p(20))


def rescore(
    event_time: datetime | None,
    importance: float,
    access_count: int,
    relevance: float,
    weights: ScoringWeights,
    reference: datetime | None,
) -> tuple[float, dict[str, float]]:
    parts = {
        "relevance": relevance,
        "recency": recency(event_time, reference, weights.recency_half_life_days),
        "importance": importance,
        "access": access_factor(access_count),
    }
    score = (
        weights.relevance * parts["relevance"]
        + weights.recency * parts["recency"]
        + weights.importance * parts["importance"]
        + weights.access * parts["access"]
    )
    return score, parts


def rescore_many(
    event_times: Sequence[float | None],
    importance: Sequence[float],
    access_counts: Sequence[int],
    relevance: Sequence[float],
    weights: ScoringWeights,
    reference: float | None,
) -> list[tuple[float, float, float, float, float]]:
    """``rescore`` for many candidates at once (Unix times): (score, relevance, recency,
    importance, access) per candidate. Vectorised, because a search rescores a few hundred
    candidates and per-candidate Python calls cost milliseconds."""
    rel = np.asarray(relevance, dtype=np.float64)
    imp = np.asarray(importance, dtype=np.float64)
    acc = np.minimum(1.0, np.log1p(np.maximum(np.asarray(access_counts, dtype=np.float64), 0))
                     / math.log1p(20))
    rec = np.zeros_like(rel)
    if reference is not None and weights.recency_half_life_days > 0:
        ev = np.array([np.nan if t is None else t for t in event_times], dtype=np.float64)
        age = np.maximum(0.0, (reference - ev) / 86400.0)
        rec = np.where(np.isnan(ev), 0.0, 0.5 ** (age / weights.recency_half_life_days))
    score = (weights.relevance * rel + weights.recency * rec + weights.importance * imp
             + weights.access * acc)
    return list(zip(score.tolist(), rel.tolist(), rec.tolist(), imp.tolist(), acc.tolist(),
                    strict=True))
