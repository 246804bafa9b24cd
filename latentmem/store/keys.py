"""The ``Keys`` role, written once for both backends: the API keys of ``latentmem serve``.

A key's secret never reaches the store: only its SHA-256 (latentmem/server/keys.py says
why a plain hash suffices for a 256-bit random secret). The table is tiny and read once
per request (the server caches what it reads for a few seconds)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from latentmem.errors import ConflictError


@dataclass(frozen=True)
class ApiKey:
    id: str  # public: shown by `keys list`, part of the key itself
    tenant: str
    users: tuple[str, ...] | None  # None: every user of the tenant
    read_only: bool
    admin: bool
    secret_hash: str
    created_at: float
    revoked_at: float | None = None
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        """What `keys list` shows: everything but the hash."""
        return {"id": self.id, "tenant": self.tenant,
                "users": None if self.users is None else list(self.users),
                "read_only": self.read_only, "admin": self.admin, "label": self.label,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


_COLS = "id, tenant, users, read_only, admin, secret_hash, created_at, revoked_at, label"


def _key(row: Sequence[Any]) -> ApiKey:
    users = None if row[2] is None else tuple(json.loads(row[2]))
    return ApiKey(str(row[0]), str(row[1]), users, bool(row[3]), bool(row[4]), str(row[5]),
                  float(row[6]), None if row[7] is None else float(row[7]), str(row[8]))


class KeyTable:
    """Mixed into a backend, which names its table and placeholder."""

    _KEYS_TABLE = "api_keys"
    _MARK = "?"

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def add_key(self, key: ApiKey) -> None:
        m = self._MARK
        if self.api_key(key.id) is not None:
            raise ConflictError(f"a key with id {key.id!r} exists")
        users = None if key.users is None else json.dumps(list(key.users))
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO {self._KEYS_TABLE} ({_COLS}) VALUES "
                         f"({', '.join([m] * 9)})",
                         (key.id, key.tenant, users, key.read_only, key.admin, key.secret_hash,
                          key.created_at, key.revoked_at, key.label))

    def api_key(self, key_id: str) -> ApiKey | None:
        rows = self._fetch(f"SELECT {_COLS} FROM {self._KEYS_TABLE} WHERE id = {self._MARK}",
                           (key_id,))
        return _key(rows[0]) if rows else None

    def api_keys(self) -> list[ApiKey]:
        return [_key(r) for r in self._fetch(f"SELECT {_COLS} FROM {self._KEYS_TABLE} "
                                             "ORDER BY created_at, id")]

    def revoke_key(self, key_id: str, at: float) -> bool:
        """Revoke a live key; False when no live key has this id."""
        m = self._MARK
        with self.transaction() as conn:
            cur = conn.execute(f"UPDATE {self._KEYS_TABLE} SET revoked_at = {m} "
                               f"WHERE id = {m} AND revoked_at IS NULL", (at, key_id))
            return bool(cur.rowcount)
