"""Stores: the source of truth for memories (``base.py`` says what a store is).

``open_store`` picks the backend from where the store lives: a ``postgresql://`` URL is a
PostgreSQL store (``postgres.py``), anything else a folder holding a SQLite store
(``memory.db`` inside it). Backends register here, by how their locations look, so that
a new one is a module and a line, not a change to the engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latentmem.config import StorageConfig
    from latentmem.store.base import Store

DB_FILE = "memory.db"


def redacted(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def is_url(location: Path | str) -> bool:
    """A database URL, not a folder."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def _postgres(location: Path | str, storage: StorageConfig) -> Any:
    from latentmem.errors import InvalidInputError
    from latentmem.store.postgres import PostgresStore

    if storage.profile not in (None, "default"):
        raise InvalidInputError(
            f"a PostgreSQL store serves the default profile only; profile={storage.profile!r} "
            "is for SQLite stores (its compressed texts, PQ vectors and lean full-text index "
            "are SQLite's)")
    return PostgresStore(str(location), storage.durability)


def _sqlite(location: Path | str, storage: StorageConfig) -> Any:
    from latentmem.store.sqlite import SQLiteStore

    return SQLiteStore(Path(location) / DB_FILE, storage.durability, storage.profile)


# (does this location belong to the backend, how to open it); the first that claims wins.
BACKENDS: list[tuple[Callable[[Path | str], bool], Callable[[Path | str, StorageConfig], Any]]] = [
    (is_url, _postgres),
    (lambda location: True, _sqlite),
]


def open_store(location: Path | str, storage: StorageConfig) -> Store:
    for claims, opener in BACKENDS:
        if claims(location):
            store: Store = opener(location, storage)
            return store
    raise AssertionError("the SQLite backend claims every location")
