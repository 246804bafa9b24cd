"""Calibrated relevance (latentmem/retrieve/relevance.py): every hit carries one, a
threshold keeps only the hits that reach it, and bad thresholds change nothing. The
calibration itself is measured by ``bench locomo`` (its CI floor is in test_bench.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from latentmem import Memory
from latentmem.cli import main
from latentmem.errors import InvalidInputError
from latentmem.retrieve import relevance as R


@pytest.fixture
def ana(mem: Memory) -> Memory:
    mem.add(["I moved to Lisbon in May 2023", "My sister Bea works as a nurse in Porto",
             "I play the cello on Sundays", "My favourite food is ramen"], user_id="ana")
    mem.add("Bob moved to Lisbon too", user_id="bob")
    return mem


def test_every_hit_carries_a_relevance_between_0_and_1(ana: Memory) -> None:
    hits = ana.search("where did I move to", user_id="ana", k=4)
    assert len(hits) == 4
    for hit in hits:
        assert hit.relevance is not None and 0.0 <= hit.relevance <= 1.0
        assert hit.to_dict()["relevance"] == hit.relevance


def test_a_hits_relevance_does_not_depend_on_k(ana: Memory) -> None:
    one = ana.search("cello on Sundays", user_id="ana", k=1, track_access=False)[0]
    four = ana.search("cello on Sundays", user_id="ana", k=4, track_access=False)[0]
    assert one.id == four.id and one.relevance == four.relevance


def test_threshold_keeps_only_the_hits_that_reach_it(ana: Memory) -> None:
    hits = ana.search("cello on Sundays", user_id="ana", k=4, track_access=False)
    cut = sorted(h.relevance or 0.0 for h in hits)[-2]
    kept = ana.search("cello on Sundays", user_id="ana", k=4, threshold=cut, track_access=False)
    assert kept and [h.id for h in kept] == [h.id for h in hits if (h.relevance or 0) >= cut]
    assert ana.search("cello on Sundays", user_id="ana", k=4, threshold=1.0) == []
    assert len(ana.search("cello on Sundays", user_id="ana", k=4, threshold=0)) == 4


def test_min_relevance_packs_nothing_when_nothing_reaches_it(ana: Memory) -> None:
    full = ana.context("cello on Sundays", user_id="ana", budget_tokens=200)
    assert full.items and all(i.relevance is not None for i in full.items)
    empty = ana.context("cello on Sundays", user_id="ana", budget_tokens=200, min_relevance=1.0)
    assert empty.items == [] and empty.text == ""
    assert {o["reason"] for o in empty.omitted} == {"below min_relevance"}
    assert {o["id"] for o in empty.omitted} >= set(full.ids)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, "0.5", True, [0.5]])
def test_a_bad_threshold_is_refused_and_changes_nothing(ana: Memory, bad: object) -> None:
    before = ana.stats()
    with pytest.raises(InvalidInputError, match="must be a number in \\[0, 1\\]"):
        ana.search("cello", user_id="ana", threshold=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="min_relevance must be a number"):
        ana.context("cello", user_id="ana", min_relevance=bad)  # type: ignore[arg-type]
    assert ana.stats() == before


def test_cli_threshold_and_min_relevance(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    home = ["--home", str(tmp_path / "store")]

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main([*home, *argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    assert run("add", "I play the cello on Sundays", "--user", "ana")[0] == 0
    code, out, _ = run("--json", "search", "cello", "--user", "ana")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 1 and 0 <= hits[0]["relevance"] <= 1
    code, out, _ = run("--json", "search", "cello", "--user", "ana", "--threshold", "1")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run("--json", "context", "cello", "--user", "ana", "--min-relevance", "1")
    assert code == 0 and json.loads(out)["items"] == []
    code, _, err = run("search", "cello", "--user", "ana", "--threshold", "2")
    assert code != 0 and "threshold must be a number in [0, 1]" in err


def test_a_relevance_model_file_is_checked(tmp_path: Path, mem: Memory) -> None:
    good = R.default_calibrator()
    assert good.meta.get("command", "").startswith("latentmem bench fit-relevance")
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**json.loads(good.to_json()), "features": ["cos"]}))
    with pytest.raises(InvalidInputError, match="not a latentmem relevance model"):
        R.Calibrator.load(path)
    # A model of one's own: every hit gets its constant probability.
    flat = R.Calibrator((0.0,) * len(R.FEATURES), math.log(0.25 / 0.75),
                        (0.0,) * len(R.FEATURES), (1.0,) * len(R.FEATURES))
    path.write_text(flat.to_json())
    mem.add("I play the cello on Sundays", user_id="ana")
    mem.config = mem.config.replace(relevance_path=str(path))
    assert mem.search("cello", user_id="ana")[0].relevance == pytest.approx(0.25)


def test_fit_is_deterministic_and_calibrated_on_its_own_kind_of_data() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6000, len(R.FEATURES)))
    truth = 1 / (1 + np.exp(-(1.5 * x[:, 0] - x[:, 4] - 2.0)))
    y = (rng.random(6000) < truth).astype(float)
    a, b = R.fit(x, y), R.fit(x, y)
    assert a == b
    p = a.predict(x)
    assert R.expected_calibration_error(p, y) < 0.03
    assert abs(float(p.mean()) - float(y.mean())) < 0.01
    with pytest.raises(ValueError, match="both positive and negative"):
        R.fit(x, np.zeros(6000))


def test_expected_calibration_error_by_hand() -> None:
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert R.expected_calibration_error(p, np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.1)
    assert R.expected_calibration_error(p, np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(0.9)
    bins = R.reliability(p, np.array([0.0, 1.0, 1.0, 1.0]))
    assert bins[1] == {"low": 0.1, "high": 0.2, "n": 2, "predicted": 0.1, "observed": 0.5}


@pytest.mark.slow
def test_a_query_about_nothing_in_the_store_is_less_relevant(
        tmp_path: Path, minilm) -> None:  # type: ignore[no-untyped-def]
    """The issue's case: Ana's two memories, a question about her home, and questions
    about nothing she said. The answer's relevance must stand above every off-topic top
    hit's, and the ranking's own score (about 1 for any top hit) cannot tell them apart."""
    with Memory(tmp_path / "store", embedder=minilm) as m:
        m.add("I moved to Lisbon in May 2023", user_id="ana")
        m.add("My sister Bea works as a nurse in Porto", user_id="ana")
        home = m.search("where does ana live", user_id="ana")
        assert home[0].text.startswith("I moved to Lisbon")
        for query in ("what is the capital of Peru", "quantum chromodynamics on a lattice",
                      "how do I reset my router password"):
            off = m.search(query, user_id="ana")[0]
            assert (off.relevance or 0) < (home[0].relevance or 0), (query, off.relevance)
            assert m.search(query, user_id="ana", threshold=home[0].relevance) == []


def test_each_data_set_weighs_the_same_in_a_fit() -> None:
    from latentmem.bench.calibration import Sample, balanced

    def sample(unit: str, hits: int) -> Sample:
        return Sample(unit, "x", False, np.zeros((hits, len(R.FEATURES))), np.zeros(hits),
                      np.zeros(hits), 1)

    w = balanced([sample("a/1", 10), sample("a/2", 10), sample("b/1", 5)])
    assert w[:20].sum() == pytest.approx(w[20:].sum()) and w.sum() == pytest.approx(25)


def test_foreign_questions_weigh_no_more_than_a_data_sets_answerable_ones() -> None:
    """A LongMemEval store holds one question and is asked about ten foreign ones: at full
    weight they taught the fit that its hits are mostly negatives."""
    from latentmem.bench.calibration import FOREIGN_WEIGHT, Sample, balanced

    def sample(unit: str, apart: bool) -> Sample:
        return Sample(unit, "foreign" if apart else "x", apart, np.zeros((10, len(R.FEATURES))),
                      np.zeros(10), np.zeros(10), 1)

    lme = [sample("b/1", False), *[sample("b/1", True) for _ in range(9)]]
    locomo = [sample("a/1", False) for _ in range(8)] + [sample("a/1", True) for _ in range(2)]
    w = balanced(locomo + lme)
    a, b = w[:100], w[100:]
    assert a.sum() == pytest.approx(b.sum())  # each data set weighs the same
    assert b[10:].sum() == pytest.approx(FOREIGN_WEIGHT * b[:10].sum())  # capped
    assert a[80:].sum() == pytest.approx(a[:80].sum() / 4)  # under the cap: as it was
