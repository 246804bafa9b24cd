"""``bench serve`` runs end to end through the CLI against the real server and reports
every figure. No timing is asserted: benchmarks measure, tests check that the measuring
works."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from latentmem.bench.serve import OPS, parse_mix
from latentmem.cli import main


def test_tiny_run_reports_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--n", "200", "--clients", "1,2", "--seconds", "2",
                 "--embedder", "hash", "--queries", "40", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("date", "commit", "commit_note", "command", "machine", "text_source", "config"):
        assert result[key], key
    assert result["command"].startswith("latentmem bench serve --n 200 --clients 1,2")
    assert result["machine"]["nproc"] >= 1
    assert result["build"]["memories"] == 200 and result["query_pool"] == 40
    before, after = result["reference_runs"]
    assert before["when"] == "before the load" and after["when"] == "after the load"
    assert before["count"] == after["count"] == 40 and after["records"] > before["records"] == 200
    assert result["reference"] == min(before, after, key=lambda r: r["p95_ms"])
    phases = [(p["clients"], p["front"]) for p in result["phases"]]
    assert phases == [(1, "http"), (1, "in-process"), (2, "http"), (2, "in-process")]
    for phase in result["phases"]:
        assert phase["errors"] == 0, phase["error_examples"]
        assert phase["ops"] == sum(phase["by_op"][op]["count"] for op in OPS) > 0
        assert phase["by_op"]["search"]["p95_ms"] > 0 and phase["req_per_s"] > 0
        assert phase["records_after"] >= 200 + phase["by_op"]["add"]["count"]
        assert 0.0 <= phase["other_processes_cpu_share"] <= 1.0
    http = [p for p in result["phases"] if p["front"] == "http"]
    assert all(p["server_cpu_s"] >= 0 and p["client_cpu_s"] >= 0 for p in http)
    assert set(result["search_p95_ratio"]) == set(result["search_p95_ratio_same_threads"]) == {"1", "2"}
    inproc = [p for p in result["phases"] if p["front"] == "in-process"]
    assert all(p["process_cpu_s"] >= 0 for p in inproc)
    assert result["goal"]["clients"] == 8 and result["goal"]["ratio"] is None
    assert result["goal"]["errors"] == 0
    printed = capsys.readouterr().out
    assert "| clients | front" in printed and "reference before the load: in-process" in printed


def test_mix_is_checked() -> None:
    assert parse_mix("search=3,add=1") == {"search": 0.75, "context": 0.0, "add": 0.25}
    for bad in ("search=0.5,delete=0.5", "search", "search=x", "search=-1", "add=0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_mix(bad)


def test_bad_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "serve", "--n", "0", "--embedder", "hash"]) == 2
    assert "--n must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "serve", "--clients", "0,8"])
