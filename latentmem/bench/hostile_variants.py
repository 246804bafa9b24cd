"""Random hostile variants of a valid import file (for ``hostile_files.py``).

A variant is the valid file (or, for ``csv`` and ``npy``, the valid directory)
with one seeded mutation, chosen among:

* bytes: cut at a random offset, random bytes overwritten, a range deleted,
  repeated or replaced by junk (invalid UTF-8 among it);
* encoding (text members): UTF-16, UTF-32, Latin-1, a BOM, invalid UTF-8;
* structure: the document decoded (JSON, the pickle's plain data, the HDF5
  file's datasets), one node replaced by a hostile value (wrong type, NaN, a
  lone surrogate, NUL, an integer of 5,000 digits, nesting 150 deep, ...),
  deleted, given an unknown key or wrapped in a list, then encoded again;
* format-specific: a float32 matrix of another dtype, shape or content (npy,
  hdf5, pickle), a CSV cell, JSONL lines dropped, repeated or swapped.

Byte-level mutations mostly break a file; structural ones mostly make one that
parses and must be refused by the validation behind it. A few are benign (a
flipped letter in a text) and must then import completely.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

Bundle = dict[str, bytes]  # member name -> bytes; "" for a one-file format

DIR_MEMBERS = {"csv": ("records.json", "vectors.csv"), "npy": ("records.json", "vectors.npy")}
TEXT_MEMBERS = ("records.json", "vectors.csv")
TEXT_FORMATS = ("jsonl", "locomo", "chat")


@dataclass
class Variant:
    kind: str
    files: Bundle
    canary: str | None = None  # a path the payload would create, were it run
    expect: str | None = None  # "refuse" or "accept" for a named case; None: either


def hostile_values() -> list[Any]:
    deep_list: Any = 0
    deep_dict: Any = 0
    for _ in range(150):
        deep_list, deep_dict = [deep_list], {"k": deep_dict}
    return [
        None, True, False, 0, -1, 1 << 64, 10**30, 0.5, -1e308, float("nan"), float("inf"),
        "", " ", "\x00", "a\x00b", "\ud800", "x" * 5000, "line\u2028break", "2023-13-45T99:99",
        "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", [], {}, deep_list, deep_dict,
        list(range(1000)), {"__class__": "os.system"}, ["turn", "fact"], 1.0e39,
    ]


def _paths(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of ``doc``, walked without recursion."""
    out: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for key, value in items:
            out.append((node, key))
            if isinstance(value, dict | list) and len(out) < 20_000:
                stack.append(value)
    return out


def mutate_doc(doc: Any, rng: random.Random, skip: tuple[str, ...] = ()) -> tuple[Any, str]:
    """A deep copy of ``doc`` with one node changed; the label says how."""
    doc = copy.deepcopy(doc)
    paths = [(c, k) for c, k in _paths(doc) if k not in skip]
    if not paths:
        return hostile_values()[rng.randrange(len(hostile_values()))], "structure:root"
    parent, key = paths[rng.randrange(len(paths))]
    op = rng.choice(("replace", "replace", "replace", "delete", "unknown-key", "wrap"))
    if op == "replace":
        values = hostile_values()
        pick = rng.randrange(len(values))
        parent[key] = values[pick]
        return doc, f"structure:replace {key!r} with value #{pick}"
    if op == "delete":
        del parent[key]
        return doc, f"structure:delete {key!r}"
    if op == "unknown-key" and isinstance(parent[key], dict):
        parent[key]["surprise"] = rng.choice([1, "x", None, [1]])
        return doc, f"structure:unknown key in {key!r}"
    parent[key] = [parent[key]]
    return doc, f"structure:wrap {key!r} in a list"


def json_bytes(doc: Any, rng: random.Random) -> bytes:
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5)
    return text.encode("utf-8", "surrogatepass")


def bytes_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if not data:
        return b"\x00", "bytes:empty to NUL"
    op = rng.choice(("truncate", "truncate", "flip", "flip", "delete", "repeat", "junk"))
    at = rng.randrange(len(data))
    if op == "truncate":
        return data[:at], f"bytes:truncate at {at}/{len(data)}"
    if op == "flip":
        out = bytearray(data)
        spots = [rng.randrange(len(data)) for _ in range(rng.randint(1, 8))]
        for spot in spots:
            out[spot] = rng.randrange(256)
        return bytes(out), f"bytes:overwrite {len(spots)} at {spots[:3]}"
    end = min(len(data), at + rng.randint(1, 64))
    if op == "delete":
        return data[:at] + data[end:], f"bytes:delete {at}:{end}"
    if op == "repeat":
        return data[:end] + data[at:end] * rng.randint(1, 50) + data[end:], f"bytes:repeat {at}:{end}"
    junk = rng.choice([b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00",
                       bytes(rng.randrange(256) for _ in range(16))])
    return data[:at] + junk + data[at:], f"bytes:insert {junk[:4]!r} at {at}"


def encoding_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    text = data.decode("utf-8", "surrogatepass")
    op = rng.choice(("utf-16", "utf-16-le", "utf-32", "latin-1", "bom", "invalid"))
    if op == "latin-1":
        return text.encode("latin-1", "replace"), "encoding:latin-1"
    if op == "bom":
        return b"\xef\xbb\xbf" + data, "encoding:utf-8 BOM"
    if op == "invalid":
        at = rng.randrange(len(data) + 1)
        return data[:at] + b"\xc3" + data[at:], f"encoding:invalid UTF-8 at {at}"
    return text.encode(op, "surrogatepass"), f"encoding:{op}"


def matrix_mutation(vectors: np.ndarray, rng: random.Random) -> tuple[Any, str]:
    """The float32 matrix of an export, made wrong in one way (dtype, shape or values)."""
    n, dim = vectors.shape
    op = rng.choice(("dtype", "shape", "values"))
    if op == "dtype":
        dtype = rng.choice(("f2", "f8", "i4", "i8", "u1", "?", ">f4", "c8", "O", "U8"))
        return vectors.astype(dtype), f"matrix:dtype {dtype}"
    if op == "shape":
        shapes = [(n * dim,), (n, dim, 1), (n, dim - 1), (n + 1, dim), (max(n - 1, 0), dim),
                  (0, dim), (n, 0), (dim, n)]
        shape = shapes[rng.randrange(len(shapes))]
        data = np.resize(vectors, shape).astype(np.float32)
        return data, f"matrix:shape {shape}"
    out = vectors.copy()
    row = rng.randrange(n)
    value = rng.choice((float("nan"), float("inf"), 0.0, 1e30, -1.0))
    if value == 0.0:
        out[row] = 0.0
    else:
        out[row, rng.randrange(dim)] = value
    return out, f"matrix:row {row} gets {value}"


def csv_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    lines = data.decode("utf-8").split("\r\n" if b"\r\n" in data else "\n")
    row = rng.randrange(len(lines))
    cells = lines[row].split(",")
    col = rng.randrange(len(cells))
    cells[col] = rng.choice(("nan", "inf", "1e39", "", "abc", "0x1p3", "1_0", "9" * 400, "-0",
                             '"unterminated', "\x00", "1e-50", " 1.5 "))
    lines[row] = ",".join(cells)
    return "\n".join(lines).encode("utf-8", "surrogatepass"), f"csv:cell {row},{col}"


def lines_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    lines = data.split(b"\n")
    at = rng.randrange(len(lines))
    op = rng.choice(("drop", "repeat", "swap", "structure"))
    if op == "drop":
        del lines[at]
    elif op == "repeat":
        lines.insert(at, lines[at])
    elif op == "swap":
        other = rng.randrange(len(lines))
        lines[at], lines[other] = lines[other], lines[at]
    else:
        try:
            doc = json.loads(lines[at])
        except ValueError:
            return b"\n".join(lines), "jsonl:blank line kept"
        doc, label = mutate_doc(doc, rng)
        lines[at] = json_bytes(doc, rng)
        return b"\n".join(lines), f"jsonl:line {at} {label}"
    return b"\n".join(lines), f"jsonl:{op} line {at}"


def h5_bytes(parts: dict[str, Any], **datasets: Any) -> bytes:
    """An HDF5 export written from ``parts`` (manifest, records, edges as JSON-able data,
    vectors as an array); ``datasets`` override how a dataset is made."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        if "manifest" in parts:
            fh.attrs["manifest"] = json.dumps(parts["manifest"])
        for name in ("vectors", "records", "edges"):
            if name in datasets:
                datasets[name](fh)
            elif name in parts:
                data = parts[name] if name == "vectors" else json.dumps(parts[name])
                fh.create_dataset(name, data=data)
    return buf.getvalue()


def h5_parts(data: bytes) -> dict[str, Any]:
    import h5py

    with h5py.File(io.BytesIO(data), "r") as fh:
        return {"manifest": json.loads(fh.attrs["manifest"]),
                "records": json.loads(fh["records"][()]), "edges": json.loads(fh["edges"][()]),
                "vectors": np.asarray(fh["vectors"][()])}


def random_variant(fmt: str, source: Bundle, rng: random.Random) -> Variant:
    members = sorted(source)
    member = members[rng.randrange(len(members))]
    data = source[member]
    is_text = member in TEXT_MEMBERS or fmt in TEXT_FORMATS
    kinds = ["bytes", "bytes", "structure", "structure"]
    kinds += ["encoding"] if is_text else []
    kinds += ["special"] if fmt in ("npy", "hdf5", "pickle", "csv", "jsonl") else []
    kind = rng.choice(kinds)
    if kind == "bytes":
        out, label = bytes_mutation(data, rng)
    elif kind == "encoding":
        out, label = encoding_mutation(data, rng)
    elif fmt == "pickle":
        out, label = _pickle_variant(data, rng, kind == "special")
        member = ""
    elif fmt == "hdf5":
        parts = h5_parts(data)
        if kind == "special":
            parts["vectors"], label = matrix_mutation(parts["vectors"], rng)
        else:
            mutated, label = mutate_doc({k: v for k, v in parts.items() if k != "vectors"}, rng)
            parts = {**(mutated if isinstance(mutated, dict) else {}), "vectors": parts["vectors"]}
        try:
            out = h5_bytes(parts)
        except (TypeError, ValueError):  # a dtype HDF5 cannot store: the file goes without it
            out = h5_bytes({k: v for k, v in parts.items() if k != "vectors"})
            label += " (no vectors)"
    elif kind == "special" and fmt == "npy":
        member = "vectors.npy"
        arr, label = matrix_mutation(np.load(io.BytesIO(source[member])), rng)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=arr.dtype == object)
        out = buf.getvalue()
    elif kind == "special" and fmt == "csv":
        member = "vectors.csv"
        out, label = csv_mutation(source[member], rng)
    elif kind == "special":
        out, label = lines_mutation(data, rng)
    elif fmt == "jsonl":
        out, label = lines_mutation(data, rng)
    else:
        member = "records.json" if fmt in DIR_MEMBERS else member
        doc, label = mutate_doc(json.loads(source[member]), rng)
        out = json_bytes(doc, rng)
    files = dict(source)
    files[member] = out
    return Variant(f"{member or fmt}:{label}", files)


def _pickle_variant(data: bytes, rng: random.Random, matrix: bool) -> tuple[bytes, str]:
    doc = pickle.loads(data)  # our own export, written by this run: trusted
    if matrix:
        doc["vectors"], label = matrix_mutation(doc["vectors"], rng)
    else:
        vectors = doc.pop("vectors")
        doc, label = mutate_doc(doc, rng)
        if isinstance(doc, dict):
            doc["vectors"] = vectors
    protocol = rng.randint(0, pickle.HIGHEST_PROTOCOL)
    return pickle.dumps(doc, protocol=protocol), f"{label} (protocol {protocol})"
