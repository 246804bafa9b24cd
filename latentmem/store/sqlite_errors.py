"""What SQLite's own failures become: a damaged file, a full disk, an I/O error.

SQLite reports these as ``sqlite3.DatabaseError`` / ``OperationalError`` from whichever
statement met them, possibly deep in a sleep cycle or a search. A caller of latentmem must
get a ``LatentMemError`` that says what happened to *the store* and what to do, never a
bare driver exception. So every connection the store opens is a ``GuardedConnection``: its
``execute``/``executemany`` and the fetches of its cursors translate exactly these result
codes, and leave every other error (a constraint, a busy database) to the code that
expects it.

Rejected: catching ``sqlite3.Error`` at the facade. A lifecycle thread, the server and the
bench call the store without the facade, and a wrapper there would also swallow the
constraint errors that the store turns into ``ConflictError`` itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from latentmem.errors import StoreCorruptError, StoreError, StoreFullError

# Primary result codes (the low byte of an extended one).
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_FULL = {sqlite3.SQLITE_FULL}
_IOERR = {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN}

RECOVERY = "see RELIABILITY.md, 'Recovery'"


def translated(exc: sqlite3.Error, path: str) -> StoreError | None:
    """The StoreError that ``exc`` stands for, or None when it is an ordinary error."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        text = str(exc)
        if "malformed" in text or "not a database" in text:
            code = sqlite3.SQLITE_CORRUPT
        elif "disk is full" in text:
            code = sqlite3.SQLITE_FULL
        else:
            return None
    primary = int(code) & 0xFF
    if primary in _CORRUPT:
        return StoreCorruptError(
            f"store {path} is damaged ({exc}); run `latentmem check --home {Path(path).parent}` "
            f"to see what is affected; {RECOVERY}")
    if primary in _FULL:
        return StoreFullError(
            f"the disk holding store {path} is full ({exc}); the write was not kept. "
            "Free some space and try again")
    if primary in _IOERR:
        return StoreError(f"store {path} could not be read or written ({exc}: the disk may "
                          "be full, over a size limit or failing); a write that met this was "
                          f"not kept; {RECOVERY}")
    return None


class GuardedCursor(sqlite3.Cursor):
    def _guard(self, exc: sqlite3.Error) -> Exception:
        conn = self.connection
        path = getattr(conn, "store_path", "?")
        return translated(exc, path) or exc

    def execute(self, sql: str, parameters: Any = (), /) -> GuardedCursor:
        try:
            super().execute(sql, parameters)
        except sqlite3.Error as exc:
            raise self._guard(exc) from exc
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> GuardedCursor:
        try:
            super().executemany(sql, seq_of_parameters)
        except sqlite3.Error as exc:
            raise self._guard(exc) from exc
        return self

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as exc:
            raise self._guard(exc) from exc

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        try:
            return super().fetchmany(size if size is not None else self.arraysize)
        except sqlite3.Error as exc:
            raise self._guard(exc) from exc

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as exc:
            raise self._guard(exc) from exc

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as exc:
            raise self._guard(exc) from exc


class GuardedConnection(sqlite3.Connection):
    """A connection whose damaged-file, full-disk and I/O errors are StoreErrors."""

    store_path = "?"

    def cursor(self, factory: Any = GuardedCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        return self.cursor().executemany(sql, parameters)


def connect(path: str | Path, **kwargs: Any) -> GuardedConnection:
    """``sqlite3.connect`` with a GuardedConnection; ``path`` may be a ``file:`` URI."""
    try:
        conn = sqlite3.connect(str(path), factory=GuardedConnection, **kwargs)
    except sqlite3.Error as exc:
        raise translated(exc, str(path)) or StoreError(
            f"cannot open store {path}: {exc}") from exc
    assert isinstance(conn, GuardedConnection)
    where = str(path)
    if where.startswith("file:"):
        where = where[5:].split("?", 1)[0]
    conn.store_path = where
    return conn
