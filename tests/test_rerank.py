"""Later ranking stages: session scale, diversity, listing intent, entities, BM25 pruning,
the learned last stage."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import latentmem.store.sqlite as sqlite_store
from latentmem import Memory
from latentmem.errors import InvalidInputError
from latentmem.graph.entities import extract
from latentmem.retrieve.intent import is_listing
from latentmem.retrieve.learned import FEATURES, Ranker, default_ranker, features
from latentmem.retrieve.learned import rerank as learned_rerank
from latentmem.retrieve.rerank import diversify, session_scores


def test_session_scores_reward_sessions_with_two_matches() -> None:
    scores = session_scores(["a", "a", "b", None], [0.8, 0.6, 0.9, 1.0])
    assert scores[0] == scores[1] == 1.0  # (0.8 + 0.6) / 2 = 0.7 is the best session
    assert scores[2] == pytest.approx(0.45 / 0.7)  # a lone match counts half
    assert scores[3] == 0.0


def test_diversify_spreads_over_sessions() -> None:
    scores = [1.0, 0.99, 0.98, 0.5]
    sessions = ["a", "a", "a", "b"]
    assert diversify(scores, sessions, None, 4, 0.0, 0.0, 50) == [0, 1, 2, 3]
    assert diversify(scores, sessions, None, 2, 0.6, 0.0, 50)[:2] == [0, 3]
    vectors = np.eye(4, dtype=np.float32)
    vectors[1] = vectors[0]
    assert diversify(scores, [None] * 4, vectors, 4, 0.0, 0.5, 50)[:2] == [0, 2]
    # only the top `depth` are reordered; the rest keep their place
    assert diversify(scores, sessions, None, 4, 0.6, 0.0, 2) == [0, 1, 2, 3]


@pytest.mark.parametrize(("query", "listing"), [
    ("What activities does Melanie partake in?", True),
    ("How many times did Ana go to Porto?", True),
    ("Which cities has Ana visited?", True),
    ("What kinds of music does she like?", True),
    ("List every restaurant I liked", True),
    ("What is Caroline's identity?", False),
    ("What was the name of the dog?", False),
    ("What class does she take?", False),
    ("Where has Melanie camped?", False),
])
def test_listing_intent(query: str, listing: bool) -> None:
    assert is_listing(query) is listing


def test_entities() -> None:
    assert extract("Yesterday I met Ana at the Bank of Portugal.") == ["ana", "bank of portugal"]
    assert extract('Hey Mel! I loved reading "Charlotte\'s Web" as a kid.') == [
        "charlotte's web", "mel"]
    assert extract("The trip to Paris and Rome was fun, said NASA's Ross.") == [
        "paris", "rome", "nasa", "ross"]
    assert extract("wow, that is great. thanks!") == []


@pytest.mark.sqlite_only
def test_bm25_keeps_the_rarest_words_within_budget(mem: Memory, monkeypatch) -> None:
    mem.add(["I like running in the park", "I like happy stories", "zebras like running",
             "like it or not"], user_id="u")
    assert mem.store._affordable_terms(["running", "happy", "zebra", "like"]) == [
        "running", "happy", "zebra", "like"]
    monkeypatch.setattr(sqlite_store, "BM25_POSTINGS", 3)
    # df: happy 1, zebra 1, running 2, like 4; the two rarest always stay
    assert mem.store._affordable_terms(["running", "happy", "zebra", "like"]) == ["happy", "zebra"]
    hits = mem.search("like zebra happy", user_id="u", k=4)
    assert {h.record.text for h in hits[:2]} == {"I like happy stories", "zebras like running"}


def test_speakers_cache_sees_new_speakers(mem: Memory) -> None:
    mem.add([{"role": "user", "name": "Ana", "content": "hello there"}], user_id="u")
    from latentmem.store.sqlite import Scope

    assert mem.store.speakers(Scope("u")) == ["Ana"]
    mem.add([{"role": "user", "name": "Bo", "content": "hi Ana"}], user_id="u")
    assert sorted(mem.store.speakers(Scope("u"))) == ["Ana", "Bo"]


def test_entity_and_causal_edges(mem: Memory) -> None:
    ids = mem.add([
        {"role": "user", "content": "I met Rui at the Porto book fair."},
        {"role": "assistant", "content": "So you finally went! Did you buy anything?"},
        {"role": "user", "content": "Because the queue was long, no."},
    ], user_id="u", session_id="s1").ids
    later = mem.add("Rui moved to Lisbon in June.", user_id="u").ids[0]
    typed = {(e.src, e.dst, e.type) for e in mem.edges(ids[0])}
    assert (ids[0], ids[1], "causal") in typed  # "So ..." follows from the turn before
    assert (ids[2], ids[1], "causal") in {(e.src, e.dst, e.type) for e in mem.edges(ids[2])}
    assert (ids[0], later, "entity") in typed  # both name Rui
    from latentmem.store.sqlite import Scope

    rowid = mem.store.get_row(later).rowid
    assert rowid in mem.store.mentioning(Scope("u"), "rui", 10)
    mem.update(later, text="Someone moved to Lisbon in June.")
    assert rowid not in mem.store.mentioning(Scope("u"), "rui", 10)
    assert all(e.type != "entity" for e in mem.edges(later))
    mem.delete(ids[0])
    assert mem.store.mentioning(Scope("u"), "rui", 10) == []


def test_entity_hop_finds_the_second_hop(mem: Memory) -> None:

    mem.add("I met Rui at the Porto book fair.", user_id="u")
    mem.add("Rui moved to Lisbon in June.", user_id="u")
    for i in range(20):
        mem.add(f"unrelated note number {i} about groceries", user_id="u")
    mem.config = mem.config.replace(entity_gain=1.0)
    hits = mem.search("who did I meet at the Porto book fair", user_id="u", k=3)
    assert any(h.components.get("entity", 0) > 0 for h in hits)


def test_maxsim_rerank(mem: Memory) -> None:

    from latentmem.retrieve.rerank import maxsim

    q = np.eye(3, dtype=np.float32)[:2]
    docs = [np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)[2:]]
    assert maxsim(q, docs).tolist() == [1.0, 0.0]
    mem.add(["the red bicycle in the hall", "a bicycle", "red paint"], user_id="u")
    mem.config = mem.config.replace(maxsim_weight=0.5)
    hits = mem.search("red bicycle", user_id="u", k=3)
    assert hits[0].record.text == "the red bicycle in the hall"
    assert all("maxsim" in h.components for h in hits)


def test_rescore_many_by_hand() -> None:
    import math

    from latentmem.config import ScoringWeights
    from latentmem.retrieve.scoring import rescore_many

    w = ScoringWeights(relevance=1.0, recency=0.1, importance=0.2, access=0.3,
                       recency_half_life_days=30.0)
    day = 86400.0
    got = rescore_many([1000 * day - 30 * day, None, 1000 * day + day], [0.7, 0.2, 0.5],
                       [3, 0, 50], [0.9, 0.5, 1.0], w, 1000 * day)
    acc3 = math.log1p(3) / math.log1p(20)
    assert got[0] == pytest.approx((0.9 + 0.1 * 0.5 + 0.2 * 0.7 + 0.3 * acc3, 0.9, 0.5, 0.7, acc3))
    assert got[1] == pytest.approx((0.5 + 0.2 * 0.2, 0.5, 0.0, 0.2, 0.0))  # undated: no recency
    assert got[2] == pytest.approx((1.0 + 0.1 + 0.1 + 0.3, 1.0, 1.0, 0.5, 1.0))  # future: age 0
    assert rescore_many([day], [0.5], [0], [1.0], w, None)[0][2] == 0.0  # no reference


# -- the learned last stage (latentmem/retrieve/learned.py) ---------------------------------

def _row(chars: int | None, asks: bool = False, speaker: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(text_chars=chars, asks=asks, speaker=speaker)


def test_learned_features_are_relative_to_the_candidates() -> None:
    x = features([0.9, 0.8, 0.7, 0.6], [100, 100, None, 1000], [False, True, False, False],
                 ["ana", "ana", "ana", "bot"])
    assert x.shape == (4, len(FEATURES))
    assert x[:, 1].tolist() == pytest.approx(np.log1p([0, 1, 2, 3]).tolist())
    # relative to the same speaker's candidates; no text counts as the median length
    assert x[:, 2].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0])
    assert x[:, 3].tolist() == [0.0, 1.0, 0.0, 0.0]
    y = features([0.9, 0.8], [10, 1000], [False, False], ["ana", "ana"])
    assert y[0, 2] < 0 < y[1, 2]
    assert features([], [], [], []).shape == (0, len(FEATURES))


def test_learned_rerank_reorders_only_the_head() -> None:
    # A model that only rewards length: the long third memory comes first.
    ranker = Ranker((0.0, 0.0, 1.0, 0.0), 0.0, (0.0,) * 4, (1.0,) * 4, depth=3)
    scored = [(1.0 - i / 10, f"id{i}", i, {"final": 1.0 - i / 10}) for i in range(5)]
    rows = {0: _row(10), 1: _row(10), 2: _row(1000), 3: _row(5000), 4: _row(5)}
    out = learned_rerank(scored, rows, ranker)
    assert [x[2] for x in out] == [2, 0, 1, 3, 4]  # 3 and 4 were below depth: unchanged
    assert all(0 < x[0] < 1 for x in out[:3]) and out[0][3]["learned"] > 0
    assert [x[0] for x in out] == sorted((x[0] for x in out), reverse=True)
    assert learned_rerank([], {}, ranker) == []


def test_shipped_ranker_loads_and_bad_files_are_refused(tmp_path: Path) -> None:
    ranker = default_ranker()
    assert len(ranker.weights) == len(FEATURES) and ranker.meta["fit"] == ["conv-26", "conv-30"]
    assert Ranker.from_json(ranker.to_json()) == ranker
    bad = tmp_path / "bad.json"
    for text in ("{", '{"features": ["score"]}', ranker.to_json().replace('"depth": 100', '"depth": 0')):
        bad.write_text(text)
        with pytest.raises(InvalidInputError, match="ranker"):
            Ranker.load(bad)
    with pytest.raises(InvalidInputError, match="cannot be read"):
        Ranker.load(tmp_path / "missing.json")


def test_memory_uses_the_configured_ranker(tmp_path: Path) -> None:
    # Rewarding questions only: the memory that asks comes first.
    path = tmp_path / "asks.json"
    path.write_text(Ranker((0.0, 0.0, 0.0, 1.0), 0.0, (0.0,) * 4, (1.0,) * 4).to_json())
    with Memory(tmp_path / "s", embedder="hash", ranker_path=str(path)) as m:
        m.add(["tea with lemon is nice", "do you like tea with lemon?"], user_id="u")
        hits = m.search("tea with lemon", user_id="u")
        assert hits[0].text == "do you like tea with lemon?" and "learned" in hits[0].components
    with Memory(tmp_path / "s2", embedder="hash", learned_rerank=False) as m:
        m.add(["tea with lemon"], user_id="u")
        assert "learned" not in m.search("tea", user_id="u")[0].components
