"""Validating and normalising what callers hand to ``Memory``.

Everything here runs before a transaction opens, so bad input is refused with
a clear message and the store is left exactly as it was.

Text that reaches the store is held to what every backend keeps and gives back unchanged
(``check_chars``): no NUL (PostgreSQL's text and jsonb refuse it) and no lone surrogate
(not Unicode: it has no UTF-8 form, and SQLite's driver raised ``UnicodeEncodeError``
mid-call). Metadata is held to JSON (``check_metadata``); the encoder's own errors
(``TypeError``, a ``RecursionError`` at ~1,000 levels, ``ValueError`` for a cycle) are
what callers got before.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from latentmem.errors import InputTooLargeError, InvalidInputError
from latentmem.retrieve.timeparse import parse_time
from latentmem.types import EDGE_TYPES, LEVELS, Edge, Record

MAX_ID_CHARS = 256
MAX_METADATA_DEPTH = 100  # far deeper than real metadata; far under the JSON encoder's limit
INT_RANGE = 1 << 63  # integers in metadata fit 64 bits, as an export's reader wants them

Content = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def index_text_for(text: str, speaker: str | None) -> str:
    """What is embedded and BM25-indexed: the speaker matters for "what did Ana say"."""
    return f"{speaker}: {text}" if speaker else text


def shown(value: object) -> str:
    """``repr(value)``, cut short: an error message must not carry a 1 MB argument back."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def check_chars(value: str, what: str) -> str:
    """``value``, if every backend can store it as it is (see the module docstring)."""
    if "\x00" in value:
        raise InvalidInputError(f"{what} contains a NUL character; expected text without U+0000")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what} contains a lone surrogate (U+{ord(value[exc.start]):04X} at position "
            f"{exc.start}); expected valid Unicode text") from None
    return value


def check_scope_value(name: str, value: object, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidInputError(f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{name} must be a non-empty string, found {shown(value)}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidInputError(f"{name} is {len(value)} characters; the limit is {MAX_ID_CHARS}")
    return check_chars(value, name)


def check_count(name: str, value: object, low: int) -> int:
    """A whole number from ``low`` that a database's LIMIT or OFFSET takes (64 bits)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < INT_RANGE:
        raise InvalidInputError(f"{name} must be an integer from {low} to 2**63 - 1, found "
                                f"{shown(value)}")
    return value


def check_share(name: str, value: object) -> float | None:
    """None, or a number in [0, 1] (a threshold on calibrated relevance)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidInputError(f"{name} must be a number in [0, 1], found {shown(value)}")
    return float(value)


def check_id(value: object, what: str = "id") -> str:
    """A memory id as a caller names it (ids are never longer than ``MAX_ID_CHARS``)."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} must be a non-empty string, found {shown(value)}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidInputError(f"{what} is {len(value)} characters; the limit is {MAX_ID_CHARS}")
    return check_chars(value, what)


def check_ids(ids: object, what: str = "ids") -> list[str]:
    """One id, or any collection of them, as a list; at least one."""
    if isinstance(ids, str):
        return [check_id(ids, "id")]
    if not isinstance(ids, Iterable) or isinstance(ids, bytes | bytearray | Mapping):
        raise InvalidInputError(f"{what}: expected an id or a list of ids, found "
                                f"{type(ids).__name__}")
    id_list = [check_id(rid, "id") for rid in ids]
    if not id_list:
        raise InvalidInputError("no ids given")
    return id_list


def check_metadata(meta: object, what: str = "metadata") -> dict[str, Any] | None:
    """A copy of ``meta`` if it is a JSON object every backend stores and reads back the
    same: string keys, no NaN or infinity, text as ``check_chars`` wants it, at most
    ``MAX_METADATA_DEPTH`` levels (which also refuses one that holds itself)."""
    if meta is None:
        return None
    if not isinstance(meta, Mapping):
        raise InvalidInputError(f"{what} must be a dict, found {type(meta).__name__}")
    stack: list[tuple[object, str, int]] = [(meta, what, 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            check_chars(value, where)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"{where} is {value}; JSON has no NaN or infinity")
        elif isinstance(value, int) and not isinstance(value, bool) \
                and not -INT_RANGE <= value < INT_RANGE:
            raise InvalidInputError(f"{where} is an integer outside 64 bits")
        elif isinstance(value, Mapping | list | tuple):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(f"{what} is nested more than {MAX_METADATA_DEPTH} levels "
                                        "deep, or holds itself")
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in items:
                if isinstance(value, Mapping):
                    if not isinstance(key, str):
                        raise InvalidInputError(f"{where}: keys must be strings, found "
                                                f"{type(key).__name__} {shown(key)}")
                    check_chars(key, f"a key of {where}")
                stack.append((item, f"{where}[{shown(key)}]", depth + 1))
        elif value is not None and not isinstance(value, bool | int | float):
            raise InvalidInputError(f"{where}: expected JSON values (text, numbers, true, false, "
                                    f"null, lists, dicts), found {type(value).__name__}")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:  # what the walk above let through
        raise InvalidInputError(f"{what} cannot be stored as JSON: {exc}") from None
    return dict(meta)


def check_vector(vector: object, dim: int, what: str = "vector") -> np.ndarray:
    """A unit-length float32 copy of ``vector``: ``dim`` real numbers, finite as float32.
    Normalised in float64: in float32 the norm overflows past ~1e19, and dividing by it
    gave a vector of zeros. Complex numbers, booleans and strings of digits are refused,
    not converted (NumPy drops an imaginary part with only a warning)."""
    try:
        arr = np.asarray(vector)
        if arr.dtype.kind not in "fiu":
            raise TypeError(arr.dtype)
        with np.errstate(over="ignore"):
            arr = arr.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what}: expected {dim} numbers, found {type(vector).__name__}") from exc
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise InvalidInputError(f"{what}: expected shape ({dim},), found {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{what}: contains NaN or infinity (as float32)")
    wide = arr.astype(np.float64)
    norm = float(np.linalg.norm(wide))
    if norm == 0.0:
        raise InvalidInputError(f"{what}: is all zeros")
    return (wide / norm).astype(np.float32)


def normalise_items(
content: Content, defaults: dict[str, Any], max_batch: int, max_text_chars: int
) -> list[dict[str, Any]]:
    """Validate ``add`` input and turn it into one dict per item. Raises before anything is
    written; messages name the item and say what was expected."""
    if isinstance(content, str | Mapping):
        raw: list[Any] = [content]
    elif isinstance(content, Sequence):
        raw = list(content)
    else:
        raise InvalidInputError(
            f"expected text, a message dict or a list of them; found {type(content).__name__}"
        )
    if not raw:
        raise InvalidInputError("nothing to add: the list is empty")
    if len(raw) > max_batch:
        raise InputTooLargeError(
            f"{len(raw)} items in one add; the limit is {max_batch}"
        )
    items = []
    for pos, entry in enumerate(raw):
        where = f"item {pos}" if len(raw) > 1 else "text"
        pre = f"item {pos}: " if len(raw) > 1 else ""
        item: dict[str, Any]
        if isinstance(entry, str):
            item = {"text": entry}
        elif isinstance(entry, Mapping):
            text = entry.get("content", entry.get("text"))
            if text is None:
                raise InvalidInputError(f"{where}: a message needs 'content' (or 'text')")
            item = {
                "text": text,
                "role": entry.get("role"),
                "speaker": entry.get("name", entry.get("speaker")),
                "event_time": entry.get("event_time", entry.get("timestamp")),
                "metadata": entry.get("metadata"),
                "is_message": "role" in entry,
            }
        else:
            raise InvalidInputError(
                f"{where}: expected text or a message dict, found {type(entry).__name__}"
            )
        text = item["text"]
        if not isinstance(text, str):
            raise InvalidInputError(f"{pre}text must be a string, found {type(text).__name__}")
        if not text.strip():
            raise InvalidInputError(f"{pre}text is empty (expected at least one non-space character)")
        if len(text) > max_text_chars:
            raise InputTooLargeError(
                f"{where}: {len(text)} characters; the limit is {max_text_chars} "
                "(config max_text_chars)"
            )
        check_chars(text, f"{pre}text")
        for key, value in defaults.items():  # checked below like the item's own values
            if item.get(key) is None:
                item[key] = value
        for key in ("role", "speaker"):
            value = item.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_ID_CHARS):
                raise InvalidInputError(f"{where}: {key} must be a short string, found "
                                        f"{shown(value)}")
            if value is not None:
                check_chars(value, f"{where}: {key}")
        item["metadata"] = check_metadata(item.get("metadata"), f"{where}: metadata")
        item["event_time"] = parse_time(item.get("event_time"), f"{where}: event_time")
        items.append(item)
    return items


def is_unit_f32(vector: np.ndarray, dim: int) -> bool:
    """Vectors read back from an export are used bit for bit, not renormalised."""
    return (
        isinstance(vector, np.ndarray)
        and vector.dtype == np.float32
        and vector.shape == (dim,)
        and bool(np.isfinite(vector).all())
        and abs(float(np.linalg.norm(vector.astype(np.float64))) - 1.0) < 1e-3
    )


_RECORD_IDS = ("agent_id", "session_id")
_RECORD_TEXTS = ("level", "title", "type", "summary", "content_hash")
_RECORD_TIMES = ("event_time", "created_at", "updated_at", "valid_to", "last_accessed_at")


def check_record(rec: object, pos: int, dim: int) -> Record:
    """A fully formed record a caller imports (``Memory.import_records``), held to what the
    engine itself writes, as an export file's reader holds it (store/formats/records.py):
    anything else would fail in the transaction, or be stored and fail every later read
    (a time past 9999). Its times are made timezone-aware and its vector unit-length."""
    if not isinstance(rec, Record):
        raise InvalidInputError(f"record {pos}: expected a Record, found {type(rec).__name__}")
    where = f"record {pos} ({shown(rec.id)})"
    check_id(rec.id, f"record {pos}: id")
    check_scope_value(f"{where}: user_id", rec.user_id, required=True)
    for name in _RECORD_IDS:
        check_scope_value(f"{where}: {name}", getattr(rec, name))
    for name in ("parent_id", "superseded_by"):
        if getattr(rec, name) is not None:
            check_id(getattr(rec, name), f"{where}: {name}")
    for name in ("text", "role", "speaker", *_RECORD_TEXTS):
        value = getattr(rec, name)
        if value is None and name in ("text", "role", "speaker"):
            continue
        if not isinstance(value, str):
            raise InvalidInputError(f"{where}: {name} must be a string, found "
                                    f"{type(value).__name__}")
        check_chars(value, f"{where}: {name}")
    if rec.level not in LEVELS:
        raise InvalidInputError(f"{where}: level must be one of {list(LEVELS)}, found "
                                f"{shown(rec.level)}")
    for name in _RECORD_TIMES:
        setattr(rec, name, parse_time(getattr(rec, name), f"{where}: {name}"))
    for name, top in (("importance", 1.0), ("strength", 1e6)):
        value = getattr(rec, name)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not (math.isfinite(value) and 0.0 <= value <= top):
            raise InvalidInputError(f"{where}: {name} must be a number from 0 to {top:g}, "
                                    f"found {shown(value)}")
    if isinstance(rec.access_count, bool) or not isinstance(rec.access_count, int) \
            or not 0 <= rec.access_count < INT_RANGE:
        raise InvalidInputError(f"{where}: access_count must be a whole number from 0, found "
                                f"{shown(rec.access_count)}")
    if rec.metadata is None:
        raise InvalidInputError(f"{where}: metadata must be a dict, found None")
    rec.metadata = check_metadata(rec.metadata, f"{where}: metadata") or {}
    if not isinstance(rec.sources, list):
        raise InvalidInputError(f"{where}: sources must be a list of ids")
    for source in rec.sources:
        check_id(source, f"{where}: each of sources")
    if rec.vector is None:
        raise InvalidInputError(f"{where} has no vector")
    if not is_unit_f32(rec.vector, dim):
        rec.vector = check_vector(rec.vector, dim, f"{where} vector")
    return rec


def check_edge(edge: object, pos: int) -> Edge:
    """An edge a caller imports, held to what the engine writes (see ``check_record``)."""
    if not isinstance(edge, Edge):
        raise InvalidInputError(f"edge {pos}: expected an Edge, found {type(edge).__name__}")
    check_id(edge.src, f"edge {pos}: src")
    check_id(edge.dst, f"edge {pos}: dst")
    if edge.type not in EDGE_TYPES:
        raise InvalidInputError(f"edge {pos}: type must be one of {list(EDGE_TYPES)}, found "
                                f"{shown(edge.type)}")
    weight = edge.weight
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise InvalidInputError(f"edge {pos}: weight must be a finite number, found {shown(weight)}")
    return Edge(edge.src, edge.dst, edge.type, float(weight),
                parse_time(edge.created_at, f"edge {pos}: created_at"))
