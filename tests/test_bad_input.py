"""Bad input gets a clear error from the SDK, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from latentmem import (
    InputTooLargeError,
    InvalidInputError,
    LatentMemError,
    Memory,
    NotFoundError,
)

Case = tuple[str, Callable[[Memory], Any], type[LatentMemError], str]

CASES: list[Case] = [
    ("empty text", lambda m: m.add("", user_id="u"), InvalidInputError, "empty"),
    ("whitespace", lambda m: m.add("  \n\t", user_id="u"), InvalidInputError, "empty"),
    ("not a string", lambda m: m.add(42, user_id="u"), InvalidInputError, "expected text"),
    ("empty list", lambda m: m.add([], user_id="u"), InvalidInputError, "empty"),
    ("message without content", lambda m: m.add([{"role": "user"}], user_id="u"),
     InvalidInputError, "content"),
    ("one bad message in a batch",
     lambda m: m.add([{"role": "user", "content": "fine"}, {"role": "user", "content": ""}],
                     user_id="u"), InvalidInputError, "item 1"),
    ("NUL byte", lambda m: m.add("a\x00b", user_id="u"), InvalidInputError, "NUL"),
    ("wrong vector size", lambda m: m.add("x", user_id="u", vector=[0.1] * 10),
     InvalidInputError, "expected shape (64,)"),
    ("NaN vector", lambda m: m.add("x", user_id="u", vector=[float("nan")] * 64),
     InvalidInputError, "NaN"),
    ("zero vector", lambda m: m.add("x", user_id="u", vector=[0.0] * 64),
     InvalidInputError, "zeros"),
    ("vector with a batch", lambda m: m.add(["a", "b"], user_id="u", vector=[0.1] * 64),
     InvalidInputError, "single text"),
    ("bad date", lambda m: m.add("x", user_id="u", event_time="the 32nd of Smarch"),
     InvalidInputError, "ISO-8601"),
    ("bad date type", lambda m: m.add("x", user_id="u", event_time=[2023]),
     InvalidInputError, "expected a datetime"),
    ("infinite timestamp", lambda m: m.add("x", user_id="u", event_time=float("inf")),
     InvalidInputError, "finite"),
    ("bad message date",
     lambda m: m.add([{"role": "user", "content": "x", "timestamp": "soon"}], user_id="u"),
     InvalidInputError, "event_time"),
    ("huge text", lambda m: m.add("x" * 100_001, user_id="u"), InputTooLargeError, "limit"),
    ("huge batch", lambda m: m.add(["x"] * 10_001, user_id="u"), InputTooLargeError, "limit"),
    ("empty user", lambda m: m.add("x", user_id=""), InvalidInputError, "user_id"),
    ("long user", lambda m: m.add("x", user_id="u" * 300), InvalidInputError, "user_id"),
    ("non-str user", lambda m: m.add("x", user_id=7), InvalidInputError, "user_id"),
    ("metadata not a dict", lambda m: m.add("x", user_id="u", metadata=[1]),
     InvalidInputError, "metadata"),
    ("importance out of range", lambda m: m.add("x", user_id="u", importance=2),
     InvalidInputError, "importance"),
    ("empty query", lambda m: m.search(" ", user_id="u"), InvalidInputError, "query"),
    ("k zero", lambda m: m.search("x", user_id="u", k=0), InvalidInputError, "k must"),
    ("k huge", lambda m: m.search("x", user_id="u", k=10**6), InvalidInputError, "k must"),
    ("k not int", lambda m: m.search("x", user_id="u", k="5"), InvalidInputError, "k must"),
    ("budget zero", lambda m: m.context("x", user_id="u", budget_tokens=0),
     InvalidInputError, "budget_tokens"),
    ("bad as_of", lambda m: m.search("x", user_id="u", as_of="whenever"),
     InvalidInputError, "as_of"),
    ("unknown id get", lambda m: m.get("01NOPE"), NotFoundError, "no memory"),
    ("unknown id update", lambda m: m.update("01NOPE", text="y"), NotFoundError, "no memory"),
    ("unknown id delete", lambda m: m.delete("01NOPE"), NotFoundError, "no memory"),
    ("one unknown id among known ones",
     lambda m: m.delete([m.all(user_id="u")[0].id, "01NOPE"]), NotFoundError, "no memory"),
    ("unknown id history", lambda m: m.history("01NOPE"), NotFoundError, "ever existed"),
    ("update nothing", lambda m: m.update(m.all(user_id="u")[0].id), InvalidInputError,
     "nothing to update"),
    ("metadata not a dict in update",
     lambda m: m.update(m.all(user_id="u")[0].id, metadata=[1]), InvalidInputError, "metadata"),
    ("update to empty text", lambda m: m.update(m.all(user_id="u")[0].id, text=""),
     InvalidInputError, "empty"),
    ("unknown config key", lambda m: Memory(m.home, embedder="hash", bogus=1),
     InvalidInputError, "unknown config keys"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(mem: Memory, case: Case) -> None:
    _, call, error, needle = case
    mem.add("a memory that is already here", user_id="u", session_id="s")
    before = (mem.stats()["records"], mem.store.vector_epoch(), mem.index.count(),
              [(r.id, r.text) for r in mem.all(user_id="u")])
    with pytest.raises(error) as info:
        call(mem)
    assert needle in str(info.value)
    assert info.value.name() == error.__name__ and info.value.code() >= 400
    after = (mem.stats()["records"], mem.store.vector_epoch(), mem.index.count(),
             [(r.id, r.text) for r in mem.all(user_id="u")])
    assert after == before


def test_valid_vector_is_normalised(mem: Memory) -> None:
    v = np.arange(1, 65, dtype=np.float64)
    rid = mem.add("given vector", user_id="u", vector=v).ids[0]
    stored = mem.get(rid, include_vector=True).vector
    assert stored is not None and abs(float(np.linalg.norm(stored)) - 1.0) < 1e-6
