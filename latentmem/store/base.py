"""What a store is: the rows it returns, and the role protocols the engine is typed against.

A backend (``sqlite.py`` today) implements every role; the engine above ``store/`` sees
these protocols only, never a connection or a statement. The roles:
- ``Records``: memories, their vectors and scope reads, the meta values, transactions;
- ``TextIndex``: the lexical side (BM25, entity mentions) and its upkeep;
- ``Edges``: the association graph;
- ``Journal``: per-memory history and the lifecycle's event journal;
- ``ModelState``: what learned parts keep (controller, topics, feedback, accesses);
- ``Archive``: archived memories, which an undo brings back;
- ``Maintenance``: snapshots for long scans, bulk-write pacing, compaction;
- ``Keys``: the server's API keys (hashes only; ``store/keys.py``).

Transactions: ``with store.transaction():`` makes every store write inside it one
atomic unit; a write method called outside one is its own transaction. What a
transaction yields is the backend's own business: callers ignore it.

A ``Snapshot`` is a read-only view for a sleep cycle's long scans, which must hold no
lock a search needs; ``refresh()`` moves it to the store's latest state.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from latentmem.errors import StoreError
from latentmem.store.codec import VectorCodec
from latentmem.store.keys import ApiKey
from latentmem.store.profiles import Profile
from latentmem.types import Edge, Record, from_ts, to_ts


@dataclass
class Scope:
    user_id: str
    agent_id: str | None = None
    session_id: str | None = None
    # ``as_of``: only memories whose event time is at or before this (Unix seconds).
    until: float | None = None

    def contains(self, record: Record | LightRow) -> bool:
        return (
            record.user_id == self.user_id
            and (self.agent_id is None or record.agent_id == self.agent_id)
            and (self.session_id is None or record.session_id == self.session_id)
            and (self.until is None or (_at_or_before(record.event_time, self.until)
                                        and not _at_or_before(record.valid_to, self.until)))
        )

    @property
    def narrowed(self) -> bool:
        return self.agent_id is not None or self.session_id is not None or self.until is not None


def scope_condition(scope: Scope, alias: str = "", mark: str = "?") -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters, placeholders ``mark``) that keeps a query
    inside ``scope``; both backends' statements use it."""
    p = f"{alias}." if alias else ""
    clauses = [f"{p}user_id = {mark}"]
    params: list[Any] = [scope.user_id]
    if scope.agent_id is not None:
        clauses.append(f"{p}agent_id = {mark}")
        params.append(scope.agent_id)
    if scope.session_id is not None:
        clauses.append(f"{p}session_id = {mark}")
        params.append(scope.session_id)
    if scope.until is not None:  # what was said by then, and not yet superseded then
        clauses.append(f"{p}event_time <= {mark} AND ({p}valid_to IS NULL OR {p}valid_to > {mark})")
        params += [scope.until, scope.until]
    return " AND ".join(clauses), params


def _at_or_before(when: datetime | float | None, until: float) -> bool:
    if when is None:
        return False
    return (when.timestamp() if isinstance(when, datetime) else when) <= until


@dataclass(slots=True)
class LightRow:
    """What retrieval needs to score a candidate; full records are read for the top k only."""

    rowid: int
    id: str
    user_id: str
    agent_id: str | None
    session_id: str | None
    speaker: str | None
    event_time: float | None
    importance: float
    access_count: int
    vector: np.ndarray
    valid_to: float | None = None  # set when a newer memory superseded this one
    text_chars: int | None = None  # None when no text is kept (lossy)
    asks: bool = False  # the text contains a question mark


@dataclass
class StoredRow:
    """A record as the store keeps it: the public Record plus store-internal fields."""

    record: Record
    rowid: int
    index_text: str


@dataclass
class Event:
    """One journaled lifecycle action (latentmem/lifecycle/journal.py)."""

    seq: int
    at: float
    cycle: str | None
    action: str
    record_id: str | None
    user_id: str | None
    reason: str
    undoable: bool
    undone_at: float | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Event:
        """From (seq, at, cycle, action, record id, user id, reason, undoable, undone at)."""
        return cls(int(row[0]), float(row[1]), row[2], row[3], row[4], row[5], row[6],
                   bool(row[7]), row[8])

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


# The columns ``Records.update`` may change.
UPDATABLE = frozenset({"text", "title", "type", "summary", "metadata", "event_time", "importance",
                       "valid_to", "superseded_by", "strength", "sources", "content_hash",
                       "level", "parent_id"})


def column_values(changes: dict[str, Any]) -> dict[str, Any]:
    """``Records.update``'s changes as column values (JSON for metadata and sources, Unix
    seconds for times), with ``updated_at``; a column that may not change is refused."""
    bad = set(changes) - UPDATABLE
    if bad:
        raise StoreError(f"cannot update columns {sorted(bad)}")
    sets = dict(changes)
    for key in ("metadata", "sources"):
        if key in sets:
            sets[key] = json.dumps(sets[key])
    for key in ("event_time", "valid_to"):
        if key in sets:
            sets[key] = to_ts(sets[key])
    sets["updated_at"] = time.time()
    return sets


def events_query(table: str, columns: str, mark: str, record_id: str | None, cycle: str | None,
                 user_id: str | None, limit: int | None,
                 newest_first: bool) -> tuple[str, list[Any]]:
    """``Journal.events``' statement for either backend (placeholders ``mark``)."""
    clauses, params = [], []
    for column, value in (("record_id", record_id), ("cycle", cycle), ("user_id", user_id)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT {columns} FROM {table}{where} ORDER BY seq{' DESC' if newest_first else ''}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql, params


# (record id, user id, reason, undo payload): one event of ``Journal.log_events``.
Entry = tuple[str, str, str, dict[str, Any] | None]


class Scans(Protocol):
    """The long reads of a sleep cycle; a store and its snapshots both answer them."""

    def max_rowid(self) -> int: ...

    def first_new_by_user(self, after_rowid: int) -> dict[str, int]:
        """Per user, the first rowid after ``after_rowid`` of a memory that may merge."""
        ...

    def mergeable_vectors(self, user_id: str, upto_rowid: int) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, vectors) of a user's memories that consolidation may merge, in order."""
        ...

    def texts_of(self, rowids: Sequence[int]) -> dict[int, str | None]: ...

    def ids_of(self, rowids: Sequence[int]) -> dict[int, str]: ...

    def strength_rows(self, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """Every memory as (rowid, last use, importance, recalls, strength, lossy, bytes,
        vector bytes, id, user id), in batches."""
        ...

    def session_signature(self, user_id: str) -> list[float]: ...

    def session_vectors(self, user_id: str) -> tuple[list[str], list[str], np.ndarray]:
        """(ids, session ids, vectors) of a user's session memories, by session."""
        ...

    def text_index_disagreement(self) -> tuple[int, int]:
        """(memories with words but no index entry, index entries without a memory)."""
        ...


class Snapshot(Scans, Protocol):
    def refresh(self) -> None: ...

    def close(self) -> None: ...


class Records(Protocol):
    lock: threading.RLock
    schema_version: int
    entity_extractor: Callable[[str], list[str]] | None
    write_seconds: float
    write_longest: float

    @property
    def codec(self) -> VectorCodec: ...

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[Any]: ...

    def unsynced(self) -> AbstractContextManager[None]: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def delete_meta(self, key: str) -> None: ...

    def vector_epoch(self) -> int: ...

    def bump_epoch(self) -> None: ...

    def bind_embedder(self, name: str, dim: int) -> None: ...

    def bind_vector_tier(self, tier: str | None, dim: int) -> VectorCodec: ...

    # What the store spends per memory (store/profiles.py), fixed when it was made.
    profile: Profile

    def convert_vectors(self, tier: str) -> int: ...

    def insert(self, rows: Sequence[tuple[Record, str]], edges: Sequence[Edge] = (),
               history_event: str = "ADD", supersede: Sequence[str] = ()) -> list[int]: ...

    def update(self, record_id: str, changes: dict[str, Any], index_text: str | None = None,
               vector: np.ndarray | None = None) -> StoredRow: ...

    def delete(self, record_ids: Sequence[str]) -> list[StoredRow]: ...

    def touch(self, rowids: Sequence[int], when: float | None = None,
              user_id: str | None = None) -> None: ...

    def decode_vectors(self, blobs: Sequence[bytes]) -> np.ndarray: ...

    def get_row(self, record_id: str, with_vector: bool = False) -> StoredRow: ...

    def light_rows(self, column: str, keys: Sequence[Any]) -> list[LightRow]: ...

    def get_rows_by_id(self, ids: Sequence[str], with_vector: bool = False) -> list[StoredRow]: ...

    def get_rows_by_rowid(self, rowids: Sequence[int],
                          with_vector: bool = False) -> dict[int, StoredRow]: ...

    def list_rows(self, scope: Scope | None, limit: int | None = None, offset: int = 0,
                  with_vector: bool = False, order: str = "rowid") -> list[StoredRow]: ...

    def count(self, scope: Scope | None = None) -> int: ...

    def rowids_in_scope(self, scope: Scope, with_text: bool = False) -> np.ndarray: ...

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[str, np.ndarray, np.ndarray]]: ...

    def session_centroids(self, scope: Scope, sessions: Sequence[str]) -> dict[str, np.ndarray]: ...

    def index_texts(self, rowids: Sequence[int]) -> dict[int, str]: ...

    def event_times(self, rowids: Sequence[int]) -> dict[int, float]: ...

    def latest_event_time(self, scope: Scope) -> float | None: ...

    def rowids_in_window(self, scope: Scope, start: float, end: float, limit: int) -> np.ndarray: ...

    def speakers(self, scope: Scope) -> list[str]: ...

    def last_in_session(self, scope: Scope) -> str | None: ...

    def session_count(self, user_id: str) -> int: ...

    def users(self) -> list[tuple[str, int]]: ...

    def file_bytes(self) -> int: ...

    def previous_vectors(self, user_id: str, session_id: str | None, before_rowid: int | None,
                         limit: int) -> np.ndarray: ...

    def set_importance(self, items: Sequence[tuple[int, float]]) -> None: ...

    def set_strengths(self, strengths: dict[int, float]) -> None: ...

    def mark_unmerged(self, record_ids: Sequence[str], merged_id: str) -> None: ...

    def drop_texts(self, summaries: dict[int, str], at: float) -> None:
        """Make memories lossy: text, index text and title go; the summary becomes the
        given one (by rowid); every index of their words forgets them."""
        ...

    def restore_text(self, record: Record, rowid: int, index_text: str) -> None: ...

    def native_index(self) -> Any:
        """The backend's own ``VectorIndex`` (pgvector), or None when the engine keeps a
        FAISS index beside the store."""
        ...

    def embedding_cache(self) -> Any:
        """The embedding cache kept inside this store (``encode/cache.py``)."""
        ...


class TextIndex(Protocol):
    def bm25(self, query: str, scope: Scope, limit: int) -> list[tuple[int, float]]: ...

    def mentioning(self, scope: Scope, entity: str, limit: int) -> list[int]: ...

    def merge_fts(self, pages: int) -> int: ...

    def set_fts_automerge(self, segments: int) -> None: ...

    def purge_fts(self) -> None: ...

    def rebuild_text_index(self) -> None: ...


class Edges(Protocol):
    def add_edges(self, edges: Sequence[Edge]) -> None: ...

    def edges_of(self, record_id: str) -> list[Edge]: ...

    def all_edges(self, user_id: str | None = None) -> list[Edge]: ...

    def next_pairs_around(self, ids: Sequence[str], hops: int) -> list[tuple[str, str]]: ...


class Journal(Protocol):
    def history(self, record_id: str) -> list[dict[str, Any]]: ...

    def add_history(self, record_id: str, event: str, at: float, *,
                    new_text: str | None = None) -> None: ...

    def log_history(self, event: str, at: float, reasons: Sequence[tuple[str, str]]) -> None: ...

    def blank_history(self, record_ids: Sequence[str]) -> None: ...

    def log_event(self, action: str, record_id: str | None, user_id: str | None, reason: str,
                  undo: dict[str, Any] | None = None, cycle: str | None = None) -> int: ...

    def log_events(self, action: str, entries: Sequence[Entry], cycle: str | None = None) -> None: ...

    def events(self, *, record_id: str | None = None, cycle: str | None = None,
               user_id: str | None = None, limit: int | None = None,
               newest_first: bool = False) -> list[Event]: ...

    def event(self, seq: int) -> tuple[Event, dict[str, Any] | None]: ...

    def mark_undone(self, seq: int) -> None: ...

    def drop_undo(self, record_ids: Sequence[str]) -> None: ...

    def expire_undo(self, before: float) -> int: ...


class ModelState(Protocol):
    def save_model(self, name: str, state_json: str) -> None: ...

    def load_model(self, name: str) -> str | None: ...

    def delete_models(self, names: Sequence[str]) -> None: ...

    def lock_model(self, name: str) -> None:
        """Inside a transaction: other processes that lock ``name`` wait until it ends."""
        ...

    def add_feedback(self, items: Sequence[tuple[str, str, bool, str]], at: float) -> None: ...

    def feedback_counts(self, record_ids: Sequence[str]) -> dict[str, tuple[int, int]]: ...

    def delete_feedback(self, record_ids: Sequence[str]) -> None: ...

    def accesses(self, user_id: str, limit: int, after: float = 0.0) -> list[tuple[float, list[int]]]: ...

    def trim_accesses(self, keep: int) -> None: ...


class Archive(Protocol):
    def archive(self, ids: Sequence[str], at: float) -> list[tuple[int, str, str]]:
        """Move live memories into the archive (whole, with their edges): (rowid, id, user)
        of each that was live."""
        ...

    def archived(self, record_id: str) -> tuple[Record, str, list[Edge]] | None: ...

    def archived_users(self, ids: Sequence[str]) -> dict[str, str]: ...

    def unarchive(self, record_id: str) -> None: ...

    def delete_archived(self, record_id: str) -> str | None:
        """Delete an archived memory and its texts in history; its index text, or None
        when it was not archived."""
        ...

    def merged_sources(self) -> list[tuple[str, list[str], str]]:
        """(id, sources, merge mode) of every merged memory, live or archived."""
        ...


class Maintenance(Scans, Protocol):
    def snapshot(self) -> Snapshot: ...

    def bulk_writes(self) -> AbstractContextManager[Callable[[], None]]:
        """Around a run of many short write transactions (a sleep cycle's batches): yields
        a function to call between two of them, which keeps the store tidy meanwhile."""
        ...

    def cycle_guard(self) -> AbstractContextManager[bool]:
        """Held for a sleep cycle: yields False when another process runs one now."""
        ...

    def reset_bulk_settings(self) -> None:
        """Put back what ``bulk_writes`` changes (a run killed midway leaves it changed)."""
        ...

    def checkpoint(self) -> None: ...

    def optimize(self) -> None: ...

    def compact(self, free_share: float) -> dict[str, Any]:
        """Reclaim free space when more than ``free_share`` of the store is free."""
        ...

    def vacuum(self) -> None:
        """Reclaim all free space now."""
        ...

    def integrity(self) -> list[str]:
        """Every problem the store finds in itself, one line each, named by its check
        (store/integrity.py); empty when none."""
        ...

    def repair(self) -> list[str]:
        """Rebuild what is derived from the records; returns what was done."""
        ...

    def bytes_by_object(self) -> dict[str, int] | None:
        """Bytes per table and index, where the backend can tell."""
        ...

    def bytes_by_column(self) -> dict[str, int] | None:
        """Bytes of each column of the memories' rows, summed, where the backend can tell."""
        ...


class Keys(Protocol):
    def add_key(self, key: ApiKey) -> None: ...

    def api_key(self, key_id: str) -> ApiKey | None: ...

    def api_keys(self) -> list[ApiKey]: ...

    def revoke_key(self, key_id: str, at: float) -> bool: ...


class Store(Records, TextIndex, Edges, Journal, ModelState, Archive, Maintenance, Keys, Protocol):
    """Every role: what a backend implements."""
