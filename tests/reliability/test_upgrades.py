"""Upgrades: a store written by every earlier schema version opens, migrates, and loses
nothing; a store from a newer latentmem is refused and left as it was.

The fixtures in tests/data/upgrades were written by earlier commits of this repository
(tests/data/upgrades/make_fixtures.sh names them), each with the hash embedder, and carry
what a reader must find (expected.json)."""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from latentmem import Memory
from latentmem.errors import StoreError
from latentmem.store import DB_FILE
from latentmem.store.migrate import available

pytestmark = pytest.mark.reliability

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "upgrades"
VERSIONS = sorted(p.name for p in FIXTURES.iterdir() if (p / "memory.db.gz").exists())
LATEST = available()[-1][0]


def _unpack(name: str, tmp_path: Path) -> tuple[Path, dict]:
    home = tmp_path / name
    home.mkdir()
    with gzip.open(FIXTURES / name / "memory.db.gz", "rb") as gz:
        (home / DB_FILE).write_bytes(gz.read())
    return home, json.loads((FIXTURES / name / "expected.json").read_text())


def test_there_is_a_fixture_for_every_earlier_schema_version() -> None:
    written = {json.loads((FIXTURES / v / "expected.json").read_text())["schema_version"]
               for v in VERSIONS}
    # 005 and 006 arrived in one commit: no store was ever written at version 5.
    assert written == set(range(1, LATEST)) - {5}


def _restore_pg(pg_server: str, name: str) -> str:
    """A database on the test server holding the dump ``name`` (pg_dump --inserts)."""
    import psycopg

    from latentmem.bench.pgserver import with_database

    database = f"lm_upgrade_{name}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database} TEMPLATE template0")
    with gzip.open(FIXTURES / name / "dump.sql.gz", "rt") as gz:
        # psql's meta-commands (\restrict) are not SQL
        script = "".join(line for line in gz if not line.startswith("\\"))
    url = with_database(pg_server, database)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script)  # type: ignore[call-overload]
    return url


def test_an_old_postgresql_store_migrates_with_nothing_lost(pg_server: str) -> None:
    from latentmem.store.postgres import PostgresStore  # noqa: F401 - the extra is there

    url = _restore_pg(pg_server, "pg1")
    expected = json.loads((FIXTURES / "pg1" / "expected.json").read_text())
    _migrates_with_nothing_lost(url, expected, pg_latest())


def pg_latest() -> int:
    from importlib import resources

    names = [e.name for e in (resources.files("latentmem.store") / "pg_migrations").iterdir()
             if e.name.endswith(".sql")]
    return len(names)


def test_a_postgresql_store_from_a_newer_latentmem_is_refused(pg_server: str) -> None:
    import psycopg

    url = _restore_pg(pg_server, "pg1")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO lm_schema (version) VALUES (99)")
        before = conn.execute("SELECT count(*) FROM lm_records").fetchone()
    with pytest.raises(StoreError, match="version 99 is newer.*upgrade latentmem"):
        Memory(url, embedder="hash")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM lm_records").fetchone() == before
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'lm_api_keys'"
                            ).fetchone() == (0,)


@pytest.mark.parametrize("name", VERSIONS)
def test_an_old_store_migrates_with_nothing_lost(name: str, tmp_path: Path) -> None:
    home, expected = _unpack(name, tmp_path)
    _migrates_with_nothing_lost(home, expected, LATEST)


def _migrates_with_nothing_lost(home: Path | str, expected: dict, latest: int) -> None:
    with Memory(home, embedder="hash") as m:
        assert m.store.schema_version == latest
        # A store from before profiles is a default one and keeps the tier it was made with.
        assert (m.stats()["profile"], m.stats()["vector_tier"]) == ("default", "fp32")
        for want in expected["records"]:
            got = m.get(want["id"], include_vector=True)
            assert (got.user_id, got.session_id, got.text) == \
                (want["user_id"], want["session_id"], want["text"])
            vector = np.asarray(got.vector, dtype=np.float32).tobytes()
            assert hashlib.sha256(vector).hexdigest() == want["vector_sha256"], want["id"]
        live = {r.id for u in ("ana", "bob") for r in m.all(u, limit=100)}
        assert live == {r["id"] for r in expected["records"]}
        edges = {(e.src, e.dst, e.type) for rid in live for e in m.edges(rid)}
        assert {tuple(e) for e in expected["edges"]} <= edges
        for rid, text in expected["updated"].items():
            assert any(h.get("event") == "UPDATE" for h in m.history(rid))
            assert m.get(rid).text == text
        assert m.check()["ok"], m.check()["problems"]
        hits = m.search("where did I move to Lisbon", user_id="ana", k=3)
        assert hits and all(h.record.user_id == "ana" for h in hits)
        # and it takes new writes
        new = m.add("A note written after the upgrade", user_id="ana").ids[0]
        m.update(new, text="A note written and changed after the upgrade")
        m.sleep()
    with Memory(home, embedder="hash") as m:
        assert m.get(new).text == "A note written and changed after the upgrade"
        assert m.check()["ok"]


def test_a_store_from_a_newer_latentmem_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    home, _ = _unpack(VERSIONS[-1], tmp_path)
    with Memory(home, embedder="hash"):
        pass
    db = home / DB_FILE
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    before = db.read_bytes()
    with pytest.raises(StoreError, match=f"version {LATEST + 1} is newer.*upgrade latentmem"):
        Memory(home, embedder="hash")
    assert db.read_bytes() == before
