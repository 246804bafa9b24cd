"""``latentmem bench reliability``: kill -9 during writes, then check that nothing
acknowledged is lost and nothing unacknowledged is half there.

Each trial starts a child process that writes to a store in a loop and prints one line
after each call returns (the acknowledgement, with what it wrote), and a ``try`` line
before it. The parent kills it with SIGKILL at a random moment after its first
acknowledgement and opens the store again:

- every acknowledged id is present, with its text and a vector identical to the one the
  write was given or the embedder makes of its text (the hash embedder: deterministic),
  as the store's vector tier keeps it (encoded, then decoded);
- an acknowledged update reads as that update, or as the one in flight at the kill;
- the vector index agrees with the store: the same count in all and per user, every live
  row in it once, and each of a few searches returns the scores an exact scan of the
  stored vectors gives, each for a row the store holds with that vector (so nothing in
  flight left a row without its vector, or a vector without its row);
- every live row has its full-text row (BM25 finds it by a word of its own).

Scenarios: ``bulk_add`` (sessions of 50 turns in one call), ``single_add``, ``import``
(``import_records`` of 100 records with given vectors), ``update`` (alternating
``update`` and ``add(supersedes=...)`` on a seeded store), ``sleep`` (adds and full sleep
cycles in turn: latentmem/bench/crash_sleep.py), ``server`` (``latentmem serve``'s
server in the child, four client threads of the parent sending ``POST /v1/add``; a write
is acknowledged when its 200 arrives).

Concurrency: four processes add ``--adds`` memories each into one store (SQLite), one of
them deleting some of its own and another running sleep cycles, all searching as they
go. Then: no error reached a caller (``database is locked`` included), ids are unique, the
store holds exactly what was acknowledged minus what was deleted, every process finds the
others' last writes once all have committed, and every process's index agrees with the
store (the check above).

The test suite runs two kills of each scenario and the concurrency scenario with 250
adds a process; the long form is ``--trials 20 --adds 2500``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.bench import damage

KILLS = ("bulk_add", "single_add", "import", "update", "sleep", "server")
SCENARIOS = (*KILLS, *damage.SCENARIOS)
CLIENTS = 4  # threads sending adds to the server scenario's server
DIM = 64  # the hash embedder's
SEEDED = 40  # memories the update scenario starts from

_CHILD = textwrap.dedent("""
    import json, sys
    from datetime import UTC, datetime
    import numpy as np
    from latentmem import Memory
    from latentmem.types import Record
    scenario, home = sys.argv[1], sys.argv[2]
    m = Memory(home, embedder="hash")
    def say(**line):
        sys.stdout.write(json.dumps(line) + "\\n")
        sys.stdout.flush()
    seeded = [r.id for r in m.all("ana")]
    say(ready=True)
    n = 0
    while True:
        n += 1
        if scenario == "bulk_add":
            texts = [f"batch {n} turn {i} about kestrel{n}x{i}" for i in range(50)]
            say(try_=n)
            ids = m.add(texts, user_id="ana", session_id=f"s{n}").ids
            say(op="add", ids=ids, texts=texts)
        elif scenario == "single_add":
            text = f"single note {n} about heron{n}"
            say(try_=n)
            ids = m.add(text, user_id="ana").ids
            say(op="add", ids=ids, texts=[text])
        elif scenario == "import":
            rng = np.random.default_rng(n)
            vectors = rng.standard_normal((100, 64)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ids = [f"imp{n:05d}r{i:03d}" for i in range(100)]
            texts = [f"imported {n} row {i} about plover{n}y{i}" for i in range(100)]
            now = datetime.now(UTC)
            records = [Record(id=i, user_id="ana", text=t, vector=v, event_time=now,
                              created_at=now, updated_at=now)
                       for i, t, v in zip(ids, texts, vectors)]
            say(try_=n)
            m.import_records(records)
            say(op="import", ids=ids, texts=texts, seed=n)
        else:
            target = seeded[n % len(seeded)]
            if n % 2:
                text = f"updated {n} about avocet{n}"
                say(try_=n, id=target, text=text)
                m.update(target, text=text)
                say(op="update", id=target, text=text)
            else:
                text = f"replacement {n} about stilt{n}"
                say(try_=n)
                ids = m.add(text, user_id="ana", supersedes=target).ids
                say(op="add", ids=ids, texts=[text])
""")


def _seed(home: Path, scenario: str) -> None:
    from latentmem import Memory

    with Memory(home, embedder="hash") as m:
        if scenario == "update":
            m.add([f"seeded fact {i} about godwit{i}" for i in range(SEEDED)], user_id="ana",
                  session_id="seed")


def _lines(raw: bytes) -> list[dict[str, Any]]:
    """Complete lines only: a line cut by the kill was never an acknowledgement."""
    found = []
    for line in raw.decode("utf-8", "replace").split("\n")[:-1]:
        found.append(json.loads(line))
    return found


_SERVER = textwrap.dedent("""
    import json, sys, time
    from latentmem import Memory
    from latentmem.server import make_server
    m = Memory(sys.argv[1], embedder="hash")
    srv = make_server(m, "127.0.0.1", 0, insecure=True).start()
    sys.stdout.write(json.dumps({"ready": True, "url": srv.url}) + "\\n")
    sys.stdout.flush()
    time.sleep(3600)
""")


def _server_trial(home: Path, rng: random.Random, max_wait: float) -> dict[str, Any]:
    import threading

    import httpx

    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(home)], stdout=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.stdout is not None
    url = json.loads(proc.stdout.readline())["url"]
    acked: list[dict[str, Any]] = []
    cut: list[int] = []  # clients whose request the kill interrupted
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            i = 0
            while not stop.is_set():
                text = f"served note {n}-{i} about dunlin{n}z{i}"
                i += 1
                try:
                    answer = http.post("/v1/add", json={"text": text, "user_id": "ana"})
                except httpx.HTTPError:
                    cut.append(n)  # the server is gone: this write was never acknowledged
                    return
                if answer.status_code != 200:
                    acked.append({"op": "error", "status": answer.status_code})
                    return
                acked.append({"op": "add", "ids": answer.json()["ids"], "texts": [text]})

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while not acked and time.monotonic() < deadline:  # the clock starts at the first write
        time.sleep(0.01)
    delay = rng.uniform(0.05, max_wait)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for thread in threads:
        thread.join()
    errors = [a for a in acked if a["op"] == "error"]
    result = verify(home, [a for a in acked if a["op"] == "add"])
    result["problems"] += [f"the server answered {e['status']} before the kill" for e in errors]
    result["in_flight"] = bool(cut)
    return {"scenario": "server", "killed_after_s": round(delay, 3), **result}


def trial(scenario: str, home: Path, rng: random.Random, max_wait: float = 1.5
          ) -> dict[str, Any]:
    """One kill -9 during ``scenario`` writing to ``home``; returns what was checked and
    every problem found."""
    from latentmem.bench import crash_sleep

    if scenario == "server":
        return _server_trial(home, rng, max_wait)
    if scenario == "sleep":
        crash_sleep.seed(home)
        argv = [sys.executable, "-c", crash_sleep.CHILD, str(home)]
    else:
        _seed(home, scenario)
        argv = [sys.executable, "-c", _CHILD, scenario, str(home)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if json.loads(first).get("ready") is not True:
        proc.kill()
        raise RuntimeError(f"the writer did not start: {first!r}")
    # The clock starts at the first acknowledgement, so that every kill falls among
    # writes even on a loaded machine (a kill before any write checks nothing).
    head: list[dict[str, Any]] = []
    while not any("op" in line for line in head):
        raw = proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"the {scenario} writer stopped by itself (exit {proc.wait()})")
        head.append(json.loads(raw))
    delay = rng.uniform(0.05, max_wait)
    time.sleep(delay)
    if proc.poll() is not None:
        raise RuntimeError(f"the {scenario} writer stopped by itself (exit {proc.returncode})")
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    lines = head + _lines(rest)
    check = crash_sleep.verify if scenario == "sleep" else verify
    return {"scenario": scenario, "killed_after_s": round(delay, 3), **check(home, lines)}


def verify(home: Path, lines: list[dict[str, Any]]) -> dict[str, Any]:
    from latentmem import Memory
    from latentmem.encode.fake import HashEmbedder
    from latentmem.errors import NotFoundError

    problems: list[str] = []
    acked = [x for x in lines if "op" in x]
    in_flight = lines[-1] if lines and "try_" in lines[-1] else None
    embed = HashEmbedder(DIM).embed_batch
    with Memory(home, embedder="hash") as m:
        m.settle()
        # A store keeps vectors in its tier (int8 by default): what it gives back for a
        # vector is that vector encoded and decoded, exactly, every time.
        stored = m.store.codec.quantise
        checked = 0
        last_text: dict[str, str] = {}
        for ack in acked:
            if ack["op"] == "update":
                last_text[ack["id"]] = ack["text"]
                continue
            given = None
            if ack["op"] == "import":
                rng = np.random.default_rng(ack["seed"])
                given = rng.standard_normal((len(ack["ids"]), DIM)).astype(np.float32)
                given /= np.linalg.norm(given, axis=1, keepdims=True)
            expected = stored(given if given is not None else embed(ack["texts"]))
            for i, (rid, text) in enumerate(zip(ack["ids"], ack["texts"], strict=True)):
                checked += 1
                try:
                    rec = m.get(rid, include_vector=True)
                except NotFoundError:
                    problems.append(f"acknowledged {rid} is gone")
                    continue
                if rec.text != text and rid not in last_text:
                    problems.append(f"{rid}: text {rec.text!r}, acknowledged {text!r}")
                if rid not in last_text and not np.array_equal(
                        np.asarray(rec.vector, dtype=np.float32), expected[i]):
                    problems.append(f"{rid}: the vector is not the one written")
        for rid, text in last_text.items():
            checked += 1
            rec = m.get(rid, include_vector=True)
            allowed = {text}
            if in_flight is not None and in_flight.get("id") == rid:
                allowed.add(in_flight["text"])
            if rec.text not in allowed:
                problems.append(f"{rid}: text {rec.text!r}, acknowledged {text!r}")
            elif not np.array_equal(np.asarray(rec.vector, dtype=np.float32),
                                    stored(embed([rec.text]))[0]):
                problems.append(f"{rid}: the vector does not match its text")
        problems += _index_agrees(m, m.core.scope("ana"))
        live = m.store.count()
    return {"acknowledged_writes": len(acked), "records_checked": checked, "live": live,
            "in_flight": in_flight is not None, "problems": problems}


def _index_agrees(m: Any, scope: Any) -> list[str]:
    problems = []
    rows = m.store.list_rows(scope, with_vector=True)
    if m.index.count() != m.store.count():
        problems.append(f"index holds {m.index.count()} vectors, the store {m.store.count()}")
    if not rows:
        return problems
    rowids = np.array([r.rowid for r in rows], dtype=np.int64)
    if len(set(rowids.tolist())) != len(rowids):
        problems.append("duplicate rowids in the store")
    matrix = np.stack([np.asarray(r.record.vector, dtype=np.float32) for r in rows])
    rng = np.random.default_rng(0)
    position = {int(r): i for i, r in enumerate(rowids)}
    for probe in rng.choice(len(rows), size=min(5, len(rows)), replace=False):
        q = matrix[probe]
        exact = np.sort(matrix @ q)[::-1][:10]
        found, scores = m.index.search("ana", q, 10)
        # Scores, not ids: hash vectors tie often, and a tie may be broken either way.
        unknown = [int(r) for r in found if int(r) not in position]
        if unknown:
            problems.append(f"the index returns rows the store does not hold: {unknown}")
        # (the index may keep vectors at 16 bits: scores within 5e-3 of the exact ones)
        elif not np.allclose(np.sort(scores)[::-1], exact, atol=5e-3) or not np.allclose(
                scores, matrix[[position[int(r)] for r in found]] @ q, atol=5e-3):
            problems.append(f"a search differs from the exact scan: {np.round(scores, 4)} "
                            f"vs {np.round(exact, 4)}")
    words = rows[-1].record.text.split()[-1] if rows[-1].record.text else None
    if words and rows[-1].rowid not in {r for r, _ in m.store.bm25(words, scope, 10)}:
        problems.append(f"the newest row is not in the full-text index ({words!r})")
    return problems


_WORKER = textwrap.dedent("""
    import json, sys, time, traceback
    from pathlib import Path
    from latentmem import Memory
    from latentmem.bench.reliability import _index_agrees
    home, me, workers, adds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    m = Memory(home, embedder="hash")
    added, deleted, errors, searches = [], [], [], 0
    for i in range(adds):
        try:
            added += m.add(f"worker {me} note {i} about sanderling{me}q{i}", user_id="ana").ids
            if i % 10 == 9:
                m.search(f"sanderling{(me + 1) % workers}q{i}", user_id="ana", k=5)
                searches += 1
            if me == 0 and i % 25 == 24:  # one worker also deletes some of its own
                deleted.append(added[-2])
                m.delete(added[-2])
            if me == 1 and i in (adds // 3, 2 * adds // 3):  # and one runs sleep cycles
                m.sleep(phases=["preload", "optimise"])
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    Path(home, f"done-{me}").touch()
    while len(list(Path(home).glob("done-*"))) < workers:
        time.sleep(0.05)
    # Every other worker's last write, seen from here once all have committed.
    unseen = []
    for other in range(workers):
        if other != me:
            text = f"worker {other} note {adds - 1} about sanderling{other}q{adds - 1}"
            hits = m.search(text, user_id="ana", k=1)
            if not hits or hits[0].text != text:
                unseen.append(other)
    m.settle()
    with m.core.lock:
        m.core.sync_index()
    problems = _index_agrees(m, m.core.scope("ana"))
    m.close()
    print(json.dumps({"added": added, "deleted": deleted, "errors": errors,
                      "searches": searches, "unseen": unseen, "problems": problems}))
""")


def concurrency(home: Path, workers: int = 4, adds: int = 250) -> dict[str, Any]:
    """``workers`` processes adding ``adds`` memories each into one store, with searches,
    deletions and sleep cycles beside them; then counts, ids and what each saw."""
    from latentmem import Memory

    Memory(home, embedder="hash").close()  # created once, before the race
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(home), str(n), str(workers),
                               str(adds)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
             for n in range(workers)]
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"a worker failed (exit {proc.returncode})")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    problems = [p for r in reports for p in r["problems"]]
    problems += [e for r in reports for e in r["errors"]]
    problems += [f"worker {n} did not find worker {o}'s last write"
                 for n, r in enumerate(reports) for o in r["unseen"]]
    added = [i for r in reports for i in r["added"]]
    deleted = {i for r in reports for i in r["deleted"]}
    if len(set(added)) != len(added):
        problems.append("an id was given twice")
    with Memory(home, embedder="hash") as m:
        live = {r.record.id for r in m.store.list_rows(None)}
        expected = set(added) - deleted
        if live != expected:
            problems.append(f"{len(expected - live)} acknowledged memories missing, "
                            f"{len(live - expected)} unexpected ones")
        problems += _index_agrees(m, m.core.scope("ana"))
    return {"scenario": "concurrency", "workers": workers, "adds": len(added),
            "deleted": len(deleted), "searches": sum(r["searches"] for r in reports),
            "locked_errors": sum("locked" in e for r in reports for e in r["errors"]),
            "problems": problems}


def run(scenarios: list[str], trials: int, seed: int, adds: int = 2500) -> dict[str, Any]:
    from latentmem.bench.report import stamp

    rng = random.Random(seed)
    results = []
    for scenario in scenarios:
        for _ in range(trials):
            with tempfile.TemporaryDirectory() as tmp:
                store = Path(tmp) / "store"
                results.append(damage.trial(scenario, store, rng) if scenario in damage.SCENARIOS
                               else trial(scenario, store, rng))
    summary = {}
    for s in scenarios:
        mine = [r for r in results if r["scenario"] == s]
        summary[s] = {"trials": len(mine),
                      "acknowledged_writes": sum(r["acknowledged_writes"] for r in mine),
                      "records_checked": sum(r["records_checked"] for r in mine),
                      "problems": sum(len(r["problems"]) for r in mine)}
        if s in damage.SCENARIOS:
            summary[s]["reads_refused"] = sum(r["refused_reads"] for r in mine)
            summary[s]["check_reported"] = sum(not r["check_ok"] for r in mine)
        else:
            summary[s]["killed_inside_a_call"] = sum(bool(r["in_flight"]) for r in mine)
    crowd = None
    if adds:
        with tempfile.TemporaryDirectory() as tmp:
            crowd = concurrency(Path(tmp) / "store", 4, adds)
    return {"benchmark": "reliability", "seed": seed, "summary": summary, "trials": results,
            "concurrency": crowd,
            "command": f"latentmem bench reliability --trials {trials} --seed {seed} "
                       f"--scenarios {','.join(scenarios)} --adds {adds}", **stamp()}


def render(result: dict[str, Any]) -> str:
    from latentmem.bench.report import table

    summary = result["summary"]
    rows = [[s, v["trials"], v["killed_inside_a_call"], v["acknowledged_writes"],
             v["records_checked"], v["problems"]] for s, v in summary.items() if s in KILLS]
    text = table(rows, ["scenario (kill -9 while writing)", "trials", "killed inside a call",
                        "acknowledged writes", "records checked", "problems"]) if rows else ""
    rows = [[s, v["trials"], v["records_checked"], v["reads_refused"], v["check_reported"],
             v["problems"]] for s, v in summary.items() if s in damage.SCENARIOS]
    if rows:
        text += "\n\n" + table(rows, ["scenario (a file damaged)", "trials", "memories read back",
                                    "reads refused as damaged", "trials check reported",
                                    "problems"])
    for r in result["trials"]:
        for problem in r["problems"]:
            text += f"\n  {r['scenario']}: {problem}"
    crowd = result["concurrency"]
    if crowd is not None:
        text += (f"\nconcurrency: {crowd['workers']} processes, {crowd['adds']:,} adds, "
                 f"{crowd['deleted']} deletions, {crowd['searches']} searches, sleep cycles "
                 f"beside them: {len(crowd['problems'])} problems, {crowd['locked_errors']} "
                 "'database is locked' errors")
        for problem in crowd["problems"]:
            text += f"\n  concurrency: {problem}"
    return text + f"\n{result['date']}, commit {result['commit']}"


def _scenarios(text: str) -> list[str]:
    from latentmem.bench.cli import names_of

    return names_of(text, SCENARIOS, "scenarios")


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.bench.report import write_json

    result = run(args.scenarios, args.trials, args.seed, args.adds)
    print(render(result))
    write_json(result, args.json_out)
    crowd = result["concurrency"]
    failed = any(v["problems"] for v in result["summary"].values()) or bool(
        crowd and crowd["problems"])
    return 1 if failed else 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("reliability", help="kill -9 during writes; check that nothing "
                                                  "acknowledged is lost or half written")
    p.add_argument("--trials", type=int, default=20, help="kills per scenario")
    p.add_argument("--scenarios", type=_scenarios, default=list(SCENARIOS),
                   help=f"comma-separated (default {','.join(SCENARIOS)})")
    p.add_argument("--seed", type=int, default=0, help="when the kills fall")
    p.add_argument("--adds", type=int, default=2500,
                   help="adds per process in the concurrency scenario (4 processes; 0: skip)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT",
                   help="write every figure")
    p.set_defaults(func=run_cli)
