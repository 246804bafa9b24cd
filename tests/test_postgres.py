"""What only the PostgreSQL backend has to prove: its URL and connection faults, many
processes on one database, and BM25 equal to SQLite's. The engine's own tests run on both
backends through the ``mem`` fixture (conftest.py)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from latentmem import Memory
from latentmem.errors import InvalidInputError, MissingExtraError, NotFoundError, StoreError

TEXTS = [
    "I moved to Lisbon in May 2023 with my cat",
    "My sister Bea works as a nurse in Porto",
    "We hiked the Lisbon hills on Sunday and the views were lovely",
    "Bea said the night shifts at the hospital are hard",
    "I started running again, five kilometres along the river",
    "The cat knocked over my coffee this morning",
    "Running by the river in Lisbon is my favourite thing",
]


def test_a_wrong_url_is_one_clear_line_without_the_password(pg_server: str) -> None:
    head, _, tail = pg_server.partition("?")
    url = head.rsplit("/", 1)[0].replace("postgres:@", "postgres:hunter2@") + "/no_such_db?" + tail
    with pytest.raises(StoreError) as err:
        Memory(url, embedder="hash")
    message = str(err.value)
    assert "cannot connect to PostgreSQL" in message and "no_such_db" in message
    assert "hunter2" not in message and "\n" not in message


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        Memory("postgresql://nobody@127.0.0.1:1/x?connect_timeout=2", embedder="hash")


def test_without_the_extra_the_error_says_what_to_install(monkeypatch) -> None:
    import latentmem.store.postgres as pg

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingExtraError, match=r"latentmem\[postgres\]"):
        importlib.reload(pg)
    monkeypatch.undo()
    importlib.reload(pg)


def test_compact_tiers_are_refused_clearly(pg_url: str) -> None:
    with pytest.raises(InvalidInputError, match="fp32 .* or fp16"):
        Memory(pg_url, embedder="hash", vector_tier="pq")


def test_the_fp16_tier_is_halfvec(pg_url: str) -> None:
    with Memory(pg_url, embedder="hash", vector_tier="fp16") as m:
        ids = m.add(TEXTS, user_id="ana").ids
        assert m.search("Bea the nurse", user_id="ana", k=3)[0].id == ids[1]
        assert m.store._fetch("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "  # type: ignore[attr-defined]
                              "WHERE attrelid = 'lm_records'::regclass AND attname = 'vector'"
                              )[0][0] == "halfvec(64)"


def test_bm25_equals_sqlites(pg_url: str, tmp_path: Path) -> None:
    with Memory(pg_url, embedder="hash") as pg, Memory(tmp_path / "s", embedder="hash") as lite:
        for m in (pg, lite):
            m.add(TEXTS, user_id="ana", speaker="Ana")
        for query in ("Lisbon running river", "Bea nurse hospital shifts", "cat coffee", "Ana"):
            a = pg.store.bm25(query, pg.core.scope("ana"), 10)
            b = lite.store.bm25(query, lite.core.scope("ana"), 10)
            assert [r for r, _ in a] == [r for r, _ in b], query
            assert np.allclose([s for _, s in a], [s for _, s in b], rtol=1e-9), query


def test_bm25_reads_its_own_users_posting_lists(pg_url: str) -> None:
    """A search finds its user's rows through the index keyed by user and term (migration
    4), not by walking every user's rows that hold the term; other users' rows, even one
    whose id makes the same key, never come back."""
    from latentmem.store.postgres import USER_TERMS

    with Memory(pg_url, embedder="hash") as m:
        mine = m.add(TEXTS, user_id="ana").ids
        m.add(TEXTS, user_id="bo")
        m.add(["Lisbon Lisbon Lisbon"], user_id="ana\x1flisbon")  # same key as ana's "lisbon"
        found = {r for r, _ in m.store.bm25("Lisbon cat", m.core.scope("ana"), 50)}
        rowids = {int(r[0]) for r in m.store._fetch(  # type: ignore[attr-defined]
            "SELECT rowid FROM lm_records WHERE id = ANY(%s)", (mine,))}
        assert found and found <= rowids
        with m.store.pool.connection() as conn:  # type: ignore[attr-defined]
            conn.execute("SET enable_seqscan = off")
            # The search's own condition, alone: only that index can serve it.
            plan = json.dumps(conn.execute(
                f"EXPLAIN (FORMAT JSON) SELECT rowid FROM lm_records WHERE {USER_TERMS}",
                (["ana\x1flisbon"],)
            ).fetchone()[0])
            conn.execute("RESET enable_seqscan")
        assert "lm_records_user_terms" in plan


def test_an_add_reads_its_sessions_newest_rows_through_an_index(pg_url: str) -> None:
    """The newest turn of a session with no rows yet was found by walking the whole
    table's rowids backwards (560 ms an add at 1M memories); migration 5 keys the session
    index by rowid too, so the walk starts and ends in the session."""
    with Memory(pg_url, embedder="hash") as m:
        for s in range(30):
            m.add(TEXTS, user_id="ana", session_id=f"s{s}")
        m.add(TEXTS[:2], user_id="ana")  # no session: the controller reads them by IS NULL
        assert m.store.previous_vectors("ana", None, None, 5).shape == (2, m.dim)
        assert m.store.last_in_session(m.core.scope("ana", session_id="s3")) is not None
        m.store._exec("ANALYZE lm_records")  # type: ignore[attr-defined]
        plan = json.dumps(m.store._fetch(  # type: ignore[attr-defined]
            "EXPLAIN (FORMAT JSON) SELECT id FROM lm_records WHERE user_id = 'ana' AND "
            "session_id = 'new' AND level = 'turn' ORDER BY rowid DESC LIMIT 1")[0][0])
        assert "lm_records_user_session_rowid" in plan, plan


def test_bm25_keeps_the_same_affordable_terms_as_sqlite(pg_url: str, tmp_path: Path,
                                                       monkeypatch) -> None:
    """Past the postings budget both backends score the same words (counts past the cap
    are made exact where they decide)."""
    from latentmem.store import postgres, sqlite

    monkeypatch.setattr(postgres, "BM25_POSTINGS", 3)
    monkeypatch.setattr(sqlite, "BM25_POSTINGS", 3)
    with Memory(pg_url, embedder="hash") as pg, Memory(tmp_path / "s", embedder="hash") as lite:
        for m in (pg, lite):
            m.add(TEXTS * 2, user_id="ana")
        for query in ("Lisbon river running cat Bea", "my the cat Lisbon", "running river Lisbon",
                      "Bea nurse Porto hospital shifts night"):
            a = pg.store.bm25(query, pg.core.scope("ana"), 20)
            b = lite.store.bm25(query, lite.core.scope("ana"), 20)
            assert [r for r, _ in a] == [r for r, _ in b], query
            assert np.allclose([s for _, s in a], [s for _, s in b], rtol=1e-9), query


def test_search_matches_sqlite_on_the_same_data(pg_url: str, tmp_path: Path) -> None:
    with Memory(pg_url, embedder="hash") as pg, Memory(tmp_path / "s", embedder="hash") as lite:
        for m in (pg, lite):
            m.add(TEXTS, user_id="ana", session_id="s1", event_time="2023-06-01")
        for query in ("where does my sister work", "running in Lisbon", "what did the cat do"):
            a = [h.record.text for h in pg.search(query, user_id="ana", track_access=False)]
            b = [h.record.text for h in lite.search(query, user_id="ana", track_access=False)]
            assert a == b, query


def test_a_connection_lost_mid_write_leaves_nothing_half_written(pg_url: str) -> None:
    with Memory(pg_url, embedder="hash") as m:
        m.add("before", user_id="u")
        store = m.store

        def kill_own_connection() -> None:
            with store.transaction() as conn:  # type: ignore[attr-defined]
                conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        with pytest.raises(Exception):  # noqa: B017 - psycopg's own error for a lost link
            with store.transaction():
                store.log_event("probe", None, None, "written before the link goes")
                kill_own_connection()
        assert [e.action for e in store.events()] == []
        m.add(["after one", "after two"], user_id="u")  # the pool replaced the connection
        assert sorted(r.text or "" for r in m.all(user_id="u")) == ["after one", "after two",
                                                                   "before"]


def test_a_restarted_server_is_reconnected(pg_url: str, pg_server: str) -> None:
    import psycopg

    with Memory(pg_url, embedder="hash") as m:
        m.add("kept", user_id="u")
        name = pg_url.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(pg_server, autocommit=True) as admin:  # every link of the store dies
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        assert [h.record.text for h in m.search("kept", user_id="u")] == ["kept"]
        m.add("also kept", user_id="u")
        assert m.stats()["records"] == 2


_WRITER = textwrap.dedent("""
    import sys
    from latentmem import Memory
    url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Memory(url, embedder="hash") as m:
        for i in range(n):
            m.add(f"{who} says hello number {i}", user_id="shared", session_id=who)
        m.sleep(budget=30)
        print(m.stats()["records"])
""")


def test_several_processes_share_one_database(pg_url: str) -> None:
    with Memory(pg_url, embedder="hash") as m:
        m.add("the first memory", user_id="shared")
        seen_before = [h.record.text for h in m.search("hello", user_id="shared", k=50)]
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER, pg_url, f"p{i}", "40"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
        # This process sees what the others committed; its caches follow the version counter.
        assert m.stats()["records"] == 81
        assert len(m.all(user_id="shared", limit=1000)) == 81
        texts = {h.record.text for h in m.search("p1 says hello", user_id="shared", k=100)}
        assert {f"p1 says hello number {i}" for i in range(40)} <= texts
        assert len(seen_before) == 1
        assert set(m.store.speakers(m.core.scope("shared"))) == set()
        events = m.store.events()
        cycles = [e for e in events if e.action == "sleep"]
        assert 1 <= len(cycles) <= 2  # a cycle that met another under way left it the work
        assert len({e.seq for e in events}) == len(events)


def test_the_password_never_shows_in_stats(pg_url: str) -> None:
    url = pg_url.replace("postgres:@", "postgres:s3cret@")
    with Memory(url, embedder="hash") as m:
        m.add("hello", user_id="u")
        assert "s3cret" not in m.location and "s3cret" not in str(m.stats())
        assert m.location.startswith("postgresql://postgres:***@")


def test_feedback_in_two_processes_is_learned_by_both(pg_url: str) -> None:
    with Memory(pg_url, embedder="hash") as a, Memory(pg_url, embedder="hash") as b:
        ids = a.add(TEXTS, user_id="ana").ids
        a.feedback(ids[0], True)
        b.feedback(ids[1], False)  # learns on top of a's event, not of its own stale copy
        a.feedback(ids[2], True)
        assert a.controller.events == 3
        with Memory(pg_url, embedder="hash") as c:
            assert c.controller.events == 3


def test_an_import_that_clashes_changes_nothing(pg_url: str) -> None:
    from latentmem.errors import ConflictError

    with Memory(pg_url, embedder="hash") as m:
        m.add(TEXTS[:2], user_id="ana")
        rec = m.all(user_id="ana", include_vectors=True)[0]
        fresh = rec.__class__(**{**rec.__dict__, "id": "01ZZZZZZZZZZZZZZZZZZZZZZZZ"})
        before = (m.stats()["records"], len(m.store.all_edges()), len(m.history(rec.id)))
        with pytest.raises(ConflictError, match="already exists"):
            m.import_records([fresh, rec])
        after = (m.stats()["records"], len(m.store.all_edges()), len(m.history(rec.id)))
        assert after == before
        with pytest.raises(NotFoundError):  # not there: nothing was half-written
            m.get("01ZZZZZZZZZZZZZZZZZZZZZZZZ")


def test_the_term_table_agrees_with_a_recount_after_every_kind_of_write(pg_url: str) -> None:
    """BM25's document frequencies (lm_term_stats) and per-user totals, kept by triggers,
    equal a count over the rows after adds, updates, deletes, imports (a failed one too),
    a sleep cycle that merges and archives, its undo, and a demotion to vector only."""
    from dataclasses import replace

    from latentmem.errors import ConflictError
    from latentmem.store.integrity import TERM_RECOUNT

    def agrees(m: Memory, what: str) -> None:
        fetch = m.store._fetch  # type: ignore[attr-defined]
        kept = sorted(tuple(r) for r in fetch("SELECT user_id, term, df FROM lm_term_stats"))
        assert kept == sorted(tuple(r) for r in fetch(TERM_RECOUNT)), what
        assert all(df > 0 for _, _, df in kept), what
        assert m.store.integrity() == [], what

    with Memory(pg_url, embedder="hash") as m:
        ids = m.add(TEXTS, user_id="ana", speaker="Ana").ids
        dup = m.add(["I moved to Lisbon in May 2023 with my cat!"], user_id="ana").ids
        m.add(TEXTS[:3], user_id="bo")
        agrees(m, "adds")
        assert m.store._fetch("SELECT df FROM lm_term_stats WHERE user_id = 'ana' "  # type: ignore[attr-defined]
                              "AND term = 'lisbon'")[0][0] == 4
        m.update(ids[1], text="My sister Bea now teaches music in Braga")
        m.update(ids[2], metadata={"mood": "happy"})  # no new terms: nothing to count
        agrees(m, "updates")
        m.delete([ids[3], ids[5]])
        agrees(m, "deletes")
        copies = [replace(r, id=f"01IMPORTED{i:016d}", user_id="cy")
                  for i, r in enumerate(m.all(user_id="ana", include_vectors=True))]
        assert m.import_records(copies) == len(copies)
        agrees(m, "an import")
        before = m.store._fetch("SELECT * FROM lm_term_stats ORDER BY 1, 2")  # type: ignore[attr-defined]
        clash = [replace(copies[0], id="01IMPORTEDNEW0000000000000"), copies[1]]
        with pytest.raises(ConflictError):
            m.import_records(clash)
        assert m.store._fetch("SELECT * FROM lm_term_stats ORDER BY 1, 2") == before  # type: ignore[attr-defined]
        report = m.sleep()
        assert report.phases["consolidate"]["clusters"] >= 1  # the duplicate was merged
        agrees(m, "a sleep cycle")
        assert m.explain(dup[0])[-1]["action"] == "archive"
        merged = next(r.id for r in m.all("ana") if r.level == "merged")
        m.undo(m.explain(merged)[0]["seq"], user_id="ana")
        assert m.get(dup[0]).text is not None  # back from the archive
        agrees(m, "an undo")
        m.demote(ids[4])
        agrees(m, "a demotion")
        m.store.rebuild_text_index()
        agrees(m, "a rebuilt text index")
        m.store._exec("UPDATE lm_term_stats SET df = df + 1 WHERE term = 'lisbon'")  # type: ignore[attr-defined]
        assert any("BM25 statistics" in p for p in m.store.integrity())
        m.store.repair()
        agrees(m, "a repair")


def test_migration_3_counts_the_terms_of_an_existing_store(pg_server: str) -> None:
    """A store made before the term table (schema 2, rows already there) gets it filled
    when a newer latentmem opens it, and it is kept from then on."""
    import psycopg

    from latentmem.bench.pgserver import with_database
    from latentmem.store.integrity import TERM_RECOUNT
    from latentmem.store.postgres import PostgresStore, migrations

    name = f"lm_test_migration_3_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = with_database(pg_server, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE lm_schema (version integer NOT NULL)")
            for number, sql in migrations()[:2]:
                conn.execute(sql)  # type: ignore[arg-type]
                conn.execute("INSERT INTO lm_schema (version) VALUES (%s)", (number,))
            for i, (user, tf) in enumerate([("ana", {"lisbon": 1, "cat": 2}),
                                            ("ana", {"lisbon": 1}), ("bo", {"cat": 1}),
                                            ("bo", {})]):
                conn.execute("INSERT INTO lm_records (user_id, id, created_at, updated_at, vector, "
                             "tf, doc_len) VALUES (%s, %s, 0, 0, '[1,0]', %s, %s)",
                             (user, f"r{i}", json.dumps(tf), sum(tf.values())))
        store = PostgresStore(url)
        try:
            assert store.schema_version == len(migrations())
            kept = sorted(tuple(r) for r in store._fetch("SELECT user_id, term, df FROM lm_term_stats"))
            assert kept == [("ana", "cat", 1), ("ana", "lisbon", 2), ("bo", "cat", 1)]
            assert sorted(tuple(r) for r in store._fetch(TERM_RECOUNT)) == kept
            assert sorted(tuple(r) for r in store._fetch(
                "SELECT user_id, docs, terms FROM lm_user_stats")) == [("ana", 2, 4), ("bo", 1, 1)]
            store._exec("DELETE FROM lm_records WHERE id = 'r0'")
            assert sorted(tuple(r) for r in store._fetch(
                "SELECT user_id, term, df FROM lm_term_stats")) == [("ana", "lisbon", 1),
                                                                    ("bo", "cat", 1)]
        finally:
            store.close()
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
