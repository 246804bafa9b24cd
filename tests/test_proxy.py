"""The chat proxy (latentmem/server/proxy.py): a real latentmem server in front of a small,
deterministic OpenAI-compatible upstream on loopback, driven with the official ``openai``
client, streaming and not."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from latentmem import Memory
from latentmem.server import MemoryServer, keys, make_server
from latentmem.server.proxy import MEMORY_HEADER
from tests.conftest import DEADLINE_S, poll

# -- the upstream: answers from what it received, and keeps every request ----------------------

def answer_for(body: dict[str, Any]) -> str:
    systems = [m["content"] for m in body["messages"] if m["role"] == "system"]
    said = " ".join(systems[0].split())[-80:] if systems else "nothing"
    return f"I see {len(systems)} system messages; memory says: {said}"


class Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Callable[[dict[str, Any]], str] = answer_for) -> None:
        super().__init__(("127.0.0.1", 0), UpstreamHandler)
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class UpstreamHandler(BaseHTTPRequestHandler):
    server: Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body,
                                     "authorization": self.headers.get("Authorization")})
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        if body["model"] == "overloaded":
            self._json(500, {"error": {"message": "the model is overloaded"}})
            return
        if body["model"] == "nonexistent":
            self._json(404, {"error": {"message": "model 'nonexistent' not found"}})
            return
        text = self.server.answer(body)
        base = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            self._json(200, {**base, "object": "chat.completion", "choices": [
                {"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": text}}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        words = text.split(" ")
        pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
        for piece in pieces:
            chunk = {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        last = {**base, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# -- latentmem in front of it ------------------------------------------------------------------

class Proxy:
    def __init__(self, mem: Memory, srv: MemoryServer, upstream: Upstream) -> None:
        self.mem, self.srv, self.upstream = mem, srv, upstream
        self.acme, _ = keys.create(mem.store, "acme", ["ana", "bob"])
        self.blue, _ = keys.create(mem.store, "blue", ["ana"])
        self.reader, _ = keys.create(mem.store, "acme", ["ana"], read_only=True)

    def client(self, key: str) -> OpenAI:
        return OpenAI(base_url=self.srv.url + "/v1", api_key=key, max_retries=0, timeout=DEADLINE_S)

    def chat(self, key: str, text: Any, user: str | None = "ana", **extra: Any) -> Any:
        messages = extra.pop("messages", [{"role": "user", "content": text}])
        return self.client(key).chat.completions.with_raw_response.create(
            model=extra.pop("model", "m"), messages=messages, user=user, **extra)

    def stored(self, user: str) -> list[tuple[str | None, str | None]]:
        return [(r.role, r.text) for r in self.mem.all(user)]


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    mem = Memory(tmp_path / "store", embedder="hash")
    srv = make_server(mem, "127.0.0.1", 0,
                      llm={"url": upstream.url + "/v1", "key": "k", "model": "m"}).start()
    yield Proxy(mem, srv, upstream)
    srv.stop()
    mem.close()


def test_memories_reach_the_upstream_and_each_turn_is_stored_after_the_answer(proxy: Proxy) -> None:
    first = proxy.chat(proxy.acme, "I moved to Lisbon in May 2023")
    assert first.headers["X-Latentmem-Memories"] == "0"
    assert first.headers["X-Latentmem-Store"] == "queued"
    reply = first.parse().choices[0].message.content
    assert reply == "I see 0 system messages; memory says: nothing"
    sent = proxy.upstream.requests[-1]
    assert sent["authorization"] == "Bearer k"
    assert sent["body"]["model"] == "m" and sent["body"]["user"] == "ana"
    assert "memory" not in sent["body"]
    poll(lambda: len(proxy.stored("acme:ana")) == 2, "the first turn to be stored")
    assert proxy.stored("acme:ana") == [("user", "I moved to Lisbon in May 2023"), ("assistant", reply)]

    messages = [{"role": "system", "content": "Answer in one line."},
                {"role": "user", "content": "Where do I live now?"}]
    second = proxy.chat(proxy.acme, None, messages=messages, extra_body={"memory": {"budget_tokens": 300}})
    assert int(second.headers["X-Latentmem-Memories"]) >= 1
    sent = proxy.upstream.requests[-1]["body"]["messages"]
    # The client's own system prompt stays first and unchanged; the memories follow it.
    assert sent[0] == messages[0] and sent[-1] == messages[1] and len(sent) == 3
    assert sent[1]["role"] == "system" and sent[1]["content"].startswith(MEMORY_HEADER)
    assert "I moved to Lisbon in May 2023" in sent[1]["content"]
    assert second.parse().choices[0].message.content.startswith("I see 2 system messages")
    poll(lambda: len(proxy.stored("acme:ana")) == 4, "the second turn to be stored")
    assert proxy.stored("acme:ana")[2] == ("user", "Where do I live now?")


def test_streaming_relays_the_chunks_and_stores_the_whole_reply(proxy: Proxy) -> None:
    proxy.mem.add("My favourite tea is genmaicha", "acme:bob")
    stream = proxy.client(proxy.acme).chat.completions.create(
        model="m", user="bob", stream=True,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Which tea do I like?"}]}])
    pieces = [chunk.choices[0].delta.content for chunk in stream
              if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) > 3  # relayed as chunks, not gathered into one
    reply = "".join(pieces)
    assert reply.startswith("I see 1 system messages; memory says:") and "genmaicha" in reply
    sent = proxy.upstream.requests[-1]["body"]
    assert sent["stream"] is True and "genmaicha" in sent["messages"][0]["content"]
    poll(lambda: len(proxy.stored("acme:bob")) == 3, "the streamed turn to be stored")
    assert proxy.stored("acme:bob")[1:] == [("user", "Which tea do I like?"), ("assistant", reply)]


def test_a_tenant_never_sees_another_tenants_user_of_the_same_name(proxy: Proxy) -> None:
    proxy.mem.add("My locker code is 4417", "acme:ana")
    answer = proxy.chat(proxy.blue, "What is my locker code?")
    assert answer.headers["X-Latentmem-Memories"] == "0"
    assert proxy.upstream.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "What is my locker code?"}]
    poll(lambda: len(proxy.stored("blue:ana")) == 2, "blue's first turn to be stored")

    stream = proxy.client(proxy.blue).chat.completions.create(
        model="m", user="ana", stream=True,
        messages=[{"role": "user", "content": "Tell me my locker code"}])
    reply = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    memory = proxy.upstream.requests[-1]["body"]["messages"][0]["content"]
    assert "What is my locker code?" in memory  # blue's own turn: packing works
    assert "4417" not in memory and "4417" not in reply
    poll(lambda: len(proxy.stored("blue:ana")) == 4, "blue's second turn to be stored")
    assert proxy.stored("acme:ana") == [(None, "My locker code is 4417")]


def test_keys_and_users_are_checked_as_in_rest(proxy: Proxy) -> None:
    seen = len(proxy.upstream.requests)
    with pytest.raises(openai.AuthenticationError):
        proxy.chat("lm_not-a-key", "hello")
    with pytest.raises(openai.PermissionDeniedError, match="carol"):
        proxy.chat(proxy.acme, "hello", user="carol")
    with pytest.raises(openai.BadRequestError, match="give 'user'"):
        proxy.chat(proxy.acme, "hello", user=None)
    assert len(proxy.upstream.requests) == seen

    # One user on the key: no 'user' needed. Read-only: answered, nothing stored.
    answer = proxy.chat(proxy.reader, "Remember that I like jazz", user=None)
    assert answer.headers["X-Latentmem-Store"] == "read-only"
    assert answer.parse().choices[0].message.content.startswith("I see 0")
    proxy.chat(proxy.acme, "Remember that I like folk", user="bob")
    poll(lambda: len(proxy.stored("acme:bob")) == 2, "the writable key's turn to be stored")
    assert proxy.stored("acme:ana") == []


def test_bad_requests_are_refused_before_the_upstream(proxy: Proxy) -> None:
    seen = len(proxy.upstream.requests)
    with pytest.raises(openai.BadRequestError, match="messages"):
        proxy.chat(proxy.acme, None, messages=[])
    with pytest.raises(openai.BadRequestError, match="has no text"):
        proxy.chat(proxy.acme, None, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    with pytest.raises(openai.BadRequestError, match="no message with role 'user'"):
        proxy.chat(proxy.acme, None, messages=[{"role": "system", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="budget_tokens"):
        proxy.chat(proxy.acme, "hi", extra_body={"memory": {"budget_tokens": 0}})
    assert len(proxy.upstream.requests) == seen
    assert proxy.stored("acme:ana") == []


def test_store_false_stores_nothing_and_storage_errors_reach_stderr(
        proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    off = proxy.chat(proxy.acme, "Just between us", extra_body={"memory": {"store": False}})
    assert off.headers["X-Latentmem-Store"] == "off"
    # A NUL cannot be stored: the client still gets its answer, the operator the error.
    answer = proxy.chat(proxy.acme, "a NUL \x00 here")
    assert answer.parse().choices[0].message.content.startswith("I see")
    logged = poll(lambda: "could not store" in (err := capsys.readouterr().err) and err,
                   "the storage error on stderr")
    assert "of user 'ana'" in logged and "NUL" in logged
    assert proxy.stored("acme:ana") == []


def test_upstream_errors_are_clear(proxy: Proxy, tmp_path: Path) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        proxy.chat(proxy.acme, "hello", model="overloaded")
    assert failed.value.status_code == 502 and "the model is overloaded" in str(failed.value)
    with pytest.raises(openai.NotFoundError, match="model 'nonexistent' not found"):
        proxy.chat(proxy.acme, "hello", model="nonexistent")

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    for llm, status, text in (({}, 501, "--llm-url"),
                              ({"url": f"http://127.0.0.1:{dead}/v1"}, 502, "could not be reached")):
        mem = Memory(tmp_path / f"store{status}", embedder="hash")
        srv = make_server(mem, "127.0.0.1", 0, llm=llm).start()
        try:
            token, _ = keys.create(mem.store, "acme", ["ana"])
            client = OpenAI(base_url=srv.url + "/v1", api_key=token, max_retries=0)
            for stream in (False, True):
                with pytest.raises(openai.APIStatusError) as refused:
                    client.chat.completions.create(model="m", user="ana", stream=stream,
                                                   messages=[{"role": "user", "content": "hello"}])
                assert refused.value.status_code == status and text in str(refused.value)
            assert mem.all("acme:ana") == []
        finally:
            srv.stop()
            mem.close()
