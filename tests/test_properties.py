"""Property tests: a state machine checked against a brute-force oracle, and scope isolation.

The oracle keeps every live memory (user, session, text, vector) in Python and
answers dense search by exact cosine. The engine must agree: what ``get`` and
``all`` return, and the dense candidate list of every search (hybrid search
reorders it with BM25 and diffusion, so the comparison is made on the dense
stage, which is what an index can get wrong).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from latentmem import Memory
from latentmem.store.sqlite import Scope

WORDS = ["lisbon", "porto", "dog", "piano", "marathon", "job", "sister", "bike", "river",
         "coffee", "train", "garden", "movie", "book", "rain"]
USERS = ["ana", "bob", "cy"]
SESSIONS = [None, "s1", "s2"]
# (searches whose dense top-k equals an exact top-k, searches), over every run.
AGREEMENT = [0, 0]
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)


class MemoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.m = Memory(self.dir / "store", embedder="hash")
        self.oracle: dict[str, tuple[str, str | None, str]] = {}
        self.agree = 0
        self.total = 0

    def teardown(self) -> None:
        self.m.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        AGREEMENT[0] += self.agree
        AGREEMENT[1] += self.total

    @rule(user=st.sampled_from(USERS), session=st.sampled_from(SESSIONS), text=texts)
    def add_one(self, user: str, session: str | None, text: str) -> None:
        rid = self.m.add(text, user_id=user, session_id=session).ids[0]
        self.oracle[rid] = (user, session, text)

    @rule(user=st.sampled_from(USERS), session=st.sampled_from(SESSIONS),
          batch=st.lists(texts, min_size=2, max_size=5))
    def add_messages(self, user: str, session: str | None, batch: list[str]) -> None:
        msgs = [{"role": "user", "content": t} for t in batch]
        ids = self.m.add(msgs, user_id=user, session_id=session).ids
        assert len(ids) == len(batch)
        for rid, text in zip(ids, batch, strict=True):
            self.oracle[rid] = (user, session, text)

    @precondition(lambda self: bool(self.oracle))
    @rule(data=st.data(), text=texts)
    def update(self, data: st.DataObject, text: str) -> None:
        rid = data.draw(st.sampled_from(sorted(self.oracle)))
        self.m.update(rid, text=text)
        user, session, _ = self.oracle[rid]
        self.oracle[rid] = (user, session, text)

    @precondition(lambda self: bool(self.oracle))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.oracle)))
        assert self.m.delete(rid) == 1
        del self.oracle[rid]

    @rule()
    def reopen(self) -> None:
        self.m.close()
        self.m = Memory(self.dir / "store", embedder="hash")

    @rule(user=st.sampled_from(USERS), query=texts, k=st.integers(1, 8),
          session=st.sampled_from(SESSIONS))
    def search(self, user: str, query: str, k: int, session: str | None) -> None:
        hits = self.m.search(query, user_id=user, k=k, session_id=session, track_access=False)
        for hit in hits:
            assert hit.id in self.oracle
            assert hit.record.user_id == user
            if session is not None:
                assert hit.record.session_id == session
        # Dense stage against exact brute force over the oracle.
        mine = [rid for rid, (u, s, _) in self.oracle.items()
                if u == user and (session is None or s == session)]
        if not mine:
            assert hits == []
            return
        q = self.m.embedder.embed_batch([query])[0]
        vecs = self.m.embedder.embed_batch([self.oracle[r][2] for r in mine])
        exact = np.argsort(-(vecs @ q), kind="stable")
        kk = min(k, len(mine))
        # Ties at the k-th score make several top-k sets correct: accept any of them.
        cut = float((vecs @ q)[exact[kk - 1]])
        allowed = {mine[i] for i in range(len(mine)) if float(vecs[i] @ q) >= cut - 1e-6}
        scope = Scope(user, None, session)
        rowids = self.m.store.rowids_in_scope(scope) if session is not None else None
        got_rowids, _ = self.m.index.search(user, q, kk, rowids)
        got = {r.record.id for r in self.m.store.get_rows_by_rowid(list(got_rowids)).values()}
        self.total += 1
        self.agree += int(len(got) == kk and got <= allowed)

    @invariant()
    def stored_matches_oracle(self) -> None:
        for user in USERS:
            got = {r.id: r.text for r in self.m.all(user_id=user)}
            want = {rid: t for rid, (u, _, t) in self.oracle.items() if u == user}
            assert got == want
        assert self.m.index.count() == len(self.oracle)


def test_state_machine_agrees_with_exact_search() -> None:
    AGREEMENT[:] = [0, 0]
    run_state_machine_as_test(
        MemoryMachine,
        settings=settings(max_examples=100, stateful_step_count=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
    agree, total = AGREEMENT
    assert total >= 150, f"only {total} searches were checked"
    print(f"dense search agreed with exact search {agree}/{total}")
    assert agree / total >= 0.99, f"dense search agreed with exact search {agree}/{total}"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(USERS), st.sampled_from(["a1", "a2", None]),
                  st.sampled_from(SESSIONS), texts),
        min_size=1, max_size=25,
    ),
    query=texts,
)
def test_scope_isolation(tmp_path_factory, rows, query) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("iso")
    with Memory(home, embedder="hash") as m:
        owner: dict[str, tuple[str, str | None, str | None]] = {}
        for user, agent, session, text in rows:
            for rid in m.add(text, user_id=user, agent_id=agent, session_id=session).ids:
                owner[rid] = (user, agent, session)
        for user in USERS:
            for agent in ["a1", "a2", None]:
                for session in SESSIONS:
                    def ok(rid: str, u: str = user, a: str | None = agent,
                           s: str | None = session) -> bool:
                        ou, oa, os_ = owner[rid]
                        return ou == u and (a is None or oa == a) and (s is None or os_ == s)

                    kw = {"user_id": user, "agent_id": agent, "session_id": session}
                    hits = m.search(query, k=50, track_access=False, **kw)  # type: ignore[arg-type]
                    assert all(ok(h.id) for h in hits)
                    ctx = m.context(query, budget_tokens=2000, **kw)  # type: ignore[arg-type]
                    assert all(ok(i) for i in ctx.ids)
                    listed = m.all(**kw)  # type: ignore[arg-type]
                    assert all(ok(r.id) for r in listed)
                    assert len(listed) == sum(ok(r) for r in owner)
