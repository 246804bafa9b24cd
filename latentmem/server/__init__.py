"""``latentmem serve``: the REST API (``app.py``), the MCP server at ``/mcp``
(``mcp_server.py``) and the chat proxy (``proxy.py``) under uvicorn, with background sleep
cycles.

``make_server(mem, host, port)`` binds the socket (port 0: any free port) and builds a
``MemoryServer``; ``serve(srv)`` runs it in the calling thread until Ctrl-C or SIGTERM
(uvicorn's own handlers: requests in flight finish), then stops the sleep thread; tests use
``srv.start()``/``srv.stop()`` to run it in a thread. The caller closes the ``Memory``.

Authentication: every ``/v1`` request needs ``Authorization: Bearer <key>`` (``keys.py``;
``latentmem keys create``). ``insecure=True`` (``--insecure-no-auth``) serves without keys,
with plain user ids as the embedded SDK sees them, and is refused unless the server is
bound to a loopback address. While bound to loopback the server also answers only requests
whose Host is a loopback name, so a web page cannot reach it through DNS rebinding.

Chosen: FastAPI on uvicorn (the Python ecosystem's convention; OpenAPI at /openapi.json,
from which clients and schema fuzzers are generated; the MCP SDK's HTTP transport is an
ASGI app, so an ASGI server is needed anyway). It replaced a standard-library
``ThreadingHTTPServer`` of ~500 lines whose request checks pydantic models now do.
Rejected: running the engine's calls on the event loop (they block); a global lock
(searches would wait behind a sleep cycle's writes).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from latentmem.errors import InvalidInputError
from latentmem.server.app import ServerState, build_app
from latentmem.server.keys import KeyRing
from latentmem.server.protocol import is_local

if TYPE_CHECKING:
    from latentmem.memory import Memory

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_SLEEP_BUDGET = 30.0
MAX_BODY = 8 * 1024 * 1024
BODY_TIMEOUT = 30.0
KEEP_ALIVE = 15  # seconds an idle keep-alive connection stays open


class MemoryServer:
    """The API over one ``Memory``, on a socket bound at construction."""

    def __init__(self, mem: Memory, sock: socket.socket, state: ServerState,
                 log_requests: bool = False) -> None:
        import uvicorn

        self.mem = mem
        self.sock = sock
        self.state = state
        self.app = build_app(state)
        config = uvicorn.Config(self.app, log_level="info" if log_requests else "warning",
                                access_log=log_requests, timeout_keep_alive=KEEP_ALIVE,
                                timeout_graceful_shutdown=30, lifespan="on",
                                server_header=False, date_header=False)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def sleeper(self) -> Any:
        return self.state.sleeper

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def serve_forever(self) -> None:
        """Serve in this thread until ``stop()``, or Ctrl-C/SIGTERM in the main thread."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self._stop_sleeping()

    def start(self, timeout: float = 30.0) -> MemoryServer:
        """Serve in a background thread; returns once the server answers."""
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="latentmem-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop serving (requests in flight finish), stop the sleep thread, close the socket."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._stop_sleeping()
        self.sock.close()

    def _stop_sleeping(self) -> None:
        if self.state.sleeper is not None:
            self.state.sleeper.stop()  # waits for a cycle under way: it ends within its budget


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it. asyncio sets it itself only on sockets made with
    # proto=IPPROTO_TCP; without it every answer (headers, then body: two writes) waited
    # for the client's delayed ACK: 45 ms per request here instead of 2 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(256)
    sock.set_inheritable(True)
    return sock


def make_server(mem: Memory, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                insecure: bool = False, sleep_every: float | None = None,
                sleep_budget: float | None = DEFAULT_SLEEP_BUDGET, max_body: int = MAX_BODY,
                body_timeout: float = BODY_TIMEOUT, log_requests: bool = False,
                llm: dict[str, Any] | None = None) -> MemoryServer:
    """A server bound to ``host:port`` over ``mem``. ``insecure``: no keys (loopback only).
    ``sleep_every``: a sleep cycle every so many seconds (None: none), each bounded by
    ``sleep_budget``, which also bounds a ``POST /v1/sleep`` that gives none. ``llm``: the
    chat proxy's upstream (``url``, ``key``, ``model``)."""
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise InvalidInputError(f"max_body must be a positive number of bytes, found {max_body!r}")
    if insecure and not is_local(host):
        raise InvalidInputError(f"--insecure-no-auth serves without keys and is refused on "
                                f"{host!r}: bind it to a loopback address (127.0.0.1, ::1, localhost)")
    sock = _bind(host, port)
    state = ServerState(mem, None if insecure else KeyRing(mem.store), sleep_budget=sleep_budget,
                        max_body=max_body, body_timeout=body_timeout,
                        local_only=is_local(host), llm=dict(llm or {}))
    try:
        srv = MemoryServer(mem, sock, state, log_requests)
        if sleep_every is not None:
            state.sleeper = mem.start_sleeping(sleep_every, sleep_budget)
    except BaseException:
        sock.close()
        raise
    return srv


def serve(srv: MemoryServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop the sleep thread (the caller closes the
    ``Memory``)."""
    sleeper = srv.state.sleeper
    sleeping = (f"a sleep cycle every {sleeper.every:g}s, budget "
                f"{'none' if sleeper.budget is None else f'{sleeper.budget:g}s'}"
                if sleeper is not None else "no sleep cycles")
    auth = "API keys required" if srv.state.keyring is not None else "NO AUTHENTICATION"
    if srv.state.keyring is None:
        sys.stderr.write("latentmem: WARNING: --insecure-no-auth: any local process can read "
                         "and delete every memory; for local development only\n")
    sys.stderr.write(f"latentmem: serving {srv.mem.location} on {srv.url} ({sleeping}; {auth}; "
                     f"docs at {srv.url}/docs, MCP at {srv.url}/mcp); Ctrl-C stops\n")
    sys.stderr.flush()
    # uvicorn catches SIGTERM and SIGINT, stops gracefully, then raises the signal again
    # with the handlers it found: SIGTERM then ends here as Ctrl-C does, with status 0.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sys.stderr.write("latentmem: stopped\n")
        srv.sock.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
