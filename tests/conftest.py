from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from latentmem import Memory  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LOCOMO_DEV = SHARED_DATA / "locomo" / "locomo10_dev.json"
LONGMEMEVAL_DEV = SHARED_DATA / "longmemeval" / "longmemeval_s_dev.json.gz"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (it ships beside the project in CI, not with a clone)")
    return path


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    """A store with the deterministic hash embedder: fast, no model."""
    m = Memory(tmp_path / "store", embedder="hash")
    yield m
    m.close()


@pytest.fixture(scope="session")
def minilm():
    from latentmem.encode.minilm import shared_minilm

    return shared_minilm()


@pytest.fixture
def real_mem(tmp_path: Path, minilm) -> Iterator[Memory]:
    """A store with the real all-MiniLM-L6-v2 embedder (loaded once per session)."""
    m = Memory(tmp_path / "store", embedder=minilm)
    yield m
    m.close()
