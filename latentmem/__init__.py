"""latentmem: long-term memory for LLMs, offline, with no LLM on the write path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from latentmem.config import Config, ScoringWeights
from latentmem.errors import (
    ConflictError,
    InputTooLargeError,
    InvalidInputError,
    LatentMemError,
    NotFoundError,
    StoreError,
    UnsafeDataError,
)
from latentmem.memory import Memory
from latentmem.types import Context, ContextItem, Edge, Hit, Receipt, Record

__version__ = "0.1.0"

if TYPE_CHECKING:
    from latentmem.client import Client


def __getattr__(name: str) -> Any:
    # The HTTP client (and httpx, ~150 ms to import) only for code that asks for it.
    if name == "Client":
        from latentmem.client import Client

        return Client
    raise AttributeError(f"module 'latentmem' has no attribute {name!r}")


__all__ = [
    "Client",
    "Config",
    "ConflictError",
    "Context",
    "ContextItem",
    "Edge",
    "Hit",
    "InputTooLargeError",
    "InvalidInputError",
    "LatentMemError",
    "Memory",
    "NotFoundError",
    "Receipt",
    "Record",
    "ScoringWeights",
    "StoreError",
    "UnsafeDataError",
]
