"""``latentmem bench perf``: add and search latency, ingest rate, disk and peak RSS by size.

Each size runs in a fresh subprocess (``perf_worker``), so peak RSS and caches
belong to that size alone, and a size that runs past ``--timeout`` is reported
as skipped rather than holding up the others. ``perf_worker`` says which
vectors are real and which are generated; ``perf_data`` where the text comes
from. Nothing here asserts speed: tests check the shape of the output only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from latentmem.bench.perf_data import machine_info, wait_quiet
from latentmem.bench.report import commit, stamp, table, write_json
from latentmem.errors import InvalidInputError, LatentMemError

# Every measured size carries these keys, all positive and finite.
KEYS = ("add_ms_p50", "add_ms_p95", "add_cached_ms_p50", "add_cached_ms_p95",
        "bulk_ingest_turns_per_s", "search_ms_p50", "search_ms_p95", "search_noembed_ms_p50",
        "search_noembed_ms_p95", "search_dense_ms_p50", "search_bm25_ms_p50",
        "bytes_per_memory", "sqlite_bytes_per_memory", "faiss_bytes_per_memory", "peak_rss_mb")
COLUMNS = [("add_ms_p50", "add p50 ms"), ("add_ms_p95", "add p95 ms"),
           ("add_cached_ms_p50", "cached add p50"), ("bulk_ingest_turns_per_s", "ingest turns/s"),
           ("search_ms_p50", "search p50 ms"), ("search_ms_p95", "search p95 ms"),
           ("search_noembed_ms_p50", "no-embed p50"), ("search_noembed_ms_p95", "no-embed p95"),
           ("search_dense_ms_p50", "FAISS p50"), ("search_bm25_ms_p50", "BM25 p50"),
           ("bytes_per_memory", "bytes/memory"), ("peak_rss_mb", "peak RSS MB"),
           ("other_processes_cpu_share", "other CPU")]
# Other processes using more than this share of the machine make latencies unreliable.
BUSY = 0.10


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected sizes like 10000,100000, found {text!r}") from exc
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, found {text!r}")
    return sizes


def _stores(text: str) -> list[str]:
    stores = [s.strip() for s in text.split(",") if s.strip()]
    for s in stores:
        if s not in ("sqlite", "embedded-postgres") and not s.startswith(("postgresql://",
                                                                         "postgres://")):
            raise argparse.ArgumentTypeError(f"--store: expected sqlite, embedded-postgres or a "
                                             f"postgresql:// URL, found {s!r}")
    return stores


def _systems(text: str) -> list[str]:
    from latentmem.bench.cli import names_of
    from latentmem.bench.perf_peers import PEERS

    return names_of(text, ["latentmem", *PEERS], "systems")


def _relay(proc: subprocess.Popen[str], lines: list[str]) -> None:
    """Pass the worker's progress through as it comes, and keep it for error messages."""
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        lines.append(line)


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run."""
    parts = ["latentmem bench perf", "--n", ",".join(str(n) for n in args.n)]
    for name in ("queries", "adds", "real", "embedder"):
        parts += [f"--{name}", str(getattr(args, name))]
    if args.skip_add_latency:
        parts.append("--skip-add-latency")
    if args.sleep:
        parts.append("--sleep")
    if args.store:
        parts += ["--store", ",".join(args.store)]
    if args.writers:
        parts += ["--writers", ",".join(str(w) for w in args.writers)]
    if args.systems != ["latentmem"]:
        parts += ["--systems", ",".join(args.systems)]
    return " ".join(parts)


def run_size(n: int, args: argparse.Namespace, store: str | None = None) -> dict[str, Any]:
    """Measure one size in a subprocess; a timeout or a crash becomes a skipped entry.
    ``store``: a PostgreSQL server (``--store``), else SQLite."""
    if args.home and store is None:
        return _run_worker(n, args, str(_kept_home(args.home, n)), store)
    # The parent owns the temporary store, so it goes even when the worker is killed.
    with tempfile.TemporaryDirectory(prefix="lm-perf-") as tmp:
        return _run_worker(n, args, tmp, store)


def _kept_home(base: str, n: int) -> Path:
    return Path(base) / f"n{n}"


def _run_worker(n: int, args: argparse.Namespace, home: str, store: str | None,
                peer: str | None = None) -> dict[str, Any]:
    """``perf_worker`` for latentmem, or ``perf_peers`` for another system (``peer``)."""
    if peer is None:
        module = "latentmem.bench.perf_worker"
        payload = json.dumps({"n": n, "embedder_name": args.embedder, "queries": args.queries,
                              "adds": args.adds, "real": args.real, "home": home,
                              "skip_add_latency": args.skip_add_latency, "sleep": args.sleep,
                              "store": store, "writers": args.writers})
    else:
        module = "latentmem.bench.perf_peers"
        payload = json.dumps({"system": peer, "n": n, "embedder_name": args.embedder,
                              "queries": args.queries, "adds": args.adds, "real": args.real})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    progress: list[str] = []
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", module, payload],
                                stdout=stdout, stderr=subprocess.PIPE, text=True, env=env)
        relay = threading.Thread(target=_relay, args=(proc, progress), daemon=True)
        relay.start()
        try:
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            relay.join(5)
            last = [ln.strip() for ln in progress if ln.strip().startswith("[")][-1:]
            return {"n": n, "store": "sqlite" if store is None else "postgresql",
                    "skipped": f"timed out after {args.timeout} s (--timeout); last "
                    f"phase: {last[0] if last else 'none'}", "seconds": time.perf_counter() - t0}
        relay.join(5)
        stdout.seek(0)
        text = stdout.read()
    if proc.returncode != 0:
        tail = [ln.strip() for ln in progress if ln.strip()][-1:] or ["no output"]
        return {"n": n, "store": "sqlite" if store is None else "postgresql",
                "skipped": f"failed: {tail[0]}", "seconds": time.perf_counter() - t0}
    result = dict(json.loads(text.strip().splitlines()[-1]))
    result["seconds"] = time.perf_counter() - t0
    return result


def run_peer(n: int, args: argparse.Namespace, system: str) -> dict[str, Any]:
    """One size of another system (``perf_peers``); mem0 absent is a skipped entry."""
    if system == "mem0":
        import importlib.util

        if importlib.util.find_spec("mem0") is None:
            return {"system": system, "n": n, "skipped": "mem0ai is not installed (pip install "
                    "'latentmem[peers]')"}
    result = _run_worker(n, args, "", None, peer=system)
    result.setdefault("system", system)
    return result


# The side-by-side table (--systems): the figures every system has.
PEER_COLUMNS = [("add_ms_p50", "add p50 ms"), ("add_ms_p95", "add p95 ms"),
                ("bulk_ingest_turns_per_s", "ingest turns/s"), ("search_ms_p50", "search p50 ms"),
                ("search_ms_p95", "search p95 ms"), ("peak_rss_mb", "peak RSS MB"),
                ("other_processes_cpu_share", "other CPU")]


def render_systems(out: dict[str, Any]) -> str:
    rows = [r for r in out["sizes"] + out.get("peers", []) if "skipped" not in r
            and r.get("store", "sqlite") == "sqlite"]
    rows.sort(key=lambda r: (r["n"], r.get("system", "latentmem") != "latentmem"))
    lines = [table([[f"{r['n']:,}", r.get("system", "latentmem"),
                     *[_cell(r, k) for k, _ in PEER_COLUMNS]] for r in rows],
                   ["n", "system", *[h for _, h in PEER_COLUMNS]])] if rows else []
    for r in out.get("peers", []):
        if "skipped" in r:
            lines.append(f"{r['system']} n={r['n']:,}: skipped, {r['skipped']}")
        elif r.get("capped"):
            lines.append(f"{r['system']} n={r['n']:,}: timed counts capped at {r['capped']} "
                         "(its store rewrites its whole index file on every insert)")
    return "\n".join(lines)


def _cell(r: dict[str, Any], key: str) -> str:
    value = r.get(key)
    if key == "other_processes_cpu_share" and isinstance(value, float):
        return f"{value:.0%}"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def render(out: dict[str, Any]) -> str:
    done = [r for r in out["sizes"] if "skipped" not in r]
    lines = [table([[f"{r['n']:,}", r.get("store", "sqlite"), *[_cell(r, k) for k, _ in COLUMNS]]
                    for r in done], ["n", "store", *[h for _, h in COLUMNS]])] if done else []
    lines += [f"n={r['n']:,}: skipped, {r['skipped']}" for r in out["sizes"] if "skipped" in r]
    for r in done:
        lines.append(f"n={r['n']:,}: {r['generated_vectors_note']}")
        if r.get("ann_recall_at_10") is not None:
            lines.append(f"n={r['n']:,}: vector index {r['index_kind']}: recall@10 against an "
                         f"exact scan {r['ann_recall_at_10']:.4f}; the exact top 10 among its "
                         f"candidates {r['ann_recall_at_10_in_candidates']:.4f}")
        for w in sorted(int(k.split("_")[1]) for k in r if k.startswith("writers_")
                        and k.endswith("_adds_per_s")):
            lines.append(f"n={r['n']:,}, {r.get('store', 'sqlite')}: {w} writer process(es): "
                         f"{r[f'writers_{w}_adds_per_s']:.0f} adds/s in all, one add p50 "
                         f"{r[f'writers_{w}_add_ms_p50']:.1f} ms, p95 {r[f'writers_{w}_add_ms_p95']:.1f} ms")
        for prefix, label in (("sleep", "first sleep cycle"), ("sleep2", "second sleep cycle")):
            if r.get(f"{prefix}_seconds") is None:
                continue
            phases = r.get(f"{prefix}_phases") or {}
            lines.append(
                f"n={r['n']:,}: {label} {r[f'{prefix}_seconds']:.1f} s ("
                + ", ".join(f"{k} {v.get('ms', 0) / 1e3:.1f} s" for k, v in phases.items())
                + f"); {r[f'search_during_{prefix}_n']} searches beside it: p50 "
                f"{r.get(f'search_during_{prefix}_ms_p50', 0):.1f} ms, p95 "
                f"{r.get(f'search_during_{prefix}_ms_p95', 0):.1f} ms, max "
                f"{r.get(f'search_during_{prefix}_ms_max', 0):.1f} ms; longest write of the "
                f"cycle {r.get(f'{prefix}_longest_write_ms', 0):.1f} ms; longest hold of the "
                f"Memory's lock {r.get(f'{prefix}_longest_memory_lock_ms', 0):.1f} ms, of the "
                f"store's {r.get(f'{prefix}_longest_store_lock_ms', 0):.1f} ms; full GC pauses (ms) "
                f"{[round(x) for x in r.get(f'{prefix}_full_gc_ms', [])]}")
        if r.get("fill_synthetic_texts"):
            lines.append(f"n={r['n']:,}: the corpus ran out; {r['fill_synthetic_texts']:,} fill "
                         "texts are synthetic sentences")
        if r.get("other_processes_cpu_share", 0.0) > BUSY:
            lines.append(f"n={r['n']:,}: WARNING other processes used "
                         f"{r['other_processes_cpu_share']:.0%} of the CPU while latencies were "
                         "measured; rerun on a quiet machine (--wait-quiet)")
    m = out["machine"]
    lines.append(f"text: {done[0]['text_source'] if done else '-'}; embedder {out['embedder']}; "
                 f"{m['nproc']} cores ({m['lscpu_model']}), {out['date']}, {out['commit_note']}")
    return "\n".join(lines)


def run_cli(args: argparse.Namespace) -> int:
    for name in ("queries", "adds", "real"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name} must be positive, found {getattr(args, name)}")
    if args.home:
        taken = [str(_kept_home(args.home, n)) for n in args.n if _kept_home(args.home, n).exists()]
        if taken:
            raise InvalidInputError(f"--home: {', '.join(taken)} already exist; expected new "
                                    "directories (remove them or choose another --home)")
    started = stamp()
    sha = commit()
    out: dict[str, Any] = {
        "benchmark": "perf", "embedder": args.embedder,
        "command": command(args),
        "settings": {k: getattr(args, k) for k in ("queries", "adds", "real", "skip_add_latency",
                                                   "timeout", "sleep")},
        "config": "Memory(path) defaults: embedding cache on, access tracking on, hybrid "
                  "dense+BM25 with diffusion, k=10",
        **started, "machine": machine_info(),
        "commit_note": (f"working tree on top of {sha.removesuffix('+dirty')}"
                        if sha.endswith("+dirty") else f"commit {sha}"),
        "sizes": [],
    }
    peers = [s for s in args.systems if s != "latentmem"]
    if peers:
        out["peers"] = []
    for n in args.n:
        runs: list[tuple[str, str]] = []
        if "latentmem" in args.systems:
            runs += [("latentmem", store) for store in args.store or ["sqlite"]]
        runs += [(peer, "") for peer in peers]
        for system, store in runs:
            if args.wait_quiet > 0:
                share = wait_quiet(args.wait_quiet)
                print(f"n={n:,}: other processes at {share:.0%} of the CPU", file=sys.stderr)
            print(f"n={n:,}, {system} {store} ...", file=sys.stderr, flush=True)
            if system == "latentmem":
                out["sizes"].append(run_size(n, args, None if store == "sqlite" else store))
            else:
                out["peers"].append(run_peer(n, args, system))
            write_json(out, args.json_out)  # after every size: a long run keeps what it measured
    if out["sizes"]:
        print(render(out))
    if peers:
        print(render_systems(out))
    measured = out["sizes"] + out.get("peers", [])
    if all("skipped" in r for r in measured):
        raise LatentMemError("every size was skipped: " + "; ".join(r["skipped"] for r in measured))
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("perf", help="latency, ingest rate, disk and memory by store size")
    p.add_argument("--n", type=_sizes, default=[10_000, 100_000],
                   help="store sizes, comma-separated (default 10000,100000)")
    p.add_argument("--queries", type=int, default=200, help="timed searches per size")
    p.add_argument("--adds", type=int, default=100, help="timed single adds per size")
    p.add_argument("--real", type=int, default=2000,
                   help="memories embedded for real per size (the ingest rate); the rest get "
                        "generated vectors")
    p.add_argument("--embedder", default="minilm", help="minilm (default) or hash (tests only)")
    p.add_argument("--home", default=None, help="keep the stores under this directory")
    p.add_argument("--skip-add-latency", action="store_true", help="do not time single adds")
    p.add_argument("--sleep", action="store_true",
                   help="also time one sleep cycle, searching beside it the whole time")
    p.add_argument("--timeout", type=int, default=1800,
                   help="seconds per size before it is reported as skipped (default 1800)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each size, wait up to S seconds for other processes to go quiet")
    p.add_argument("--store", type=_stores, default=None, metavar="S,S",
                   help="stores to measure, side by side: 'sqlite' (default), a PostgreSQL "
                        "server URL (each size in a fresh database on it) or 'embedded-postgres'")
    p.add_argument("--writers", type=_sizes, default=None, metavar="W,W",
                   help="also time that many processes adding at once, e.g. 1,4")
    p.add_argument("--systems", type=_systems, default=["latentmem"], metavar="S,S",
                   help="systems side by side: latentmem (default), mem0 (infer=False, needs "
                        "the peers extra), faiss (plain FAISS + MiniLM); see bench/perf_peers.py")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write every figure")
    p.set_defaults(func=run_cli)
