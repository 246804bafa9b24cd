"""``latentmem bench perf``: add and search latency, ingest rate, disk and memory, by size.

Each size runs in a fresh subprocess (``perf_worker``), so peak RSS and caches
belong to that size alone. See ``perf_worker`` for which vectors are real and
which are generated (all but the first 2,000 at large n: embedding a million
sentences on 2 cores would take about an hour).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from latentmem.bench.report import stamp, table
from latentmem.errors import LatentMemError

KEYS = ("add_ms_p50", "add_ms_p95", "bulk_ingest_turns_per_s", "search_ms_p50", "search_ms_p95",
        "search_noembed_ms_p50", "search_noembed_ms_p95", "bytes_per_memory", "peak_rss_mb")


def run_size(n: int, embedder: str, queries: int, adds: int, real: int,
             home: str | None) -> dict[str, Any]:
    payload = json.dumps({"n": n, "embedder_name": embedder, "queries": queries, "adds": adds,
                          "real": real, "home": home})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "latentmem.bench.perf_worker", payload],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise LatentMemError(f"perf run at n={n} failed: {tail[0]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_cli(args: argparse.Namespace) -> int:
    sizes = [int(x) for x in args.n.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        raise LatentMemError("--n must list positive sizes, e.g. 10000,100000")
    started = stamp()
    results = []
    for n in sizes:
        print(f"n={n:,} ...", file=sys.stderr, flush=True)
        home = str(Path(args.home) / f"n{n}") if args.home else None
        results.append(run_size(n, args.embedder, args.queries, args.adds, args.real, home))
    out = {"benchmark": "perf", "embedder": args.embedder, "sizes": results, **started}
    rows = [[f"{r['n']:,}", *[r[k] for k in KEYS]] for r in results]
    print(table(rows, ["n", "add p50 ms", "add p95 ms", "ingest turns/s", "search p50 ms",
                       "search p95 ms", "no-embed p50", "no-embed p95", "bytes/memory",
                       "peak RSS MB"]))
    print(f"\nvectors: {results[0]['real_vectors']:,} real per size, the rest generated; "
          f"text: {results[0]['text_source']}")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(out, indent=2))
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("perf", help="latency, ingest rate, disk and memory by store size")
    p.add_argument("--n", default="10000,100000", help="store sizes, comma-separated")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--adds", type=int, default=100)
    p.add_argument("--real", type=int, default=2000, help="memories embedded for real per size")
    p.add_argument("--embedder", default="minilm")
    p.add_argument("--home", default=None, help="keep the stores under this directory")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT")
    p.set_defaults(func=run_cli)
