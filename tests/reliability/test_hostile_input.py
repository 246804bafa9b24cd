"""Bad input, fuzzed (latentmem/bench/hostile_input.py): hostile calls over the SDK and the
CLI raise only ``LatentMemError``s, a refused command line says so in one line, and a
refused call leaves every row of the store as it was. CI runs 1,000 calls with a fixed
seed, so a failure reproduces (``LATENTMEM_HOSTILE_CASES``, ``_PG_CASES`` and ``_SEED``
change them); the long form is ``latentmem bench hostile-input --cases 10000``. The bugs
it found have their own tests in tests/test_bad_input.py."""

from __future__ import annotations

import builtins
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from latentmem import Memory
from latentmem.bench import hostile_input
from latentmem.errors import MissingExtraError
from latentmem.store import DB_FILE

pytestmark = pytest.mark.reliability
pytest.importorskip("hypothesis")

CI_CASES = int(os.environ.get("LATENTMEM_HOSTILE_CASES", "1000"))
PG_CASES = int(os.environ.get("LATENTMEM_HOSTILE_PG_CASES", "60"))  # ~50 ms a call there
CI_SEED = int(os.environ.get("LATENTMEM_HOSTILE_SEED", "20261203"))


def _clean(result: dict[str, Any]) -> None:
    assert result["unexpected"] == 0, result["unexpected_examples"]
    assert result["changed_by_refusal"] == 0, result["changed_examples"]
    assert result["bad_cli_errors"] == 0, result["bad_cli_examples"]


def test_hostile_calls_raise_only_latentmem_errors_and_change_nothing(tmp_path: Path) -> None:
    result = hostile_input.run(CI_CASES, CI_SEED, workdir=tmp_path)
    _clean(result)
    assert result["cases"] == CI_CASES
    refused = sum(result["refused"].values())
    assert result["accepted"] + refused == CI_CASES
    assert result["accepted"] >= CI_CASES // 10 and refused >= CI_CASES // 2  # both sides ran
    assert {"sdk add", "sdk search", "sdk import_records", "cli add", "cli search"} \
        <= set(result["operations"])


def test_hostile_calls_on_postgres(pg_url: str, tmp_path: Path) -> None:
    _clean(hostile_input.run(PG_CASES, CI_SEED, "postgres", url=pg_url, workdir=tmp_path))


def test_the_checksum_sees_a_change_in_any_table(tmp_path: Path) -> None:
    home = tmp_path / "store"
    with Memory(home, embedder="hash") as m:
        m.add("a note about terns", user_id="ana")
    before = hostile_input.checksum(home)
    assert hostile_input.checksum(home) == before
    with sqlite3.connect(home / DB_FILE) as conn:  # a cached embedding: no record changes
        conn.execute("UPDATE embed_cache SET vector = zeroblob(length(vector))")
    assert hostile_input.checksum(home) != before


def test_without_hypothesis_the_fuzzer_says_which_extra_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_hypothesis(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "hypothesis" or name.startswith("hypothesis."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hypothesis)
    with pytest.raises(MissingExtraError, match='"dev" extra'):
        hostile_input.run(1, 0, workdir=tmp_path)
