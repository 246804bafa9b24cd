"""The record formats: CSV+JSON, NumPy+JSON, HDF5, Pickle and JSONL.

What ``path`` names:

* ``csv``: a directory holding ``vectors.csv`` (``id`` then one column per
  dimension) and ``records.json`` (manifest, records, edges).
* ``npy``: a directory holding ``vectors.npy`` (float32, rows in the order of
  ``records.json``) and ``records.json``.
* ``hdf5``, ``pickle``, ``jsonl``: one file.

Every format carries the same manifest (format version, embedder, dimension,
counts of records and edges) and the edges. Vectors are float32 everywhere; the
text formats write each float32 as the shortest decimal that reads back to the
same float32, so the round trip is bit-exact.

Reading assumes the file may be hostile (tests/reliability/test_hostile_files.py).
Whatever goes wrong, the reader raises an ``InvalidInputError`` that names the
file, and it never allocates much more than the file's own size: a ``.npy``
header is parsed by hand before numpy reads anything, so a header that claims a
huge shape, a dtype other than float32 or more bytes than the file holds is
refused unread. HDF5 files go through ``hdf5.py`` and pickles through
``safe_pickle.py``, which say what they refuse and why.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import struct
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from latentmem.errors import InputTooLargeError, InvalidInputError
from latentmem.store.formats.records import (
    edge_from_dict,
    edge_to_dict,
    record_from_dict,
    record_to_dict,
)
from latentmem.store.formats.safe_pickle import safe_loads
from latentmem.types import Edge, Record

Loaded = tuple[list[Record], list[Edge], dict[str, Any]]


class Format(Protocol):
    name: str
    single_file: bool

    def write(self, path: Path, manifest: dict[str, Any], records: list[Record],
              edges: list[Edge]) -> None: ...

    def read(self, path: Path) -> Loaded: ...


def _matrix(records: list[Record], dim: int) -> np.ndarray:
    if not records:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([np.asarray(r.vector, dtype=np.float32) for r in records])


def _float_text(x: np.float32) -> str:
    # repr of the exact double value of a float32 reads back to the same float32.
    return repr(float(x))


def _doc(manifest: dict[str, Any], records: list[Record], edges: list[Edge]) -> dict[str, Any]:
    return {
        "manifest": manifest,
        "records": [record_to_dict(r) for r in records],
        "edges": [edge_to_dict(e) for e in edges],
    }


def _from_doc(doc: Any, vectors: np.ndarray, source: str) -> Loaded:
    if not isinstance(doc, dict) or not {"manifest", "records"} <= set(doc):
        raise InvalidInputError(f"{source}: expected manifest and records")
    raw = doc["records"]
    if not isinstance(raw, list):
        raise InvalidInputError(f"{source}: records must be a list")
    if not isinstance(doc.get("edges") or [], list):
        raise InvalidInputError(f"{source}: edges must be a list")
    if not isinstance(vectors, np.ndarray):
        raise InvalidInputError(f"{source}: expected the vectors as an array, found "
                                f"{type(vectors).__name__}")
    if vectors.ndim != 2 or vectors.shape[0] != len(raw):
        raise InvalidInputError(
            f"{source}: {len(raw)} records but vectors of shape {tuple(vectors.shape)}"
        )
    if vectors.dtype.kind != "f" or vectors.dtype.itemsize != 4:
        raise InvalidInputError(f"{source}: vectors must be float32, found {vectors.dtype}")
    vectors = vectors.astype(np.float32, copy=False)  # either byte order
    records = [
        record_from_dict(data, vectors[i].copy(), f"{source}: record {i}")
        for i, data in enumerate(raw)
    ]
    edges = [
        edge_from_dict(e, f"{source}: edge {i}") for i, e in enumerate(doc.get("edges") or [])
    ]
    return records, edges, doc["manifest"]


def unreadable(path: Path, exc: OSError) -> InvalidInputError:
    if isinstance(exc, FileNotFoundError):
        return InvalidInputError(f"{path} does not exist; expected the file to import there")
    return InvalidInputError(f"{path} cannot be read ({exc.strerror or type(exc).__name__})")


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise unreadable(path, exc) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from exc


def parse_json(text: str | bytes, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{source}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise InvalidInputError(f"{source}: JSON nested too deeply to read") from exc
    except ValueError as exc:  # an integer of more digits than Python converts; bad encoding
        raise InvalidInputError(f"{source}: not valid JSON ({str(exc)[:200]})") from exc


def _read_json(path: Path) -> Any:
    return parse_json(read_text(path), str(path))


class CsvFormat:
    name = "csv"
    single_file = False

    def write(self, path: Path, manifest: dict[str, Any], records: list[Record],
              edges: list[Edge]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        dim = int(manifest["dim"])
        with open(path / "vectors.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", *[f"v{i}" for i in range(dim)]])
            for rec in records:
                writer.writerow([rec.id, *map(_float_text, np.asarray(rec.vector, np.float32))])
        (path / "records.json").write_text(
            json.dumps(_doc(manifest, records, edges), ensure_ascii=False), encoding="utf-8"
        )

    def read(self, path: Path) -> Loaded:
        doc = _read_json(path / "records.json")
        rows: list[list[float]] = []
        ids: list[str] = []
        source = path / "vectors.csv"
        try:
            with open(source, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh, strict=True)
                next(reader, None)
                for row in reader:
                    if not row:
                        continue
                    ids.append(row[0])
                    rows.append([float(x) for x in row[1:]])
        except OSError as exc:
            raise unreadable(source, exc) from exc
        except (ValueError, IndexError, csv.Error) as exc:
            raise InvalidInputError(f"{source}: unreadable at line {len(rows) + 2} "
                                    f"({str(exc)[:200]})") from exc
        vectors = _rows(rows, str(source))
        records, edges, manifest = _from_doc(doc, vectors, str(path))
        if [r.id for r in records] != ids:
            raise InvalidInputError(f"{path}: vectors.csv ids do not match records.json")
        return records, edges, manifest


class NpyFormat:
    name = "npy"
    single_file = False

    def write(self, path: Path, manifest: dict[str, Any], records: list[Record],
              edges: list[Edge]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "vectors.npy", _matrix(records, int(manifest["dim"])), allow_pickle=False)
        (path / "records.json").write_text(
            json.dumps(_doc(manifest, records, edges), ensure_ascii=False), encoding="utf-8"
        )

    def read(self, path: Path) -> Loaded:
        doc = _read_json(path / "records.json")
        return _from_doc(doc, read_npy(path / "vectors.npy"), str(path))


class Hdf5Format:
    name = "hdf5"
    single_file = True

    def write(self, path: Path, manifest: dict[str, Any], records: list[Record],
              edges: list[Edge]) -> None:
        import h5py

        path.parent.mkdir(parents=True, exist_ok=True)
        doc = _doc(manifest, records, edges)
        with h5py.File(os.fsencode(path), "w") as fh:  # bytes: h5py refuses a non-UTF-8 name
            fh.create_dataset("vectors", data=_matrix(records, int(manifest["dim"])))
            fh.attrs["manifest"] = json.dumps(manifest)
            fh.create_dataset("records", data=json.dumps(doc["records"], ensure_ascii=False))
            fh.create_dataset("edges", data=json.dumps(doc["edges"]))

    def read(self, path: Path) -> Loaded:
        from latentmem.store.formats.hdf5 import read_hdf5

        vectors, texts = read_hdf5(path)
        doc = {key: parse_json(text, f"{path}: {key}") for key, text in texts.items()}
        return _from_doc(doc, vectors, str(path))


class PickleFormat:
    name = "pickle"
    single_file = True

    def write(self, path: Path, manifest: dict[str, Any], records: list[Record],
              edges: list[Edge]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = _doc(manifest, records, edges)
        doc["vectors"] = _matrix(records, int(manifest["dim"]))
        path.write_bytes(pickle.dumps(doc, protocol=pickle.HIGHEST_PROTOCOL))

    def read(self, path: Path) -> Loaded:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise unreadable(path, exc) from exc
        doc = safe_loads(data, str(path))
        if not isinstance(doc, dict) or "vectors" not in doc:
            raise InvalidInputError(f"{path}: expected a dict with manifest, records and vectors")
        return _from_doc(doc, doc["vectors"], str(path))


class JsonlFormat:
    name = "jsonl"
    single_file = True

    def write(self, path: Path, manifest: dict[str, Any], records: list[Record],
              edges: list[Edge]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"manifest": manifest}) + "\n")
            for rec in records:
                row = record_to_dict(rec)
                vec = ",".join(_float_text(x) for x in np.asarray(rec.vector, np.float32))
                fh.write(json.dumps({"record": row}, ensure_ascii=False)[:-1]
                         + f', "vector": [{vec}]}}\n')
            for edge in edges:
                fh.write(json.dumps({"edge": edge_to_dict(edge)}) + "\n")

    def read(self, path: Path) -> Loaded:
        manifest: Any = None
        raw: list[Any] = []
        vectors: list[list[float]] = []
        edges: list[Any] = []
        for line_no, line in _lines(path):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            item = parse_json(line, where)
            kind = sorted(item) if isinstance(item, dict) else None
            if kind == ["manifest"] and manifest is None:
                manifest = item["manifest"]
            elif kind == ["record", "vector"]:
                raw.append(item["record"])
                vectors.append(_numbers(item["vector"], where))
            elif kind == ["edge"]:
                edges.append(item["edge"])
            else:
                raise InvalidInputError(f"{where}: expected one object with 'manifest' (once), "
                                        f"'record' and 'vector', or 'edge'; found "
                                        f"{kind if kind is not None else type(item).__name__}")
        doc = {"manifest": manifest, "records": raw, "edges": edges}
        return _from_doc(doc, _rows(vectors, str(path)), str(path))


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines, read as they come; split at line ends only (not at U+2028, which a
    JSON text may hold as it is)."""
    try:
        with open(path, encoding="utf-8") as fh:
            yield from enumerate(fh, start=1)
    except OSError as exc:
        raise unreadable(path, exc) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _numbers(value: Any, where: str) -> list[float]:
    if not isinstance(value, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise InvalidInputError(f"{where}: vector must be a list of numbers")
    try:
        return [float(x) for x in value]
    except OverflowError as exc:
        raise InvalidInputError(f"{where}: vector holds a number too large for a float") from exc


def _rows(rows: list[list[float]], source: str) -> np.ndarray:
    """Rows of numbers as a float32 matrix; ragged rows are refused."""
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise InvalidInputError(f"{source}: vectors have different lengths {sorted(widths)[:5]}")
    with np.errstate(over="ignore"):  # too large for float32: inf, refused with the record
        return np.array(rows, dtype=np.float32).reshape(len(rows), widths.pop() if rows else 0)


MAX_NPY_HEADER = 10_000


def read_npy(path: Path) -> np.ndarray:
    """A 2-D float32 ``.npy`` file, its header checked before any data is read."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
            if len(magic) < 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2):
                raise InvalidInputError(f"{path}: not a version 1 or 2 .npy file")
            size_bytes = fh.read(2 if magic[6] == 1 else 4)
            (header_len,) = struct.unpack("<H" if magic[6] == 1 else "<I", size_bytes)
            if header_len > MAX_NPY_HEADER:
                raise InputTooLargeError(f"{path}: a .npy header of {header_len} bytes; expected "
                                         f"at most {MAX_NPY_HEADER}")
            fh.seek(0)
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            if dtype.kind != "f" or dtype.itemsize != 4 or len(shape) != 2:
                raise InvalidInputError(f"{path}: holds {dtype} of shape {shape}; expected a "
                                        "2-D float32 array")
            need = math.prod(shape) * 4
            held = os.fstat(fh.fileno()).st_size - fh.tell()
            if held != need:
                raise InvalidInputError(f"{path}: the header says shape {shape} ({need} bytes); "
                                        f"the file holds {held} bytes of data")
            data = fh.read(need)
    except OSError as exc:
        raise unreadable(path, exc) from exc
    except (ValueError, SyntaxError, TypeError, struct.error, RecursionError, MemoryError,
            tokenize.TokenError) as exc:  # numpy tokenizes a version 1 header
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"{path}: not a readable .npy file ({str(exc)[:200]})") from exc
    if len(data) != need:
        raise InvalidInputError(f"{path}: changed while it was read")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


FORMATS: dict[str, Format] = {
    f.name: f for f in (CsvFormat(), NpyFormat(), Hdf5Format(), PickleFormat(), JsonlFormat())
}
