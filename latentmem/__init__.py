"""latentmem: long-term memory for LLMs, offline, with no LLM on the write path."""

from __future__ import annotations

from latentmem.client import Client
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
