"""Store behaviour: atomicity, migrations, WAL, index rebuilds, edges, history, deletion."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from latentmem import ConflictError, InvalidInputError, Memory, StoreError
from latentmem.encode.cache import cache_key
from latentmem.memory import DB_FILE, INDEX_FILE
from latentmem.store import migrate
from latentmem.store.sqlite import SQLiteStore
from latentmem.store.textcodec import register as register_functions


def _raw_counts(home: Path) -> dict[str, int]:
    conn = sqlite3.connect(home / DB_FILE)
    register_functions(conn)  # the full-text index reads texts through them
    try:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("records", "records_fts", "edges", "history")
        }
    finally:
        conn.close()


@pytest.mark.sqlite_only
def test_failure_mid_batch_leaves_nothing(mem: Memory, monkeypatch: pytest.MonkeyPatch) -> None:
    mem.add("already here", user_id="u", session_id="s")
    before = _raw_counts(mem.home)
    epoch = mem.store.vector_epoch()
    real = SQLiteStore._insert_record
    calls = {"n": 0}

    def flaky(self, conn, record, index_text):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return real(self, conn, record, index_text)

    monkeypatch.setattr(SQLiteStore, "_insert_record", flaky)
    msgs = [{"role": "user", "content": f"turn {i}"} for i in range(5)]
    with pytest.raises(sqlite3.OperationalError, match="injected"):
        mem.add(msgs, user_id="u", session_id="s")
    assert calls["n"] == 3
    assert _raw_counts(mem.home) == before
    assert mem.store.vector_epoch() == epoch
    assert mem.index.count() == 1
    monkeypatch.setattr(SQLiteStore, "_insert_record", real)
    assert len(mem.add(msgs, user_id="u", session_id="s").ids) == 5
    assert mem.index.count() == 6


def test_nan_from_the_embedder_stores_nothing(tmp_path: Path) -> None:
    class Broken:
        name, dim = "broken", 8

        def embed_batch(self, texts):  # type: ignore[no-untyped-def]
            out = np.ones((len(texts), 8), dtype=np.float32)
            out[-1, 0] = np.nan
            return out

    with Memory(tmp_path / "b", embedder=Broken(), embed_cache=False) as m:
        with pytest.raises(InvalidInputError, match="NaN"):
            m.add(["a", "b", "c"], user_id="u")
        assert m.stats()["records"] == 0


@pytest.mark.sqlite_only
def test_duplicate_import_conflict_leaves_nothing(mem: Memory) -> None:
    mem.add("x", user_id="u")
    rec = mem.all(user_id="u", include_vectors=True)[0]
    before = _raw_counts(mem.home)
    fresh = rec.__class__(**{**rec.__dict__, "id": "01ZZZZZZZZZZZZZZZZZZZZZZZZ"})
    with pytest.raises(ConflictError, match="already exists"):
        mem.import_records([fresh, rec])
    assert _raw_counts(mem.home) == before


def test_an_import_without_its_clocks_is_refused_by_name(mem: Memory) -> None:
    mem.add("x", user_id="u")
    rec = mem.all(user_id="u", include_vectors=True)[0]
    for clock in ("created_at", "updated_at"):
        bare = rec.__class__(**{**rec.__dict__, "id": "01ZZZZZZZZZZZZZZZZZZZZZZZZ", clock: None})
        with pytest.raises(InvalidInputError, match=f"has no {clock}"):
            mem.import_records([bare])
    assert [r.id for r in mem.all(user_id="u")] == [rec.id]


def test_migrations_from_empty_and_future(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    latest = migrate.available()[-1][0]
    assert migrate.migrate(conn) == latest
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"records", "records_fts", "edges", "history", "embed_cache", "meta"} <= tables
    assert migrate.migrate(conn) == latest  # idempotent
    conn.execute(f"PRAGMA user_version = {latest + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(tmp_path / "m.db")


@pytest.mark.sqlite_only
def test_wal_mode(mem: Memory) -> None:
    assert mem.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_writes_are_synced_by_default(tmp_path: Path) -> None:
    """An acknowledged write is on disk (synchronous=FULL: 2) unless the user trades that for
    speed (NORMAL: 1); a bad setting is refused before any file is made."""
    durable = Memory(tmp_path / "a", embedder="hash")
    assert durable.store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    durable.close()
    fast = Memory(tmp_path / "b", embedder="hash", durability="normal")
    assert fast.store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    fast.close()
    with pytest.raises(InvalidInputError, match="durability"):
        Memory(tmp_path / "c", embedder="hash", durability="sometimes")
    with pytest.raises(InvalidInputError, match="durability"):
        SQLiteStore(tmp_path / "d" / "m.db", durability="sometimes")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_cycles_and_bookkeeping_unsynced_writes_synced(tmp_path: Path) -> None:
    """A cycle's commits skip the fsync (redone if lost), as do a search's bookkeeping
    writes; a write of another thread made meanwhile, and every write after, is synced."""
    mem = Memory(tmp_path / "h", embedder="hash")
    store = mem.store

    written = iter(range(100))

    def sync_of_a_write() -> int:
        mem.add(f"memory number {next(written)} to write", user_id="u")
        return int(store.conn.execute("PRAGMA synchronous").fetchone()[0])

    seen: list[int] = []
    with store.unsynced():
        assert sync_of_a_write() == 1
        worker = threading.Thread(target=lambda: seen.append(sync_of_a_write()))
        worker.start()
        worker.join()
    assert seen == [2]
    assert sync_of_a_write() == 2
    synced: list[int] = []
    real = store.transaction

    @contextlib.contextmanager
    def spy():  # type: ignore[no-untyped-def]
        with real() as conn:
            synced.append(int(conn.execute("PRAGMA synchronous").fetchone()[0]))
            yield conn

    store.transaction = spy  # type: ignore[method-assign]
    try:
        mem.sleep()
    finally:
        store.transaction = real  # type: ignore[method-assign]
    assert synced and set(synced) == {1}
    assert sync_of_a_write() == 2
    # A search's bookkeeping (access counts, written after it returns) is not synced either.
    assert mem.search("memory number", user_id="u", track_access=True)
    mem.settle()
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert sync_of_a_write() == 2
    mem.close()


def test_corrupt_store_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="is damaged .*not a database.*latentmem check"):
        Memory(tmp_path / "h", embedder="hash")


def test_other_embedder_refused(tmp_path: Path) -> None:
    Memory(tmp_path / "h", embedder="hash").close()
    from latentmem.encode.fake import HashEmbedder

    with pytest.raises(ConflictError, match="hash-64"):
        Memory(tmp_path / "h", embedder=HashEmbedder(32))


@pytest.mark.parametrize("damage", ["missing", "garbage", "stale"])
def test_index_rebuilds(tmp_path: Path, damage: str) -> None:
    home = tmp_path / "h"
    with Memory(home, embedder="hash", vector_tier="fp32") as m:  # the tier with an index file
        for i in range(20):
            m.add(f"memory number {i} about topic {i % 4}", user_id="u")
        before = [h.id for h in m.search("topic 2", user_id="u", track_access=False)]
    path = home / INDEX_FILE
    assert path.exists()
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 50)
    else:
        # Another writer changes the vectors behind the saved index's back.
        store = SQLiteStore(home / DB_FILE)
        store.delete([before[0]])
        store.close()
        before = before[1:]
    with Memory(home, embedder="hash") as m2:
        assert m2.index.count() == m2.stats()["records"]
        after = [h.id for h in m2.search("topic 2", user_id="u", track_access=False)]
        assert after[: len(before)] == before


def test_second_process_writes_are_seen(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with Memory(home, embedder="hash") as a, Memory(home, embedder="hash") as b:
        a.add("the first note", user_id="u")
        rid = b.add("a zebra crossing the road", user_id="u").ids[0]
        assert a.search("zebra road", user_id="u")[0].id == rid
        a.delete(rid)
        assert all(h.id != rid for h in b.search("zebra road", user_id="u"))


def test_next_edges_continue_a_session(mem: Memory) -> None:
    first = mem.add([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                    user_id="u", session_id="s").ids
    second = mem.add({"role": "user", "content": "c"}, user_id="u", session_id="s").ids
    other = mem.add({"role": "user", "content": "d"}, user_id="u", session_id="t").ids
    pairs = {(e.src, e.dst) for e in mem.store.all_edges("u") if e.type == "next"}
    assert pairs == {(first[0], first[1]), (first[1], second[0])}
    assert mem.edges(other[0]) == []


def test_history_and_true_deletion(mem: Memory) -> None:
    rid = mem.add("my secret is swordfish", user_id="u").ids[0]
    mem.update(rid, text="my secret is marlin")
    events = [e["event"] for e in mem.history(rid)]
    assert events == ["ADD", "UPDATE"]
    assert mem.history(rid)[1]["old_text"] == "my secret is swordfish"
    mem.delete(rid)
    assert [e["event"] for e in mem.history(rid)] == ["ADD", "UPDATE", "DELETE"]
    assert all(e["old_text"] is None and e["new_text"] is None for e in mem.history(rid))
    assert mem.index.count() == 0
    if not hasattr(mem.store, "conn"):
        return  # below: SQLite's full-text index and cache tables
    conn = mem.store.conn
    assert conn.execute("SELECT count(*) FROM records_fts WHERE records_fts MATCH 'marlin'"
                        ).fetchone()[0] == 0
    key = cache_key(mem.embedder.name, "my secret is marlin")
    assert conn.execute("SELECT count(*) FROM embed_cache WHERE key = ?", (key,)).fetchone()[0] == 0
    assert mem.index.count() == 0


def test_update_reindexes(mem: Memory) -> None:
    rid = mem.add("I drink coffee every morning", user_id="u").ids[0]
    mem.add("the weather is rainy today", user_id="u")
    mem.update(rid, text="I switched to green tea")
    top = mem.search("green tea", user_id="u")[0]
    assert top.id == rid and top.record.text == "I switched to green tea"
    assert top.record.title.startswith("I switched")
    assert all(h.id != rid or "coffee" not in (h.text or "") for h in mem.search("coffee", user_id="u"))


def test_receipt_and_access_tracking(mem: Memory) -> None:
    receipt = mem.add("remember the milk", user_id="u")
    assert set(receipt.timings_ms) == {"validate", "embed", "store", "index", "total"}
    rid = receipt.ids[0]
    mem.search("milk", user_id="u")
    mem.search("milk", user_id="u")
    mem.settle()  # access counts are written after the search returns
    rec = mem.get(rid)
    assert rec.access_count == 2 and rec.last_accessed_at is not None
    mem.context("milk", user_id="u")
    mem.settle()
    assert mem.get(rid).access_count == 2


def test_embedding_cache_embeds_once(mem: Memory) -> None:
    mem.add("same text", user_id="u")
    misses = mem.embedder.misses  # type: ignore[attr-defined]
    mem.add("same text", user_id="v")
    assert mem.embedder.misses == misses  # type: ignore[attr-defined]


def test_long_text_is_chunked_with_edges(mem: Memory) -> None:
    text = " ".join(f"Sentence number {i} talks about a different subject entirely." for i in range(80))
    ids = mem.add(text, user_id="u").ids
    assert len(ids) > 1
    recs = [mem.get(i) for i in ids]
    assert " ".join(r.text or "" for r in recs) == text
    assert all(r.metadata["chunks"] == len(ids) for r in recs)
    assert len([e for e in mem.store.all_edges("u") if e.type == "next"]) == len(ids) - 1


def test_record_seed_metadata(mem: Memory) -> None:
    rid = mem.add("I love hiking in the Alps. We go every August with my brother.",
                  user_id="u", event_time="2023-05-08T13:56").ids[0]
    rec = mem.get(rid)
    assert rec.title == "I love hiking in the Alps."
    assert rec.type == "preference"
    assert rec.summary
    assert rec.event_time is not None and rec.event_time.isoformat() == "2023-05-08T13:56:00+00:00"
    assert rec.created_at is not None and rec.created_at > rec.event_time
    assert 0.0 < rec.importance <= 1.0


def test_id_reads_respect_the_user(mem: Memory) -> None:
    from latentmem import NotFoundError

    rid = mem.add("ana's secret", user_id="ana").ids[0]
    assert mem.get(rid, user_id="ana").text == "ana's secret"
    for call in (
        lambda: mem.get(rid, user_id="bob"),
        lambda: mem.update(rid, text="hacked", user_id="bob"),
        lambda: mem.delete(rid, user_id="bob"),
        lambda: mem.history(rid, user_id="bob"),
        lambda: mem.edges(rid, user_id="bob"),
    ):
        with pytest.raises(NotFoundError, match="no memory with id"):
            call()
    assert mem.get(rid).text == "ana's secret"
    assert mem.delete(rid, user_id="ana") == 1


def test_an_add_leaves_an_index_another_writer_changed_for_the_next_search(tmp_path: Path) -> None:
    """Two writers on one SQLite store: an add that finds its index out of date does not
    rebuild it (at 1M memories that made every add of four writing processes take
    seconds); the next search rebuilds it once and finds every writer's memories."""
    with Memory(tmp_path / "s", embedder="hash") as a, Memory(tmp_path / "s", embedder="hash") as b:
        a.add("apples from the first writer", user_id="u")
        b.add("apples from the second writer", user_id="u")  # b's index was out of date
        a.add("more apples from the first writer", user_id="u")
        index = b.core.index
        b.add("more apples from the second writer", user_id="u")
        assert b.core.index is index  # not rebuilt by an add
        found = {h.text for h in b.search("apples writer", user_id="u", k=10)}
        assert len(found) == 4
        assert b.core.index is not index  # rebuilt once, by the search
        again = b.core.index
        b.add("apples once more from the second writer", user_id="u")  # current: added in place
        assert b.core.index is again and b.core.index.epoch == b.store.vector_epoch()
        assert len(a.search("apples writer", user_id="u", k=10)) == 5
