"""``bench perf`` runs end to end and reports every figure. No timing is asserted:
benchmarks measure, tests check that the measuring works."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from latentmem.bench.perf import KEYS, add_parser
from latentmem.bench.perf_data import is_question, load_texts
from latentmem.errors import InvalidInputError, LatentMemError


def run_perf(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["perf", *argv])
    return int(args.func(args))


def smoke(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "perf.json"
    assert run_perf("--n", "200", "--embedder", "hash", "--queries", "12", "--adds", "8",
                    "--real", "60", "--json", str(out), *extra) == 0
    return dict(json.loads(out.read_text()))


def test_smoke_reports_every_figure(tmp_path: Path) -> None:
    result = smoke(tmp_path, "--home", str(tmp_path / "stores"))
    for key in ("date", "commit", "commit_note", "command", "embedder", "settings", "config"):
        assert result[key], key
    assert result["machine"]["nproc"] >= 1 and "lscpu_model" in result["machine"]
    assert result["command"].startswith("latentmem bench perf --n 200")
    (size,) = result["sizes"]
    for key in KEYS:
        # A store whose vectors are not fp32 (the default profile's int8) keeps no FAISS file.
        assert math.isfinite(size[key]) and (size[key] > 0 or key == "faiss_bytes_per_memory"), key
    assert size["n"] == 200 and size["records"] == 208  # the repeated adds were removed again
    assert size["real_vectors"] == 60 and size["generated_vectors"] == 140
    assert size["bulk_ingest_turns"] == 60 and size["queries"] == 12 and size["adds"] == 8
    assert size["text_source"] and size["generated_vectors_note"]
    assert math.isclose(size["bytes_per_memory"],
                        size["sqlite_bytes_per_memory"] + size["faiss_bytes_per_memory"])
    assert size["disk_bytes"] == sum(size["disk_files"].values()) > 0
    assert all(v > 0 for v in size["peak_rss_mb_by_phase"].values())
    assert size["peak_rss_mb"] == max(size["peak_rss_mb_by_phase"].values())
    assert 0.0 <= size["other_processes_cpu_share"] <= 1.0
    assert size["index_kind"] == "flat" and size["ann_recall_at_10"] >= 0.99
    assert (tmp_path / "stores" / "n200" / "store" / "memory.db").exists()


def test_skip_add_latency_and_no_leftover_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    (size,) = smoke(tmp_path, "--skip-add-latency")["sizes"]
    assert "add_ms_p50" not in size and size["adds"] == 0 and size["records"] == 200
    assert math.isfinite(size["search_ms_p95"]) and size["search_ms_p95"] > 0
    assert not list(tmp_path.glob("lm-perf-*"))


def test_a_size_past_the_timeout_is_reported_skipped(tmp_path: Path) -> None:
    out = tmp_path / "perf.json"
    with pytest.raises(LatentMemError, match="every size was skipped"):
        run_perf("--n", "1000000", "--embedder", "hash", "--timeout", "1", "--json", str(out),
                 "--home", str(tmp_path / "stores"))
    (size,) = json.loads(out.read_text())["sizes"]
    assert size["n"] == 1_000_000 and "timed out after 1 s" in size["skipped"]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run_perf("--n", "ten")
    with pytest.raises(SystemExit):
        run_perf("--n", "0")
    with pytest.raises(InvalidInputError, match="--queries"):
        run_perf("--n", "10", "--queries", "0")
    (tmp_path / "n10").mkdir()
    with pytest.raises(InvalidInputError, match="already exist"):
        run_perf("--n", "10", "--home", str(tmp_path))


def test_synthetic_text_when_the_corpus_is_absent(tmp_path: Path) -> None:
    texts = load_texts(queries=30, adds=20, ingest=50, folder=tmp_path / "absent")
    assert texts.source.startswith("synthetic")
    reserved = texts.queries + texts.warmup + texts.adds + texts.ingest
    assert len(set(reserved)) == len(reserved) == 105
    assert all(q.endswith("?") for q in texts.queries)
    fill = texts.fill()
    assert all(next(fill).strip() for _ in range(500))
    assert is_question("msc", "Do you like hiking in the hills?")
    assert not is_question("wikipedia", "Is it a question from an encyclopedia?")


def test_systems_side_by_side(tmp_path: Path) -> None:
    result = smoke(tmp_path, "--systems", "latentmem,faiss")
    assert result["command"].endswith("--systems latentmem,faiss")
    (size,) = result["sizes"]
    (peer,) = result["peers"]
    assert peer["system"] == "faiss" and peer["n"] == size["n"] == 200
    assert peer["real_vectors"] == 60 and peer["generated_vectors"] == 140
    assert peer["queries"] == 12 and peer["adds"] == 8
    for key in ("add_ms_p50", "add_ms_p95", "bulk_ingest_turns_per_s", "search_ms_p50",
                "search_ms_p95", "peak_rss_mb"):
        assert math.isfinite(peer[key]) and peer[key] > 0, key
    with pytest.raises(SystemExit):
        run_perf("--n", "10", "--systems", "latentmem,pinecone")
