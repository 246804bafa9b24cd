"""One exception hierarchy for latentmem.

Every error has a stable ``name()`` (used by the CLI's ``--json`` output and by
``latentmem serve``'s error bodies) and an HTTP-like ``code()`` (the server's status). Messages say what was
expected and what was found, so a caller can fix the input without reading code.
"""

from __future__ import annotations


class LatentMemError(Exception):
    """Base of every error latentmem raises on purpose."""

    http_status = 500

    @classmethod
    def name(cls) -> str:
        return cls.__name__

    @classmethod
    def code(cls) -> int:
        return cls.http_status


class InvalidInputError(LatentMemError, ValueError):
    """The caller passed something the engine cannot accept. Nothing was changed."""

    http_status = 400


class InputTooLargeError(InvalidInputError):
    http_status = 413


class UnauthorizedError(LatentMemError):
    """No API key, or one that is unknown or revoked (the server's 401)."""

    http_status = 401


class ForbiddenError(LatentMemError):
    """The key is valid but may not do this: a read-only key writing, a key acting for a
    user outside its list, a tenant key asking for an admin's endpoint."""

    http_status = 403


class NotFoundError(LatentMemError, KeyError):
    http_status = 404

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "not found"


class ConflictError(LatentMemError):
    """The write would clash with what is stored (duplicate id, other embedder)."""

    http_status = 409


class StoreError(LatentMemError):
    """The store is unusable: corrupt file, schema from the future, locked."""

    http_status = 500


class StoreCorruptError(StoreError):
    """The store's file is damaged (SQLite found a malformed page, or it is not a database
    at all). ``latentmem check`` tells what is affected; RELIABILITY.md says how to recover."""


class StoreFullError(StoreError):
    """The disk holding the store is full: the write that met it was rolled back."""

    http_status = 507


class UnsafeDataError(InvalidInputError):
    """An import file tried to smuggle in something other than plain data."""

    http_status = 400


class MissingExtraError(LatentMemError):
    """An optional dependency is not installed."""

    http_status = 501
