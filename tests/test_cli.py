"""The command line, driven in-process through ``main(argv)`` (and once as a real
subprocess), with the hash embedder unless a test needs the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentmem.cli import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    return tmp_path / "home"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_search_scoped(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = str(home)
    assert run(capsys, "--home", h, "add", "I moved to Lisbon in May 2023", "--user", "ana")[0] == 0
    assert run(capsys, "--home", h, "add", "Bob plays football on Sundays", "--user", "bob")[0] == 0
    code, out, _ = run(capsys, "--home", h, "search", "where does ana live Lisbon", "--user", "ana",
                       "--json")
    assert code == 0
    hits = json.loads(out)
    assert "Lisbon" in hits[0]["record"]["text"]
    assert {"relevance", "recency", "importance", "access", "final"} <= set(hits[0]["components"])
    code, out, _ = run(capsys, "search", "where does ana live Lisbon", "--home", h, "--user", "bob",
                       "--json")
    assert code == 0
    assert all(hit["record"]["user_id"] == "bob" for hit in json.loads(out))


def test_get_history_delete_stats(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = str(home)
    _, out, _ = run(capsys, "--home", h, "--json", "add", "remember the milk", "--session", "s1")
    rid = json.loads(out)["ids"][0]
    code, out, _ = run(capsys, "--home", h, "get", rid, "--json")
    assert code == 0 and json.loads(out)["text"] == "remember the milk"
    code, out, _ = run(capsys, "--home", h, "history", rid, "--json")
    assert code == 0 and json.loads(out)[0]["event"] == "ADD"
    code, out, _ = run(capsys, "--home", h, "stats", "--json")
    assert json.loads(out)["records"] == 1
    code, out, _ = run(capsys, "--home", h, "delete", rid, "--json")
    assert code == 0 and json.loads(out) == {"deleted": 1}
    code, out, _ = run(capsys, "--home", h, "stats", "--json")  # strict JSON: no NaN when empty
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))["bytes_per_memory"] is None
    code, _, err = run(capsys, "--home", h, "get", rid)
    assert code == 1 and err.count("\n") == 1 and "NotFoundError" in err


def test_context_reports_budget(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = str(home)
    for i in range(30):
        run(capsys, "--home", h, "add", f"note {i} about the garden and tomatoes number {i}")
    code, out, _ = run(capsys, "--home", h, "context", "garden tomatoes", "--budget", "60", "--json")
    ctx = json.loads(out)
    assert code == 0
    assert 0 < ctx["used_tokens"] <= 60
    assert ctx["omitted"], "a tight budget must report what it left out"


@pytest.mark.parametrize(
    "argv",
    [
        ["add", ""],
        ["add", "x", "--event-time", "the day after never"],
        ["add", "x", "--metadata", "{not json"],
        ["search", "   "],
        ["search", "x", "-k", "0"],
        ["context", "x", "--budget", "0"],
        ["add", "x", "--user", ""],
    ],
)
def test_bad_input_is_one_line_and_nonzero(home: Path, capsys: pytest.CaptureFixture[str],
                                           argv: list[str]) -> None:
    code, _, err = run(capsys, "--home", str(home), *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("latentmem: InvalidInputError")
    code, out, _ = run(capsys, "--home", str(home), "stats", "--json")
    assert json.loads(out)["records"] == 0


def test_usage_error_is_one_line(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--home", str(home), "search"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_missing_import_file(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--home", str(home), "import", str(home / "nope.jsonl"),
                       "--format", "jsonl")
    assert code != 0 and err.count("\n") == 1


@pytest.mark.parametrize("fmt", ["csv", "npy", "hdf5", "pickle", "jsonl"])
def test_export_import_roundtrip(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 fmt: str) -> None:
    h = str(home)
    run(capsys, "--home", h, "add", "I moved to Lisbon in May 2023", "--user", "ana")
    run(capsys, "--home", h, "add", "Pastel is a grey terrier", "--user", "ana", "--session", "s")
    run(capsys, "--home", h, "add", "Bob plays football", "--user", "bob")
    target = tmp_path / f"export-{fmt}"
    code, _, err = run(capsys, "--home", h, "export", "--format", fmt, str(target))
    assert code == 0, err
    other = str(tmp_path / "other")
    code, _, err = run(capsys, "--home", other, "import", "--format", fmt, str(target))
    assert code == 0, err
    dumps = []
    for store in (h, other):
        _, out, _ = run(capsys, "--home", store, "stats", "--json")
        assert json.loads(out)["per_user"] == {"ana": 2, "bob": 1}
        from latentmem import Memory

        with Memory(store) as m:
            records, edges = m.export_rows()
            rows = sorted(records, key=lambda r: r.id)
            dumps.append(
                (
                    [(r.to_dict(), r.vector.tobytes()) for r in rows],  # type: ignore[union-attr]
                    sorted(edges, key=lambda e: (e.src, e.dst, e.type)),
                )
            )
    assert dumps[0] == dumps[1]


def test_entry_point_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "LATENTMEM_EMBEDDER": "hash", "LATENTMEM_HOME": str(tmp_path / "h")}
    proc = subprocess.run(
        [sys.executable, "-m", "latentmem.cli", "add", "hello from a subprocess", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["ids"]) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "latentmem.cli", "get", "NOPE"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_acceptance_with_minilm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's check, with the real model: Lisbon on top for ana, nothing of ana's for bob."""
    h = str(tmp_path / "H")
    assert run(capsys, "--home", h, "add", "I moved to Lisbon in May 2023", "--user", "ana")[0] == 0
    run(capsys, "--home", h, "add", "My favourite food is grilled sardines", "--user", "ana")
    run(capsys, "--home", h, "add", "I work as a nurse at the city hospital", "--user", "ana")
    run(capsys, "--home", h, "add", "I live in Berlin with my two cats", "--user", "bob")
    code, out, _ = run(capsys, "--home", h, "search", "where does ana live", "--user", "ana", "--json")
    assert code == 0
    assert "Lisbon" in json.loads(out)[0]["record"]["text"]
    code, out, _ = run(capsys, "--home", h, "search", "where does ana live", "--user", "bob", "--json")
    assert code == 0
    assert all(hit["record"]["user_id"] == "bob" for hit in json.loads(out))
    assert "Lisbon" not in out


def test_supersedes_and_as_of(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = str(home)
    code, out, _ = run(capsys, "--home", h, "add", "I live in Lisbon", "--user", "ana",
                       "--event-time", "2022-01-01", "--json")
    old = json.loads(out)["ids"][0]
    code, out, _ = run(capsys, "--home", h, "add", "I live in Porto now", "--user", "ana",
                       "--event-time", "2023-06-01", "--supersedes", old, "--json")
    assert code == 0
    code, out, _ = run(capsys, "--home", h, "search", "where do I live", "--user", "ana",
                       "--as-of", "2023-01-01", "--json")
    assert [hit["id"] for hit in json.loads(out)] == [old]
    code, _, err = run(capsys, "--home", h, "add", "x", "--user", "bob", "--supersedes", old)
    assert code == 1 and "no memory" in err
