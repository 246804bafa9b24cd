"""Records as plain data, and the manifest every export carries.

A record becomes a JSON-able dict of every ``Record`` field except the
vector (times as ISO-8601 strings); the vector travels separately, as float32,
in whatever container the format uses. ``record_from_dict`` is the strict
inverse: unknown keys, missing keys and wrong types are refused with the field
named, so a hand-edited file cannot slip half-read data into a store. What each
field may hold is then checked once, for every import, by ``inputs.check_record``
and ``inputs.check_edge`` (the rules of ``Memory.import_records``); here, only
what is needed to build the ``Record`` without guessing: no value is coerced
(``str()`` of a list is not an id), and a time must be ISO-8601 within years 1 to
9999.

The manifest counts the records (and, since exports carry it, the edges), so a
file cut short at a line boundary is refused rather than imported in part.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from latentmem.errors import ConflictError, InvalidInputError
from latentmem.inputs import shown
from latentmem.types import Edge, Record, iso

FORMAT_NAME = "latentmem-export"
FORMAT_VERSION = 1
_TIME_FIELDS = ("event_time", "created_at", "updated_at", "valid_to", "last_accessed_at")
_FIELDS = [f.name for f in fields(Record) if f.name != "vector"]
_REQUIRED = ("id", "user_id", "text")


def manifest(embedder: str, dim: int, count: int, edges: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "embedder": embedder,
        "dim": dim,
        "count": count,
        "exported_at": datetime.now(UTC).isoformat(),
    }
    if edges is not None:
        out["edges"] = edges
    return out


def check_manifest(found: Any, embedder: str, dim: int, source: str) -> dict[str, Any]:
    if not isinstance(found, dict) or found.get("format") != FORMAT_NAME:
        raise InvalidInputError(f"{source}: not a latentmem export (no '{FORMAT_NAME}' manifest)")
    if found.get("version") != FORMAT_VERSION:
        raise InvalidInputError(
            f"{source}: export format version {shown(found.get('version'))}; expected "
            f"{FORMAT_VERSION}"
        )
    if found.get("embedder") != embedder or found.get("dim") != dim:
        raise ConflictError(
            f"{source}: vectors come from {shown(found.get('embedder'))} "
            f"({shown(found.get('dim'))}-d) but this store uses {embedder!r} ({dim}-d)"
        )
    return found


def check_counts(found: dict[str, Any], records: int, edges: int, source: str) -> None:
    """The manifest's counts against what the file held: a shortfall means a cut file."""
    for key, held, what in (("count", records, "records"), ("edges", edges, "edges")):
        claimed = found.get(key)
        if key == "edges" and claimed is None:
            continue  # exports written before the manifest counted edges
        if claimed != held:
            raise InvalidInputError(f"{source}: the manifest says {shown(claimed)} {what}; "
                                    f"the file holds {held} (cut short or edited?)")


def record_to_dict(record: Record) -> dict[str, Any]:
    return record.to_dict(include_vector=False)


def _time(value: Any, name: str, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: {name} must be an ISO-8601 string or null")
    try:
        parsed = datetime.fromisoformat(value)
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        parsed.timestamp()
    except (ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{where}: {name} {shown(value)} is not an ISO-8601 time "
                                "within years 1 to 9999") from exc
    return parsed


def record_from_dict(data: Any, vector: np.ndarray, where: str) -> Record:
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where}: expected an object, found {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise InvalidInputError(f"{where}: unknown fields {unknown}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise InvalidInputError(f"{where}: missing fields {missing}")
    values = dict(data)
    for name in _TIME_FIELDS:
        values[name] = _time(values.get(name), name, where)
    if not isinstance(values.get("metadata", {}), dict):
        raise InvalidInputError(f"{where}: metadata must be an object")
    if not isinstance(values.get("sources", []), list):
        raise InvalidInputError(f"{where}: sources must be a list")
    for name in ("id", "user_id"):
        if not isinstance(values[name], str) or not values[name]:
            raise InvalidInputError(f"{where}: {name} must be a non-empty string")
    return Record(**values, vector=np.asarray(vector, dtype=np.float32))


def edge_to_dict(edge: Edge) -> dict[str, Any]:
    return {
        "src": edge.src,
        "dst": edge.dst,
        "type": edge.type,
        "weight": edge.weight,
        "created_at": iso(edge.created_at),
    }


def edge_from_dict(data: Any, where: str) -> Edge:
    if not isinstance(data, dict) or not {"src", "dst", "type"} <= set(data):
        raise InvalidInputError(f"{where}: an edge needs src, dst and type")
    unknown = sorted(set(data) - {"src", "dst", "type", "weight", "created_at"})
    if unknown:
        raise InvalidInputError(f"{where}: unknown fields {unknown}")
    for name in ("src", "dst", "type"):
        if not isinstance(data[name], str):
            raise InvalidInputError(f"{where}: edge {name} must be a string, found "
                                    f"{type(data[name]).__name__}")
    weight = data.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or abs(weight) > 1e300:
        raise InvalidInputError(f"{where}: edge weight must be a number, found {shown(weight)}")
    return Edge(data["src"], data["dst"], data["type"], float(weight),
                _time(data.get("created_at"), "created_at", where))
