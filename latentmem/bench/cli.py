"""``latentmem bench ...``: the command-line side of the benchmarks."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from latentmem.bench.calibration import Collector
from latentmem.bench.calibration import report as calibration_report
from latentmem.bench.report import plots, stamp, table, write_json
from latentmem.bench.runner import Unit, ratios, run_system
from latentmem.bench.systems import SYSTEMS, BenchSetup
from latentmem.errors import InvalidInputError

QUALITY_KEYS = ("recall@1", "recall@5", "recall@10", "recall@20", "ndcg@10", "context_recall",
                "session_recall_any@5", "session_ndcg@10")


def _int_list(text: str) -> list[int]:
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, found {text!r}") from exc
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("values must be positive")
    return values


def names_of(text: str, known: Iterable[str], what: str) -> list[str]:
    """``a,b,c`` as a list, every name one of ``known`` (an argparse type)."""
    allowed = list(known)
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; expected some of {allowed}")
    return names


def _names(text: str) -> list[str]:
    return names_of(text, sorted(SYSTEMS), "systems")


def default_cache(embedder: str) -> str:
    base = Path.home() / ".cache" / "latentmem"
    base.mkdir(parents=True, exist_ok=True)
    return str(base / f"bench-embeddings-{embedder}.db")


def _setting(text: str) -> tuple[str, Any]:
    """``key=value`` for a latentmem Config field; the value is read as JSON when it can be."""
    from latentmem.config import Config

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, found {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    try:
        Config.from_dict({key: value})
    except (InvalidInputError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return key, value


def _setup(args: argparse.Namespace) -> BenchSetup:
    from latentmem.encode.base import get_embedder

    embedder = get_embedder(args.embedder)
    embedder.embed_batch(["warm-up: load the model before anything is timed"])
    return BenchSetup(embedder, args.cache or default_cache(args.embedder),
                      dict(getattr(args, "settings", None) or []), getattr(args, "store", None))


def engine_args(p: argparse.ArgumentParser) -> None:
    """The options every quality bench shares: model, cache, config overrides, output."""
    p.add_argument("--embedder", default="minilm", help="minilm (default) or hash (tests only)")
    p.add_argument("--cache", default=None, help="embedding cache file shared across runs")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write every figure")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--store", default=None, metavar="URL",
                   help="where latentmem's stores live: a PostgreSQL server URL (each store is "
                        "a fresh database on it, dropped after) or 'embedded-postgres' (a server "
                        "started for the run); default: SQLite in a temporary folder")
    p.add_argument("--set", dest="settings", type=_setting, action="append", metavar="KEY=VALUE",
                   help="override a latentmem config setting (repeatable), e.g. --set "
                        "diffusion_hops=0 for an ablation")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", type=_names, default=["latentmem", "dense", "bm25"],
                   help=f"comma-separated, first is primary; known: {','.join(sorted(SYSTEMS))}")
    engine_args(p)


def prewarm(setup: BenchSetup, units: list[Unit], quiet: bool) -> float:
    """Embed every turn and question once, into the shared cache, before anything is timed.

    All systems but mem0 read the same cache, so their ingest and search timings then
    measure retrieval, not the (shared) model; ``bench perf`` measures the model.
    """
    from tqdm import tqdm

    from latentmem.encode.cache import CachedEmbedder, EmbeddingCache
    from latentmem.retrieve.hybrid import dense_text, named_speakers

    queries = []
    for u in units:
        # latentmem embeds a query without the speakers it names (retrieve/hybrid.py).
        speakers = sorted({t.speaker for s in u.sessions for t in s.turns if t.speaker})
        for q in u.questions:
            queries += [q.text, dense_text(q.text, named_speakers(q.text, speakers))]
    texts = list(dict.fromkeys(
        [t.indexed for u in units for s in u.sessions for t in s.turns] + queries
    ))
    cache = EmbeddingCache.open(setup.cache_path)
    embedder = CachedEmbedder(setup.embedder, cache)
    t0 = time.perf_counter()
    try:
        for start in tqdm(range(0, len(texts), 256), desc="embedding", file=sys.stderr,
                          disable=quiet):
            embedder.embed_batch(texts[start:start + 256])
    finally:
        cache.close()
    return time.perf_counter() - t0


def _run(args: argparse.Namespace, units: list[Unit], ks: list[int], budget: int,
         bench: str, extra: dict[str, Any]) -> dict[str, Any]:
    from tqdm import tqdm

    started = stamp()  # the commit and time the run began with
    setup = _setup(args)
    embed_s = prewarm(setup, units, args.quiet)
    total = sum(len(u.questions) for u in units) * len(args.system)
    t0 = time.perf_counter() - embed_s
    systems: dict[str, Any] = {}
    with tqdm(total=total, desc=bench, unit="q", file=sys.stderr, disable=args.quiet) as bar:
        for name in args.system:
            bar.set_postfix_str(name)
            start = time.perf_counter()
            collector = Collector() if name == "latentmem" else None
            systems[name] = run_system(name, units, setup, ks, budget, max(max(ks), 50),
                                       bar.update, collector)
            systems[name]["seconds"] = round(time.perf_counter() - start, 1)
            if collector is not None:
                systems[name]["calibration"] = calibration_report(collector)
    primary = args.system[0]
    result: dict[str, Any] = {
        "benchmark": bench, "data": str(args.data), "system": primary, "k": ks,
        "budget_tokens": budget, "embedder": setup.embedder.name,
        "settings": setup.settings,
        "tokenizer": "all-MiniLM-L6-v2 WordPiece (see latentmem/retrieve/tokens.py)",
        **extra,
    }
    result.update({k: v for k, v in systems[primary].items() if k != "search_ms"})
    result["systems"] = systems
    result["ratios"] = ratios(systems, primary, QUALITY_KEYS)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["embedding_seconds"] = round(embed_s, 1)
    result["timing_note"] = ("embeddings were computed once before timing; search and ingest "
                             "figures exclude the model, except mem0's, which embeds itself")
    result.update(started)
    return result


def _print(result: dict[str, Any], keys: list[str], by: str, main_key: str) -> None:
    systems = result["systems"]
    rows = [[name, int(s["questions"]), *[s.get(k) for k in keys], s["search_ms_p50"],
             s["search_ms_p95"], s["ingest_turns_per_s"], s["seconds"]]
            for name, s in systems.items()]
    print(table(rows, ["system", "questions", *keys, "search p50 ms", "p95 ms", "ingest turns/s",
                       "seconds"]))
    cats = sorted({c for s in systems.values() for c in s["by_category"]})
    print(f"\n{main_key} by {by}:")
    rows = [[c, *[systems[n]["by_category"].get(c, {}).get(main_key) for n in systems],
             int(next(iter(systems.values()))["by_category"].get(c, {}).get("questions", 0))]
            for c in cats]
    print(table(rows, [by, *systems, "questions"]))
    apart = {n: s["apart_overall"] for n, s in systems.items() if s["apart_overall"]}
    if apart:
        print(f"\nreported apart ({', '.join(sorted(next(iter(systems.values()))['apart']))}):")
        rows = [[n, int(a["questions"]), *[a.get(k) for k in keys]] for n, a in apart.items()]
        print(table(rows, ["system", "questions", *keys]))
    print(f"\n{result['seconds']} s on {result['machine']['cpus']} cpus, commit {result['commit']}")


def cmd_locomo(args: argparse.Namespace) -> int:
    from latentmem.bench.locomo import load_locomo

    convs = [c.strip() for c in args.conversations.split(",")] if args.conversations else None
    units = load_locomo(args.data, convs)
    result = _run(args, units, args.k, args.budget, "locomo",
                  {"conversations": [u.name for u in units]})
    keys = [f"recall@{k}" for k in args.k] + ["ndcg@10", "context_recall"]
    _print(result, keys, "category", "recall@10" if 10 in args.k else keys[0])
    _print_calibration(result)
    write_json(result, args.json_out)
    if args.report:
        for path in [*plots(result, args.report, args.k), *_plot_calibration(result, args.report)]:
            print(f"wrote {path}")
    return 0


def cmd_longmemeval(args: argparse.Namespace) -> int:
    from latentmem.bench.longmemeval import load_longmemeval

    if args.limit is not None and args.limit < 1:
        raise InvalidInputError("--limit must be positive")
    if args.per_type is not None and args.per_type < 1:
        raise InvalidInputError("--per-type must be positive")
    units = load_longmemeval(args.data, args.limit, args.per_type)
    ks = [1, 5, 10, 20]
    result = _run(args, units, ks, args.budget, "longmemeval",
                  {"limit": args.limit, "per_type": args.per_type})
    keys = ["turn_recall@5", "turn_recall@10", "session_recall_any@5", "session_ndcg@10",
            "context_recall"]
    _print(result, keys, "question type", "turn_recall@10")
    _print_calibration(result)
    write_json(result, args.json_out)
    if args.report:
        for path in _plot_calibration(result, args.report):
            print(f"wrote {path}")
    return 0


def _print_calibration(result: dict[str, Any]) -> None:
    """The calibrated relevance of latentmem's hits (bench/calibration.py), when it ran."""
    cal = result["systems"].get("latentmem", {}).get("calibration")
    if not cal:
        return
    ts = cal["thresholds"]
    rows = []
    for key, label in (("shipped", "shipped model"), ("cross_validated", "cross-validated")):
        f = cal.get(key)
        if f and f.get("questions"):
            rows.append([label, f.get("ece"), *[f.get(f"precision@{t}") for t in ts],
                         *[f.get(f"recall@{t}") for t in ts],
                         *[f.get(f"no_evidence_below@{t}") for t in ts]])
    print(f"\ncalibrated relevance, top {cal['depth']} hits of each question:")
    print(table(rows, ["model", "ECE", *[f"precision@{t}" for t in ts],
                       *[f"recall@{t}" for t in ts], *[f"no-evidence below {t}" for t in ts]]))


def _plot_calibration(result: dict[str, Any], out_dir: str) -> list[Path]:
    from latentmem.bench.calibration import plot

    cal = result["systems"].get("latentmem", {}).get("calibration")
    if not cal:
        return []
    name = f"{result['benchmark']}_reliability.png"
    return [plot(cal, Path(out_dir) / name, f"{result['benchmark']}: calibrated relevance")]


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks (LoCoMo, LongMemEval, speed)")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    sub.required = True

    p = sub.add_parser("locomo", help="turn-level evidence recall on LoCoMo")
    p.add_argument("--data", required=True, help="LoCoMo JSON (list of samples)")
    p.add_argument("--conversations", default=None, help="e.g. conv-26,conv-30 (default: all)")
    p.add_argument("--k", type=_int_list, default=[1, 5, 10, 20])
    p.add_argument("--budget", type=int, default=1000, help="context budget in tokens")
    p.add_argument("--report", default=None, metavar="DIR", help="write PNG plots there")
    _common(p)
    p.set_defaults(func=cmd_locomo)

    p = sub.add_parser("longmemeval", help="turn and session recall on LongMemEval")
    p.add_argument("--data", required=True, help="LongMemEval JSON or JSON.gz")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--per-type", type=int, default=None,
                   help="first N questions of each question type (stratified subset)")
    p.add_argument("--budget", type=int, default=4000, help="context budget in tokens")
    p.add_argument("--report", default=None, metavar="DIR", help="write PNG plots there")
    _common(p)
    p.set_defaults(func=cmd_longmemeval)

    from latentmem.bench import (
        ablate,
        ann,
        controller,
        embedder,
        fit_ranker,
        fit_relevance,
        hostile_files,
        hostile_input,
        inversion,
        perf,
        reliability,
        serve,
        storage,
    )

    perf.add_parser(sub)
    ablate.add_parser(sub)
    controller.add_parser(sub)
    inversion.add_parser(sub)
    storage.add_parser(sub)
    fit_ranker.add_parser(sub)
    fit_relevance.add_parser(sub)
    serve.add_parser(sub)
    embedder.add_parser(sub)
    reliability.add_parser(sub)
    ann.add_parser(sub)
    hostile_input.add_parser(sub)
    hostile_files.add_parser(sub)
