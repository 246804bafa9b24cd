"""Second stage over the scored candidates: session-level evidence and diversity.

Session scale (``session_boost``, ``session_centroid``). A conversation session is a coarser unit of
memory than a turn: when several turns of one session match a query, the
session is about the query, and its other matching turns are more likely to
matter than an equally similar turn in a session that matched once. Each
candidate gets ``session_boost * s(session)``, where ``s`` is the mean of the
best two relevances among that session's candidates (one lone match gives
half), normalised to [0, 1] over the sessions present. The alternative,
``session_centroid``, scores a session by the cosine between the query and the
mean vector of all its memories; on LoCoMo dev it lost recall (see the
ablation table in BENCHMARKS.md), we think because long sessions drift over
many topics and their mean matches none of them. It is kept as an option.

Diversity (``session_diversity``, ``mmr``). Listing and counting questions
("what activities does Ana do?") have evidence spread over many sessions;
a ranking that spends its top 10 on one session finds one instance. The
final order is chosen greedily: each pick maximises
``score - session_diversity * (picks already from its session)
- mmr * (max cosine to a pick)``. Only the top ``depth`` candidates are
reordered, so the cost is bounded (depth x k vector products).

Late interaction (``maxsim_weight``). ColBERT-style MaxSim over the embedder's
own contextual token vectors: for each query word piece, its best cosine with
any word piece of the candidate, averaged over the query. It sees *which*
words match, where the pooled vector sees only the average. It needs a model
pass over the top ``maxsim_depth`` candidates at query time (token vectors
are not stored: 30-60 times a sentence vector), so it is off by default; see
BENCHMARKS.md for what it buys and costs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from latentmem.config import RetrievalConfig
from latentmem.retrieve.hybrid import Candidate
from latentmem.store.base import Scope, Store


def session_scores(sessions: Sequence[str | None], relevance: Sequence[float]) -> list[float]:
    """s(session) per candidate: mean of the session's best two relevances, normalised."""
    best: dict[str, list[float]] = defaultdict(list)
    for s, r in zip(sessions, relevance, strict=True):
        if s is not None:
            best[s].append(r)
    agg = {s: sum(sorted(v, reverse=True)[:2]) / 2 for s, v in best.items()}
    top = max(agg.values(), default=0.0)
    if top <= 0:
        return [0.0] * len(sessions)
    return [agg[s] / top if s is not None else 0.0 for s in sessions]


def session_scale(
    store: Store, scope: Scope, qvec: np.ndarray, cands: list[Candidate], config: RetrievalConfig,
    topic_scores: dict[str, float] | None = None,
) -> None:
    """Add the session- and topic-level evidence to each candidate's relevance, in place,
    then renormalise so relevance stays in [0, 1] (the factor weights read as shares).
    ``topic_scores``: session id -> normalised similarity of its topic (retrieve/topics.py)."""
    if config.topic_weight > 0 and topic_scores:
        for cand in cands:
            value = topic_scores.get(cand.row.session_id or "")
            if value is not None:
                cand.parts["topic"] = config.topic_weight * value
                cand.relevance += cand.parts["topic"]
    if config.session_centroid > 0:
        sids = list({c.row.session_id for c in cands if c.row.session_id is not None})
        sims = {sid: float(v @ qvec) for sid, v in store.session_centroids(scope, sids).items()}
        lo, hi = min(sims.values(), default=0.0), max(sims.values(), default=0.0)
        for cand in cands:
            sid = cand.row.session_id
            if sid in sims and hi > lo:
                cand.parts["session_centroid"] = config.session_centroid * (sims[sid] - lo) / (hi - lo)
                cand.relevance += cand.parts["session_centroid"]
    if config.session_boost > 0:
        values = session_scores([c.row.session_id for c in cands], [c.relevance for c in cands])
        for cand, value in zip(cands, values, strict=True):
            cand.parts["session"] = config.session_boost * value
            cand.relevance += cand.parts["session"]
    top = max((c.relevance for c in cands), default=0.0)
    if top > 1.0:
        for cand in cands:
            cand.relevance /= top


def diversify(
    scores: Sequence[float],
    sessions: Sequence[str | None],
    vectors: np.ndarray | None,
    k: int,
    session_diversity: float,
    mmr: float,
    depth: int,
) -> list[int]:
    """Indices of the candidates in their final order (scores must be sorted descending)."""
    n = len(scores)
    pool = list(range(min(n, depth)))
    rest = list(range(len(pool), n))
    if session_diversity <= 0 and (mmr <= 0 or vectors is None):
        return list(range(n))
    chosen: list[int] = []
    per_session: dict[str, int] = defaultdict(int)
    max_sim = np.full(len(pool), -1.0)
    base = np.asarray([scores[i] for i in pool], dtype=np.float64)
    sess = [sessions[i] for i in pool]
    open_ = np.ones(len(pool), dtype=bool)
    while open_.any() and len(chosen) < k:
        penalty = np.array([per_session[s] if s is not None else 0 for s in sess], dtype=np.float64)
        adjusted = base - session_diversity * penalty
        if mmr > 0 and vectors is not None and chosen:
            adjusted -= mmr * np.maximum(max_sim, 0.0)
        adjusted[~open_] = -np.inf
        pick = int(np.argmax(adjusted))
        open_[pick] = False
        chosen.append(pick)
        if sess[pick] is not None:
            per_session[sess[pick]] += 1  # type: ignore[index]
        if mmr > 0 and vectors is not None:
            max_sim = np.maximum(max_sim, vectors[pool] @ vectors[pool[pick]])
    left = [i for i in range(len(pool)) if open_[i]]
    return [pool[i] for i in chosen] + [pool[i] for i in left] + rest


def maxsim(query_tokens: np.ndarray, doc_tokens: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over query tokens of the best cosine with any document token, per document."""
    out = np.zeros(len(doc_tokens), dtype=np.float64)
    for i, doc in enumerate(doc_tokens):
        if len(doc) and len(query_tokens):
            out[i] = float((query_tokens @ doc.T).max(axis=1).mean())
    return out
