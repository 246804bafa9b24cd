"""Hostile import files (latentmem/bench/hostile_files.py): the bounded form of
``latentmem bench hostile-files`` (12 random variants a format besides the named
cases, here; 300 in the long form), every named attack on its own, and one
regression test for each bug the fuzzing found."""

from __future__ import annotations

import io
import json
import pickle
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentmem import InvalidInputError, Memory, UnsafeDataError
from latentmem.bench import hostile_files as hf
from latentmem.bench import hostile_specials as specials
from latentmem.bench.hostile_variants import Bundle, Variant
from latentmem.errors import InputTooLargeError, LatentMemError
from latentmem.store.formats import import_conversation, import_into

pytestmark = pytest.mark.reliability

SEED = 20261203
RANDOM = 12  # random variants a format in CI (each HDF5 one starts a child: ~0.3 s)


@pytest.mark.parametrize("fmt", hf.FORMATS)
def test_random_and_named_hostile_files_are_refused_cleanly(tmp_path: Path, fmt: str) -> None:
    result = hf.run(variants_per_format=RANDOM, seed=SEED, formats=(fmt,), cli_every=3,
                    workdir=tmp_path)
    tally = result["formats"][fmt]
    assert {k: tally[k] for k in hf.FAILURES} == dict.fromkeys(hf.FAILURES, 0), tally["problems"]
    assert tally["variants"] == tally["named"] + RANDOM
    assert tally["accepted"] + sum(tally["refused"].values()) == tally["variants"]
    assert tally["max_rss_growth_mb"] < hf.LARGE_MB


class Sources:
    """The valid files, the baseline store and the records an export holds."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.bundles, self.baseline, self.count = hf.sources(work)
        self._named: dict[str, list[Variant]] = {}
        self._serial = iter(range(1 << 30))

    def valid(self, fmt: str) -> Bundle:
        return dict(self.bundles[fmt])

    def named(self, fmt: str) -> list[Variant]:
        """The named cases of ``fmt``, made once (each canary a path of its own)."""
        if fmt not in self._named:
            self._named[fmt] = hf._specials(fmt, self.bundles[fmt], self.work,
                                            lambda: str(self.work / f"canary-{next(self._serial)}"))
        return self._named[fmt]

    def case(self, fmt: str, kind: str) -> Variant:
        return next(v for v in self.named(fmt) if kind in v.kind)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    return Sources(tmp_path_factory.mktemp("hostile-sources"))


@pytest.fixture
def store(sources: Sources, tmp_path: Path) -> Iterator[Memory]:
    shutil.copytree(sources.baseline, tmp_path / "store")
    with Memory(tmp_path / "store", embedder="hash") as m:
        yield m


def _import(m: Memory, fmt: str, variant: Variant, where: Path) -> int:
    where.mkdir(parents=True, exist_ok=True)
    path = hf.write_variant(variant, fmt, where / "variant")
    if fmt in hf.RECORD_FORMATS:
        return import_into(m, path, fmt)
    return import_conversation(m, path, fmt)


def _refused(m: Memory, fmt: str, variant: Variant, where: Path,
             error: type[LatentMemError] = InvalidInputError) -> LatentMemError:
    """Import ``variant``; it must raise ``error`` and change no row of the store."""
    before = hf.digest(Path(m.location))
    with pytest.raises(error) as caught:
        _import(m, fmt, variant, where)
    assert hf.digest(Path(m.location)) == before
    if variant.canary:
        assert not Path(variant.canary).exists(), f"{variant.kind} ran its payload"
    return caught.value


def _named_on_fresh_stores(sources: Sources, tmp_path: Path, fmt: str,
                           skip: str = "\0") -> None:
    """Each named case of ``fmt`` with an expectation meets it, on a fresh copy of the
    baseline store; every failure is reported at once."""
    failures = []
    for i, variant in enumerate(sources.named(fmt)):
        if skip in variant.kind or variant.expect is None:
            continue
        home = tmp_path / f"store-{i}"
        shutil.copytree(sources.baseline, home)
        with Memory(home, embedder="hash") as m:
            try:
                outcome = f"accepted {_import(m, fmt, variant, tmp_path / str(i))}"
            except LatentMemError as exc:
                outcome = f"refused {exc.name()}"
            except Exception as exc:  # noqa: BLE001 - reported below
                outcome = f"unexpected {type(exc).__name__}: {exc}"
        changed = hf.digest(home) != hf.digest(sources.baseline)
        ran = variant.canary is not None and Path(variant.canary).exists()
        want = "refused" if variant.expect == specials.REFUSE else f"accepted {sources.count}"
        if fmt not in hf.RECORD_FORMATS and want != "refused":
            want = "accepted"
        if not outcome.startswith(want) or ran or (changed and want == "refused"):
            failures.append(f"{variant.kind}: {outcome}{', ran' * ran}{', changed' * changed}")
    assert failures == []


def test_each_pickle_attack_is_refused_and_runs_nothing(sources: Sources, tmp_path: Path) -> None:
    """Every opcode that can import or call, at every protocol; and the valid export at
    every protocol still imports. Each on a fresh store (an accepted one changes it)."""
    _named_on_fresh_stores(sources, tmp_path, "pickle", skip="crashes numpy")


def test_each_named_npy_file(sources: Sources, tmp_path: Path) -> None:
    _named_on_fresh_stores(sources, tmp_path, "npy")


def test_each_named_hdf5_file(sources: Sources, tmp_path: Path) -> None:
    _named_on_fresh_stores(sources, tmp_path, "hdf5")


def test_each_named_csv_jsonl_and_conversation_file(sources: Sources, tmp_path: Path) -> None:
    for fmt in ("csv", "jsonl", "locomo", "chat"):
        _named_on_fresh_stores(sources, tmp_path / fmt, fmt)


def test_a_dtype_state_that_crashes_numpy_is_refused_before_numpy_sees_it(
        sources: Sources, tmp_path: Path) -> None:
    """numpy 2.4's ``dtype.__setstate__`` segfaults on some states: the unpickler used to
    hand a pickle's state to it. In a child process, so that a regression kills only that."""
    variant = sources.case("pickle", "crashes numpy")
    path = hf.write_variant(variant, "pickle", tmp_path / "bad")
    code = ("import sys\nfrom latentmem.store.formats.safe_pickle import safe_loads\n"
            "from latentmem.errors import UnsafeDataError\n"
            f"try:\n    safe_loads(open({str(path)!r}, 'rb').read())\n"
            "except UnsafeDataError as exc:\n    print('refused:', exc)\n    sys.exit(0)\n"
            "sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert "refusing" in done.stdout


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@pytest.mark.parametrize(("fmt", "kind"), [
    ("npy", "npy:header claiming 10^12 rows"),
    ("hdf5", "hdf5:gzip bomb (256 MiB of zeros)"),
    ("hdf5", "hdf5:1 GiB declared, never written"),
    ("hdf5", "hdf5:records as a 1 GB fixed-length string, never written"),
    ("hdf5", "hdf5:a string's length field set to 3 GiB"),
    ("pickle", "pickle:memo bomb (10^6 shared references)"),
    ("pickle", "pickle:REDUCE numpy.ndarray with a 1 GiB shape"),
    ("pickle", "pickle:BUILD an ndarray state of 2^40 rows"),
])
def test_a_bomb_is_refused_before_it_expands(sources: Sources, store: Memory, tmp_path: Path,
                                             fmt: str, kind: str) -> None:
    variant = sources.case(fmt, kind)
    peak = _peak_mb()
    _refused(store, fmt, variant, tmp_path)
    assert _peak_mb() - peak < 100


def test_the_npy_header_is_refused_unread(sources: Sources, store: Memory, tmp_path: Path) -> None:
    """Was: ``np.load`` believed the header and raised MemoryError allocating 233 TiB."""
    variant = sources.case("npy", "10^12")
    error = _refused(store, "npy", variant, tmp_path)
    assert "the header says shape (1000000000000, 64)" in str(error)


# -- one regression test for each bug the fuzzing found ---------------------------------------


def test_json_nested_too_deeply_is_invalid_input_not_recursion_error(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for fmt, files in (("npy", {**sources.valid("npy"), "records.json": deep}),
                       ("jsonl", {"": sources.valid("jsonl")[""] + deep}),
                       ("locomo", {"": deep}), ("chat", {"": deep})):
        error = _refused(store, fmt, Variant("deep", files), tmp_path / fmt)
        assert "nested too deeply" in str(error)


def test_an_npy_header_with_an_unclosed_brace_is_invalid_input(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    """Was: tokenize.TokenError (numpy tokenizes a version 1 header) through ``np.load``."""
    _refused(store, "npy", sources.case("npy", "unclosed brace"), tmp_path)


def test_an_empty_vectors_csv_is_refused_not_a_reshape_error(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    for text in (b"", b"id,v0\r\n"):
        files = {**sources.valid("csv"), "vectors.csv": text}
        _refused(store, "csv", Variant("empty", files), tmp_path / str(len(text)))


def test_a_file_cut_at_a_line_boundary_imports_nothing(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    """Was: a JSONL export cut after a whole line imported the records before the cut."""
    lines = sources.valid("jsonl")[""].split(b"\n")
    kinds = [next(iter(json.loads(line))) if line else "" for line in lines]
    last = max(i for i, k in enumerate(kinds) if k == "record")
    for cut in (last, last + 1):  # the last record, then only the edges
        error = _refused(store, "jsonl", Variant("cut", {"": b"\n".join(lines[:cut])}),
                         tmp_path / str(cut))
        assert "cut short" in str(error)


def test_a_line_separator_inside_a_jsonl_text_is_not_a_line_break(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    """JSONL lines are split at newlines only (str.splitlines would split at U+2028, which
    ``json.dumps(ensure_ascii=False)`` leaves in a text as it is)."""
    data = sources.valid("jsonl")[""]
    assert "\u2028".encode() in data
    assert _import(store, "jsonl", Variant("ls", {"": data}), tmp_path) == sources.count
    assert any("\u2028" in (r.text or "") for r in store.export_rows()[0])


@pytest.mark.parametrize("vector", ["1" * 64, [True] * 64, ["0.125"] * 64])
def test_a_jsonl_vector_must_be_a_list_of_numbers(sources: Sources, store: Memory, tmp_path: Path,
                                                  vector: Any) -> None:
    """Was: ``"vector": "111..."`` read as 64 ones (any iterable of float-able items)."""
    lines = sources.valid("jsonl")[""].decode().split("\n")
    row = json.loads(lines[1])
    row["vector"] = vector
    lines[1] = json.dumps(row)
    error = _refused(store, "jsonl", Variant("v", {"": "\n".join(lines).encode()}), tmp_path)
    assert "vector must be a list of numbers" in str(error)


@pytest.mark.parametrize(("field", "value"), [
    ("title", ["a", "list"]), ("importance", "high"), ("access_count", 1 << 70),
    ("text", "lone \ud800 surrogate"), ("agent_id", {"not": "an id"}), ("level", "epic"),
])
def test_a_record_field_of_the_wrong_kind_is_refused(sources: Sources, store: Memory, tmp_path: Path,
                                                     field: str, value: Any) -> None:
    """Was: sqlite3's ProgrammingError/OverflowError/UnicodeEncodeError from inside the
    insert, or (importance "high", level "epic") stored as they were."""
    doc = json.loads(sources.valid("npy")["records.json"])
    doc["records"][0][field] = value
    files = {**sources.valid("npy"),
             "records.json": json.dumps(doc).encode("utf-8", "surrogatepass")}
    _refused(store, "npy", Variant(field, files), tmp_path)


def test_an_edge_end_that_is_not_a_string_is_refused_not_coerced(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    """Was: ``str()`` of whatever src/dst/type held, so a list became the id "['x']"."""
    doc = json.loads(sources.valid("npy")["records.json"])
    doc["edges"][0]["src"] = ["x"]
    files = {**sources.valid("npy"), "records.json": json.dumps(doc).encode()}
    _refused(store, "npy", Variant("edge", files), tmp_path)


def test_a_huge_vector_component_is_normalised_not_zeroed(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    """Was: the float32 norm of a vector holding 1e30 overflowed to inf, and the vector
    was stored as all zeros (inputs.check_vector now takes the norm in float64)."""
    vectors = np.load(io.BytesIO(sources.valid("npy")["vectors.npy"]))
    vectors[0] = 0.0
    vectors[0, 3] = 1e30
    buf = io.BytesIO()
    np.save(buf, vectors)
    assert _import(store, "npy", Variant("big", {**sources.valid("npy"),
                                                 "vectors.npy": buf.getvalue()}), tmp_path) == sources.count
    stored = {r.id: r.vector for r in store.export_rows()[0]}
    first = json.loads(sources.valid("npy")["records.json"])["records"][0]["id"]
    assert stored[first] is not None and stored[first][3] == pytest.approx(1.0)


def test_hdf5_data_outside_the_file_is_never_read(sources: Sources, store: Memory,
                                                  tmp_path: Path) -> None:
    """Was: an external link, external raw storage or a virtual dataset read another file
    of this machine into the store as vectors."""
    for what in ("external link", "external raw storage", "virtual dataset"):
        variant = sources.case("hdf5", what)
        _refused(store, "hdf5", variant, tmp_path / what.replace(" ", "-"))


def test_the_hdf5_library_runs_in_a_child_with_bounded_memory(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    """Was: one 4-byte length in a 13 kB file made libhdf5 allocate and fill 3 GB in this
    process (shifting bytes of a valid export did the same in 15% of 3,000 tries)."""
    variant = sources.case("hdf5", "length field set to 3 GiB")
    peak = _peak_mb()
    error = _refused(store, "hdf5", variant, tmp_path)
    assert "memory allocation failed" in str(error) or "needed more than" in str(error)
    assert _peak_mb() - peak < 100


def test_a_length_claim_beyond_the_pickle_never_reaches_the_c_unpickler(
        sources: Sources, store: Memory, tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    """Was: CPython's unpickler printed "SystemError: deallocated bytearray object has
    exported buffers" to stderr itself (a second line under the CLI's error)."""
    _refused(store, "pickle", sources.case("pickle", "7.2e18"), tmp_path)
    assert "SystemError" not in capfd.readouterr().err


def test_a_pickle_naming_numpy_ndarray_cannot_call_it(store: Memory, tmp_path: Path) -> None:
    """Was: ``numpy.ndarray`` was an allowed global, so REDUCE could allocate any shape."""
    evil = specials._Call(np.ndarray, (4096, 65536), "f4")
    variant = Variant("nd", {"": pickle.dumps({"manifest": {}, "records": [], "vectors": evil})})
    _refused(store, "pickle", variant, tmp_path)


@pytest.mark.parametrize(("kind", "message"), [("memo bomb", "expands to more than"),
                                               ("holds itself", "holds itself")])
def test_shared_or_cyclic_pickle_data_is_refused(sources: Sources, store: Memory, tmp_path: Path,
                                                 kind: str, message: str) -> None:
    """Was: a memo bomb stored 300 MB of metadata from a 2 kB file; a cycle raised the JSON
    encoder's ValueError inside the insert."""
    variant = sources.case("pickle", kind)
    error = _refused(store, "pickle", variant, tmp_path)
    assert message in str(error)


def test_a_pickle_sharing_a_dict_between_records_still_imports(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    """Shared references are counted, not refused: honest Python data shares objects."""
    doc = pickle.loads(sources.valid("pickle")[""])
    shared = {"source": "chat"}
    for rec in doc["records"]:
        rec["metadata"] = shared
    variant = Variant("shared", {"": pickle.dumps(doc, protocol=5)})
    assert _import(store, "pickle", variant, tmp_path) == sources.count


@pytest.mark.parametrize("turn", [{"speaker": "Ana", "text": "x" * 100_001},
                                  {"speaker": "Ana", "text": "a\x00b"},
                                  {"speaker": "S" * 300, "text": "hello"}])
def test_a_bad_turn_in_the_last_locomo_session_imports_nothing(
        sources: Sources, store: Memory, tmp_path: Path, turn: dict[str, Any]) -> None:
    """Was: one ``add`` per session, so the sessions before the bad one stayed imported."""
    doc = json.loads(sources.valid("locomo")[""])
    doc[-1]["conversation"]["session_1"].append(turn)
    _refused(store, "locomo", Variant("late", {"": json.dumps(doc).encode()}), tmp_path,
             InvalidInputError)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d[0].__setitem__("sample_id", ["x"]), "sample_id must be a string"),
    (lambda d: d[0]["conversation"].__setitem__("session_1_date_time", "9999-12-31T23:59:59"),
     "9999-12-31T23:59:59"),
    (lambda d: d[0]["conversation"]["session_1"].append({"speaker": "A", "text": {"a": 1}}),
     "has no text"),
])
def test_locomo_values_of_the_wrong_kind_are_refused(sources: Sources, store: Memory, tmp_path: Path,
                                                     change: Any, message: str) -> None:
    """Was: ``str()`` of a list as the user id; OverflowError past year 9999; ``str()``
    of an object as the text."""
    doc = json.loads(sources.valid("locomo")[""])
    change(doc)
    error = _refused(store, "locomo", Variant("x", {"": json.dumps(doc).encode()}), tmp_path)
    assert message in str(error)


def test_a_locomo_session_number_of_5000_digits_is_not_a_session(
        sources: Sources, store: Memory, tmp_path: Path) -> None:
    """Was: ``int()`` of the digits raised ValueError (Python's 4,300-digit limit)."""
    doc = json.loads(sources.valid("locomo")[""])
    doc[0]["conversation"]["session_" + "9" * 5000] = [{"speaker": "A", "text": "t"}]
    assert _import(store, "locomo", Variant("x", {"": json.dumps(doc).encode()}), tmp_path) == 5


def test_a_missing_file_is_invalid_input_on_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Was: FileNotFoundError from the SDK (not a LatentMemError) and exit 1 from the CLI."""
    from latentmem.cli import main

    monkeypatch.setenv("LATENTMEM_EMBEDDER", "hash")
    for fmt in hf.FORMATS:
        code = main(["--home", str(tmp_path / "h"), "import", str(tmp_path / "nope"),
                     "--format", fmt])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert err.startswith("latentmem: InvalidInputError:") and "does not exist" in err


def test_the_cli_refuses_a_pickle_attack_in_one_line_without_a_traceback(
        sources: Sources, tmp_path: Path) -> None:
    """A real process, as a user would run it."""
    import os

    variant = sources.case("pickle", "GLOBAL os.system + REDUCE (protocol 0)")
    path = hf.write_variant(variant, "pickle", tmp_path / "evil")
    env = {**os.environ, "LATENTMEM_EMBEDDER": "hash"}
    done = subprocess.run([sys.executable, "-m", "latentmem.cli", "--home", str(tmp_path / "h"),
                           "import", str(path), "--format", "pickle"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("latentmem: UnsafeDataError: ") and "os.system" in done.stderr
    assert variant.canary is not None and not Path(variant.canary).exists()


def test_safe_loads_still_reads_plain_numpy_pickles() -> None:
    """The stand-ins rebuild what numpy's own callables did (a numpy scalar comes back as
    the Python number it holds)."""
    arrays = {"f4": np.arange(6, dtype=np.float32).reshape(2, 3),
              "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(3, 2)),
              "big-endian": np.arange(4, dtype=">i8"), "empty": np.zeros((0, 64), np.float32)}
    from latentmem.store.formats.safe_pickle import safe_loads

    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = safe_loads(pickle.dumps({**arrays, "scalar": np.float32(1.5)}, protocol=protocol))
        assert again["scalar"] == 1.5
        for key, value in arrays.items():
            assert again[key].dtype == value.dtype and again[key].shape == value.shape
            assert np.array_equal(again[key], value), (protocol, key)


def test_unsafe_data_error_names_what_was_refused(store: Memory, tmp_path: Path) -> None:
    variant = Variant("x", {"": b"cos\nsystem\n(S'true'\ntR."})
    error = _refused(store, "pickle", variant, tmp_path, UnsafeDataError)
    assert "posix.system" in str(error) or "os.system" in str(error)


def test_input_too_large_for_a_huge_npy_header(store: Memory, sources: Sources,
                                               tmp_path: Path) -> None:
    variant = sources.case("npy", "60,000")
    _refused(store, "npy", variant, tmp_path, InputTooLargeError)
