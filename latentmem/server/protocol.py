"""What ``latentmem serve`` sends on the wire and whom it answers: JSON (datetimes as
ISO-8601, NaN as null) and the loopback Host check."""

from __future__ import annotations

import ipaddress
import json
import math
from datetime import datetime
from typing import Any

import numpy as np


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
    return json.dumps(plain(data), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def is_local(host: str) -> bool:
    """Whether a Host header (or a bind address) names this machine's loopback."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
