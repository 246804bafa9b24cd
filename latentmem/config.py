"""Settings: defaults, then ``<home>/config.json``, then ``LATENTMEM_*`` env, then arguments.

Only settings that must stay fixed for a store's lifetime (the embedder) are
written into the store itself; the rest may change between runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from latentmem.errors import InvalidInputError

DEFAULT_HOME = ".latentmem"


def resolve_home(path: str | os.PathLike[str] | None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get("LATENTMEM_HOME")
    return Path(env) if env else Path(DEFAULT_HOME)


@dataclass(frozen=True)
class ScoringWeights:
    """Weights of the multi-factor rescoring. ``relevance`` is the fused dense+BM25 score
    normalised to [0, 1]; the others are in [0, 1] too, so the weights read as shares."""

    relevance: float = 1.0
    recency: float = 0.02
    importance: float = 0.05
    access: float = 0.02
    recency_half_life_days: float = 30.0


@dataclass(frozen=True)
class Config:
    embedder: str = "minilm"
    weights: ScoringWeights = field(default_factory=ScoringWeights)
    # First stage. fusion: "linear" (min-max normalised scores, mixed by dense_weight)
    # or "rrf" (reciprocal rank fusion with rrf_k). See latentmem/retrieve/hybrid.py.
    use_dense: bool = True
    use_bm25: bool = True
    fusion: str = "linear"
    dense_weight: float = 0.5
    rrf_k: int = 60
    # Diffusion over `next` edges (latentmem/graph/diffusion.py); 0 hops switches it off.
    diffusion_hops: int = 2
    diffusion_gain: float = 0.5
    diffusion_seeds: int = 50
    # What a memory receives from its neighbours is divided by 1 + its length in characters
    # over this (0: not at all), so long, self-contained memories are lifted less. 600:
    # chosen on the fit halves of LoCoMo dev (conv-26/30: no change) and LongMemEval dev
    # (even-numbered questions: turn R@10 0.810 -> 0.863); BENCHMARKS.md has the rest.
    diffusion_chars: float = 600.0
    # Added to the memories of the one speaker a query names; 0 switches it off.
    speaker_boost: float = 0.3
    # Embed the query as written, names of the scope's speakers included (False: they
    # are taken out of the text embedded for the dense side; see retrieve/hybrid.py).
    speaker_names_in_vector: bool = False
    # Entity hop (latentmem/retrieve/hybrid.py): names in the best `entity_seeds` hits are
    # searched again; 0 gain switches it off.
    entity_gain: float = 0.0
    entity_seeds: int = 5
    entity_terms: int = 3
    entity_hits: int = 20
    # Relevance of a memory that a newer one superseded is multiplied by this.
    superseded_factor: float = 0.5
    # Memories in the window a query's time expression names ("last week", "in May 2023")
    # gain this much relevance (latentmem/retrieve/timequery.py); 0 switches it off.
    time_boost: float = 0.3
    # "before/after <an event>" (no date): the window is this many days before or after
    # the memory that best matches the event; 0 switches event anchors off.
    anchor_days: float = 30.0
    # A memory counts as inside a query's window when the time its text mentions
    # ("yesterday", "last week", read against its own time) is; False: its own time only.
    time_mentions: bool = True
    # Second stage (latentmem/retrieve/rerank.py); 0 switches each off.
    session_boost: float = 0.4
    session_centroid: float = 0.0
    topic_weight: float = 0.0  # the topic level (latentmem/retrieve/topics.py); 0: off
    session_diversity: float = 0.0
    listing_diversity: float = 0.1  # added to session_diversity for listing queries
    mmr: float = 0.0
    rerank_depth: int = 50
    maxsim_weight: float = 0.0  # late-interaction rerank of the top maxsim_depth
    maxsim_depth: int = 20
    # Last stage (latentmem/retrieve/learned.py): a fitted model reorders the top of the
    # ranking; ranker_path None means the one shipped in latentmem/data/ranker.json.
    # learned_in_context: also in the ranking that context() packs (off: it lost context
    # recall on LoCoMo and LongMemEval dev, see BENCHMARKS.md).
    learned_rerank: bool = True
    learned_in_context: bool = False
    # context() for a query that asks "when": note the date each relative time in a packed
    # memory stands for, "(yesterday: Sun 7 May 2023)" (latentmem/retrieve/context.py).
    context_dates: bool = True
    ranker_path: str | None = None
    # Each first-stage retriever contributes this many candidates (at least k).
    candidates: int = 100
    max_text_chars: int = 100_000
    max_batch: int = 10_000
    # Texts longer than this (in embedder tokens) are split into chunk records.
    chunk_tokens: int = 200
    track_access: bool = True
    # When a write is acknowledged: "full" (SQLite synchronous=FULL) after the transaction is
    # on disk, so it survives power loss and an OS crash; "normal" skips that fsync and
    # survives only the process dying (about half a millisecond less per add here).
    durability: str = "full"
    embed_cache: bool = True
    # Where the embedding cache lives; None means inside the store's own database.
    embed_cache_path: str | None = None
    # How vectors are stored: "fp32" | "fp16" | "int8" | "pq" (latentmem/store/codec.py).
    # Fixed in the store when it is created; None means the store's own (fp32 when new).
    vector_tier: str | None = None
    # "lossless" stores text; "lossy" stores vectors and metadata only (latent memory).
    mode: str = "lossless"
    # Gaussian noise added to every stored vector (per dimension, times this; then
    # re-normalised). It lowers how much text an inverter reads back from the vectors
    # (Memory.audit_inversion) at some cost to retrieval; docs/inversion.md has both
    # measured. Queries are not noised. Above 0 the store keeps no cache of clean vectors.
    vector_noise: float = 0.0
    # Lifecycle: sleep cycles (latentmem/lifecycle/). Forgetting: strength half-life of an
    # untouched memory of importance 0; below forget_threshold a memory is demoted (text
    # dropped), below archive_threshold forget_action applies ("archive", "delete", "none").
    strength_half_life_days: float = 30.0
    forget_threshold: float = 0.05
    archive_threshold: float = 0.01
    forget_action: str = "archive"
    # Per-user cap on text + vector bytes; None: no cap.
    budget_bytes_per_user: int | None = None
    # Consolidation of near-duplicates (cosine >= duplicate_threshold) and low-information
    # repeats (>= repeat_threshold); merge mode "lossless" | "lossy"; originals "keep" |
    # "demote" | "archive".
    consolidate: bool = True
    duplicate_threshold: float = 0.95
    repeat_threshold: float = 0.85
    consolidate_mode: str = "lossless"
    consolidate_originals: str = "archive"
    # How long a sleep cycle's demotion can be undone (the text is kept that long).
    undo_days: float = 7.0
    # Memories preloaded per user by each sleep cycle.
    preload_size: int = 256
    # Importance controller (latentmem/lifecycle/controller.py): False keeps the fixed
    # importance prior at add time (feedback is still logged and learned from). The
    # implicit signal (memories packed into a context) counts this much per memory
    # against one explicit feedback; 0 ignores it.
    controller: bool = True
    controller_implicit_weight: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, home: Path, **overrides: Any) -> Config:
        data: dict[str, Any] = {}
        path = home / "config.json"
        if path.exists():
            try:
                data.update(json.loads(path.read_text()))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path} is not valid JSON: {exc}") from exc
        env_embedder = os.environ.get("LATENTMEM_EMBEDDER")
        if env_embedder:
            data["embedder"] = env_embedder
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown config keys {unknown}; expected some of {sorted(known)}"
            )
        data = dict(data)
        weights = data.get("weights")
        if isinstance(weights, dict):
            wknown = {f.name for f in fields(ScoringWeights)}
            bad = sorted(set(weights) - wknown)
            if bad:
                raise InvalidInputError(f"unknown weight keys {bad}; expected {sorted(wknown)}")
            data["weights"] = ScoringWeights(**weights)
        for key, allowed in _CHOICES.items():
            if key in data and data[key] not in allowed:
                raise InvalidInputError(f"{key} must be one of {list(allowed)}, found {data[key]!r}")
        for key in _SHARES:
            value = data.get(key)
            if value is not None and (not isinstance(value, int | float) or not 0 <= value <= 1):
                raise InvalidInputError(f"{key} must be a number in [0, 1], found {value!r}")
        return replace(cls(), **data)


# SQLite's synchronous setting for each (store/sqlite.py).
DURABILITY = {"full": "FULL", "normal": "NORMAL"}

_CHOICES = {
    "durability": tuple(DURABILITY),
    "mode": ("lossless", "lossy"),
    "forget_action": ("archive", "delete", "none"),
    "consolidate_mode": ("lossless", "lossy"),
    "consolidate_originals": ("keep", "demote", "archive"),
}
_SHARES = ("forget_threshold", "archive_threshold", "duplicate_threshold", "repeat_threshold",
           "vector_noise")
