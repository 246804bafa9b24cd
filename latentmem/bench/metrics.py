"""Retrieval metrics. Pure functions on ranked keys and gold keys, easy to check by hand.

* ``recall_at_k``: fraction of the gold keys found in the top k (LoCoMo's
  turn-level evidence recall; a question with no gold key is skipped by the caller).
* ``recall_all_at_k``: 1 if every gold key is in the top k, else 0.
* ``recall_any_at_k``: 1 if any gold key is in the top k (LongMemEval session level).
* ``ndcg_at_k``: binary-relevance NDCG with log2 discounts; the ideal ranking puts
  all gold keys first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

_EVIDENCE = re.compile(r"D\d+:\d+")


def parse_evidence(items: Iterable[object]) -> list[str]:
    """Evidence ids from LoCoMo QA items, tolerating strings like "D8:6; D9:17"."""
    out: list[str] = []
    for item in items:
        for match in _EVIDENCE.findall(str(item)):
            if match not in out:
                out.append(match)
    return out


def recall_at_k(ranked: Sequence[str], gold: Sequence[str], k: int) -> float:
    if not gold:
        return 0.0
    top = set(ranked[:k])
    return sum(1 for g in set(gold) if g in top) / len(set(gold))


def recall_all_at_k(ranked: Sequence[str], gold: Sequence[str], k: int) -> float:
    return float(bool(gold) and set(gold) <= set(ranked[:k]))


def recall_any_at_k(ranked: Sequence[str], gold: Sequence[str], k: int) -> float:
    return float(bool(set(gold) & set(ranked[:k])))


def ndcg_at_k(ranked: Sequence[str], gold: Sequence[str], k: int) -> float:
    gold_set = set(gold)
    if not gold_set:
        return 0.0
    dcg = sum(1.0 / math.log2(i + 2) for i, key in enumerate(ranked[:k]) if key in gold_set)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(gold_set))))
    return dcg / ideal


def dedupe(keys: Iterable[str]) -> list[str]:
    """Keep the first occurrence: a session-level ranking from a turn-level one."""
    return list(dict.fromkeys(keys))


def context_recall(context: str, gold_texts: Sequence[str]) -> float:
    """Fraction of the gold texts that appear verbatim in the packed context."""
    if not gold_texts:
        return 0.0
    return sum(1 for t in gold_texts if t and t in context) / len(gold_texts)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan
