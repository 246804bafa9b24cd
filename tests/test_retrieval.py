"""Retrieval components: fusion, diffusion over next edges, speaker match, switches."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentmem import Memory
from latentmem.encode.fake import HashEmbedder
from latentmem.graph.diffusion import chains, neighbourhood, spread
from latentmem.retrieve.hybrid import dense_text, named_speakers


def test_chains_and_neighbourhood() -> None:
    forward, backward = chains([("a", "b"), ("b", "c"), ("c", "d"), ("x", "y")])
    assert forward["a"] == "b" and backward["d"] == "c"
    assert neighbourhood(["b"], forward, backward, 1) == {"a", "c"}
    assert neighbourhood(["b"], forward, backward, 2) == {"a", "c", "d"}
    assert neighbourhood(["y"], forward, backward, 3) == {"x"}


def test_spread_weights_by_distance() -> None:
    forward, backward = chains([("a", "b"), ("b", "c")])
    got = spread({"a": 1.0, "b": 0.0, "c": 0.0}, forward, backward, hops=2, gain=0.5)
    assert got["b"] == pytest.approx(0.5)  # one hop from a
    assert got["c"] == pytest.approx(0.25)  # two hops: halved
    assert got["a"] == pytest.approx(0.0)


def test_named_speakers_whole_words() -> None:
    speakers = ["Ana", "Jon", "Anabel"]
    assert named_speakers("What did Ana say about Lisbon?", speakers) == ["Ana"]
    assert named_speakers("jon's plans", speakers) == ["Jon"]
    assert named_speakers("Anatomy class", speakers) == []
    # A capitalised name is named only in capitals, unless the query has none at all.
    assert named_speakers("What will happen in May?", ["Will", "May"]) == ["May"]
    assert named_speakers("what will happen", ["Will"]) == ["Will"]
    assert named_speakers("What did the Assistant say?", ["assistant"]) == ["assistant"]
    many = [f"Person{i}" for i in range(5000)] + ["Mary-Jane", "@bob", " "]
    assert named_speakers("Did MARY-JANE and @bob meet Person7?", many) == [
        "Person7", "Mary-Jane", "@bob"]  # in the scope's order


def test_dense_text_takes_the_named_speakers_out() -> None:
    assert dense_text("Which cities has Jon visited?", ["Jon"]) == "Which cities has visited?"
    assert dense_text("What do MELANIE's kids like?", ["Melanie"]) == "What do kids like?"
    assert dense_text("Did Jon and Gina both dance?", ["Jon", "Gina"]) == "Did and both dance?"
    assert dense_text("Jonathan's plans", ["Jon"]) == "Jonathan's plans"  # whole words only
    assert dense_text("Jon?", ["Jon"]) == "Jon?"  # nothing would be left: as written
    assert dense_text("What did Ana say?", []) == "What did Ana say?"
    assert dense_text("Will Will come?", ["Will"]) == "come?"  # both capitalised: both go


def _conversation(m: Memory) -> list[str]:
    msgs = [
        {"role": "user", "name": "Ana", "content": "Guess where I went last weekend?"},
        {"role": "assistant", "name": "Bo", "content": "Tell me!"},
        {"role": "user", "name": "Ana", "content": "Porto, to see the bridge at night."},
        {"role": "assistant", "name": "Bo", "content": "Nice. Did you like it?"},
        {"role": "user", "name": "Ana", "content": "Loved every minute, I want to go back."},
    ]
    filler = [
        {"role": "user", "name": "Bo", "content": f"unrelated chatter number {i} about groceries"}
        for i in range(30)
    ]
    ids = m.add(msgs, user_id="u", session_id="s1").ids
    m.add(filler, user_id="u", session_id="s2")
    return ids


def test_diffusion_pulls_in_the_neighbouring_turn(tmp_path: Path) -> None:
    # A wide hash embedder, so that unrelated filler really is unrelated.
    with Memory(tmp_path / "a", embedder=HashEmbedder(1024)) as m:
        ids = _conversation(m)
        hits = m.search("Porto bridge", user_id="u", k=3)
        by_id = {h.id: h for h in hits}
        assert hits[0].id == ids[2]
        # "Nice. Did you like it?" shares no word with the query; its neighbour does.
        assert ids[3] in by_id and by_id[ids[3]].components["diffusion"] > 0
    with Memory(tmp_path / "b", embedder=HashEmbedder(1024), diffusion_hops=0) as m:
        ids = _conversation(m)
        hits = m.search("Porto bridge", user_id="u", k=3)
        assert all("diffusion" not in h.components for h in hits)
        assert ids[3] not in {h.id for h in hits}


def test_speaker_boost_prefers_the_named_speaker(tmp_path: Path) -> None:
    with Memory(tmp_path / "s", embedder="hash") as m:
        m.add([
            {"role": "user", "name": "Ana", "content": "I painted a sunset over the river."},
            {"role": "user", "name": "Bo", "content": "I painted a sunset over the river too."},
        ], user_id="u")
        top = m.search("what did Bo paint", user_id="u", k=2)[0]
        assert top.record.speaker == "Bo" and top.components["speaker"] > 0


@pytest.mark.parametrize(
    "settings",
    [
        {"fusion": "rrf"},
        {"use_bm25": False},
        {"use_dense": False},
        {"diffusion_hops": 0, "speaker_boost": 0.0, "speaker_names_in_vector": True},
        {"time_boost": 0.0, "session_boost": 0.0, "listing_diversity": 0.0},
        {"entity_gain": 0.3, "session_centroid": 0.2, "session_diversity": 0.1, "mmr": 0.2,
         "maxsim_weight": 0.3},
    ],
)
def test_every_component_can_be_switched_off(tmp_path: Path, settings: dict) -> None:
    with Memory(tmp_path / "x", embedder="hash", **settings) as m:
        ids = _conversation(m)
        hits = m.search("Porto bridge at night", user_id="u", k=3)
        assert hits and hits[0].id == ids[2]
        assert 0.0 <= hits[0].components["relevance"] <= 1.0


def test_diffusion_stays_inside_the_scope(tmp_path: Path) -> None:
    with Memory(tmp_path / "iso", embedder="hash") as m:
        _conversation(m)
        m.add([{"role": "user", "name": "Eve", "content": "Porto bridge secrets of eve"}],
              user_id="eve", session_id="s1")
        for hit in m.search("Porto bridge", user_id="u", k=50):
            assert hit.record.user_id == "u"
        for hit in m.search("Porto bridge", user_id="u", session_id="s2", k=50):
            assert hit.record.session_id == "s2"
