"""Tenancy: no read path and no lifecycle action of the engine crosses users.

A Hypothesis property. Three users, with agents and sessions, write from one pool of
sentences, as they are, with a "!" (the hash embedder gives the same vector), or with
a few more words (a near-duplicate), so that every text one user holds is likely held
by another too: a search, a merge or a purge that looked past its user would show.
Some texts also carry the writer's own code word, which no other user ever writes: a
context packed for one user must hold no other user's code word.

Each example then, for every user, runs every read path (search in several stage
settings and filters, context, get, all, history, explain, journal, edges, export rows
and every export format, topics, preload) and the calls that name a memory or an event
(feedback, update, delete, demote, merge, forget, undo) on another user's memory, which
must be refused as if it did not exist and change nothing. Lifecycle in between: a
sleep cycle that merges near-duplicates (no merge combines two users; no edge joins
two), a per-user byte budget that one user is over (it demotes and archives that user
alone), an explicit demotion and a true deletion of texts another user also holds
(the other's copy stays whole and found), and undoing a merge.

The oracle is who wrote what: every id the engine shows is traced back to the users
of the memories it was made from.

SQLite always; PostgreSQL when the embedded server starts (a fresh database per example).
``LATENTMEM_TENANCY_EXAMPLES`` sets the examples per backend (CI: a few, for tens of
seconds).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentmem import Memory
from latentmem.errors import InvalidInputError, NotFoundError
from latentmem.lifecycle import actions
from latentmem.store.formats import FORMATS, export_memory, import_into
from latentmem.types import Record

pytestmark = pytest.mark.reliability

EXAMPLES = int(os.environ.get("LATENTMEM_TENANCY_EXAMPLES", "8"))
USERS = ("ana", "bob", "cy")
AGENTS = (None, "a1", "a2")
SESSIONS = (None, "s1", "s2")
CODEWORD = {"ana": "zebracorn", "bob": "quokkafish", "cy": "narwhalite"}
SHARED = (
    "I moved to Lisbon in May with my cat",
    "My sister works as a marine biologist in Porto",
    "The piano lessons start again on Monday",
    "We ran the river marathon in under four hours",
    "The garden needs water every second day",
    "Coffee with the new team at the train station",
)
VARIANTS = ("same", "shout", "longer", "codeword")
# Settings that turn on the stages a default search skips (entity hop, topics, MMR, late
# interaction, session diversity, RRF), each of which reads rows of its own.
EVERY_STAGE = {"entity_gain": 0.5, "topic_weight": 0.3, "mmr": 0.3, "maxsim_weight": 0.3,
               "session_diversity": 0.2, "fusion": "rrf"}
_databases = itertools.count()


def text_of(user: str, base: int, variant: str) -> str:
    sentence = SHARED[base]
    if variant == "shout":
        return sentence + "!"
    if variant == "longer":
        return sentence + " and it rained all week"
    if variant == "codeword":
        return f"{sentence}. The code word is {CODEWORD[user]}."
    return sentence + "."


rows_strategy = st.lists(
    st.tuples(st.sampled_from(USERS), st.sampled_from(AGENTS), st.sampled_from(SESSIONS),
              st.integers(0, len(SHARED) - 1), st.sampled_from(VARIANTS)),
    min_size=3, max_size=24)


class Owners:
    """Who wrote what: the oracle. Ids the engine makes itself (merges) are traced to the
    users of their sources when first seen."""

    def __init__(self) -> None:
        self.user: dict[str, str] = {}

    def add(self, ids: list[str], user: str) -> None:
        for rid in ids:
            self.user[rid] = user

    def of(self, m: Memory, rid: str) -> str:
        if rid in self.user:
            return self.user[rid]
        kept = m.store.archived(rid)
        assert kept is not None, f"{rid} is neither a memory written here nor an archived one"
        self.record(m, kept[0])
        return self.user[rid]

    def record(self, m: Memory, rec: Record) -> None:
        """Check a record the engine holds against who wrote it, learning merged ids."""
        if rec.id not in self.user:
            assert rec.sources, f"{rec.id} was never written and is not a merge"
            users = {self.of(m, s) for s in rec.sources}
            assert users == {rec.user_id}, f"merge {rec.id} of {rec.user_id} combines {users}"
            self.user[rec.id] = rec.user_id
        assert self.user[rec.id] == rec.user_id, f"{rec.id} changed hands"


@contextmanager
def opened(backend: str, pg: str | None) -> Iterator[Memory]:
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="lm-tenancy-"))
        try:
            with Memory(folder / "store", embedder="hash") as m:
                yield m
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import psycopg

    from latentmem.bench.pgserver import with_database

    assert pg is not None
    name = f"lm_tenancy_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE lm_template")
    try:
        with Memory(with_database(pg, name), embedder="hash") as m:
            yield m
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- what every check reads -----------------------------------------------------------


def live(m: Memory, owners: Owners) -> dict[str, Record]:
    """Every live record of the store, each checked against its writers."""
    records, _ = m.export_rows(None)
    for rec in records:
        owners.record(m, rec)
    return {r.id: r for r in records}


def snapshot(m: Memory, user: str) -> list[tuple[Any, ...]]:
    """What a user's memories are, to show that a call for someone else changed nothing."""
    return sorted((r.id, r.text, r.level, r.importance, r.title, r.summary)
                  for r in m.all(user, limit=10_000))


def in_scope(rec: Record, user: str, agent: str | None, session: str | None) -> bool:
    return (rec.user_id == user and (agent is None or rec.agent_id == agent)
            and (session is None or rec.session_id == session))


def foreign_words(user: str) -> list[str]:
    return [w for u, w in CODEWORD.items() if u != user]


def check_edges(m: Memory, owners: Owners) -> None:
    for edge in m.store.all_edges():
        assert owners.of(m, edge.src) == owners.of(m, edge.dst), f"{edge} joins two users"


def check_reads(m: Memory, owners: Owners, query: str) -> None:
    everything = live(m, owners)
    check_edges(m, owners)
    for user in USERS:
        mine = {rid for rid, r in everything.items() if r.user_id == user}
        assert {r.id for r in m.all(user, limit=10_000)} == mine
        others = [rid for rid in everything if rid not in mine]
        for agent in AGENTS:
            for session in SESSIONS:
                scope = {"agent_id": agent, "session_id": session}
                allowed = {rid for rid in mine if in_scope(everything[rid], user, agent, session)}
                assert {r.id for r in m.all(user, **scope)} == allowed  # type: ignore[arg-type]
                for hit in m.search(query, user, k=50, track_access=False, **scope):  # type: ignore[arg-type]
                    assert hit.id in allowed, (user, scope, hit.id, hit.record.user_id)
                ctx = m.context(query, user, budget_tokens=4000, **scope)  # type: ignore[arg-type]
                assert set(ctx.ids) <= allowed
                assert not any(w in ctx.text for w in foreign_words(user)), ctx.text
        for word in foreign_words(user):  # asking for another user's code word
            assert all(h.id in mine for h in m.search(word, user, k=50, track_access=False))
            assert word not in m.context(word, user).text
        for kwargs in ({"learned": False}, {"as_of": "2999-01-01"}, {"now": "2999-01-01"}):
            assert all(h.id in mine for h in m.search(query, user, k=50, track_access=False,
                                                      **kwargs))  # type: ignore[arg-type]
        for rid in others[:6]:  # another user's exact vector as the query
            vec = m.get(rid, include_vector=True).vector
            assert vec is not None
            hits = m.search(query, user, k=50, query_vector=vec, track_access=False)
            assert all(h.id in mine for h in hits)
        for rid in mine:
            assert m.get(rid, user_id=user).user_id == user
            assert m.history(rid, user_id=user)
            for edge in m.edges(rid, user_id=user):
                assert owners.of(m, edge.src) == owners.of(m, edge.dst) == user, edge
            for event in _explained(m, rid, user):
                assert event["user_id"] == user
        for rid in others:
            for call in (m.get, m.history, m.edges, m.explain):
                refused(NotFoundError, call, rid, user_id=user)
        for event in m.journal(limit=10_000, user_id=user):
            assert event["user_id"] == user
            assert event["record_id"] is None or owners.of(m, event["record_id"]) == user
        records, edges = m.export_rows(user)
        assert {r.id for r in records} == mine
        for edge in edges:
            assert owners.of(m, edge.src) == user and owners.of(m, edge.dst) == user, edge
        for topic in m.topics(user) + m.topics(user, rebuild=True):
            assert all(k["id"] in mine for k in topic["key_memories"]), (user, topic)
            assert set(topic["sessions"]) <= {everything[r].session_id for r in mine}


def refused(errors: type[Exception] | tuple[type[Exception], ...], call: Any, *args: Any,
            **kwargs: Any) -> None:
    with pytest.raises(errors):
        call(*args, **kwargs)


def _explained(m: Memory, rid: str, user: str) -> list[dict[str, Any]]:
    try:
        return m.explain(rid, user_id=user)
    except NotFoundError:  # nothing the lifecycle did to it yet
        return []


def check_formats(m: Memory, owners: Owners, user: str, imported: str, folder: Path) -> None:
    """One user's export, in every format: only that user's records and edges, and an
    import of it (format ``imported``, into a fresh store) brings in no one else."""
    want = {r.id for r in m.all(user, limit=10_000)}
    for name, fmt in FORMATS.items():
        path = folder / f"{user}.{name}"
        assert export_memory(m, path, name, user_id=user) == len(want)
        records, edges, _ = fmt.read(path)
        assert {r.id for r in records} == want and {r.user_id for r in records} <= {user}
        for edge in edges:
            assert owners.of(m, edge.src) == user and owners.of(m, edge.dst) == user
    path = folder / f"{user}.{imported}"
    for other in USERS:
        if other != user:
            assert import_into(m, path, imported, on_conflict="skip", user_id=other) == 0
    with Memory(folder / "fresh", embedder="hash") as fresh:
        assert import_into(fresh, path, imported) == len(want)
        assert fresh.store.users() == ([(user, len(want))] if want else [])


def check_refusals(m: Memory, owners: Owners) -> None:
    """Every call that names another user's memory or event is refused as if it did not
    exist, and changes nothing."""
    everything = live(m, owners)
    journal = m.journal(limit=10_000)
    for user in USERS:
        mine = [rid for rid, r in everything.items() if r.user_id == user]
        theirs = [rid for rid, r in everything.items() if r.user_id != user]
        if not theirs:
            continue
        before = {u: snapshot(m, u) for u in USERS}
        for rid in theirs[:4]:
            either = (NotFoundError, InvalidInputError)
            refused(either, m.feedback, rid, True, user_id=user)
            refused(either, m.feedback, rid, False, user_id=user)
            refused(either, m.update, rid, text="overwritten by someone else", user_id=user)
            refused(either, m.update, rid, importance=0.0, user_id=user)
            for call in (m.demote, m.delete, m.forget):
                refused(either, call, rid, user_id=user)
            if mine:
                refused(either, m.merge, [mine[0], rid], user_id=user)
                refused(either, m.merge, [mine[0], rid])  # two users, even unnamed
        for event in journal:
            if event["user_id"] != user and event["record_id"] is not None:
                with pytest.raises(NotFoundError):
                    m.undo(event["seq"], user_id=user)
        assert {u: snapshot(m, u) for u in USERS} == before
    for rid, user in list(owners.user.items()):  # archived memories, of others
        if rid in everything or m.store.archived(rid) is None:
            continue
        for other in USERS:
            if other != user:
                for call in (m.delete, m.history, m.explain):
                    refused(NotFoundError, call, rid, user_id=other)


# -- the lifecycle between the reads --------------------------------------------------


def sleep_and_check(m: Memory, owners: Owners) -> None:
    """A full cycle; every merge it made is of one user's memories, and so is every edge."""
    report = m.sleep()
    assert "consolidate" in report.phases
    live(m, owners)
    check_edges(m, owners)
    for event in m.journal(limit=10_000, cycle=report.cycle):
        if event["record_id"] is not None:
            assert owners.of(m, event["record_id"]) == event["user_id"], event


def budget_for_one(m: Memory, owners: Owners) -> None:
    """A byte budget that one user is over and the others are not: the forgetting it causes
    falls on that user alone."""
    # Bytes as the store keeps them (compressed texts, vectors in its tier), as forget
    # counts them: the store's own figure per memory.
    used = dict.fromkeys(USERS, 0)
    for rows in m.core.store.strength_rows(1000):
        for row in rows:
            used[row[9]] = used.get(row[9], 0) + int(row[6])
    heavy = max(USERS, key=lambda u: used[u])
    rest = max(used[u] for u in USERS if u != heavy)
    if used[heavy] - rest < 2:
        return
    before = {u: snapshot(m, u) for u in USERS}
    m.config = m.config.replace(budget_bytes_per_user=(used[heavy] + rest) // 2)
    report = m.sleep(phases=["forget"]).phases["forget"]
    m.config = m.config.replace(budget_bytes_per_user=None)
    assert report["over_budget_users"] == 1
    for user in USERS:
        assert (snapshot(m, user) == before[user]) == (user != heavy), user
    for event in m.journal(limit=10_000):
        if event["action"] in ("demote", "forget", "archive") and "over budget" in event["reason"]:
            assert event["user_id"] == heavy


def shared_text_stays(m: Memory, owners: Owners) -> None:
    """One user demotes, another deletes a text that a third user also holds: the third's
    copy keeps its text, its words in the full-text index, and its vector."""
    everything = live(m, owners)
    by_text: dict[str, dict[str, str]] = {}
    for rid, rec in everything.items():
        if rec.text is not None and rec.level != "merged":
            by_text.setdefault(rec.text, {})[rec.user_id] = rid
    for text, holders in sorted(by_text.items()):
        if len(holders) < 2:
            continue
        users = sorted(holders)
        actor, keeper = users[0], users[1]
        kept = m.get(holders[keeper], include_vector=True)
        if len(users) > 2:
            m.delete(holders[users[2]], user_id=users[2])
        m.demote(holders[actor], user_id=actor)
        again = m.get(holders[keeper], include_vector=True)
        assert again.text == kept.text == text
        assert again.vector is not None and kept.vector is not None
        assert (again.vector == kept.vector).all()
        found = m.store.bm25(text, m.core.scope(keeper), 50)
        assert again.id in {r.record.id for r in m.store.get_rows_by_rowid([r for r, _ in found]).values()}
        assert any(h.id == again.id for h in m.search(text, keeper, k=50, track_access=False))
        return


def undo_a_merge(m: Memory, owners: Owners) -> None:
    """Undoing one user's merge brings that user's originals back and leaves the others."""
    for event in m.journal(limit=10_000):
        if event["action"] == "merge" and event["undoable"]:
            user = event["user_id"]
            before = {u: snapshot(m, u) for u in USERS if u != user}
            m.undo(event["seq"], user_id=user)
            assert {u: snapshot(m, u) for u in USERS if u != user} == before
            live(m, owners)
            return


def forget_newest(m: Memory) -> None:
    """True deletion of the store's newest memory, by its own user, which the searches
    logged for preloading still name: SQLite gave its rowid to the next memory written,
    whoever wrote it (``test_a_freed_rowid_is_never_given_again``)."""
    rows = m.store.list_rows(None)
    if rows:
        newest = max(rows, key=lambda r: r.rowid).record
        m.forget(newest.id, user_id=newest.user_id)


def preload_and_check(m: Memory, owners: Owners, query: str) -> None:
    for user in USERS:
        m.search(query, user, k=5)
        m.search(SHARED[0], user, k=5)
    m.settle()
    m.sleep(phases=["preload"])
    for user, rowids in m.preloaded.items():
        rows = m.store.get_rows_by_rowid(sorted(rowids))
        assert {r.record.user_id for r in rows.values()} <= {user}, (user, rowids)


# -- the property ---------------------------------------------------------------------


def run_example(m: Memory, rows: list[tuple[str, str | None, str | None, int, str]],
                late: list[tuple[str, int, str]], query: str, export_user: str,
                imported: str) -> None:
    owners = Owners()
    folder = Path(tempfile.mkdtemp(prefix="lm-tenancy-io-"))
    try:
        for user in USERS:  # the same duplicates in every user: each cycle has merges to make
            msgs = [{"role": "user", "content": text_of(user, 0, v)} for v in ("same", "shout")]
            owners.add(m.add(msgs, user, session_id="s1").ids, user)
        for user, agent, session, base, variant in rows:
            owners.add(m.add(text_of(user, base, variant), user, agent_id=agent,
                             session_id=session).ids, user)
        check_reads(m, owners, query)
        preload_and_check(m, owners, query)
        sleep_and_check(m, owners)
        assert any(r.level == "merged" for r in live(m, owners).values())
        check_reads(m, owners, query)
        check_refusals(m, owners)
        budget_for_one(m, owners)
        preload_and_check(m, owners, query)
        forget_newest(m)
        for user, base, variant in late:  # after the forgetting: not into the rowid it freed
            owners.add(m.add(text_of(user, base, variant), user, session_id="s2").ids, user)
        preload_and_check(m, owners, query)
        shared_text_stays(m, owners)
        undo_a_merge(m, owners)
        sleep_and_check(m, owners)
        m.config = m.config.replace(**EVERY_STAGE)
        check_reads(m, owners, query)
        check_refusals(m, owners)
        check_formats(m, owners, export_user, imported, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


late_strategy = st.lists(st.tuples(st.sampled_from(USERS), st.integers(0, len(SHARED) - 1),
                                   st.sampled_from(VARIANTS)), min_size=1, max_size=4)
queries = st.sampled_from([*SHARED, "where did I move?", "code word", "marathon river train"])


@pytest.fixture(scope="module", autouse=True)
def no_inverter() -> Iterator[None]:
    """Explicit demotions would load the shipped inverter (torch) only to find that it
    reads MiniLM vectors, not the hash embedder's: seconds of start-up for nothing here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LATENTMEM_INVERTER", "none")
        yield


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "sqlite":
        return "sqlite", None
    return "postgres", request.getfixturevalue("pg_server")


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=rows_strategy, late=late_strategy, query=queries, export_user=st.sampled_from(USERS),
       imported=st.sampled_from(sorted(FORMATS)))
def test_no_read_path_and_no_lifecycle_action_crosses_users(
        backend: tuple[str, str | None], rows: list[tuple[str, str | None, str | None, int, str]],
        late: list[tuple[str, int, str]], query: str, export_user: str, imported: str) -> None:
    with opened(*backend) as m:
        run_example(m, rows, late, query, export_user, imported)


# -- what the property found, pinned ----------------------------------------------------


def test_a_freed_rowid_is_never_given_again(mem: Memory) -> None:
    """SQLite gave the rowid of a deleted or archived newest memory to the next one
    written, whoever wrote it, while a vector index emptied in bulk, the access log and
    consolidation's watermark still named the one that left: a search could return
    another user's memory, preloading could warm it, a late access count could land on
    it, and a duplicate written then was never consolidated."""
    mem.add("ana walks the dog by the river", user_id="ana")
    gone = mem.add("ana keeps the garden key under the stone", user_id="ana").ids[0]
    freed = mem.store.get_row(gone).rowid
    with actions.Unindexer(mem.core) as later:
        actions.archive(mem.core, [gone], "a test", unindex=later)
        bob = mem.add("bob keeps the bank pin in a drawer", user_id="bob").ids[0]
        assert mem.store.get_row(bob).rowid > freed
        hits = mem.search("ana keeps the garden key under the stone", user_id="ana", k=10,
                          track_access=False)
        assert bob not in {h.id for h in hits}
    newest = mem.add("bob waters the garden", user_id="bob").ids[0]
    high = mem.store.get_row(newest).rowid
    mem.delete(newest)
    mem.close()
    with Memory(mem.home, embedder="hash") as again:  # the high-water mark is stored
        assert again.store.get_row(again.add("cy reads", user_id="cy").ids[0]).rowid > high


def test_a_search_never_returns_a_row_outside_its_scope_whatever_the_index_holds(
        mem: Memory) -> None:
    """The first stage keeps only rows of the scope: the vector index is a cache, and a
    rowid it holds in one user's partition may name another user's row (a stale entry
    in a store written before rowids stopped being reused)."""
    mem.add("ana walks the dog by the river", user_id="ana")
    bob = mem.add("bob keeps the bank pin in a drawer", user_id="bob").ids[0]
    row = mem.store.get_row(bob, with_vector=True)
    assert row.record.vector is not None
    mem.index.add("ana", np.array([row.rowid], dtype=np.int64), row.record.vector.reshape(1, -1))
    for query in ("bank pin drawer", "dog by the river"):
        assert bob not in {h.id for h in mem.search(query, user_id="ana", k=10)}
        assert bob not in mem.context(query, user_id="ana").ids


def test_preloading_never_names_another_users_memory(mem: Memory) -> None:
    """Preloading reads the rowids a user's searches returned; one that now names another
    user's memory (see above) is not preloaded for the first."""
    mem.add(["ana likes green tea", "ana plays the piano"], user_id="ana")
    bob = mem.add("bob hides the spare key under the mat", user_id="bob").ids[0]
    for _ in range(3):
        mem.search("green tea", user_id="ana", k=2)
    mem.settle()
    mem.store.touch([mem.store.get_row(bob).rowid], None, "ana")  # as a stale log would
    mem.sleep(phases=["preload"])
    rows = mem.store.get_rows_by_rowid(sorted(mem.preloaded.get("ana", set())))
    assert rows and {r.record.user_id for r in rows.values()} == {"ana"}


def test_an_access_logged_for_one_user_counts_only_that_users_memories(mem: Memory) -> None:
    """A search's access counts are written after it returns, by rowid."""
    bob = mem.add("bob hides the spare key under the mat", user_id="bob").ids[0]
    row = mem.store.get_row(bob)
    mem.store.touch([row.rowid], None, "ana")
    assert mem.get(bob).access_count == 0
    mem.store.touch([row.rowid], None, "bob")
    assert mem.get(bob).access_count == 1


def test_a_user_left_without_session_memories_has_no_topics(mem: Memory) -> None:
    """Topics kept from before name memories that are gone: a merge of turns from two
    sessions (the merged memory has no session), or memories all archived."""
    mem.add("I moved to Lisbon in May with my cat.", user_id="ana", session_id="s1")
    mem.add("I moved to Lisbon in May with my cat!", user_id="ana", session_id="s2")
    assert mem.topics("ana", rebuild=True)
    assert mem.sleep().phases["consolidate"]["clusters"] == 1
    assert [r.session_id for r in mem.all("ana")] == [None]
    assert mem.topics("ana") == [] and mem.topics("ana", rebuild=True) == []
    ids = mem.add(["Coffee at the station.", "The piano lessons start."], user_id="bob",
                  session_id="s1").ids
    assert mem.topics("bob", rebuild=True)
    actions.archive(mem.core, ids, "a test")
    assert mem.all("bob") == [] and mem.topics("bob") == []
