"""The REST reads behind the web explorer (``server/ui``): a user's timeline, the graph
around a memory, the lifecycle journal by sleep cycle, a user's store health and the
inversion audit. Plain ``/v1`` endpoints, through ``Scoped`` like every other: the
explorer has no path into the engine that a key's holder could not take with curl."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Query

from latentmem.server import models as m
from latentmem.server.service import MAX_DEPTH, MAX_PAGE, Scoped

if TYPE_CHECKING:
    from latentmem.server.app import ServerState


def attach(app: FastAPI, state: ServerState, scoped: Callable[..., Scoped],
           errors: dict[int | str, dict[str, Any]]) -> None:
    v1: dict[str, Any] = {"responses": errors, "tags": ["explore"]}

    @app.get("/v1/users/{user_id}/timeline", response_model=m.TimelineAnswer, **v1)
    def timeline(user_id: str, limit: int = Query(200, ge=1, le=MAX_PAGE),
                 cursor: str | None = Query(None, max_length=64),
                 s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """A user's memories by event time (record time beside it), a page at a time, with
        the inverted text of lossy ones."""
        return s.timeline(user_id, limit=limit, cursor=cursor)

    @app.get("/v1/memories/{id}/graph", response_model=m.GraphAnswer, **v1)
    def graph(id: str, depth: int = Query(1, ge=1, le=MAX_DEPTH),
              limit: int = Query(60, ge=2, le=500), s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """The memories within ``depth`` edges of one (next, entity, causal, similar,
        merged_from, supersedes), and the edges between them."""
        return s.graph(id, depth, limit)

    @app.get("/v1/users/{user_id}/journal", response_model=m.JournalAnswer, **v1)
    def journal(user_id: str, limit: int = Query(200, ge=1, le=MAX_PAGE),
                s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """What the lifecycle did to a user's memories, by sleep cycle, newest first; each
        undoable event's ``seq`` goes to POST /v1/undo."""
        return s.journal(user_id, limit)

    @app.get("/v1/users/{user_id}/health", response_model=m.UserHealth, **v1)
    def health(user_id: str, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """A user's memories per level and tier and their size; admin keys also get the
        store's figures, the controller's state and the last sleep cycles."""
        out = s.health(user_id)
        if s.who.admin:
            out["sleep"] = state.sleep_status()
        return out

    @app.get("/v1/users/{user_id}/audit-inversion", response_model=m.AuditAnswer, **v1)
    def audit(user_id: str, limit: int = Query(20, ge=1, le=200),
              steps: int = Query(0, ge=0, le=10), s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """How much of a user's text the shipped inverter reads back from the vectors alone
        (slow: it runs the inverter on up to ``limit`` memories)."""
        return s.audit_inversion(user_id, limit, steps)

