"""The named hostile files (for ``hostile_files.py``): every attack the issue names,
built on purpose rather than left to chance, each with the outcome it must have.

Pickles that try to import or call something, through every opcode that can:
GLOBAL, STACK_GLOBAL, INST, OBJ, NEWOBJ, REDUCE, BUILD, EXT1 and persistent ids,
at every protocol, naming ``os.system``, ``eval``, ``exec``, ``subprocess.Popen``,
``open``, ``getattr``/``__import__`` chains, ``pickle.loads``, numpy's own
``runstring`` and numpy's array constructors with shapes that allocate gigabytes.
A payload that could run writes a canary file; the canary must never appear.
Bombs: a pickle whose memo repeats one list into a million strings, one that holds
itself, length fields of 2^62 bytes; an HDF5 dataset of compressed zeros, one
declared and never written, and a string whose 4-byte length says 3 GiB; a
``.npy`` header claiming 10^12 rows. Huge or hostile headers: a ``.npy`` header
of 60,000 bytes, of a Python expression, of 3,000 nested tuples; a CSV field of
2 MB. Files that reach outside themselves:
HDF5 external links, external raw storage and virtual datasets pointing at a
"secret" file beside them. And a few benign oddities (Fortran order, big-endian
float32, CRLF, blank lines, a BOM before the CSV header) that must import
completely.
"""

from __future__ import annotations

import builtins
import copy
import importlib
import io
import json
import os
import pickle
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.bench.hostile_variants import Bundle, Variant, h5_bytes, h5_parts

REFUSE, ACCEPT = "refuse", "accept"


class _Call:
    """Pickles as ``fn(*args)``: what a hostile ``__reduce__`` looks like."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _u(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _s0(text: str) -> bytes:
    """A protocol-0 STRING argument."""
    return b"S" + repr(text).encode() + b"\n"


def pickle_attacks(source: bytes, canary: Callable[[], str]) -> list[Variant]:
    doc = pickle.loads(source)  # our own export, written by this run: trusted
    out: list[Variant] = []

    def add(kind: str, data: bytes, mark: str | None = None) -> None:
        out.append(Variant(f"pickle:{kind}", {"": data}, mark, REFUSE))

    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        c = canary()
        add(f"REDUCE os.system (protocol {protocol})",
            pickle.dumps(_Call(os.system, f"touch {c}"), protocol=protocol), c)
        out.append(Variant(f"pickle:the valid export at protocol {protocol}",
                           {"": pickle.dumps(doc, protocol=protocol)}, None, ACCEPT))
    for fn, name in ((eval, "eval"), (exec, "exec")):
        c = canary()
        add(f"STACK_GLOBAL builtins.{name} + REDUCE",
            b"\x80\x04" + _u("builtins") + _u(name) + b"\x93"
            + _u(f"open({c!r}, 'w').close()") + b"\x85R.", c)
        c = canary()
        add(f"REDUCE {name} via __reduce__ (protocol 2)",
            pickle.dumps(_Call(fn, f"open({c!r}, 'w').close()"), protocol=2), c)
    c = canary()
    add("GLOBAL os.system + REDUCE (protocol 0)",
        b"cos\nsystem\n(" + _s0(f"touch {c}") + b"tR.", c)
    c = canary()
    add("GLOBAL posix.system + REDUCE", b"cposix\nsystem\n(" + _s0(f"touch {c}") + b"tR.", c)
    c = canary()
    add("INST subprocess.Popen", b"((l" + _s0("touch") + b"a" + _s0(c) + b"a"
        + b"isubprocess\nPopen\n.", c)
    c = canary()
    add("OBJ subprocess.Popen", b"(csubprocess\nPopen\n(l" + _s0("touch") + b"a" + _s0(c)
        + b"ao.", c)
    c = canary()
    add("REDUCE subprocess.Popen via __reduce__",
        pickle.dumps(_Call(subprocess.Popen, ["touch", c]), protocol=4), c)
    add("NEWOBJ os._wrap_close", b"\x80\x02cos\n_wrap_close\n)\x81.")
    c = canary()
    add("GLOBAL builtins.getattr(__import__('os'), 'system')",
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(" + _s0("os") + b"tR" + _s0("system")
        + b"tR(" + _s0(f"touch {c}") + b"tR.", c)
    c = canary()
    add("GLOBAL _io.open (creates a file)", b"c_io\nopen\n(" + _s0(c) + _s0("w") + b"tR.", c)
    c = canary()
    add("REDUCE builtins.open via __reduce__", pickle.dumps(_Call(builtins.open, c, "w")), c)
    c = canary()
    add("GLOBAL numpy.testing runstring (exec)",
        b"cnumpy.testing._private.utils\nrunstring\n(" + _s0(f"open({c!r}, 'w').close()")
        + b"(dtR.", c)
    c = canary()
    add("REDUCE pickle.loads of a nested os.system pickle",
        pickle.dumps(_Call(pickle.loads, pickle.dumps(_Call(os.system, f"touch {c}")))), c)
    add("REDUCE _codecs.encode with zlib_codec",
        b"c_codecs\nencode\n(" + _s0("x") + _s0("zlib_codec") + b"tR.")
    add("EXT1 extension code", b"\x80\x02\x82\x01.")
    add("PERSID persistent id", b"Pfoo\n.")
    add("NEXT_BUFFER without buffers", b"\x80\x05\x97.")
    c = canary()
    nested = copy.deepcopy(doc)
    nested["records"][0]["metadata"] = {"x": _Call(os.system, f"touch {c}")}
    for protocol in (2, 5):
        add(f"os.system nested in a record's metadata (protocol {protocol})",
            pickle.dumps(nested, protocol=protocol), c)
    out += _numpy_attacks(doc, canary)
    out += _pickle_bombs(doc)
    return out


def _numpy_internal(name: str) -> Any:
    """numpy's ``_core.<name>`` (``core.<name>`` before numpy 2), as its pickles name it."""
    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{name}")


def _numpy_attacks(doc: dict[str, Any], canary: Callable[[], str]) -> list[Variant]:
    out: list[Variant] = []
    multiarray, numeric = _numpy_internal("multiarray"), _numpy_internal("numeric")

    def add(kind: str, obj: Any, mark: str | None = None, protocol: int = 2) -> None:
        bad = dict(doc, vectors=obj)
        out.append(Variant(f"pickle:{kind}", {"": pickle.dumps(bad, protocol=protocol)}, mark,
                           REFUSE))

    big = (4096, 65536)  # 1 GiB of float32, were it allocated
    add("REDUCE numpy.ndarray with a 1 GiB shape", _Call(np.ndarray, big, "f4"))
    add("REDUCE _reconstruct with a 1 GiB shape",
        _Call(multiarray._reconstruct, np.ndarray, big, b"b"))
    add("REDUCE _frombuffer with a shape its bytes do not fill",
        _Call(numeric._frombuffer, b"\0" * 16, np.dtype("f4"), big, "C"), protocol=5)
    add("REDUCE _frombuffer of an object dtype",
        _Call(numeric._frombuffer, b"\0" * 16, np.dtype("O"), (2,), "C"), protocol=5)
    c = canary()
    add("numpy scalar of object dtype holding os.system",
        _Call(multiarray.scalar, np.dtype("O"), _Call(os.system, f"touch {c}")), c)
    c = canary()
    add("object array holding os.system", np.array([_Call(os.system, f"touch {c}")], dtype=object),
        c)
    add("BUILD a dtype state that crashes numpy (V8)", _State(np.dtype, ("V8", False, True),
                                                              (2, "x", 1 << 31, -(1 << 63), 4, 0)))
    add("BUILD a crafted state on a float32 dtype", _State(np.dtype, ("f4", False, True),
                                                           (3, "<", ("a",), {"a": (1, 0)},
                                                            None, -1, -1, 0)))
    add("BUILD an ndarray state of 2^40 rows", _State(
        multiarray._reconstruct, (np.ndarray, (0,), b"b"),
        (1, (1 << 40, 64), np.dtype("f4"), False, b"\0" * 256)))
    return out


class _State:
    """Pickles as ``fn(*args)`` followed by BUILD with ``state``."""

    def __init__(self, fn: Any, args: tuple[Any, ...], state: Any) -> None:
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return self.fn, self.args, self.state


def _pickle_bombs(doc: dict[str, Any]) -> list[Variant]:
    out: list[Variant] = []
    laughs: Any = ["lol" * 100]
    for _ in range(6):  # 10^6 references to one 300-character string: ~300 MB as JSON
        laughs = [laughs] * 10
    for kind, meta in (("memo bomb (10^6 shared references)", {"x": laughs}),
                       ("a list that holds itself", _cycle())):
        bad = copy.deepcopy({k: v for k, v in doc.items() if k != "records"})
        bad["records"] = copy.deepcopy(doc["records"])
        bad["records"][0]["metadata"] = meta
        out.append(Variant(f"pickle:{kind}", {"": pickle.dumps(bad, protocol=2)}, None, REFUSE))
    claims = {
        "BINUNICODE8 of 2^62 bytes": b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62) + b"abc.",
        "BINBYTES8 of 2^62 bytes": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"abc.",
        "BYTEARRAY8 of 2^62 bytes": b"\x80\x05\x96" + struct.pack("<Q", 1 << 62) + b"abc.",
        "BYTEARRAY8 of 7.2e18 bytes (CPython prints a SystemError)":
            b"\x80\x05\x96" + struct.pack("<Q", 7234318597384849693) + b"abc.",
        "LONG4 of 2^31 bytes": b"\x80\x02\x8b" + struct.pack("<i", (1 << 31) - 1) + b"\x01.",
        "FRAME of 2^60 bytes": b"\x80\x04\x95" + struct.pack("<Q", 1 << 60) + b"N.",
        "100,000 nested lists": b"(" * 100_000 + b"l" * 100_000 + b".",
    }
    out += [Variant(f"pickle:{k}", {"": v}, None, REFUSE) for k, v in claims.items()]
    return out


def _cycle() -> dict[str, Any]:
    loop: list[Any] = []
    loop.append(loop)
    return {"loop": loop}


def _npy(header: str, data: bytes, version: int = 1) -> bytes:
    head = header.encode("latin1")
    pad = 64 - (len(head) + 11 + (version > 1) * 2) % 64
    head += b" " * (pad - 1) + b"\n"
    size = struct.pack("<H", len(head)) if version == 1 else struct.pack("<I", len(head))
    return b"\x93NUMPY" + bytes([version, 0]) + size + head + data


def npy_specials(source: Bundle, canary: Callable[[], str]) -> list[Variant]:
    vectors = np.load(io.BytesIO(source["vectors.npy"]))
    n, dim = vectors.shape
    out: list[Variant] = []

    def add(kind: str, data: bytes, expect: str | None = REFUSE, mark: str | None = None) -> None:
        out.append(Variant(f"npy:{kind}", {**source, "vectors.npy": data}, mark, expect))

    def saved(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=arr.dtype == object)
        return buf.getvalue()

    for dtype in ("f2", "f8", "i4", "i8", "u1", "?", "c8", "U8"):
        add(f"dtype {dtype}", saved(vectors.astype(dtype)))
    for dtype in ("V4", "M8[s]", "S4"):
        add(f"dtype {dtype}", saved(np.zeros((n, dim), dtype=dtype)))
    add("structured dtype", saved(np.zeros(n, dtype=[("a", "<f4", (dim,))])))
    c = canary()
    add("object array holding os.system (allow_pickle needed)",
        saved(np.array([_Call(os.system, f"touch {c}")] * n, dtype=object)), mark=c)
    for shape in ((n * dim,), (n, dim, 1), (n, dim - 1), (n + 1, dim), (0, dim)):
        add(f"shape {shape}", saved(np.resize(vectors, shape).astype(np.float32)))
    for value in (float("nan"), float("inf")):
        bad = vectors.copy()
        bad[0, 0] = value
        add(f"a {value}", saved(bad))
    bad = vectors.copy()
    bad[-1] = 0.0
    add("a row of zeros", saved(bad))
    add("rows not of unit length", saved(vectors * 3.0), ACCEPT)
    add("Fortran order", saved(np.asfortranarray(vectors)), ACCEPT)
    add("big-endian float32", saved(vectors.astype(">f4")), ACCEPT)
    body = vectors.tobytes()
    add("header claiming 10^12 rows",
        _npy(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({10**12}, {dim}), }}", body))
    add("header claiming more rows than the data holds",
        _npy(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n * 1000}, {dim}), }}",
             body))
    add("data beyond what the header claims", _npy(
        f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {dim}), }}", body + body))
    add("header of 60,000 bytes", _npy("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                       f"({n}, {dim}), }}" + " " * 60_000, body))
    add("version 2 header length of 4 GiB",
        b"\x93NUMPY\x02\x00" + struct.pack("<I", (1 << 32) - 1) + b"{" + body)
    add("version 3 header", _npy(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, "
                                 f"{dim}), }}", body, version=3))
    c = canary()
    add("header with a Python expression", _npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': "
        f"(__import__('os').system('touch {c}'), {dim}), }}", body), mark=c)
    add("header of 3,000 nested tuples", _npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': " + "(" * 3000 + ")" * 3000 + "}",
        body))
    add("header with an unclosed brace", _npy(
        f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {dim}), ", body))
    add("negative shape", _npy(f"{{'descr': '<f4', 'fortran_order': False, 'shape': (-1, {dim}),"
                               " }", body))
    add("bad magic", b"\x93NUMPX" + source["vectors.npy"][6:])
    return out


def hdf5_specials(source: Bundle, work: Path) -> list[Variant]:
    import h5py

    parts = h5_parts(source[""])
    vectors = parts["vectors"]
    out: list[Variant] = []
    secret = work / "secret.bin"  # what a file must not read into the store: vectors that pass
    secret.write_bytes(vectors.tobytes())
    linked = work / "linked.h5"
    linked.write_bytes(source[""])

    def add(kind: str, expect: str | None = REFUSE, **datasets: Any) -> None:
        out.append(Variant(f"hdf5:{kind}", {"": h5_bytes(parts, **datasets)}, None, expect))

    add("vectors as an external link to another file",
        vectors=lambda fh: fh.__setitem__("vectors", h5py.ExternalLink(str(linked), "vectors")))
    add("vectors as a soft link", expect=None, vectors=lambda fh: (
        fh.create_dataset("hidden", data=vectors),
        fh.__setitem__("vectors", h5py.SoftLink("/hidden"))))
    add("vectors in external raw storage (another file)", vectors=lambda fh: fh.create_dataset(
        "vectors", shape=vectors.shape, dtype="f4",
        external=[(str(secret), 0, vectors.nbytes)]))

    def virtual(fh: Any) -> None:
        layout = h5py.VirtualLayout(shape=vectors.shape, dtype="f4")
        layout[:] = h5py.VirtualSource(str(linked), "vectors", shape=vectors.shape)
        fh.create_virtual_dataset("vectors", layout)

    add("vectors as a virtual dataset over another file", vectors=virtual)

    def gzip_bomb(fh: Any) -> None:
        ds = fh.create_dataset("vectors", shape=(1024, 65536), dtype="f4",
                               chunks=(64, 65536), compression="gzip")
        zeros = np.zeros((64, 65536), dtype="f4")
        for row in range(0, 1024, 64):
            ds[row:row + 64] = zeros

    add("gzip bomb (256 MiB of zeros)", vectors=gzip_bomb)
    add("1 GiB declared, never written", vectors=lambda fh: fh.create_dataset(
        "vectors", shape=(4096, 65536), dtype="f4"))
    add("records as a 1 GB fixed-length string, never written", records=lambda fh: (
        fh.create_dataset("records", shape=(), dtype="S1000000000")))
    add("vectors chunked", expect=None, vectors=lambda fh: fh.create_dataset(
        "vectors", data=vectors, chunks=(1, vectors.shape[1])))
    add("vectors as a group", vectors=lambda fh: fh.create_group("vectors"))
    add("records as an array of strings", records=lambda fh: fh.create_dataset(
        "records", data=[json.dumps(parts["records"])] * 2))
    for dtype in ("f2", "f8", "i4"):
        add(f"vectors of dtype {dtype}", vectors=lambda fh, d=dtype: fh.create_dataset(
            "vectors", data=vectors.astype(d)))
    add("vectors as strings", vectors=lambda fh: fh.create_dataset(
        "vectors", data=np.array([str(v) for v in vectors], dtype=object),
        dtype=h5py.string_dtype()))
    add("vectors big-endian", expect=ACCEPT, vectors=lambda fh: fh.create_dataset(
        "vectors", data=vectors.astype(">f4")))
    add("vectors 3-D", vectors=lambda fh: fh.create_dataset("vectors", data=vectors[None]))
    with h5py.File(io.BytesIO(source[""]), "r") as fh:
        at = fh["edges"].id.get_offset()  # the 16-byte reference: length, heap address, index
    bomb = bytearray(source[""])
    bomb[at:at + 4] = struct.pack("<I", 0xC0000000)
    out.append(Variant("hdf5:a string's length field set to 3 GiB (the library fills that much)",
                       {"": bytes(bomb)}, None, REFUSE))
    no_manifest = {k: v for k, v in parts.items() if k != "manifest"}
    out.append(Variant("hdf5:no manifest", {"": h5_bytes(no_manifest)}, None, REFUSE))
    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        fh.attrs["manifest"] = 7
        fh.create_dataset("vectors", data=vectors)
    out.append(Variant("hdf5:manifest an integer", {"": buf.getvalue()}, None, REFUSE))
    return out


def csv_specials(source: Bundle) -> list[Variant]:
    doc = json.loads(source["records.json"])
    text = source["vectors.csv"].decode()
    lines = text.rstrip("\n").split("\n")
    out: list[Variant] = []

    def add(kind: str, files: dict[str, bytes], expect: str | None = REFUSE) -> None:
        out.append(Variant(f"csv:{kind}", {**source, **files}, None, expect))

    first = lines[1].split(",")

    def first_row(cells: list[str]) -> bytes:
        return "\n".join([lines[0], ",".join(cells), *lines[2:]]).encode()

    add("an id field of 2 MB", {"vectors.csv": first_row(["x" * 2_000_000, *first[1:]])})
    add("a quoted field never closed", {"vectors.csv": (text + '"never closed').encode()})
    add("a NUL byte", {"vectors.csv": first_row([first[0], "\x00" + first[1], *first[2:]])})
    add("rows in another order", {"vectors.csv": "\n".join(
        [lines[0], lines[2], lines[1], *lines[3:]]).encode()})
    add("a row one column longer", {"vectors.csv": (text.replace("\n", ",0.5\n", 2)).encode()})
    add("empty vectors.csv", {"vectors.csv": b""})
    add("header only", {"vectors.csv": (lines[0] + "\n").encode()})
    add("1e39 (beyond float32)", {"vectors.csv": first_row([first[0], "1e39", *first[2:]])})
    add("LF line ends, a BOM and blank lines", {"vectors.csv": ("\ufeff" + text.replace(
        "\r\n", "\n\n")).encode()}, ACCEPT)
    add("records.json nested 100,000 deep", {"records.json": b"[" * 100_000 + b"]" * 100_000})
    add("records.json with an integer of 5,000 digits", {"records.json": (
        '{"manifest": ' + "9" * 5000 + ', "records": []}').encode()})
    short = dict(doc, records=doc["records"][:-1])
    add("last record and row gone (cut short)", {
        "records.json": json.dumps(short).encode(),
        "vectors.csv": "\n".join(lines[:-1]).encode()})
    return out


def jsonl_specials(source: Bundle) -> list[Variant]:
    lines = source[""].decode().rstrip("\n").split("\n")
    kinds = [next(iter(json.loads(line))) for line in lines]
    first_record = kinds.index("record")
    last_record = len(kinds) - 1 - kinds[::-1].index("record")
    out: list[Variant] = []

    def add(kind: str, new: list[str], expect: str | None = REFUSE) -> None:
        out.append(Variant(f"jsonl:{kind}", {"": "\n".join(new).encode()}, None, expect))

    def with_line(at: int, change: Callable[[dict[str, Any]], Any]) -> list[str]:
        row = json.loads(lines[at])
        change(row)
        return [*lines[:at], json.dumps(row), *lines[at + 1:]]

    add("a line nested 100,000 deep", [*lines, "[" * 100_000 + "]" * 100_000])
    dim = len(json.loads(lines[first_record])["vector"])
    add("vector as a string of digits", with_line(
        first_record, lambda r: r.__setitem__("vector", "1" * dim)))
    add("vector of booleans", with_line(
        first_record, lambda r: r.__setitem__("vector", [True] * dim)))
    add("vector of numeric strings", with_line(
        first_record, lambda r: r.__setitem__("vector", [str(x) for x in r["vector"]])))
    add("an unknown key on a record line", with_line(
        first_record, lambda r: r.__setitem__("extra", 1)))
    add("the manifest twice", [lines[0], *lines])
    add("no manifest", lines[1:])
    add("cut after a whole record line", lines[:last_record])
    if last_record < len(lines) - 1:
        add("the edges cut off", lines[:last_record + 1])
    add("CRLF line ends and blank lines", [line + "\r" for line in lines] + ["", ""], ACCEPT)
    return out


def conversation_specials(fmt: str, source: Bundle) -> list[Variant]:
    doc = json.loads(source[""])
    out: list[Variant] = []

    def add(kind: str, change: Callable[[Any], Any], expect: str | None = REFUSE) -> None:
        new = copy.deepcopy(doc)
        new = change(new) or new
        out.append(Variant(f"{fmt}:{kind}", {"": json.dumps(new).encode("utf-8", "surrogatepass")},
                           None, expect))

    deep: Any = "x"
    for _ in range(500):
        deep = {"k": deep}
    if fmt == "locomo":
        last = max((k for k in doc[-1]["conversation"] if k.startswith("session_")
                    and not k.endswith("date_time")), key=lambda k: int(k.split("_")[1]))

        def in_last(turn: dict[str, Any]) -> Callable[[Any], None]:
            return lambda d: d[-1]["conversation"][last].append(turn)

        add("a turn of 100,001 characters in the last session (no partial import)",
            in_last({"speaker": "Ana", "dia_id": "D9:1", "text": "x" * 100_001}))
        add("a NUL in the last session's text", in_last({"speaker": "A", "text": "a\x00b"}))
        add("a speaker of 300 characters in the last session",
            in_last({"speaker": "S" * 300, "text": "hello"}))
        add("a lone surrogate", in_last({"speaker": "A", "text": "\ud800"}))
        add("a turn's text an object", in_last({"speaker": "A", "text": {"a": 1}}))
        add("metadata nested 500 deep", in_last({"speaker": "A", "text": "t", "dia_id": deep}))
        add("sample_id a list", lambda d: d[0].__setitem__("sample_id", ["x"]))
        add("a session number of 5,000 digits", lambda d: d[0]["conversation"].__setitem__(
            "session_" + "9" * 5000, [{"speaker": "A", "text": "t"}]), None)
        add("a date in the last second of 9999", lambda d: d[0]["conversation"].__setitem__(
            "session_1_date_time", "9999-12-31T23:59:59"))
        add("a sample that is a string", lambda d: d.append("sample"))
    else:
        msgs = doc["messages"]
        add("user_id a list", lambda d: d.__setitem__("user_id", ["u"]))
        add("messages an object", lambda d: d.__setitem__("messages", {"a": msgs[0]}))
        add("content a number", lambda d: d["messages"].append({"role": "user", "content": 5}))
        add("a lone surrogate", lambda d: d["messages"].append(
            {"role": "user", "content": "\ud800"}))
        add("metadata nested 500 deep", lambda d: d["messages"].append(
            {"role": "user", "content": "t", "metadata": deep}))
        add("10,001 messages", lambda d: d.__setitem__("messages", [msgs[0]] * 10_001))
        add("a message of 100,001 characters", lambda d: d["messages"].append(
            {"role": "user", "content": "x" * 100_001}))
        add("a timestamp that is no time", lambda d: d["messages"].append(
            {"role": "user", "content": "t", "timestamp": "the day after never"}))
        add("a role of 1,000 characters", lambda d: d["messages"].append(
            {"role": "r" * 1000, "content": "t"}))
    add("nested 100,000 deep", lambda d: None)
    out[-1].files = {"": b"[" * 100_000 + b"]" * 100_000}
    return out
