"""Validating and normalising what callers hand to ``Memory``.

Everything here runs before a transaction opens, so bad input is refused with
a clear message and the store is left exactly as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from latentmem.errors import InputTooLargeError, InvalidInputError
from latentmem.retrieve.timeparse import parse_time

MAX_ID_CHARS = 256

Content = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def index_text_for(text: str, speaker: str | None) -> str:
    """What is embedded and BM25-indexed: the speaker matters for "what did Ana say"."""
    return f"{speaker}: {text}" if speaker else text


def check_scope_value(name: str, value: object, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidInputError(f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{name} must be a non-empty string, found {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidInputError(f"{name} is {len(value)} characters; the limit is {MAX_ID_CHARS}")
    return value


def check_vector(vector: object, dim: int, what: str = "vector") -> np.ndarray:
    try:
        arr = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what}: expected {dim} numbers, found {type(vector).__name__}") from exc
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise InvalidInputError(f"{what}: expected shape ({dim},), found {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{what}: contains NaN or infinity")
    norm = float(np.linalg.norm(arr))
    if norm == 0.0:
        raise InvalidInputError(f"{what}: is all zeros")
    return (arr / norm).astype(np.float32)


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
        if "\x00" in text:
            raise InvalidInputError(f"{pre}text contains a NUL character")
        if len(text) > max_text_chars:
            raise InputTooLargeError(
                f"{where}: {len(text)} characters; the limit is {max_text_chars} "
                "(config max_text_chars)"
            )
        for key in ("role", "speaker"):
            value = item.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_ID_CHARS):
                raise InvalidInputError(f"{where}: {key} must be a short string, found {value!r}")
        meta = item.get("metadata")
        if meta is not None and not isinstance(meta, Mapping):
            raise InvalidInputError(f"{where}: metadata must be a dict, found {type(meta).__name__}")
        item["event_time"] = parse_time(item.get("event_time"), f"{where}: event_time")
        for key, value in defaults.items():
            if item.get(key) is None:
                item[key] = value
        items.append(item)
    return items


def is_unit_f32(vector: np.ndarray, dim: int) -> bool:
    """Vectors read back from an export are used bit for bit, not renormalised."""
    return (
        isinstance(vector, np.ndarray)
        and vector.dtype == np.float32
        and vector.shape == (dim,)
        and bool(np.isfinite(vector).all())
        and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    )
