"""kill -9 during writes (latentmem/bench/reliability.py): the bounded form of
``latentmem bench reliability`` (two kills per scenario here, twenty in the long form),
and a check that the checker itself sees what it must."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from latentmem import Memory
from latentmem.bench import reliability

pytestmark = pytest.mark.reliability


@pytest.mark.slow
@pytest.mark.parametrize("scenario", reliability.KILLS)
def test_a_kill_during_writes_loses_nothing_acknowledged(tmp_path: Path, scenario: str) -> None:
    rng = random.Random(f"{scenario}-ci")
    for n in range(2):
        result = reliability.trial(scenario, tmp_path / f"store{n}", rng)
        assert result["problems"] == [], result
        assert result["acknowledged_writes"] > 0  # the kill fell after some writes


def test_the_checker_sees_a_lost_write_a_wrong_vector_and_a_stale_index(tmp_path: Path) -> None:
    home = tmp_path / "store"
    with Memory(home, embedder="hash") as m:
        ids = m.add(["one note about terns", "another about gulls"], user_id="ana").ids
    acked = [{"op": "add", "ids": [*ids, "01M8ZZZZZZZZZZZZZZZZZZZZZZ"],
              "texts": ["one note about terns", "a different text", "never written"]}]
    problems = reliability.verify(home, acked)["problems"]
    assert any("is gone" in p for p in problems)
    assert any(ids[1] in p and "text" in p for p in problems)
    with Memory(home, embedder="hash") as m:  # a vector the index does not hold
        m.index.remove("ana", np.array([m.store.list_rows(None)[0].rowid], dtype=np.int64))
        assert any("index holds" in p for p in reliability._index_agrees(m, m.core.scope("ana")))


@pytest.mark.slow
def test_four_processes_writing_at_once_lose_nothing_and_agree(tmp_path: Path) -> None:
    result = reliability.concurrency(tmp_path / "store", workers=4, adds=250)
    assert result["problems"] == [] and result["locked_errors"] == 0
    assert result["adds"] == 1000 and result["deleted"] == 10


def test_an_index_never_takes_in_another_processs_write_it_does_not_hold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the concurrency scenario found, made deterministic: another process (here
    a second Memory on the same store, with its own index) commits between this one's
    index sync and its own write. This index must not then take the store's epoch as its
    own: it would go on without the other's memory."""
    home = tmp_path / "store"
    with Memory(home, embedder="hash") as mine, Memory(home, embedder="hash") as other:
        mine.add("first note about herons", user_id="ana")
        write = mine.store.insert

        def interleaved(*args: object, **kwargs: object) -> list[int]:
            other.add("written elsewhere about plovers", user_id="ana")
            return write(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(mine.store, "insert", interleaved)
        mine.add("second note about terns", user_id="ana")
        monkeypatch.undo()
        hits = mine.search("plovers", user_id="ana", k=3)
        assert hits and hits[0].text == "written elsewhere about plovers"
        assert mine.index.count() == mine.store.count() == 3


def test_the_sleep_checker_sees_a_memory_gone_without_a_trace(tmp_path: Path) -> None:
    from latentmem.bench import crash_sleep

    home = tmp_path / "store"
    crash_sleep.seed(home)
    with Memory(home, embedder="hash") as m:
        ids = m.add(["kept note about avocets", "deleted note about stilts"], user_id="ana").ids
        m.delete(ids[1])  # a deliberate deletion: no lifecycle event explains it
    acked = [{"op": "add", "ids": ids, "texts": []}]
    problems = crash_sleep.verify(home, acked)["problems"]
    assert problems == [f"acknowledged {ids[1]} is gone without an event"]
