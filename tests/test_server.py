"""The HTTP API (latentmem/server/): a real server on 127.0.0.1, port 0, in a thread,
over a real store with the hash embedder, driven with real HTTP through urllib."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from latentmem import Memory
from latentmem.cli import main
from latentmem.errors import StoreError
from latentmem.lifecycle import journal
from latentmem.server import MAX_BODY, MemoryServer, make_server

DEADLINE_S = 30.0  # generous: a slow machine must not fail a test that only waits


class Api:
    def __init__(self, srv: MemoryServer, mem: Memory) -> None:
        self.srv, self.mem, self.url = srv, mem, srv.url

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE_S) as resp:
                return resp.status, json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read().decode("utf-8"))


def _start(mem: Memory, **kwargs: Any) -> tuple[MemoryServer, threading.Thread]:
    srv = make_server(mem, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)  # quick stop
    thread.start()
    return srv, thread


@pytest.fixture
def api(mem: Memory) -> Iterator[Api]:
    srv, thread = _start(mem)
    yield Api(srv, mem)
    srv.stop()
    thread.join(DEADLINE_S)


def _poll(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"waited {DEADLINE_S:g}s for {what}")


@pytest.mark.sqlite_only
def test_add_search_context_get_feedback_delete(api: Api, tmp_path: Path) -> None:
    status, receipt = api.call("POST", "/v1/add", {
        "text": "I moved to Lisbon in May 2023", "user_id": "ana", "session_id": "s1",
        "metadata": {"source": "chat"}, "event_time": "2023-05-08T13:56:00Z"})
    assert status == 200 and len(receipt["ids"]) == 1 and "total" in receipt["timings_ms"]
    rid = receipt["ids"][0]
    # Acknowledged means committed: another connection sees it at once.
    with sqlite3.connect(tmp_path / "store" / "memory.db") as other:
        assert other.execute("SELECT count(*) FROM records WHERE id = ?", (rid,)).fetchone()[0] == 1
    status, receipt = api.call("POST", "/v1/add", {
        "messages": [{"role": "user", "content": "I adopted a dog called Pastel", "name": "Ana"},
                     {"role": "assistant", "content": "Lovely name!"}],
        "user_id": "ana", "session_id": "s2"})
    assert status == 200 and len(receipt["ids"]) == 2
    api.call("POST", "/v1/add", {"text": "Bob lives in Lisbon too", "user_id": "bob"})

    status, found = api.call("POST", "/v1/search", {"query": "where does Ana live Lisbon",
                                                    "user_id": "ana", "k": 3})
    assert status == 200 and rid in [h["id"] for h in found["hits"]]
    hit = next(h for h in found["hits"] if h["id"] == rid)
    assert hit["record"]["text"] == "I moved to Lisbon in May 2023"
    assert hit["record"]["event_time"].startswith("2023-05-08T13:56")
    assert {"relevance", "recency", "importance", "final"} <= set(hit["components"])
    assert all(h["record"]["user_id"] == "ana" for h in found["hits"])
    status, found = api.call("POST", "/v1/search", {"query": "dog", "user_id": "ana",
                                                    "session_id": "s2", "as_of": "2030-01-01"})
    assert status == 200 and {h["record"]["session_id"] for h in found["hits"]} == {"s2"}
    assert "Ana" in [h["record"]["speaker"] for h in found["hits"]]

    status, ctx = api.call("POST", "/v1/context", {"query": "where does Ana live", "user_id": "ana",
                                                   "budget_tokens": 200})
    assert status == 200 and "Lisbon" in ctx["text"] and 0 < ctx["used_tokens"] <= 200
    assert rid in [item["id"] for item in ctx["items"]] and isinstance(ctx["omitted"], list)

    status, rec = api.call("GET", f"/v1/memories/{rid}?user_id=ana")
    assert status == 200 and rec["text"] == "I moved to Lisbon in May 2023"
    assert rec["metadata"] == {"source": "chat"} and "vector" not in rec
    status, rec = api.call("GET", f"/v1/memories/{rid}?vector=true")
    assert status == 200 and len(rec["vector"]) == api.mem.dim
    status, hist = api.call("GET", f"/v1/memories/{rid}/history")
    assert status == 200 and [e["event"] for e in hist["events"]] == ["ADD"]

    status, fb = api.call("POST", "/v1/feedback", {"id": rid, "useful": True, "user_id": "ana"})
    assert status == 200 and fb["id"] == rid and 0.0 <= fb["importance"] <= 1.0
    assert api.mem.get(rid).importance == pytest.approx(fb["importance"])

    status, done = api.call("DELETE", f"/v1/memories/{rid}?user_id=ana")
    assert status == 200 and done == {"deleted": 1}
    status, err = api.call("GET", f"/v1/memories/{rid}?user_id=ana")
    assert status == 404 and err["error"] == "NotFoundError" and rid in err["message"]
    status, stats = api.call("GET", "/v1/stats")
    assert status == 200 and stats["per_user"] == {"ana": 2, "bob": 1}
    status, health = api.call("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["sleep"] is None


def test_sleep_explain_undo(api: Api) -> None:
    days = [f"turn {i} of a long day" for i in range(5)]
    _, receipt = api.call("POST", "/v1/add", {"text": days[0], "user_id": "ana"})
    api.call("POST", "/v1/add", {"messages": [*days[1:], *(d + "!" for d in days)], "user_id": "ana"})
    status, report = api.call("POST", "/v1/sleep", {"budget": 10})
    assert status == 200 and report["cycle"].startswith("c-")
    assert report["phases"]["consolidate"]["merged"] > 0
    rid = receipt["ids"][0]
    status, why = api.call("GET", f"/v1/memories/{rid}/explain?user_id=ana")
    assert status == 200 and why["events"][0]["action"] == "archive"
    assert why["events"][0]["undoable"] and why["events"][0]["cycle"] == report["cycle"]
    assert api.call("GET", f"/v1/memories/{rid}")[0] == 404  # archived
    seq = why["events"][0]["seq"]
    assert api.call("POST", "/v1/undo", {"event": seq, "user_id": "bo"})[0] == 404
    status, undone = api.call("POST", "/v1/undo", {"event": seq, "user_id": "ana"})
    assert status == 200 and undone["undone_at"] and undone["seq"] == why["events"][0]["seq"]
    assert api.call("GET", f"/v1/memories/{rid}")[0] == 200
    status, again = api.call("POST", "/v1/undo", {"event": why["events"][0]["seq"]})
    assert status == 400 and "already undone" in again["message"]


def _fingerprint(mem: Memory, rid: str) -> Any:
    mem.settle()
    stats = mem.stats()
    return (stats, [r.to_dict() for r in mem.all("ana")], mem.store.history(rid),
            [e.to_dict() for e in journal.recent(mem.store, 1000)])


BAD_REQUESTS = [
    # (method, path, json body | raw bytes, extra headers, status, error kind)
    ("POST", "/v1/add", b'{"text": "x"', None, 400, "InvalidInputError"),
    ("POST", "/v1/add", b'["x"]', None, 400, "InvalidInputError"),
    ("POST", "/v1/add", b'{"text": "x", "importance": NaN}', None, 400, "InvalidInputError"),
    ("POST", "/v1/add", b'{"text": "\xff\xfe"}', None, 400, "InvalidInputError"),
    ("POST", "/v1/add", b"[" * 100_000, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", None, None, 400, "InvalidInputError"),  # no body
    ("POST", "/v1/add", b'{"text": "x"}', {"Content-Type": "text/plain"}, 415,
     "UnsupportedMediaTypeError"),
    ("POST", "/v1/add", {"text": "x", "colour": "red"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"text": 5}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"messages": "hello"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"text": "x", "metadata": "m"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"text": "x", "importance": True}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"text": "x", "user_id": ["ana"]}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"text": "x", "messages": ["y"]}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"text": "   "}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"text": "x", "user_id": ""}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"text": "x", "event_time": "the day after never"}, None, 400,
     "InvalidInputError"),
    ("POST", "/v1/add", {"text": "x", "importance": 2}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"text": "x", "vector": [0.0, 1.0]}, None, 400, "InvalidInputError"),
    ("POST", "/v1/add", {"messages": [{"role": "user", "content": "fine"},
                                      {"role": "user", "content": ""}]}, None, 400,
     "InvalidInputError"),
    ("POST", "/v1/add", {"text": "x", "supersedes": "no-such-id", "user_id": "ana"}, None, 404,
     "NotFoundError"),
    ("POST", "/v1/add", {"text": "x" * 100_001}, None, 413, "InputTooLargeError"),
    ("POST", "/v1/search", {}, None, 400, "InvalidInputError"),
    ("POST", "/v1/search", {"query": None}, None, 400, "InvalidInputError"),
    ("POST", "/v1/search", {"query": "x", "k": "10"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/search", {"query": "x", "k": True}, None, 400, "InvalidInputError"),
    ("POST", "/v1/search", {"query": "x", "k": 0}, None, 400, "InvalidInputError"),
    ("POST", "/v1/search", {"query": "x", "as_of": "someday"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/context", {"query": "x", "budget_tokens": 0}, None, 400, "InvalidInputError"),
    ("POST", "/v1/context", {"query": "x", "budget": 10}, None, 400, "InvalidInputError"),
    ("POST", "/v1/feedback", {"id": "{id}", "useful": "yes"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/feedback", {"id": "{id}"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/feedback", {"id": "no-such-id", "useful": True}, None, 404, "NotFoundError"),
    ("POST", "/v1/feedback", {"id": "{id}", "useful": True, "user_id": "bob"}, None, 404,
     "NotFoundError"),
    ("POST", "/v1/sleep", {"budget": -1}, None, 400, "InvalidInputError"),
    ("POST", "/v1/sleep", {"budget": "soon"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/sleep", {"phases": ["dream"]}, None, 400, "InvalidInputError"),
    ("POST", "/v1/undo", {"event": "1"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/undo", {"event": 99_999}, None, 404, "NotFoundError"),
    ("GET", "/v1/memories/no-such-id", None, None, 404, "NotFoundError"),
    ("GET", "/v1/memories/{id}?user_id=bob", None, None, 404, "NotFoundError"),
    ("GET", "/v1/memories/{id}?colour=red", None, None, 400, "InvalidInputError"),
    ("GET", "/v1/memories/{id}?vector=maybe", None, None, 400, "InvalidInputError"),
    ("GET", "/v1/memories/{id}?user_id=ana&user_id=bob", None, None, 400, "InvalidInputError"),
    ("GET", "/v1/memories/{id}/history?user_id=bob", None, None, 404, "NotFoundError"),
    ("GET", "/v1/memories/{id}/explain", None, None, 404, "NotFoundError"),
    ("DELETE", "/v1/memories/{id}?user_id=bob", None, None, 404, "NotFoundError"),
    ("DELETE", "/v1/memories/no-such-id", None, None, 404, "NotFoundError"),
    ("DELETE", "/v1/memories/{id}?user_id=", None, None, 400, "InvalidInputError"),
    ("GET", "/v1/nope", None, None, 404, "RouteNotFoundError"),
    ("GET", "/v1/memories/{id}/", None, None, 404, "RouteNotFoundError"),
    ("GET", "/v1/add", None, None, 405, "MethodNotAllowedError"),
    ("DELETE", "/v1/stats", None, None, 405, "MethodNotAllowedError"),
    ("PUT", "/v1/memories/{id}", {"text": "y"}, None, 405, "MethodNotAllowedError"),
    ("GET", "/v1/stats", b'{"a": 1}', None, 400, "InvalidInputError"),
    ("GET", "/v1/stats", None, {"Host": "memory.attacker.example"}, 403, "ForbiddenHostError"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "kind"), BAD_REQUESTS,
                         ids=[f"{r[0]} {r[1]} {r[4]} #{i}" for i, r in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_clear_errors_and_change_nothing(
        api: Api, method: str, path: str, body: Any, headers: dict[str, str] | None, status: int,
        kind: str) -> None:
    rid = api.mem.add("I keep my spare key under the blue pot", user_id="ana").ids[0]
    path = path.replace("{id}", rid)
    if isinstance(body, dict):
        body = {k: rid if v == "{id}" else v for k, v in body.items()}
    before = _fingerprint(api.mem, rid)
    got, err = api.call(method, path, None if isinstance(body, bytes) else body,
                        raw=body if isinstance(body, bytes) else None, headers=headers)
    assert (got, err["error"]) == (status, kind), err
    assert set(err) == {"error", "message"} and err["message"]
    assert _fingerprint(api.mem, rid) == before


def test_oversized_and_chunked_bodies_are_refused(api: Api) -> None:
    before = api.mem.stats()
    big = b'{"text": "' + b"a" * MAX_BODY + b'"}'
    status, err = api.call("POST", "/v1/add", raw=big)
    assert status == 413 and err["error"] == "InputTooLargeError" and str(MAX_BODY) in err["message"]
    host, port = api.srv.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=DEADLINE_S)
    conn.request("POST", "/v1/add", body=iter([b'{"text": "x"}']), encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    assert resp.status == 411 and json.loads(resp.read())["error"] == "LengthRequiredError"
    conn.close()
    assert api.mem.stats() == before


def test_405_says_which_methods_are_allowed(api: Api) -> None:
    host, port = api.srv.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=DEADLINE_S)
    conn.request("PATCH", "/v1/memories/x", body=b'{"text": "y"}',
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 405 and resp.getheader("Allow") == "GET, DELETE"
    assert resp.getheader("Content-Type") == "application/json; charset=utf-8"
    conn.close()


def test_http11_keeps_the_connection_and_answers_expect_continue(api: Api) -> None:
    host, port = api.srv.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=DEADLINE_S)
    for text in ("first on this connection", "second on the same one"):
        conn.request("POST", "/v1/add", body=json.dumps({"text": text, "user_id": "u"}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.version == 11 and json.loads(resp.read())["ids"]
    conn.close()
    body = json.dumps({"text": "x" * 4000, "user_id": "u"}).encode()
    with socket.create_connection((str(host), port), timeout=DEADLINE_S) as sock:
        sock.sendall(b"POST /v1/add HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 100")  # before the body is sent
        assert reader.readline() == b"\r\n"
        sock.sendall(body)
        assert reader.readline().startswith(b"HTTP/1.1 200")
    assert len(api.mem.all(user_id="u")) == 3


def test_malformed_requests_are_answered_in_json(api: Api) -> None:
    with socket.create_connection(api.srv.server_address[:2], timeout=DEADLINE_S) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n")
        answer = sock.makefile("rb").read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431") and json.loads(body)["error"] == "ProtocolError"
    host, port = api.srv.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=DEADLINE_S)
    conn.request("HEAD", "/health")
    resp = conn.getresponse()
    assert resp.status == 405 and resp.getheader("Allow") == "GET" and resp.read() == b""
    conn.close()


def test_engine_failures_are_500s_with_a_kind(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_store() -> None:
        raise StoreError("the store file is locked by another program")

    monkeypatch.setattr(api.mem, "stats", broken_store)
    status, err = api.call("GET", "/v1/stats")
    assert (status, err["error"]) == (500, "StoreError") and "locked" in err["message"]

    def bug() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.mem, "stats", bug)
    status, err = api.call("GET", "/v1/stats")
    assert (status, err) == (500, {"error": "InternalError", "message": "RuntimeError: a bug"})
    assert api.call("GET", "/health")[0] == 200  # the server goes on


def test_concurrent_writes_and_searches(api: Api) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                status, receipt = api.call("POST", "/v1/add", {"text": f"writer {n} note {i} about bees",
                                                               "user_id": "ana"})
                assert status == 200
                ids.extend(receipt["ids"])
                status, _ = api.call("POST", "/v1/search", {"query": "bees", "user_id": "ana"})
                assert status == 200
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    assert not errors
    assert len(set(ids)) == 40 and api.mem.stats()["records"] == 40
    assert api.mem.index.count() == 40
    assert all(api.call("GET", f"/v1/memories/{rid}")[0] == 200 for rid in ids[::7])


def test_background_sleep_runs_while_serving_and_stops(mem: Memory) -> None:
    mem.add([f"turn {i} of a long day" for i in range(5)], user_id="ana")
    mem.add([f"turn {i} of a long day!" for i in range(5)], user_id="ana")
    before = set(threading.enumerate())
    srv, thread = _start(mem, sleep_every=0.2, sleep_budget=5.0)
    sleepers = [t for t in threading.enumerate() if t not in before and t.name == "latentmem-sleep"]
    try:
        api = Api(srv, mem)
        health = _poll(lambda: (h := api.call("GET", "/health")[1])["sleep"]["cycles"] and h,
                       "a background sleep cycle")
        assert health["sleep"]["every"] == 0.2 and health["sleep"]["errors"] == 0
        cycle = health["sleep"]["last_cycle"]
        assert [e.action for e in journal.of_cycle(mem.store, cycle)][-1] == "sleep"
        assert any(r.level == "merged" for r in mem.all("ana"))  # the cycle consolidated
        assert api.call("POST", "/v1/search", {"query": "long day", "user_id": "ana"})[0] == 200
    finally:
        srv.stop()
        thread.join(DEADLINE_S)
    assert len(sleepers) == 1 and not sleepers[0].is_alive() and not thread.is_alive()
    with pytest.raises(OSError):  # the socket is closed
        socket.create_connection(srv.server_address[:2], timeout=1).close()


def test_cli_serve_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "LATENTMEM_EMBEDDER": "hash"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentmem.cli", "--home", str(home), "serve", "--port", "0",
         "--sleep-every", "0.2s", "--sleep-budget", "5s"],
        stderr=subprocess.PIPE, env=env, cwd=Path(__file__).resolve().parents[1])
    watchdog = threading.Timer(DEADLINE_S, proc.kill)  # a hung server fails, never hangs the run
    watchdog.start()
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert "serving" in line and "no authentication" in line, line
        url = line.split(" on ", 1)[1].split()[0]
        req = urllib.request.Request(url + "/v1/add", method="POST",
                                     data=json.dumps({"text": "the spare key is under the pot",
                                                      "user_id": "ana"}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=DEADLINE_S) as resp:
            rid = json.loads(resp.read())["ids"][0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE_S) == 0
        assert "stopping" in proc.stderr.read().decode()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Memory(home, embedder="hash") as m:
        assert m.get(rid).text == "the spare key is under the pot"


def test_cli_serve_refuses_a_bad_port(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    with pytest.raises(SystemExit) as exit_:
        main(["--home", str(tmp_path / "h"), "serve", "--port", "70000"])
    assert exit_.value.code == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--home", str(tmp_path / "h"), "serve", "--port", str(port), "--no-sleep"]) == 1
    assert "cannot listen" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--home", str(tmp_path / "h"), "serve", "--no-sleep", "--sleep-every", "1m"])
    assert exit_.value.code == 2
