"""A search, stage by stage, and the context packed from it.

1. Time: the window a query names ("last week", "in May 2023"; ``timequery``), or the
   one near an event it names ("before the trip to Oslo": that event's best BM25 match).
2. First stage (``hybrid.retrieve``): dense top-N from the user's vector partition and
   BM25 top-N, both inside the scope; BM25 runs on the side thread while the query is
   embedded and FAISS scans; fusion; diffusion over ``next`` edges; speaker focus.
3. Session and topic evidence (``rerank.session_scale``), then the multi-factor
   rescoring (``scoring.rescore_many``: relevance, recency, importance, access).
4. Optional late interaction (MaxSim over token vectors), diversification (sessions,
   listing queries, MMR), and the learned last stage (``learned.rerank``).
5. The top k read whole; what they were is recorded after the caller has them
   (``Core.in_background``: a search path never writes).

``context`` packs a search's hits into a token budget (``context.pack``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from latentmem.config import ScoringWeights
from latentmem.core import Core
from latentmem.retrieve import hybrid, relevance, rerank, topics
from latentmem.retrieve import learned as learned_stage
from latentmem.retrieve.context import pack
from latentmem.retrieve.intent import asks_when, is_listing
from latentmem.retrieve.person import first_person, names_of
from latentmem.retrieve.scoring import rescore_many
from latentmem.retrieve.timequery import TimeWindow, anchored_window, event_anchor, parse_query_time
from latentmem.store.base import Scope
from latentmem.types import Context, Hit, from_ts

# (score, id, rowid, score parts): one ranked candidate between the stages.
Scored = tuple[float, str, int, dict[str, float]]


def search(core: Core, query: str, scope: Scope, k: int, *, reference: Any = None,
           weights: ScoringWeights | None = None, qvec: np.ndarray | None = None,
           learned: bool | None = None, track_access: bool | None = None,
           threshold: float | None = None) -> list[Hit]:
    """The ranked hits for a checked query inside ``scope``. ``reference``: the moment
    relative times and recency are read from (None: the latest event time among the
    candidates); ``qvec``: the query's vector when the caller embedded it; ``threshold``:
    only the hits whose calibrated relevance reaches it (possibly none)."""
    cfg = core.config.retrieval
    weights = weights or cfg.weights
    n = max(cfg.candidates, k)
    sparse = None
    with core.lock:
        named = hybrid.named_speakers(query, core.store.speakers(scope))
        window = None
        if cfg.time_boost > 0:
            anchor = reference
            if anchor is None:
                latest = core.store.latest_event_time(scope)
                anchor = from_ts(latest) if latest is not None else None
            window = parse_query_time(query, anchor)
            if window is None and cfg.anchor_days > 0:
                window = _event_window(core, query, scope)
        if cfg.use_bm25:
            # BM25 needs only the text: it runs on the other core while the query is
            # embedded on one thread (see encode/minilm.py), then while FAISS scans.
            # 100k memories, 2 cores: p95 35.9 -> 21.6 ms, against embedding on two
            # threads with BM25 started after it.
            sparse = core.beside(core.store.bm25, query, scope, n)
    if qvec is None:
        embedded = query if cfg.speaker_names_in_vector else hybrid.dense_text(query, named)
        mine = None
        if cfg.first_person:
            mine = first_person(embedded, names_of(scope.user_id) + names_of(scope.agent_id))
        if mine is None:
            qvec = core.embedder.embed_batch([embedded])[0]
        else:  # both readings (retrieve/person.py)
            both = core.embedder.embed_batch([embedded, mine]).sum(axis=0)
            qvec = (both / max(float(np.linalg.norm(both)), 1e-12)).astype(np.float32)
    with core.lock:
        core.sync_index()
        cands = hybrid.retrieve(core.store, core.index, scope, query, qvec, cfg, n, window,
                                sparse, named)
    if not cands:
        return []
    if reference is None:
        times = [c.row.event_time for c in cands if c.row.event_time is not None]
        reference = from_ts(max(times)) if times else None
    topic_scores = None
    if cfg.topic_weight > 0:
        kept = core.topics_of(scope.user_id)
        if kept is not None:
            sids = sorted({c.row.session_id for c in cands if c.row.session_id is not None})
            topic_scores = topics.scores(kept, core.store, scope, sids, qvec)
    rerank.session_scale(core.store, scope, qvec, cands, cfg, topic_scores)
    factors = rescore_many(
        [c.row.event_time for c in cands], [c.row.importance for c in cands],
        [c.row.access_count for c in cands], [c.relevance for c in cands], weights,
        reference.timestamp() if reference is not None else None,
    )
    scored: list[Scored] = []
    for cand, (score, rel, rec, imp, acc) in zip(cands, factors, strict=True):
        parts = {"relevance": rel, "recency": rec, "importance": imp, "access": acc,
                 **cand.parts, "final": score}
        scored.append((score, cand.row.id, cand.row.rowid, parts))
    scored.sort(key=lambda x: (-x[0], x[1]))
    tokens = getattr(core.embedder, "token_vectors", None)
    if cfg.maxsim_weight > 0 and tokens is not None and scored:
        scored = _late_interaction(core, query, scored, tokens)
    diversity = cfg.session_diversity
    if cfg.listing_diversity > 0 and is_listing(query):
        diversity += cfg.listing_diversity
    if diversity > 0 or cfg.mmr > 0:
        by_rowid = {c.row.rowid: c.row for c in cands}
        rows = [by_rowid[x[2]] for x in scored]
        vectors = np.stack([r.vector for r in rows]) if cfg.mmr > 0 else None
        order = rerank.diversify([x[0] for x in scored], [r.session_id for r in rows],
                                 vectors, k, diversity, cfg.mmr, max(cfg.rerank_depth, k))
        scored = [scored[i] for i in order]
    rows_of = {c.row.rowid: c.row for c in cands}
    if cfg.learned_rerank if learned is None else learned:
        scored = learned_stage.rerank(scored, rows_of, core.ranker())
        view = {}
    else:  # the calibrated relevance reads the last stage's view all the same
        view = dict(zip([rowid for _, _, rowid, _ in scored],
                        learned_stage.logits(scored, rows_of, core.ranker()), strict=False))
    top = scored[:k]
    records = core.store.get_rows_by_rowid([rowid for _, _, rowid, _ in top])
    # What the calibrated relevance reads beside the score (retrieve/relevance.py): the
    # best cosine any candidate has, each hit's place, and a named speaker who did not
    # say it. Computed on the whole ranking, so a hit's relevance does not depend on k.
    top_dense = max(c.parts.get("dense", 0.0) for c in cands)
    speakers = {c.row.rowid: c.row.speaker for c in cands}
    hits = []
    for position, (score, _, rowid, parts) in enumerate(top):
        if rowid not in records:
            continue
        parts = {**parts, "position": float(position), "top_dense": top_dense}
        if "learned" not in parts:  # the stage did not reorder: its view, not applied
            parts["learned_view"] = view.get(rowid, 0.0)
        if len(named) == 1 and speakers.get(rowid) != named[0]:
            parts["other_speaker"] = 1.0
        hits.append(Hit(records[rowid].record, score, parts))
    relevance.annotate(query, hits, core.calibrator())
    if threshold is not None:
        hits = [h for h in hits if h.relevance is not None and h.relevance >= threshold]
    if cfg.track_access if track_access is None else track_access:
        core.in_background(core.store.touch, [rowid for _, _, rowid, _ in top],
                           time.time(), scope.user_id)
    return hits


def _event_window(core: Core, query: str, scope: Scope) -> TimeWindow | None:
    """"before the trip to Oslo": the window near the memory that best matches "the trip
    to Oslo" (BM25, which needs no model call), or None (retrieve/timequery.py)."""
    found = event_anchor(query)
    if found is None:
        return None
    relation, phrase = found
    hits = core.store.bm25(phrase, scope, 5)
    times = core.store.event_times([rowid for rowid, _ in hits])
    for rowid, _ in hits:
        when = from_ts(times.get(rowid))
        if when is not None:
            return anchored_window(relation, when, core.config.retrieval.anchor_days, phrase)
    return None


def _late_interaction(core: Core, query: str, scored: list[Scored], tokens: Any) -> list[Scored]:
    """Add ``maxsim_weight`` x min-max-normalised MaxSim to the top ``maxsim_depth``."""
    cfg = core.config.retrieval
    depth = min(len(scored), cfg.maxsim_depth)
    head = scored[:depth]
    texts = core.store.index_texts([rowid for _, _, rowid, _ in head])
    vecs = tokens([query, *[texts.get(rowid, "") for _, _, rowid, _ in head]])
    sims = rerank.maxsim(vecs[0], vecs[1:])
    lo, hi = float(sims.min()), float(sims.max())
    rescored = []
    for (score, rid, rowid, parts), sim in zip(head, sims, strict=True):
        value = cfg.maxsim_weight * ((sim - lo) / (hi - lo) if hi > lo else 0.0)
        parts = {**parts, "maxsim": float(sim), "final": score + value}
        rescored.append((score + value, rid, rowid, parts))
    rescored.sort(key=lambda x: (-x[0], x[1]))
    return rescored + scored[depth:]


def context(core: Core, query: str, scope: Scope, budget_tokens: int, k: int, *,
            reference: Any = None, min_relevance: float | None = None) -> Context:
    """The best memories for ``query``, verbatim and dated, packed into a token budget;
    with ``min_relevance``, only those whose calibrated relevance reaches it."""
    cfg = core.config.retrieval
    # The learned stage is fitted for precision at the top of a ranking and prefers
    # long memories; a budget is better spent on more of them (see learned.py).
    hits = search(core, query, scope, k, reference=reference, track_access=False,
                  learned=cfg.learned_rerank and cfg.learned_in_context)
    ctx = pack(query, hits, budget_tokens, dates=cfg.context_dates and asks_when(query),
               min_relevance=min_relevance)
    # Learned from after the caller has its context: a search path never writes.
    core.in_background(core.controller.observe_context, core.store, ctx)
    return ctx


def as_of(scope: Scope, when: Any) -> Scope:
    """``scope`` limited to what was said, and not yet superseded, by ``when``."""
    return replace(scope, until=when.timestamp()) if when is not None else scope
