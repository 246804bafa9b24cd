"""Embedding inversion: MiniLM vectors back to text.

>>> inv = load_default()                          # doctest: +SKIP
>>> inv.invert(vectors, steps=2)                  # (n, 384) float32 -> n strings  # doctest: +SKIP

``Inverter`` is the interface; ``TrainedInverter`` (``decode.py``) is latentmem's own, a
model trained by ``python -m latentmem.invert.train`` (see docs/inversion.md). Shipped
weights live in ``latentmem/invert/weights/``; ``$LATENTMEM_INVERTER`` points at other
weights, or turns inversion off when set to ``none``. Nothing here imports torch until
weights are loaded.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

WEIGHTS = Path(__file__).parent / "weights" / "minilm-inverter.pt"
ENV = "LATENTMEM_INVERTER"
DEFAULT_STEPS = 1


@runtime_checkable
class Inverter(Protocol):
    #: the embedder whose vectors it inverts (the name stored with a memory store)
    embedder: str
    dim: int

    def invert(self, vectors: np.ndarray, steps: int = 0) -> list[str]:
        """(n, dim) float32 vectors -> n texts; ``steps`` correction rounds after the first
        guess (more is slower and never worse by cosine)."""
        ...


def invert_one(inverter: Inverter, vector: np.ndarray, steps: int = 0) -> str:
    return inverter.invert(np.asarray(vector, dtype=np.float32).reshape(1, -1), steps)[0]


def weights_path() -> Path | None:
    """The weights ``load_default`` would use: ``$LATENTMEM_INVERTER`` or the shipped file."""
    override = os.environ.get(ENV)
    if override is not None and override.strip():
        return None if override.strip().lower() == "none" else Path(override)
    return WEIGHTS


_loaded: dict[Path, Inverter] = {}
_lock = threading.Lock()


def load(path: str | os.PathLike[str], device: str = "cpu") -> Inverter:
    """A ``TrainedInverter`` from a weights file written by ``latentmem.invert.train``."""
    from latentmem.invert import model
    from latentmem.invert.decode import TrainedInverter

    return TrainedInverter(model.load(path, device))


def load_default() -> Inverter | None:
    """The shipped (or ``$LATENTMEM_INVERTER``) inverter, loaded once; None when no weights
    file exists."""
    path = weights_path()
    if path is None or not path.is_file():
        return None
    with _lock:
        if path not in _loaded:
            _loaded[path] = load(path)
        return _loaded[path]


def require_default() -> Inverter:
    """``load_default()``, or a ``MissingExtraError`` that says how to get weights."""
    from latentmem.errors import MissingExtraError

    inverter = load_default()
    if inverter is None:
        path = weights_path()
        where = f"at {path}" if path else f"(${ENV}=none)"
        raise MissingExtraError(
            f"no inverter weights {where}; train them with 'python -m latentmem.invert.train' "
            f"(docs/inversion.md) or point ${ENV} at a weights file")
    return inverter


__all__ = ["DEFAULT_STEPS", "Inverter", "invert_one", "load", "load_default", "require_default",
           "weights_path"]
