"""Corruption and resources: a damaged index file, a damaged SQLite page, a changed text
or vector, dangling links, a full disk. Each is found, said in words, and never turns into
a silently wrong answer; what is derived is rebuilt with nothing lost."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from latentmem import Memory
from latentmem.cli import main
from latentmem.core import INDEX_FILE
from latentmem.errors import LatentMemError, StoreCorruptError
from latentmem.store import DB_FILE

pytestmark = pytest.mark.reliability

TEXTS = [f"note {i} about topic{i % 37} with words {i * 7} and more" for i in range(600)]


def _store(home: Path, **config: str) -> list[str]:
    with Memory(home, embedder="hash", **config) as m:
        ids = m.add(TEXTS[:400], user_id="ana", session_id="s1").ids
        ids += m.add(TEXTS[400:], user_id="bob").ids
    return ids


def _exact_top(m: Memory, user: str, query: np.ndarray, k: int = 10) -> np.ndarray:
    rows = m.store.list_rows(m.core.scope(user), with_vector=True)
    matrix = np.stack([np.asarray(r.record.vector, dtype=np.float32) for r in rows])
    return np.sort(matrix @ query)[::-1][:k]


def _intact(home: Path, ids: list[str]) -> Memory:
    """Open the store and check nothing was lost and the index answers like an exact scan."""
    m = Memory(home, embedder="hash")
    assert m.store.count() == len(ids) and m.index.count() == len(ids)
    assert all(m.get(i).text in TEXTS for i in ids)
    q = m.embedder.embed_batch(["topic5 words"])[0]
    _, scores = m.index.search("ana", q, 10)
    assert np.allclose(np.sort(scores)[::-1], _exact_top(m, "ana", q), atol=5e-3)
    return m


def test_a_damaged_index_file_is_found_and_rebuilt_with_nothing_lost(tmp_path: Path) -> None:
    home = tmp_path / "store"
    ids = _store(home, vector_tier="fp32")  # the tier that keeps its index in a file
    path = home / INDEX_FILE
    good = path.read_bytes()
    rng = random.Random(20261203)
    damages: list[tuple[str, bytes | None]] = [("deleted", None), ("empty", b"")]
    damages += [(f"truncated at {n}", good[:n]) for n in rng.sample(range(1, len(good)), 12)]
    for _ in range(40):
        flipped = bytearray(good)
        at = rng.randrange(len(good))
        flipped[at] ^= 1 << rng.randrange(8)
        damages.append((f"bit flipped at {at}", bytes(flipped)))
    for what, content in damages:
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)
        m = _intact(home, ids)
        status = m.core.index_file_status
        # A flip in bytes nobody reads (zip padding, an unused header field) may leave the
        # file readable; then it must still be the same index.
        assert status == "read" or "rebuilt from the store" in status or status == "absent", what
        assert m.check()["ok"], what
        m.close()
        path.write_bytes(good)


def _records_page(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        pages = [p for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf' "
            "ORDER BY pageno")]
    return pages[len(pages) // 2]


def _damage_page(db: Path, page: int) -> None:
    with db.open("r+b") as f:
        f.seek((page - 1) * 4096 + 64)
        f.write(bytes(random.Random(page).randrange(256) for _ in range(3000)))


@pytest.mark.sqlite_only
def test_a_damaged_sqlite_page_is_reported_clearly_and_recovered_from_an_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")  # for export and import
    home = tmp_path / "store"
    ids = _store(home)
    backup = tmp_path / "backup.jsonl"
    assert main(["export", str(backup), "--home", str(home), "--format", "jsonl"]) == 0
    assert main(["check", "--home", str(home)]) == 0
    assert "ok: no problems found" in capsys.readouterr().out

    _damage_page(home / DB_FILE, _records_page(home / DB_FILE))
    with Memory(home, embedder="hash") as m:
        # Whatever reads the damaged page says so as a LatentMemError; nothing answers wrong.
        # (The store opens even where its vector index, rebuilt at open for every tier but
        # fp32, cannot be: then every search says so.)
        with pytest.raises(StoreCorruptError, match="damaged.*latentmem check"):
            m.all("ana", limit=1000)
        with pytest.raises(StoreCorruptError):
            m.search("topic5", user_id="ana")
        with pytest.raises(StoreCorruptError):
            m.export_rows()
    assert main(["check", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM sqlite:" in out and "Recovery" in out
    assert main(["check", "--home", str(home), "--repair"]) == 1  # the memories are damaged

    # The recovery RELIABILITY.md gives: a new store from the last export.
    fresh = tmp_path / "restored"
    assert main(["import", str(backup), "--home", str(fresh), "--format", "jsonl"]) == 0
    capsys.readouterr()
    assert main(["check", "--home", str(fresh)]) == 0
    with Memory(fresh, embedder="hash") as m:
        assert sorted(r.id for r in m.all("ana", limit=1000) + m.all("bob", limit=1000)) == \
            sorted(ids)


@pytest.mark.sqlite_only
def test_a_text_changed_in_the_file_is_found_by_check(tmp_path: Path) -> None:
    home = tmp_path / "store"
    ids = _store(home)
    db = home / DB_FILE
    with sqlite3.connect(db) as conn:  # the text as stored: compressed, by default
        (stored,) = conn.execute("SELECT text FROM records WHERE id = ?", (ids[123],)).fetchone()
    stored = stored.encode() if isinstance(stored, str) else bytes(stored)
    raw = db.read_bytes()
    at = raw.find(stored)
    assert at > 0 and raw.count(stored) == 1
    with db.open("r+b") as f:
        f.seek(at + len(stored) // 2)
        f.write(bytes([raw[at + len(stored) // 2] ^ 0x20]))
    with Memory(home, embedder="hash") as m:
        report = m.check()
    assert not report["ok"]
    assert any(p.startswith("full-text:") for p in report["problems"])


@pytest.mark.sqlite_only
def test_a_vector_changed_in_the_file_is_found_by_check(tmp_path: Path) -> None:
    home = tmp_path / "store"
    ids = _store(home, vector_tier="fp32")  # the index file holds a second copy to compare
    with Memory(home, embedder="hash") as m:
        row = m.store.get_row(ids[10], with_vector=True)
    blob = np.asarray(row.record.vector, dtype=np.float32).tobytes()
    db = home / DB_FILE
    raw = db.read_bytes()
    assert blob in raw
    changed = np.frombuffer(blob, dtype=np.float32).copy()
    biggest = np.argsort(-np.abs(changed))[:8]
    changed[biggest] = -changed[biggest]  # eight sign bits
    # (every copy: the embedding cache holds one beside the record's)
    db.write_bytes(raw.replace(blob, changed.tobytes()))
    with Memory(home, embedder="hash") as m:  # the saved index still holds the true vector
        report = m.check()
    assert any("differ from the stored ones" in p for p in report["problems"])


def test_check_finds_and_repairs_dangling_links_without_touching_a_memory(
        home: Path | str) -> None:
    from tests.conftest import count_rows

    with Memory(home, embedder="hash") as m:
        ids = m.add(TEXTS[:30], user_id="ana", session_id="s").ids
        m.add(TEXTS[30:40], user_id="bob")
        assert m.check()["ok"]
        store = m.store
        edges = count_rows(m, "edges")
        with store.transaction() as conn:
            if hasattr(store, "conn"):
                conn.execute("INSERT INTO edges(src, dst, type, weight, created_at) "
                             "VALUES (?, 'gone-for-good', 'similar', 1, 0)", (ids[0],))
            else:
                conn.execute("INSERT INTO lm_edges(user_id, src, dst, type, weight, created_at) "
                             "VALUES ('ana', %s, 'gone-for-good', 'similar', 1, 0)", (ids[0],))
        report = m.check()
        assert not report["ok"] and any("orphans: 1 edges" in p for p in report["problems"])
        before = [(r.id, r.text) for r in m.all("ana", limit=100)]
        fixed = m.check(repair=True)
        assert fixed["ok"], fixed["problems"]
        assert any("removed 1 edges" in line for line in fixed["repaired"])
        assert [(r.id, r.text) for r in m.all("ana", limit=100)] == before
        assert count_rows(m, "edges") == edges


def test_check_is_clean_after_the_whole_lifecycle(home: Path | str) -> None:
    with Memory(home, embedder="hash") as m:
        ids = m.add(TEXTS[:200] + TEXTS[:20], user_id="ana", session_id="s").ids
        m.add(TEXTS[200:260], user_id="bob")
        m.demote(ids[:5], user_id="ana")
        m.update(ids[6], text="a changed note about rivers")
        m.delete(ids[7])
        m.sleep()
        report = m.check()
        assert report["ok"], report["problems"]


_FILLER = textwrap.dedent("""
    import json, os, resource, signal, sys
    from latentmem import Memory
    home = sys.argv[1]
    m = Memory(home, embedder="hash")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    biggest = max(os.path.getsize(os.path.join(home, f)) for f in os.listdir(home))
    limit = biggest + 150_000
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    acked, error = [], None
    for i in range(100_000):
        try:
            acked += m.add([f"filler {i} {j} " + "word " * 40 for j in range(20)],
                           user_id="ana").ids
        except Exception as exc:
            error = [type(exc).__module__ + "." + type(exc).__name__, str(exc)]
            break
    try:
        m.add("one more after the disk filled", user_id="ana")
        later = None
    except Exception as exc:
        later = type(exc).__module__ + "." + type(exc).__name__
    m.close()
    print(json.dumps({"acked": acked, "error": error, "later": later}))
""")


@pytest.mark.sqlite_only
def test_a_full_disk_during_adds_is_an_error_and_the_store_stays_whole(tmp_path: Path) -> None:
    home = tmp_path / "store"
    with Memory(home, embedder="hash") as m:
        seeded = m.add(["seeded one", "seeded two"], user_id="ana").ids
    done = subprocess.run([sys.executable, "-c", _FILLER, str(home)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    kind, message = report["error"]
    assert kind.startswith("latentmem.errors."), report["error"]
    assert "not kept" in message
    assert report["later"] is None or report["later"].startswith("latentmem.errors.")
    with Memory(home, embedder="hash") as m:
        live = {r.id for r in m.all("ana", limit=100_000)}
        acked = set(report["acked"]) | set(seeded)
        assert acked <= live  # every acknowledged write is there
        assert len(live - acked) <= 1  # and at most the one add made after the disk had room
        assert m.check()["ok"]
        hit = m.search(m.get(report["acked"][-1]).text, user_id="ana", k=1)
        assert hit and hit[0].id == report["acked"][-1]


def test_every_store_failure_is_a_latentmem_error() -> None:
    from latentmem.store.sqlite_errors import translated

    for code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_FULL,
                 sqlite3.SQLITE_IOERR):
        exc = sqlite3.DatabaseError("boom")
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
        assert isinstance(translated(exc, "/x/memory.db"), LatentMemError)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    assert translated(busy, "/x/memory.db") is None


@pytest.mark.parametrize("scenario", ["index_file", "sqlite_page"])
def test_random_damage_is_refused_or_harmless_never_a_wrong_answer(
        tmp_path: Path, scenario: str) -> None:
    """The bounded form of `latentmem bench reliability --scenarios index_file,sqlite_page`."""
    from latentmem.bench import damage

    rng = random.Random(f"{scenario}-ci")
    for n in range(3):
        result = damage.trial(scenario, tmp_path / f"store{n}", rng, n=200)
        assert result["problems"] == [], result


@pytest.mark.sqlite_only
def test_damage_that_sqlites_own_check_passes_over_is_reported_not_raised(tmp_path: Path) -> None:
    """Found by the sqlite_page scenario: `PRAGMA integrity_check` does not read inside the
    full-text index's own tables, and the next check that did raised StoreCorruptError."""
    home = tmp_path / "store"
    _store(home)
    db = home / DB_FILE
    with sqlite3.connect(db) as conn:
        pages = [p for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'records_fts_data' ORDER BY pageno")]
    for page in pages[len(pages) // 2:][:3]:
        _damage_page(db, page)
    with Memory(home, embedder="hash") as m:
        report = m.check()
    assert not report["ok"] and report["problems"]
