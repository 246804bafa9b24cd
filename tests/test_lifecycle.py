"""The lifecycle: merge, demote, archive, sleep cycles, forgetting, undo, true deletion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from latentmem import Memory
from latentmem.cli import main
from latentmem.errors import InvalidInputError, NotFoundError
from latentmem.lifecycle import actions, consolidate, forget, journal, pacing
from latentmem.lifecycle.sleep import run_cycle
from latentmem.store import sqlite_lifecycle
from latentmem.store.sqlite import SQLiteStore

DAY = 86_400.0


def _texts(m: Memory, user: str = "ana") -> list[str | None]:
    return sorted((r.text or "") for r in m.all(user))


def test_merge_lossless_keeps_each_sentence_once_with_provenance(mem: Memory) -> None:
    a, b = mem.add(["I adopted a cat named Pixel. She is grey.",
                    "She is grey. Pixel loves tuna."], user_id="ana").ids
    merged = mem.merge([a, b], user_id="ana")
    assert merged.text == "I adopted a cat named Pixel. She is grey. Pixel loves tuna."
    assert merged.level == "merged" and merged.sources == [a, b]
    assert {(e.src, e.dst) for e in mem.edges(merged.id) if e.type == "merged_from"} == {
        (merged.id, a), (merged.id, b)}
    assert len(mem.all("ana")) == 3  # originals kept by default
    assert mem.search("tuna", user_id="ana", k=1)[0].id in (b, merged.id)


def test_merge_lossy_is_the_normalised_weighted_mean(mem: Memory) -> None:
    a, b = mem.add(["alpha beta gamma", "delta epsilon zeta"], user_id="ana").ids
    va, vb = mem.get(a, True).vector, mem.get(b, True).vector
    merged = mem.merge([a, b], [3.0, 1.0], mode="lossy", originals="archive", user_id="ana")
    want = 3 * va + vb
    want /= np.linalg.norm(want)
    assert merged.text is None and merged.lossy
    stored = mem.store.codec.quantise(want.reshape(1, -1))[0]  # as the store's tier keeps it
    assert np.allclose(mem.get(merged.id, True).vector, stored, atol=1e-6)
    assert [r.id for r in mem.all("ana")] == [merged.id]  # originals archived
    with pytest.raises(NotFoundError):
        mem.get(a)


@pytest.mark.parametrize("call", [
    lambda m, ids: m.merge([ids[0]]),
    lambda m, ids: m.merge([ids[0], ids[0]]),
    lambda m, ids: m.merge([ids[0], "nope"]),
    lambda m, ids: m.merge(ids, [1.0]),
    lambda m, ids: m.merge(ids, [1.0, -1.0]),
    lambda m, ids: m.merge(ids, mode="zip"),
    lambda m, ids: m.merge(ids, originals="burn"),
    lambda m, ids: m.merge([ids[0], ids[2]]),  # two users
    lambda m, ids: m.merge(ids[:2], user_id="bob"),
    lambda m, ids: m.demote([]),
    lambda m, ids: m.demote(["nope"]),
    lambda m, ids: m.undo(12345),
    lambda m, ids: m.undo(2**70),  # past what a store can number
    lambda m, ids: m.undo(0),
    lambda m, ids: m.undo("1"),
    lambda m, ids: m.sleep(budget=-1),
    lambda m, ids: m.sleep(phases=["dream"]),
    lambda m, ids: m.explain("never-was"),
])
def test_bad_lifecycle_input_raises_and_changes_nothing(mem: Memory, call) -> None:
    ids = mem.add(["one fact here", "another fact there"], user_id="ana").ids
    ids += mem.add("bob's own fact", user_id="bob").ids
    before = (_texts(mem), _texts(mem, "bob"), len(journal.recent(mem.store)))
    with pytest.raises((InvalidInputError, NotFoundError)):
        call(mem, ids)
    assert (_texts(mem), _texts(mem, "bob"), len(journal.recent(mem.store))) == before


def test_demote_drops_text_from_every_index_but_search_by_meaning_still_finds_it(
        mem: Memory) -> None:
    rid = mem.add("Zyxtrawl is the password hint", user_id="ana").ids[0]
    mem.add("the weather was fine", user_id="ana")
    assert mem.demote(rid, user_id="ana") == [rid]
    rec = mem.get(rid)
    assert rec.text is None and rec.title == "" and rec.summary == ""
    assert all(h["old_text"] is None and h["new_text"] is None for h in mem.history(rid))
    assert mem.store.bm25("zyxtrawl", mem.core.scope("ana"), 10) == []
    vec = mem.get(rid, True).vector
    hits = mem.search("anything", user_id="ana", k=1, query_vector=vec)
    assert hits[0].id == rid and hits[0].text is None
    assert "(text not kept)" in mem.context("password hint", user_id="ana").text
    assert journal.for_record(mem.store, rid)[-1].undoable is False  # explicit: final
    assert mem.demote(rid) == []  # already lossy


def test_sleep_consolidates_duplicates_and_undo_restores_exactly(mem: Memory) -> None:
    ids = mem.add([{"role": "user", "content": "I moved to Lisbon in May with my cat."},
                   {"role": "user", "content": "I moved to Lisbon in May with my cat!"},
                   {"role": "user", "content": "My sister works as a marine biologist."}],
                  user_id="ana", session_id="s1").ids
    before = {r.id: r.text for r in mem.all("ana")}
    report = mem.sleep()
    assert report.phases["consolidate"]["clusters"] == 1
    live = mem.all("ana")
    merged = [r for r in live if r.level == "merged"]
    assert len(live) == 2 and merged[0].sources == ids[:2]
    assert merged[0].text == "I moved to Lisbon in May with my cat."
    why = mem.explain(ids[0])
    assert why[-1]["action"] == "archive" and merged[0].id in why[-1]["reason"]
    merge_event = mem.explain(merged[0].id)[0]
    assert merge_event["action"] == "merge" and merge_event["cycle"] == report.cycle
    with pytest.raises(NotFoundError, match="no lifecycle event"):
        mem.undo(merge_event["seq"], user_id="bo")  # another user's event: as if missing
    assert len(mem.all("ana")) == 2  # and nothing changed
    mem.undo(merge_event["seq"], user_id="ana")
    assert {r.id: r.text for r in mem.all("ana")} == before
    assert mem.index.count() == mem.store.count() == 3
    # The next cycle does not merge them again: they were seen (watermark).
    assert mem.sleep().phases["consolidate"]["clusters"] == 0


def test_forgetting_follows_the_curve_and_can_be_undone(mem: Memory) -> None:
    weak, strong = mem.add(["a passing remark", "my passport number ends in 42"],
                           user_id="ana").ids
    mem.update(weak, importance=0.0)
    mem.update(strong, importance=1.0)
    # Importance 0: demoted after 30 d x log2(20) = 130 days; importance 1 lasts 4x longer.
    assert forget.days_until_demotion(0.0, 0, 30.0, 0.05) == pytest.approx(129.66, abs=0.01)
    later = time.time() + 150 * DAY
    report = run_cycle(mem.core, phases=("forget",), now=later)
    assert report.phases["forget"]["demoted"] == 1
    assert mem.get(weak).text is None and mem.get(strong).text is not None
    event = mem.explain(weak)[-1]
    assert event["action"] == "demote" and "strength" in event["reason"] and event["undoable"]
    mem.undo(event["seq"])
    assert mem.get(weak).text == "a passing remark"
    assert mem.search("passing remark", user_id="ana", k=1)[0].id == weak
    # Far later both fall under the archive threshold and leave the index, undoably.
    report = run_cycle(mem.core, phases=("forget",), now=time.time() + 5000 * DAY)
    assert report.phases["forget"]["archived"] == 2 and mem.all("ana") == []
    gone = mem.explain(strong)[-1]
    assert gone["action"] == "forget"  # archived whole, without a demotion first
    mem.undo(gone["seq"])
    assert mem.get(strong).text == "my passport number ends in 42"
    assert run_cycle(mem.core, phases=("forget",)).phases["forget"]["archived"] == 0


def test_recall_strengthens(mem: Memory) -> None:
    a, b = mem.add(["the red door", "the blue door"], user_id="ana").ids
    for _ in range(5):
        mem.search("red door", user_id="ana", k=1)
    mem.settle()
    s = forget.scan(mem.store, time.time() + 90 * DAY, 30.0)
    got = dict(zip(s.ids, s.strength, strict=True))
    assert got[a] > got[b]


def test_budget_demotes_least_valuable_first(mem: Memory) -> None:
    vec = len(mem.store.codec.encode(np.zeros((1, mem.dim), dtype=np.float32))[0])  # its tier's
    budget = 3 * vec + 40  # three vectors and one text (31 bytes): two must go
    mem.config = mem.config.replace(budget_bytes_per_user=budget)
    ids = mem.add([f"memory number {i} with some words" for i in range(5)], user_id="ana").ids
    mem.update(ids[0], importance=1.0)
    report = mem.sleep(phases=["forget"])
    assert report.phases["forget"]["over_budget_users"] == 1
    live = mem.all("ana")
    assert ids[0] in {r.id for r in live if r.text is not None}
    assert sum(len((r.text or "").encode()) + vec for r in live) <= budget
    gone = [i for i in ids if i not in {r.id for r in live}]
    assert len(gone) == 2 and all("over budget" in mem.explain(g)[-1]["reason"] for g in gone)


def _raw(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.iterdir() if p.is_file())


def test_true_deletion_leaves_no_trace(tmp_path: Path) -> None:
    home = tmp_path / "store"
    secret = "Quorblax-7781 is where I hid the spare key"
    with Memory(home, embedder="hash") as m:
        ids = m.add([secret, "the garden needs water", "Quorblax-7781 is where I hid the spare key!"],
                    user_id="ana").ids
        m.add([f"filler memory {i}" for i in range(50)], user_id="ana")
        vec = m.get(ids[0], True).vector
        m.update(ids[1], text="the garden needs water daily")
        m.sleep()  # merges the two secrets into one derived record, originals archived
        merged = [r for r in m.all("ana") if set(r.sources) == {ids[0], ids[2]}]
        assert merged
        m.search("Quorblax spare key", user_id="ana")
        m.flush()
        assert b"Quorblax" in _raw(home)
        m.delete([ids[0], ids[2]])
        assert not [r for r in m.all("ana") if set(r.sources) & {ids[0], ids[2]}]  # derived too
        assert m.search("Quorblax spare key", user_id="ana", k=60)
        assert all("Quorblax" not in (h.text or "") for h in m.search("Quorblax", user_id="ana", k=60))
    raw = _raw(home)
    for needle in (b"Quorblax", b"quorblax", b"spare key", vec.astype("<f4").tobytes()[:64],
                   vec.astype("<f2").tobytes()[:64]):
        assert needle not in raw, needle
    with Memory(home, embedder="hash") as m:
        with pytest.raises(NotFoundError):
            m.get(ids[0])
        assert m.explain(ids[0])  # the events stay, without text
        with pytest.raises(InvalidInputError):
            m.undo(m.explain(ids[0])[0]["seq"])  # its undo payload went with it


def test_deleting_one_source_derives_the_merge_again(mem: Memory) -> None:
    a, b, c = mem.add(["likes tea. reads novels.", "likes tea. plays chess.",
                       "likes tea. grows basil."], user_id="ana").ids
    merged = mem.merge([a, b, c], originals="archive")
    mem.delete(b)
    live = mem.all("ana")
    assert len(live) == 1 and live[0].id != merged.id
    assert live[0].sources == [a, c] and "chess" not in (live[0].text or "")


def test_sleep_runs_beside_searches(mem: Memory) -> None:
    mem.add([f"note {i} about topic {i % 7}" for i in range(300)], user_id="ana")
    mem.add([f"note {i} about topic {i % 7}" for i in range(20)], user_id="ana")
    errors: list[BaseException] = []
    done = threading.Event()

    def searcher() -> None:
        try:
            while not done.is_set():
                assert mem.search("topic 3", user_id="ana", k=5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=searcher)
    t.start()
    sleeper = mem.start_sleeping(every=0.05)
    time.sleep(1.0)
    sleeper.stop()
    done.set()
    t.join()
    assert not errors and not sleeper.errors and sleeper.reports
    assert mem.index.count() == mem.store.count()


def test_preloading_predicts_repeated_needs(mem: Memory) -> None:
    mem.add([f"fact {i} about subject {i}" for i in range(200)], user_id="ana", session_id="s")
    for _ in range(3):
        for q in ("subject 5", "subject 17", "subject 99"):
            mem.search(q, user_id="ana", k=3)
    mem.sleep(phases=["preload"])
    assert mem.preloaded["ana"]
    for q in ("subject 5", "subject 17"):
        mem.search(q, user_id="ana", k=3)
    report = mem.sleep(phases=["preload"]).phases["preload"]
    assert report["hit_rate"] >= 0.5 and "recency_baseline_hit_rate" in report


def test_sleep_repairs_a_store_a_killed_process_left(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    home = tmp_path / "store"
    script = textwrap.dedent(f"""
        import sys
        from latentmem import Memory
        m = Memory({str(home)!r}, embedder="hash")
        i = 0
        while True:
            m.add([f"turn {{i}} of a long day", f"turn {{i}} of a long day!"], user_id="ana")
            i += 1
            if i == 20:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)  # no close(): the index file is never written
    proc.wait()
    assert main(["--home", str(home), "sleep"]) == 0
    with Memory(home, embedder="hash") as m:
        n = m.store.count()
        assert n >= 20 and m.index.count() == n
        fts = m.store.conn.execute("SELECT count(*) FROM records_fts").fetchone()[0]
        assert fts == n
        assert any(r.level == "merged" for r in m.all("ana"))


def test_a_cycle_killed_halfway_leaves_a_store_the_next_cycle_runs_on(
        tmp_path: Path, monkeypatch) -> None:
    """kill -9 in the middle of forgetting (some batches committed, the vector index file
    stale, FTS5's automerge still off): the next cycle, from the command line, runs on it;
    every memory is then either live or archived with an undoable event, and the indexes
    agree with the store."""
    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    home = tmp_path / "store"
    words = ("harbour violin tax orchard pillow comet ledger basil tunnel quartz mural sleet "
             "walrus cinder parsley goblet trellis marmot saddle lantern").split()
    rng = np.random.default_rng(5)  # distinct texts: nothing for consolidation to merge
    texts = [f"note {i}: " + " ".join(rng.choice(words, 6, replace=False)) for i in range(600)]
    with Memory(home, embedder="hash") as m:
        ids = m.add(texts, user_id="ana", session_id="s1").ids
    script = textwrap.dedent(f"""
        import time
        from latentmem import Memory
        from latentmem.lifecycle import pacing, sleep
        took = pacing.Pacer._took
        def slow(self, n, seconds):  # hold on after a few committed batches
            took(self, n, seconds)
            self.size = 8
            slow.batches = getattr(slow, "batches", 0) + 1
            if slow.batches == 5:
                print("halfway", flush=True)
                time.sleep(60)
        pacing.Pacer._took = slow
        m = Memory({str(home)!r}, embedder="hash")
        sleep.run_cycle(m.core, phases=("forget",), now=time.time() + 5000 * 86400)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"halfway"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with Memory(home, embedder="hash") as m:
        automerge = m.store.conn.execute(
            "SELECT v FROM records_fts_config WHERE k = 'automerge'").fetchone()
        assert automerge is not None and int(automerge[0]) == 0  # what the kill left
        archived = m.store.conn.execute("SELECT count(*) FROM archive").fetchone()[0]
        assert 0 < archived < 600 and m.store.count() == 600 - archived
    assert main(["--home", str(home), "sleep"]) == 0
    with Memory(home, embedder="hash") as m:
        conn = m.store.conn
        live = m.store.count()
        archived = conn.execute("SELECT count(*) FROM archive").fetchone()[0]
        assert live + archived == 600
        assert m.index.count() == live
        assert conn.execute("SELECT count(*) FROM records_fts_docsize").fetchone()[0] == live
        assert int(conn.execute("SELECT v FROM records_fts_config WHERE k = 'automerge'")
                   .fetchone()[0]) == sqlite_lifecycle.FTS_AUTOMERGE
        gone = conn.execute("SELECT id FROM archive LIMIT 1").fetchone()[0]
        event = m.explain(gone)[-1]
        assert event["action"] == "forget" and event["undoable"]
        m.undo(event["seq"])
        assert m.get(gone).text is not None and m.index.count() == live + 1
    assert set(ids) >= {gone}


def test_cli_lifecycle_commands(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    home = str(tmp_path / "s")
    with Memory(home, embedder="hash") as m:
        a, b = m.add(["first thing", "second thing"], user_id="ana").ids
    args = ["--home", home, "--user", "ana"]
    assert main(["merge", a, b, *args, "--json"]) == 0
    assert main(["explain", *args]) == 0
    assert main(["demote", a, *args]) == 0
    assert main(["sleep", *args, "--budget", "5s", "--every", "0.1", "--cycles", "2"]) == 0
    out = capsys.readouterr().out
    assert "merged" in out and out.count("cycle c-") == 2
    assert main(["undo", "99999", *args]) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["sleep", *args, "--budget", "soon"])
    assert exit_.value.code == 2


def test_lossy_mode_stores_vectors_and_metadata_only(tmp_path: Path) -> None:
    with Memory(tmp_path / "s", embedder="hash", mode="lossy") as m:
        rid = m.add("Quorblax secret plan for Tuesday", user_id="ana", metadata={"k": 1}).ids[0]
        rec = m.get(rid)
        assert rec.text is None and rec.title == "" and rec.content_hash == ""
        assert rec.metadata == {"k": 1}
        vec = m.get(rid, True).vector
        assert m.search("x", user_id="ana", query_vector=vec, k=1)[0].id == rid
        m.flush()
        m.store.checkpoint()
    assert b"Quorblax" not in _raw(tmp_path / "s")


@pytest.mark.parametrize("setting", [{"mode": "dreamy"}, {"forget_action": "burn"},
                                     {"duplicate_threshold": 1.5}, {"consolidate_originals": 3}])
def test_bad_lifecycle_settings_are_refused(tmp_path: Path, setting: dict) -> None:
    with pytest.raises(InvalidInputError):
        Memory(tmp_path / "s", embedder="hash", **setting)


def test_forgetting_by_deletion_leaves_no_trace(tmp_path: Path) -> None:
    home = tmp_path / "s"
    with Memory(home, embedder="hash", forget_action="delete") as m:
        rid = m.add("Zorblat-99 was the old locker code", user_id="ana").ids[0]
        m.add([f"unrelated note {i}" for i in range(20)], user_id="ana")
        m.update(rid, importance=0.0)
        report = run_cycle(m.core, now=time.time() + 3000 * DAY)
        assert report.phases["forget"]["deleted"] == 21
        assert report.phases["optimise"].get("index_saved")
        event = m.explain(rid)[-1]
        assert event["action"] == "forget" and "deleted" in event["reason"]
        with pytest.raises(InvalidInputError):
            m.undo(event["seq"])
    assert b"Zorblat" not in _raw(home)


@pytest.mark.sqlite_only
def test_archiving_in_batches_journals_each_memory_and_undo_restores_it_exactly(
        mem: Memory) -> None:
    ids = mem.add([f"Ana met Bruno in Porto on day {i} of the trip" for i in range(40)],
                  user_id="ana", session_id="s1").ids
    before = {rid: mem.get(rid, True) for rid in ids}
    edges = {rid: {(e.src, e.dst, e.type) for e in mem.edges(rid)} for rid in ids}
    report = run_cycle(mem.core, phases=("forget",), now=time.time() + 5000 * DAY)
    assert report.phases["forget"]["archived"] == 40 and mem.all("ana") == []
    assert mem.index.count() == mem.store.count() == 0
    conn = mem.store.conn
    assert conn.execute("SELECT count(*) FROM records_fts_docsize").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM entity_mentions").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM edges").fetchone()[0] == 0
    assert mem.store.get_meta("fts_dirty") is None  # their words stay in the archive
    for rid in ids:
        event = mem.explain(rid)[-1]
        assert (event["action"], event["cycle"], event["undoable"]) == (
            "forget", report.cycle, True)
        assert "strength" in event["reason"]
    for rid in ids[20:22]:
        mem.undo(mem.explain(rid)[-1]["seq"])
    for rid in ids[20:22]:
        got, want = mem.get(rid, True), before[rid]
        assert np.array_equal(got.vector, want.vector)
        touched = ("access_count", "last_accessed_at")  # an undo counts as a recall
        assert ({k: v for k, v in got.to_dict().items() if k not in touched}
                == {k: v for k, v in want.to_dict().items() if k not in touched})
    # An edge comes back once both its ends are live again.
    assert (ids[20], ids[21], "next") in edges[ids[21]]
    assert (ids[20], ids[21], "next") in {(e.src, e.dst, e.type) for e in mem.edges(ids[21])}
    assert mem.search("Porto day 21", user_id="ana", k=1)[0].id == ids[21]
    assert mem.index.count() == mem.store.count() == 2


def test_pacer_sizes_each_batch_on_the_time_transactions_held_the_lock(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "pacer.db")
    pacer = pacing.Pacer(store, first=10)
    sizes = []

    def automerge() -> int:
        row = store.conn.execute("SELECT v FROM records_fts_config WHERE k = 'automerge'").fetchone()
        return 4 if row is None else int(row[0])  # absent: FTS5's default

    for part in pacer.batches(list(range(3000)), deadline=float("inf")):
        assert automerge() == 0  # the cycle's own merge steps do the merging meanwhile
        sizes.append(len(part))
        store.write_seconds += 1e-4 * len(part)  # as if each memory held the lock 0.1 ms
    assert sum(sizes) == 3000 and sizes[0] == 10
    assert sizes[-2] == round(pacing.TX_TARGET_S / 1e-4)
    assert list(pacer.batches(list(range(10)), deadline=time.perf_counter() - 1)) == []
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # as it was
    assert automerge() == sqlite_lifecycle.FTS_AUTOMERGE
    store.close()


def test_cells_find_the_near_duplicates_an_exact_scan_finds() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8000, 64)).astype(np.float32)
    planted = rng.choice(8000, 200, replace=False)
    x[planted[100:]] = x[planted[:100]] + 0.1 * rng.standard_normal((100, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = np.arange(8000)
    assert consolidate.use_cells(len(x), len(queries))
    exact, _ = consolidate.similar_pairs(x, queries, 8, 0.85)
    cells, sims = consolidate.similar_pairs(x, queries, 8, 0.85, consolidate.Cells(x))
    assert len(exact) == 200 and (sims >= 0.85).all()
    assert set(map(tuple, cells.tolist())) == set(map(tuple, exact.tolist()))


def test_a_steady_cycle_checks_only_the_new_memories(mem: Memory) -> None:
    mem.add([f"fact {i}: the {w} of the harbour" for i, w in enumerate(
        ["colour", "depth", "age", "name", "owner", "size"])], user_id="ana")
    assert mem.sleep(phases=["consolidate"]).phases["consolidate"]["checked"] == 6
    mem.add(["one more thing", "and another one"], user_id="ana")
    assert mem.sleep(phases=["consolidate"]).phases["consolidate"]["checked"] == 2
    assert mem.sleep(phases=["consolidate"]).phases["consolidate"]["checked"] == 0


def test_consolidation_stopped_by_its_budget_leaves_its_memories_to_the_next_cycle(
        mem: Memory) -> None:
    mem.add(["I moved to Lisbon in May with my cat.", "I moved to Lisbon in May with my cat!"],
            user_id="ana")
    conn = mem.store.snapshot()
    try:
        report = consolidate.run(mem.core, conn, time.perf_counter() - 1, "c-test")
    finally:
        conn.close()
    assert report["stopped"] == "budget" and report["checked"] == 0
    assert mem.store.get_meta(consolidate.WATERMARK) is None
    assert mem.sleep().phases["consolidate"]["clusters"] == 1


@pytest.mark.sqlite_only
def test_an_archive_row_of_the_older_iso_form_is_still_restored(mem: Memory) -> None:
    rid = mem.add("the old archive kept times as ISO strings", user_id="ana").ids[0]
    rec = mem.get(rid, True)
    assert rec.vector is not None
    payload = {"record": {**rec.to_dict(), "id": "old-1"}, "edges": []}
    with mem.store.transaction() as conn:
        conn.execute("INSERT INTO archive(id, user_id, row, index_text, vector, archived_at) "
                     "VALUES ('old-1', 'ana', ?, ?, ?, ?)",
                     (json.dumps(payload), rec.text, rec.vector.astype("<f4").tobytes(),
                      time.time()))
    actions.restore(mem.core, "old-1")
    back = mem.get("old-1", True)
    assert back.text == rec.text and back.created_at == rec.created_at
    assert back.vector is not None and np.array_equal(back.vector, rec.vector)


def test_cycles_of_one_memory_run_one_at_a_time(mem: Memory, monkeypatch) -> None:
    """A server's background cycle and a requested one never overlap: the second waits."""
    mem.add([f"fact {i}" for i in range(20)], user_id="ana")
    from latentmem.lifecycle import sleep as sleep_mod

    inside, most = [0], [0]
    real = sleep_mod._phase

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.01)
        try:
            return real(*args, **kwargs)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(sleep_mod, "_phase", counting)
    threads = [threading.Thread(target=mem.sleep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    assert len([e for e in journal_rows(mem) if e == "sleep"]) == 4


def journal_rows(mem: Memory) -> list[str]:
    return [e.action for e in mem.store.events()]


def test_the_journal_lists_the_newest_events_of_a_user_or_a_cycle(mem: Memory) -> None:
    mem.add(["I moved to Lisbon in May.", "I moved to Lisbon in May!"], user_id="ana")
    mem.add("Bob's note", user_id="bob")
    report = mem.sleep()
    newest = mem.journal(limit=50)
    assert newest[0]["action"] == "sleep" and newest[0]["cycle"] == report.cycle
    assert [e["seq"] for e in newest] == sorted((e["seq"] for e in newest), reverse=True)
    assert {e["user_id"] for e in mem.journal(user_id="ana")} == {"ana"}
    assert mem.journal(user_id="bob") == []
    assert [e["action"] for e in mem.journal(cycle=report.cycle)][-1] == "sleep"
    with pytest.raises(InvalidInputError):
        mem.journal(limit=0)


def test_a_memory_written_after_the_newest_was_deleted_is_still_consolidated(
        mem: Memory) -> None:
    """Consolidation compares the memories past its rowid watermark. SQLite gave a deleted
    newest memory's rowid to the next one written, below the watermark, so a duplicate
    written then was never compared (found by the state machine, tests/test_properties.py)."""
    mem.add("I moved to Lisbon in May.", user_id="ana")
    newest = mem.add("The piano lessons start on Monday.", user_id="ana").ids[0]
    assert mem.sleep().phases["consolidate"]["clusters"] == 0
    mem.delete(newest)
    mem.add("I moved to Lisbon in May!", user_id="ana")
    assert mem.sleep().phases["consolidate"]["clusters"] == 1
    assert [r.text for r in mem.all("ana")] == ["I moved to Lisbon in May."]


def test_undoing_a_merge_that_cannot_be_undone_whole_changes_nothing(mem: Memory) -> None:
    """A source demoted by one merge, then archived by another: the first merge's undo
    cannot give it its text back, and must not give the other sources theirs either (it
    did, then raised; found by the state machine, tests/test_properties.py)."""
    a, b, c = mem.add(["Tea at noon.", "Tea at nine.", "Coffee at ten."], user_id="ana").ids
    first = mem.merge([a, b, c], originals="demote", user_id="ana")
    second = mem.merge([a, b], originals="archive", user_id="ana")
    before = (sorted((r.id, r.text) for r in mem.all("ana")),
              [e["undoable"] for e in mem.journal(limit=100)])
    seq = mem.explain(first.id)[0]["seq"]
    with pytest.raises(NotFoundError, match=f"#{seq} \\(merge\\) cannot be undone"):
        mem.undo(seq)
    assert (sorted((r.id, r.text) for r in mem.all("ana")),
            [e["undoable"] for e in mem.journal(limit=100)]) == before
    mem.undo(mem.explain(second.id)[0]["seq"])
    mem.undo(seq)
    assert sorted((r.id, r.text) for r in mem.all("ana")) == sorted(
        [(a, "Tea at noon."), (b, "Tea at nine."), (c, "Coffee at ten.")])


def test_a_source_back_after_its_merge_was_deleted_offers_no_undo_that_fails(
        mem: Memory) -> None:
    """Deleting a source of a merge deletes the merge and brings a lone archived source
    back; the journal then still offered to undo that source's archiving, an undo that
    could only fail ("not archived"; found by the state machine, tests/test_properties.py)."""
    a, b = mem.add(["Tea at noon.", "Tea at nine."], user_id="ana").ids
    mem.merge([a, b], originals="archive", user_id="ana")
    mem.delete(b)
    assert [r.id for r in mem.all("ana")] == [a]
    assert [e["undoable"] for e in mem.explain(a) if e["action"] == "archive"] == [False]
    assert not any(e["undoable"] for e in mem.journal(limit=100))


def test_deleting_a_source_leaves_memories_another_merge_archived_with_it(mem: Memory) -> None:
    """A merge's deletion brings back the sources archived for it, not those archived for
    another merge that still stands: those came back beside it (the same memory twice),
    were merged again, and the standing merge's undo then failed on them."""
    a, b, c = mem.add(["Tea at noon.", "Tea at nine.", "Coffee at ten."], user_id="ana").ids
    mem.merge([a, b, c], originals="demote", user_id="ana")
    second = mem.merge([a, b], originals="archive", user_id="ana")
    mem.delete(c)
    assert [r.id for r in mem.all("ana")] == [second.id]
    mem.undo(mem.explain(second.id)[0]["seq"])
    assert sorted(r.id for r in mem.all("ana")) == sorted([a, b])
