"""Settings: defaults, then ``<home>/config.json``, then ``LATENTMEM_*`` env, then arguments.

A ``Config`` is four typed sections, each read by the layer it names:
- ``retrieval``: how a search ranks (``retrieve/``);
- ``storage``: what is written and how (the write path, ``store/``);
- ``lifecycle``: sleep cycles and the importance controller (``lifecycle/``);
- ``server``: ``latentmem serve``.

Every value is checked against its field's annotation when a ``Config`` is built:
``Literal`` choices, ``bool``/``int``/``float``/``str`` (an ``int`` is not a ``bool``, a
``"100"`` is not an ``int``), ``None`` where the annotation allows it, and the range an
``Annotated[..., Range(lo, hi)]`` gives. A bad value is an ``InvalidInputError`` that
names the key, what was expected and what was found.

Keys can be given flat (``{"candidates": 50}``, ``Memory(path, candidates=50)``, ``bench
--set candidates=50``) or by section (``{"retrieval": {"candidates": 50}}``): every field
name is unique across the sections, so a flat key has one home. Config files written
before the sections existed (flat) keep working.

Only settings that must stay fixed for a store's lifetime (the embedder, the vector
tier) are written into the store itself; the rest may change between runs.

Rejected: pydantic models. The checks needed are a few dozen lines over dataclasses,
and the engine's import (a cold ``latentmem search``) should not pay for pydantic.
"""

from __future__ import annotations

import json
import math
import os
import types
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from latentmem.errors import InvalidInputError

DEFAULT_HOME = ".latentmem"


def resolve_home(path: str | os.PathLike[str] | None) -> Path | str:
    """Where the store lives: a folder (SQLite), or a database URL kept as given
    (``postgresql://...``). The argument, else ``$LATENTMEM_HOME``, else ``.latentmem``."""
    location = path if path is not None else os.environ.get("LATENTMEM_HOME") or DEFAULT_HOME
    if isinstance(location, str) and location.startswith(("postgresql://", "postgres://")):
        return location
    if "\x00" in str(location):
        raise InvalidInputError(f"the store's home {str(location)[:100]!r} contains a NUL "
                                "character; expected a folder's path or a postgresql:// URL")
    return Path(location)


@dataclass(frozen=True)
class Range:
    """The closed interval a number must lie in (an ``Annotated`` mark)."""

    lo: float | None = None
    hi: float | None = None

    def __str__(self) -> str:
        if self.hi is None:
            return f">= {self.lo:g}"
        if self.lo is None:
            return f"<= {self.hi:g}"
        return f"in [{self.lo:g}, {self.hi:g}]"


Share = Annotated[float, Range(0.0, 1.0)]
NonNegative = Annotated[float, Range(0.0)]
Positive = Annotated[float, Range(1e-12)]
Count = Annotated[int, Range(0)]
AtLeastOne = Annotated[int, Range(1)]

# SQLite's synchronous setting for each (store/sqlite.py).
DURABILITY = {"full": "FULL", "normal": "NORMAL"}


@dataclass(frozen=True)
class ScoringWeights:
    """Weights of the multi-factor rescoring. ``relevance`` is the fused dense+BM25 score
    normalised to [0, 1]; the others are in [0, 1] too, so the weights read as shares."""

    relevance: NonNegative = 1.0
    recency: NonNegative = 0.02
    importance: NonNegative = 0.05
    access: NonNegative = 0.02
    recency_half_life_days: Positive = 30.0


@dataclass(frozen=True)
class RetrievalConfig:
    """How a search ranks (latentmem/retrieve/). BENCHMARKS.md has the figures behind
    the defaults."""

    weights: ScoringWeights = field(default_factory=ScoringWeights)
    # First stage. fusion: "linear" (min-max normalised scores, mixed by dense_weight)
    # or "rrf" (reciprocal rank fusion with rrf_k). See latentmem/retrieve/hybrid.py.
    use_dense: bool = True
    use_bm25: bool = True
    fusion: Literal["linear", "rrf"] = "linear"
    dense_weight: Share = 0.5
    rrf_k: AtLeastOne = 60
    # Each first-stage retriever contributes this many candidates (at least k).
    candidates: AtLeastOne = 100
    # Diffusion over `next` edges (latentmem/graph/diffusion.py); 0 hops switches it off.
    diffusion_hops: Count = 2
    diffusion_gain: NonNegative = 0.5
    diffusion_seeds: Count = 50
    # What a memory receives from its neighbours is divided by 1 + its length in characters
    # over this (0: not at all), so long, self-contained memories are lifted less.
    diffusion_chars: NonNegative = 600.0
    # Added to the memories of the one speaker a query names; 0 switches it off.
    speaker_boost: NonNegative = 0.3
    # Embed the query as written, names of the scope's speakers included (False: they
    # are taken out of the text embedded for the dense side; see retrieve/hybrid.py).
    speaker_names_in_vector: bool = False
    # A query that names the scope's user (or agent) is also read in the first person on
    # the dense side ("where does ana live" -> "where do I live"; retrieve/person.py).
    first_person: bool = True
    # Entity hop (latentmem/retrieve/hybrid.py): names in the best `entity_seeds` hits are
    # searched again; 0 gain switches it off.
    entity_gain: NonNegative = 0.0
    entity_seeds: Count = 5
    entity_terms: Count = 3
    entity_hits: Count = 20
    # Relevance of a memory that a newer one superseded is multiplied by this.
    superseded_factor: Share = 0.5
    # Memories in the window a query's time expression names ("last week", "in May 2023")
    # gain this much relevance (latentmem/retrieve/timequery.py); 0 switches it off.
    time_boost: NonNegative = 0.3
    # "before/after <an event>" (no date): the window is this many days before or after
    # the memory that best matches the event; 0 switches event anchors off.
    anchor_days: NonNegative = 30.0
    # A memory counts as inside a query's window when the time its text mentions
    # ("yesterday", "last week", read against its own time) is; False: its own time only.
    time_mentions: bool = True
    # Second stage (latentmem/retrieve/rerank.py); 0 switches each off.
    session_boost: NonNegative = 0.4
    session_centroid: NonNegative = 0.0
    topic_weight: NonNegative = 0.0  # the topic level (latentmem/retrieve/topics.py); 0: off
    session_diversity: NonNegative = 0.0
    listing_diversity: NonNegative = 0.1  # added to session_diversity for listing queries
    mmr: Share = 0.0
    rerank_depth: AtLeastOne = 50
    maxsim_weight: NonNegative = 0.0  # late-interaction rerank of the top maxsim_depth
    maxsim_depth: AtLeastOne = 20
    # Last stage (latentmem/retrieve/learned.py): a fitted model reorders the top of the
    # ranking; ranker_path None means the one shipped in latentmem/data/ranker.json.
    # learned_in_context: also in the ranking that context() packs (off: it lost context
    # recall on LoCoMo and LongMemEval dev, see BENCHMARKS.md).
    learned_rerank: bool = True
    learned_in_context: bool = False
    ranker_path: str | None = None
    # The calibrated relevance of each hit (latentmem/retrieve/relevance.py); None means the
    # model shipped in latentmem/data/relevance.json.
    relevance_path: str | None = None
    # context() for a query that asks "when": note the date each relative time in a packed
    # memory stands for, "(yesterday: Sun 7 May 2023)" (latentmem/retrieve/context.py).
    context_dates: bool = True
    # A search records what it returned (access counts, preload history).
    track_access: bool = True


@dataclass(frozen=True)
class StorageConfig:
    """What is written and how (the write path and latentmem/store/)."""

    max_text_chars: AtLeastOne = 100_000
    max_batch: AtLeastOne = 10_000
    # Texts longer than this (in embedder tokens) are split into chunk records.
    chunk_tokens: AtLeastOne = 200
    # When a write is acknowledged: "full" (SQLite synchronous=FULL) after the transaction is
    # on disk, so it survives power loss and an OS crash; "normal" skips that fsync and
    # survives only the process dying (about half a millisecond less per add here).
    durability: Literal["full", "normal"] = "full"
    embed_cache: bool = True
    # Where the embedding cache lives; None means inside the store's own database.
    embed_cache_path: str | None = None
    # How vectors are stored (latentmem/store/codec.py). Fixed in the store when it is
    # created; None means the store's own (the profile's when new: store/profiles.py).
    vector_tier: Literal["fp32", "fp16", "int8", "pq"] | None = None
    # What a store spends per memory (latentmem/store/profiles.py): "default" (lossless,
    # compressed texts, int8 vectors) or "compact". Fixed when the store is created; None
    # means the store's own ("default" when new).
    profile: Literal["default", "compact"] | None = None
    # "lossless" stores text; "lossy" stores vectors and metadata only (latent memory).
    mode: Literal["lossless", "lossy"] = "lossless"
    # A user's vectors are scanned in full (exact) below ann_min_vectors; from there they
    # are an IVF index, whose searches read the ann_nprobe lists nearest the query
    # (latentmem/store/ann.py; None: always the full scan). Not fixed in the store: the
    # index is derived, and follows these at the next open.
    ann_min_vectors: AtLeastOne | None = 200_000
    ann_nprobe: AtLeastOne = 64
    # Gaussian noise added to every stored vector (per dimension, times this; then
    # re-normalised). It lowers how much text an inverter reads back from the vectors
    # (Memory.audit_inversion) at some cost to retrieval; docs/inversion.md has both
    # measured. Queries are not noised. Above 0 the store keeps no cache of clean vectors.
    vector_noise: Share = 0.0


@dataclass(frozen=True)
class LifecycleConfig:
    """Sleep cycles and the importance controller (latentmem/lifecycle/)."""

    # Forgetting: strength half-life of an untouched memory of importance 0; below
    # forget_threshold a memory is demoted (text dropped), below archive_threshold
    # forget_action applies.
    strength_half_life_days: Positive = 30.0
    forget_threshold: Share = 0.05
    archive_threshold: Share = 0.01
    forget_action: Literal["archive", "delete", "none"] = "archive"
    # Per-user cap on text + vector bytes; None: no cap.
    budget_bytes_per_user: AtLeastOne | None = None
    # Consolidation of near-duplicates (cosine >= duplicate_threshold) and low-information
    # repeats (>= repeat_threshold).
    consolidate: bool = True
    duplicate_threshold: Share = 0.95
    repeat_threshold: Share = 0.85
    consolidate_mode: Literal["lossless", "lossy"] = "lossless"
    consolidate_originals: Literal["keep", "demote", "archive"] = "archive"
    # How long a sleep cycle's demotion can be undone (the text is kept that long).
    undo_days: NonNegative = 7.0
    # Memories preloaded per user by each sleep cycle.
    preload_size: Count = 256
    # Importance controller (latentmem/lifecycle/controller.py): False keeps the fixed
    # importance prior at add time (feedback is still logged and learned from). The
    # implicit signal (memories packed into a context) counts this much per memory
    # against one explicit feedback; 0 ignores it.
    controller: bool = True
    controller_implicit_weight: NonNegative = 0.05


@dataclass(frozen=True)
class ServerConfig:
    """``latentmem serve`` (its command-line flags override these)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Range(0, 65535)] = 8765
    # Seconds between background sleep cycles (None: none), and each cycle's budget.
    sleep_every: Positive | None = 600.0
    sleep_budget: Positive | None = 30.0
    max_body: AtLeastOne = 8 * 1024 * 1024


SECTIONS: dict[str, type] = {
    "retrieval": RetrievalConfig,
    "storage": StorageConfig,
    "lifecycle": LifecycleConfig,
    "server": ServerConfig,
}
# Flat key -> its section.
_HOME = {f.name: name for name, cls in SECTIONS.items() for f in fields(cls)}
assert len(_HOME) == sum(len(fields(cls)) for cls in SECTIONS.values()), "a key in two sections"


@dataclass(frozen=True)
class Config:
    embedder: str = "minilm"
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` (flat keys or whole sections as dicts), checked."""
        return Config.from_dict(changes, base=self)

    @classmethod
    def load(cls, home: Path | str, **overrides: Any) -> Config:
        """``home``'s ``config.json`` (a folder's; a database URL has none), the env, then
        ``overrides``."""
        data: dict[str, Any] = {}
        path = home / "config.json" if isinstance(home, Path) else None
        if path is not None and path.exists():
            try:
                data.update(json.loads(path.read_text()))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path} is not valid JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise InvalidInputError(f"{path} must hold a JSON object")
        env_embedder = os.environ.get("LATENTMEM_EMBEDDER")
        if env_embedder:
            data["embedder"] = env_embedder
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Config | None = None) -> Config:
        """A checked Config from ``data`` (flat keys, sections, or both; see the module
        docstring) laid over ``base`` (the defaults when None)."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"config must be a dict, found {data.__class__.__name__}")
        base = base or cls()
        unknown = sorted(str(k) for k in data if k not in _HOME and k not in SECTIONS
                         and k != "embedder")
        if unknown:
            raise InvalidInputError(
                f"unknown config keys {unknown}; expected some of "
                f"{sorted(['embedder', *SECTIONS, *_HOME])}")
        per_section: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for name in SECTIONS:
            given = data.get(name)
            if given is None:
                continue
            if isinstance(given, SECTIONS[name]):
                given = asdict(given)  # type: ignore[call-overload]
            if not isinstance(given, dict):
                raise InvalidInputError(f"config section {name!r} must be a dict, "
                                        f"found {given.__class__.__name__}")
            per_section[name].update(given)
        for key, value in data.items():
            if key in _HOME:
                per_section[_HOME[key]][key] = value
        made: dict[str, Any] = {}
        for name, changes in per_section.items():
            current = getattr(base, name)
            made[name] = _checked(SECTIONS[name], changes, current, name) if changes else current
        embedder = data.get("embedder", base.embedder)
        if not isinstance(embedder, str) or not embedder:
            raise InvalidInputError(f"embedder must be a non-empty string, found {embedder!r}")
        return cls(embedder=embedder, **made)


def _checked(cls: type, changes: dict[str, Any], current: Any, where: str) -> Any:
    """``current`` (a section dataclass) with ``changes``, each checked against ``cls``'s
    annotations."""
    hints = get_type_hints(cls, include_extras=True)
    unknown = sorted(set(changes) - set(hints))
    if unknown:
        raise InvalidInputError(f"unknown keys {unknown} in {where}; expected some of {sorted(hints)}")
    values = {}
    for key, value in changes.items():
        values[key] = _value(hints[key], value, key)
    return replace(current, **values)


def _value(hint: Any, value: Any, key: str) -> Any:
    """``value`` checked against ``hint``; raises InvalidInputError naming ``key``."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _value(option, value, key)
            except InvalidInputError as exc:
                errors.append(str(exc))
        raise InvalidInputError(errors[0] if len(errors) == 1 else
                                f"{key}: found {value!r}, which fits none of: " + "; ".join(errors))
    if origin is Annotated:
        inner, *marks = get_args(hint)
        value = _value(inner, value, key)
        for mark in marks:
            if isinstance(mark, Range) and not (
                    (mark.lo is None or value >= mark.lo) and (mark.hi is None or value <= mark.hi)):
                raise InvalidInputError(f"{key} must be a number {mark}, found {value!r}")
        return value
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices or isinstance(value, bool):
            raise InvalidInputError(f"{key} must be one of {list(choices)}, found {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidInputError(f"{key} must be true or false, found {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{key} must be an integer, found {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInputError(f"{key} must be a finite number, found {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InvalidInputError(f"{key} must be a string, found {value!r}")
        return value
    if isinstance(hint, type) and is_dataclass(hint):
        if isinstance(value, hint):
            value = asdict(value)  # type: ignore[call-overload]
        if not isinstance(value, dict):
            raise InvalidInputError(f"{key} must be a dict of {sorted(f.name for f in fields(hint))}, "
                                    f"found {value!r}")
        return _checked(hint, value, hint(), key)
    raise TypeError(f"config field {key}: unsupported annotation {hint!r}")
