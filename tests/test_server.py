"""The REST API (latentmem/server/): a real uvicorn server on 127.0.0.1, port 0, in a
thread, over a real store with the hash embedder, driven with real HTTP (httpx, raw
sockets). Tenants and keys are in test_server_isolation.py; the fuzzer in test_fuzz.py."""

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from latentmem import Memory
from latentmem.cli import main
from latentmem.errors import InvalidInputError, StoreError
from latentmem.lifecycle import journal
from latentmem.server import MAX_BODY, MemoryServer, keys, make_server
from tests.conftest import DEADLINE_S, poll


class Api:
    """Real HTTP (httpx, keep-alive) with an admin key of the tenant ``acme``."""

    def __init__(self, srv: MemoryServer, mem: Memory, key: str) -> None:
        self.srv, self.mem, self.url, self.key = srv, mem, srv.url, key
        self.http = httpx.Client(base_url=srv.url, timeout=DEADLINE_S)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.srv.sock.getsockname()[:2]
        return str(host), int(port)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None, key: str | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent = {"Authorization": f"Bearer {key or self.key}"}
        if data is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        resp = self.http.request(method, path, content=data, headers=sent)
        return resp.status_code, resp.json()


def _start(mem: Memory, **kwargs: Any) -> MemoryServer:
    return make_server(mem, "127.0.0.1", 0, **kwargs).start()


@pytest.fixture
def api(mem: Memory) -> Iterator[Api]:
    key, _ = keys.create(mem.store, "acme", admin=True)
    srv = _start(mem)
    client = Api(srv, mem, key)
    yield client
    client.http.close()
    srv.stop()



@pytest.mark.sqlite_only
def test_add_search_context_get_feedback_delete(api: Api, tmp_path: Path) -> None:
    status, receipt = api.call("POST", "/v1/add", {
        "text": "I moved to Lisbon in May 2023", "user_id": "ana", "session_id": "s1",
        "metadata": {"source": "chat"}, "event_time": "2023-05-08T13:56:00Z"})
    assert status == 200 and len(receipt["ids"]) == 1 and "total" in receipt["timings_ms"]
    rid = receipt["ids"][0]
    # Acknowledged means committed: another connection sees it at once.
    with sqlite3.connect(tmp_path / "store" / "memory.db") as other:
        assert other.execute("SELECT user_id FROM records WHERE id = ?", (rid,)).fetchall() == [
            ("acme:ana",)]  # stored inside the key's tenant
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

    status, rec = api.call("GET", f"/v1/memories/{rid}")
    assert status == 200 and rec["text"] == "I moved to Lisbon in May 2023"
    assert rec["metadata"] == {"source": "chat"} and rec["vector"] is None
    assert rec["user_id"] == "ana"
    status, rec = api.call("GET", f"/v1/memories/{rid}?vector=true")
    assert status == 200 and len(rec["vector"]) == api.mem.dim
    status, hist = api.call("GET", f"/v1/memories/{rid}/history")
    assert status == 200 and [e["event"] for e in hist["events"]] == ["ADD"]

    status, fb = api.call("POST", "/v1/feedback", {"id": rid, "useful": True})
    assert status == 200 and fb["id"] == rid and 0.0 <= fb["importance"] <= 1.0
    assert api.mem.get(rid).importance == pytest.approx(fb["importance"])

    status, rec = api.call("PATCH", f"/v1/memories/{rid}", {"text": "I moved to Porto in May 2023",
                                                           "importance": 0.9})
    assert status == 200 and rec["text"].endswith("Porto in May 2023") and rec["importance"] == 0.9
    status, hist = api.call("GET", f"/v1/memories/{rid}/history")
    assert [e["event"] for e in hist["events"]] == ["ADD", "UPDATE"]

    status, done = api.call("DELETE", f"/v1/memories/{rid}")
    assert status == 200 and done == {"deleted": 1}
    status, err = api.call("GET", f"/v1/memories/{rid}")
    assert status == 404 and err["error"] == "NotFoundError" and rid in err["message"]
    status, stats = api.call("GET", "/v1/stats")
    assert status == 200 and stats["per_user"] == {"ana": 2, "bob": 1} and stats["tenant"] == "acme"
    assert stats["store"]["records"] == 3  # an admin key also sees the store's
    status, health = api.call("GET", "/health")
    assert status == 200 and health["status"] == "ok"
    assert api.call("GET", "/v1/sleep")[1] == {"running": False, "every": None, "budget": None,
                                             "cycles": 0, "errors": 0, "last_cycle": None,
                                             "last_error": None}


def test_list_pages_export_import_and_delete_user(api: Api) -> None:
    ids = api.mem.add([f"note {i} about the garden" for i in range(7)], user_id="acme:ana").ids
    api.mem.add("bob's own note", user_id="acme:bob")
    seen, cursor, pages = [], None, 0
    while True:
        query = "/v1/memories?user_id=ana&limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page = api.call("GET", query)
        assert status == 200 and len(page["memories"]) <= 3
        seen += [m["id"] for m in page["memories"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    assert api.call("GET", "/v1/memories?user_id=ana&cursor=bm9wZQ")[0] == 400

    status, dump = api.call("GET", "/v1/users/ana/export")
    assert status == 200 and dump["manifest"]["count"] == 7 and len(dump["edges"]) == 6
    assert {r["user_id"] for r in dump["records"]} == {"ana"}
    assert len(dump["records"][0]["vector"]) == api.mem.dim
    status, done = api.call("DELETE", "/v1/users/ana")
    assert (status, done) == (200, {"deleted": 7})
    assert api.call("GET", "/v1/memories?user_id=ana")[1]["memories"] == []
    assert api.mem.store.history(ids[0])[0]["new_text"] is None  # no text is left behind
    body = {k: dump[k] for k in ("manifest", "records", "edges")}
    status, done = api.call("POST", "/v1/users/carla/import", body)
    assert (status, done) == (200, {"imported": 7})
    assert [r.text for r in api.mem.all("acme:carla")] == [f"note {i} about the garden"
                                                           for i in range(7)]
    status, err = api.call("POST", "/v1/users/carla/import", body)  # the ids exist now
    assert status == 409 and len(api.mem.all("acme:carla")) == 7
    status, done = api.call("POST", "/v1/users/carla/import", {**body, "on_conflict": "skip"})
    assert (status, done) == (200, {"imported": 0})
    bad = {**body, "records": [{**body["records"][0], "id": "new-one", "vector": [1.0]}]}
    assert api.call("POST", "/v1/users/dan/import", bad)[0] == 400
    assert api.mem.all("acme:dan") == []


def test_sleep_explain_undo(api: Api) -> None:
    days = [f"turn {i} of a long day" for i in range(5)]
    _, receipt = api.call("POST", "/v1/add", {"text": days[0], "user_id": "ana"})
    api.call("POST", "/v1/add", {"messages": [*days[1:], *(d + "!" for d in days)], "user_id": "ana"})
    status, report = api.call("POST", "/v1/sleep", {"budget": 10})
    assert status == 200 and report["cycle"].startswith("c-")
    assert report["phases"]["consolidate"]["merged"] > 0
    rid = receipt["ids"][0]
    status, why = api.call("GET", f"/v1/memories/{rid}/explain")
    assert status == 200 and why["events"][0]["action"] == "archive"
    assert why["events"][0]["undoable"] and why["events"][0]["cycle"] == report["cycle"]
    assert why["events"][0]["user_id"] == "ana"
    assert api.call("GET", f"/v1/memories/{rid}")[0] == 404  # archived
    seq = why["events"][0]["seq"]
    other, _ = keys.create(api.mem.store, "blue")
    assert api.call("POST", "/v1/undo", {"event": seq}, key=other)[0] == 404
    assert api.call("GET", f"/v1/memories/{rid}/explain", key=other)[0] == 404
    status, undone = api.call("POST", "/v1/undo", {"event": seq})
    assert status == 200 and undone["undone_at"] and undone["seq"] == why["events"][0]["seq"]
    assert api.call("GET", f"/v1/memories/{rid}")[0] == 200
    status, again = api.call("POST", "/v1/undo", {"event": why["events"][0]["seq"]})
    assert status == 400 and "already undone" in again["message"]


def _fingerprint(mem: Memory, rid: str) -> Any:
    mem.settle()
    stats = mem.stats()
    return (stats, [r.to_dict() for r in mem.all("acme:ana")], mem.store.history(rid),
            [e.to_dict() for e in journal.recent(mem.store, 1000)], mem.store.api_keys())


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
    ("POST", "/v1/add", {"messages": [{"role": 5, "content": [1]}]}, None, 400, "InvalidInputError"),
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
    ("POST", "/v1/sleep", {"budget": -1}, None, 400, "InvalidInputError"),
    ("POST", "/v1/sleep", {"budget": "soon"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/sleep", {"phases": ["dream"]}, None, 400, "InvalidInputError"),
    ("POST", "/v1/undo", {"event": "1"}, None, 400, "InvalidInputError"),
    ("POST", "/v1/undo", {"event": 99_999}, None, 404, "NotFoundError"),
    ("POST", "/v1/undo", {"event": 2**70}, None, 400, "InvalidInputError"),
    ("PATCH", "/v1/memories/{id}", {"text": ""}, None, 400, "InvalidInputError"),
    ("PATCH", "/v1/memories/{id}", {"importance": -1}, None, 400, "InvalidInputError"),
    ("PATCH", "/v1/memories/{id}", {"user_id": "bob"}, None, 400, "InvalidInputError"),
    ("PATCH", "/v1/memories/no-such-id", {"text": "y"}, None, 404, "NotFoundError"),
    ("GET", "/v1/memories/no-such-id", None, None, 404, "NotFoundError"),
    ("GET", "/v1/memories/{id}?colour=red", None, None, 400, "InvalidInputError"),
    ("GET", "/v1/memories/{id}?vector=maybe", None, None, 400, "InvalidInputError"),
    ("GET", "/v1/memories?user_id=ana&user_id=bob", None, None, 400, "InvalidInputError"),
    ("GET", "/v1/memories?limit=0", None, None, 400, "InvalidInputError"),
    ("GET", "/v1/memories?cursor=%00", None, None, 400, "InvalidInputError"),
    ("GET", "/v1/memories/{id}/explain", None, None, 404, "NotFoundError"),
    ("DELETE", "/v1/memories/no-such-id", None, None, 404, "NotFoundError"),
    ("DELETE", "/v1/memories/{id}?user_id=", None, None, 400, "InvalidInputError"),
    ("POST", "/v1/users/ana/import", {"manifest": {}, "records": []}, None, 400, "InvalidInputError"),
    ("POST", "/v1/keys", {"tenant": "no:colons"}, None, 400, "InvalidInputError"),
    ("DELETE", "/v1/keys/000000000000", None, None, 404, "NotFoundError"),
    ("GET", "/v1/nope", None, None, 404, "RouteNotFoundError"),
    ("GET", "/v1/memories/{id}/", None, None, 404, "RouteNotFoundError"),
    ("GET", "/v1/add", None, None, 405, "MethodNotAllowedError"),
    ("DELETE", "/v1/stats", None, None, 405, "MethodNotAllowedError"),
    ("PUT", "/v1/memories/{id}", {"text": "y"}, None, 405, "MethodNotAllowedError"),
    ("GET", "/v1/stats", None, {"Host": "memory.attacker.example"}, 403, "ForbiddenHostError"),
    ("GET", "/v1/stats", None, {"Authorization": "Bearer lm_000000000000_" + "a" * 43}, 401,
     "UnauthorizedError"),
    ("GET", "/v1/stats", None, {"Authorization": "Basic YTpi"}, 401, "UnauthorizedError"),
]


@pytest.mark.sqlite_only  # the routes' checks; the store under them is tested on both backends
@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "kind"), BAD_REQUESTS,
                         ids=[f"{r[0]} {r[1]} {r[4]} #{i}" for i, r in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_clear_errors_and_change_nothing(
        api: Api, method: str, path: str, body: Any, headers: dict[str, str] | None, status: int,
        kind: str) -> None:
    rid = api.mem.add("I keep my spare key under the blue pot", user_id="acme:ana").ids[0]
    path = path.replace("{id}", rid)
    if isinstance(body, dict):
        body = {k: rid if v == "{id}" else v for k, v in body.items()}
    before = _fingerprint(api.mem, rid)
    got, err = api.call(method, path, None if isinstance(body, bytes) else body,
                        raw=body if isinstance(body, bytes) else None, headers=headers)
    assert (got, err["error"]) == (status, kind), err
    assert set(err) == {"error", "message"} and err["message"]
    assert _fingerprint(api.mem, rid) == before


def test_oversized_slow_and_chunked_bodies(api: Api) -> None:
    before = api.mem.stats()
    big = b'{"text": "' + b"a" * MAX_BODY + b'"}'
    status, err = api.call("POST", "/v1/add", raw=big)
    assert status == 413 and err["error"] == "InputTooLargeError" and str(MAX_BODY) in err["message"]
    host, port = api.address
    auth = {"Content-Type": "application/json", "Transfer-Encoding": "chunked",
            "Authorization": f"Bearer {api.key}"}
    conn = http.client.HTTPConnection(host, port, timeout=DEADLINE_S)
    conn.request("POST", "/v1/add", body=iter([b"[" * (1 << 20)] * 9), encode_chunked=True,
                 headers=auth)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"] == "InputTooLargeError"
    conn.close()
    assert api.mem.stats() == before
    conn = http.client.HTTPConnection(host, port, timeout=DEADLINE_S)
    conn.request("POST", "/v1/add", body=iter([b'{"text": "chunked', b' is fine"}']),
                 encode_chunked=True, headers=auth)
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["ids"]
    conn.close()


def test_a_stalled_body_is_timed_out(mem: Memory) -> None:
    key, _ = keys.create(mem.store, "acme")
    srv = _start(mem, body_timeout=0.5)
    try:
        host, port = srv.sock.getsockname()[:2]
        with socket.create_connection((host, port), timeout=DEADLINE_S) as sock:
            sock.sendall(b"POST /v1/add HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 100\r\nAuthorization: Bearer "
                         + key.encode() + b"\r\n\r\n{\"text\": ")
            head = sock.makefile("rb").readline()  # the server answers without the rest
        assert head.startswith(b"HTTP/1.1 408")
        assert mem.stats()["records"] == 0
    finally:
        srv.stop()


def test_405_says_which_methods_are_allowed(api: Api) -> None:
    resp = api.http.request("POST", "/v1/memories/x", headers={"Authorization": f"Bearer {api.key}"})
    assert resp.status_code == 405 and set(resp.headers["Allow"].split(", ")) == {
        "GET", "PATCH", "DELETE"}
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json()["error"] == "MethodNotAllowedError"


def test_http11_keeps_the_connection_and_answers_expect_continue(api: Api) -> None:
    host, port = api.address
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {api.key}"}
    conn = http.client.HTTPConnection(host, port, timeout=DEADLINE_S)
    for text in ("first on this connection", "second on the same one"):
        conn.request("POST", "/v1/add", body=json.dumps({"text": text, "user_id": "u"}),
                     headers=auth)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.version == 11 and json.loads(resp.read())["ids"]
    conn.close()
    body = json.dumps({"text": "x" * 4000, "user_id": "u"}).encode()
    with socket.create_connection((host, port), timeout=DEADLINE_S) as sock:
        sock.sendall(b"POST /v1/add HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                     b"Authorization: Bearer " + api.key.encode() + b"\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 100")  # before the body is sent
        assert reader.readline() == b"\r\n"
        sock.sendall(body)
        assert reader.readline().startswith(b"HTTP/1.1 200")
    assert len(api.mem.all(user_id="acme:u")) == 3


def test_openapi_and_docs_are_served(api: Api) -> None:
    spec = api.http.get("/openapi.json").json()
    assert {"/v1/add", "/v1/search", "/v1/context", "/v1/memories", "/v1/memories/{id}",
            "/v1/users/{user_id}", "/v1/users/{user_id}/export", "/v1/keys"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "400" in spec["paths"]["/v1/search"]["post"]["responses"]
    assert api.http.get("/docs").status_code == 200


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
            with httpx.Client(base_url=api.url, timeout=DEADLINE_S,
                              headers={"Authorization": f"Bearer {api.key}"}) as http_:
                for i in range(10):
                    resp = http_.post("/v1/add", json={"text": f"writer {n} note {i} about bees",
                                                       "user_id": "ana"})
                    assert resp.status_code == 200
                    ids.extend(resp.json()["ids"])
                    resp = http_.post("/v1/search", json={"query": "bees", "user_id": "ana"})
                    assert resp.status_code == 200
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
    mem.add([f"turn {i} of a long day" for i in range(5)], user_id="acme:ana")
    mem.add([f"turn {i} of a long day!" for i in range(5)], user_id="acme:ana")
    key, _ = keys.create(mem.store, "acme")
    before = set(threading.enumerate())
    srv = _start(mem, sleep_every=0.2, sleep_budget=5.0)
    sleepers = [t for t in threading.enumerate() if t not in before and t.name == "latentmem-sleep"]
    try:
        api = Api(srv, mem, key)
        status = poll(lambda: (h := api.call("GET", "/v1/sleep")[1])["cycles"] and h,
                       "a background sleep cycle")
        assert status["every"] == 0.2 and status["errors"] == 0 and status["running"]
        cycle = status["last_cycle"]
        assert [e.action for e in journal.of_cycle(mem.store, cycle)][-1] == "sleep"
        assert any(r.level == "merged" for r in mem.all("acme:ana"))  # the cycle consolidated
        assert api.call("POST", "/v1/search", {"query": "long day", "user_id": "ana"})[0] == 200
        assert api.call("POST", "/v1/sleep", {})[0] == 403  # a cycle spans tenants: admins only
        api.http.close()
    finally:
        srv.stop()
    assert len(sleepers) == 1 and not sleepers[0].is_alive()
    with pytest.raises(OSError):  # the socket is closed
        socket.create_connection(api.address, timeout=1).close()


def test_cli_keys_and_serve_answer_and_stop_on_sigterm(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "LATENTMEM_EMBEDDER": "hash"}
    made = subprocess.run([sys.executable, "-m", "latentmem.cli", "--home", str(home), "--json",
                           "keys", "create", "--tenant", "acme", "--user", "ana", "--label", "ci"],
                          capture_output=True, text=True, env=env, check=True)
    key = json.loads(made.stdout)["key"]
    listed = subprocess.run([sys.executable, "-m", "latentmem.cli", "--home", str(home), "keys",
                             "list"], capture_output=True, text=True, env=env, check=True).stdout
    assert "tenant=acme" in listed and "ana" in listed and key.split("_")[2] not in listed
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentmem.cli", "--home", str(home), "serve", "--port", "0",
         "--sleep-every", "0.2s", "--sleep-budget", "5s"],
        stderr=subprocess.PIPE, env=env, cwd=Path(__file__).resolve().parents[1])
    watchdog = threading.Timer(DEADLINE_S, proc.kill)  # a hung server fails, never hangs the run
    watchdog.start()
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert "serving" in line and "API keys required" in line, line
        url = line.split(" on ", 1)[1].split()[0]
        resp = httpx.post(url + "/v1/add", json={"text": "the spare key is under the pot"},
                          headers={"Authorization": f"Bearer {key}"}, timeout=DEADLINE_S)
        rid = resp.json()["ids"][0]
        assert httpx.post(url + "/v1/add", json={"text": "x"}, timeout=DEADLINE_S).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE_S) == 0
        assert "stopped" in proc.stderr.read().decode()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Memory(home, embedder="hash") as m:
        assert m.get(rid).text == "the spare key is under the pot" and m.get(rid).user_id == "acme:ana"
        keys.revoke(m.store, key.split("_")[1])
        with pytest.raises(Exception, match="unknown or revoked"):
            keys.KeyRing(m.store).principal(f"Bearer {key}")


def test_insecure_mode_is_loopback_only(mem: Memory, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidInputError, match="loopback"):
        make_server(mem, "0.0.0.0", 0, insecure=True)
    srv = _start(mem, insecure=True)
    try:
        resp = httpx.post(srv.url + "/v1/add", json={"text": "plain ids", "user_id": "ana"})
        assert resp.status_code == 200 and mem.get(resp.json()["ids"][0]).user_id == "ana"
    finally:
        srv.stop()


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
