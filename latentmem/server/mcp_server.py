"""The MCP server: latentmem's verbs as Model Context Protocol tools, for agents and desktop
clients.

Six tools (``remember``, ``recall``, ``context``, ``update``, ``forget``, ``list``) and one
resource template (``memory://{user_id}/recent``), built once by ``build`` with the official
SDK's ``MCPServer`` and served two ways:

- over streamable HTTP at ``/mcp`` inside ``latentmem serve`` (``attach``), with the REST
  API's keys: an ASGI wrapper checks ``Authorization: Bearer <key>`` (401 as
  ``{"error", "message"}``, like every other route) and puts the key's ``Principal`` in a
  context variable, which the SDK carries from the HTTP request to the tool call;
- over stdio for desktop clients (``run_stdio``, ``latentmem mcp``), as one fixed principal.

Every tool acts through ``service.Scoped``, so MCP has the REST API's isolation: another
tenant's memory is answered exactly like a missing one, a read-only key cannot write. Engine
errors come back as tool errors (``isError``) reading ``<ErrorName>: <message>``, which an
agent can act on; an unknown argument is refused, as in the REST bodies (the SDK would
ignore it). The engine's calls block, so each runs in a worker thread.

Chosen: the HTTP transport stateless and answering JSON: a tool call is one POST, so no
session state is held per client, no idle sessions are reaped, any process serving the same
store can answer any request, and each request is authorised on its own (a session cannot
outlive its key's revocation or be borrowed by another key). Nothing here needs what
sessions give (server-initiated requests, streamed progress). A fresh session manager is
made each time the app starts (the SDK lets one run only once). The SDK's own Host/Origin
check is off: ``app.Guard`` already refuses non-loopback Hosts for every route.
Rejected: the SDK's OAuth machinery (``token_verifier``), which would be a second key
system beside ``keys.py``; re-reading the Authorization header inside each tool (stdio has
no headers, and a tool would then authorise what the wrapper already did); a second,
hand-written JSON-RPC server (the protocol moves fast; the SDK tracks it).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from pydantic import ConfigDict, Field
from starlette.routing import Route

from latentmem.errors import LatentMemError, UnauthorizedError
from latentmem.memory import MAX_K, Memory
from latentmem.server.protocol import encode, plain
from latentmem.server.service import MAX_PAGE, Scoped, encode_cursor
from latentmem.tenancy import Principal
from latentmem.types import iso

if TYPE_CHECKING:
    from fastapi import FastAPI
    from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase

    from latentmem.server.app import Receive, Scope, Send, ServerState
    from latentmem.types import Hit, Record

T = TypeVar("T")

PATH = "/mcp"
RECENT = 20  # memories in memory://{user_id}/recent

INSTRUCTIONS = (
    "latentmem is a long-term memory. Before answering anything that may depend on what "
    "the user said in earlier conversations, call `recall` (a few matching memories) or "
    "`context` (the best memories packed into a token budget, dated, with their ids). Call "
    "`remember` for durable facts, preferences and events worth keeping, one fact per call, "
    "with event_time when the fact is dated. Use `update` to correct a memory and `forget` "
    "when the user asks you to. user_id may be left out: it then means the key's only user "
    "(or 'default')."
)

UserId = Annotated[str | None, Field(
    description="whose memories; leave out for the key's only user (or 'default')",
    min_length=1, max_length=256)]
MemoryId = Annotated[str, Field(description="a memory's id, as recall/list/remember gave it",
                                min_length=1, max_length=256)]
Metadata = Annotated[dict[str, Any] | None, Field(
    description="a JSON object stored with the memory (replaces the old one on update)")]

# The caller of the HTTP request being served; the SDK copies the request's context
# variables into the task that runs the tool.
_caller: ContextVar[Principal | None] = ContextVar("latentmem_mcp_caller", default=None)


def _http_caller() -> Principal:
    who = _caller.get()
    if who is None:  # fail closed if a code path ever loses the request's context
        raise UnauthorizedError("no API key reached this MCP call")
    return who


def _record(record: Record) -> dict[str, Any]:
    data = record.to_dict()
    keys = ("id", "user_id", "text", "type", "speaker", "event_time", "created_at",
            "updated_at", "metadata")
    return {key: data[key] for key in keys}


def _hit(hit: Hit) -> dict[str, Any]:
    return {"id": hit.id, "score": hit.score, "relevance": hit.relevance, "text": hit.text,
            "event_time": iso(hit.record.event_time), "speaker": hit.record.speaker}


def _recent_lines(s: Scoped, user_id: str) -> str:
    """The user's newest memories, newest first, one per line."""
    count = int(s.stats()["per_user"].get(user_id, 0))  # 0 too for a user outside the key
    start = max(0, count - RECENT)
    tail: deque[Record] = deque(maxlen=RECENT)
    cursor: str | None = encode_cursor(start)
    while cursor is not None:  # more than one page only if memories arrived meanwhile
        page, cursor = s.page(user_id, limit=MAX_PAGE, cursor=cursor)
        tail.extend(page)
    if not tail:
        return f"No memories for {user_id!r} yet."
    lines = [f"The {len(tail)} newest memories of {user_id!r}, newest first:"]
    for record in reversed(tail):
        when = record.event_time or record.created_at
        who = f"{record.speaker}: " if record.speaker else ""
        lines.append(f"- [{record.id}] {when.date().isoformat() if when else '?'} {who}"
                     f"{record.text if record.text is not None else '(text not kept)'}")
    return "\n".join(lines)


def _strict(tool: Tool) -> Tool:
    """Unknown arguments refused, not ignored (the SDK ignores them): a misspelt ``userId``
    must not quietly act for the default user. The REST API's bodies forbid them too."""
    loose = tool.fn_metadata.arg_model
    strict = cast("type[ArgModelBase]", type(
        loose.__name__, (loose,), {"model_config": ConfigDict(extra="forbid"),
                                   "__module__": loose.__module__}))
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)
    return tool


def build(mem: Memory, caller: Callable[[], Principal]) -> MCPServer:
    """The tools and resource over ``mem``, each call acting as ``caller()``."""
    from latentmem import __version__

    async def run(work: Callable[[Scoped], T], error: type[Exception] = ToolError) -> T:
        try:
            scoped = Scoped(mem, caller())
            return await anyio.to_thread.run_sync(work, scoped)
        except LatentMemError as exc:
            raise error(f"{exc.name()}: {exc}") from exc

    async def remember(
        text: Annotated[str, Field(description="the fact, preference or event to keep, in "
                                               "plain words", min_length=1)],
        user_id: UserId = None,
        metadata: Metadata = None,
        event_time: Annotated[str | None, Field(
            description="when it happened or was said, ISO-8601 (2024-05-01 or "
                        "2024-05-01T14:00:00Z); default: now")] = None,
    ) -> dict[str, Any]:
        """Store a memory for a user, verbatim. Returns the new memory's id(s). Keep one
        self-contained fact per call ("Ana is allergic to peanuts"), not a whole chat."""
        fields = {k: v for k, v in (("metadata", metadata), ("event_time", event_time))
                  if v is not None}
        receipt = await run(lambda s: s.add(text, user_id, **fields))
        return {"ids": receipt.ids}

    async def recall(
        query: Annotated[str, Field(description="what to look for, in natural language",
                                    min_length=1)],
        user_id: UserId = None,
        k: Annotated[int, Field(description="how many memories at most", ge=1, le=MAX_K)] = 10,
        threshold: Annotated[float | None, Field(
            description="keep only memories whose relevance (the estimated probability, 0-1, "
                        "that it helps answer the query) reaches this; none may", ge=0.0,
            le=1.0)] = None,
    ) -> dict[str, Any]:
        """Search a user's memories. Returns the best matches, best first, each with its id,
        score, relevance (0-1, comparable across queries), text, event_time (when it
        happened) and speaker."""
        hits = await run(lambda s: s.search(query, user_id, k=k, threshold=threshold))
        return {"hits": plain([_hit(h) for h in hits])}

    async def context(
        query: Annotated[str, Field(description="the question or task the memories are for",
                                    min_length=1)],
        user_id: UserId = None,
        budget_tokens: Annotated[int, Field(description="the most tokens the text may take",
                                            ge=1, le=1_000_000)] = 1000,
        min_relevance: Annotated[float | None, Field(
            description="pack only memories whose relevance (0-1) reaches this", ge=0.0,
            le=1.0)] = None,
    ) -> str:
        """The memories most relevant to a query, packed into a token budget as text to put
        in a prompt: grouped under their dates, each marked [N], then a Sources list giving
        each [N]'s memory id and time."""
        packed = await run(lambda s: s.context(query, user_id, budget_tokens=budget_tokens,
                                               min_relevance=min_relevance))
        if not packed.items:
            return "No memories matched."
        sources = [f"[{item.ref}] id={item.id}"
                   + (f" event_time={item.event_time.isoformat()}" if item.event_time else "")
                   + (f" speaker={item.speaker}" if item.speaker else "")
                   for item in packed.items]
        more = (f"\n({len(packed.omitted)} more matched but did not fit the budget)"
                if packed.omitted else "")
        return f"{packed.text}\n\nSources:\n" + "\n".join(sources) + more

    async def update(
        id: MemoryId,
        text: Annotated[str | None, Field(description="the corrected text (the old one is "
                                                      "kept in the memory's history)")] = None,
        metadata: Metadata = None,
    ) -> dict[str, Any]:
        """Correct a memory: new text, new metadata, or both. Returns the memory as it now
        is."""
        changes = {} if metadata is None else {"metadata": metadata}
        record = await run(lambda s: s.update(id, text, **changes))
        return plain(_record(record))

    async def forget(id: MemoryId) -> dict[str, Any]:
        """Delete a memory for good (its text, vector and history text); it cannot be
        undone. Use it when the user asks you to forget something."""
        deleted = await run(lambda s: s.delete([id]))
        return {"deleted": deleted}

    async def list_memories(
        user_id: UserId = None,
        limit: Annotated[int, Field(description="memories per page", ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page; "
                                                        "leave out for the first page")] = None,
    ) -> dict[str, Any]:
        """A user's memories, oldest first, one page at a time. next_cursor is null on the
        last page."""
        page, after = await run(lambda s: s.page(user_id, limit=limit, cursor=cursor))
        return {"memories": plain([_record(r) for r in page]), "next_cursor": after}

    def hints(read_only: bool, destructive: bool = False) -> ToolAnnotations:
        return ToolAnnotations(read_only_hint=read_only, destructive_hint=destructive,
                               open_world_hint=False)

    tools = [Tool.from_function(remember, annotations=hints(False)),
             Tool.from_function(recall, annotations=hints(True)),
             Tool.from_function(context, annotations=hints(True)),
             Tool.from_function(update, annotations=hints(False, destructive=True)),
             Tool.from_function(forget, annotations=hints(False, destructive=True)),
             Tool.from_function(list_memories, name="list", annotations=hints(True))]
    # The SDK configures the root logger (logging.basicConfig, a handler of its own); an
    # application that embeds the server owns its logging, so that is undone.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer = MCPServer("latentmem", title="latentmem memory", version=__version__,
                                  instructions=INSTRUCTIONS, log_level="WARNING",
                                  tools=[_strict(tool) for tool in tools])
    root.handlers[:] = handlers
    root.setLevel(level)

    @server.resource("memory://{user_id}/recent", name="recent memories",
                     mime_type="text/plain",
                     description=f"a user's {RECENT} newest memories, newest first, with ids")
    async def recent(user_id: str) -> str:
        return await run(lambda s: _recent_lines(s, user_id), ResourceError)

    return server


# -- HTTP ----------------------------------------------------------------------------------------

class Endpoint:
    """``/mcp``: the key check in front of the SDK's streamable HTTP transport."""

    def __init__(self, state: ServerState, server: MCPServer) -> None:
        self.state = state
        self.server = server
        self.manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Held while the app runs (``ServerState.lifespans``)."""
        self.server.streamable_http_app(  # makes a new session manager
            streamable_http_path=PATH, stateless_http=True, json_response=True,
            max_request_body_size=self.state.max_body,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        manager = self.server.session_manager
        async with manager.run():
            self.manager = manager
            try:
                yield
            finally:
                self.manager = None

    async def _refuse(self, send: Send, status: int, kind: str, text: str) -> None:
        body = encode({"error": kind, "message": text})
        headers = [(b"content-type", b"application/json; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = next((v.decode("latin-1") for k, v in scope["headers"]
                              if k.lower() == b"authorization"), None)
        try:
            who = await anyio.to_thread.run_sync(self.state.principal, authorization)
        except LatentMemError as exc:
            await self._refuse(send, exc.code(), exc.name(), str(exc))
            return
        manager = self.manager
        if manager is None:
            await self._refuse(send, 503, "UnavailableError",
                               "the MCP transport is not running (the server is starting or "
                               "stopping)")
            return
        token = _caller.set(who)
        try:
            await manager.handle_request(scope, receive, send)
        finally:
            _caller.reset(token)


def attach(app: FastAPI, state: ServerState) -> None:
    """Mount the MCP streamable HTTP transport at ``/mcp`` (same keys as the REST API)."""
    endpoint = Endpoint(state, build(state.mem, _http_caller))
    state.lifespans.append(endpoint.running)
    app.router.routes.append(Route(PATH, endpoint, include_in_schema=False))


# -- stdio ---------------------------------------------------------------------------------------

def run_stdio(mem: Memory, principal: Principal) -> None:
    """Serve the tools over stdin/stdout until the client closes them (``latentmem mcp``).
    The SDK points file descriptor 1 at stderr while it serves, so a stray print cannot
    corrupt the protocol."""
    server = build(mem, lambda: principal)
    server.run("stdio")
