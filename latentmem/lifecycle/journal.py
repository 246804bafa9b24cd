"""The lifecycle journal: every action taken on a memory, why, and how to undo it.

One row of ``events`` per action on one memory (consolidate, demote, archive,
forget, decay, restore, ...), plus one ``cycle`` row per sleep cycle. ``undo``
is a JSON payload that :mod:`latentmem.lifecycle.actions` knows how to apply;
it is NULL for what cannot be undone by design (a deliberate deletion, an
explicit ``demote``), and it is cleared when the undo window passes or when the
memory it would bring back is deleted for good, because an undo payload holds
the text it would restore.

Rejected: reusing ``history``. History is the per-memory audit trail users read
(ADD/UPDATE/DELETE); lifecycle actions need a cycle id, a reason and an undo
payload, and a cycle's hundreds of actions must be listable together.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from latentmem.errors import NotFoundError
from latentmem.store.sqlite import SQLiteStore
from latentmem.types import from_ts


@dataclass
class Event:
    seq: int
    at: float
    cycle: str | None
    action: str
    record_id: str | None
    user_id: str | None
    reason: str
    undoable: bool
    undone_at: float | None

    def to_dict(self) -> dict[str, Any]:
        when = from_ts(self.at)
        undone = from_ts(self.undone_at)
        return {
            "seq": self.seq,
            "at": when.isoformat() if when else None,
            "cycle": self.cycle,
            "action": self.action,
            "record_id": self.record_id,
            "user_id": self.user_id,
            "reason": self.reason,
            "undoable": self.undoable and self.undone_at is None,
            "undone_at": undone.isoformat() if undone else None,
        }

    def line(self) -> str:
        when = from_ts(self.at)
        stamp = when.strftime("%Y-%m-%d %H:%M:%S") if when else "?"
        tail = " (undone)" if self.undone_at else " [undo]" if self.undoable else ""
        target = f" {self.record_id}" if self.record_id else ""
        return f"#{self.seq} {stamp} {self.action}{target}: {self.reason}{tail}"


# (record id, user id, reason, undo payload): one event of ``log_many``.
Entry = tuple[str, str, str, dict[str, Any] | None]

_COLS = "seq, at, cycle, action, record_id, user_id, reason, undo IS NOT NULL, undone_at"


def _event(row: tuple[Any, ...]) -> Event:
    return Event(int(row[0]), float(row[1]), row[2], row[3], row[4], row[5], row[6],
                 bool(row[7]), row[8])


def log(conn: sqlite3.Connection, action: str, record_id: str | None, user_id: str | None,
        reason: str, undo: dict[str, Any] | None = None, cycle: str | None = None) -> int:
    """Append one event inside the caller's transaction; returns its number."""
    cur = conn.execute(
        "INSERT INTO events(at, cycle, action, record_id, user_id, reason, undo) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (time.time(), cycle, action, record_id, user_id, reason,
         None if undo is None else json.dumps(undo)),
    )
    assert cur.lastrowid is not None
    return int(cur.lastrowid)


def log_many(conn: sqlite3.Connection, action: str, entries: Iterable[Entry],
             cycle: str | None = None) -> None:
    """``log`` for many memories at once, inside the caller's transaction. Each entry is
    (record id, user id, reason, undo payload or None)."""
    at = time.time()
    dumped: dict[int, str] = {}  # one payload shared by many entries is serialised once

    def dump(undo: dict[str, Any]) -> str:
        text = dumped.get(id(undo))
        if text is None:
            text = dumped[id(undo)] = json.dumps(undo)
        return text

    # One statement for the lot: executemany gives up the GIL at every row and may wait
    # for it each time (5 ms when a search thread holds it), inside the transaction.
    conn.execute(
        "INSERT INTO events(at, cycle, action, record_id, user_id, reason, undo) "
        "SELECT ?, ?, ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
        "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)",
        (at, cycle, action, json.dumps([[rid, user, reason, None if undo is None else dump(undo)]
                                        for rid, user, reason, undo in entries])),
    )


def _select(store: SQLiteStore, where: str, params: list[Any], order: str = "seq",
            limit: int | None = None) -> list[Event]:
    sql = f"SELECT {_COLS} FROM events{where} ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with store.lock:
        rows = store.conn.execute(sql, params).fetchall()
    return [_event(r) for r in rows]


def for_record(store: SQLiteStore, record_id: str) -> list[Event]:
    """Every event about one memory, oldest first."""
    return _select(store, " WHERE record_id = ?", [record_id])


def of_cycle(store: SQLiteStore, cycle: str) -> list[Event]:
    return _select(store, " WHERE cycle = ?", [cycle])


def recent(store: SQLiteStore, limit: int = 50, user_id: str | None = None) -> list[Event]:
    """The newest ``limit`` events, newest first."""
    if user_id is None:
        return _select(store, "", [], "seq DESC", limit)
    return _select(store, " WHERE user_id = ?", [user_id], "seq DESC", limit)


def get(store: SQLiteStore, seq: int) -> tuple[Event, dict[str, Any] | None]:
    """An event and its undo payload (None when it cannot be undone)."""
    with store.lock:
        row = store.conn.execute(
            f"SELECT {_COLS}, undo FROM events WHERE seq = ?", (seq,)
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no lifecycle event #{seq}")
    return _event(row[:9]), (json.loads(row[9]) if row[9] is not None else None)


def mark_undone(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("UPDATE events SET undone_at = ?, undo = NULL WHERE seq = ?", (time.time(), seq))


def drop_undo(conn: sqlite3.Connection, record_ids: list[str]) -> None:
    """Forget how to bring these memories back: their text must not survive a deletion."""
    for start in range(0, len(record_ids), 500):
        chunk = record_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"UPDATE events SET undo = NULL WHERE record_id IN ({marks})", chunk)


def expire(conn: sqlite3.Connection, before: float) -> int:
    """Clear undo payloads older than ``before`` (the undo window). Returns how many."""
    cur = conn.execute(
        "UPDATE events SET undo = NULL WHERE undo IS NOT NULL AND at < ?", (before,)
    )
    return cur.rowcount
