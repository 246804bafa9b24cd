"""``latentmem bench embedder``: the embedding paths of all-MiniLM-L6-v2 side by side.

For each path (``minilm-torch``, the reference; ``minilm-onnx``; ``minilm-int8``), each in
a fresh process so that none pays for another's threads or memory: bulk embedding of
``--n`` corpus sentences (one ``embed_batch`` call, as an import does), single texts
(``--singles`` of the corpus' questions, one call each, as a query or one message is), the
cosine of every vector to the torch path's, and the process's peak RSS. Then the cold
start: a fresh ``latentmem search`` process against a small store, from exec to its
answer, with the default path and with the torch path, ``--cold`` times each.

Texts are the shared corpus' sentences when it is there, else synthetic chat lines
(``perf_data.load_texts``; the result says which). Nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PATHS = ("minilm-torch", "minilm-onnx", "minilm-int8")


def _measure(path: str, texts: list[str], singles: list[str], out: Path) -> None:
    """Run in a child process: one path's figures, and its vectors for the cosine."""
    from latentmem.bench.perf_data import pct, peak_rss_mb
    from latentmem.encode.base import get_embedder

    start = time.perf_counter()
    embedder = get_embedder(path)
    embedder.embed_batch(["load the model before anything is timed"])
    load_s = time.perf_counter() - start
    for text in singles[:10]:  # warm the single-text path
        embedder.embed_batch([text])
    start = time.perf_counter()
    vectors = embedder.embed_batch(texts)
    bulk_s = time.perf_counter() - start
    times = []
    for text in singles:
        t0 = time.perf_counter()
        embedder.embed_batch([text])
        times.append((time.perf_counter() - t0) * 1000)
    np.save(out.with_suffix(".npy"), vectors)
    out.write_text(json.dumps({
        "path": path, "name": embedder.name, "load_s": round(load_s, 2),
        "bulk_s": round(bulk_s, 2), "bulk_per_s": round(len(texts) / bulk_s, 1),
        "single_p50_ms": round(pct(times, 50), 2), "single_p95_ms": round(pct(times, 95), 2),
        "singles": len(times), "peak_rss_mb": round(peak_rss_mb(), 1)}))


def _cold_start(home: Path, embedder: str, times: int) -> dict[str, Any]:
    """Wall time of ``latentmem search`` in a fresh process, to its answer."""
    env = {**os.environ, "LATENTMEM_EMBEDDER": embedder, "HF_HUB_OFFLINE": "1"}
    walls = []
    for run in range(times):
        # A query never asked before: the store's embedding cache must not answer it.
        query = f"where did Ana move in {embedder} run {run} at {time.time_ns()}?"
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "latentmem.cli", "--home", str(home),
                               "search", query, "-k", "3"],
                              env=env, capture_output=True, text=True, timeout=300)
        walls.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"latentmem search failed: {done.stderr[-500:]}")
    return {"embedder": embedder, "runs": times, "median_s": round(statistics.median(walls), 2),
            "min_s": round(min(walls), 2), "max_s": round(max(walls), 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from latentmem import Memory
    from latentmem.bench.perf_data import load_texts, wait_quiet
    from latentmem.bench.report import stamp

    data = load_texts(args.singles, 0, args.n)
    texts, singles = data.ingest, data.queries
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else None
    rows: dict[str, dict[str, Any]] = {}
    vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "texts.json").write_text(json.dumps([texts, singles]))
        for path in args.paths:
            out = work / f"{path}.json"
            code = ("import json, sys; from pathlib import Path; "
                    "from latentmem.bench.embedder import _measure; "
                    f"t, s = json.loads(Path({str(work / 'texts.json')!r}).read_text()); "
                    f"_measure({path!r}, t, s, Path({str(out)!r}))")
            subprocess.run([sys.executable, "-c", code], check=True, timeout=3600,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
            rows[path] = json.loads(out.read_text())
            vectors[path] = np.load(out.with_suffix(".npy"))
        if "minilm-torch" in vectors:
            ref = vectors["minilm-torch"]
            for path, found in vectors.items():
                cos = (found * ref).sum(1)
                rows[path].update(cos_mean=round(float(cos.mean()), 6),
                                  cos_min=round(float(cos.min()), 6),
                                  cos_p01=round(float(np.percentile(cos, 1)), 6))
        cold: list[dict[str, Any]] = []
        if args.cold:
            home = work / "store"
            with Memory(home) as mem:
                mem.add(texts[:200], user_id="default", session_id="s")
            for embedder in ("minilm", "minilm-torch"):
                cold.append(_cold_start(home, embedder, args.cold))
    return {"benchmark": "embedder", "n": len(texts), "singles": len(singles),
            "text_source": data.source, "other_processes_cpu_share_at_start": quiet,
            "paths": rows, "cold_start": cold, "command": command(args), **stamp()}


def command(args: argparse.Namespace) -> str:
    return (f"latentmem bench embedder --n {args.n} --singles {args.singles} --cold {args.cold} "
            f"--paths {','.join(args.paths)}")


def render(result: dict[str, Any]) -> str:
    from latentmem.bench.report import table

    rows = [[p, r["name"], r.get("cos_mean"), r.get("cos_min"), r["bulk_per_s"],
             r["single_p50_ms"], r["single_p95_ms"], r["load_s"], r["peak_rss_mb"]]
            for p, r in result["paths"].items()]
    text = table(rows, ["path", "model name", "cos mean", "cos min", "bulk texts/s",
                        "single p50 ms", "single p95 ms", "load s", "peak RSS MB"])
    for c in result["cold_start"]:
        text += (f"\ncold `latentmem search` ({c['embedder']}): median {c['median_s']} s "
                 f"(min {c['min_s']}, max {c['max_s']}, {c['runs']} runs)")
    return text + (f"\n{result['n']:,} texts, {result['singles']} singles from "
                   f"{result['text_source']}; {result['date']}, commit {result['commit']}")


def _paths(text: str) -> list[str]:
    from latentmem.bench.cli import names_of

    return names_of(text, PATHS, "paths")


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.bench.report import write_json

    result = run(args)
    print(render(result))
    write_json(result, args.json_out)
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("embedder", help="the torch, ONNX and int8 paths of MiniLM: "
                                               "vectors, bulk and single speed, cold start")
    p.add_argument("--n", type=int, default=10_000, help="corpus sentences embedded in bulk")
    p.add_argument("--singles", type=int, default=300, help="texts embedded one at a time")
    p.add_argument("--cold", type=int, default=3, help="cold `latentmem search` runs per path "
                                                       "(0: none)")
    p.add_argument("--paths", type=_paths, default=list(PATHS),
                   help=f"comma-separated (default {','.join(PATHS)}); the cosine needs "
                        "minilm-torch")
    p.add_argument("--wait-quiet", type=float, default=60.0,
                   help="wait up to this many seconds for the machine to be quiet")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT",
                   help="write every figure")
    p.set_defaults(func=run_cli)
