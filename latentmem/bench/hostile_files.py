"""``latentmem bench hostile-files``: hostile import files, through the SDK and the CLI.

For each import format (csv, npy, hdf5, pickle, jsonl, locomo, chat) this starts
from a valid file (an export of a small store with three users, ``next`` and
``supersedes`` edges, nested metadata and non-ASCII text; a LoCoMo file and a chat
file) and imports, into a store that already holds other memories, every named
hostile case of ``hostile_specials.py`` and ``variants_per_format`` seeded random
mutations of ``hostile_variants.py``. Each variant goes through
``formats.import_into``/``import_conversation`` on an open ``Memory``; every named
case and every ``cli_every``-th random one then goes through ``latentmem.cli.main``
(in-process) on a second store. What must hold:

* an import either succeeds completely (every record of the file, each one valid
  and searchable) or raises a ``LatentMemError``; the CLI exits non-zero with one
  line naming the error, and both paths agree;
* a refused import leaves every table of the store as it was (a digest of all
  rows, read through a separate read-only SQLite connection);
* nothing in the file runs: no canary file appears;
* a named case meets its expectation: every attack refused, every benign
  oddity (Fortran order, CRLF, a BOM, ...) imported;
* memory stays bounded: the growth of peak RSS (``ru_maxrss``) over each import
  is measured and reported (a bomb refused before it expands adds nothing).

SQLite only: the file readers are the same for both backends, and the insert is
one transaction on either (tests/test_formats.py runs on both).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import random
import resource
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.bench import hostile_specials as specials
from latentmem.bench.hostile_variants import Bundle, Variant, random_variant
from latentmem.errors import LatentMemError
from latentmem.memory import Memory
from latentmem.store import DB_FILE, textcodec
from latentmem.store.formats import export_memory, import_conversation, import_into
from latentmem.types import EDGE_TYPES, LEVELS, Record

RECORD_FORMATS = ("csv", "npy", "hdf5", "pickle", "jsonl")
FAILURES = ("unexpected", "changed", "executed", "invalid_accepts", "wrong_outcome", "large_rss",
            "cli_bad_output", "cli_disagrees")
FORMATS = (*RECORD_FORMATS, "locomo", "chat")
SUFFIX = {"hdf5": ".h5", "pickle": ".pkl", "jsonl": ".jsonl", "locomo": ".json", "chat": ".json"}
EXAMPLES = 5
LARGE_MB = 64  # more than any of these small files can honestly need

LOCOMO = [
    {"sample_id": "conv-a", "conversation": {
        "speaker_a": "Ana", "speaker_b": "Bo",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "I moved to Lisbon! Olá, Inês."},
            {"speaker": "Bo", "dia_id": "D1:2", "text": "Look at my new bike",
             "img_url": ["http://example.invalid/x.jpg"], "blip_caption": "a red bicycle"}],
        "session_2_date_time": "10:00 am on 9 June, 2023",
        "session_2": [{"speaker": "Ana", "dia_id": "D2:1", "text": "Lisbon is hilly 🚲"}]},
     "qa": []},
    {"sample_id": "conv-b", "conversation": {
        "speaker_a": "Cy", "speaker_b": "Di",
        "session_1_date_time": "9:00 am on 1 March, 2024",
        "session_1": [{"speaker": "Cy", "dia_id": "D1:1", "text": "The cat is called Miso"},
                      {"speaker": "Di", "dia_id": "D1:2", "text": "Miso likes tuna"}]}},
]
CHAT = {"session_id": "c1", "user_id": "maya", "messages": [
    {"role": "user", "content": "My sister is called Inês", "timestamp": "2024-01-02T10:00"},
    {"role": "assistant", "content": "Noted!", "metadata": {"turn": 2}},
    {"role": "user", "name": "Maya", "content": "She lives in Porto\u2028since 2020"}]}


def _fill_source(m: Memory) -> None:
    m.add("I moved to Lisbon in May 2023", user_id="ana", event_time="2023-05-08T13:56",
          metadata={"source": "chat", "tags": ["move", "city"], "nested": {"n": 3}})
    m.add([{"role": "user", "name": "Ana", "content": "Pastel is a grey terrier 🐕"},
           {"role": "assistant", "content": "What a \"lovely\" name,\nreally"},
           {"role": "user", "content": "She was born\u2028in Porto"}],
          user_id="ana", session_id="s1", agent_id="bot")
    old = m.add("Bob plays football, 5-a-side", user_id="bob").ids[0]
    m.add("Bob now plays tennis instead", user_id="bob", supersedes=old)
    m.update(old, importance=0.9)
    m.add("Cleo's password hint is 'blue'", user_id="cleo", type="fact")


def _fill_target(m: Memory) -> None:
    m.add("Dora keeps bees in Évora", user_id="dora", metadata={"k": 1})
    m.add([{"role": "user", "content": "Ana already has a memory here"},
           {"role": "assistant", "content": "and it must survive every refused import"}],
          user_id="ana", session_id="s1")


def digest(home: Path) -> str:
    """A hash of every row of every table of the store, read without writing."""
    conn = sqlite3.connect(f"file:{home / DB_FILE}?mode=ro", uri=True)
    # The full-text index reads its texts through the store's SQL functions (texts may be
    # stored compressed: latentmem/store/textcodec.py).
    textcodec.register(conn)
    try:
        h = hashlib.sha256()
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for name in names:
            rows = sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{name}"'))
            h.update(f"{name}:{len(rows)}\n".encode())
            for row in rows:
                h.update(row.encode("utf-8", "surrogatepass"))
        return h.hexdigest()
    finally:
        conn.close()


def record_problems(rec: Record, dim: int) -> list[str]:
    """What is wrong with one stored record (as read back), by the engine's own types."""
    out = []
    if not (isinstance(rec.id, str) and rec.id and isinstance(rec.user_id, str) and rec.user_id):
        out.append("id or user_id not a non-empty string")
    for name in ("agent_id", "session_id", "parent_id", "role", "speaker", "superseded_by",
                 "text"):
        value = getattr(rec, name)
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            out.append(f"{name} is {type(value).__name__}")
    for name in ("title", "type", "summary", "content_hash"):
        if not isinstance(getattr(rec, name), str):
            out.append(f"{name} is not a string")
    if rec.level not in LEVELS:
        out.append(f"level {rec.level!r}")
    if not (isinstance(rec.importance, float) and 0.0 <= rec.importance <= 1.0):
        out.append(f"importance {rec.importance!r}")
    if not (isinstance(rec.strength, float) and math.isfinite(rec.strength)):
        out.append(f"strength {rec.strength!r}")
    if not (isinstance(rec.access_count, int) and rec.access_count >= 0):
        out.append(f"access_count {rec.access_count!r}")
    if rec.created_at is None or rec.updated_at is None:
        out.append("no created_at or updated_at")
    if not isinstance(rec.metadata, dict) or not isinstance(rec.sources, list):
        out.append("metadata or sources of the wrong type")
    else:
        json.dumps(rec.metadata)
    vec = rec.vector
    if not (isinstance(vec, np.ndarray) and vec.dtype == np.float32 and vec.shape == (dim,)
            and np.isfinite(vec).all() and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-3):
        out.append("vector not a finite unit float32 of the store's dimension")
    return [f"record {rec.id!r}: {p}" for p in out]


def store_problems(m: Memory, before: int, imported: int) -> list[str]:
    """What is wrong with a store after an import said it took ``imported`` records."""
    try:
        records, edges = m.export_rows()
        out = [p for rec in records for p in record_problems(rec, m.dim)]
        if len(records) != before + imported:
            out.append(f"{len(records)} records after importing {imported} into {before}")
        out += [f"edge {e}" for e in edges if e.type not in EDGE_TYPES
                or not math.isfinite(e.weight)]
        for user in sorted({r.user_id for r in records}):
            m.search("where does she live", user_id=user, track_access=False)
        return out
    except Exception as exc:  # noqa: BLE001 - anything at all is a finding
        return [f"the store after the import: {type(exc).__name__}: {exc}"]


def write_variant(variant: Variant, fmt: str, path: Path) -> Path:
    if "" in variant.files:
        path = path.with_suffix(SUFFIX.get(fmt, ""))
        path.write_bytes(variant.files[""])
    else:
        path.mkdir()
        for name, data in variant.files.items():
            (path / name).write_bytes(data)
    return path


def sdk_import(m: Memory, fmt: str, path: Path) -> tuple[str, int]:
    """("accepted", n), ("refused:<ErrorName>", 0) or ("unexpected:<Type>: msg", 0)."""
    try:
        if fmt in RECORD_FORMATS:
            return "accepted", import_into(m, path, fmt)
        return "accepted", import_conversation(m, path, fmt)
    except LatentMemError as exc:
        return f"refused:{exc.name()}", 0
    except Exception as exc:  # noqa: BLE001 - the finding this bench exists for
        return f"unexpected:{type(exc).__name__}: {str(exc)[:300]}", 0


def cli_import(home: Path, fmt: str, path: Path) -> tuple[str, int, str]:
    """The CLI's outcome as ``sdk_import``'s, plus a complaint about its output ('' if none)."""
    from latentmem.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--home", str(home), "import", str(path), "--format", fmt])
    except SystemExit as exc:
        return f"unexpected:SystemExit {exc.code}", 0, err.getvalue()[-300:]
    except Exception as exc:  # noqa: BLE001 - would be a traceback on a terminal
        return f"unexpected:{type(exc).__name__}: {str(exc)[:300]}", 0, ""
    if code == 0:
        words = out.getvalue().split()
        return "accepted", int(words[1]) if len(words) > 1 and words[1].isdigit() else -1, ""
    lines = [ln for ln in err.getvalue().replace("\r", "\n").split("\n") if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("latentmem: ")]
    name = errors[0].split(":")[1].strip() if errors else "?"
    bad = "" if len(errors) == 1 and "Traceback" not in err.getvalue() \
        else f"stderr was {err.getvalue()[-300:]!r}"
    return f"refused:{name}", 0, bad


class _Store:
    """One store that imports are tried against, reset to the baseline after any change."""

    def __init__(self, baseline: Path, home: Path, open_memory: bool) -> None:
        self.baseline, self.home, self.open_memory = baseline, home, open_memory
        self.digest = digest(baseline)
        self.count = 0
        self.memory: Memory | None = None
        self.reset()

    def reset(self) -> None:
        self.close()
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.copytree(self.baseline, self.home)
        if self.open_memory:
            self.memory = Memory(self.home, embedder="hash")
            self.count = self.memory.stats()["records"]

    def close(self) -> None:
        if self.memory is not None:
            self.memory.close()
            self.memory = None


def _specials(fmt: str, source: Bundle, work: Path, canary: Any) -> list[Variant]:
    if fmt == "pickle":
        return specials.pickle_attacks(source[""], canary)
    if fmt == "npy":
        return specials.npy_specials(source, canary)
    if fmt == "hdf5":
        return specials.hdf5_specials(source, work)
    if fmt == "csv":
        return specials.csv_specials(source)
    if fmt == "jsonl":
        return specials.jsonl_specials(source)
    return specials.conversation_specials(fmt, source)


def sources(work: Path) -> tuple[dict[str, Bundle], Path, int]:
    """The valid file of every format, the baseline target store, and the records per export."""
    bundles: dict[str, Bundle] = {}
    with Memory(work / "source", embedder="hash") as src:
        _fill_source(src)
        src.settle()
        count = src.stats()["records"]
        for fmt in RECORD_FORMATS:
            target = work / "exports" / f"valid-{fmt}{SUFFIX.get(fmt, '')}"
            export_memory(src, target, fmt)
            bundles[fmt] = ({name.name: name.read_bytes() for name in target.iterdir()}
                            if target.is_dir() else {"": target.read_bytes()})
    bundles["locomo"] = {"": json.dumps(LOCOMO, ensure_ascii=False).encode()}
    bundles["chat"] = {"": json.dumps(CHAT, ensure_ascii=False).encode()}
    with Memory(work / "baseline", embedder="hash") as base:
        _fill_target(base)
        base.settle()
    return bundles, work / "baseline", count


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            return next(int(ln.split()[1]) / 1024.0 for ln in fh if ln.startswith(key))
    except (OSError, StopIteration, ValueError):
        return None


def _peak_start() -> float:
    """Reset the peak RSS where Linux allows it (``clear_refs``), so that each import's own
    peak is seen; the current RSS, else the process's peak so far."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_mb("VmRSS") or _peak_mb()
    except OSError:
        return _peak_mb()


def _peak_mb() -> float:
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_format(fmt: str, source: Bundle, baseline: Path, count: int, rng: random.Random,
               n: int, work: Path, cli_every: int = 1) -> dict[str, Any]:
    """Every named case and ``n`` random variants of one format; the tallies. The CLI
    imports every named case and every ``cli_every``-th random variant (0: none)."""
    started = time.perf_counter()
    canaries = work / "canaries"
    canaries.mkdir(exist_ok=True)
    (work / "files").mkdir(exist_ok=True)
    serial = iter(range(1 << 30))

    def canary() -> str:
        return str(canaries / f"{fmt}-{next(serial)}")

    variants = _specials(fmt, source, work, canary)
    variants += [random_variant(fmt, source, rng) for _ in range(n)]
    sdk, shell = _Store(baseline, work / f"sdk-{fmt}", True), _Store(baseline, work / f"cli-{fmt}",
                                                                      False)
    tally: dict[str, Any] = {"variants": len(variants), "named": len(variants) - n,
                             "through_cli": 0,
                             "accepted": 0, "refused": Counter(), "unexpected": 0, "changed": 0,
                             "executed": 0, "invalid_accepts": 0, "wrong_outcome": 0,
                             "cli_bad_output": 0, "cli_disagrees": 0, "large_rss": 0,
                             "max_rss_growth_mb": 0.0,
                             "max_rss_variant": None, "problems": []}

    def problem(kind: str, variant: Variant, text: str) -> None:
        tally[kind] += 1
        if len(tally["problems"]) < EXAMPLES:
            tally["problems"].append(f"{variant.kind}: {text}")

    try:
        for i, variant in enumerate(variants):
            path = write_variant(variant, fmt, work / "files" / f"{fmt}-{i}")
            rss = _peak_start()
            assert sdk.memory is not None
            outcome, imported = sdk_import(sdk.memory, fmt, path)
            growth = _peak_mb() - rss
            if growth > LARGE_MB:
                problem("large_rss", variant, f"peak RSS grew {growth:.0f} MB")
            if growth > tally["max_rss_growth_mb"]:
                tally["max_rss_growth_mb"], tally["max_rss_variant"] = growth, variant.kind
            _judge(tally, problem, variant, outcome, imported, sdk, count, fmt)
            if cli_every and (variant.expect or i % cli_every == 0):
                tally["through_cli"] += 1
                cli_outcome, cli_imported, bad = cli_import(shell.home, fmt, path)
                if bad:
                    problem("cli_bad_output", variant, bad)
                if cli_outcome.split(":")[:2] != outcome.split(":")[:2] \
                        or cli_imported != imported:
                    problem("cli_disagrees", variant, f"SDK {outcome[:80]} ({imported}), "
                                                      f"CLI {cli_outcome[:80]} ({cli_imported})")
                if cli_outcome.startswith("unexpected"):
                    problem("unexpected", variant, f"CLI: {cli_outcome}")
                if digest(shell.home) != shell.digest:
                    if not cli_outcome.startswith("accepted"):
                        problem("changed", variant, f"CLI {cli_outcome[:80]} changed the store")
                    shell.reset()
            if variant.canary and os.path.exists(variant.canary):
                problem("executed", variant, f"the canary {variant.canary} appeared")
                os.remove(variant.canary)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    finally:
        sdk.close()
    tally["refused"] = dict(sorted(tally["refused"].items()))
    tally["seconds"] = round(time.perf_counter() - started, 1)
    tally["max_rss_growth_mb"] = round(tally["max_rss_growth_mb"], 1)
    return tally


def _judge(tally: dict[str, Any], problem: Any, variant: Variant, outcome: str, imported: int,
           sdk: _Store, count: int, fmt: str) -> None:
    """Count one SDK outcome and check the store against it; reset the store if it changed."""
    assert sdk.memory is not None
    if outcome.startswith("refused:"):
        tally["refused"][outcome.split(":", 1)[1]] += 1
        if variant.expect == specials.ACCEPT:
            problem("wrong_outcome", variant, f"a benign file was {outcome}")
    elif outcome.startswith("unexpected:"):
        problem("unexpected", variant, outcome.split(":", 1)[1])
    else:
        tally["accepted"] += 1
        if variant.expect == specials.REFUSE:
            problem("wrong_outcome", variant, f"accepted ({imported} records)")
        found = store_problems(sdk.memory, sdk.count, imported)
        if fmt in RECORD_FORMATS and imported != count:
            found.append(f"imported {imported} of the export's {count} records")
        if found:
            problem("invalid_accepts", variant, "; ".join(found[:3]))
    if digest(sdk.home) != sdk.digest:
        if not outcome.startswith("accepted"):
            problem("changed", variant, f"{outcome[:80]} changed the store")
        sdk.reset()


def run(variants_per_format: int = 30, seed: int = 0, formats: tuple[str, ...] = FORMATS,
        cli_every: int = 1, workdir: Path | None = None) -> dict[str, Any]:
    """Import hostile variants of every format; per-format tallies (see the module doc)."""
    from latentmem.bench.report import stamp

    started = time.perf_counter()
    previous = os.environ.get("LATENTMEM_EMBEDDER")
    os.environ["LATENTMEM_EMBEDDER"] = "hash"  # the CLI opens the stores the SDK made
    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="latentmem-hostile-")) if workdir is None else workdir
    try:
        bundles, baseline, count = sources(work)
        results = {}
        for fmt in formats:
            rng = random.Random(f"{seed}-{fmt}")
            results[fmt] = run_format(fmt, bundles[fmt], baseline, count, rng,
                                      variants_per_format, work, cli_every)
    finally:
        if previous is None:
            os.environ.pop("LATENTMEM_EMBEDDER", None)
        else:
            os.environ["LATENTMEM_EMBEDDER"] = previous
        if owned:
            shutil.rmtree(work, ignore_errors=True)
    keys = ("variants", "accepted", *FAILURES)
    totals = {k: sum(r[k] for r in results.values()) for k in keys}
    return {"benchmark": "hostile-files", "seed": seed, "variants_per_format": variants_per_format,
            "formats": results, "totals": totals,
            "seconds": round(time.perf_counter() - started, 1),
            "command": f"latentmem bench hostile-files --variants {variants_per_format} "
                       f"--seed {seed} --formats {','.join(formats)} --cli-every {cli_every}",
            **stamp()}




def render(result: dict[str, Any]) -> str:
    from latentmem.bench.report import table

    rows = [[fmt, r["variants"], r["accepted"],
             ", ".join(f"{k} {v}" for k, v in r["refused"].items()), r["unexpected"],
             r["changed"], r["executed"], sum(r[k] for k in FAILURES[3:]),
             r["max_rss_growth_mb"], r["seconds"]] for fmt, r in result["formats"].items()]
    text = table(rows, ["format", "variants", "accepted", "refused (by error)", "unexpected",
                        "changed", "executed", "other problems", "max RSS growth MB", "s"])
    for fmt, r in result["formats"].items():
        text += "".join(f"\n  {fmt}: {p}" for p in r["problems"])
    return (text + f"\nseed {result['seed']}, {result['seconds']} s, {result['date']}, "
            f"commit {result['commit']}")


def _formats(text: str) -> list[str]:
    from latentmem.bench.cli import names_of

    return names_of(text, FORMATS, "formats")


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.bench.report import write_json

    result = run(args.variants, args.seed, tuple(args.formats), args.cli_every)
    print(render(result))
    write_json(result, args.json_out)
    return 1 if any(result["totals"][k] for k in FAILURES) else 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("hostile-files", help="import truncated, malformed and malicious "
                                                    "files; check each is refused cleanly")
    p.add_argument("--variants", type=int, default=300,
                   help="random variants per format, besides the named cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--formats", type=_formats, default=list(FORMATS),
                   help=f"comma-separated (default {','.join(FORMATS)})")
    p.add_argument("--cli-every", type=int, default=1, metavar="N",
                   help="import every named case and every N-th random variant through the "
                        "CLI as well (0: no CLI at all)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT",
                   help="write every figure")
    p.set_defaults(func=run_cli)
