"""First-stage retrieval: dense + BM25 candidates, fusion, graph diffusion.

Returns each candidate's relevance in [0, 1] with the numbers behind it; the
multi-factor rescoring (recency, importance, access) happens in the caller.

Fusion. ``linear`` (default): min-max normalise the exact cosine and the BM25
score over the candidate set and mix them, ``w * dense + (1 - w) * bm25``.
``rrf``: reciprocal rank fusion. On LoCoMo dev, linear fusion found 8-10
points more evidence at recall@10 than RRF (0.68 vs 0.60 held out): RRF throws
away how far apart the scores are, and a BM25 hit on a rare name is worth far
more than rank 1 of a flat cosine list. Dense scores are exact for every
candidate (BM25-only ones included) because the stored vectors are read back.

Time. When the query names a time ("last week", "in May 2023"; see
timequery.py), the best dense matches inside that window join the candidates
and every candidate inside it gains ``time_boost``. "Before the trip to Oslo"
names an event instead: Memory.search finds it (BM25) and the window lies near
its time. A candidate is inside when its own time is, or when the time its
text mentions is ("yesterday" in a message of 8 May is 7 May); only the best
``MENTION_DEPTH`` candidates are read for mentions, which bounds the cost
(LongMemEval dev, messages of ~1,000 characters: search p95 5.7 -> 9.6 ms).

Speaker match. When the query names exactly one speaker of the scope ("What
does Melanie do on hikes?"), what that person said gets ``speaker_boost``
added (after diffusion, before normalisation): the question is about them.
Names are matched as whole words against the scope's own speakers, so nothing
is keyed to a data set. LoCoMo dev, held-out part: recall@10 0.737 -> 0.762.

Names out of the query vector. A memory with a speaker is embedded as
"Speaker: text", so a query that names the speaker matches every one of their
memories a little through the name alone, and a short one ("Jon: Agreed!",
"Jon: Bye!") mostly through the name: for "Which cities has Jon visited?" the
top 40 by the first stage were Jon's pleasantries, and the evidence ranked 40th.
The speaker focus is the speaker boost's job, so the dense side embeds the query
with the names of the scope's speakers taken out ("Which cities has visited?");
BM25 keeps them (taking them out there too was no better). LoCoMo dev, fit part
(conv-26/30), context recall at 1,000 tokens: 0.883 -> 0.899
(``Config.speaker_names_in_vector`` restores the old behaviour).
"""

from __future__ import annotations

import re
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from latentmem.config import RetrievalConfig
from latentmem.graph import entities
from latentmem.graph.diffusion import chains, neighbourhood, spread
from latentmem.retrieve.scoring import rrf
from latentmem.retrieve.timequery import TimeWindow, mentioned_window
from latentmem.store.base import LightRow, Scope, Store
from latentmem.store.vector_index import VectorIndex
from latentmem.types import from_ts

# A time window holding more memories than this is too wide to search on its own.
WINDOW_ROWS = 50_000
# Candidates outside a query's window whose text is read for a time it mentions.
MENTION_DEPTH = 50
_WORD = re.compile(r"\w+")


@dataclass
class Candidate:
    row: LightRow
    relevance: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)


def _minmax(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return np.ones_like(values) if hi > 0 else np.zeros_like(values)
    return (values - lo) / (hi - lo)


def _name(speaker: str, query: str) -> re.Pattern[str]:
    """``speaker`` as a whole word (with a possessive "'s") in ``query``. A capitalised
    name must appear capitalised when the query uses capitals at all, so that the speakers
    Will, May or Bill are not named by "what will happen" or "I may go"; an all-lowercase
    query ("what did ana say") and a lowercase speaker ("user") match in any case."""
    ignore = speaker == speaker.lower() or query == query.lower()
    forms = re.escape(speaker) if ignore else \
        f"(?:{re.escape(speaker)}|{re.escape(speaker.upper())})"  # "Ana" or "ANA"
    return re.compile(r"(?<!\w)" + forms + r"(?:'s|\u2019s|'S)?(?!\w)",
                      re.IGNORECASE if ignore else 0)


@lru_cache(maxsize=64)
def _by_first_word(speakers: tuple[str, ...]) -> dict[str, list[str]]:
    """The speakers under the first word of their name, lowercased."""
    index: dict[str, list[str]] = {}
    for sp in speakers:
        first = _WORD.search(sp.lower())
        if first is not None:
            index.setdefault(first.group(0), []).append(sp)
    return index


def named_speakers(query: str, speakers: list[str]) -> list[str]:
    """Speakers of the scope that the query names as a whole word ("what did Ana say").
    Only the speakers whose first word is a word of the query are tried: one pattern per
    speaker made a query in a scope of 10,000 speakers take half a second."""
    index = _by_first_word(tuple(speakers))
    tried = {sp for word in set(_WORD.findall(query.lower())) for sp in index.get(word, ())}
    return [sp for sp in speakers if sp in tried and _name(sp, query).search(query)]


def dense_text(query: str, named: list[str]) -> str:
    """The text embedded for the dense side: ``query`` without the speakers it names
    (and their possessive "'s"), unless nothing would be left."""
    text = query
    for name in named:
        text = _name(name, query).sub(" ", text)
    text = " ".join(text.split())
    return text if re.search(r"\w", text) else query


def retrieve(
    store: Store,
    index: VectorIndex,
    scope: Scope,
    query: str,
    qvec: np.ndarray,
    config: RetrievalConfig,
    n: int,
    window: TimeWindow | None = None,
    sparse_future: Future[list[tuple[int, float]]] | None = None,
    named: list[str] | None = None,
) -> list[Candidate]:
    """``sparse_future``: the BM25 query already running on a worker thread
    (Memory.search starts it just before this, so it overlaps the FAISS scan);
    without it BM25 runs here. ``named``: the scope's speakers the query names, when
    the caller has them already."""
    allowed = store.rowids_in_scope(scope) if scope.narrowed else None
    dense_ids, dense_scores = index.search(scope.user_id, qvec, n, allowed)
    if window is not None and config.use_dense:
        # The best matches inside the window join the candidates even when the words
        # of "what did I do last week" match nothing.
        inside = store.rowids_in_window(scope, window.start.timestamp(), window.end.timestamp(),
                                        WINDOW_ROWS)
        if 0 < len(inside) < WINDOW_ROWS:
            more, _ = index.search(scope.user_id, qvec, max(10, n // 4), inside)
            dense_ids = np.concatenate([dense_ids, more[~np.isin(more, dense_ids)]])
    if not config.use_bm25:
        sparse: list[tuple[int, float]] = []
    elif sparse_future is not None:
        sparse = sparse_future.result()
    else:
        sparse = store.bm25(query, scope, n)
    if not config.use_dense:
        dense_ids, dense_scores = dense_ids[:0], dense_scores[:0]
    dense_rank = {int(r): i for i, r in enumerate(dense_ids, start=1)}
    bm25_rank = {r: i for i, (r, _) in enumerate(sparse, start=1)}
    bm25_score = dict(sparse)
    rowids = list(dict.fromkeys([*dense_rank, *bm25_rank]))
    if not rowids:
        return []
    rows = {r.rowid: r for r in store.light_rows("rowid", rowids)}
    # Only rows of the scope: the vector index is a cache that may still hold a rowid its
    # row has left (archivings leave it in bulk, ``actions.Unindexer``), and a SQLite store
    # written before rowids stopped being reused (``SQLiteStore._next_rowid``) may have
    # given that rowid to another user's memory.
    cands = [Candidate(rows[r]) for r in rowids if r in rows and scope.contains(rows[r])]
    cos = (np.stack([c.row.vector for c in cands]) @ qvec).astype(np.float64) if cands else np.zeros(0)
    bm = np.array([bm25_score.get(c.row.rowid, 0.0) for c in cands])
    if config.fusion == "rrf":
        fused_map = rrf([list(dense_rank), list(bm25_rank)], config.rrf_k)
        best = (int(config.use_dense) + int(config.use_bm25)) / (config.rrf_k + 1)
        fused = np.array([fused_map[c.row.rowid] / best for c in cands])
    else:
        w = config.dense_weight if config.use_bm25 and config.use_dense else float(config.use_dense)
        fused = w * _minmax(cos) + (1 - w) * _minmax(bm)
    for c, f, x, b in zip(cands, fused, cos, bm, strict=True):
        c.parts["dense"] = float(x)
        c.parts["fused"] = float(f)
        if c.row.rowid in dense_rank:
            c.parts["dense_rank"] = float(dense_rank[c.row.rowid])
        if c.row.rowid in bm25_rank:
            c.parts["bm25"] = float(b)
            c.parts["bm25_rank"] = float(bm25_rank[c.row.rowid])
        c.relevance = float(f)
    if config.entity_gain > 0:
        cands = _entity_hop(store, scope, query, qvec, cands, cos, config)
    if config.diffusion_hops > 0 and config.diffusion_gain > 0:
        cands = _diffuse(store, scope, qvec, cands, cos, config)
    if config.superseded_factor < 1.0 and scope.until is None:
        # Superseded memories stay findable (history questions need them) but rank below
        # what replaced them. With as_of, the scope already keeps only what was valid then.
        for c in cands:
            if c.row.valid_to is not None:
                c.parts["superseded"] = config.superseded_factor
                c.relevance *= config.superseded_factor
    if window is not None:
        _in_window(store, window, cands, config)
    if config.speaker_boost > 0:
        if named is None:
            named = named_speakers(query, store.speakers(scope))
        if len(named) == 1:
            for c in cands:
                if c.row.speaker == named[0]:
                    c.parts["speaker"] = config.speaker_boost
                    c.relevance += config.speaker_boost
    top = max((c.relevance for c in cands), default=0.0)
    if top > 0:
        for c in cands:
            c.relevance /= top
    return cands


def _in_window(store: Store, window: TimeWindow, cands: list[Candidate],
               config: RetrievalConfig) -> None:
    """``time_boost`` for every candidate whose time, or (``time_mentions``) the time its
    text mentions, falls in the query's window (see retrieve/timequery.py)."""
    outside = []
    for c in cands:
        if c.row.event_time is None:
            continue
        when = from_ts(c.row.event_time)
        if window.contains(when):
            c.parts["time"] = config.time_boost
            c.relevance += config.time_boost
        else:
            outside.append((c, when))
    if not config.time_mentions or not outside:
        return
    # Reading a mention costs up to ~0.1 ms a memory; the best MENTION_DEPTH are enough.
    outside = sorted(outside, key=lambda x: -x[0].relevance)[:MENTION_DEPTH]
    texts = store.index_texts([c.row.rowid for c, _ in outside])
    for c, when in outside:
        mention = mentioned_window(texts.get(c.row.rowid, ""), when)
        if mention is not None and mention[0] < window.end and window.start < mention[1]:
            c.parts["time"] = config.time_boost
            c.parts["time_mentioned"] = 1.0
            c.relevance += config.time_boost


def _joined(rows: list[LightRow], qvec: np.ndarray, cos: np.ndarray,
            config: RetrievalConfig) -> list[Candidate]:
    """Memories that join after fusion (neighbours, entity mentions): their cosine goes
    through the same min-max normalisation as the first-stage candidates' (``cos``), and
    they have no BM25 share by construction."""
    if not rows:
        return []
    x = np.stack([r.vector for r in rows]) @ qvec
    lo, hi = float(cos.min()), float(cos.max())
    w = config.dense_weight if config.use_bm25 else 1.0
    fused = w * np.maximum(0.0, (x - lo) / (hi - lo)) if hi > lo else np.zeros(len(rows))
    return [Candidate(r, f, {"dense": d, "fused": f})
            for r, d, f in zip(rows, x.tolist(), fused.tolist(), strict=True)]


def _diffuse(
    store: Store,
    scope: Scope,
    qvec: np.ndarray,
    cands: list[Candidate],
    cos: np.ndarray,
    config: RetrievalConfig,
) -> list[Candidate]:
    """Pull in ``next``-neighbours of the best candidates and spread activation to them."""
    hops = config.diffusion_hops
    seeds = [c.row.id for c in sorted(cands, key=lambda c: -c.relevance)]
    seeds = seeds[: config.diffusion_seeds]
    pairs = store.next_pairs_around(seeds, hops)
    forward, backward = chains(pairs)
    by_id = {c.row.id: c for c in cands}
    new_ids = [i for i in neighbourhood(seeds, forward, backward, hops) if i not in by_id]
    if new_ids:
        rows = [r for r in store.light_rows("id", new_ids) if scope.contains(r)]
        for cand in _joined(rows, qvec, cos, config):
            by_id[cand.row.id] = cand
    base = {i: c.relevance for i, c in by_id.items()}
    received = spread(base, forward, backward, hops, config.diffusion_gain)
    scale = config.diffusion_chars
    for i, c in by_id.items():
        # A short turn ("Yes, last Friday!") means what its neighbours say; a long one
        # stands on its own, and lifting it because a neighbour matched only displaces
        # what did match. It receives less the longer it is (see Config.diffusion_chars).
        gate = 1.0 / (1.0 + (c.row.text_chars or 0) / scale) if scale > 0 else 1.0
        c.parts["diffusion"] = received.get(i, 0.0) * gate
        c.relevance = base[i] + c.parts["diffusion"]
    return list(by_id.values())


def _entity_hop(
    store: Store,
    scope: Scope,
    query: str,
    qvec: np.ndarray,
    cands: list[Candidate],
    cos: np.ndarray,
    config: RetrievalConfig,
) -> list[Candidate]:
    """Second hop: the memories that mention the names the best first-hop memories name
    (the ``entity_mentions`` table), weighted by their own similarity to the query.

    "Where did the friend Ana met in Porto move to?" finds the Porto memory, which
    names "Rui"; the answer mentions Rui, not Porto. Names in the query itself and
    the scope's speakers (present everywhere in a conversation) are skipped.
    """
    seeds = sorted(cands, key=lambda c: -c.relevance)[: config.entity_seeds]
    texts = store.index_texts([c.row.rowid for c in seeds])
    skip = set(entities.extract(query)) | {s.lower() for s in store.speakers(scope)}
    low_query = query.lower()
    weight: dict[str, float] = {}
    for c in seeds:
        for ent in entities.extract(texts.get(c.row.rowid, "")):
            if ent in skip or ent in low_query:
                continue
            weight[ent] = max(weight.get(ent, 0.0), c.relevance)
    if not weight:
        return cands
    by_rowid = {c.row.rowid: c for c in cands}
    for ent, source in sorted(weight.items(), key=lambda x: -x[1])[: config.entity_terms]:
        found = store.mentioning(scope, ent, config.entity_hits)
        missing = [r for r in found if r not in by_rowid]
        for joined in _joined(store.light_rows("rowid", missing), qvec, cos, config):
            by_rowid[joined.row.rowid] = joined
        for rowid in found:
            cand = by_rowid.get(rowid)
            if cand is None:
                continue
            # The more similar to the query, the more a mention of the entity is worth.
            gain = config.entity_gain * source * max(0.0, cand.parts.get("dense", 0.0))
            if gain > cand.parts.get("entity", 0.0):
                cand.relevance += gain - cand.parts.get("entity", 0.0)
                cand.parts["entity"] = gain
    return list(by_rowid.values())
