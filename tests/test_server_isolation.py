"""Tenancy as a property: whatever a key does, through any REST endpoint, MCP tool or the
chat proxy, it reads, lists, changes and deletes nothing outside its scope.

Two tenants share the user ids ``ana`` and ``bob``; keys: tenant-wide, one user only,
read-only, and the other tenant's. Hypothesis draws sequences of requests (each with a key,
an operation, a memory id from ANY tenant, a user id) against one real server: the REST
routes, the MCP tools and resource as JSON-RPC posts to ``/mcp`` (the wire format the
``mcp`` client sends, test_mcp.py drives the client itself), and chat completions through
the proxy to a loopback upstream that records what it was sent. After every request: the
memories outside the key's scope are exactly as before; neither the answer nor what went
upstream holds the id or the text of a memory outside the scope; a memory outside the scope
is answered as a missing one (404, or the tool's NotFoundError) and a user outside a
restricted key's list is refused (403, or ForbiddenError). Every memory's text is unique,
so a leak anywhere is visible."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentmem import Memory
from latentmem.server import keys, make_server
from latentmem.server.keys import principal_of
from latentmem.tenancy import Principal
from tests.conftest import poll
from tests.test_proxy import Upstream

USERS = ("ana", "bob", "carol")
_fresh = itertools.count()
tally: dict[str, int] = {}  # requests sent, by surface


class World:
    def __init__(self, tmp: Path) -> None:
        self.mem = Memory(tmp / "store", embedder="hash")
        store = self.mem.store
        self.keys: dict[str, tuple[str, Principal]] = {}
        for name, tenant, users, read_only in (("acme", "acme", None, False),
                                               ("acme-ana", "acme", ["ana"], False),
                                               ("acme-reader", "acme", None, True),
                                               ("blue", "blue", None, False)):
            token, row = keys.create(store, tenant, users, read_only=read_only)
            self.keys[name] = (token, principal_of(row))
        # Each reply names the question, so that no two stored replies are the same text.
        self.upstream = Upstream(lambda body: f"answering {body['messages'][-1]['content']}")
        threading.Thread(target=self.upstream.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.srv = make_server(self.mem, "127.0.0.1", 0,
                               llm={"url": self.upstream.url + "/v1", "model": "m"}).start()
        self.http = httpx.Client(base_url=self.srv.url, timeout=30)
        self.ids: list[str] = []
        for tenant in ("acme", "blue"):
            for user in ("ana", "bob"):
                self.seed(f"{tenant}:{user}")

    def seed(self, stored_user: str) -> None:
        texts = [f"{stored_user} secret <{next(_fresh)}> about the blue pot" for _ in range(3)]
        self.ids += self.mem.add(texts, user_id=stored_user, session_id="s").ids

    def outside(self, who: Principal) -> dict[str, tuple[Any, ...]]:
        """Every live memory the principal must not touch: id -> what it holds."""
        self.mem.settle()
        return {r.record.id: (r.record.user_id, r.record.text, r.record.importance,
                              r.record.updated_at, r.record.metadata)
                for r in self.mem.store.list_rows(None) if not who.sees(r.record.user_id)}

    def close(self) -> None:
        print(f"\nisolation property: {sum(tally.values())} requests ({tally})")
        self.http.close()
        self.srv.stop()
        self.upstream.shutdown()
        self.upstream.server_close()
        self.mem.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    found = World(tmp_path_factory.mktemp("tenants"))
    yield found
    found.close()


def _mcp(id: int, method: str, params: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    return ("POST", "/mcp", {"jsonrpc": "2.0", "id": id, "method": method, "params": params})


def _tool(name: str, **args: Any) -> tuple[str, str, dict[str, Any]]:
    return _mcp(next(_fresh), "tools/call", {"name": name, "arguments": args})


def _request(world: World, op: str, rid: str, user: str) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, json body) of one drawn operation."""
    n = f"<{next(_fresh)}>"  # delimited: no text is a part of another ("added 1", "added 12")
    return {
        "get": ("GET", f"/v1/memories/{rid}", None),
        "vector": ("GET", f"/v1/memories/{rid}?vector=true", None),
        "history": ("GET", f"/v1/memories/{rid}/history", None),
        "explain": ("GET", f"/v1/memories/{rid}/explain", None),
        "update": ("PATCH", f"/v1/memories/{rid}", {"text": f"changed {n}", "importance": 0.9}),
        "delete": ("DELETE", f"/v1/memories/{rid}", None),
        "feedback": ("POST", "/v1/feedback", {"id": rid, "useful": False}),
        "supersede": ("POST", "/v1/add", {"text": f"new {n}", "user_id": user, "supersedes": rid}),
        "search": ("POST", "/v1/search", {"query": "secret about the blue pot", "user_id": user,
                                          "k": 50}),
        "context": ("POST", "/v1/context", {"query": "secret blue pot", "user_id": user}),
        "list": ("GET", f"/v1/memories?user_id={user}&limit=1000", None),
        "export": ("GET", f"/v1/users/{user}/export", None),
        "delete_user": ("DELETE", f"/v1/users/{user}", None),
        "add": ("POST", "/v1/add", {"text": f"added {n}", "user_id": user}),
        "stats": ("GET", "/v1/stats", None),
        "undo": ("POST", "/v1/undo", {"event": 1}),
        "mcp_remember": _tool("remember", text=f"remembered {n}", user_id=user),
        "mcp_recall": _tool("recall", query="secret about the blue pot", user_id=user, k=50),
        "mcp_context": _tool("context", query="secret blue pot", user_id=user),
        "mcp_list": _tool("list", user_id=user, limit=100),
        "mcp_update": _tool("update", id=rid, text=f"changed by mcp {n}"),
        "mcp_forget": _tool("forget", id=rid),
        "mcp_recent": _mcp(n, "resources/read", {"uri": f"memory://{user}/recent"}),
        "chat": ("POST", "/v1/chat/completions", {
            "model": "m", "user": user,
            "messages": [{"role": "user", "content": f"question {n}: the secret blue pot?"}]}),
    }[op]


BY_ID = {"get", "vector", "history", "explain", "update", "delete", "feedback", "supersede",
         "mcp_update", "mcp_forget"}
WRITES = {"update", "delete", "feedback", "supersede", "delete_user", "add", "undo",
          "mcp_remember", "mcp_update", "mcp_forget"}
OPS = sorted(BY_ID | WRITES | {"search", "context", "list", "export", "stats", "mcp_recall",
                               "mcp_context", "mcp_list", "mcp_recent", "chat"})
EXAMPLES = 500  # sequences of 1-6 requests each
MCP_KINDS = {"NotFoundError": 404, "ForbiddenError": 403, "InvalidInputError": 400}


def _outcome(op: str, resp: httpx.Response) -> int:
    """The REST status, or what an MCP answer amounts to: a tool error or a JSON-RPC error
    maps to its kind's status; a 5xx-like unknown failure to 500."""
    if not op.startswith("mcp_") or resp.status_code != 200:
        return resp.status_code
    answer = resp.json()
    if "error" in answer:
        text = answer["error"]["message"]
    elif answer["result"].get("isError"):
        text = answer["result"]["content"][0]["text"]
    else:
        return 200
    return next((status for kind, status in MCP_KINDS.items() if kind in text), 500)


def _around(seen: str, rid: str, text: str | None) -> str:
    at = seen.find(rid) if rid in seen else seen.find(text or "\0")
    return seen[max(0, at - 300):at + 100]


def _error_shape(op: str, resp: httpx.Response) -> set[str]:
    body = resp.json()
    if op == "chat":  # OpenAI's shape on the proxy's path
        return set(body["error"]) - {"param", "code"}
    return set(body)


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(["acme", "acme-ana", "acme-reader", "blue"]),
                                st.sampled_from(OPS), st.integers(0, 10_000),
                                st.sampled_from(USERS)), min_size=1, max_size=6))
def test_no_key_reaches_outside_its_scope(world: World, steps: list[tuple[str, str, int, str]]
                                          ) -> None:
    for key_name, op, pick, user in steps:
        token, who = world.keys[key_name]
        rid = world.ids[pick % len(world.ids)]
        before = world.outside(who)
        method, path, body = _request(world, op, rid, user)
        sent_upstream = len(world.upstream.requests)
        stored_user = f"{who.tenant}:{user}"
        count = len(world.mem.all(stored_user))
        resp = world.http.request(method, path, json=body, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})
        status = _outcome(op, resp)
        surface = "mcp" if op.startswith("mcp_") else "chat" if op == "chat" else "rest"
        tally[surface] = tally.get(surface, 0) + 1
        where = f"{key_name} {method} {path} {body} -> {status} {resp.text[:200]}"
        if op == "chat" and resp.headers.get("X-Latentmem-Store") == "queued":
            # The turn is stored after the answer: wait for it, so that the next step's
            # "before" is not taken while it lands.
            poll(lambda u=stored_user, n=count: len(world.mem.all(u)) > n,  # type: ignore[misc]
                  f"the turn of {where}")
        assert status < 500, where
        assert world.outside(who) == before, f"changed outside its scope: {where}"
        upstream = "".join(str(r["body"]) for r in world.upstream.requests[sent_upstream:])
        for other, (_, text, *_rest) in before.items():
            # (the id the caller sent may come back in "no memory with id ...")
            for seen in (resp.text, upstream):
                assert (other == rid or other not in seen) and (
                    text is None or text not in seen), (
                    f"leaked {other}: {where} :: {_around(seen, other, text)}")
        stored_owner = next((u for i, (u, *_r) in before.items() if i == rid), None)
        refused_first = (who.read_only and op in WRITES) or (
            op == "supersede" and who.users is not None and user not in who.users)
        if op in BY_ID and stored_owner is not None:  # a memory outside the scope
            assert status in ((403, 404) if refused_first else (404,)), where
        if who.users is not None and user not in who.users and op not in BY_ID | {"stats", "undo"}:
            assert status == 403, where
        if who.read_only and op in WRITES:
            assert status in (403, 404), where
        if resp.status_code >= 400:
            assert _error_shape(op, resp) == {"error", "message"} or _error_shape(op, resp) == {
                "message", "type"}, where
    # Keep every user populated for the next example.
    for tenant in ("acme", "blue"):
        for user in ("ana", "bob"):
            if not world.mem.all(f"{tenant}:{user}"):
                world.seed(f"{tenant}:{user}")


def test_the_same_user_id_in_two_tenants_never_meets(world: World) -> None:
    acme, _ = world.keys["acme"]
    blue, _ = world.keys["blue"]
    for token in (acme, blue):
        world.http.post("/v1/add", json={"text": f"only for {token[:15]}", "user_id": "ana"},
                        headers={"Authorization": f"Bearer {token}"})
    for token, other in ((acme, blue), (blue, acme)):
        found = world.http.post("/v1/search", json={"query": "only for", "user_id": "ana", "k": 100},
                                headers={"Authorization": f"Bearer {token}"}).json()["hits"]
        texts = [h["record"]["text"] for h in found]
        assert f"only for {token[:15]}" in texts and f"only for {other[:15]}" not in texts
        stats = world.http.get("/v1/stats", headers={"Authorization": f"Bearer {token}"}).json()
        assert "store" not in stats and all(":" not in u for u in stats["per_user"])
