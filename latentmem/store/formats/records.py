"""Records as plain data, and the manifest every export carries.

A record becomes a JSON-able dict of every ``Record`` field except the
vector (times as ISO-8601 strings); the vector travels separately, as float32,
in whatever container the format uses. ``record_from_dict`` is the strict
inverse: unknown keys, missing keys and wrong types are refused with the field
named, so a hand-edited file cannot slip half-read data into a store.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from latentmem.errors import ConflictError, InvalidInputError
from latentmem.types import Edge, Record, iso

FORMAT_NAME = "latentmem-export"
FORMAT_VERSION = 1
_TIME_FIELDS = ("event_time", "created_at", "updated_at", "valid_to", "last_accessed_at")
_FIELDS = [f.name for f in fields(Record) if f.name != "vector"]
_REQUIRED = ("id", "user_id", "text")


def manifest(embedder: str, dim: int, count: int) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "embedder": embedder,
        "dim": dim,
        "count": count,
        "exported_at": datetime.now(UTC).isoformat(),
    }


def check_manifest(found: Any, embedder: str, dim: int, source: str) -> dict[str, Any]:
    if not isinstance(found, dict) or found.get("format") != FORMAT_NAME:
        raise InvalidInputError(f"{source}: not a latentmem export (no '{FORMAT_NAME}' manifest)")
    if found.get("version") != FORMAT_VERSION:
        raise InvalidInputError(
            f"{source}: export format version {found.get('version')!r}; expected {FORMAT_VERSION}"
        )
    if found.get("embedder") != embedder or found.get("dim") != dim:
        raise ConflictError(
            f"{source}: vectors come from {found.get('embedder')!r} ({found.get('dim')}-d) but "
            f"this store uses {embedder!r} ({dim}-d)"
        )
    return found


def record_to_dict(record: Record) -> dict[str, Any]:
    return record.to_dict(include_vector=False)


def _time(value: Any, name: str, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: {name} must be an ISO-8601 string or null")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {name} {value!r} is not ISO-8601") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
    try:
        return Record(**values, vector=np.asarray(vector, dtype=np.float32))
    except TypeError as exc:
        raise InvalidInputError(f"{where}: {exc}") from exc


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
    weight = data.get("weight", 1.0)
    if not isinstance(weight, int | float):
        raise InvalidInputError(f"{where}: edge weight must be a number")
    return Edge(
        str(data["src"]), str(data["dst"]), str(data["type"]), float(weight),
        _time(data.get("created_at"), "created_at", where),
    )
