"""The one gate between a caller and the engine: every front (REST, MCP, the chat proxy)
acts through a ``Scoped`` view, never through ``Memory`` directly.

``Scoped(mem, principal)`` has the SDK's verbs, restricted to what the principal may touch
(latentmem/tenancy.py): user ids in requests are the caller's and are stored inside the
tenant; user ids in answers are the caller's again; a memory, event or history outside the
scope is answered exactly like one that does not exist (``NotFoundError`` with the same
message), so ids cannot be probed; a read-only principal cannot write. Putting the checks
here once, rather than in each route, tool and proxy handler, is what lets the isolation
property test (tests/test_server_isolation.py) cover all three fronts.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from typing import Any

from latentmem.errors import InvalidInputError, NotFoundError
from latentmem.memory import Memory
from latentmem.tenancy import Principal
from latentmem.types import Context, Edge, Hit, Receipt, Record

MAX_PAGE = 1000
MAX_DEPTH = 3  # edges a graph request may walk out from its memory
MAX_INVERTED = 20  # lossy memories a timeline page inverts (each runs the inverter)
CYCLES_SHOWN = 10
JOURNAL_SCAN = 5000  # newest events scanned for the sleep cycles' summaries


def _missing(id: object) -> NotFoundError:
    return NotFoundError(f"no memory with id {id!r}")


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        kind, _, value = text.partition(":")
        offset = int(value)
        if kind != "o" or offset < 0 or not value.isdigit():
            raise ValueError(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cursor {cursor!r} is not one this server gave") from exc
    return offset


class Scoped:
    """``Memory``'s verbs for one principal (see the module docstring)."""

    def __init__(self, mem: Memory, principal: Principal) -> None:
        self.mem = mem
        self.who = principal

    # -- translation -------------------------------------------------------------------------

    def _out(self, record: Record) -> Record:
        return dataclasses.replace(record, user_id=self.who.outer(record.user_id))

    def _hit(self, hit: Hit) -> Hit:
        return dataclasses.replace(hit, record=self._out(hit.record))

    def _event(self, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("user_id") is not None:
            event = {**event, "user_id": self.who.outer(str(event["user_id"]))}
        return event

    def _owned(self, id: object, include_vector: bool = False) -> Record:
        """A live memory inside the scope; anything else is the same 404."""
        if not isinstance(id, str) or not id:
            raise InvalidInputError(f"id must be a non-empty string, found {id!r}")
        try:
            record = self.mem.get(id, include_vector)
        except NotFoundError:
            raise _missing(id) from None
        if not self.who.sees(record.user_id):
            raise _missing(id)
        return record

    # -- writes ------------------------------------------------------------------------------

    def add(self, content: Any, user_id: str | None = None, **fields: Any) -> Receipt:
        self.who.writable()
        user = self.who.user(user_id)
        supersedes = fields.get("supersedes")
        if supersedes is not None:
            for rid in [supersedes] if isinstance(supersedes, str) else supersedes:
                self._owned(rid)
        return self.mem.add(content, user, **fields)

    def update(self, id: str, text: str | None = None, **changes: Any) -> Record:
        self.who.writable()
        record = self._owned(id)
        return self._out(self.mem.update(id, text, user_id=record.user_id, **changes))

    def delete(self, ids: str | Sequence[str]) -> int:
        self.who.writable()
        id_list = [ids] if isinstance(ids, str) else list(ids)
        if not id_list:
            raise InvalidInputError("no ids given")
        owners = {self._owned(rid).user_id for rid in id_list}
        return self.mem.delete(id_list, user_id=owners.pop() if len(owners) == 1 else None)

    def delete_user(self, user_id: str) -> int:
        """Every memory of one user, for good (``Memory.delete``: text, vectors, edges,
        merges derived from them, history texts). 0 when the user has none."""
        self.who.writable()
        return self.mem.delete_all(self.who.user(user_id))

    def feedback(self, id: str, useful: bool) -> float:
        self.who.writable()
        record = self._owned(id)
        return self.mem.feedback(id, useful, user_id=record.user_id)

    def undo(self, event: int) -> dict[str, Any]:
        self.who.writable()
        if isinstance(event, bool) or not isinstance(event, int):
            raise InvalidInputError(f"event must be an integer, found {event!r}")
        try:
            found, _ = self.mem.store.event(event)
        except NotFoundError:
            found = None
        if found is None or found.user_id is None or not self.who.sees(found.user_id):
            raise NotFoundError(f"no lifecycle event #{event}")
        return self._event(self.mem.undo(event, user_id=found.user_id))

    def sleep(self, budget: float | None = None, phases: Sequence[str] | None = None) -> Any:
        self.who.writable()
        self.who.administrator()  # a cycle runs over every user of the store
        return self.mem.sleep(budget, phases=phases)

    def import_records(self, user_id: str, records: Sequence[Record], edges: Sequence[Edge] = (),
                       on_conflict: str = "error") -> int:
        """Records of an export, all made this user's (whatever user they had); edges must
        join two of the imported records."""
        self.who.writable()
        user = self.who.user(user_id)
        ids = {r.id for r in records}
        for edge in edges:
            if edge.src not in ids or edge.dst not in ids:
                raise InvalidInputError(f"edge {edge.src} -> {edge.dst} leaves the imported "
                                        "records; an import's edges join its own records")
        mine = [dataclasses.replace(r, user_id=user) for r in records]
        return self.mem.import_records(mine, edges, on_conflict=on_conflict)

    # -- reads -------------------------------------------------------------------------------

    def get(self, id: str, include_vector: bool = False) -> Record:
        return self._out(self._owned(id, include_vector))

    def history(self, id: str) -> list[dict[str, Any]]:
        """A live memory's ADD/UPDATE events (a deleted memory's owner is not kept with its
        history, so a scoped caller cannot see it)."""
        record = self._owned(id)
        return self.mem.history(id, user_id=record.user_id)

    def explain(self, id: str) -> list[dict[str, Any]]:
        if not isinstance(id, str) or not id:
            raise InvalidInputError("id must be a non-empty string")
        events = [e for e in self.mem.store.events(record_id=id)
                  if e.user_id is not None and self.who.sees(e.user_id)]
        if not events:
            raise NotFoundError(f"the lifecycle has no event about {id!r}")
        return [self._event(e.to_dict()) for e in events]

    def page(self, user_id: str | None = None, *, limit: int = 100, cursor: str | None = None,
             agent_id: str | None = None, session_id: str | None = None
             ) -> tuple[list[Record], str | None]:
        """One page of a user's memories, oldest event first, and the cursor of the next
        page (None at the end). The cursor is an offset: a page may repeat or skip a memory
        that was added or deleted between two calls."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInputError(f"limit must be an integer in [1, {MAX_PAGE}], found {limit!r}")
        offset = decode_cursor(cursor)
        user = self.who.user(user_id)
        records = self.mem.all(user, agent_id=agent_id, session_id=session_id, limit=limit + 1,
                               offset=offset)
        more = len(records) > limit
        page = [self._out(r) for r in records[:limit]]
        return page, encode_cursor(offset + limit) if more else None

    def search(self, query: str, user_id: str | None = None, **options: Any) -> list[Hit]:
        return [self._hit(h) for h in self.mem.search(query, self.who.user(user_id), **options)]

    def context(self, query: str, user_id: str | None = None, **options: Any) -> Context:
        return self.mem.context(query, self.who.user(user_id), **options)

    def export(self, user_id: str) -> tuple[list[Record], list[Edge]]:
        records, edges = self.mem.export_rows(self.who.user(user_id))
        return [self._out(r) for r in records], edges

    def stats(self) -> dict[str, Any]:
        """Store-wide for an admin key; else this key's users and their counts."""
        if self.who.admin and self.who.tenant is None:
            return self.mem.stats()
        per_user = {self.who.outer(u): n for u, n in self.mem.store.users() if self.who.sees(u)}
        out: dict[str, Any] = {"tenant": self.who.tenant, "records": sum(per_user.values()),
                               "users": len(per_user), "per_user": per_user}
        if self.who.admin:
            out["store"] = self.mem.stats()
        return out

    def users(self) -> list[str]:
        return sorted(self.who.outer(u) for u, _ in self.mem.store.users() if self.who.sees(u))


    # -- the web explorer's reads (latentmem/server/ui/, routes in server/explore.py) --------

    def timeline(self, user_id: str | None = None, *, limit: int = 200,
                 cursor: str | None = None) -> dict[str, Any]:
        """One page of a user's memories by event time, with the text the inverter reads
        back from the vector of each lossy (vector-only) memory on it."""
        user = self.who.user(user_id)
        page, after = self.page(user_id, limit=limit, cursor=cursor)
        lossy = [r for r in page if r.text is None]
        inverted: dict[str, str] = {}
        note = None
        if lossy and self.mem.inverter() is None:
            note = (f"no shipped inverter reads {self.mem.embedder.name} vectors, so lossy "
                    "memories show their summary only")
        elif lossy:
            for record in lossy[:MAX_INVERTED]:
                inverted[record.id] = self.mem.invert(record.id, steps=0, user_id=user)
            if len(lossy) > MAX_INVERTED:
                note = f"only the first {MAX_INVERTED} lossy memories of a page are inverted"
        return {"user_id": self.who.outer(user), "memories": [r.to_dict() for r in page],
                "inverted": inverted, "inversion_note": note, "next_cursor": after}

    def graph(self, id: str, depth: int = 1, limit: int = 60) -> dict[str, Any]:
        """The memories within ``depth`` edges of one memory (at most ``limit``), with the
        edges between them. Archived ends of an edge (a consolidation's sources) are shown
        but not expanded; what lies outside the scope is left out."""
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
            raise InvalidInputError(f"depth must be an integer in [1, {MAX_DEPTH}], found {depth!r}")
        center = self._owned(id)
        user = center.user_id
        nodes: dict[str, tuple[Record, str]] = {id: (center, "live")}
        edges: set[Edge] = set()
        frontier, truncated = [id], False
        for _ in range(depth):
            reached: list[str] = []
            for nid in frontier:
                for edge in self.mem.edges(nid, user_id=user):
                    other = edge.dst if edge.src == nid else edge.src
                    if other not in nodes:
                        if len(nodes) >= limit:
                            truncated = True
                            continue
                        found = self._neighbour(other, user)
                        if found is None:
                            continue
                        nodes[other] = found
                        if found[1] == "live":
                            reached.append(other)
                    edges.add(edge)
            frontier = reached
        return {"id": id, "depth": depth, "truncated": truncated,
                "nodes": [{**self._out(r).to_dict(), "state": state} for r, state in nodes.values()],
                "edges": [{"src": e.src, "dst": e.dst, "type": e.type, "weight": e.weight}
                          for e in sorted(edges, key=lambda e: (e.src, e.dst, e.type))
                          if e.src in nodes and e.dst in nodes]}

    def _neighbour(self, id: str, user: str) -> tuple[Record, str] | None:
        try:
            return self.mem.get(id, user_id=user), "live"
        except NotFoundError:
            archived = self.mem.store.archived(id)
            if archived is None or archived[0].user_id != user:
                return None  # deleted for good, or another user's
            return dataclasses.replace(archived[0], vector=None), "archived"

    def journal(self, user_id: str | None = None, limit: int = 200) -> dict[str, Any]:
        """A user's lifecycle events, newest first, grouped by sleep cycle; an admin key
        also gets each cycle's store-wide summary. ``preloaded``: the user's memories that
        the last cycle predicted and warmed."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInputError(f"limit must be an integer in [1, {MAX_PAGE}], found {limit!r}")
        user = self.who.user(user_id)
        cycles: dict[str | None, dict[str, Any]] = {}
        for event in self.mem.journal(limit, user_id=user):
            group = cycles.setdefault(event["cycle"], {"cycle": event["cycle"], "at": event["at"],
                                                       "summary": None, "events": []})
            group["events"].append(self._event(event))
        if self.who.admin:
            for sleep in self.cycles(CYCLES_SHOWN):
                group = cycles.setdefault(sleep["cycle"], {"cycle": sleep["cycle"],
                                                           "at": sleep["at"], "events": []})
                group["summary"] = sleep["reason"]
        ordered = sorted(cycles.values(), key=lambda c: c["at"] or "", reverse=True)
        rowids = sorted(self.mem.preloaded.get(user, ()))
        preloaded = []
        for rid in self.mem.store.ids_of(rowids).values() if rowids else ():
            try:
                record = self.mem.get(rid, user_id=user)
            except NotFoundError:
                continue  # deleted or archived since the cycle warmed it
            preloaded.append({"id": rid, "text": record.text if record.text is not None
                              else record.summary})
        return {"user_id": self.who.outer(user), "cycles": ordered, "preloaded": preloaded}

    def cycles(self, count: int) -> list[dict[str, Any]]:
        """The newest sleep cycles' store-wide summaries (admin keys)."""
        self.who.administrator()
        found = []
        for event in self.mem.store.events(limit=JOURNAL_SCAN, newest_first=True):
            if event.action == "sleep" and event.cycle:
                found.append(event.to_dict())
                if len(found) == count:
                    break
        return found

    def health(self, user_id: str | None = None) -> dict[str, Any]:
        """A user's memories counted per level and per tier (lossless: text and vector;
        lossy: vector only), what one costs; an admin key also gets the store's figures,
        the controller's state and the last sleep cycles."""
        user = self.who.user(user_id)
        records = self.mem.all(user)
        levels: dict[str, dict[str, int]] = {}
        text_bytes = superseded = 0
        for record in records:
            tier = "lossy" if record.text is None else "lossless"
            counts = levels.setdefault(record.level, {"lossless": 0, "lossy": 0})
            counts[tier] += 1
            text_bytes += len((record.text or "").encode())
            superseded += record.superseded_by is not None
        codec = self.mem.store.codec
        vector_bytes = {"fp32": 4 * codec.dim, "fp16": 2 * codec.dim,
                        "int8": codec.dim + 4}.get(codec.tier) or codec.pq_bytes
        n = len(records)
        out: dict[str, Any] = {
            "user_id": self.who.outer(user), "memories": n,
            "sessions": len({r.session_id for r in records if r.session_id}),
            "superseded": superseded, "levels": levels,
            "tiers": {t: sum(c[t] for c in levels.values()) for t in ("lossless", "lossy")},
            "embedder": self.mem.embedder.name, "dim": self.mem.dim, "vector_tier": codec.tier,
            "text_bytes_per_memory": text_bytes / n if n else None,
            "vector_bytes_per_memory": vector_bytes, "sleep": None, "controller": None,
            "store": None, "cycles": None}
        if self.who.admin:
            stats = self.mem.stats()
            out["store"] = {k: stats[k] for k in ("records", "users", "db_bytes", "index_bytes",
                                                  "bytes_per_memory", "index_vectors")}
            state = self.mem.controller.state()
            out["controller"] = {k: state[k] for k in ("features", "weights", "events",
                                                       "packed_n", "population_n")}
            out["cycles"] = self.cycles(CYCLES_SHOWN)
        return out

    def audit_inversion(self, user_id: str | None = None, limit: int = 20,
                        steps: int = 0) -> dict[str, Any]:
        """``Memory.audit_inversion`` for one of the key's users."""
        user = self.who.user(user_id)
        report = self.mem.audit_inversion(user_id=user, limit=limit, steps=steps)
        return {**report, "user_id": self.who.outer(user)}
