"""``latentmem serve``: a small HTTP JSON API over one store, with background sleep cycles.

``make_server(mem, host, port)`` builds a ``MemoryServer`` for a ``Memory`` (port 0 picks
a free port; tests run it in a thread); ``serve(srv)`` runs it until Ctrl-C or SIGTERM,
then lets the requests in flight finish, stops the sleep thread and returns; the caller
closes the ``Memory``. The endpoints are listed in ``ROUTES`` and in README.md.

Chosen: the standard library's ``ThreadingHTTPServer``, one thread per connection and no
lock of its own: ``Memory`` has its own locks, so searches run beside each other, beside
writes and beside a sleep cycle. Requests are checked in full before the engine sees them
(route, method, Host, size, content type, JSON, field names and JSON types); the engine
then checks the values, so bad input changes nothing. A write is answered after its
SQLite transaction committed and was synced to disk (``Config.durability``, "full" by
default: it survives power loss, not only the server's process dying; docs/design.md).
Errors are ``{"error": kind, "message": text}`` with the status of ``latentmem.errors``
(400, 404, 409, 413, 500, 501) or of the protocol (404 route, 405 method, 411, 415, 403
Host, 503 while stopping).

There is no authentication: it binds to 127.0.0.1 by default. While bound to a loopback
address it answers only requests whose Host is a loopback name (a web page cannot reach it
through DNS rebinding), and POST bodies must be ``application/json``, which a browser
cannot send to another origin without a CORS preflight, which this server never grants.

Rejected: FastAPI + uvicorn (three dependencies and an event loop, for an engine whose
calls block on SQLite, FAISS and the embedder anyway); Flask or aiohttp (dependencies);
an MCP server (not included: it would sit on the same ``Memory`` calls); a global lock
around every request (it would serialise searches behind a sleep cycle's writes).
"""

from __future__ import annotations

import ipaddress
import re
import signal
import socket
import socketserver
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from latentmem.errors import InputTooLargeError, InvalidInputError, LatentMemError
from latentmem.server.protocol import (
    SCOPE,
    ForbiddenHostError,
    LengthRequiredError,
    MethodNotAllowedError,
    RouteNotFoundError,
    ShuttingDownError,
    UnsupportedMediaTypeError,
    check_fields,
    encode,
    parse_json,
)

if TYPE_CHECKING:
    from latentmem.lifecycle.sleep import Sleeper
    from latentmem.memory import Memory

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_SLEEP_EVERY = 600.0
DEFAULT_SLEEP_BUDGET = 30.0
MAX_BODY = 8 * 1024 * 1024
# After refusing a request whose body it did not read, the server reads and drops what the
# client still sends (up to this much, until it is idle this long), so that the client gets
# the answer rather than a reset connection.
_DRAIN_LIMIT = 64 * 1024 * 1024
_DRAIN_IDLE_S = 5.0


# -- endpoints -----------------------------------------------------------------------------

@dataclass
class Request:
    args: dict[str, str]  # from the path
    query: dict[str, str]
    body: dict[str, Any]


def _flag(query: dict[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidInputError(f"query parameter {name!r} must be true or false, found {value!r}")
    return value in ("true", "1")


def _health(srv: MemoryServer, req: Request) -> dict[str, Any]:
    from latentmem import __version__

    return {"status": "ok", "version": __version__, "sleep": srv.sleep_status()}


def _stats(srv: MemoryServer, req: Request) -> dict[str, Any]:
    return srv.mem.stats()


def _add(srv: MemoryServer, req: Request) -> dict[str, Any]:
    fields = dict(req.body)
    if ("text" in fields) == ("messages" in fields):
        raise InvalidInputError("POST /v1/add needs 'text' (a string) or 'messages' (an array of "
                                "messages), one of the two")
    content = fields.pop("text") if "text" in fields else fields.pop("messages")
    return srv.mem.add(content, **fields).to_dict()


def _search(srv: MemoryServer, req: Request) -> dict[str, Any]:
    fields = dict(req.body)
    hits = srv.mem.search(fields.pop("query"), **fields)
    return {"hits": [hit.to_dict() for hit in hits]}


def _context(srv: MemoryServer, req: Request) -> dict[str, Any]:
    fields = dict(req.body)
    return srv.mem.context(fields.pop("query"), **fields).to_dict()


def _get(srv: MemoryServer, req: Request) -> dict[str, Any]:
    vector = _flag(req.query, "vector")
    record = srv.mem.get(req.args["id"], include_vector=vector, user_id=req.query.get("user_id"))
    return record.to_dict(include_vector=vector)


def _history(srv: MemoryServer, req: Request) -> dict[str, Any]:
    rid = req.args["id"]
    return {"id": rid, "events": srv.mem.history(rid, user_id=req.query.get("user_id"))}


def _explain(srv: MemoryServer, req: Request) -> dict[str, Any]:
    rid = req.args["id"]
    return {"id": rid, "events": srv.mem.explain(rid, user_id=req.query.get("user_id"))}


def _delete(srv: MemoryServer, req: Request) -> dict[str, Any]:
    return {"deleted": srv.mem.delete([req.args["id"]], user_id=req.query.get("user_id"))}


def _feedback(srv: MemoryServer, req: Request) -> dict[str, Any]:
    b = req.body
    importance = srv.mem.feedback(b["id"], b["useful"], user_id=b.get("user_id"))
    return {"id": b["id"], "importance": importance}


def _sleep(srv: MemoryServer, req: Request) -> dict[str, Any]:
    # An HTTP request waits for its cycle: without a budget it gets the server's.
    budget = req.body.get("budget", srv.sleep_budget)
    return srv.mem.sleep(budget, phases=req.body.get("phases")).to_dict()


def _undo(srv: MemoryServer, req: Request) -> dict[str, Any]:
    return srv.mem.undo(req.body["event"], user_id=req.body.get("user_id"))


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {id} stands for one path segment
    call: Callable[[MemoryServer, Request], dict[str, Any]]
    body: Mapping[str, str] | None = None  # field -> kind; None: the route takes no body
    required: tuple[str, ...] = ()
    query: tuple[str, ...] = ()

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.escape(self.path).replace(r"\{id\}", "(?P<id>[^/]+)") + "$")


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", _health),
    Route("GET", "/v1/stats", _stats),
    Route("POST", "/v1/add", _add, {
        "text": "string", "messages": "array", **SCOPE, "metadata": "object",
        "event_time": "time", "role": "string", "speaker": "string", "type": "string",
        "importance": "number", "supersedes": "ids", "vector": "numbers"}),
    Route("POST", "/v1/search", _search, {"query": "string", **SCOPE, "k": "integer",
                                          "as_of": "time", "now": "time"}, ("query",)),
    Route("POST", "/v1/context", _context, {"query": "string", **SCOPE, "budget_tokens": "integer",
                                            "k": "integer", "as_of": "time", "now": "time"},
          ("query",)),
    Route("GET", "/v1/memories/{id}", _get, query=("user_id", "vector")),
    Route("DELETE", "/v1/memories/{id}", _delete, query=("user_id",)),
    Route("GET", "/v1/memories/{id}/history", _history, query=("user_id",)),
    Route("GET", "/v1/memories/{id}/explain", _explain, query=("user_id",)),
    Route("POST", "/v1/feedback", _feedback, {"id": "string", "useful": "boolean", "user_id": "string"},
          ("id", "useful")),
    Route("POST", "/v1/sleep", _sleep, {"budget": "number", "phases": "strings"}),
    Route("POST", "/v1/undo", _undo, {"event": "integer", "user_id": "string"}, ("event",)),
)
_PATTERNS = [(route, route.pattern) for route in ROUTES]


def _route(method: str, path: str) -> tuple[Route, dict[str, str]]:
    allowed = []
    for route, pattern in _PATTERNS:
        match = pattern.match(path)
        if match is None:
            continue
        if route.method == method:
            return route, {k: unquote(v) for k, v in match.groupdict().items()}
        allowed.append(route.method)
    if allowed:
        raise MethodNotAllowedError(f"{method} is not allowed on {path}; use {' or '.join(allowed)}",
                                    allowed)
    raise RouteNotFoundError(f"no endpoint {path}; expected one of "
                             f"{sorted({r.path for r in ROUTES})}")


def _query(text: str, allowed: tuple[str, ...]) -> dict[str, str]:
    try:
        pairs = parse_qs(text, keep_blank_values=True, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"the query string is malformed: {exc}") from exc
    unknown = sorted(set(pairs) - set(allowed))
    if unknown:
        raise InvalidInputError(f"unknown query parameters {unknown}; expected some of "
                                f"{list(allowed)}")
    for name, values in pairs.items():
        if len(values) > 1:
            raise InvalidInputError(f"query parameter {name!r} is given {len(values)} times")
    return {name: values[0] for name, values in pairs.items()}


# -- the server ----------------------------------------------------------------------------

def _is_local(host: str) -> bool:
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Gate:
    """Counts the requests inside the engine, so that stopping waits for them and refuses
    new ones. Held only to count, never during a request."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0
        self._closed = False

    def __enter__(self) -> None:
        with self._cond:
            if self._closed:
                raise ShuttingDownError("the server is shutting down")
            self._busy += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def close(self, timeout: float | None) -> bool:
        with self._cond:
            self._closed = True
            return self._cond.wait_for(lambda: self._busy == 0, timeout)


class _Handler(BaseHTTPRequestHandler):
    server: MemoryServer
    # HTTP/1.1: connections are kept open between requests (every answer has a
    # Content-Length), and a client that sends "Expect: 100-continue" before a large
    # body is told to go on at once; under HTTP/1.0, curl waited a second for that
    # answer before every large body (over 1 MiB with curl 8).
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a stalled client may hold its connection's thread
    _unread = False  # a refused request's body was left unread

    def version_string(self) -> str:
        from latentmem import __version__

        return f"latentmem/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)

    def _handle(self) -> None:
        headers: dict[str, str] = {}
        try:
            data = self._dispatch(self.command)
            status = 200
        except LatentMemError as exc:
            status, data = exc.code(), {"error": exc.name(), "message": str(exc)}
            if isinstance(exc, MethodNotAllowedError):
                headers["Allow"] = ", ".join(exc.allow)
        except Exception as exc:  # noqa: BLE001 - answered as a 500 and logged, never hidden
            traceback.print_exc(file=sys.stderr)
            status, data = 500, {"error": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
        self._send(status, data, headers)

    do_GET = do_HEAD = do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = _handle

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # What the base class refuses itself (a malformed request line, too many headers),
        # in JSON too.
        self.close_connection = True
        reason = message or self.responses.get(code, ("error",))[0]
        self._send(code, {"error": "ProtocolError", "message": f"{code} {reason}"}, {})

    def _send(self, status: int, data: Any, headers: dict[str, str]) -> None:
        payload = encode(data)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:  # the client went away; what it asked for is done or refused
            self.close_connection = True
            return
        if self._unread:
            self.close_connection = True
            self._drain()

    def _dispatch(self, method: str) -> dict[str, Any]:
        url = urlsplit(self.path)
        try:
            host = self.headers.get("Host")
            if self.server.local_only and host is not None and not _is_local(host):
                raise ForbiddenHostError(f"Host {host!r} is not a loopback name; this server "
                                         f"listens on {self.server.url} and answers local names only")
            route, args = _route(method, url.path)
            query = _query(url.query, route.query)
        except LatentMemError:
            self._unread = bool(self.headers.get("Transfer-Encoding")
                                or self.headers.get("Content-Length", "0").strip() not in ("", "0"))
            raise
        body = self._body(route, f"{method} {url.path}")
        with self.server.gate:
            return route.call(self.server, Request(args, query, body))

    def _body(self, route: Route, where: str) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding"):
            self._unread = True
            raise LengthRequiredError("send the body with a Content-Length header (chunked "
                                      "transfer encoding is not supported)")
        declared = self.headers.get("Content-Length", "0").strip()
        if not declared.isdigit():
            self._unread = True
            raise InvalidInputError(f"Content-Length must be a whole number, found {declared!r}")
        length = int(declared)
        limit = self.server.max_body
        if length > limit:
            self._unread = True
            raise InputTooLargeError(f"the request body is {length} bytes; the limit is {limit}")
        if route.body is None:
            if length:
                self._unread = True
                raise InvalidInputError(f"{where} takes no body, found {length} bytes")
            return {}
        if not length:
            raise InvalidInputError(f"{where} needs a JSON object body; the request has none")
        ctype = self.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if ctype != "application/json":
            self._unread = True
            raise UnsupportedMediaTypeError(f"expected Content-Type: application/json, found "
                                            f"{ctype or 'none'}")
        try:
            raw = self.rfile.read(length)
        except OSError as exc:  # the socket timed out
            self.close_connection = True
            raise InvalidInputError(f"the body did not arrive: {exc}") from exc
        if len(raw) < length:
            self.close_connection = True
            raise InvalidInputError(f"the body ended after {len(raw)} of {length} bytes")
        return check_fields(parse_json(raw), route.body, route.required, where)

    def _drain(self) -> None:
        """Read and drop what the client still sends after a refusal (a lingering close)."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_DRAIN_IDLE_S)
            left = _DRAIN_LIMIT
            while left > 0:
                chunk = self.rfile.read1(1 << 16)
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass


class MemoryServer(ThreadingHTTPServer):
    """The HTTP API over one ``Memory``. ``serve_forever()`` serves; ``stop()`` ends the
    serving loop, waits for the requests in flight, stops the sleep thread and closes the
    socket. The ``Memory`` stays open: its owner closes it."""

    daemon_threads = True  # idle or stalled connections never hold up stopping (the gate does)
    request_queue_size = 128  # connections waiting to be accepted in a burst (default 5)

    def __init__(self, mem: Memory, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 sleep_budget: float | None = DEFAULT_SLEEP_BUDGET, max_body: int = MAX_BODY,
                 log_requests: bool = False) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)
        self.mem = mem
        self.sleep_budget = sleep_budget
        self.sleeper: Sleeper | None = None
        self.max_body = max_body
        self.log_requests = log_requests
        self.local_only = _is_local(str(self.server_address[0]))
        self.gate = _Gate()
        self._serving = False

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name, which can stall for
        # seconds on a machine without a resolver; nothing here uses that name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving = True
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving = False

    def sleep_status(self) -> dict[str, Any] | None:
        sleeper = self.sleeper
        if sleeper is None:
            return None
        reports, errors = list(sleeper.reports), list(sleeper.errors)
        return {"every": sleeper.every, "budget": sleeper.budget, "cycles": sleeper.cycles,
                "errors": sleeper.failures, "last_cycle": reports[-1].cycle if reports else None,
                "last_error": errors[-1] if errors else None}

    def stop(self, timeout: float | None = None) -> None:
        """Stop serving; ``timeout`` bounds the wait for requests in flight."""
        if self._serving:
            self.shutdown()
        self.gate.close(timeout)
        if self.sleeper is not None:
            self.sleeper.stop()  # waits for a cycle under way: it ends within its budget
        self.server_close()


def make_server(mem: Memory, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                sleep_every: float | None = None, sleep_budget: float | None = DEFAULT_SLEEP_BUDGET,
                max_body: int = MAX_BODY, log_requests: bool = False) -> MemoryServer:
    """A server bound to ``host:port`` (0: any free port) over ``mem``, with a sleep cycle
    every ``sleep_every`` seconds (None: none) once it is built. ``sleep_budget`` bounds each
    cycle, and the cycle of a ``POST /v1/sleep`` that gives no budget."""
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise InvalidInputError(f"max_body must be a positive number of bytes, found {max_body!r}")
    srv = MemoryServer(mem, host, port, sleep_budget=sleep_budget, max_body=max_body,
                       log_requests=log_requests)
    if sleep_every is not None:
        try:
            srv.sleeper = mem.start_sleeping(sleep_every, sleep_budget)
        except BaseException:
            srv.server_close()
            raise
    return srv


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(srv: MemoryServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then ``stop()`` (the caller closes the ``Memory``)."""
    sleeper = srv.sleeper
    sleeping = (f"a sleep cycle every {sleeper.every:g}s, budget "
                f"{'none' if sleeper.budget is None else f'{sleeper.budget:g}s'}"
                if sleeper is not None else "no sleep cycles")
    sys.stderr.write(f"latentmem: serving {srv.mem.location} on {srv.url} ({sleeping}); "
                     "no authentication; Ctrl-C stops\n")
    sys.stderr.flush()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sys.stderr.write("latentmem: stopping\n")
        srv.stop()
