"""Import and export: record formats (exact round trip) and conversation formats.

``export_memory``/``import_into`` move records with their vectors and edges
through one of ``FORMATS`` (csv, npy, hdf5, pickle, jsonl; see ``files.py``
for what the path names). ``import_conversation`` turns a LoCoMo file or plain
chat JSON into memories through ``Memory.add``, embedding on the way.
An import is one transaction: a file that fails anywhere imports nothing.
Every failure that a file can cause (missing, unreadable, malformed, cut
short, hostile) is an ``InvalidInputError`` (or its ``UnsafeDataError`` and
``InputTooLargeError``), and ``ConflictError`` when the file is sound but clashes
with the store; tests/reliability/test_hostile_files.py holds them to that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentmem.errors import InvalidInputError
from latentmem.store.formats.conversations import CONVERSATION_FORMATS, Progress
from latentmem.store.formats.files import FORMATS, Format, unreadable
from latentmem.store.formats.records import check_counts, check_manifest, manifest

__all__ = [
    "CONVERSATION_FORMATS",
    "FORMATS",
    "Format",
    "export_memory",
    "import_conversation",
    "import_into",
]


def _format(name: str) -> Format:
    if name not in FORMATS:
        raise InvalidInputError(f"unknown format {name!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[name]


def export_memory(memory: Any, path: str | Path, format: str, user_id: str | None = None) -> int:
    fmt = _format(format)
    records, edges = memory.export_rows(user_id)
    man = manifest(memory.store.get_meta("embedder") or memory.embedder.name, memory.dim,
                   len(records), len(edges))
    fmt.write(Path(path), man, records, edges)
    return len(records)


def import_into(memory: Any, path: str | Path, format: str, on_conflict: str = "error",
                user_id: str | None = None) -> int:
    fmt = _format(format)
    path = Path(path)
    if not path.exists():
        raise unreadable(path, FileNotFoundError())
    if fmt.single_file and path.is_dir():
        raise InvalidInputError(f"{path} is a directory; the {format} format is one file")
    if not fmt.single_file and not path.is_dir():
        raise InvalidInputError(f"{path} must be a directory for the {format} format")
    records, edges, man = fmt.read(path)
    check_manifest(man, memory.store.get_meta("embedder") or memory.embedder.name, memory.dim,
                   str(path))
    check_counts(man, len(records), len(edges), str(path))
    seen: set[str] = set()
    for pos, rec in enumerate(records):
        if rec.id in seen:
            raise InvalidInputError(f"{path}: record {pos} repeats the id {rec.id!r}; expected "
                                    "each id once")
        seen.add(rec.id)
    if user_id is not None:
        records = [r for r in records if r.user_id == user_id]
        keep = {r.id for r in records}
        edges = [e for e in edges if e.src in keep and e.dst in keep]
    return int(memory.import_records(records, edges, on_conflict=on_conflict))


def import_conversation(memory: Any, path: str | Path, format: str = "locomo",
                        user_id: str | None = None, progress: Progress | None = None) -> int:
    if format not in CONVERSATION_FORMATS:
        raise InvalidInputError(
            f"unknown conversation format {format!r}; expected one of {sorted(CONVERSATION_FORMATS)}"
        )
    return CONVERSATION_FORMATS[format](memory, Path(path), user_id=user_id, progress=progress)
