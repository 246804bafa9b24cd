"""Import/export: exact round trips, refusal of unsafe or corrupt files, conversations."""

from __future__ import annotations

import json
import os
import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest

from latentmem import ConflictError, InvalidInputError, Memory, UnsafeDataError
from latentmem.store.formats import FORMATS, export_memory, import_conversation, import_into
from tests.conftest import LOCOMO_DEV, require_shared

ALL = sorted(FORMATS)


def _fill(m: Memory) -> None:
    m.add("I moved to Lisbon in May 2023", user_id="ana", event_time="2023-05-08T13:56",
          metadata={"source": "chat", "tags": ["move", "city"], "n": 3})
    m.add([{"role": "user", "name": "Ana", "content": "Pastel is a grey terrier 🐕"},
           {"role": "assistant", "content": "What a \"lovely\" name,\nreally"}],
          user_id="ana", session_id="s1", agent_id="bot")
    rid = m.add("Bob plays football, 5-a-side", user_id="bob").ids[0]
    m.update(rid, importance=0.9)
    m.search("football", user_id="bob")  # access counters change too
    m.settle()  # ... after the search returns: wait for that write before exporting


def _snapshot(m: Memory) -> tuple[list, list]:
    records, edges = m.export_rows()
    rows = sorted(records, key=lambda r: r.id)
    return (
        [(r.to_dict(), r.vector.tobytes()) for r in rows],  # type: ignore[union-attr]
        sorted((e.src, e.dst, e.type, e.weight) for e in edges),
    )


def _target(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / (f"out.{fmt}" if FORMATS[fmt].single_file else f"out-{fmt}")


@pytest.mark.parametrize("fmt", ALL)
def test_round_trip_is_exact(mem: Memory, tmp_path: Path, fmt: str) -> None:
    _fill(mem)
    target = _target(tmp_path, fmt)
    assert export_memory(mem, target, fmt) == 4
    # The same vector tier: a smaller one would keep the vectors less exactly than exported.
    with Memory(tmp_path / "fresh", embedder="hash", vector_tier=mem.store.codec.tier) as fresh:
        assert import_into(fresh, target, fmt) == 4
        assert _snapshot(fresh) == _snapshot(mem)
        a = [h.id for h in mem.search("terrier Lisbon", user_id="ana", track_access=False)]
        b = [h.id for h in fresh.search("terrier Lisbon", user_id="ana", track_access=False)]
        assert a == b
        # Importing again conflicts and changes nothing; skip mode is a no-op.
        with pytest.raises(ConflictError):
            import_into(fresh, target, fmt)
        assert import_into(fresh, target, fmt, on_conflict="skip") == 0
        assert fresh.stats()["records"] == 4


def test_export_one_user(mem: Memory, tmp_path: Path) -> None:
    _fill(mem)
    assert export_memory(mem, tmp_path / "ana.jsonl", "jsonl", user_id="ana") == 3
    with Memory(tmp_path / "fresh", embedder="hash") as fresh:
        import_into(fresh, tmp_path / "ana.jsonl", "jsonl")
        assert fresh.stats()["per_user"] == {"ana": 3}


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("payload", ["system", "eval", "nested"])
def test_malicious_pickle_runs_nothing(mem: Memory, tmp_path: Path, payload: str) -> None:
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    evil: object = _Evil(str(marker)) if payload != "eval" else _EvilEval()
    if payload == "nested":
        evil = {"manifest": {}, "records": [evil], "vectors": np.zeros((1, 64), np.float32)}
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(evil))
    with pytest.raises(UnsafeDataError, match="only plain data and numpy arrays"):
        import_into(mem, path, "pickle")
    assert not marker.exists()
    assert mem.stats()["records"] == 0


def test_numpy_pickle_of_any_protocol_loads(mem: Memory, tmp_path: Path) -> None:
    _fill(mem)
    export_memory(mem, tmp_path / "a.pickle", "pickle")
    from latentmem.store.formats.safe_pickle import safe_loads

    doc = safe_loads((tmp_path / "a.pickle").read_bytes())
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        again = safe_loads(pickle.dumps(doc, protocol=protocol))
        assert np.array_equal(again["vectors"], doc["vectors"])


@pytest.mark.parametrize("fmt", ALL)
def test_corrupt_files_import_nothing(mem: Memory, tmp_path: Path, fmt: str) -> None:
    _fill(mem)
    target = _target(tmp_path, fmt)
    export_memory(mem, target, fmt)
    victim = target if target.is_file() else target / "records.json"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with Memory(tmp_path / "fresh", embedder="hash") as fresh:
        with pytest.raises(InvalidInputError):
            import_into(fresh, target, fmt)
        assert fresh.stats()["records"] == 0


def test_bad_vector_in_file_imports_nothing(mem: Memory, tmp_path: Path) -> None:
    _fill(mem)
    export_memory(mem, tmp_path / "x.jsonl", "jsonl")
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["vector"][3] = float("nan")
    lines[2] = json.dumps(row)
    (tmp_path / "x.jsonl").write_text("\n".join(lines))
    with Memory(tmp_path / "fresh", embedder="hash") as fresh:
        with pytest.raises(InvalidInputError, match="NaN"):
            import_into(fresh, tmp_path / "x.jsonl", "jsonl")
        assert fresh.stats()["records"] == 0


def test_other_embedder_is_refused(mem: Memory, tmp_path: Path) -> None:
    _fill(mem)
    export_memory(mem, tmp_path / "x.npy", "npy")
    from latentmem.encode.fake import HashEmbedder

    with Memory(tmp_path / "other", embedder=HashEmbedder(32)) as other:
        with pytest.raises(ConflictError, match="hash-64"):
            import_into(other, tmp_path / "x.npy", "npy")
        assert other.stats()["records"] == 0


def test_wrong_path_kind(mem: Memory, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="directory"):
        import_into(mem, tmp_path, "pickle")
    (tmp_path / "f.csv").write_text("id\n")
    with pytest.raises(InvalidInputError, match="directory"):
        import_into(mem, tmp_path / "f.csv", "csv")
    for fmt in ALL:  # the CLI says so on one line and exits 2, like any bad input
        with pytest.raises(InvalidInputError, match="does not exist"):
            import_into(mem, tmp_path / "missing", fmt)
    for fmt in ("locomo", "chat"):
        with pytest.raises(InvalidInputError, match="does not exist"):
            import_conversation(mem, tmp_path / "missing.json", fmt)
    with pytest.raises(InvalidInputError, match="unknown format"):
        import_into(mem, tmp_path, "xml")


SAMPLE = [
    {
        "sample_id": "conv-x",
        "conversation": {
            "speaker_a": "Ana",
            "speaker_b": "Bo",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Ana", "dia_id": "D1:1", "text": "I moved to Lisbon!"},
                {"speaker": "Bo", "dia_id": "D1:2", "text": "Look at my new bike",
                 "img_url": ["http://example.invalid/x.jpg"], "blip_caption": "a red bicycle"},
            ],
            "session_2_date_time": "10:00 am on 9 June, 2023",
            "session_2": [{"speaker": "Ana", "dia_id": "D2:1", "text": "Lisbon is hilly."}],
            "session_3_date_time": "10:00 am on 10 June, 2023",
        },
        "qa": [],
    }
]


def test_locomo_import(mem: Memory, tmp_path: Path) -> None:
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps(SAMPLE))
    seen: list[tuple[int, int]] = []
    assert import_conversation(mem, path, "locomo", progress=lambda d, t: seen.append((d, t))) == 3
    assert seen[-1] == (3, 3)
    records = mem.all(user_id="conv-x")
    assert [r.metadata["dia_id"] for r in records] == ["D1:1", "D1:2", "D2:1"]
    assert [r.speaker for r in records] == ["Ana", "Bo", "Ana"]
    assert records[1].text == "Look at my new bike [shares a photo: a red bicycle]"
    assert records[0].event_time is not None and records[0].event_time.isoformat().startswith(
        "2023-05-08T13:56:00")
    assert records[1].event_time.isoformat().startswith("2023-05-08T13:56:01")  # type: ignore[union-attr]
    assert records[2].session_id == "session_2"
    edges = [e for e in mem.edges(records[0].id) if e.type == "next"]
    assert [(e.src, e.dst) for e in edges] == [(records[0].id, records[1].id)]


def test_locomo_bad_date_imports_nothing(mem: Memory, tmp_path: Path) -> None:
    bad = json.loads(json.dumps(SAMPLE))
    bad[0]["conversation"]["session_2_date_time"] = "sometime in spring"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(InvalidInputError, match="session_2_date_time"):
        import_conversation(mem, path, "locomo")
    assert mem.stats()["records"] == 0


def test_chat_import(mem: Memory, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"session_id": "c1", "messages": [
        {"role": "user", "content": "My sister is called Inês", "timestamp": "2024-01-02T10:00"},
        {"role": "assistant", "content": "Noted!"},
    ]}))
    assert import_conversation(mem, path, "chat", user_id="maya") == 2
    records = mem.all(user_id="maya")
    assert {r.session_id for r in records} == {"c1"}
    assert records[0].role == "user"
    path.write_text("[]")
    with pytest.raises(InvalidInputError):
        import_conversation(mem, path, "chat")


@pytest.mark.slow
def test_locomo_dev_file_imports(mem: Memory) -> None:
    path = require_shared(LOCOMO_DEV)
    n = import_conversation(mem, path, "locomo", user_id=None)
    data = json.loads(path.read_text())
    expected = sum(
        len(v) for s in data for k, v in s["conversation"].items()
        if k.startswith("session_") and not k.endswith("date_time")
    )
    assert n == expected
    assert {u for u, _ in mem.store.users()} == {s["sample_id"] for s in data}
