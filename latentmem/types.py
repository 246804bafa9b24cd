"""The data model: Record, Edge, Hit, Context, Receipt.

Times are timezone-aware UTC ``datetime`` objects in Python and Unix seconds
(REAL) in the store. ``event_time`` is when a thing happened (given by the
caller, or the time of recording when not given); ``created_at`` is when
latentmem recorded it. The two differ for imported conversations, back-filled
notes and anything told after the fact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

Level = Literal["turn", "session", "topic", "fact", "merged"]
LEVELS: tuple[str, ...] = ("turn", "session", "topic", "fact", "merged")
EdgeType = Literal["next", "causal", "entity", "similar", "merged_from", "supersedes"]
EDGE_TYPES: tuple[str, ...] = ("next", "causal", "entity", "similar", "merged_from", "supersedes")


def to_ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def from_ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass
class Record:
    id: str
    user_id: str
    text: str | None
    agent_id: str | None = None
    session_id: str | None = None
    level: str = "turn"
    parent_id: str | None = None
    title: str = ""
    type: str = "note"
    summary: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    role: str | None = None
    speaker: str | None = None
    event_time: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    valid_to: datetime | None = None
    superseded_by: str | None = None
    importance: float = 0.5
    access_count: int = 0
    last_accessed_at: datetime | None = None
    strength: float = 1.0
    sources: list[str] = field(default_factory=list)
    content_hash: str = ""
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def lossy(self) -> bool:
        """True when only the vector is kept (the text was never stored or was dropped)."""
        return self.text is None

    def to_dict(self, include_vector: bool = False) -> dict[str, Any]:
        """Plain JSON-able dict; times as ISO-8601 strings."""
        out = asdict(self)
        out.pop("vector")
        for key in ("event_time", "created_at", "updated_at", "valid_to", "last_accessed_at"):
            out[key] = iso(getattr(self, key))
        if include_vector and self.vector is not None:
            out["vector"] = [float(x) for x in self.vector]
        return out


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    type: str
    weight: float = 1.0
    created_at: datetime | None = None


@dataclass
class Hit:
    """One search result. ``components`` holds every number that went into ``score``.

    ``score`` orders the hits of one search and means nothing across searches;
    ``relevance`` is the calibrated probability that the memory helps answer the query
    (retrieve/relevance.py), comparable across queries and stores, so it is what a
    threshold is held against. None where no model gave one."""

    record: Record
    score: float
    components: dict[str, float] = field(default_factory=dict)
    relevance: float | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def text(self) -> str | None:
        return self.record.text

    def explain(self) -> str:
        """One line: the factors the score was computed from, then where relevance came from
        (first-stage ranks, then each boost; ``x`` marks a multiplier)."""
        c = self.components
        parts = []
        if "fused" in c:
            parts.append(f"fused {c['fused']:.3f}")
        if "dense_rank" in c:
            parts.append(f"dense #{int(c['dense_rank'])} (cos {c.get('dense', 0.0):.3f})")
        if "bm25_rank" in c:
            parts.append(f"bm25 #{int(c['bm25_rank'])} ({c.get('bm25', 0.0):.2f})")
        for key, label in (("diffusion", "neighbours"), ("entity", "entity hop"),
                           ("time", "time window"), ("speaker", "speaker"),
                           ("session", "session"), ("session_centroid", "session centroid")):
            if c.get(key):
                parts.append(f"+ {label} {c[key]:.3f}")
        if "superseded" in c:
            parts.append(f"x superseded {c['superseded']:.2f}")
        if "maxsim" in c:
            parts.append(f"maxsim {c['maxsim']:.3f}")
        factors = [f"{name} {c[name]:.2f}" for name in ("relevance", "recency", "importance",
                                                         "access") if name in c]
        return f"score {self.score:.4f} from " + ", ".join(factors) + " | " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.record.id,
            "score": self.score,
            "relevance": self.relevance,
            "components": dict(self.components),
            "record": self.record.to_dict(),
        }


@dataclass
class ContextItem:
    id: str
    text: str
    tokens: int
    score: float
    event_time: datetime | None = None
    session_id: str | None = None
    speaker: str | None = None
    #: The ``[N]`` that marks this memory in ``Context.text``.
    ref: int = 0
    #: The hit's calibrated relevance (``Hit.relevance``).
    relevance: float | None = None


@dataclass
class Context:
    """What the next prompt sees: packed verbatim text plus where each piece came from."""

    query: str
    text: str
    budget_tokens: int
    used_tokens: int
    items: list[ContextItem]
    omitted: list[dict[str, Any]]
    tokenizer: str

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "text": self.text,
            "budget_tokens": self.budget_tokens,
            "used_tokens": self.used_tokens,
            "tokenizer": self.tokenizer,
            "items": [
                {**asdict(item), "event_time": iso(item.event_time)} for item in self.items
            ],
            "omitted": self.omitted,
        }


@dataclass
class Receipt:
    """What ``add`` acknowledges. Once returned, the records are durable in SQLite."""

    ids: list[str]
    timings_ms: dict[str, float]
    cached_embeddings: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
