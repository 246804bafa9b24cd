"""Storage profiles (store/profiles.py) and compressed texts (store/textcodec.py, 008)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from latentmem import ConflictError, InvalidInputError, Memory
from latentmem.lifecycle.sleep import run_cycle
from latentmem.memory import DB_FILE
from latentmem.store.sqlite import Scope
from latentmem.store.textcodec import TRAIN_MIN
from latentmem.store.textcodec import register as register_functions

WORDS = ["river", "garden", "violin", "harbour", "lantern", "meadow", "quartz", "tundra"]


def _turns(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"role": "user", "name": "Ana" if i % 2 else "Bo",
             "content": f"turn {i}: the {WORDS[i % 8]} near the {WORDS[(i * 3) % 8]}, "
                        f"which we saw on day {i % 17} with Caroline"}
            for i in range(start, start + n)]


def _raw(home: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(home / DB_FILE)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_compact_profile_round_trips(tmp_path: Path) -> None:
    home = tmp_path / "c"
    with Memory(home, embedder="hash", profile="compact") as m:
        ids = m.add(_turns(TRAIN_MIN + 10), user_id="u", session_id="s1").ids
        rare = m.add("the pelican over the estuary", user_id="u", session_id="s2").ids[0]
        stats = m.stats()
        assert (stats["profile"], stats["vector_tier"]) == ("compact", "pq")
        assert m.search("pelican estuary", user_id="u")[0].id == rare
        assert m.search("Ana's well-known e-mail? \"quoted\" - (x)", user_id="u") is not None
    assert _raw(home, "PRAGMA page_size") == [(1024,)]
    (fts,) = _raw(home, "SELECT sql FROM sqlite_schema WHERE name = 'records_fts'")
    assert "detail = none" in str(fts[0])
    assert not _raw(home, "SELECT name FROM sqlite_schema WHERE name = 'records_user_speaker'")
    assert _raw(home, "SELECT DISTINCT typeof(text) FROM records") == [("blob",)]
    assert _raw(home, "SELECT DISTINCT length(vector) FROM records") == [(16,)]  # 64-d, 2-d PQ
    assert _raw(home, "SELECT count(*) FROM entity_mentions") == [(0,)]  # kept by default only
    with Memory(home, embedder="hash") as m:  # the profile comes from the store
        assert m.stats()["profile"] == "compact"
        assert m.get(ids[7]).text == _turns(8)[7]["content"]
        assert m.search("pelican", user_id="u", session_id="s2")[0].id == rare
        assert m.check()["ok"], m.check()["problems"]
    before = (home / DB_FILE).read_bytes()
    with pytest.raises(ConflictError, match="profile 'compact'.*profile='default'"):
        Memory(home, embedder="hash", profile="default")
    assert (home / DB_FILE).read_bytes() == before


def test_an_unknown_profile_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="profile"):
        Memory(tmp_path / "x", embedder="hash", profile="tiny")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("profile", ["default", "compact"])
def test_texts_compress_once_there_are_enough_and_again_as_the_store_grows(
        tmp_path: Path, profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import latentmem.store.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "TRAIN_MIN", 40)
    home = tmp_path / "s"
    with Memory(home, embedder="hash", profile=profile) as m:
        first = m.add(_turns(39), user_id="u").ids
        assert m.store.texts.generation == 0
        assert _raw(home, "SELECT DISTINCT typeof(text) FROM records") == [("text",)]
        m.add(_turns(1, 39), user_id="u")
        assert m.store.texts.generation == 1
        assert _raw(home, "SELECT DISTINCT typeof(text) FROM records") == [("blob",)]
        raw_bytes = _raw(home, "SELECT sum(length(text)) FROM records")[0][0]
        assert isinstance(raw_bytes, int)
        assert raw_bytes < 0.7 * sum(len(t["content"]) for t in _turns(40))
        m.add(_turns(120, 40), user_id="u")  # 4 x 40: trained again, everything re-encoded
        assert m.store.texts.generation == 2
        assert _raw(home, "SELECT generation, trained_on FROM text_dicts") == [(2, 160)]
        assert m.get(first[3]).text == _turns(4)[3]["content"]
        assert m.store.bm25("violin", Scope("u"), 200) != []
        assert m.check()["ok"], m.check()["problems"]
    with Memory(home, embedder="hash") as m:
        assert [m.get(i).text for i in first[:5]] == [t["content"] for t in _turns(5)]


def test_a_tool_reads_the_full_text_index_through_the_registered_functions(
        tmp_path: Path) -> None:
    home = tmp_path / "s"
    with Memory(home, embedder="hash") as m:
        m.add(_turns(TRAIN_MIN + 5), user_id="u")
    conn = sqlite3.connect(home / DB_FILE)
    try:
        with pytest.raises(sqlite3.OperationalError, match="latentmem_text"):
            conn.execute("SELECT index_text FROM records_indexed LIMIT 1").fetchall()
        register_functions(conn)
        (got,) = conn.execute("SELECT index_text FROM records_indexed WHERE rowid = 1").fetchone()
        assert got == f"Bo: {_turns(1)[0]['content']}"
        conn.execute("INSERT INTO records_fts(records_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        conn.close()


def test_derived_fields_and_history_in_a_compressed_store(tmp_path: Path) -> None:
    home = tmp_path / "s"
    with Memory(home, embedder="hash") as m:
        ids = m.add(_turns(TRAIN_MIN + 5), user_id="u").ids
        rid = ids[4]
        m.update(rid, title="Walk")
        assert m.get(rid).title == "Walk"
        m.update(rid, text="We walked to the harbour at dawn. It was cold.")
        rec = m.get(rid)  # a new text brings its own title, as before 008
        assert (rec.title, rec.text) == ("We walked to the harbour at dawn.",
                                         "We walked to the harbour at dawn. It was cold.")
        assert [e["event"] for e in m.history(rid)] == ["ADD", "UPDATE", "UPDATE"]
        assert m.history(rid)[2]["old_text"] == _turns(5)[4]["content"]
        m.delete(ids[5])
        gone = m.history(ids[5])
        assert [(e["event"], e["new_text"]) for e in gone] == [("ADD", None), ("DELETE", None)]
        assert m.store.bm25("dawn", Scope("u"), 5)[0][0] == m.store.get_row(rid).rowid


@pytest.mark.parametrize("profile", ["default", "compact"])
def test_archive_and_undo_keep_the_text(tmp_path: Path, profile: str) -> None:
    with Memory(tmp_path / "s", embedder="hash", profile=profile) as m:
        ids = m.add(_turns(TRAIN_MIN + 20), user_id="u").ids
        want = m.get(ids[5])
        report = run_cycle(m.core, phases=("forget",), now=time.time() + 5000 * 86_400.0)
        assert report.phases["forget"]["archived"] == len(ids) and m.store.count() == 0
        assert [e["event"] for e in m.history(ids[5])][0] == "ADD"
        m.undo(m.explain(ids[5])[-1]["seq"])
        got = m.get(ids[5])
        assert (got.text, got.title, got.content_hash) == (want.text, want.title,
                                                           want.content_hash)
        assert m.search(want.text or "", user_id="u", k=1)[0].id == ids[5]


def test_next_edges_live_in_the_records_and_read_as_edges(tmp_path: Path) -> None:
    home = tmp_path / "s"
    with Memory(home, embedder="hash") as m:
        ids = m.add(_turns(4), user_id="u", session_id="s1").ids
        ids += m.add(_turns(3, 4), user_id="u", session_id="s1").ids
        nexts = sorted((ids.index(e.src), ids.index(e.dst)) for e in m.store.all_edges("u")
                       if e.type == "next")
        assert nexts == [(i, i + 1) for i in range(6)]
        assert _raw(home, "SELECT count(*) FROM edges WHERE type = 'next'") == [(0,)]
        created = m.get(ids[4]).created_at
        (into,) = [e for e in m.edges(ids[4]) if e.type == "next" and e.dst == ids[4]]
        assert (into.src, into.weight, into.created_at) == (ids[3], 1.0, created)
        assert sorted(m.store.next_pairs_around([ids[2]], 1)) == [(ids[1], ids[2]), (ids[2], ids[3])]
        m.delete(ids[4])  # its edges go with it, as rows did
        assert not [e for e in m.store.all_edges("u") if ids[4] in (e.src, e.dst)]
        assert [e for e in m.edges(ids[5]) if e.type == "next"] == [
            e for e in m.edges(ids[5]) if e.type == "next" and e.src == ids[5]]
        # an edge of another form is kept as a row
        m.store.add_edges([type(into)(ids[0], ids[6], "next", 0.5)])
        assert (ids[0], ids[6], 0.5) in {(e.src, e.dst, e.weight) for e in m.edges(ids[6])}


def test_the_cli_makes_a_compact_store_and_keeps_its_profile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from latentmem.cli import main

    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    home = str(tmp_path / "c")
    assert main(["--home", home, "--profile", "compact", "add", "I moved to Lisbon"]) == 0
    capsys.readouterr()
    assert main(["--home", home, "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["profile"], stats["vector_tier"]) == ("compact", "pq")
    assert main(["--home", home, "--profile", "default", "stats"]) != 0
    assert "made with profile 'compact'" in capsys.readouterr().err


def test_bench_storage_reports_bytes_at_scale(tmp_path: Path) -> None:
    import json

    from latentmem.cli import main
    from tests.test_bench import _locomo

    text = tmp_path / "t.txt"
    text.write_text("".join(f"src\tsentence {i} about the {WORDS[i % 8]}\n" for i in range(70)))
    out = tmp_path / "s.json"
    assert main(["bench", "storage", "--data", str(_locomo(tmp_path)), "--embedder", "hash",
                 "--cache", str(tmp_path / "c.db"), "--json", str(out), "--quiet",
                 "--configs", "default,compact,lossy", "--tiers", "", "--no-lifecycle",
                 "--scale", "60", "--scale-text", str(text)]) == 0
    scale = {r["name"]: r for r in json.loads(out.read_text())["scale"]}
    assert list(scale) == ["default", "compact"]  # the lossy mode is measured on LoCoMo only
    assert all(r["memories"] == 60 for r in scale.values())
    # compact keeps no embedding cache (its empty table's pages remain)
    assert scale["default"]["embed_cache_bytes_per_memory"] > 64 * 4
    assert scale["compact"]["embed_cache_bytes_per_memory"] < 64
    assert scale["compact"]["bytes_per_memory_vacuumed"] < scale["default"]["bytes_per_memory_vacuumed"]
    only = tmp_path / "only.json"
    assert main(["bench", "storage", "--data", "unused.json", "--scale-only", "--scale", "20",
                 "--scale-text", str(text), "--configs", "compact", "--tiers", "",
                 "--json", str(only)]) == 0
    assert [r["name"] for r in json.loads(only.read_text())["scale"]] == ["compact"]


def test_a_dictionary_trained_by_another_process_is_used_for_the_next_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import latentmem.store.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "TRAIN_MIN", 40)
    home = tmp_path / "s"
    with Memory(home, embedder="hash") as a, Memory(home, embedder="hash") as b:
        a.add(_turns(40), user_id="u")  # a trains generation 1
        late = b.add("written by the other process after the training", user_id="u").ids[0]
        a.add(_turns(120, 40), user_id="u")  # a trains generation 2 and drops generation 1
        again = b.add("and again after the second training", user_id="u").ids[0]
        assert _raw(home, "SELECT generation FROM text_dicts") == [(2,)]
        for m in (a, b):
            assert m.get(late).text == "written by the other process after the training"
            assert m.get(again).text == "and again after the second training"


def test_an_fp32_store_converts_to_the_defaults_int8_from_the_cli(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A store made before profiles keeps fp32 vectors (and its index file) until asked."""
    import json

    from latentmem.cli import main
    from latentmem.core import INDEX_FILE

    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    home = tmp_path / "old"
    with Memory(home, embedder="hash", vector_tier="fp32") as m:
        m.add(_turns(40), user_id="ana", session_id="s1")
        before = [h.id for h in m.search("the violin near the garden", user_id="ana", k=5)]
    assert (home / INDEX_FILE).exists()
    assert main(["--home", str(home), "convert-vectors", "--tier", "int8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"from": "fp32", "to": "int8", "vectors": 40}
    with Memory(home, embedder="hash") as m:
        assert m.stats()["vector_tier"] == "int8"
        after = [h.id for h in m.search("the violin near the garden", user_id="ana", k=5)]
        assert after[:3] == before[:3]
        assert m.check()["ok"]
    assert not (home / INDEX_FILE).exists()  # int8 rebuilds its index from the store
    with pytest.raises(SystemExit):
        main(["--home", str(home), "convert-vectors", "--tier", "fp8"])
    assert "invalid choice" in capsys.readouterr().err
