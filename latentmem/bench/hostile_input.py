"""``latentmem bench hostile-input``: bad input, fuzzed, over the SDK and the CLI.

Hypothesis draws one hostile call per example (``hostile_draws``: texts with NUL, lone
surrogates, RTL and combining marks, 1 MB texts, metadata nested thousands deep or cyclic,
NaN, infinite and wrong-sized vectors, malformed and out-of-range times and ids, scope
values with path separators) and sends it to a ``Memory`` (the hash embedder) or to
``latentmem.cli.main`` in the same process. Every example must hold:

- an SDK call returns, or raises a ``LatentMemError`` subclass: nothing else;
- a CLI call exits 0, or exits non-zero with one line on stderr that starts with
  ``latentmem:`` (no traceback); stdout is a strict UTF-8 stream, as a pipe is;
- a refused call leaves the store byte for byte as it was: ``checksum`` (every row of every
  table, the full-text index's own tables included) is the same before and after.

Chosen: one store for the whole run. A refused call must change nothing, so reusing the
store costs no isolation, and accepted writes leave memories for later calls to aim at
(ids of live memories are drawn as often as hostile ones). The checksum is read again only
when SQLite's ``PRAGMA data_version`` says another connection committed, so a run of
1,000 examples takes seconds. Failures are counted and shown, not shrunk: one run reports
every kind of failure it met. Rejected: a Hypothesis state machine with an oracle (that is
tests/test_properties.py); here each example stands alone.

The test suite runs 1,000 examples (tests/reliability/test_hostile_input.py); the long
form is ``latentmem bench hostile-input --cases 10000``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import pkgutil
import sqlite3
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentmem.bench.hostile_draws import SHORT, UNKNOWN_ID, Known
from latentmem.errors import LatentMemError, MissingExtraError
from latentmem.types import Record

SHOWN = 8  # failures of each kind kept in the report
# Calls that may change which memories exist: the ids drawn as Known are read again after.
_CHANGING = {"add", "delete", "forget", "delete_all", "merge", "import_records", "sleep",
             "import", "undo"}


def _hypothesis() -> Any:
    try:
        import hypothesis
    except ImportError as exc:
        raise MissingExtraError('the hostile-input fuzzer needs Hypothesis: install the "dev" '
                                'extra (pip install "latentmem[dev]")') from exc
    return hypothesis


def _load_engine() -> None:
    """Import every engine module now. Hypothesis draws some strings from the constants of
    the project's loaded modules, so a module first loaded mid-run (by a call, or by one
    of the engine's threads at a moment of its own) would change what a seed draws.
    (The inverter's training code is left out: it loads torch, and no call reaches it.)"""
    import latentmem

    for found in pkgutil.walk_packages(latentmem.__path__, "latentmem."):
        if not found.name.startswith("latentmem.invert."):
            importlib.import_module(found.name)


def checksum(home: Path | str) -> str:
    """A digest of every row of every table of the store at ``home`` (a folder or a
    PostgreSQL URL), independent of row order."""
    if isinstance(home, Path):
        with contextlib.closing(_connect(home)) as conn:
            return _sqlite_digest(conn)
    return _postgres_digest(home)


def _connect(home: Path) -> sqlite3.Connection:
    from latentmem.store import DB_FILE

    return sqlite3.connect(f"file:{home / DB_FILE}?mode=ro", uri=True, check_same_thread=False)


def _sqlite_digest(conn: sqlite3.Connection) -> str:
    total = hashlib.sha256()
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%' "
        "ORDER BY name")]
    for table in tables:
        rows = sorted(hashlib.sha256(repr(row).encode("utf-8", "backslashreplace")).digest()
                      for row in conn.execute(f'SELECT * FROM "{table}"'))
        total.update(f"{table}:{len(rows)}:".encode() + b"".join(rows))
    return total.hexdigest()


def _postgres_digest(url: str) -> str:
    import psycopg

    total = hashlib.sha256()
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "ORDER BY tablename").fetchall()]
        for table in tables:
            row = conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(md5(t::text), ',' ORDER BY "
                f'md5(t::text))), \'\') FROM "{table}" t').fetchone()
            total.update(f"{table}:{row[0] if row else 0}:{row[1] if row else ''}".encode())
    return total.hexdigest()


class Target:
    """The store under test, its ids, and the digest of its rows as last read."""

    def __init__(self, home: Path | str, sandbox: Path) -> None:
        from latentmem.memory import Memory

        self.home = home
        self.sandbox = sandbox
        if isinstance(home, Path):  # the CLI opens the store as a user would: by its config
            home.mkdir(parents=True, exist_ok=True)
            (home / "config.json").write_text(json.dumps({"embedder": "hash"}))
        self.mem = Memory(home, embedder="hash")
        self.mem.add(["Ana moved to Lisbon in May", "She likes green tea",
                      "The meeting is on Friday because Bo is away"], user_id="u", session_id="s")
        self.file = sandbox / "garbage.jsonl"
        self.file.write_bytes(b'{"id": 1}\n\xff\xfe not json\n')
        self._checker = _connect(home) if isinstance(home, Path) else None
        self._version: int | None = None
        self._digest = ""
        self.ids: list[str] = []
        self.refresh_ids()

    def digest(self) -> str:
        if self._checker is None:
            return _postgres_digest(str(self.home))
        version = int(self._checker.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version or not self._digest:
            self._digest, self._version = _sqlite_digest(self._checker), version
        return self._digest

    def refresh_ids(self) -> None:
        self.ids = [r.record.id for r in self.mem.store.list_rows(None)]

    def resolve(self, value: Any, depth: int = 1) -> Any:
        """``Known`` ids made real, in ``value`` and in the lists and records it holds (one
        level down: drawn metadata may be cyclic), and ``{tmp}``/``{file}`` filled in."""
        if isinstance(value, Known):
            return self.ids[value.n % len(self.ids)] if self.ids else UNKNOWN_ID
        if isinstance(value, str):
            return value.replace("{tmp}", str(self.sandbox)).replace("{file}", str(self.file))
        if isinstance(value, list) and depth > 0:
            return [self.resolve(v, depth - 1) for v in value]
        if isinstance(value, Record):
            value.id = self.resolve(value.id, 0)
            value.sources = self.resolve(value.sources, 0)
        return value

    def close(self) -> None:
        if self._checker is not None:
            self._checker.close()
        self.mem.close()


def _sdk(target: Target, op: str, kwargs: dict[str, Any]) -> BaseException | None:
    """None when the call was accepted, else what it raised."""
    args = {key: target.resolve(value) for key, value in kwargs.items()}
    try:
        getattr(target.mem, op)(**args)
    except Exception as exc:  # noqa: BLE001 - what escaped is what is being measured
        return exc
    return None


@contextlib.contextmanager
def _streams(stdin: str) -> Iterator[tuple[io.TextIOWrapper, io.TextIOWrapper]]:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # strict, as a pipe's is
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        sys.stdin = saved


def _cli(target: Target, argv: list[Any], stdin: str) -> tuple[int, str, BaseException | None]:
    """(exit status, stderr, what escaped ``main``) of one command line."""
    from latentmem import cli

    args = [str(a) for a in target.resolve(argv)]
    if not any(a == "--home" for a in args):
        args = ["--home", str(target.home), *args]
    escaped: BaseException | None = None
    with _streams(stdin) as (out, err):
        try:
            status = cli.main(args)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        except Exception as exc:  # noqa: BLE001 - what escaped is what is being measured
            status, escaped = 1, exc
        try:
            out.flush()
        except UnicodeEncodeError as exc:  # printed what a pipe cannot carry
            escaped = exc
        err.flush()
    return status, err.buffer.getvalue().decode("utf-8", "replace"), escaped  # type: ignore[attr-defined]


def _bad_stderr(text: str) -> str | None:
    """Why a refused command's stderr is not one ``latentmem:`` line, else None."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "nothing on stderr"
    if "Traceback" in text:
        return "a traceback"
    last = lines[-1]
    if not last.startswith("latentmem:") and not last.startswith("usage:"):
        return f"the last line does not start with 'latentmem:': {last[:120]!r}"
    return None


class Tally:
    def __init__(self) -> None:
        self.cases = 0
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.ops: Counter[str] = Counter()
        self.accepted_ops: Counter[str] = Counter()
        self.unexpected: list[dict[str, str]] = []
        self.changed: list[dict[str, str]] = []
        self.bad_cli: list[dict[str, str]] = []
        self.longest_error = (0, "")

    def error_seen(self, call: Any, message: str) -> None:
        if len(message) > self.longest_error[0]:
            self.longest_error = (len(message), f"{message[:200]} in {call!r}")

    def keep(self, kind: list[dict[str, str]], call: Any, why: str) -> None:
        kind.append({"call": repr(call), "what": why})

    def result(self) -> dict[str, Any]:
        def shown(kind: list[dict[str, str]]) -> list[dict[str, str]]:
            seen: dict[str, dict[str, str]] = {}
            for item in kind:
                seen.setdefault(item["what"].split(":")[0], item)
            return list(seen.values())[:SHOWN]

        return {"cases": self.cases, "accepted": self.accepted,
                "refused": dict(sorted(self.refused.items())),
                "unexpected": len(self.unexpected), "changed_by_refusal": len(self.changed),
                "bad_cli_errors": len(self.bad_cli), "longest_error_chars": self.longest_error[0],
                "longest_error": self.longest_error[1],
                "operations": {op: {"calls": n, "accepted": self.accepted_ops[op]}
                               for op, n in sorted(self.ops.items())},
                "unexpected_examples": shown(self.unexpected),
                "changed_examples": shown(self.changed), "bad_cli_examples": shown(self.bad_cli)}


def _one(target: Target, tally: Tally, call: Any) -> None:
    op = f"{call.surface} {call.op}"
    tally.cases += 1
    tally.ops[op] += 1
    before = target.digest()
    refused = False
    if call.surface == "sdk":
        exc = _sdk(target, call.op, call.args)
        if exc is None:
            tally.accepted += 1
            tally.accepted_ops[op] += 1
        elif isinstance(exc, LatentMemError):
            refused = True
            tally.refused[exc.name()] += 1
            tally.error_seen(call, str(exc))
        else:
            refused = True
            tally.keep(tally.unexpected, call, f"{type(exc).__name__}: {SHORT.repr(str(exc))}")
    else:
        argv, stdin = call.args
        status, err, escaped = _cli(target, argv, stdin)
        if escaped is not None:
            refused = True
            tally.keep(tally.unexpected, call,
                       f"{type(escaped).__name__}: {SHORT.repr(str(escaped))}")
        elif status == 0:
            tally.accepted += 1
            tally.accepted_ops[op] += 1
        else:
            refused = True
            tally.refused[f"cli exit {status}"] += 1
            tally.error_seen(call, err)
            why = _bad_stderr(err)
            if why is not None:
                tally.keep(tally.bad_cli, call, why)
    try:
        target.mem.settle()
    except Exception as exc:  # noqa: BLE001 - a background write the call caused failed
        tally.keep(tally.unexpected, call, f"in the background: {type(exc).__name__}: {exc}")
    if refused and target.digest() != before:
        tally.keep(tally.changed, call, "the store's rows changed")
    if not refused and call.op in _CHANGING:
        target.refresh_ids()


def run(cases: int, seed: int, home_kind: str = "sqlite", *, url: str | None = None,
        workdir: Path | None = None) -> dict[str, Any]:
    """Fuzz ``cases`` hostile calls (seeded: the same seed draws the same calls) against one
    store: a SQLite folder (``home_kind="sqlite"``) or the PostgreSQL database at ``url``
    (``"postgres"``). Returns the counts; see the module docstring for what is checked."""
    hypothesis = _hypothesis()
    from hypothesis import HealthCheck, Phase
    from hypothesis import strategies as st

    from latentmem.bench.hostile_draws import build
    from latentmem.errors import InvalidInputError

    if home_kind not in ("sqlite", "postgres") or (home_kind == "postgres") != (url is not None):
        raise InvalidInputError(f"expected home_kind 'sqlite', or 'postgres' with a url; found "
                                f"{home_kind!r} with url {'given' if url else 'absent'}")
    _load_engine()
    tally = Tally()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lm-hostile-", dir=workdir) as tmp:
        sandbox = Path(tmp)
        target = Target(url if url is not None else sandbox / "store", sandbox)
        try:
            @hypothesis.seed(seed)
            @hypothesis.settings(max_examples=cases, database=None, deadline=None,
                                 phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                                 print_blob=False)
            @hypothesis.given(build(st))
            def example(call: Any) -> None:
                _one(target, tally, call)

            with warnings.catch_warnings():  # the strategy's own repr is long, by design
                warnings.filterwarnings("ignore", "Generating overly large repr")
                example()
        finally:
            target.close()
    return {"seed": seed, "home_kind": home_kind, **tally.result(),
            "wall_s": round(time.perf_counter() - started, 1)}


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['cases']} hostile calls (seed {result['seed']}, {result['home_kind']}) in "
             f"{result['wall_s']} s: {result['accepted']} accepted, "
             f"{sum(result['refused'].values())} refused",
             "refused by: " + ", ".join(f"{k} {v}" for k, v in result["refused"].items()),
             f"unexpected exceptions: {result['unexpected']}; stores changed by a refused call: "
             f"{result['changed_by_refusal']}; CLI errors not one line: "
             f"{result['bad_cli_errors']}; longest error: {result['longest_error_chars']} chars"]
    for key in ("unexpected_examples", "changed_examples", "bad_cli_examples"):
        lines += [f"  {item['what']}\n    in {item['call']}" for item in result[key]]
    return "\n".join(lines)


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.bench.report import write_json

    result = run(args.cases, args.seed, "postgres" if args.url else "sqlite", url=args.url)
    print(render(result))
    write_json(result, args.json_out)
    return 1 if result["unexpected"] or result["changed_by_refusal"] or result["bad_cli_errors"] \
        else 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("hostile-input", help="fuzz the SDK and the CLI with hostile "
                                                    "input; only clear errors, nothing changed")
    p.add_argument("--cases", type=int, default=10_000, help="hostile calls (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="which calls are drawn")
    p.add_argument("--url", default=None, metavar="URL",
                   help="fuzz a PostgreSQL database (an empty one: it is written) instead of a "
                        "SQLite store in a temporary folder")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT",
                   help="write every figure")
    p.set_defaults(func=run_cli)
