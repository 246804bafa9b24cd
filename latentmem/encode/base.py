"""The Embedder interface and its registry.

An embedder has one required method, ``embed_batch``; ``embed`` is built on it.
Vectors are float32 and L2-normalised, so inner product is cosine similarity.
Built-in embedders are registered through the same ``register_embedder`` that
third-party code uses; ``get_embedder`` resolves a registered name first, then
a ``package.module:Class`` path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from latentmem.errors import InvalidInputError


@runtime_checkable
class Embedder(Protocol):
    #: Stable identifier of the model; stored with every memory so a store is
    #: never searched with vectors from another model.
    name: str
    dim: int

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalised vectors."""
        ...


def embed_one(embedder: Embedder, text: str) -> np.ndarray:
    return embedder.embed_batch([text])[0]


def normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32, copy=False)


_REGISTRY: dict[str, Callable[[], Embedder]] = {}


def register_embedder(name: str, factory: Callable[[], Embedder]) -> None:
    _REGISTRY[name] = factory


def available_embedders() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # Importing the modules registers them; done lazily so importing latentmem
    # does not import torch.
    importlib.import_module("latentmem.encode.fake")
    importlib.import_module("latentmem.encode.minilm")
    importlib.import_module("latentmem.encode.onnx")


def get_embedder(spec: str | Embedder) -> Embedder:
    if not isinstance(spec, str):
        if not isinstance(spec, Embedder):
            raise InvalidInputError(
                f"expected an embedder name or an object with name, dim and embed_batch; "
                f"found {type(spec).__name__}"
            )
        return spec
    _load_builtins()
    if spec in _REGISTRY:
        return _REGISTRY[spec]()
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise InvalidInputError(f"cannot load embedder {spec!r}: {exc}") from exc
        instance = obj() if callable(obj) else obj
        if not isinstance(instance, Embedder):
            raise InvalidInputError(f"{spec!r} does not provide name, dim and embed_batch")
        return instance
    raise InvalidInputError(
        f"unknown embedder {spec!r}; expected one of {sorted(_REGISTRY)} or 'module:Class'"
    )
