"""The REST reads behind the web explorer (server/explore.py) and the static files at
/ui (server/ui): a real server over a real store (both backends) with the hash embedder,
driven with real HTTP. The explorer itself, in a browser, is tests/test_ui.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from latentmem import Memory
from latentmem.server import keys, make_server, ui
from tests.conftest import DEADLINE_S


class Api:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=DEADLINE_S)

    def get(self, path: str, key: str | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = self.http.get(path, headers=headers)
        return resp.status_code, resp.json()


@pytest.fixture
def served(mem: Memory) -> Iterator[tuple[Memory, Api, dict[str, str]]]:
    made = {"admin": keys.create(mem.store, "acme", admin=True)[0],
            "ana": keys.create(mem.store, "acme", ["ana"])[0],
            "blue": keys.create(mem.store, "blue")[0]}
    srv = make_server(mem, "127.0.0.1", 0).start()
    api = Api(srv.url)
    yield mem, api, made
    api.http.close()
    srv.stop()


def _load(mem: Memory) -> dict[str, str]:
    first = mem.add([{"role": "user", "content": "I moved to Lisbon in March, said Maya"},
                     {"role": "assistant", "content": "Lovely! Lisbon in March is warm."}],
                    user_id="acme:ana", session_id="s1", event_time="2024-03-01T10:00").ids
    repeat = [mem.add("I really love green tea in the morning.", user_id="acme:ana",
                      session_id="s2", event_time="2024-04-01T10:00").ids[0] for _ in range(2)]
    newer = mem.add("I moved to Porto in June", user_id="acme:ana", supersedes=first[0],
                    event_time="2024-06-01T10:00").ids[0]
    lossy = mem.add("The bike is blue and old", user_id="acme:ana", session_id="s2").ids[0]
    mem.demote(lossy)
    mem.add("Blue tenant's secret", user_id="blue:ana")
    return {"first": first[0], "reply": first[1], "repeat": repeat[0], "newer": newer,
            "lossy": lossy}


def test_timeline_orders_by_event_time_and_marks_lossy_and_superseded(served: Any) -> None:
    mem, api, key = served
    ids = _load(mem)
    status, page = api.get("/v1/users/ana/timeline?limit=3", key["ana"])
    assert status == 200 and page["user_id"] == "ana" and len(page["memories"]) == 3
    status, rest = api.get(f"/v1/users/ana/timeline?cursor={page['next_cursor']}", key["ana"])
    assert status == 200 and rest["next_cursor"] is None
    memories = page["memories"] + rest["memories"]
    assert [m["event_time"] for m in memories] == sorted(m["event_time"] for m in memories)
    by_id = {m["id"]: m for m in memories}
    assert by_id[ids["first"]]["superseded_by"] == ids["newer"]
    assert by_id[ids["lossy"]]["text"] is None
    # hash vectors: no shipped inverter reads them, and the answer says so
    assert ids["lossy"] not in rest["inverted"] and "inverter" in (rest["inversion_note"] or "")
    assert all(m["user_id"] == "ana" and "secret" not in (m["text"] or "") for m in memories)
    theirs = api.get("/v1/users/ana/timeline", key["blue"])[1]["memories"]  # tenant blue's ana
    assert [m["text"] for m in theirs] == ["Blue tenant's secret"]
    assert api.get("/v1/users/bob/timeline", key["ana"])[0] == 403
    assert api.get("/v1/users/ana/timeline", None)[0] == 401


def test_graph_walks_edges_by_type_inside_the_scope(served: Any) -> None:
    mem, api, key = served
    ids = _load(mem)
    status, graph = api.get(f"/v1/memories/{ids['first']}/graph", key["ana"])
    assert status == 200 and graph["id"] == ids["first"] and not graph["truncated"]
    kinds = {(e["src"], e["dst"], e["type"]) for e in graph["edges"]}
    assert (ids["first"], ids["reply"], "next") in kinds
    assert (ids["newer"], ids["first"], "supersedes") in kinds
    assert {n["id"] for n in graph["nodes"]} >= {ids["first"], ids["reply"], ids["newer"]}
    assert all(n["state"] == "live" and n["user_id"] == "ana" for n in graph["nodes"])
    status, small = api.get(f"/v1/memories/{ids['first']}/graph?depth=2&limit=2", key["ana"])
    assert status == 200 and len(small["nodes"]) == 2 and small["truncated"]
    # another tenant's key: the same 404 as a memory that never existed
    status, body = api.get(f"/v1/memories/{ids['first']}/graph", key["blue"])
    assert status == 404 and body == api.get("/v1/memories/nope/graph", key["blue"])[1] | {
        "message": body["message"]} and "no memory" in body["message"]
    assert api.get(f"/v1/memories/{ids['first']}/graph?depth=9", key["ana"])[0] == 400


def test_journal_groups_a_cycle_shows_archived_sources_and_undo_restores(served: Any) -> None:
    mem, api, key = served
    ids = _load(mem)
    status, before = api.get("/v1/users/ana/journal", key["ana"])
    assert status == 200 and before["preloaded"] == []
    assert [(c["cycle"], [e["action"] for e in c["events"]]) for c in before["cycles"]] == [
        (None, ["demote"])]  # on request, outside any cycle
    report = mem.sleep(phases=["consolidate"])
    status, journal = api.get("/v1/users/ana/journal", key["admin"])
    assert status == 200
    cycle = next(c for c in journal["cycles"] if c["cycle"] == report.cycle)
    assert cycle["summary"] and cycle["summary"].startswith(f"cycle {report.cycle}")
    actions = {e["action"] for e in cycle["events"]}
    assert "merge" in actions and "archive" in actions
    merge = next(e for e in cycle["events"] if e["action"] == "merge")
    assert merge["user_id"] == "ana" and merge["undoable"]
    # a plain key sees the user's events, not the store-wide summary
    status, plain = api.get("/v1/users/ana/journal", key["ana"])
    assert status == 200 and all(c["summary"] is None for c in plain["cycles"])
    assert api.get("/v1/users/ana/journal", key["blue"])[1]["cycles"] == []
    # the consolidated memory's graph reaches its archived sources
    status, graph = api.get(f"/v1/memories/{merge['record_id']}/graph", key["ana"])
    assert status == 200
    archived = {n["id"] for n in graph["nodes"] if n["state"] == "archived"}
    assert ids["repeat"] in archived
    assert {e["type"] for e in graph["edges"]} >= {"merged_from"}
    resp = api.http.post("/v1/undo", json={"event": merge["seq"]},
                         headers={"Authorization": f"Bearer {key['ana']}"})
    assert resp.status_code == 200
    assert api.get(f"/v1/memories/{merge['record_id']}", key["ana"])[0] == 404
    assert api.get(f"/v1/memories/{ids['repeat']}", key["ana"])[0] == 200
    status, after = api.get("/v1/users/ana/journal", key["ana"])
    again = next(c for c in after["cycles"] if c["cycle"] == report.cycle)
    assert not next(e for e in again["events"] if e["seq"] == merge["seq"])["undoable"]


def test_health_counts_levels_and_tiers_and_admin_sees_the_store(served: Any) -> None:
    mem, api, key = served
    _load(mem)
    status, health = api.get("/v1/users/ana/health", key["ana"])
    assert status == 200 and health["memories"] == 6
    assert health["tiers"] == {"lossless": 5, "lossy": 1} and health["superseded"] == 1
    assert health["levels"]["turn"]["lossy"] == 1 and health["sessions"] == 2
    tier = mem.stats()["vector_tier"]  # int8 in SQLite's default profile
    assert health["vector_bytes_per_memory"] == \
        {"fp32": 4 * mem.dim, "fp16": 2 * mem.dim, "int8": mem.dim + 4}[tier]
    assert health["store"] is None and health["controller"] is None and health["cycles"] is None
    status, admin = api.get("/v1/users/ana/health", key["admin"])
    assert status == 200 and admin["store"]["records"] == 7
    assert len(admin["controller"]["features"]) == len(admin["controller"]["weights"])
    assert admin["cycles"] == [] and admin["sleep"] == {"running": False}
    status, body = api.get("/v1/users/ana/audit-inversion", key["ana"])
    assert status == 400 and "hash" in body["message"]  # the inverter reads MiniLM vectors


def test_ui_files_need_no_key_carry_a_strict_csp_and_nothing_else_is_reachable(served: Any) -> None:
    _, api, _ = served
    resp = api.http.get("/ui", follow_redirects=False)
    assert resp.status_code == 308 and resp.headers["location"] == "/ui/"
    resp = api.http.get("/ui/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in resp.text  # no inline script: every script is a file
    assert api.http.get("/ui/js/app.js").headers["content-type"].startswith("text/javascript")
    for path in ("/ui/../app.py", "/ui/%2e%2e/__init__.py", "/ui/build.py", "/ui/nope.js"):
        assert api.http.get(path).status_code == 404, path
    schema = api.http.get("/openapi.json").json()
    assert not [p for p in schema["paths"] if p.startswith("/ui")]


def test_ui_without_built_assets_says_how_to_build_them(served: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, api, _ = served
    monkeypatch.setattr(ui, "missing", lambda: ["vis-network.min.js"])
    resp = api.http.get("/ui/")
    assert resp.status_code == 503 and "not built" in resp.text and "make install" in resp.text
    assert resp.headers["content-security-policy"] == ui.CSP
