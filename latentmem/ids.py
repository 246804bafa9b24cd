"""Time-sortable record ids.

26 characters of Crockford base32: 48 bits of milliseconds since the epoch,
then 80 bits that are random at the start of each millisecond and incremented
within it, so ids made by one process sort in creation order (ULID layout).
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id() -> str:
    global _last_ms, _last_rand
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _last_rand += 1
        else:
            _last_rand = int.from_bytes(os.urandom(10), "big") >> 1
        _last_ms = ms
        return _encode(ms, 10) + _encode(_last_rand & ((1 << 80) - 1), 16)


def is_valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 26
        and all(c in _ALPHABET for c in value)
    )
