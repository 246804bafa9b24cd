"""The importance controller: features, learning from feedback, persistence, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from latentmem import Memory
from latentmem.bench.controller import auc
from latentmem.cli import main
from latentmem.encode import segment
from latentmem.errors import InvalidInputError, NotFoundError
from latentmem.lifecycle.controller import FEATURES, Controller, novelties, text_features
from tests.conftest import count_rows

# Short chat filler and long, specific first-person facts: what a user might find useful
# is set by each test, so learning can be checked against the prior's own preference.
FILLER = ["haha thanks, you too!", "wow, that is so cool!", "nice, glad to hear it :)",
          "omg congrats!!", "sounds great, enjoy!", "yeah totally, same here!",
          "lol sure, why not?", "awesome, thank you!"]
FACTS = ["I moved to Lisbon on 3 May 2023 for a job at the Gulbenkian museum.",
         "My sister Ana adopted a grey terrier called Pastel last week.",
         "We bought a flat in Porto in 2021 and renovated the kitchen ourselves.",
         "I ran the Berlin marathon in September in 3 hours 41 minutes.",
         "My favourite book is Blindness by Saramago; I reread it every winter.",
         "I started teaching pottery at the Alfama community centre on Mondays.",
         "Our daughter Rosa was born on 12 March 2020 in Coimbra.",
         "I switched from Python to Rust at work in January for the storage engine."]


def _weights(m: Memory) -> np.ndarray:
    return m.controller.weights.copy()


def _feedback_rows(m: Memory) -> int:
    return count_rows(m, "feedback")


def test_features_are_deterministic_and_finite() -> None:
    texts = ["", "   ", "?", "I love tea.", "x" * 5000, "Ünïcödé ✓ 3.5 kg on 2024-01-02 at 10:30",
             *FILLER, *FACTS]
    for text in texts:
        for role in (None, "user", "assistant"):
            a = text_features(text, role, 0.3)
            assert a.shape == (len(FEATURES),)
            assert np.isfinite(a).all(), text
            assert np.array_equal(a, text_features(text, role, 0.3))
    assert text_features("hi", "user", 0.0)[FEATURES.index("role_user")] > 0
    assert text_features("hi", None, 0.0)[FEATURES.index("role_user")] == 0


def test_novelty_against_earlier_vectors() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    batch = np.vstack([vecs, vecs[:1]])  # the last repeats the first
    out = novelties(np.zeros((0, 8), dtype=np.float32), batch)
    assert out[0] == 1.0  # nothing before it
    assert out[3] == pytest.approx(0.0, abs=1e-6)
    assert all(0.0 <= v <= 2.0 for v in out)
    # The window: a repeat older than the window is novel again.
    far = novelties(vecs[:1], np.vstack([vecs[1:], vecs[:1]]), window=2)
    assert far[-1] > 0.0


def test_untrained_importance_is_the_prior(mem: Memory) -> None:
    receipt = mem.add([{"role": "user", "content": t} for t in FACTS[:3] + FILLER[:3]],
                      user_id="u", session_id="s")
    for rid in receipt.ids:
        rec = mem.get(rid)
        assert rec.text is not None
        expected = min(0.98, max(0.02, segment.importance_prior(rec.text)))
        assert rec.importance == pytest.approx(expected, abs=1e-4)
        assert 0.0 <= rec.importance <= 1.0
    given = mem.add("pinned", user_id="u", importance=0.9)
    assert mem.get(given.ids[0]).importance == 0.9


def test_controller_off_keeps_the_exact_prior(tmp_path: Path) -> None:
    with Memory(tmp_path / "s", embedder="hash", controller=False) as m:
        rid = m.add("haha ok", user_id="u").ids[0]
        assert m.get(rid).importance == segment.importance_prior("haha ok")


def test_feedback_learns_a_pattern_the_prior_does_not_hold(mem: Memory) -> None:
    # Here the user finds the filler useful and the facts not: the opposite of the prior.
    seen_f = mem.add(FILLER[:6], user_id="u", session_id="a").ids
    seen_t = mem.add(FACTS[:6], user_id="u", session_id="b").ids
    fresh = FILLER[6:] + FACTS[6:]
    labels = [True] * 2 + [False] * 2
    before = mem.controller.score(np.stack([text_features(t, None, 1.0) for t in fresh]))
    assert auc(before, labels) < 0.5
    for _ in range(3):
        for rid in seen_f:
            mem.feedback(rid, True, user_id="u")
        for rid in seen_t:
            mem.feedback(rid, False, user_id="u")
    after = mem.controller.score(np.stack([text_features(t, None, 1.0) for t in fresh]))
    assert auc(after, labels) == 1.0
    assert (after[:2] > before[:2]).all() and (after[2:] < before[2:]).all()
    assert mem.controller.events == 36
    # New memories are scored with the learned model.
    new = mem.add([FILLER[6], FACTS[6]], user_id="u", session_id="c").ids
    assert mem.get(new[0]).importance > mem.get(new[1]).importance


def test_feedback_moves_the_memory_itself(mem: Memory) -> None:
    rid = mem.add(FACTS[0], user_id="u").ids[0]
    start = mem.get(rid).importance
    up = mem.feedback(rid, True)
    assert up > start and mem.get(rid).importance == up
    down = mem.feedback(rid, False)
    assert down < up
    assert _feedback_rows(mem) == 2


def test_state_round_trips_through_the_store(tmp_path: Path) -> None:
    with Memory(tmp_path / "s", embedder="hash") as m:
        ids = m.add(FILLER[:4] + FACTS[:4], user_id="u", session_id="s").ids
        for i, rid in enumerate(ids):
            m.feedback(rid, i < 4)
        weights, events, buffer = _weights(m), m.controller.events, list(m.controller.buffer_y)
        assert not np.allclose(weights, m.controller.prior_weights)
    with Memory(tmp_path / "s", embedder="hash") as m:
        assert np.allclose(_weights(m), weights, atol=1e-5)
        assert m.controller.events == events and m.controller.buffer_y == buffer
        m.feedback(ids[0], True)  # learning goes on from the saved buffer
        assert m.controller.events == events + 1
        assert len(m.controller.buffer_y) == len(buffer) + 1


def test_feedback_on_unknown_or_foreign_id_changes_nothing(mem: Memory) -> None:
    rid = mem.add(FACTS[0], user_id="ana").ids[0]
    importance = mem.get(rid).importance
    with pytest.raises(NotFoundError):
        mem.feedback("01NOTANID0000000000000000", True)
    with pytest.raises(NotFoundError):
        mem.feedback(rid, True, user_id="bo")
    assert _feedback_rows(mem) == 0
    assert mem.controller.events == 0
    assert np.array_equal(_weights(mem), mem.controller.prior_weights)
    assert mem.get(rid).importance == importance
    assert mem.store.load_model("controller") is None


@pytest.mark.parametrize("useful", [1, 0, "yes", None, 0.5, np.bool_(True)])
def test_feedback_needs_a_bool(mem: Memory, useful: object) -> None:
    rid = mem.add(FACTS[0], user_id="u").ids[0]
    with pytest.raises(InvalidInputError, match="useful must be True or False"):
        mem.feedback(rid, useful)  # type: ignore[arg-type]
    assert _feedback_rows(mem) == 0 and mem.controller.events == 0
    with pytest.raises(InvalidInputError):
        mem.feedback(123, True)  # type: ignore[arg-type]


@pytest.mark.sqlite_only
def test_context_records_the_implicit_signal(mem: Memory) -> None:
    mem.add(FACTS + FILLER, user_id="u", session_id="s")
    ctx = mem.context("where did I move and when?", user_id="u")
    mem.settle()  # the implicit signal is written after context() returns
    rows = mem.store.conn.execute(
        "SELECT record_id, useful, source FROM feedback ORDER BY seq").fetchall()
    assert 1 <= len(rows) <= 5
    assert {r[2] for r in rows} == {"context"} and all(r[1] == 1 for r in rows)
    assert {r[0] for r in rows} <= set(ctx.ids)
    assert mem.controller.packed_n == len(rows)


def test_context_without_implicit_weight_records_nothing(tmp_path: Path) -> None:
    with Memory(tmp_path / "s", embedder="hash", controller_implicit_weight=0.0) as m:
        m.add(FACTS, user_id="u")
        m.context("marathon", user_id="u")
        m.settle()
        assert _feedback_rows(m) == 0


def test_rescore_refreshes_stored_importance(mem: Memory) -> None:
    ids = mem.add(FILLER[:4] + FACTS[:4], user_id="u", session_id="s").ids
    other = mem.add(FACTS[4:] + FILLER[4:], user_id="u", session_id="t").ids
    for i, rid in enumerate(ids):
        mem.feedback(rid, i < 4)
    stale = {rid: mem.get(rid).importance for rid in other}
    assert mem.controller.rescore(mem.store) > 0
    _, x = mem.controller.features_of(mem.store, other)
    fresh = mem.controller.score(x)
    for rid, score in zip(other, fresh, strict=True):
        assert mem.get(rid).importance == pytest.approx(score, abs=1e-4)
    assert any(abs(mem.get(r).importance - stale[r]) > 1e-3 for r in other)
    # Memories with feedback of their own stay pulled towards it; a second pass is a no-op.
    assert mem.get(ids[0]).importance > mem.get(ids[-1]).importance
    assert mem.controller.rescore(mem.store) == 0


def test_saved_state_for_other_features_is_ignored(mem: Memory) -> None:
    mem.store.save_model("controller", json.dumps({"version": 1, "features": ["bias"],
                                                   "weights": [5.0]}))
    c = Controller.load(mem.store)
    assert np.array_equal(c.weights, c.prior_weights)


def test_auc_by_hand() -> None:
    assert auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auc([0.5, 0.5], [True, False]) == 0.5
    assert math.isnan(auc([0.1, 0.2], [True, True]))


def _conversation(name: str, topic: str) -> dict[str, object]:
    turns = []
    for s in range(1, 3):
        facts = [f"I {verb} the {topic} club in Lisbon on {s} May 2023 with my friend Ana."
                 for verb in ("joined", "visited", "left")]
        filler = ["haha thanks!", "wow, so cool!", "nice, glad to hear it!"]
        session = [text for pair in zip(facts, filler, strict=True) for text in pair]
        turns.append([{"speaker": "Ana" if i % 2 else "Bo", "dia_id": f"D{s}:{i + 1}", "text": t}
                      for i, t in enumerate(session)])
    conv: dict[str, object] = {"speaker_a": "Ana", "speaker_b": "Bo"}
    for s, session in enumerate(turns, 1):
        conv[f"session_{s}"] = session
        conv[f"session_{s}_date_time"] = f"1:00 pm on {s} May, 2023"
    qa = [{"question": f"When did Bo join the {topic} club?", "answer": "May",
           "evidence": [f"D{s}:1"], "category": 2} for s in (1, 2)]
    qa += [{"question": f"Who went to the {topic} club?", "answer": "Ana",
            "evidence": ["D1:3", "D2:5"], "category": 1}]
    return {"sample_id": name, "conversation": conv, "qa": qa}


def test_bench_controller_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "locomo.json"
    data.write_text(json.dumps([_conversation("conv-a", "chess"),
                                _conversation("conv-b", "rowing")]))
    out = tmp_path / "r.json"
    assert main(["bench", "controller", "--data", str(data), "--fit", "conv-a",
                 "--embedder", "hash", "--cache", str(tmp_path / "c.db"), "--events", "5,10",
                 "--seeds", "2", "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["fit"] == ["conv-a"] and result["held_out"] == ["conv-b"]
    assert set(result["auc_by_events"]) == {"0", "5", "10"}
    assert result["auc_by_events"]["0"] == pytest.approx(result["prior_auc"], abs=0.05)
    assert all(0.0 <= v <= 1.0 for v in result["auc_by_events"].values())
    assert set(result["retrieval"]) == {"before", "after"}
    assert "held-out AUC" in capsys.readouterr().out
    assert main(["bench", "controller", "--data", str(data), "--fit", "conv-a,conv-b",
                 "--embedder", "hash", "--cache", str(tmp_path / "c.db"), "--quiet"]) == 2
