"""The wire format of ``latentmem serve``: a pydantic model for every request body and
answer, from which ``/openapi.json`` is generated. Request models forbid unknown fields
and non-finite numbers; the engine then checks values (ranges, lengths, time formats),
so a request that passes here can still get a 400 that names the field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from latentmem.lifecycle.journal import MAX_EVENT
from latentmem.memory import MAX_K

Time = Annotated[str | float, Field(description="ISO-8601 text or Unix seconds")]
Id = Annotated[str, Field(min_length=1, max_length=256)]


class Body(BaseModel):
    # strict: "10" is not the integer 10, true is not a number (as the engine's own checks).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    error: str = Field(description="the error's kind, e.g. InvalidInputError, NotFoundError")
    message: str


class Scoped(Body):
    user_id: Id | None = Field(None, description="one of the key's users; default: the key's "
                                                 "only user, else 'default'")
    agent_id: Id | None = None
    session_id: Id | None = None


class AddRequest(Scoped):
    text: str | None = Field(None, description="one memory's text; or give messages")
    messages: list[str | dict[str, Any]] | None = Field(
        None, description="texts, or chat messages {role, content, name?, event_time?, metadata?}")
    metadata: dict[str, Any] | None = None
    event_time: Time | None = None
    role: str | None = None
    speaker: str | None = None
    type: str | None = None
    importance: float | None = Field(None, ge=0.0, le=1.0)
    supersedes: str | list[str] | None = None
    vector: list[float] | None = None


class Receipt(Answer):
    ids: list[str]
    timings_ms: dict[str, float]
    cached_embeddings: int = 0


class SearchRequest(Scoped):
    query: str = Field(min_length=1)
    k: int = Field(10, ge=1, le=MAX_K)
    as_of: Time | None = None
    now: Time | None = None
    threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="only hits whose calibrated relevance reaches it (none may)")


class ContextRequest(Scoped):
    query: str = Field(min_length=1)
    budget_tokens: int = Field(1000, ge=1, le=1_000_000)
    k: int | None = Field(None, ge=1, le=MAX_K)
    as_of: Time | None = None
    now: Time | None = None
    min_relevance: float | None = Field(
        None, ge=0.0, le=1.0,
        description="pack only memories whose calibrated relevance reaches it")


class RecordOut(Answer):
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
    metadata: dict[str, Any] = {}
    role: str | None = None
    speaker: str | None = None
    event_time: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    valid_to: str | None = None
    superseded_by: str | None = None
    importance: float | None = 0.5
    access_count: int = 0
    last_accessed_at: str | None = None
    strength: float | None = 1.0
    sources: list[str] = []
    content_hash: str = ""
    vector: list[float] | None = None


class HitOut(Answer):
    id: str
    score: float | None
    relevance: float | None = Field(
        None, description="calibrated probability that the memory helps answer the query")
    components: dict[str, float | None]
    record: RecordOut


class SearchAnswer(Answer):
    hits: list[HitOut]


class ContextItemOut(Answer):
    id: str
    text: str
    tokens: int
    score: float | None
    event_time: str | None = None
    session_id: str | None = None
    speaker: str | None = None
    ref: int = 0
    relevance: float | None = None


class ContextAnswer(Answer):
    query: str
    text: str
    budget_tokens: int
    used_tokens: int
    tokenizer: str
    items: list[ContextItemOut]
    omitted: list[dict[str, Any]]


class UpdateRequest(Body):
    text: str | None = None
    metadata: dict[str, Any] | None = None
    event_time: Time | None = None
    importance: float | None = Field(None, ge=0.0, le=1.0)
    title: str | None = None
    type: str | None = None


class MemoryPage(Answer):
    memories: list[RecordOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at "
                                                "the end")


class Deleted(Answer):
    deleted: int


class Events(Answer):
    id: str
    events: list[dict[str, Any]]


class FeedbackRequest(Body):
    id: Id
    useful: bool


class FeedbackAnswer(Answer):
    id: str
    importance: float | None


class SleepRequest(Body):
    budget: float | None = Field(None, gt=0.0, le=3600.0)
    phases: list[str] | None = None


class UndoRequest(Body):
    event: int = Field(ge=1, le=MAX_EVENT, description="the journal event's number")


class EdgeIO(Body):
    src: Id
    dst: Id
    type: str
    weight: float = 1.0
    created_at: str | None = None


class ExportAnswer(Answer):
    manifest: dict[str, Any]
    records: list[RecordOut]
    edges: list[EdgeIO]


class ImportRequest(Body):
    manifest: dict[str, Any] = Field(description="an export's manifest (embedder and dimension "
                                                 "are checked)")
    records: list[dict[str, Any]] = Field(max_length=100_000)
    edges: list[EdgeIO] = Field(default_factory=list, max_length=1_000_000)
    on_conflict: Literal["error", "skip"] = "error"


class Imported(Answer):
    imported: int


class Health(Answer):
    status: str
    version: str


class SleepStatus(Answer):
    running: bool
    every: float | None = None
    budget: float | None = None
    cycles: int = 0
    errors: int = 0
    last_cycle: str | None = None
    last_error: str | None = None


class KeyRequest(Body):
    tenant: str
    users: list[Id] | None = None
    read_only: bool = False
    admin: bool = False
    label: str = Field("", max_length=200)


class KeyOut(Answer):
    id: str
    tenant: str
    users: list[str] | None
    read_only: bool
    admin: bool
    label: str
    created_at: float
    revoked_at: float | None


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself, shown this once and stored nowhere")


class KeyList(Answer):
    keys: list[KeyOut]


# -- the web explorer's reads (server/explore.py) ---------------------------------------------

class TimelineAnswer(Answer):
    user_id: str
    memories: list[RecordOut]
    inverted: dict[str, str] = Field(description="for each lossy memory on the page: the text "
                                                 "the inverter reads back from its vector")
    inversion_note: str | None = Field(description="why some lossy memories were not inverted")
    next_cursor: str | None


class GraphNode(RecordOut):
    state: Literal["live", "archived"]


class GraphEdge(Answer):
    src: str
    dst: str
    type: str
    weight: float | None


class GraphAnswer(Answer):
    id: str
    depth: int
    truncated: bool = Field(description="true when more memories were in reach than the limit")
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class JournalCycle(Answer):
    cycle: str | None = Field(description="null: actions taken on request, outside a cycle")
    at: str | None
    summary: str | None = Field(description="the cycle's store-wide report (admin keys)")
    events: list[dict[str, Any]]


class JournalAnswer(Answer):
    user_id: str
    cycles: list[JournalCycle]
    preloaded: list[dict[str, Any]] = Field(description="the memories ({id, text}) the last "
                                                        "cycle predicted and warmed")


class UserHealth(Answer):
    user_id: str
    memories: int
    sessions: int
    superseded: int
    levels: dict[str, dict[str, int]] = Field(description="level -> {lossless, lossy} counts")
    tiers: dict[str, int]
    embedder: str
    dim: int
    vector_tier: str
    text_bytes_per_memory: float | None
    vector_bytes_per_memory: int
    store: dict[str, Any] | None = Field(description="the store's figures (admin keys)")
    controller: dict[str, Any] | None = Field(description="the learned controller (admin keys)")
    cycles: list[dict[str, Any]] | None = Field(description="the last sleep cycles (admin keys)")
    sleep: dict[str, Any] | None = None


class AuditAnswer(Answer):
    user_id: str
    n: int
    steps: int
    with_text: int
    cosine: float | None
    token_f1: float | None
    bleu: float | None
    exact: float | None
    examples: list[dict[str, Any]]
