"""What ``latentmem serve`` checks and sends on the wire: its protocol errors (the engine's
own are in latentmem/errors.py), request bodies checked field by field before the engine
sees them, and JSON responses (datetimes as ISO-8601, NaN as null)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import numpy as np

from latentmem.errors import InvalidInputError, LatentMemError, NotFoundError

# -- protocol errors (the engine's own are in latentmem/errors.py) --------------------------

class RouteNotFoundError(NotFoundError):
    """No endpoint has this path."""


class MethodNotAllowedError(LatentMemError):
    http_status = 405

    def __init__(self, message: str, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow


class LengthRequiredError(InvalidInputError):
    http_status = 411


class UnsupportedMediaTypeError(InvalidInputError):
    http_status = 415


class ForbiddenHostError(LatentMemError):
    http_status = 403


class ShuttingDownError(LatentMemError):
    http_status = 503


# -- request bodies ------------------------------------------------------------------------

def _json_type(value: object) -> str:
    for kind, name in ((type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number"),
                       (str, "string"), (list, "array")):
        if isinstance(value, kind):
            return name
    return "object"


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# JSON kind of a field -> (test, what the message says was expected).
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (_number, "a number"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "array": (lambda v: isinstance(v, list), "an array"),
    "strings": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                "an array of strings"),
    "numbers": (lambda v: isinstance(v, list) and all(_number(x) for x in v), "an array of numbers"),
    "ids": (lambda v: isinstance(v, str) or isinstance(v, list) and all(isinstance(x, str) for x in v),
            "an id or an array of ids"),
    "time": (lambda v: isinstance(v, str) or _number(v), "an ISO-8601 string or a Unix time"),
}

SCOPE = {"user_id": "string", "agent_id": "string", "session_id": "string"}


def check_fields(body: dict[str, Any], spec: Mapping[str, str], required: tuple[str, ...],
            where: str) -> dict[str, Any]:
    """The body's fields, checked against ``spec``; null means "not given"."""
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise InvalidInputError(f"unknown field{'s' if len(unknown) > 1 else ''} {unknown} in "
                                f"{where}; expected some of {sorted(spec)}")
    for name in required:
        if body.get(name) is None:
            raise InvalidInputError(f"{where} needs the field {name!r}")
    given = {k: v for k, v in body.items() if v is not None}
    for name, value in given.items():
        test, expected = KINDS[spec[name]]
        if not test(value):
            raise InvalidInputError(f"field {name!r} must be {expected}, found {_json_type(value)}")
    return given


def _no_constants(name: str) -> Any:
    raise InvalidInputError(f"the body is not valid JSON: {name} is not a JSON number")


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"the body is not UTF-8: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInputError("the body is nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInputError(f"expected a JSON object, found {_json_type(body)}")
    return body


# -- responses -----------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """JSON-able: datetimes as ISO-8601, NaN and infinity as null, NumPy scalars as numbers."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def encode(data: Any) -> bytes:
    return json.dumps(plain(data), ensure_ascii=False, allow_nan=False).encode("utf-8")
