"""Storage tiers (fp32, fp16, int8, pq), the slim layout of migration 006, ``bench storage``.
Profiles and compressed texts (migration 008) are in test_storage_profiles.py."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from latentmem import ConflictError, InvalidInputError, Memory
from latentmem.cli import main
from latentmem.encode import segment
from latentmem.encode.base import get_embedder
from latentmem.inputs import index_text_for
from latentmem.lifecycle.sleep import run_cycle
from latentmem.memory import DB_FILE, INDEX_FILE
from latentmem.store import migrate
from latentmem.store.codec import PQ_TRAIN_MIN, TIERS, VectorCodec
from latentmem.store.sqlite import Scope
from latentmem.store.vector_index import FaissIndex
from tests.conftest import LOCOMO_DEV, require_shared
from tests.test_bench import _locomo

# Top-10 overlap with exact fp32 search that each tier must keep on the fixed set of
# _clustered(3000, 60); measured: fp32 1.000, fp16 1.000, int8 0.990, pq 0.888. (On real
# MiniLM vectors of LoCoMo pq keeps more, 0.93-0.96: see latentmem/store/codec.py.)
BOUND = {"fp32": 0.99, "fp16": 0.99, "int8": 0.97, "pq": 0.85}


def _texts(n: int) -> list[str]:
    words = ["river", "garden", "violin", "harbour", "lantern", "meadow", "quartz", "tundra"]
    return [f"note {i}: the {words[i % 8]} near the {words[(i * 3) % 8]} number {i % 13}"
            for i in range(n)]


def _clustered(n: int, queries: int, dim: int = 384, seed: int = 7
               ) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors shaped like sentence embeddings: topic centres plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim)).astype(np.float32)
    x = centres[rng.integers(0, 40, n)] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)
    q = x[rng.integers(0, n, queries)] + 0.6 * rng.standard_normal((queries, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def _raw(home: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(home / DB_FILE)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("tier", TIERS)
def test_each_tier_round_trips(tmp_path: Path, tier: str) -> None:
    home = tmp_path / "s"
    with Memory(home, embedder="hash", vector_tier=tier) as m:
        m.add(_texts(PQ_TRAIN_MIN + 20), user_id="u", session_id="s1")
        target = m.add("I moved to Lisbon in May", user_id="u", speaker="Ana", session_id="s2").ids[0]
        assert m.search("Lisbon", user_id="u")[0].record.id == target
        assert m.stats()["vector_tier"] == tier
    with Memory(home, embedder="hash") as m:  # the tier comes from the store
        assert m.stats()["vector_tier"] == tier
        assert m.index.count() == m.stats()["records"] == PQ_TRAIN_MIN + 21
        assert m.search("where did Ana move? Lisbon", user_id="u")[0].record.id == target
        assert m.search("Lisbon", user_id="u", session_id="s2")[0].record.id == target
        vec = m.get(target, include_vector=True).vector
        assert vec is not None and abs(float(np.linalg.norm(vec)) - 1.0) < 0.05
        codec = m.store.codec
        expected = {"fp32": 4 * 64, "fp16": 2 * 64, "int8": 64 + 4, "pq": codec.pq_bytes}[tier]
        sizes = {int(n) for (n,) in _raw(home, "SELECT DISTINCT length(vector) FROM records")}
        assert sizes == {expected}
    assert (home / INDEX_FILE).exists() == (tier == "fp32")  # compact tiers keep one copy


@pytest.mark.parametrize("tier", TIERS)
def test_dense_accuracy_within_the_stated_bound(tier: str) -> None:
    """The engine's dense path (index proposes 100, stored vectors rescore) against
    exact fp32 search, on a fixed set."""
    x, queries = _clustered(3000, 60)
    codec = VectorCodec(tier, x.shape[1])
    if tier == "pq":
        codec.train(x[:PQ_TRAIN_MIN])
    stored = codec.decode_many(codec.encode(x))
    index = FaissIndex(x.shape[1], codec)
    index.add("u", np.arange(1, len(x) + 1), x)
    overlaps = []
    for q in queries:
        ids, _ = index.search("u", q, 100)
        cands = ids - 1
        got = cands[np.argsort(-(stored[cands] @ q), kind="stable")[:10]]
        exact = np.argsort(-(x @ q), kind="stable")[:10]
        overlaps.append(len(set(got) & set(exact)) / 10)
    assert np.mean(overlaps) >= BOUND[tier], np.mean(overlaps)


def test_pq_narrowed_search_matches_the_full_scan() -> None:
    x, queries = _clustered(600, 5, dim=64)
    codec = VectorCodec("pq", 64)
    codec.train(x)
    index = FaissIndex(64, codec)
    rowids = np.arange(10, 10 + len(x))
    index.add("u", rowids, x)
    index.remove("u", rowids[:50])
    allowed = rowids[::3]
    for q in queries:
        got, _ = index.search("u", q, 10, allowed)
        assert set(got) <= set(allowed[allowed >= rowids[50]])
        decoded = codec.decode_many(codec.encode(x))
        mask = np.isin(rowids, got)
        assert np.allclose(np.sort(decoded[mask] @ q), np.sort(index.search("u", q, 10, got)[1]),
                           atol=1e-5)
    assert index.count() == len(x) - 50


def test_tier_conflicts_are_clear(tmp_path: Path) -> None:
    home = tmp_path / "s"
    with Memory(home, embedder="hash", vector_tier="fp16") as m:
        m.add("hello there", user_id="u")
    with pytest.raises(ConflictError, match=r"keeps its vectors as fp16.*vector_tier='int8'"):
        Memory(home, embedder="hash", vector_tier="int8")
    with pytest.raises(InvalidInputError, match="vector_tier must be one of"):
        Memory(tmp_path / "t", embedder="hash", vector_tier="fp8")
    with Memory(home, embedder="hash", vector_tier="fp16") as m:  # the same tier is fine
        assert m.stats()["records"] == 1
    with pytest.raises(InvalidInputError, match="divisible"):
        VectorCodec("pq", 63)


def test_convert_on_request(tmp_path: Path) -> None:
    home = tmp_path / "s"
    with Memory(home, embedder="hash", vector_tier="fp32") as m:  # the tier with an index file
        ids = m.add(_texts(PQ_TRAIN_MIN + 5), user_id="u").ids
    assert (home / INDEX_FILE).exists()
    with Memory(home, embedder="hash") as m:
        assert m.convert_vectors("pq") == len(ids)
        assert m.store.codec.pq is not None and m.index.pq is not None
        assert m.search(_texts(8)[7], user_id="u")[0].record.id == ids[7]
    assert not (home / INDEX_FILE).exists()
    with Memory(home, embedder="hash", vector_tier="pq") as m:
        assert m.search(_texts(8)[7], user_id="u")[0].record.id == ids[7]
        m.convert_vectors("fp32")
    with Memory(home, embedder="hash", vector_tier="fp32") as m:
        assert m.search(_texts(8)[7], user_id="u")[0].record.id == ids[7]


def test_slim_layout_keeps_each_text_once(tmp_path: Path) -> None:
    home = tmp_path / "s"
    with Memory(home, embedder="hash") as m:
        rid = m.add("We went hiking. It rained a lot. Then we had tea.", user_id="u",
                    speaker="Ana").ids[0]
        rec = m.get(rid)
        assert rec.summary == segment.derive_summary(rec.text or "")
        assert m.store.get_row(rid).index_text == index_text_for(rec.text or "", "Ana")
        (raw,) = _raw(home, "SELECT index_text, summary, title, content_hash FROM records")
        assert raw == (None, None, "", "")  # each derived from the text (006, 008)
        assert rec.title == segment.derive_title(rec.text or "") and rec.content_hash
        assert _raw(home, "SELECT count(*) FROM history") == [(0,)]  # the ADD is the record
        assert m.history(rid)[0]["new_text"] == rec.text
        m.update(rid, title="Hike")
        assert m.get(rid).title == "Hike"
        assert _raw(home, "SELECT title FROM records") == [("Hike",)]
        m.update(rid, text="We went hiking in the snow.")
        m.update(rid, metadata={"k": 1})
        events = m.history(rid)
        assert [(e["event"], e["old_text"], e["new_text"]) for e in events] == [
            ("ADD", None, "We went hiking. It rained a lot. Then we had tea."),
            ("UPDATE", "We went hiking. It rained a lot. Then we had tea.",
             "We went hiking. It rained a lot. Then we had tea."),
            ("UPDATE", "We went hiking. It rained a lot. Then we had tea.",
             "We went hiking in the snow."),
            ("UPDATE", "We went hiking in the snow.", "We went hiking in the snow."),
        ]
        assert m.store.bm25("snow", Scope("u"), 5)[0][0] == m.store.get_row(rid).rowid
        assert m.store.bm25("rained", Scope("u"), 5) == []
        # Dropping the text by hand drops what was derived from it; full text follows.
        m.store.conn.execute("UPDATE records SET text = NULL WHERE id = ?", (rid,))
        assert m.get(rid).summary == ""
        assert m.store.bm25("snow", Scope("u"), 5) == []
        assert m.store.bm25("ana", Scope("u"), 5) != []  # the speaker is still indexed
        m.store.conn.execute("INSERT INTO records_fts(records_fts) VALUES ('integrity-check')")


def _old_store(home: Path) -> list[dict[str, object]]:
    """A store written the way latentmem wrote them before migration 006: the text in
    records, index_text, the full-text table's own copy and history, fp32 vectors."""
    home.mkdir(parents=True)
    conn = sqlite3.connect(home / DB_FILE, isolation_level=None)
    for number, sql in migrate.available()[:5]:
        for statement in migrate._statements(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO meta VALUES ('embedder', 'hash-64'), ('dim', '64')")
    embedder = get_embedder("hash")
    rows = []
    for i, text in enumerate(_texts(40) + ["a lone pelican over the estuary"]):
        speaker = "Ana" if i % 2 else None
        itext = index_text_for(text, speaker)
        vec = embedder.embed_batch([itext])[0]
        rid = f"01OLD{i:021d}"
        cur = conn.execute(
            "INSERT INTO records(id, user_id, session_id, text, index_text, title, summary, "
            "speaker, event_time, created_at, updated_at, vector) "
            "VALUES (?, 'u', 's', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rid, text, itext, segment.derive_title(text), segment.derive_summary(text), speaker,
             1000.0 + i, 1000.0 + i, 1000.0 + i, vec.astype("<f4").tobytes()))
        conn.execute("INSERT INTO records_fts(rowid, index_text) VALUES (?, ?)",
                     (cur.lastrowid, itext))
        conn.execute("INSERT INTO history(record_id, event, new_text, at) VALUES (?, 'ADD', ?, 1)",
                     (rid, text))
        rows.append({"id": rid, "text": text, "index_text": itext, "vector": vec})
    # One memory updated (history holds both texts) and one deleted (history scrubbed).
    old, new = rows[3]["text"], "the violin was sold at the harbour market"
    conn.execute("UPDATE records SET text = ?, index_text = ? WHERE id = ?",
                 (new, new, rows[3]["id"]))
    conn.execute("DELETE FROM records_fts WHERE rowid = 4")
    conn.execute("INSERT INTO records_fts(rowid, index_text) VALUES (4, ?)", (new,))
    conn.execute("INSERT INTO history(record_id, event, old_text, new_text, at) "
                 "VALUES (?, 'UPDATE', ?, ?, 2)", (rows[3]["id"], old, new))
    rows[3].update(text=new, index_text=new, old=old)
    conn.close()
    return rows


def test_migration_006_keeps_every_record_searchable(tmp_path: Path) -> None:
    home = tmp_path / "old"
    rows = _old_store(home)
    with Memory(home, embedder="hash") as m:
        assert m.store.schema_version == migrate.available()[-1][0]
        assert m.stats()["vector_tier"] == "fp32"
        for row in rows:
            stored = m.store.get_row(str(row["id"]), with_vector=True)
            assert stored.record.text == row["text"]
            assert stored.index_text == row["index_text"]
            assert stored.record.vector is not None
            assert np.array_equal(stored.record.vector, row["vector"])  # bit for bit
            hits = m.search(str(row["index_text"]), user_id="u", k=3,
                            query_vector=np.asarray(row["vector"]))
            assert hits[0].record.id == row["id"]
            assert stored.rowid in [r for r, _ in m.store.bm25(str(row["text"]), Scope("u"), 50)]
        assert m.history(str(rows[3]["id"]))[0]["new_text"] == rows[3]["old"]
        assert m.history(str(rows[3]["id"]))[1]["new_text"] == rows[3]["text"]
        assert m.history(str(rows[0]["id"]))[0]["new_text"] == rows[0]["text"]
        # The content-less copies are gone: one text per memory, in records.
        assert _raw(home, "SELECT count(*) FROM records WHERE index_text IS NOT NULL") == [(1,)]
        assert _raw(home, "SELECT count(*) FROM history WHERE new_text IS NOT NULL") == [(1,)]
        m.store.conn.execute("INSERT INTO records_fts(records_fts) VALUES ('integrity-check')")
        m.delete(str(rows[-1]["id"]))
        assert m.store.bm25("pelican", Scope("u"), 5) == []


def test_bench_storage_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.json"
    assert main(["bench", "storage", "--data", str(_locomo(tmp_path)), "--embedder", "hash",
                 "--cache", str(tmp_path / "c.db"), "--json", str(out), "--quiet",
                 "--configs", "default,compact", "--tiers", "fp32", "--no-lifecycle"]) == 0
    result = json.loads(out.read_text())
    configs = {c["name"]: c for c in result["configurations"]}
    assert list(configs) == ["default", "compact", "default, fp32 vectors"]
    rag = result["plain_rag"]
    assert rag["quality"]["questions"] == 3 and rag["recall@10"] is not None
    for c in configs.values():
        assert c["turns"] == 5 and c["quality"]["questions"] == 3
        assert c["rag_bytes_per_memory"] > 4 * 64
        assert c["ratio_to_rag"] == pytest.approx(c["bytes_per_memory"] / c["rag_bytes_per_memory"],
                                                  rel=0.01)
        assert 0.0 <= c["dense_top10_overlap"] <= 1.0
        assert "records" in c["bytes_per_memory_by_object"]
        if c["recall@10"] and rag["recall@10"]:  # the measure, from the same run
            assert c["storage_to_retrieval_vs_rag"] == pytest.approx(
                (c["rag_bytes_per_memory"] / rag["recall@10"])
                / (c["bytes_per_memory_vacuumed"] / c["recall@10"]), rel=0.01, abs=1e-3)
    assert [configs[n]["profile"] for n in configs] == ["default", "compact", "default"]
    assert configs["default, fp32 vectors"]["bytes_per_memory_by_object"]["(index file)"] > 0
    assert "(index file)" not in configs["default"]["bytes_per_memory_by_object"]
    assert "storage-to-retrieval vs RAG" in capsys.readouterr().out


@pytest.mark.slow
def test_pq_keeps_locomo_recall(tmp_path: Path) -> None:
    """The pq tier on conv-26: recall@10 0.822 against fp32's 0.832 when measured; the
    floor is the fp32 figure minus two points."""
    data = require_shared(LOCOMO_DEV)
    out = tmp_path / "s.json"
    assert main(["bench", "storage", "--data", str(data), "--conversations", "conv-26",
                 "--configs", "", "--tiers", "pq", "--no-lifecycle", "--json", str(out),
                 "--quiet"]) == 0
    (pq,) = json.loads(out.read_text())["configurations"]
    assert pq["recall@10"] >= 0.812
    assert pq["dense_top10_overlap"] >= 0.93
    assert pq["ratio_to_rag"] < 1.2


@pytest.mark.parametrize("tier", TIERS)
def test_archive_keeps_float32_and_undo_restores_in_each_tier(tmp_path: Path, tier: str) -> None:
    with Memory(tmp_path / "s", embedder="hash", vector_tier=tier) as m:
        ids = m.add(_texts(PQ_TRAIN_MIN + 20), user_id="u").ids

        def blob(rid: str) -> bytes:
            return bytes(m.store.conn.execute("SELECT vector FROM records WHERE id = ?",
                                              (rid,)).fetchone()[0])

        before, vec = blob(ids[5]), m.get(ids[5], True).vector
        report = run_cycle(m.core, phases=("forget",), now=time.time() + 5000 * 86_400.0)
        assert report.phases["forget"]["archived"] == len(ids) and m.store.count() == 0
        sizes = {int(n) for (n,) in m.store.conn.execute("SELECT length(vector) FROM archive")}
        assert sizes == {4 * m.dim}
        m.undo(m.explain(ids[5])[-1]["seq"])
        restored = m.get(ids[5], True).vector
        assert restored is not None and vec is not None
        if tier in ("fp32", "fp16"):  # decoding then encoding again is exact
            assert blob(ids[5]) == before
        assert float(restored @ vec) > 0.99
        assert m.search(_texts(6)[5], user_id="u", k=1)[0].record.id == ids[5]
