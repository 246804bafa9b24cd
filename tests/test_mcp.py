"""The MCP server (latentmem/server/mcp_server.py) through the official MCP client: over stdio
as ``latentmem mcp`` runs it, and over streamable HTTP at ``/mcp`` inside a real server with
API keys (two tenants sharing a user id, a read-only key, no key)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from latentmem import Memory
from latentmem.server import keys, make_server

TOOLS = {"remember", "recall", "context", "update", "forget", "list"}


async def ok(client: Client, tool: str, **args: Any) -> Any:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    content = result.structured_content
    assert content is not None
    return content.get("result", content)  # a tool returning text is wrapped as {"result"}


async def refused(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return str(result.content[0].text)  # type: ignore[union-attr]


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


# -- stdio ---------------------------------------------------------------------------------------

def test_stdio_serves_every_tool_and_the_resource(tmp_path: Path) -> None:
    stray: list[Exception] = []  # anything on stdout that is not a protocol message

    async def watch(message: Any) -> None:
        if isinstance(message, Exception):
            stray.append(message)

    server = StdioServerParameters(
        command=sys.executable, args=["-m", "latentmem.cli", "--home", str(tmp_path / "home"), "mcp"],
        env={"LATENTMEM_EMBEDDER": "hash", "HF_HUB_OFFLINE": "1"})

    async def main() -> None:
        async with Client(server, message_handler=watch) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            assert all(len(t.description or "") > 40 for t in tools.values())
            assert tools["recall"].annotations and tools["recall"].annotations.read_only_hint
            templates = (await client.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["memory://{user_id}/recent"]

            tea = (await ok(client, "remember", text="Ana drinks green tea every morning",
                            event_time="2024-05-01T08:00:00Z", metadata={"source": "chat"}))["ids"]
            (bike,) = (await ok(client, "remember", text="Ana rides a red bike to work"))["ids"]
            assert len(tea) == 1

            hits = (await ok(client, "recall", query="what does Ana drink", k=5))["hits"]
            assert hits[0]["id"] == tea[0]
            assert hits[0]["event_time"].startswith("2024-05-01")
            assert set(hits[0]) == {"id", "score", "relevance", "text", "event_time", "speaker"}

            packed = await ok(client, "context", query="Ana's drink", budget_tokens=200)
            assert "green tea" in packed and f"id={tea[0]}" in packed

            first = await ok(client, "list", limit=1)
            assert [m["id"] for m in first["memories"]] == [tea[0]]  # oldest event first
            second = await ok(client, "list", limit=1, cursor=first["next_cursor"])
            assert [m["id"] for m in second["memories"]] == [bike]
            assert second["next_cursor"] is None

            changed = await ok(client, "update", id=bike, text="Ana rides a blue bike to work",
                               metadata={"checked": True})
            assert changed["text"] == "Ana rides a blue bike to work"
            assert changed["metadata"] == {"checked": True}

            recent = await client.read_resource("memory://default/recent")
            text = recent.contents[0].text  # type: ignore[union-attr]
            assert text.index("blue bike") < text.index("green tea")  # newest first

            assert (await ok(client, "forget", id=bike)) == {"deleted": 1}
            again = await refused(client, "forget", id=bike)
            assert again == f"Error executing tool forget: NotFoundError: no memory with id {bike!r}"
            assert [m["id"] for m in (await ok(client, "list"))["memories"]] == tea

            # Bad input is a tool error naming the problem, and changes nothing.
            assert "text" in await refused(client, "remember", text="")
            assert "event_time" in await refused(client, "remember", text="x", event_time="soon")
            # An unknown argument is refused, not ignored: a misspelt user id must not
            # quietly write for the default user.
            assert "userId" in await refused(client, "remember", text="x", userId="bo")
            assert tools["remember"].input_schema["additionalProperties"] is False
            assert len((await ok(client, "list"))["memories"]) == 1

    anyio.run(main)
    assert stray == []


# -- HTTP ----------------------------------------------------------------------------------------

@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Memory, str]]:
    mem = Memory(tmp_path / "store", embedder="hash")
    srv = make_server(mem, "127.0.0.1", 0).start()
    try:
        yield mem, srv.url
    finally:
        srv.stop()
        mem.close()


@asynccontextmanager
async def connect(url: str, key: str, mode: Any = "auto") -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http),
                          mode=mode) as client:
            yield client


def test_http_tools_act_inside_the_keys_tenant(served: tuple[Memory, str]) -> None:
    mem, url = served
    key, _ = keys.create(mem.store, "acme")

    async def main() -> str:
        async with connect(url, key) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            (id,) = (await ok(client, "remember", text="Ana is allergic to peanuts",
                              user_id="ana"))["ids"]
            hits = (await ok(client, "recall", query="allergies", user_id="ana"))["hits"]
            assert [h["id"] for h in hits] == [id]
            page = await ok(client, "list", user_id="ana")
            assert page["memories"][0]["user_id"] == "ana"  # the caller's id, not the stored one
            await ok(client, "update", id=id, text="Ana is allergic to peanuts and cashews")
            recent = await client.read_resource("memory://ana/recent")
            assert "cashews" in recent.contents[0].text  # type: ignore[union-attr]

            for day in range(1, 24):
                await ok(client, "remember", text=f"Bo's note number {day}", user_id="bo",
                         event_time=f"2024-03-{day:02d}T12:00:00Z")
            recent = await client.read_resource("memory://bo/recent")
            lines = recent.contents[0].text.splitlines()[1:]  # type: ignore[union-attr]
            assert [line.rsplit(" ", 1)[1] for line in lines] == [
                str(day) for day in range(23, 3, -1)]  # the newest 20, newest first
            return id

    id = anyio.run(main)
    assert mem.get(id).user_id == "acme:ana"
    # What MCP wrote, REST reads with the same key.
    answer = httpx.get(f"{url}/v1/memories/{id}", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and "cashews" in answer.json()["text"]


def test_http_without_a_good_key_is_refused(served: tuple[Memory, str]) -> None:
    mem, url = served
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer lm_000000000000_" + "x" * 43},
                    {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"}):
        answer = httpx.post(f"{url}/mcp", json=call, headers={**accept, **headers})
        assert answer.status_code == 401
        assert answer.json()["error"] == "UnauthorizedError"
        assert answer.headers["www-authenticate"] == "Bearer"

    async def main() -> None:
        async with Client(f"{url}/mcp"):
            pass

    with pytest.raises(BaseExceptionGroup) as caught:  # the client's task groups wrap it
        anyio.run(main)
    assert all(isinstance(e, MCPError) for e in leaves(caught.value))
    assert mem.stats()["records"] == 0


# "legacy": the initialize handshake that desktop clients of 2025 use, served by another
# path of the SDK (the tool runs in a task of the session manager, not of the request).
@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_http_tenants_sharing_a_user_id_cannot_reach_each_other(
        served: tuple[Memory, str], mode: str) -> None:
    mem, url = served
    key_a, _ = keys.create(mem.store, "acme")
    key_b, _ = keys.create(mem.store, "blue")
    only_bo, _ = keys.create(mem.store, "acme", ["bo"])

    async def main() -> None:
        async with connect(url, key_a, mode) as a, connect(url, key_b, mode) as b:
            (secret,) = (await ok(a, "remember", text="Ana's door code is 4711",
                                  user_id="ana"))["ids"]
            (own,) = (await ok(b, "remember", text="Ana's favourite door is blue",
                               user_id="ana"))["ids"]

            # Both at once: each request runs as its own key.
            async def recall(client: Client, into: dict[str, list[str]], name: str) -> None:
                hits = (await ok(client, "recall", query="door code", user_id="ana"))["hits"]
                into[name] = [h["id"] for h in hits]

            seen: dict[str, list[str]] = {}
            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(recall, a, seen, "a")
                    group.start_soon(recall, b, seen, "b")
            assert seen == {"a": [secret], "b": [own]}

            listed = (await ok(b, "list", user_id="ana"))["memories"]
            assert [m["id"] for m in listed] == [own]
            recent = (await b.read_resource("memory://ana/recent")).contents[0]
            assert "4711" not in recent.text  # type: ignore[union-attr]
            packed = await ok(b, "context", query="door code", user_id="ana")
            assert "4711" not in packed

            # Another tenant's id reads exactly like an id that never existed.
            missing = "01M8W0Q8J1059ZEGDRKAVDF0RG"
            for tool, args in (("forget", {}), ("update", {"text": "pwned"})):
                theirs = await refused(b, tool, id=secret, **args)
                nothing = await refused(b, tool, id=missing, **args)
                assert "NotFoundError" in theirs
                assert theirs.replace(secret, "ID") == nothing.replace(missing, "ID")

            # A key limited to some users cannot name another.
            async with connect(url, only_bo, mode) as bo:
                assert "ForbiddenError" in await refused(bo, "recall", query="door",
                                                         user_id="ana")
                with pytest.raises(MCPError, match="ForbiddenError"):
                    await bo.read_resource("memory://ana/recent")

            hits = (await ok(a, "recall", query="door code", user_id="ana"))["hits"]
            assert [h["text"] for h in hits] == ["Ana's door code is 4711"]

    anyio.run(main)


def test_http_read_only_key_cannot_write(served: tuple[Memory, str]) -> None:
    mem, url = served
    writer, _ = keys.create(mem.store, "acme")
    reader, _ = keys.create(mem.store, "acme", read_only=True)

    async def main() -> None:
        async with connect(url, writer) as w, connect(url, reader) as r:
            (id,) = (await ok(w, "remember", text="Ana likes jazz", user_id="ana"))["ids"]
            assert "ForbiddenError: this key is read-only" in await refused(
                r, "remember", text="Ana hates jazz", user_id="ana")
            assert "ForbiddenError" in await refused(r, "update", id=id, text="Ana hates jazz")
            assert "ForbiddenError" in await refused(r, "forget", id=id)
            hits = (await ok(r, "recall", query="music", user_id="ana"))["hits"]
            assert [h["text"] for h in hits] == ["Ana likes jazz"]

    anyio.run(main)
    assert mem.stats()["records"] == 1


def test_http_insecure_mode_serves_plain_user_ids(tmp_path: Path) -> None:
    mem = Memory(tmp_path / "store", embedder="hash")
    srv = make_server(mem, "127.0.0.1", 0, insecure=True).start()

    async def main() -> str:
        async with Client(f"{srv.url}/mcp") as client:
            (id,) = (await ok(client, "remember", text="Ana plays chess", user_id="ana"))["ids"]
            return str(id)

    try:
        id = anyio.run(main)
        assert mem.get(id).user_id == "ana"
    finally:
        srv.stop()
        mem.close()


def test_building_the_server_leaves_the_applications_logging_alone(tmp_path: Path) -> None:
    import logging

    from latentmem.server import mcp_server
    from latentmem.tenancy import UNRESTRICTED

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with Memory(tmp_path / "store", embedder="hash") as mem:
        mcp_server.build(mem, lambda: UNRESTRICTED)
    assert (root.handlers, root.level) == (handlers, level)
