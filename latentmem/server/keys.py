"""API keys: made, checked and revoked. The store keeps only hashes (``store/keys.py``).

A key reads ``lm_<id>_<secret>``: a public id of 12 hex digits (what ``keys list`` and
``keys revoke`` name) and a secret of 32 random bytes (256 bits, ``secrets.token_urlsafe``).
The store keeps SHA-256 of the secret, compared with ``hmac.compare_digest``. A slow
password hash (scrypt, argon2) defends guessable secrets; a 256-bit random one cannot be
guessed, so a plain hash loses nothing and keeps each request's check to microseconds.
An unknown id is checked against a dummy hash, so both failures take the same time.
Keys are never logged: the server logs no headers, and errors never quote a key.

``KeyRing.principal(token)`` turns a bearer token into a ``Principal``, caching what it
read for ``ttl`` seconds: a revoked key stops working within that time on every server
that shares the store (``keys revoke`` says so).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Sequence

from latentmem.errors import InvalidInputError, NotFoundError, UnauthorizedError
from latentmem.inputs import check_chars, check_id, check_scope_value
from latentmem.store.base import Store
from latentmem.store.keys import ApiKey
from latentmem.tenancy import Principal, check_tenant

_TOKEN = re.compile(r"^lm_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY = hashlib.sha256(b"no such key").hexdigest()
REVOCATION_TTL = 5.0


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create(store: Store, tenant: str, users: Sequence[str] | None = None, *,
           read_only: bool = False, admin: bool = False, label: str = "") -> tuple[str, ApiKey]:
    """A new key: (the token, shown once and stored nowhere; its stored row)."""
    check_tenant(tenant)
    chosen = None
    if users is not None:
        chosen = tuple(sorted({str(check_scope_value("user_id", u, required=True)) for u in users}))
        if not chosen:
            raise InvalidInputError("--user was given with no user ids")
    if not isinstance(label, str) or len(label) > 200:
        raise InvalidInputError("a key's label is a string of at most 200 characters")
    check_chars(label, "a key's label")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(key_id, tenant, chosen, bool(read_only), bool(admin), _digest(secret),
                 time.time(), None, label)
    store.add_key(row)
    return f"lm_{key_id}_{secret}", row


def revoke(store: Store, key_id: str) -> ApiKey:
    check_id(key_id, "key id")
    if not store.revoke_key(key_id, time.time()):
        raise NotFoundError(f"no live key with id {key_id!r}")
    key = store.api_key(key_id)
    assert key is not None
    return key


def principal_of(key: ApiKey) -> Principal:
    return Principal(key.tenant, None if key.users is None else frozenset(key.users),
                     key.read_only, key.admin, key.id)


class KeyRing:
    """Checks bearer tokens against the store, caching rows for ``ttl`` seconds."""

    def __init__(self, store: Store, ttl: float = REVOCATION_TTL) -> None:
        self.store = store
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    def _row(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        row = self.store.api_key(key_id)
        with self._lock:
            if len(self._cache) > 10_000:  # unknown ids cannot grow it without bound
                self._cache.clear()
            self._cache[key_id] = (now, row)
        return row

    def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise UnauthorizedError("no API key: send the header 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        match = _TOKEN.match(token.strip()) if scheme.lower() == "bearer" else None
        if match is None:
            raise UnauthorizedError("the Authorization header must be 'Bearer lm_<id>_<secret>'")
        row = self._row(match.group(1))
        expected = row.secret_hash if row is not None else _DUMMY
        good = hmac.compare_digest(_digest(match.group(2)), expected)
        if row is None or not good or row.revoked_at is not None:
            raise UnauthorizedError("the API key is unknown or revoked")
        return principal_of(row)
