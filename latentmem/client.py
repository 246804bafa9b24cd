"""``Client``: the SDK over HTTP, for a store served by ``latentmem serve``.

Moving from embedded to server is one line: ``Memory(path)`` becomes
``Client(url, api_key)``. The verbs, their arguments and their return types are
``Memory``'s (``Receipt``, ``Hit``, ``Context``, ``Record`` with timezone-aware datetimes),
and the server's ``{"error": kind, "message": text}`` is raised as the latentmem exception
of that name, so ``except NotFoundError`` reads the same against either. What the key
scopes (its tenant and users) the server enforces; the client checks nothing it cannot
know, and only what the URL needs (a non-empty id) before sending.

Differences that the wire forces, each said where it applies: ``sleep`` returns the
report's dict, not a ``SleepReport``; ``delete`` of several ids is one request per id;
``all`` pages with the server's cursor and has no ``offset``; verbs that take ``user_id=``
to check ownership in ``Memory`` do not here (the key decides).

Chosen: one ``httpx.Client`` (keep-alive, timeouts, HTTP/1.1), synchronous like ``Memory``.
Rejected: a client generated from ``/openapi.json`` (it would return generated models,
not the SDK's dataclasses, and the two APIs would drift apart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from latentmem import errors
from latentmem.errors import InvalidInputError, LatentMemError, NotFoundError
from latentmem.types import Context, ContextItem, Hit, Receipt, Record

__all__ = ["Client", "ConnectionFailedError", "context_from_dict", "hit_from_dict",
           "record_from_dict"]

#: The server's sleep budget when a request gives none (``latentmem serve --sleep-budget``).
SERVER_SLEEP_BUDGET = 30.0
_TIME_FIELDS = ("event_time", "created_at", "updated_at", "valid_to", "last_accessed_at")
_RECORD_FIELDS = frozenset(Record.__dataclass_fields__) - {"vector"}


class ConnectionFailedError(LatentMemError, ConnectionError):
    """The server could not be reached, or did not answer in time. Nothing is known about
    whether a write that was under way took effect."""

    http_status = 503


# -- the wire format back into the SDK's types ---------------------------------------------------

def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    text = str(value)
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def _number(value: Any) -> float:
    """JSON has no NaN: the server sends null where the engine had one."""
    return math.nan if value is None else float(value)


def record_from_dict(data: Mapping[str, Any]) -> Record:
    """A ``Record`` from the server's JSON: ISO times parsed, ``vector`` (when sent) as
    float32. Fields this version does not know (a newer server's) are ignored."""
    values = {k: v for k, v in data.items() if k in _RECORD_FIELDS}
    for name in _TIME_FIELDS:
        values[name] = _time(values.get(name))
    for name in ("importance", "strength"):
        if name in values:
            values[name] = _number(values[name])
    vector = data.get("vector")
    return Record(**values, vector=None if vector is None else np.asarray(vector, dtype=np.float32))


def hit_from_dict(data: Mapping[str, Any]) -> Hit:
    relevance = data.get("relevance")
    return Hit(record_from_dict(data["record"]), _number(data.get("score")),
               {k: _number(v) for k, v in (data.get("components") or {}).items()},
               None if relevance is None else float(relevance))


def context_from_dict(data: Mapping[str, Any]) -> Context:
    known = frozenset(ContextItem.__dataclass_fields__)
    items = []
    for raw in data["items"]:
        item = {k: v for k, v in raw.items() if k in known}
        item["event_time"] = _time(item.get("event_time"))
        item["score"] = _number(item.get("score"))
        items.append(ContextItem(**item))
    return Context(query=data["query"], text=data["text"], budget_tokens=data["budget_tokens"],
                   used_tokens=data["used_tokens"], items=items,
                   omitted=list(data.get("omitted") or []), tokenizer=data["tokenizer"])


def _plain(value: Any) -> Any:
    """JSON-able request values: datetimes and dates as ISO-8601, arrays as lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _fields(**values: Any) -> dict[str, Any]:
    """A request body of the given values; None means "not given", as in ``Memory``."""
    return {k: _plain(v) for k, v in values.items() if v is not None}


def _id(id: object, what: str = "id") -> str:
    """An id fit for a URL path (an empty one would name another endpoint)."""
    if not isinstance(id, str) or not id:
        raise InvalidInputError(f"{what} must be a non-empty string, found {id!r}")
    return quote(id, safe="")


def _error(response: httpx.Response) -> LatentMemError:
    """The latentmem exception the server named, else ``LatentMemError``, with the
    answer's ``status`` and ``kind`` attached."""
    kind, message = None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        kind, message = body["error"], str(body.get("message", ""))
    cls = getattr(errors, kind, None) if kind else None
    if not (isinstance(cls, type) and issubclass(cls, LatentMemError)):
        cls = LatentMemError
    if message is None:
        message = (f"{response.request.method} {response.request.url} answered "
                   f"{response.status_code}: {response.text[:200]!r}")
    elif cls is LatentMemError:
        message = f"{kind} ({response.status_code}): {message}"
    exc = cls(message)
    exc.status = response.status_code  # type: ignore[attr-defined]
    exc.kind = kind  # type: ignore[attr-defined]
    return exc


# -- the client ----------------------------------------------------------------------------------

class Client:
    """``Memory``'s verbs against ``latentmem serve`` at ``url``.

    >>> m = Client("http://127.0.0.1:8765", "lm_...")             # doctest: +SKIP
    >>> m.add("I moved to Lisbon in May", user_id="ana")          # doctest: +SKIP
    >>> m.search("where does Ana live?", user_id="ana")[0].text   # doctest: +SKIP

    ``api_key``: a key from ``latentmem keys create`` (None for a server run with
    ``--insecure-no-auth``). ``timeout``: seconds to connect and to wait for each answer.
    One connection is kept alive between calls; ``close()`` (or ``with``) releases it.
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"url must start with http:// or https://, found {url!r}")
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise InvalidInputError("api_key must be a non-empty string, or None for a server "
                                    "without keys")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInputError(f"timeout must be a positive number of seconds, found {timeout!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        headers = {"Accept": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.strip()}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"  # never the key

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None, *,
              params: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body, params=params,
                                          timeout=self.timeout if timeout is None else timeout)
        except httpx.TimeoutException as exc:
            raise ConnectionFailedError(f"latentmem server at {self.url} did not answer "
                                        f"{method} {path} in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailedError(f"cannot reach the latentmem server at {self.url}: "
                                        f"{exc or type(exc).__name__}") from exc
        if response.is_error:
            raise _error(response)
        try:
            return response.json()
        except ValueError as exc:
            raise LatentMemError(f"{method} {path} on {self.url} answered "
                                 f"{response.status_code} with a body that is not JSON") from exc

    # -- write path ----------------------------------------------------------------------------

    def add(
        self,
        content: Any,
        user_id: str | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        event_time: object = None,
        metadata: Mapping[str, Any] | None = None,
        role: str | None = None,
        speaker: str | None = None,
        type: str | None = None,
        importance: float | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        supersedes: str | Sequence[str] | None = None,
    ) -> Receipt:
        """Remember text, a message, or a list of texts and messages (see ``Memory.add``).
        All or nothing."""
        if isinstance(content, str):
            payload: dict[str, Any] = {"text": content}
        elif isinstance(content, Mapping):
            payload = {"messages": [content]}
        elif isinstance(content, Sequence):
            payload = {"messages": [{"text": c} if isinstance(c, str) else c for c in content]}
        else:
            raise InvalidInputError(
                f"expected text, a message dict or a list of them; found {content.__class__.__name__}")
        payload.update(_fields(user_id=user_id, agent_id=agent_id, session_id=session_id,
                               event_time=event_time, metadata=metadata, role=role,
                               speaker=speaker, type=type, importance=importance, vector=vector,
                               supersedes=supersedes))
        data = self._call("POST", "/v1/add", _plain(payload))
        return Receipt(list(data["ids"]), dict(data["timings_ms"]), int(data.get("cached_embeddings", 0)))

    def update(
        self,
        id: str,
        text: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        event_time: object = None,
        importance: float | None = None,
        title: str | None = None,
        type: str | None = None,
    ) -> Record:
        """Change a memory; new text is re-embedded and history keeps the old text."""
        body = _fields(text=text, metadata=metadata, event_time=event_time,
                       importance=importance, title=title, type=type)
        return record_from_dict(self._call("PATCH", f"/v1/memories/{_id(id)}", body))

    def delete(self, ids: str | Sequence[str]) -> int:
        """Delete memories for good (see ``Memory.delete``); returns how many records went,
        merges derived from them included.

        The API deletes one id per request, so a list is checked first (each id must be a
        live memory the key may see, else ``NotFoundError`` and nothing is deleted), then
        deleted one request at a time: unlike ``Memory.delete`` it is not one transaction,
        and a failure part-way leaves the ids before it deleted."""
        id_list = [ids] if isinstance(ids, str) else list(ids)
        if not id_list:
            raise InvalidInputError("no ids given")
        paths = list(dict.fromkeys(f"/v1/memories/{_id(rid)}" for rid in id_list))
        if len(paths) > 1:
            for path in paths:
                self._call("GET", path)
        deleted = 0
        for path in paths:
            try:
                deleted += int(self._call("DELETE", path)["deleted"])
            except NotFoundError:
                if len(paths) == 1:
                    raise
                # Checked above, so gone since: a merge derived from an id deleted before
                # it, and counted there.
        return deleted

    def delete_all(self, user_id: str) -> int:
        """Delete every memory of one user, for good; returns how many."""
        return int(self._call("DELETE", f"/v1/users/{_id(user_id, 'user_id')}")["deleted"])

    def feedback(self, id: str, useful: bool) -> float:
        """Say whether a memory was useful; returns its new importance."""
        if not isinstance(useful, bool):
            raise InvalidInputError(f"useful must be True or False, found {useful!r}")
        _id(id)
        return _number(self._call("POST", "/v1/feedback", {"id": id, "useful": useful})["importance"])

    # -- read path -----------------------------------------------------------------------------

    def get(self, id: str, include_vector: bool = False) -> Record:
        params = {"vector": "true"} if include_vector else None
        return record_from_dict(self._call("GET", f"/v1/memories/{_id(id)}", params=params))

    def history(self, id: str) -> list[dict[str, Any]]:
        """Every ADD/UPDATE of a live memory, with ``at`` as a datetime (as ``Memory``)."""
        events = self._call("GET", f"/v1/memories/{_id(id)}/history")["events"]
        return [{**e, "at": _time(e.get("at"))} if "at" in e else e for e in events]

    def all(self, user_id: str | None = None, *, limit: int | None = None,
            page_size: int = 1000) -> list[Record]:
        """A user's memories, oldest first: every one, or the first ``limit``. Follows the
        server's cursor ``page_size`` records at a time (at most 1000 per page). A memory
        added or deleted while the pages are read may be missed or seen twice."""
        for name, value in (("limit", limit), ("page_size", page_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise InvalidInputError(f"{name} must be a positive integer, found {value!r}")
        records: list[Record] = []
        cursor = None
        while limit is None or len(records) < limit:
            want = page_size if limit is None else min(page_size, limit - len(records))
            params = _fields(user_id=user_id, limit=min(want, 1000), cursor=cursor)
            page = self._call("GET", "/v1/memories", params=params)
            records.extend(record_from_dict(r) for r in page["memories"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return records

    def search(
        self,
        query: str,
        user_id: str | None = None,
        *,
        k: int = 10,
        agent_id: str | None = None,
        session_id: str | None = None,
        as_of: object = None,
        now: object = None,
        threshold: float | None = None,
    ) -> list[Hit]:
        """Hybrid search inside one scope (see ``Memory.search``)."""
        body = _fields(query=query, user_id=user_id, k=k, agent_id=agent_id,
                       session_id=session_id, as_of=as_of, now=now, threshold=threshold)
        return [hit_from_dict(h) for h in self._call("POST", "/v1/search", body)["hits"]]

    def context(
        self,
        query: str,
        user_id: str | None = None,
        *,
        budget_tokens: int = 1000,
        agent_id: str | None = None,
        session_id: str | None = None,
        k: int | None = None,
        as_of: object = None,
        now: object = None,
        min_relevance: float | None = None,
    ) -> Context:
        """Pack the best memories for ``query``, verbatim and dated, into a token budget."""
        body = _fields(query=query, user_id=user_id, budget_tokens=budget_tokens,
                       agent_id=agent_id, session_id=session_id, k=k, as_of=as_of, now=now,
                       min_relevance=min_relevance)
        return context_from_dict(self._call("POST", "/v1/context", body))

    # -- lifecycle -----------------------------------------------------------------------------

    def sleep(self, budget: float | None = None, *,
              phases: Sequence[str] | None = None) -> dict[str, Any]:
        """Run one sleep cycle on the server and wait for it (an admin key's call: a cycle
        spans every user). Returns the report as a dict (``cycle``, ``seconds``, ``phases``),
        the ``to_dict()`` of what ``Memory.sleep`` returns. Without ``budget`` the server's
        own budget applies (30 s unless ``serve`` was told otherwise), not none."""
        wait = budget if isinstance(budget, int | float) and budget > 0 else SERVER_SLEEP_BUDGET
        body = _fields(budget=budget, phases=None if phases is None else list(phases))
        return dict(self._call("POST", "/v1/sleep", body or None, timeout=self.timeout + wait))

    def explain(self, id: str) -> list[dict[str, Any]]:
        """What the lifecycle did to a memory, and why."""
        return list(self._call("GET", f"/v1/memories/{_id(id)}/explain")["events"])

    def undo(self, event: int) -> dict[str, Any]:
        """Reverse a journaled lifecycle action."""
        if isinstance(event, bool) or not isinstance(event, int):
            raise InvalidInputError(f"event must be an integer, found {event!r}")
        return dict(self._call("POST", "/v1/undo", {"event": event}))

    def stats(self) -> dict[str, Any]:
        """The key's users and their memory counts (``records``, ``users``, ``per_user``);
        an admin key without a tenant gets the store's, as ``Memory.stats``."""
        return dict(self._call("GET", "/v1/stats"))
