"""Bad input gets a clear error from the SDK and the CLI, and changes nothing: no row of
any table (``hostile_input.checksum``). The cases after the first block are what the
hostile-input fuzzer (tests/reliability/test_hostile_input.py) found: each raised
something other than a ``LatentMemError``, wrote part of a refused call, or stored what
could not be read back."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentmem import (
    InputTooLargeError,
    InvalidInputError,
    LatentMemError,
    Memory,
    NotFoundError,
)
from latentmem.bench.hostile_draws import cyclic, deep
from latentmem.bench.hostile_input import checksum
from latentmem.cli import main
from latentmem.types import Edge, Record

Case = tuple[str, Callable[[Memory], Any], type[LatentMemError], str]

CASES: list[Case] = [
    ("empty text", lambda m: m.add("", user_id="u"), InvalidInputError, "empty"),
    ("whitespace", lambda m: m.add("  \n\t", user_id="u"), InvalidInputError, "empty"),
    ("not a string", lambda m: m.add(42, user_id="u"), InvalidInputError, "expected text"),
    ("empty list", lambda m: m.add([], user_id="u"), InvalidInputError, "empty"),
    ("message without content", lambda m: m.add([{"role": "user"}], user_id="u"),
     InvalidInputError, "content"),
    ("one bad message in a batch",
     lambda m: m.add([{"role": "user", "content": "fine"}, {"role": "user", "content": ""}],
                     user_id="u"), InvalidInputError, "item 1"),
    ("NUL byte", lambda m: m.add("a\x00b", user_id="u"), InvalidInputError, "NUL"),
    ("wrong vector size", lambda m: m.add("x", user_id="u", vector=[0.1] * 10),
     InvalidInputError, "expected shape (64,)"),
    ("NaN vector", lambda m: m.add("x", user_id="u", vector=[float("nan")] * 64),
     InvalidInputError, "NaN"),
    ("zero vector", lambda m: m.add("x", user_id="u", vector=[0.0] * 64),
     InvalidInputError, "zeros"),
    ("vector with a batch", lambda m: m.add(["a", "b"], user_id="u", vector=[0.1] * 64),
     InvalidInputError, "single text"),
    ("bad date", lambda m: m.add("x", user_id="u", event_time="the 32nd of Smarch"),
     InvalidInputError, "ISO-8601"),
    ("bad date type", lambda m: m.add("x", user_id="u", event_time=[2023]),
     InvalidInputError, "expected a datetime"),
    ("infinite timestamp", lambda m: m.add("x", user_id="u", event_time=float("inf")),
     InvalidInputError, "finite"),
    ("bad message date",
     lambda m: m.add([{"role": "user", "content": "x", "timestamp": "soon"}], user_id="u"),
     InvalidInputError, "event_time"),
    ("huge text", lambda m: m.add("x" * 100_001, user_id="u"), InputTooLargeError, "limit"),
    ("huge batch", lambda m: m.add(["x"] * 10_001, user_id="u"), InputTooLargeError, "limit"),
    ("empty user", lambda m: m.add("x", user_id=""), InvalidInputError, "user_id"),
    ("long user", lambda m: m.add("x", user_id="u" * 300), InvalidInputError, "user_id"),
    ("non-str user", lambda m: m.add("x", user_id=7), InvalidInputError, "user_id"),
    ("metadata not a dict", lambda m: m.add("x", user_id="u", metadata=[1]),
     InvalidInputError, "metadata"),
    ("importance out of range", lambda m: m.add("x", user_id="u", importance=2),
     InvalidInputError, "importance"),
    ("empty query", lambda m: m.search(" ", user_id="u"), InvalidInputError, "query"),
    ("k zero", lambda m: m.search("x", user_id="u", k=0), InvalidInputError, "k must"),
    ("k huge", lambda m: m.search("x", user_id="u", k=10**6), InvalidInputError, "k must"),
    ("k not int", lambda m: m.search("x", user_id="u", k="5"), InvalidInputError, "k must"),
    ("budget zero", lambda m: m.context("x", user_id="u", budget_tokens=0),
     InvalidInputError, "budget_tokens"),
    ("bad as_of", lambda m: m.search("x", user_id="u", as_of="whenever"),
     InvalidInputError, "as_of"),
    ("unknown id get", lambda m: m.get("01NOPE"), NotFoundError, "no memory"),
    ("unknown id update", lambda m: m.update("01NOPE", text="y"), NotFoundError, "no memory"),
    ("unknown id delete", lambda m: m.delete("01NOPE"), NotFoundError, "no memory"),
    ("one unknown id among known ones",
     lambda m: m.delete([m.all(user_id="u")[0].id, "01NOPE"]), NotFoundError, "no memory"),
    ("unknown id history", lambda m: m.history("01NOPE"), NotFoundError, "ever existed"),
    ("update nothing", lambda m: m.update(m.all(user_id="u")[0].id), InvalidInputError,
     "nothing to update"),
    ("metadata not a dict in update",
     lambda m: m.update(m.all(user_id="u")[0].id, metadata=[1]), InvalidInputError, "metadata"),
    ("update to empty text", lambda m: m.update(m.all(user_id="u")[0].id, text=""),
     InvalidInputError, "empty"),
    ("unknown config key", lambda m: Memory(m.home, embedder="hash", bogus=1),
     InvalidInputError, "unknown config keys"),
]


def _first(m: Memory) -> str:
    return m.all(user_id="u")[0].id


def _record(**fields: Any) -> Record:
    now = datetime(2023, 5, 8)
    base: dict[str, Any] = {"id": "01IMPORTEDRECORD0000000000", "user_id": "u", "text": "x",
                            "created_at": now, "updated_at": now, "vector": [0.5] * 64}
    return Record(**{**base, **fields})


FOUND: list[Case] = [
    # A lone surrogate (from a shell's undecodable bytes, or a JSON "\ud800") raised
    # UnicodeEncodeError from SQLite's driver, wherever text met the store.
    ("lone surrogate in text", lambda m: m.add("a\ud800b", user_id="u"), InvalidInputError,
     "lone surrogate"),
    ("lone surrogate in user", lambda m: m.add("x", user_id="u\udcff"), InvalidInputError,
     "user_id contains a lone surrogate"),
    ("lone surrogate in a query", lambda m: m.search("a\ud800", user_id="u"),
     InvalidInputError, "query"),
    ("lone surrogate in an id", lambda m: m.get("01\ud800"), InvalidInputError, "surrogate"),
    ("lone surrogate in a title",
     lambda m: m.update(_first(m), title="\ud800"), InvalidInputError, "title"),
    ("lone surrogate in a journal cycle", lambda m: m.journal(cycle="c-\ud800"),
     InvalidInputError, "cycle"),
    ("lone surrogate in delete_all", lambda m: m.delete_all("\ud800"), InvalidInputError,
     "user_id"),
    ("lone surrogate in topics", lambda m: m.topics("\ud800"), InvalidInputError, "user_id"),
    # PostgreSQL's text refuses NUL: refused on every backend alike.
    ("NUL in a session", lambda m: m.add("x", user_id="u", session_id="s\x00"),
     InvalidInputError, "NUL"),
    ("NUL in a query", lambda m: m.search("a\x00b", user_id="u"), InvalidInputError, "NUL"),
    ("huge id", lambda m: m.get("0" * 1_000_000), InvalidInputError, "the limit is 256"),
    ("history of a non-string id", lambda m: m.history(5), InvalidInputError, "id must be"),
    # Metadata: json.dumps raised ValueError, RecursionError or TypeError mid-transaction.
    ("cyclic metadata", lambda m: m.add("x", user_id="u", metadata=cyclic("dict")),
     InvalidInputError, "holds itself"),
    ("metadata 5,000 deep", lambda m: m.add("x", user_id="u", metadata=deep(5000, "list")),
     InvalidInputError, "nested more than"),
    ("metadata with a set", lambda m: m.add("x", user_id="u", metadata={"a": {1, 2}}),
     InvalidInputError, "found set"),
    ("metadata with a tuple key", lambda m: m.add("x", user_id="u", metadata={(1, 2): 1}),
     InvalidInputError, "keys must be strings"),
    ("metadata with NaN", lambda m: m.add("x", user_id="u", metadata={"x": math.nan}),
     InvalidInputError, "NaN"),
    ("metadata with a huge integer", lambda m: m.add("x", user_id="u", metadata={"n": 10**5000}),
     InvalidInputError, "64 bits"),
    ("a message's bad metadata",
     lambda m: m.add([{"role": "user", "content": "x", "metadata": {"a": b"x"}}], user_id="u"),
     InvalidInputError, "found bytes"),
    ("update with cyclic metadata", lambda m: m.update(_first(m), metadata=cyclic("list")),
     InvalidInputError, "holds itself"),
    # Times: an edge of the range with an offset overflowed (OverflowError); datetime.max
    # was stored, and every read of the record then failed (year 10000).
    ("year 9999 with an offset", lambda m: m.add("x", user_id="u",
                                                 event_time="9999-12-31T23:59-05:00"),
     InvalidInputError, "out of range"),
    ("datetime.max", lambda m: m.add("x", user_id="u", event_time=datetime.max),
     InvalidInputError, "out of range"),
    ("as_of at year 1 with an offset",
     lambda m: m.search("x", user_id="u", as_of="0001-01-01T00:00+05:00"), InvalidInputError,
     "out of range"),
    # A role given to add() was applied after the checks: SQLite refused it mid-transaction
    # (ProgrammingError), after the text's embedding was cached: a partial write.
    ("role not a string", lambda m: m.add("x new", user_id="u", role=object()),
     InvalidInputError, "role"),
    ("supersedes not a list", lambda m: m.add("x", user_id="u", supersedes=5),
     InvalidInputError, "supersedes"),
    ("title not a string", lambda m: m.update(_first(m), title=5), InvalidInputError, "title"),
    ("weights not ScoringWeights", lambda m: m.search("x", user_id="u", weights="abc"),
     InvalidInputError, "weights"),
    ("all() with a text limit", lambda m: m.all(user_id="u", limit="x"), InvalidInputError,
     "limit"),
    ("journal with a limit past 64 bits", lambda m: m.journal(10**30), InvalidInputError,
     "limit"),
    # forget() deleted the memory, then failed to journal a reason SQLite could not take.
    ("forget with a surrogate reason", lambda m: m.forget(_first(m), reason="\ud800"),
     InvalidInputError, "reason"),
    ("merge of an int", lambda m: m.merge(5), InvalidInputError, "ids"),
    ("merge with text weights",
     lambda m: m.merge([r.id for r in m.all(user_id="u")][:2], weights="ab"),
     InvalidInputError, "weights"),
    ("sleep with phases not a list", lambda m: m.sleep(phases=5), InvalidInputError, "phases"),
    ("sleep with a NaN budget", lambda m: m.sleep(math.nan), InvalidInputError, "budget"),
    ("vector of complex numbers",
     lambda m: m.add("x", user_id="u", vector=np.ones(64, dtype=np.complex64)),
     InvalidInputError, "expected 64 numbers"),
    ("import of a non-record", lambda m: m.import_records([()]), InvalidInputError,
     "expected a Record"),
    ("import of a record past 9999",
     lambda m: m.import_records([_record(event_time=datetime.max)]), InvalidInputError,
     "out of range"),
    ("import of a record with a surrogate", lambda m: m.import_records([_record(text="\udcff")]),
     InvalidInputError, "surrogate"),
    ("import of a record with cyclic metadata",
     lambda m: m.import_records([_record(metadata=cyclic("dict"))]), InvalidInputError,
     "holds itself"),
    ("import of an edge of no known type",
     lambda m: m.import_records([_record()], [Edge(_first(m), "01IMPORTEDRECORD0000000000",
                                                   "likes")]),
     InvalidInputError, "type must be"),
]


@pytest.mark.parametrize("case", CASES + FOUND, ids=[c[0] for c in CASES + FOUND])
def test_bad_input(mem: Memory, case: Case) -> None:
    _, call, error, needle = case
    mem.add(["a memory that is already here", "and another"], user_id="u", session_id="s")
    mem.settle()
    before = (mem.stats()["records"], mem.store.vector_epoch(), mem.index.count(),
              [(r.id, r.text) for r in mem.all(user_id="u")], checksum(mem.home))
    with pytest.raises(error) as info:
        call(mem)
    assert needle in str(info.value)
    assert info.value.name() == error.__name__ and info.value.code() >= 400
    mem.settle()
    after = (mem.stats()["records"], mem.store.vector_epoch(), mem.index.count(),
             [(r.id, r.text) for r in mem.all(user_id="u")], checksum(mem.home))
    assert after == before


def test_valid_vector_is_normalised(mem: Memory) -> None:
    v = np.arange(1, 65, dtype=np.float64)
    rid = mem.add("given vector", user_id="u", vector=v).ids[0]
    stored = mem.get(rid, include_vector=True).vector
    assert stored is not None and abs(float(np.linalg.norm(stored)) - 1.0) < 1e-6


def test_a_vector_near_the_float32_limit_is_normalised_not_zeroed(mem: Memory) -> None:
    """Its float32 norm overflowed to infinity, and the stored vector was all zeros."""
    rid = mem.add("huge vector", user_id="u", vector=[3e38] * 64).ids[0]
    stored = mem.get(rid, include_vector=True).vector
    assert stored is not None and abs(float(np.linalg.norm(stored)) - 1.0) < 1e-6


def test_a_home_that_is_a_file_or_holds_nul_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    for home in (tmp_path / "file", tmp_path / "file" / "sub", f"{tmp_path}/a\x00b"):
        with pytest.raises(InvalidInputError, match="home"):
            Memory(home, embedder="hash")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    # json.loads raised RecursionError, which main() did not catch
    ["add", "x", "--metadata", "[" * 100_000],
    ["add", "x", "--metadata", '{"a": NaN}'],
    ["--home", "{file}", "stats"],  # FileExistsError from mkdir
    ["--home", "{tmp}/x\x00y", "stats"],  # ValueError: embedded null byte
    ["export", "{tmp}/x\x00y", "--format", "jsonl"],
    ["export", "/dev/null", "--format", "npy"],  # FileExistsError: npy writes a folder
    ["explain", "--cycle", "c-\udcff"],  # UnicodeEncodeError
    ["search", "x", "-k", "not\na number\x1b[31m"],  # argparse quoted it over two lines
    ["get", "a" * 100_000, "extra argument " * 10_000],
    ["keys", "create", "--tenant", "acme", "--label", "\udcff"],  # UnicodeEncodeError
    ["keys", "revoke", "\udcff"],
], ids=["deep --metadata", "NaN --metadata", "home is a file", "NUL in home", "NUL in path",
        "npy onto a file", "surrogate cycle", "newline in an argument", "huge arguments",
        "surrogate key label", "surrogate key id"])
def test_a_refused_command_says_why_in_one_short_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str]) -> None:
    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    home = tmp_path / "store"
    (tmp_path / "file").write_text("x")
    assert _cli(capsys, "--home", str(home), "add", "a memory already here")[0] == 0
    before = checksum(home)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{file}", str(tmp_path / "file"))
            for a in argv]
    code, err = _cli(capsys, *([] if "--home" in args else ["--home", str(home)]), *args)
    assert code != 0
    assert err.startswith("latentmem: ") and err.count("\n") == 1 and len(err) < 1200, err
    assert checksum(home) == before


def test_an_export_to_a_name_that_is_not_utf8_round_trips(mem: Memory, tmp_path: Path) -> None:
    """A shell hands undecodable bytes in a file name over as lone surrogates; h5py refused
    such a name (UnicodeEncodeError)."""
    from latentmem.store import formats

    mem.add("a note", user_id="u")
    path = tmp_path / "\udcffexport.h5"
    assert formats.export_memory(mem, path, "hdf5") == 1
    with Memory(tmp_path / "other", embedder="hash") as other:
        assert formats.import_into(other, path, "hdf5") == 1


def test_a_path_that_is_not_utf8_is_printed_not_crashed_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``exported N memories to PATH`` raised UnicodeEncodeError on a UTF-8 stdout."""
    import contextlib
    import io

    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    home = str(tmp_path / "store")
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # strict, as a pipe's is
    with contextlib.redirect_stdout(out):
        assert main(["--home", home, "add", "a note"]) == 0
        for argv in (["export", f"{tmp_path}/\udcff", "--format", "npy"],
                     ["--json", "export", f"{tmp_path}/\udcffj", "--format", "jsonl"]):
            assert main(["--home", home, *argv]) == 0
        out.flush()
    assert out.buffer.getvalue().decode().count("\ufffd") == 2
