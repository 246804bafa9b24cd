"""Numbered schema migrations.

Each ``migrations/NNN_name.sql`` runs once, in order, inside one transaction
together with the bump of ``PRAGMA user_version`` to NNN. A database whose
version is newer than the newest file here was written by a newer latentmem
and is refused rather than silently misread.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from latentmem.errors import StoreError

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str]]:
    files = resources.files("latentmem.store") / "migrations"
    found = []
    for entry in files.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text()))
    found.sort()
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise StoreError(f"migrations must be numbered 1..N without gaps, found {numbers}")
    return found


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; return the resulting version."""
    steps = available()
    latest = steps[-1][0] if steps else 0
    version = current_version(conn)
    if version > latest:
        raise StoreError(
            f"store schema version {version} is newer than this latentmem supports ({latest}); "
            "upgrade latentmem"
        )
    if version < latest:
        # Migrations from 008 on read texts through these (a store registers its own after).
        from latentmem.store.textcodec import register

        register(conn)
    for number, sql in steps:
        if number <= version:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"migration {number:03d} failed: {exc}") from exc
    return current_version(conn)


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (sqlite3.complete_statement aware)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        if not buf and line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
