"""The memory-backed chat proxy: ``POST /v1/chat/completions``, OpenAI-compatible.

Point any OpenAI client at ``latentmem serve --llm-url URL`` and every chat turn gets the
user's long-term memory. Per request: the key's ``Scoped`` view (service.py, the same gate
as REST and MCP) resolves OpenAI's ``user`` field to a user of the key's tenant; the last
user message is the query for ``Scoped.context``; the packed memories go upstream as one
system message, placed after the client's own leading system messages (first when it has
none); the request is forwarded to ``{url}/chat/completions``, and the answer (SSE chunks as
they arrive, or one JSON) is relayed unchanged. Once the answer is sent, the user's turn and
the assistant's reply are stored with one ``Scoped.add`` in a Starlette background task,
off the answer's path; a read-only key, or ``"memory": {"store": false}``, stores nothing.
A request that does not end with a user message (it ends with a tool's result) stores the
reply alone: its user turn was stored with the request that led to the tool call.

Request extension (clients that cannot send it get the defaults): ``"memory":
{"budget_tokens": 1000, "store": true, "session_id": null}``. Answers carry
``X-Latentmem-Memories`` (memories packed) and ``X-Latentmem-Store`` (``queued``, ``off``,
``read-only``). Errors take OpenAI's shape on this route, ``{"error": {"message": text,
"type": kind}}`` (the server's ``{"error": kind, "message": text}`` would reach an OpenAI
client as a bare status, ``OpenAIErrors``): 401, 403 and 400 as on REST, 501 with no
upstream configured, 502 when the upstream cannot be reached or fails (5xx, or a 401/403
about the server's own upstream key), 504 when it times out; the upstream's other 4xx (an
unknown model, a prompt too long, 429 with its Retry-After) keep their status, since they
are about the client's request and a 5xx would make clients retry them.

Chosen: memory after the client's system prompt rather than in front of it, so that the
prompt stays a stable prefix for the upstream's prompt cache; a separate message rather
than an edit of the client's, which stays byte-identical. Storing in a background task
of the request rather than a detached thread: a graceful shutdown waits for it, so a turn
is not lost when the server stops. Only complete answers are stored: a stream that breaks
or that the client abandons stores nothing. Rejected: storing before answering (the user
waits for an embedding); re-encoding the upstream's chunks (tool calls, logprobs and
vendor fields would have to be modelled to survive); relaying every upstream status as-is
(a 401 about the upstream's key would read as the client's key being wrong).
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import Depends
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from latentmem.errors import InvalidInputError, MissingExtraError
from latentmem.server.app import ASGIApp, Message, Receive, Scope, Send, error
from latentmem.server.service import Scoped

if TYPE_CHECKING:
    from fastapi import FastAPI

    from latentmem.server.app import ServerState

PATH = "/v1/chat/completions"
DEFAULT_BUDGET = 1000
MAX_BUDGET = 32_000
# The query is the end of the last user message: a pasted document's question usually
# comes last, and retrieval gains nothing from more text than an embedder reads.
MAX_QUERY_CHARS = 4000
_UNSEARCHABLE = re.compile("[\x00\ud800-\udfff]")


def searchable(text: str) -> str:
    """The query a chat message gives: its end, with what no store takes as a query (NUL, a
    lone surrogate) made a space. The chat goes on either way; the message itself is
    stored as sent, or refused with the reason on stderr."""
    return _UNSEARCHABLE.sub(" ", text[-MAX_QUERY_CHARS:])


TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=60.0, pool=30.0)
MEMORY_HEADER = ("Memories from earlier conversations with this user, dated, retrieved by "
                 "latentmem. They may be outdated or beside the point; use them only where "
                 "they help.\n\n")
# Upstream statuses that speak about the server, not the client's request: answered 502.
_SERVER_SIDE = {401, 403, 407}


class MemoryOptions(BaseModel):
    """The ``memory`` extension field of a chat request."""

    model_config = ConfigDict(extra="forbid")
    budget_tokens: int = Field(default=DEFAULT_BUDGET, ge=1, le=MAX_BUDGET,
                               description="tokens of memory packed into the system message")
    store: bool = Field(default=True, description="store this turn and the reply once answered")
    session_id: str | None = Field(default=None, min_length=1, max_length=256,
                                   description="the session the stored turn belongs to")
    min_relevance: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="pack only memories whose calibrated relevance (0-1) reaches it")


class ChatRequest(BaseModel):
    """OpenAI's chat completion request, loosely: every field it does not name is
    forwarded as sent."""

    model_config = ConfigDict(extra="allow")
    messages: list[dict[str, Any]] = Field(min_length=1)
    model: str | None = Field(None, min_length=1)
    stream: bool = False
    user: str | None = Field(None, description="whose memory: a user of the key's tenant")
    memory: MemoryOptions = Field(default_factory=lambda: MemoryOptions())

    @field_validator("messages")
    @classmethod
    def _has_roles(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, message in enumerate(messages):
            if not isinstance(message.get("role"), str):
                raise ValueError(f"messages[{i}] needs a 'role' string, found {message.get('role')!r}")
        return messages


def user_text(messages: list[dict[str, Any]]) -> tuple[str, bool]:
    """The last user message's text, and whether it is the conversation's last message."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] != "user":
            continue
        content = messages[i].get("content")
        if isinstance(content, list):
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            text = "\n".join(t for t in texts if isinstance(t, str))
        else:
            text = content if isinstance(content, str) else ""
        if not text.strip():
            raise InvalidInputError(f"messages[{i}], the last user message, has no text: expected "
                                    "'content' as a string or a list of {type: 'text', text} parts")
        return text, i == len(messages) - 1
    raise InvalidInputError("messages has no message with role 'user': the proxy needs one "
                            "to look up memories for")


def _summary(response: httpx.Response) -> str:
    """The upstream's own error message, or the start of its body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or "(empty body)"
    found = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(found, dict):
        found = found.get("message", found)
    return str(found)[:300]


class Reply:
    """The assistant's text, gathered from the answer the client is being sent."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.complete = False
        self.broken = False
        self._buffer = b""

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def take_json(self, body: Any) -> None:
        choices = body.get("choices") if isinstance(body, dict) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            content = (choices[0].get("message") or {}).get("content")
            if isinstance(content, str):
                self.parts.append(content)
        self.complete = True

    def feed(self, chunk: bytes) -> None:
        """A piece of the SSE stream, split anywhere."""
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        for line in lines:
            self._line(line.strip())

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if event.get("error") is not None:  # the upstream failed mid-answer
            self.broken = True
        for choice in event.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str):
                    self.parts.append(content)


class Upstream:
    """One ``httpx.AsyncClient`` per app, made on first use, closed when the app stops."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT)
        return self._client

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._client is not None:
                await self._client.aclose()
                self._client = None


def _store(s: Scoped, user: str | None, asked: str | None, reply: Reply,
           session_id: str | None) -> None:
    """Store the turn (the user's message, when it ended the request) and the reply."""
    if not reply.complete or reply.broken:
        return
    messages = [] if asked is None else [{"role": "user", "content": asked}]
    if reply.text.strip():
        messages.append({"role": "assistant", "content": reply.text})
    if not messages:
        return
    try:
        s.add(messages, user, session_id=session_id)
    except Exception as exc:  # noqa: BLE001 - the answer is sent; the operator must hear of it
        sys.stderr.write(f"latentmem: the chat proxy could not store a turn of user {user!r}: "
                         f"{type(exc).__name__}: {exc}\n")
        traceback.print_exception(exc, file=sys.stderr)


class OpenAIErrors:
    """On the proxy's path, the server's error JSON in OpenAI's shape.

    OpenAI's clients read an error's text from ``error.message`` and show only the status
    when ``error`` is a string, so ``{"error": kind, "message": text}`` becomes
    ``{"error": {"message": text, "type": kind, "param": null, "code": null}}`` here, for
    every error of the route: the key check, validation, the Guard's refusals, our own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        body = b""

        async def sending(message: Message) -> None:
            nonlocal held, body
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body += message.get("body", b"")
            if message.get("more_body"):
                return
            body = _openai_error(body)
            headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
            await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, sending)


def _openai_error(body: bytes) -> bytes:
    try:
        found = json.loads(body)
    except ValueError:
        return body
    if not (isinstance(found, dict) and isinstance(found.get("error"), str)
            and isinstance(found.get("message"), str)):
        return body
    return json.dumps({"error": {"message": found["message"], "type": found["error"],
                                 "param": None, "code": None}}).encode()


def attach(app: FastAPI, state: ServerState, scoped: Callable[..., Any]) -> None:
    """Add the proxy's route to ``app``."""
    upstream = Upstream()
    state.lifespans.append(upstream.running)
    app.add_middleware(OpenAIErrors)

    def failed(status: int, message: str, detail: str) -> Response:
        sys.stderr.write(f"latentmem: chat proxy: {detail}\n")
        return error(status, "UpstreamError", message)

    @app.post(PATH, tags=["chat"], response_model=None,
              responses={400: {"description": "bad request"}, 401: {"description": "bad key"},
                         403: {"description": "a user outside the key's"},
                         501: {"description": "no upstream LLM configured (--llm-url)"},
                         502: {"description": "the upstream LLM failed or is down"},
                         504: {"description": "the upstream LLM timed out"}})
    async def chat_completions(body: ChatRequest,
                               s: Scoped = Depends(scoped)) -> Response:  # noqa: B008
        """OpenAI's chat completions, with the user's memories added and the turn stored.
        Extension: `"memory": {"budget_tokens": 1000, "store": true, "session_id": null}`."""
        llm = state.llm
        if not llm.get("url"):
            raise MissingExtraError("the chat proxy has no upstream LLM: start the server with "
                                    "--llm-url URL (an OpenAI-compatible base URL, e.g. "
                                    "http://localhost:11434/v1)")
        model = body.model or llm.get("model")
        if not model:
            raise InvalidInputError("the request names no model and the server was started "
                                    "without --llm-model")
        text, ends = user_text(body.messages)
        if body.user is None and s.who.users is not None and len(s.who.users) > 1:
            raise InvalidInputError(f"give 'user' (OpenAI's field): this key serves the users "
                                    f"{sorted(s.who.users)}")
        s.who.user(body.user)  # 400/403 before any work
        options = body.memory
        context = await run_in_threadpool(s.context, searchable(text), body.user,
                                          budget_tokens=options.budget_tokens,
                                          min_relevance=options.min_relevance)
        messages = list(body.messages)
        if context.items and context.text.strip():
            lead = 0
            while lead < len(messages) and messages[lead]["role"] in ("system", "developer"):
                lead += 1
            messages.insert(lead, {"role": "system", "content": MEMORY_HEADER + context.text})
        payload = {**body.model_dump(exclude_unset=True, exclude={"memory"}),
                   "model": model, "messages": messages}

        store = "off" if not options.store else "read-only" if s.who.read_only else "queued"
        reply = Reply()
        background = None
        if store == "queued":
            background = BackgroundTask(_store, s, body.user, text if ends else None, reply,
                                        options.session_id)
        headers = {"X-Latentmem-Memories": str(len(context.items)), "X-Latentmem-Store": store}

        url = str(llm["url"]).rstrip("/") + "/chat/completions"
        auth = {"Authorization": f"Bearer {llm['key']}"} if llm.get("key") else {}
        client = upstream.client()
        outgoing = client.build_request("POST", url, json=payload, headers=auth)
        try:
            answer = await client.send(outgoing, stream=body.stream)
        except httpx.TimeoutException as exc:
            return failed(504, f"the upstream LLM did not answer in time ({type(exc).__name__})",
                          f"POST {url} timed out: {exc!r}")
        except httpx.HTTPError as exc:
            return failed(502, f"the upstream LLM could not be reached ({type(exc).__name__}: "
                          f"{exc})", f"POST {url} failed: {exc!r}")
        if answer.status_code >= 400:
            await answer.aread()
            await answer.aclose()
            status = answer.status_code
            message = f"the upstream LLM answered {status}: {_summary(answer)}"
            if status >= 500 or status in _SERVER_SIDE:
                return failed(502, message, f"POST {url}: {message}")
            retry = answer.headers.get("retry-after")
            return error(status, "UpstreamError", message,
                         {"Retry-After": retry} if retry is not None else None)

        if not body.stream:
            try:
                parsed = answer.json()
            except ValueError:
                return failed(502, "the upstream LLM answered with something other than JSON",
                              f"POST {url} answered non-JSON: {answer.text[:200]!r}")
            reply.take_json(parsed)
            return Response(answer.content, media_type="application/json", headers=headers,
                            background=background)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_bytes():
                    reply.feed(chunk)
                    yield chunk
            except httpx.HTTPError as exc:
                sys.stderr.write(f"latentmem: chat proxy: the stream from {url} broke: {exc!r}\n")
                problem = {"message": f"the upstream LLM's stream broke ({type(exc).__name__})",
                           "type": "UpstreamError"}
                yield f"data: {json.dumps({'error': problem})}\n\n".encode()
                return
            finally:
                await answer.aclose()
            reply.complete = True

        return StreamingResponse(relay(), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"},
                                 background=background)
