"""The topic level (latentmem/retrieve/topics.py): sessions roll up into topics."""

from __future__ import annotations

from pathlib import Path

from latentmem import Memory
from latentmem.retrieve import topics

THEMES = {
    "garden": "tomatoes basil compost seedlings greenhouse watering",
    "sailing": "harbour regatta mainsail tide anchor dinghy",
    "taxes": "receipts deduction invoice accountant refund ledger",
    "music": "violin rehearsal orchestra concerto tuning bow",
}


def _sessions(m: Memory, per_theme: int = 4) -> dict[str, str]:
    """Sessions of each theme; returns session id -> theme."""
    theme_of = {}
    for theme, words in THEMES.items():
        for i in range(per_theme):
            sid = f"{theme}-{i}"
            theme_of[sid] = theme
            m.add([f"{words} {j}" for j in range(5)],
                  user_id="ana", session_id=sid)
    return theme_of


def test_sessions_of_a_theme_share_a_topic_with_its_key_memories(tmp_path: Path) -> None:
    with Memory(tmp_path / "s", embedder="hash") as m:
        theme_of = _sessions(m)
        shown = m.topics("ana")
        assert len(shown) == 4  # ceil(sqrt(16))
        for topic in shown:
            themes = {theme_of[s] for s in topic["sessions"]}
            assert len(themes) == 1, topic["sessions"]
            assert len(topic["key_memories"]) == topics.KEY_MEMORIES
            assert all(themes.pop() in THEMES and k["text"] for k in topic["key_memories"][:1])
        assert sorted(s for t in shown for s in t["sessions"]) == sorted(theme_of)
        assert m.topics("nobody") == []


def test_topic_weight_adds_the_topic_level_to_the_score(tmp_path: Path) -> None:
    with Memory(tmp_path / "s", embedder="hash", topic_weight=0.2) as m:
        _sessions(m)
        hits = m.search("regatta mainsail", user_id="ana", k=5)
        assert all("topic" in h.components for h in hits)
        assert hits[0].components["topic"] == 0.2  # the best topic is sailing's
        # A session newer than the topics joins its nearest one.
        m.add("a new regatta at the harbour", user_id="ana", session_id="late")
        hits = m.search("a new regatta at the harbour", user_id="ana", k=30)
        late = [h for h in hits if h.record.session_id == "late"]
        assert late and late[0].components["topic"] == 0.2
    with Memory(tmp_path / "off", embedder="hash") as m:  # off by default
        _sessions(m, per_theme=1)
        assert all("topic" not in h.components for h in m.search("regatta", user_id="ana"))


def test_a_cycle_keeps_topics_and_a_deletion_drops_them(tmp_path: Path) -> None:
    with Memory(tmp_path / "s", embedder="hash") as m:
        _sessions(m, per_theme=2)
        assert topics.load(m.store, "ana") is None  # a search builds them in memory only
        report = m.sleep(phases=["optimise"])
        assert report.phases["optimise"]["topics_built"] == 1
        kept = topics.load(m.store, "ana")
        assert kept is not None and kept.signature == topics.signature(m.store, "ana")
        assert m.sleep(phases=["optimise"]).phases["optimise"]["topics_built"] == 0  # unchanged
        m.add("someone else's note", user_id="bo", session_id="b1")  # another user changed
        assert m.sleep(phases=["optimise"]).phases["optimise"]["topics_built"] == 1  # bo's only
        assert topics.load(m.store, "ana").to_json() == kept.to_json()  # ana's untouched
        victim = m.all("ana")[0].id
        m.delete(victim, user_id="ana")
        assert topics.load(m.store, "ana") is None  # derived from the deleted vector
        again = m.topics("ana")
        assert victim not in {k["id"] for t in again for k in t["key_memories"]}


def test_cli_topics(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from latentmem.cli import main

    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    home = tmp_path / "s"
    with Memory(home, embedder="hash") as m:
        _sessions(m, per_theme=1)
    assert main(["--home", str(home), "--user", "ana", "topics", "--rebuild", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert sorted(s for t in shown for s in t["sessions"]) == [f"{t}-0" for t in sorted(THEMES)]
    assert main(["--home", str(home), "--user", "ana", "topics"]) == 0
    assert "topic 0:" in capsys.readouterr().out
