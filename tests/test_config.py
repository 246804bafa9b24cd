"""Config: typed sections, each value checked against its annotation."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from latentmem import Memory
from latentmem.config import SECTIONS, Config, RetrievalConfig, ScoringWeights
from latentmem.errors import InvalidInputError


@pytest.mark.parametrize(("data", "message"), [
    ({"fusion": "nonsense"}, "fusion must be one of ['linear', 'rrf'], found 'nonsense'"),
    ({"candidates": "100"}, "candidates must be an integer, found '100'"),
    ({"candidates": 0}, "candidates must be a number >= 1, found 0"),
    ({"candidates": 10.0}, "candidates must be an integer"),
    ({"use_bm25": 1}, "use_bm25 must be true or false, found 1"),
    ({"dense_weight": 1.5}, "dense_weight must be a number in [0, 1], found 1.5"),
    ({"dense_weight": float("nan")}, "dense_weight must be a finite number"),
    ({"time_boost": True}, "time_boost must be a finite number, found True"),
    ({"vector_tier": "fp8"}, "vector_tier"),
    ({"durability": "sometimes"}, "durability must be one of ['full', 'normal']"),
    ({"budget_bytes_per_user": -5}, "budget_bytes_per_user"),
    ({"ranker_path": 3}, "ranker_path must be a string, found 3"),
    ({"weights": {"recency": -1}}, "recency must be a number >= 0"),
    ({"weights": {"bogus": 1}}, "unknown keys ['bogus'] in weights"),
    ({"weights": 3}, "weights must be a dict"),
    ({"retrieval": {"fusion": "x"}}, "fusion must be one of"),
    ({"retrieval": {"forget_action": "archive"}}, "unknown keys ['forget_action'] in retrieval"),
    ({"retrieval": 5}, "config section 'retrieval' must be a dict"),
    ({"nonsense": 1}, "unknown config keys ['nonsense']"),
    ({"port": 70000}, "port must be a number in [0, 65535]"),
    ({"embedder": ""}, "embedder must be a non-empty string"),
])
def test_a_bad_value_is_a_clear_error(data: dict, message: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        Config.from_dict(data)
    assert message in str(err.value)


def test_flat_and_sectioned_keys_reach_the_same_field() -> None:
    flat = Config.from_dict({"candidates": 50, "forget_action": "delete", "vector_tier": "pq",
                             "weights": {"recency": 0.1}})
    nested = Config.from_dict({"retrieval": {"candidates": 50, "weights": {"recency": 0.1}},
                               "lifecycle": {"forget_action": "delete"},
                               "storage": {"vector_tier": "pq"}})
    assert flat == nested
    assert flat.retrieval.candidates == 50 and flat.lifecycle.forget_action == "delete"
    assert flat.retrieval.weights == ScoringWeights(recency=0.1)
    assert flat.retrieval.fusion == "linear"  # untouched fields keep their defaults


def test_round_trip_and_replace_keep_the_rest() -> None:
    cfg = Config.from_dict({"candidates": 7, "mode": "lossy"})
    assert Config.from_dict(cfg.to_dict()) == cfg
    again = cfg.replace(time_boost=0, retrieval={"rrf_k": 10})
    assert again.retrieval.time_boost == 0.0 and isinstance(again.retrieval.time_boost, float)
    assert again.retrieval.rrf_k == 10 and again.retrieval.candidates == 7
    assert again.storage.mode == "lossy"
    with pytest.raises(InvalidInputError):
        cfg.replace(mode="both")


def test_every_default_passes_its_own_checks() -> None:
    assert Config.from_dict({name: {f.name: getattr(getattr(Config(), name), f.name)
                                    for f in fields(cls)} for name, cls in SECTIONS.items()}) == Config()


def test_every_field_name_has_one_section() -> None:
    names = [f.name for cls in SECTIONS.values() for f in fields(cls)]
    assert len(names) == len(set(names))
    assert "weights" in {f.name for f in fields(RetrievalConfig)}


def test_a_flat_config_file_of_older_stores_still_loads(tmp_path: Path) -> None:
    home = tmp_path / "s"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"candidates": 40, "forget_action": "none"}))
    with Memory(home, embedder="hash") as m:
        assert m.config.retrieval.candidates == 40
        assert m.config.lifecycle.forget_action == "none"


def test_a_bad_setting_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="fusion"):
        Memory(tmp_path / "never", embedder="hash", fusion="nonsense")
    assert not (tmp_path / "never").exists()
