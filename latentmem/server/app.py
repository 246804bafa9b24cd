"""The REST API: a FastAPI app over one ``Memory``, every call through ``service.Scoped``.

``build_app(state)`` returns the ASGI app; ``latentmem.server`` runs it under uvicorn.
Endpoints are plain ``def``s, so FastAPI runs them in its thread pool: the engine's calls
block (SQLite or PostgreSQL, FAISS, the embedder) and its own locks let searches run beside
writes and beside a sleep cycle.

In front of the routes, one ASGI layer (``Guard``) refuses what must not reach them: a Host
that is not a loopback name while the server is bound to loopback (DNS rebinding), a body
over ``max_body`` (413, from Content-Length or while it streams), and a body that stalls
for ``body_timeout`` seconds (408): a slow client holds a coroutine, never a worker thread,
and not for ever. Every error answer is ``{"error": kind, "message": text}``: the engine's
``LatentMemError`` with its own status, request validation as 400, unknown routes 404,
wrong methods 405, anything unexpected 500 (logged with its traceback, never hidden).
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from latentmem.errors import InvalidInputError, LatentMemError
from latentmem.server import models as m
from latentmem.server.keys import KeyRing
from latentmem.server.protocol import encode, is_local
from latentmem.server.service import Scoped
from latentmem.store.formats.records import (
    edge_from_dict,
    edge_to_dict,
    manifest,
    record_from_dict,
)
from latentmem.tenancy import UNRESTRICTED, Principal

if TYPE_CHECKING:
    from latentmem.lifecycle.sleep import Sleeper
    from latentmem.memory import Memory

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DRAIN_LIMIT = 64 * 1024 * 1024  # bytes read and dropped after refusing a body
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorBody, "description": text} for code, text in (
        (400, "bad input: the message names the field"), (401, "no key, or a bad one"),
        (403, "the key may not do this"), (404, "no such memory inside the key's scope"),
        (413, "a body or text over the limits"))}


@dataclass
class ServerState:
    mem: Memory
    keyring: KeyRing | None  # None: --insecure-no-auth
    sleep_budget: float | None = 30.0
    max_body: int = 8 * 1024 * 1024
    body_timeout: float = 30.0
    local_only: bool = True
    sleeper: Sleeper | None = None
    # What the chat proxy forwards to (latentmem/server/proxy.py): url, key, model.
    llm: dict[str, Any] = field(default_factory=dict)
    # Async context managers held while the app runs (the MCP session manager's).
    lifespans: list[Callable[[], AbstractAsyncContextManager[Any]]] = field(default_factory=list)

    def principal(self, authorization: str | None) -> Principal:
        if self.keyring is None:
            return UNRESTRICTED
        return self.keyring.principal(authorization)

    def sleep_status(self) -> dict[str, Any]:
        sleeper = self.sleeper
        if sleeper is None:
            return {"running": False}
        reports, errors = list(sleeper.reports), list(sleeper.errors)
        return {"running": True, "every": sleeper.every, "budget": sleeper.budget,
                "cycles": sleeper.cycles, "errors": sleeper.failures,
                "last_cycle": reports[-1].cycle if reports else None,
                "last_error": errors[-1] if errors else None}


# -- errors ------------------------------------------------------------------------------------

class JSON(JSONResponse):
    """NaN and infinity as null, datetimes as ISO-8601 (``protocol.encode``)."""

    def render(self, content: Any) -> bytes:
        return encode(content)


def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSON:
    return JSON({"error": kind, "message": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors()[:5]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is invalid"


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(LatentMemError)
    async def engine_error(request: Request, exc: LatentMemError) -> JSON:
        headers = {"WWW-Authenticate": "Bearer"} if exc.code() == 401 else None
        return error(exc.code(), exc.name(), str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSON:
        return error(400, "InvalidInputError", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSON:
        kinds = {400: "InvalidInputError", 404: "RouteNotFoundError", 405: "MethodNotAllowedError"}
        text = {400: f"the body is not a JSON object ({exc.detail})",
                404: f"no endpoint {request.url.path}; see /docs",
                405: f"{request.method} is not allowed on {request.url.path}"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            methods = {m for route in app.routes if isinstance(route, APIRoute)
                       and route.path_regex.match(request.url.path) for m in route.methods or ()}
            headers["Allow"] = ", ".join(sorted(methods))
        return error(exc.status_code, kinds.get(exc.status_code, "ProtocolError"),
                     text.get(exc.status_code, str(exc.detail)), headers)


# -- the guard in front of the routes ------------------------------------------------------------

class Guard:
    """Host check, body size and body timeout (see the module docstring)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def _refuse(self, send: Send, status: int, kind: str, text: str) -> None:
        body = encode({"error": kind, "message": text})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _drain(self, receive: Receive) -> None:
        """Read and drop what the client still sends after a refusal (up to a limit), so
        that it reads the answer rather than a reset connection."""
        left = DRAIN_LIMIT
        try:
            while left > 0:
                message = await asyncio.wait_for(receive(), self.state.body_timeout)
                if message["type"] != "http.request":
                    return
                left -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
        except TimeoutError:
            return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        state = self.state
        host = headers.get("host")
        if state.local_only and host is not None and not is_local(host):
            await self._refuse(send, 403, "ForbiddenHostError",
                               f"Host {host!r} is not a loopback name; this server answers "
                               "local names only")
            return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await self._refuse(send, 400, "InvalidInputError",
                                   f"Content-Length must be a whole number, found {declared!r}")
                return
            if int(declared) > state.max_body:
                await self._refuse(send, 413, "InputTooLargeError",
                                   f"the request body is {int(declared)} bytes; the limit is "
                                   f"{state.max_body}")
                await self._drain(receive)
                return
        if (scope["method"] in ("POST", "PATCH", "PUT")
                and (declared not in (None, "0") or "transfer-encoding" in headers)):
            ctype = headers.get("content-type", "").partition(";")[0].strip().lower()
            if ctype != "application/json":
                # Also what keeps web pages out: a browser cannot send JSON to another
                # origin without a CORS preflight, which this server never grants.
                await self._refuse(send, 415, "UnsupportedMediaTypeError",
                                   f"expected Content-Type: application/json, found "
                                   f"{ctype or 'none'}")
                return
        seen = 0
        started = False
        refusal: tuple[int, str, str] | None = None

        async def limited() -> Message:
            # An exception raised here would reach FastAPI's body parser, which answers
            # any failure as a 400: the refusal is kept and sent in place of that answer.
            nonlocal seen, refusal
            try:
                message = await asyncio.wait_for(receive(), state.body_timeout)
            except TimeoutError:
                refusal = (408, "RequestTimeoutError",
                           f"the body stalled for {state.body_timeout:g} s")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > state.max_body:
                    refusal = (413, "InputTooLargeError",
                               f"the request body is over the limit of {state.max_body} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refusal is not None:
                return  # the app's answer to a body it did not get; the refusal goes instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except Exception as exc:
            # A bug, not a refusal. Answered here and not by an exception handler:
            # Starlette's handler for ``Exception`` sends its answer and then raises again,
            # and uvicorn closes the connection under that answer. Once an answer has
            # started it cannot be replaced, so then the connection is cut.
            traceback.print_exception(exc, file=sys.stderr)
            if started:
                raise
            if refusal is None:
                await self._refuse(send, 500, "InternalError", f"{type(exc).__name__}: {exc}")
                return
        if refusal is not None and not started:
            await self._refuse(send, *refusal)
            if refusal[0] == 413:
                await self._drain(receive)


def strict_query(request: Request) -> None:
    """Unknown or repeated query parameters are refused, not ignored: a misspelt
    ``?user=ana`` must not silently read the key's default user."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = {p.alias for p in _query_params(dependant)}
    keys = [k for k, _ in request.query_params.multi_items()]
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise InvalidInputError(f"unknown query parameters {unknown}; expected some of "
                                f"{sorted(allowed)}")
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise InvalidInputError(f"query parameters {repeated} are given more than once")


def _query_params(dependant: Any) -> list[Any]:
    found = list(dependant.query_params)
    for sub in dependant.dependencies:
        found.extend(_query_params(sub))
    return found


# -- the app -------------------------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description="an API key from `latentmem keys create`")


def build_app(state: ServerState) -> FastAPI:
    from latentmem import __version__

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for enter in state.lifespans:
                await stack.enter_async_context(enter())
            yield

    app = FastAPI(title="latentmem", version=__version__, default_response_class=JSON,
                  lifespan=lifespan, redirect_slashes=False, dependencies=[Depends(strict_query)],
                  description="Long-term memory for LLMs. Every /v1 endpoint needs "
                              "`Authorization: Bearer <key>`.")
    app.state.latentmem = state
    app.add_middleware(Guard, state=state)
    _install_errors(app)

    def who(request: Request, _: Any = Depends(bearer)) -> Principal:
        # The declared scheme documents the header; the keyring reads it (and says
        # what is wrong with it).
        return state.principal(request.headers.get("authorization"))

    def scoped(principal: Principal = Depends(who)) -> Scoped:
        return Scoped(state.mem, principal)

    v1: dict[str, Any] = {"responses": ERRORS}

    @app.get("/health", response_model=m.Health, tags=["server"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/stats", tags=["server"], **v1)
    def stats(s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """This key's users and their memory counts; an admin key also sees the store's."""
        return s.stats()

    @app.get("/v1/sleep", response_model=m.SleepStatus, tags=["server"], **v1)
    def sleep_status(s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """The background sleep thread: cycles run, errors, the last cycle's id."""
        return state.sleep_status()

    @app.post("/v1/sleep", tags=["server"], **v1)
    def sleep(body: m.SleepRequest | None = None, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """Run one sleep cycle now and wait for it (admin keys: it spans every user)."""
        budget = state.sleep_budget if body is None or body.budget is None else body.budget
        report = s.sleep(budget, None if body is None else body.phases)
        return dict(report.to_dict())

    @app.post("/v1/add", response_model=m.Receipt, tags=["memories"], **v1)
    def add(body: m.AddRequest, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """Remember a text or a list of chat messages (one of the two)."""
        fields = body.model_dump(exclude_none=True)
        if ("text" in fields) == ("messages" in fields):
            raise InvalidInputError("POST /v1/add needs 'text' (a string) or 'messages' (an "
                                    "array of messages), one of the two")
        content = fields.pop("text") if "text" in fields else fields.pop("messages")
        user = fields.pop("user_id", None)
        return s.add(content, user, **fields).to_dict()

    @app.post("/v1/search", response_model=m.SearchAnswer, tags=["recall"], **v1)
    def search(body: m.SearchRequest, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        fields = body.model_dump(exclude_none=True)
        hits = s.search(fields.pop("query"), fields.pop("user_id", None), **fields)
        return {"hits": [hit.to_dict() for hit in hits]}

    @app.post("/v1/context", response_model=m.ContextAnswer, tags=["recall"], **v1)
    def context(body: m.ContextRequest, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """The best memories for a query, verbatim and dated, packed into a token budget."""
        fields = body.model_dump(exclude_none=True)
        return s.context(fields.pop("query"), fields.pop("user_id", None), **fields).to_dict()

    @app.get("/v1/memories", response_model=m.MemoryPage, tags=["memories"], **v1)
    def list_memories(user_id: str | None = Query(None, min_length=1, max_length=256),
                      limit: int = Query(100, ge=1, le=1000),
                      cursor: str | None = Query(None, max_length=64),
                      agent_id: str | None = Query(None, min_length=1, max_length=256),
                      session_id: str | None = Query(None, min_length=1, max_length=256),
                      s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """A user's memories, oldest first, a page at a time."""
        page, after = s.page(user_id, limit=limit, cursor=cursor, agent_id=agent_id,
                             session_id=session_id)
        return {"memories": [r.to_dict() for r in page], "next_cursor": after}

    @app.get("/v1/memories/{id}", response_model=m.RecordOut, tags=["memories"], **v1)
    def get(id: str, vector: bool = False, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        return s.get(id, vector).to_dict(include_vector=vector)

    @app.patch("/v1/memories/{id}", response_model=m.RecordOut, tags=["memories"], **v1)
    def update(id: str, body: m.UpdateRequest, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """Change a memory's text (re-embedded; history keeps the old) or its metadata."""
        changes = body.model_dump(exclude_unset=True)
        return s.update(id, changes.pop("text", None), **changes).to_dict()

    @app.delete("/v1/memories/{id}", response_model=m.Deleted, tags=["memories"], **v1)
    def delete(id: str, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """Delete a memory for good (text, vector, full-text entries, derived merges)."""
        return {"deleted": s.delete([id])}

    @app.get("/v1/memories/{id}/history", response_model=m.Events, tags=["memories"], **v1)
    def history(id: str, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        return {"id": id, "events": s.history(id)}

    @app.get("/v1/memories/{id}/explain", response_model=m.Events, tags=["memories"], **v1)
    def explain(id: str, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """What the lifecycle did to a memory, and why."""
        return {"id": id, "events": s.explain(id)}

    @app.post("/v1/feedback", response_model=m.FeedbackAnswer, tags=["memories"], **v1)
    def feedback(body: m.FeedbackRequest, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        return {"id": body.id, "importance": s.feedback(body.id, body.useful)}

    @app.post("/v1/undo", tags=["memories"], **v1)
    def undo(body: m.UndoRequest, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """Reverse a journaled lifecycle action."""
        return s.undo(body.event)

    @app.delete("/v1/users/{user_id}", response_model=m.Deleted, tags=["users"], **v1)
    def delete_user(user_id: str, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """Delete a user for good: every memory, vector, edge, derived merge, history text."""
        return {"deleted": s.delete_user(user_id)}

    @app.get("/v1/users/{user_id}/export", response_model=m.ExportAnswer, tags=["users"], **v1)
    def export(user_id: str, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """Every memory of a user with its vector and edges (POST it to .../import)."""
        records, edges = s.export(user_id)
        mem = state.mem
        man = manifest(mem.store.get_meta("embedder") or mem.embedder.name, mem.dim, len(records))
        return {"manifest": man, "records": [r.to_dict(include_vector=True) for r in records],
                "edges": [edge_to_dict(e) for e in edges]}

    @app.post("/v1/users/{user_id}/import", response_model=m.Imported, tags=["users"], **v1)
    def import_(user_id: str, body: m.ImportRequest, s: Scoped = Depends(scoped)) -> dict[str, Any]:
        """An export's records, all made this user's; one transaction, all or nothing."""
        from latentmem.store.formats.records import check_manifest

        mem = state.mem
        check_manifest(body.manifest, mem.store.get_meta("embedder") or mem.embedder.name,
                       mem.dim, "the import")
        records = []
        for i, data in enumerate(body.records):
            data = dict(data)
            vector = data.pop("vector", None)
            if not isinstance(vector, list) or len(vector) != mem.dim:
                raise InvalidInputError(f"records[{i}]: vector must be an array of {mem.dim} "
                                        "numbers")
            records.append(record_from_dict(data, _numbers(vector, f"records[{i}]"),
                                            f"records[{i}]"))
        edges = [edge_from_dict(e.model_dump(), f"edges[{i}]") for i, e in enumerate(body.edges)]
        return {"imported": s.import_records(user_id, records, edges, body.on_conflict)}

    _key_routes(app, who, state)
    from latentmem.server import explore, mcp_server, proxy, ui

    explore.attach(app, state, scoped, ERRORS)
    ui.attach(app)

    proxy.attach(app, state, scoped)
    mcp_server.attach(app, state)
    return app


def _numbers(values: list[Any], where: str) -> Any:
    import math

    import numpy as np

    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
               for x in values):
        raise InvalidInputError(f"{where}: vector must hold finite numbers only")
    return np.asarray(values, dtype=np.float32)


def _key_routes(app: FastAPI, who: Callable[..., Principal], state: ServerState) -> None:
    from latentmem.server import keys

    def admin(principal: Principal = Depends(who)) -> Principal:
        principal.administrator()
        return principal

    v1: dict[str, Any] = {"responses": ERRORS, "tags": ["keys"]}

    @app.get("/v1/keys", response_model=m.KeyList, **v1)
    def list_keys(_: Principal = Depends(admin)) -> dict[str, Any]:
        return {"keys": [k.to_dict() for k in state.mem.store.api_keys()]}

    @app.post("/v1/keys", response_model=m.KeyCreated, **v1)
    def create_key(body: m.KeyRequest, _: Principal = Depends(admin)) -> dict[str, Any]:
        token, row = keys.create(state.mem.store, body.tenant, body.users,
                                 read_only=body.read_only, admin=body.admin, label=body.label)
        return {**row.to_dict(), "key": token}

    @app.delete("/v1/keys/{key_id}", response_model=m.KeyOut, **v1)
    def revoke_key(key_id: str, _: Principal = Depends(admin)) -> dict[str, Any]:
        return keys.revoke(state.mem.store, key_id).to_dict()
