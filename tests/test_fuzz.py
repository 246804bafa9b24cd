"""Schema fuzzing: schemathesis draws requests from the server's own /openapi.json, valid
and invalid (negative mode: wrong types, missing fields, out-of-range values), for every
operation, each sent with one of several keys (admin, restricted to one user, read-only,
another tenant's, revoked, malformed, none) to the real server over real HTTP.

Every answer must be: not a 5xx; a 4xx carries exactly ``{"error", "message"}``; a
refused request (any 4xx) changes nothing in the store. (The chat proxy answers in
OpenAI's error shape, ``{"error": {"type", "message"}}``, which its clients read.)

CI runs ``FUZZ_EXAMPLES`` (2,000) requests with a fixed seed, so a failure reproduces.
A longer run with fresh randomness: ``make fuzz N=20000`` (README)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from latentmem import Memory
from latentmem.server import keys, make_server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("LATENTMEM_FUZZ_EXAMPLES", "2000"))
FUZZ_SEED = int(os.environ.get("LATENTMEM_FUZZ_SEED", "20261202"))
sent: dict[str, int] = {}


class Target:
    def __init__(self, tmp: Path) -> None:
        self.mem = Memory(tmp / "store", embedder="hash")
        store = self.mem.store
        admin, _ = keys.create(store, "acme", admin=True)
        ana, _ = keys.create(store, "acme", ["ana"])
        reader, _ = keys.create(store, "acme", read_only=True)
        other, _ = keys.create(store, "blue")
        revoked, row = keys.create(store, "acme")
        keys.revoke(store, row.id)
        self.keys: list[str | None] = [admin, ana, reader, other, revoked,
                                       "lm_0123456789ab_" + "x" * 43, "not a key", None]
        for user in ("acme:ana", "acme:bob", "blue:ana"):
            self.mem.add([f"{user} note {i}: the blue pot by the door" for i in range(4)],
                         user_id=user, session_id="s1")
        self.srv = make_server(self.mem, "127.0.0.1", 0).start()
        self.http = requests.Session()

    def fingerprint(self) -> Any:
        self.mem.settle()
        store = self.mem.store
        rows = [(r.record.id, r.record.user_id, r.record.text, r.record.importance,
                 r.record.updated_at, r.record.metadata) for r in store.list_rows(None)]
        events = store.events(limit=1, newest_first=True)
        return (sorted(rows, key=lambda r: r[0]), [k.to_dict() for k in store.api_keys()],
                [e.to_dict() for e in events])

    def close(self) -> None:
        self.http.close()
        self.srv.stop()
        self.mem.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    found = Target(tmp_path_factory.mktemp("fuzz"))
    yield found
    found.close()


@pytest.mark.slow
def test_schema_fuzzing_finds_no_500_no_bare_error_and_no_change_on_refusal(target: Target) -> None:
    schema = schemathesis.openapi.from_url(target.srv.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    strategies = [op.as_strategy(mode) for op in operations
                  for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    sent.clear()

    @seed(FUZZ_SEED)
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies), key=st.sampled_from(target.keys))
    def one(case: Any, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if key == "not a key":
            headers = {"Authorization": key}
        before = target.fingerprint()
        response = case.call(base_url=target.srv.url, session=target.http, headers=headers,
                             timeout=30)
        label = f"{case.method} {case.operation.path}"
        sent[label] = sent.get(label, 0) + 1
        status = response.status_code
        where = f"{label} -> {status}: {response.text[:300]}"
        assert status < 500, where
        if status >= 400:
            body = json.loads(response.text)
            if case.operation.path == "/v1/chat/completions":  # OpenAI's error shape there
                body = {"error": body["error"]["type"], "message": body["error"]["message"]}
            assert set(body) == {"error", "message"}, where
            assert isinstance(body["error"], str) and body["message"], where
            assert target.fingerprint() == before, f"a refused request changed the store: {where}"

    one()
    total = sum(sent.values())
    print(f"\nschema fuzzing: {total} requests over {len(sent)} operations (seed {FUZZ_SEED})")
    assert total >= min(FUZZ_EXAMPLES, 2000) * 0.95
    assert len(sent) == len(operations), sorted(sent)
