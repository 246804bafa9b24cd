"""The record formats: CSV+JSON, NumPy+JSON, HDF5, Pickle and JSONL.

What ``path`` names:

* ``csv``: a directory holding ``vectors.csv`` (``id`` then one column per
  dimension) and ``records.json`` (manifest, records, edges).
* ``npy``: a directory holding ``vectors.npy`` (float32, rows in the order of
  ``records.json``) and ``records.json``.
* ``hdf5``, ``pickle``, ``jsonl``: one file.

Every format carries the same manifest (format version, embedder, dimension,
count) and the edges. Vectors are float32 everywhere; the text formats write
each float32 as the shortest decimal that reads back to the same float32, so
the round trip is bit-exact.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from latentmem.errors import InvalidInputError
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
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(raw):
        raise InvalidInputError(
            f"{source}: {len(raw)} records but vectors of shape {tuple(vectors.shape)}"
        )
    if vectors.dtype != np.float32:
        raise InvalidInputError(f"{source}: vectors must be float32, found {vectors.dtype}")
    records = [
        record_from_dict(data, vectors[i].copy(), f"{source}: record {i}")
        for i, data in enumerate(raw)
    ]
    edges = [
        edge_from_dict(e, f"{source}: edge {i}") for i, e in enumerate(doc.get("edges") or [])
    ]
    return records, edges, doc["manifest"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: not valid JSON ({exc})") from exc


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
        try:
            with open(path / "vectors.csv", newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                next(reader, None)
                for row in reader:
                    ids.append(row[0])
                    rows.append([float(x) for x in row[1:]])
        except (ValueError, IndexError, UnicodeDecodeError, csv.Error) as exc:
            raise InvalidInputError(f"{path / 'vectors.csv'}: unreadable ({exc})") from exc
        if len({len(r) for r in rows}) > 1:
            raise InvalidInputError(f"{path / 'vectors.csv'}: rows have different lengths")
        vectors = np.array(rows, dtype=np.float32).reshape(len(rows), -1)
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
        try:
            vectors = np.load(path / "vectors.npy", allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise InvalidInputError(f"{path / 'vectors.npy'}: unreadable ({exc})") from exc
        return _from_doc(doc, vectors, str(path))


class Hdf5Format:
    name = "hdf5"
    single_file = True

    def write(self, path: Path, manifest: dict[str, Any], records: list[Record],
              edges: list[Edge]) -> None:
        import h5py

        path.parent.mkdir(parents=True, exist_ok=True)
        doc = _doc(manifest, records, edges)
        with h5py.File(path, "w") as fh:
            fh.create_dataset("vectors", data=_matrix(records, int(manifest["dim"])))
            fh.attrs["manifest"] = json.dumps(manifest)
            fh.create_dataset("records", data=json.dumps(doc["records"], ensure_ascii=False))
            fh.create_dataset("edges", data=json.dumps(doc["edges"]))

    def read(self, path: Path) -> Loaded:
        import h5py

        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        try:
            with h5py.File(path, "r") as fh:
                vectors = np.asarray(fh["vectors"][()])
                doc = {
                    "manifest": json.loads(fh.attrs["manifest"]),
                    "records": json.loads(fh["records"][()]),
                    "edges": json.loads(fh["edges"][()]),
                }
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise InvalidInputError(f"{path}: not a readable latentmem HDF5 file ({exc})") from exc
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
        doc = safe_loads(path.read_bytes(), str(path))
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
        try:
            with open(path, encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if not isinstance(item, dict):
                        raise InvalidInputError(f"{path}:{line_no}: expected a JSON object")
                    if "manifest" in item:
                        manifest = item["manifest"]
                    elif "record" in item:
                        raw.append(item["record"])
                        vectors.append([float(x) for x in item["vector"]])
                    elif "edge" in item:
                        edges.append(item["edge"])
                    else:
                        raise InvalidInputError(f"{path}:{line_no}: unknown line kind")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"{path}: not valid latentmem JSONL ({exc})") from exc
        if len({len(v) for v in vectors}) > 1:
            raise InvalidInputError(f"{path}: vectors have different lengths")
        matrix = np.array(vectors, dtype=np.float32).reshape(len(vectors), -1)
        doc = {"manifest": manifest, "records": raw, "edges": edges}
        return _from_doc(doc, matrix, str(path))


FORMATS: dict[str, Format] = {
    f.name: f for f in (CsvFormat(), NpyFormat(), Hdf5Format(), PickleFormat(), JsonlFormat())
}
