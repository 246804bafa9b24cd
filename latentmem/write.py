"""The write path: records built from what a caller gives, then stored and indexed.

``add``: validated items -> split into records (long texts become chunk records) ->
embedded in one batch (through the content-hash cache) -> importance (the controller,
else a fixed prior) -> one store transaction (records, vectors, full-text rows, ``next``
and ``causal`` edges, history) -> vector index -> receipt. No LLM, and nothing is
written unless everything validated and embedded. ``update`` and ``import_records`` are
the two other ways a record's text or vector is written.

The facade (``Memory``) checks its arguments' types and scope values; what is checked
here is what needs the engine (the embedder's dimension, the owner of a superseded id).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from latentmem.core import Core
from latentmem.encode import segment
from latentmem.errors import InvalidInputError, NotFoundError
from latentmem.graph import causal
from latentmem.ids import new_id
from latentmem.inputs import (
    check_chars,
    check_edge,
    check_ids,
    check_metadata,
    check_record,
    content_hash,
    index_text_for,
)
from latentmem.retrieve.timeparse import parse_time
from latentmem.store.base import Scope
from latentmem.types import Edge, Receipt, Record

# One piece of an item: (item, its text or a chunk of it, chunk number, chunks in all).
Piece = tuple[dict[str, Any], str, int, int]


def pieces_of(items: list[dict[str, Any]], chunk_tokens: int, whole: bool) -> list[Piece]:
    """Each item as the records it becomes: a message stays whole (so does any item when
    ``whole``: a caller gave its vector); a long document is cut into chunks."""
    out: list[Piece] = []
    for item in items:
        is_message = item.get("is_message", False) or item.get("role") is not None
        chunks = [item["text"]] if is_message or whole else segment.chunk(item["text"], chunk_tokens)
        for ci, text in enumerate(chunks):
            out.append((item, text, ci, len(chunks)))
    return out


def build_records(pieces: list[Piece], index_texts: list[str], vectors: np.ndarray,
                  importances: Sequence[float], *, user: str, agent: str | None,
                  session: str | None, metadata: Mapping[str, Any] | None, type: str | None,
                  now: datetime) -> list[tuple[Record, str]]:
    """The records (each with its index text) for embedded pieces."""
    records: list[tuple[Record, str]] = []
    for (item, text, ci, nchunks), itext, vec, importance in zip(
            pieces, index_texts, vectors, importances, strict=True):
        meta = dict(metadata or {})
        meta.update(item.get("metadata") or {})
        if nchunks > 1:
            meta.update({"chunk": ci, "chunks": nchunks})
        rec = Record(
            id=new_id(),
            user_id=user,
            agent_id=agent,
            session_id=session,
            level="turn",
            text=text,
            title=segment.derive_title(text),
            type=type or segment.derive_type(text, item.get("role")),
            summary=segment.derive_summary(text),
            metadata=meta,
            role=item.get("role"),
            speaker=item.get("speaker"),
            event_time=item.get("event_time") or now,
            created_at=now,
            updated_at=now,
            importance=float(importance),
            content_hash=content_hash(text),
            vector=vec,
        )
        records.append((rec, itext))
    return records


def lossy(core: Core, records: list[tuple[Record, str]]) -> list[tuple[Record, str]]:
    """``mode="lossy"``: keep vectors and metadata only. Nothing derived from the text
    is stored (title, summary, content hash, full text, entity mentions); the summary
    holds the inverter's reconstruction when one is shipped, and hits show it marked
    as reconstructed."""
    from latentmem.lifecycle.actions import reconstruct

    recon = reconstruct(core, np.stack([r.vector for r, _ in records if r.vector is not None]))
    return [(replace(r, text=None, title="", summary=text, content_hash=""), "")
            for (r, _), text in zip(records, recon, strict=True)]


def superseded(core: Core, supersedes: str | Sequence[str] | None, user: str) -> list[str]:
    """The ids a new memory replaces, each checked to be one of ``user``'s."""
    if supersedes is None:
        return []
    ids = check_ids(supersedes, "supersedes")
    for rid in ids:
        core.owned(rid, user)  # NotFoundError for unknown ids and other users' memories
    return list(dict.fromkeys(ids))


def add(core: Core, items: list[dict[str, Any]], *, user: str, agent: str | None,
        session: str | None, metadata: Mapping[str, Any] | None, type: str | None,
        importance: float | None, vector: np.ndarray | None,
        supersedes: str | Sequence[str] | None, started: float) -> Receipt:
    """Store validated items (``inputs.normalise_items``) as one all-or-nothing write.
    ``vector``: the caller's own vector for a single text (already checked)."""
    replaced = superseded(core, supersedes, user)
    now = datetime.now(UTC)
    pieces = pieces_of(items, core.config.storage.chunk_tokens, whole=vector is not None)
    index_texts = [index_text_for(text, item.get("speaker")) for item, text, _, _ in pieces]
    t_valid = time.perf_counter()
    cached_before = getattr(core.embedder, "hits", 0)
    if vector is not None:
        vectors = vector.reshape(1, -1)
    else:
        vectors = core.embedder.embed_batch(index_texts)
        if not np.isfinite(vectors).all():
            raise InvalidInputError("the embedder returned NaN or infinity; nothing was stored")
    cached = getattr(core.embedder, "hits", 0) - cached_before
    vectors = core.noised(vectors)
    t_embed = time.perf_counter()

    texts = [text for _, text, _, _ in pieces]
    if importance is not None:
        importances: Sequence[float] = [float(importance)] * len(pieces)
    elif core.config.lifecycle.controller:
        importances = core.controller.score_new(
            core.store, user, session, texts, [item.get("role") for item, _, _, _ in pieces], vectors)
    else:
        importances = [segment.importance_prior(text) for text in texts]
    records = build_records(pieces, index_texts, vectors, importances, user=user, agent=agent,
                            session=session, metadata=metadata, type=type, now=now)
    if core.config.storage.mode == "lossy":
        records = lossy(core, records)
    edges = [Edge(a.id, b.id, "next", 1.0, now)
             for (a, _), (b, _) in zip(records, records[1:], strict=False)]
    with core.lock:
        if session is not None:
            prev = core.store.last_in_session(Scope(user, agent, session))
            if prev is not None:
                edges.insert(0, Edge(prev, records[0][0].id, "next", 1.0, now))
        by_id = {r.id: r for r, _ in records}
        for e in [e for e in edges if e.type == "next"]:
            way = causal.direction(by_id[e.dst].text or "")
            if way:
                src, dst = (e.src, e.dst) if way > 0 else (e.dst, e.src)
                edges.append(Edge(src, dst, "causal", 1.0, now))
        # An add does not read the index, so one that finds it out of date (another
        # process wrote) does not rebuild it: the store gets the rows and the index stays
        # out of date, and the next search or write that reads it rebuilds it once, with
        # these rows. Rebuilding here made every add of several writing processes rebuild
        # the whole index: 4 processes added 0.3 memories a second into 1M (bench perf
        # --writers 4, BENCHMARKS.md). A writer that meets another between this check
        # and its insert is caught by claim_epoch, as before.
        current = core.index_current()
        if replaced:
            newest = records[-1][0]
            edges += [Edge(newest.id, old, "supersedes", 1.0, now) for old in replaced]
        rowids = core.store.insert(records, edges, supersede=replaced)
        t_store = time.perf_counter()
        if current:
            core.index_added(user, rowids, vectors)
    t_index = time.perf_counter()
    return Receipt(
        ids=[r.id for r, _ in records],
        timings_ms={
            "validate": (t_valid - started) * 1e3,
            "embed": (t_embed - t_valid) * 1e3,
            "store": (t_store - t_embed) * 1e3,
            "index": (t_index - t_store) * 1e3,
            "total": (t_index - started) * 1e3,
        },
        cached_embeddings=cached,
    )


def update(core: Core, id: str, changes: dict[str, Any], user_id: str | None) -> Record:
    """Apply checked ``changes``; new text is re-embedded and re-indexed, and history keeps
    the old text. With ``user_id``, a memory of another user is treated as absent."""
    with core.lock:
        old = core.owned(id, user_id)
        index_text = vector = None
        if "text" in changes:
            new_text = changes["text"]
            index_text = index_text_for(new_text, old.record.speaker)
            vector = core.embedder.embed_batch([index_text])[0]
            if not np.isfinite(vector).all():
                raise InvalidInputError("the embedder returned NaN or infinity; nothing changed")
            vector = core.noised(vector.reshape(1, -1))[0]
            changes.setdefault("title", segment.derive_title(new_text))
            changes["summary"] = segment.derive_summary(new_text)
            changes["content_hash"] = content_hash(new_text)
        core.sync_index()
        new = core.store.update(id, changes, index_text=index_text, vector=vector)
        if vector is not None:
            user = new.record.user_id
            core.index.remove(user, np.array([new.rowid]))
            core.index_added(user, [new.rowid], vector.reshape(1, -1))
    return new.record


def update_changes(text: Any, metadata: Any, event_time: object, importance: Any, title: Any,
                   type: Any, max_text_chars: int) -> dict[str, Any]:
    """The checked column changes of an ``update`` call."""
    from latentmem.inputs import normalise_items

    changes: dict[str, Any] = {}
    if text is not None:
        changes["text"] = normalise_items(text, {}, 1, max_text_chars)[0]["text"]
    if metadata is not None:
        changes["metadata"] = check_metadata(metadata)
    if event_time is not None:
        changes["event_time"] = parse_time(event_time)
    if importance is not None:
        if not (isinstance(importance, int | float) and 0.0 <= importance <= 1.0):
            raise InvalidInputError(f"importance must be in [0, 1], found {importance!r}")
        changes["importance"] = float(importance)
    for name, value in (("title", title), ("type", type)):
        if value is not None:
            if not isinstance(value, str) or (name == "type" and not value.strip()):
                raise InvalidInputError(f"{name} must be a{' non-empty' if name == 'type' else ''}"
                                        f" string, found {value.__class__.__name__}")
            changes[name] = check_chars(value, name)
    if not changes:
        raise InvalidInputError(
            "nothing to update: give text, metadata, event_time, importance, title or type")
    return changes


def import_records(core: Core, records: Sequence[Record], edges: Sequence[Edge],
                   on_conflict: str) -> int:
    """Insert fully formed records (ids, times and vectors kept) in one transaction; see
    ``Memory.import_records``."""
    if not isinstance(on_conflict, str) or on_conflict not in ("error", "skip"):
        raise InvalidInputError(f"on_conflict must be 'error' or 'skip', found {on_conflict!r}")
    for name, given in (("records", records), ("edges", edges)):
        if not isinstance(given, Sequence) or isinstance(given, str | bytes):
            raise InvalidInputError(f"{name} must be a list, found {given.__class__.__name__}")
    rows: list[tuple[Record, str]] = []
    for pos, rec in enumerate(records):
        check_record(rec, pos, core.dim)
        for clock in ("created_at", "updated_at"):  # kept as given: nothing to fill them from
            if getattr(rec, clock) is None:
                raise InvalidInputError(f"record {pos} ({rec.id}) has no {clock}; imported "
                                        "records keep their times, so each needs one")
        rows.append((rec, index_text_for(rec.text or "", rec.speaker)))
    edges = [check_edge(edge, pos) for pos, edge in enumerate(edges)]
    with core.lock:
        if on_conflict == "skip":
            existing = set()
            for rec, _ in rows:
                try:
                    core.store.get_row(rec.id)
                    existing.add(rec.id)
                except NotFoundError:
                    pass
            rows = [(r, t) for r, t in rows if r.id not in existing]
        core.sync_index()
        before = core.index.epoch
        rowids = core.store.insert(rows, edges, history_event="IMPORT")
        for (rec, _), rowid in zip(rows, rowids, strict=True):
            assert rec.vector is not None
            core.index.add(rec.user_id, np.array([rowid]), rec.vector.reshape(1, -1))
        core.claim_epoch(before)
    return len(rows)
