"""The SDK's behaviour, run once embedded (``Memory``) and once over HTTP (``Client`` against
a real ``latentmem serve`` on a loopback port, with a tenant's key): the same calls must
give the same types, answers and errors. Then what only a remote client can meet: bad keys,
read-only keys, a server that is not there."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentmem import Memory
from latentmem.client import Client, ConnectionFailedError
from latentmem.errors import (
    ForbiddenError,
    InvalidInputError,
    LatentMemError,
    NotFoundError,
    UnauthorizedError,
)
from latentmem.server import MemoryServer, keys, make_server
from latentmem.types import Context, ContextItem, Hit, Receipt, Record

SDK = Memory | Client


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Memory, MemoryServer]]:
    mem = Memory(tmp_path / "store", embedder="hash")
    srv = make_server(mem, "127.0.0.1", 0).start()
    yield mem, srv
    srv.stop()
    mem.close()


@pytest.fixture(params=["memory", "client"])
def sdk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SDK]:
    if request.param == "memory":
        with Memory(tmp_path / "store", embedder="hash") as mem:
            yield mem
        return
    served = request.getfixturevalue("served")
    mem, srv = served
    # An admin key of a tenant: its user ids are namespaced ("acme:ana" in the store) and
    # must read back plain; admin so that ``sleep`` is allowed, as it is embedded.
    key, _ = keys.create(mem.store, "acme", admin=True)
    with Client(srv.url, key) as client:
        yield client


def _report(report: Any) -> dict[str, Any]:
    """``Memory.sleep`` returns a ``SleepReport``; ``Client.sleep`` its dict."""
    return report if isinstance(report, dict) else dict(report.to_dict())


def _aware(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() is not None


# -- the same tests, embedded and remote ---------------------------------------------------------

def test_add_get_round_trip(sdk: SDK) -> None:
    when = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    receipt = sdk.add("I moved to Lisbon in May 2023", user_id="ana", session_id="s1",
                      event_time=when, metadata={"source": "chat"}, importance=0.7)
    assert isinstance(receipt, Receipt) and len(receipt.ids) == 1
    record = sdk.get(receipt.ids[0])
    assert isinstance(record, Record) and record.id == receipt.ids[0]
    assert record.text == "I moved to Lisbon in May 2023"
    assert record.user_id == "ana" and record.session_id == "s1"
    assert record.metadata == {"source": "chat"} and record.importance == pytest.approx(0.7)
    assert record.event_time == when and _aware(record.event_time) and _aware(record.created_at)
    assert record.vector is None
    with_vector = sdk.get(receipt.ids[0], include_vector=True)
    assert isinstance(with_vector.vector, np.ndarray) and with_vector.vector.dtype == np.float32
    assert with_vector.vector.ndim == 1 and np.linalg.norm(with_vector.vector) == pytest.approx(1.0)


def test_messages_keep_role_speaker_and_order(sdk: SDK) -> None:
    receipt = sdk.add([{"role": "user", "content": "I adopted a dog called Pastel", "name": "Ana"},
                       {"role": "assistant", "content": "Lovely name!"}],
                      user_id="ana", session_id="s2")
    assert len(receipt.ids) == 2
    first, second = (sdk.get(rid) for rid in receipt.ids)
    assert (first.role, first.speaker, second.role) == ("user", "Ana", "assistant")
    assert [r.text for r in sdk.all("ana")] == ["I adopted a dog called Pastel", "Lovely name!"]


def test_search_ranks_the_right_memory_first(sdk: SDK) -> None:
    target = sdk.add("I moved to Lisbon in May", user_id="ana").ids[0]
    sdk.add(["My favourite food is ramen", "I play the cello on Sundays"], user_id="ana")
    sdk.add("Bob moved to Lisbon too", user_id="bob")
    hits = sdk.search("moved to Lisbon", user_id="ana", k=3)
    assert hits and all(isinstance(h, Hit) for h in hits)
    assert hits[0].id == target and hits[0].text == "I moved to Lisbon in May"
    assert isinstance(hits[0].score, float) and "relevance" in hits[0].components
    assert {h.record.user_id for h in hits} == {"ana"} and len(hits) <= 3
    assert _aware(hits[0].record.event_time)


def test_relevance_and_thresholds_cross_the_wire(sdk: SDK) -> None:
    sdk.add(["I moved to Lisbon in May", "My favourite food is ramen"], user_id="ana")
    hits = sdk.search("moved to Lisbon", user_id="ana", k=2)
    assert hits and all(h.relevance is not None and 0 <= h.relevance <= 1 for h in hits)
    assert sdk.search("moved to Lisbon", user_id="ana", threshold=1.0) == []
    ctx = sdk.context("moved to Lisbon", user_id="ana", budget_tokens=200, min_relevance=1.0)
    assert ctx.items == [] and all(o["reason"] == "below min_relevance" for o in ctx.omitted)
    assert all(i.relevance is not None for i in sdk.context("Lisbon", user_id="ana").items)
    with pytest.raises(InvalidInputError):
        sdk.search("Lisbon", user_id="ana", threshold=1.5)
    with pytest.raises(InvalidInputError):
        sdk.context("Lisbon", user_id="ana", min_relevance=-1)


def test_context_packs_dated_text_within_budget(sdk: SDK) -> None:
    rid = sdk.add("I moved to Lisbon in May", user_id="ana",
                  event_time="2023-05-08T13:56:00Z").ids[0]
    sdk.add("My favourite food is ramen", user_id="ana")
    ctx = sdk.context("where does Ana live? Lisbon", user_id="ana", budget_tokens=200)
    assert isinstance(ctx, Context) and "Lisbon" in ctx.text
    assert 0 < ctx.used_tokens <= ctx.budget_tokens == 200
    assert rid in ctx.ids and all(isinstance(item, ContextItem) for item in ctx.items)
    item = next(i for i in ctx.items if i.id == rid)
    assert item.event_time == datetime(2023, 5, 8, 13, 56, tzinfo=UTC) and item.ref >= 1


def test_update_changes_text_and_history_keeps_it(sdk: SDK) -> None:
    rid = sdk.add("I live in Lisbon", user_id="ana").ids[0]
    updated = sdk.update(rid, "I live in Porto", metadata={"checked": True})
    assert isinstance(updated, Record) and updated.text == "I live in Porto"
    assert sdk.get(rid).metadata == {"checked": True}
    events = sdk.history(rid)
    assert [e["event"] for e in events] == ["ADD", "UPDATE"]
    assert events[1]["old_text"] == "I live in Lisbon" and events[1]["new_text"] == "I live in Porto"
    assert all(isinstance(e["at"], datetime) for e in events)
    assert sdk.search("Porto", user_id="ana", k=1)[0].id == rid


def test_delete_then_get_raises_not_found(sdk: SDK) -> None:
    ids = sdk.add(["one to go", "two to go", "three stays"], user_id="ana").ids
    with pytest.raises(NotFoundError):
        sdk.delete([ids[0], "no-such-id"])
    assert len(sdk.all("ana")) == 3  # nothing deleted
    assert sdk.delete(ids[:2]) == 2
    for rid in ids[:2]:
        with pytest.raises(NotFoundError):
            sdk.get(rid)
    assert sdk.delete(ids[2]) == 1
    with pytest.raises(NotFoundError):
        sdk.delete(ids[2])
    assert sdk.all("ana") == []


def test_all_returns_every_memory_oldest_first(sdk: SDK) -> None:
    texts = [f"note number {i}" for i in range(130)]
    sdk.add([{"text": t, "event_time": 1_700_000_000 + i} for i, t in enumerate(texts)],
            user_id="ana")
    sdk.add("someone else's", user_id="bob")
    assert [r.text for r in sdk.all("ana")] == texts
    assert [r.text for r in sdk.all("ana", limit=45)] == texts[:45]
    assert all(isinstance(r, Record) and r.user_id == "ana" for r in sdk.all("ana", limit=3))
    assert sdk.all("nobody") == []


def test_feedback_returns_the_new_importance(sdk: SDK) -> None:
    rid = sdk.add("I like green tea", user_id="ana").ids[0]
    up = sdk.feedback(rid, True)
    assert isinstance(up, float) and 0.0 <= up <= 1.0
    assert sdk.get(rid).importance == pytest.approx(up)
    assert sdk.feedback(rid, False) <= up
    with pytest.raises(NotFoundError):
        sdk.feedback("no-such-id", True)


BAD_CALLS = {
    "empty query": lambda s: s.search("", user_id="ana"),
    "blank query": lambda s: s.search("   ", user_id="ana"),
    "k=0": lambda s: s.search("tea", user_id="ana", k=0),
    "budget 0": lambda s: s.context("tea", user_id="ana", budget_tokens=0),
    "bad as_of": lambda s: s.search("tea", user_id="ana", as_of="someday"),
    "importance 2": lambda s: s.add("x", user_id="ana", importance=2.0),
    "blank text": lambda s: s.add("   ", user_id="ana"),
    "empty list": lambda s: s.add([], user_id="ana"),
    "one bad item": lambda s: s.add(["fine", ""], user_id="ana"),
    "empty user": lambda s: s.add("x", user_id=""),
    "bad event_time": lambda s: s.add("x", user_id="ana", event_time="the day after never"),
    "bad vector": lambda s: s.add("x", user_id="ana", vector=[0.0, 1.0]),
    "bad update": lambda s: s.update(s.all("ana")[0].id, importance=-1.0),
}


def test_bad_input_raises_and_changes_nothing(sdk: SDK) -> None:
    sdk.add("I like green tea", user_id="ana", importance=0.4)
    before = [r.to_dict() for r in sdk.all("ana")]
    for name, call in BAD_CALLS.items():
        with pytest.raises(InvalidInputError):
            call(sdk)
            pytest.fail(f"{name}: no error")
        assert [r.to_dict() for r in sdk.all("ana")] == before, name


def test_sleep_reports_explain_and_undo(sdk: SDK) -> None:
    days = [f"turn {i} of a long day" for i in range(5)]
    rid = sdk.add(days[0], user_id="ana").ids[0]
    sdk.add([*days[1:], *(d + "!" for d in days)], user_id="ana")
    report = _report(sdk.sleep(10))
    assert report["cycle"].startswith("c-") and report["phases"]["consolidate"]["merged"] > 0
    why = sdk.explain(rid)
    assert why[0]["action"] == "archive" and why[0]["cycle"] == report["cycle"]
    with pytest.raises(NotFoundError):
        sdk.get(rid)  # archived
    undone = sdk.undo(why[0]["seq"])
    assert undone["undone_at"] and sdk.get(rid).text == days[0]
    with pytest.raises(InvalidInputError, match="already undone"):
        sdk.undo(why[0]["seq"])


def test_stats_count_per_user(sdk: SDK) -> None:
    sdk.add(["a", "b"], user_id="ana")
    sdk.add("c", user_id="bob")
    stats = sdk.stats()
    assert stats["records"] == 3 and stats["users"] == 2
    assert stats["per_user"] == {"ana": 2, "bob": 1}


def test_delete_all_removes_one_user(sdk: SDK) -> None:
    sdk.add(["a", "b"], user_id="ana")
    kept = sdk.add("c", user_id="bob").ids[0]
    assert sdk.delete_all("ana") == 2
    assert sdk.all("ana") == [] and sdk.delete_all("ana") == 0
    assert sdk.get(kept).text == "c"
    assert sdk.search("a b c", user_id="ana") == []


def test_users_do_not_see_each_other(sdk: SDK) -> None:
    ana = sdk.add("Ana's secret is the blue door", user_id="ana").ids[0]
    sdk.add("Bob likes doors", user_id="bob")
    assert ana not in [h.id for h in sdk.search("blue door secret", user_id="bob")]
    assert [r.user_id for r in sdk.all("bob")] == ["bob"]


# -- what only a remote client meets -------------------------------------------------------------

def test_bad_key_is_unauthorized(served: tuple[Memory, MemoryServer]) -> None:
    mem, srv = served
    key, _ = keys.create(mem.store, "acme")
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for bad in (wrong, "not-a-key"):
        with Client(srv.url, bad) as client, pytest.raises(UnauthorizedError, match="key|Authorization"):
            client.search("anything")
    with Client(srv.url) as client, pytest.raises(UnauthorizedError):
        client.stats()
    assert mem.stats()["records"] == 0


def test_read_only_key_reads_but_cannot_write(served: tuple[Memory, MemoryServer]) -> None:
    mem, srv = served
    writer, _ = keys.create(mem.store, "acme")
    reader, _ = keys.create(mem.store, "acme", read_only=True)
    with Client(srv.url, writer) as w, Client(srv.url, reader) as r:
        rid = w.add("I like green tea", user_id="ana").ids[0]
        assert r.search("green tea", user_id="ana")[0].id == rid
        for write in (lambda: r.add("x", user_id="ana"), lambda: r.delete(rid),
                      lambda: r.update(rid, "y"), lambda: r.feedback(rid, True)):
            with pytest.raises(ForbiddenError, match="read-only"):
                write()
        with pytest.raises(ForbiddenError, match="admin"):
            w.sleep(1)  # a cycle spans every user: admin keys only
        assert r.get(rid).text == "I like green tea" and mem.stats()["records"] == 1


def test_another_tenant_sees_nothing(served: tuple[Memory, MemoryServer]) -> None:
    mem, srv = served
    acme, _ = keys.create(mem.store, "acme")
    blue, _ = keys.create(mem.store, "blue")
    with Client(srv.url, acme) as a, Client(srv.url, blue) as b:
        rid = a.add("acme's plan", user_id="ana").ids[0]
        with pytest.raises(NotFoundError):
            b.get(rid)
        assert b.all("ana") == [] and b.search("plan", user_id="ana") == []
    assert [r.user_id for r in mem.all("acme:ana")] == ["acme:ana"]


def test_all_follows_the_cursor_across_pages(served: tuple[Memory, MemoryServer]) -> None:
    mem, srv = served
    key, _ = keys.create(mem.store, "acme")
    requests: list[str] = []
    with Client(srv.url, key) as client:
        client.add([f"note {i}" for i in range(23)], user_id="ana")
        client._http.event_hooks["request"].append(lambda req: requests.append(req.url.path))
        paged = client.all("ana", page_size=5)
        assert requests == ["/v1/memories"] * 5
        assert [r.id for r in paged] == [r.id for r in client.all("ana")]
        assert len(client.all("ana", limit=7, page_size=5)) == 7


def test_unknown_error_kinds_fall_back_to_the_base(served: tuple[Memory, MemoryServer]) -> None:
    mem, srv = served
    key, _ = keys.create(mem.store, "acme")
    with Client(srv.url, key) as client, pytest.raises(LatentMemError) as caught:
        client._call("GET", "/v1/no-such-endpoint")
    assert not isinstance(caught.value, NotFoundError)  # a missing route is not a missing memory
    assert caught.value.status == 404 and caught.value.kind == "RouteNotFoundError"  # type: ignore[attr-defined]


def test_unreachable_server_raises_a_clear_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with Client(url, "lm_000000000000_" + "A" * 43, timeout=5) as client:
        with pytest.raises(ConnectionFailedError, match=f"127.0.0.1:{port}") as caught:
            client.add("hello")
    assert isinstance(caught.value, LatentMemError) and isinstance(caught.value, ConnectionError)
    with pytest.raises(InvalidInputError, match="http"):
        Client("localhost:8765")
