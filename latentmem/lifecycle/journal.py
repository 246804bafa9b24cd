"""The lifecycle journal: every action taken on a memory, why, and how to undo it.

One event per action on one memory (consolidate, demote, archive, forget, decay,
restore, ...), plus one ``sleep`` event per sleep cycle. ``undo`` is a JSON payload that
:mod:`latentmem.lifecycle.actions` knows how to apply; it is absent for what cannot be
undone by design (a deliberate deletion, an explicit ``demote``), and it is cleared when
the undo window passes or when the memory it would bring back is deleted for good,
because an undo payload holds the text it would restore.

The events live in the store (``store.base.Journal``); these are the reads the rest of
the engine and the CLI use.

Rejected: reusing ``history``. History is the per-memory audit trail users read
(ADD/UPDATE/DELETE); lifecycle actions need a cycle id, a reason and an undo
payload, and a cycle's hundreds of actions must be listable together.
"""

from __future__ import annotations

from typing import Any

from latentmem.store.base import Entry, Event, Journal

MAX_EVENT = 2**63 - 1  # event numbers count from 1; past this no store can hold one

__all__ = ["Entry", "Event", "for_record", "get", "of_cycle", "recent"]


def for_record(store: Journal, record_id: str) -> list[Event]:
    """Every event about one memory, oldest first."""
    return store.events(record_id=record_id)


def of_cycle(store: Journal, cycle: str) -> list[Event]:
    return store.events(cycle=cycle)


def recent(store: Journal, limit: int = 50, user_id: str | None = None) -> list[Event]:
    """The newest ``limit`` events, newest first."""
    return store.events(user_id=user_id, limit=limit, newest_first=True)


def get(store: Journal, seq: int) -> tuple[Event, dict[str, Any] | None]:
    """An event and its undo payload (None when it cannot be undone)."""
    return store.event(seq)
