"""Reading an HDF5 export that may be hostile.

An export holds three datasets (``vectors``, float32 rows; ``records`` and
``edges``, one JSON string each) and a ``manifest`` attribute (a JSON string).

The file is parsed by the HDF5 C library in a child process (this module, run as
a script) with its address space limited to ``BASE_MB`` plus three times the
file's size and its time to ``TIMEOUT_S`` plus a second per 10 MB. The child
writes the vectors as ``.npy`` and the three texts as files; the parent reads
those with its own hardened readers. Why a child: the library trusts the sizes a
file declares. Fuzzing (latentmem/bench/hostile_files.py) found that shifting a
few bytes of a valid export makes it allocate and fill up to 4 GB for one
variable-length string (the length comes from the file, unchecked), from a 13 kB
file; and the C library's history of crashes on malformed files is long. A
crash, a kill or a failed allocation in the child is one ``InvalidInputError``
in the parent, and the parent's memory never holds more than the results.
Rejected: checking each size field before the library reads it (the dataset's
16-byte string reference can be read, the attribute's cannot, and the next such
field would be found by the next fuzzer); a memory limit in the parent's own
process (it would bind the whole application).

Inside the child, each object is checked before a byte of it is read:

* it is a dataset under a hard link: an external or soft link would open
  another file, or another object, than the one given;
* its raw data lies in the file: neither external raw storage (a dataset whose
  bytes are some other file on this machine, read into the store as vectors)
  nor a virtual dataset (the same, through a mapping);
* it has no filters (latentmem writes none): a compressed dataset can expand
  far beyond the file, and an unknown filter makes the library look for a
  plugin to load;
* the bytes it declares are the bytes it stores and no more than the file's
  size: a dataset created and never written reads back as gigabytes of fill
  values from a file of a few kilobytes.

This module imports only the standard library and numpy at the top, so that the
child starts without the rest of latentmem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

BASE_MB = 512
TIMEOUT_S = 30.0
TEXTS = ("manifest", "records", "edges")
_REFUSED = 2  # the child's exit status when it refused the file (its reason in refused.json)


class Refused(Exception):
    """The child's refusal, raised again in the parent as a ``LatentMemError``."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def read_hdf5(path: Path) -> tuple[np.ndarray, dict[str, bytes]]:
    """The vectors and the three JSON texts (``manifest``, ``records``, ``edges``),
    read by a child process (see the module's doc)."""
    from latentmem.errors import InputTooLargeError, InvalidInputError
    from latentmem.store.formats.files import read_npy, unreadable

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise unreadable(path, exc) from exc
    limit = BASE_MB * 2**20 + 3 * size
    timeout = TIMEOUT_S + size / 10e6
    with tempfile.TemporaryDirectory(prefix="latentmem-hdf5-") as tmp:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        try:
            done = subprocess.run([sys.executable, "-I", __file__, str(path), tmp, str(limit)],
                                  capture_output=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise InvalidInputError(f"{path}: reading it took more than {timeout:.0f} s; "
                                    "expected a latentmem HDF5 export") from exc
        except OSError as exc:
            raise InvalidInputError(f"{path}: could not start a process to read it "
                                    f"({exc})") from exc
        out = Path(tmp)
        if done.returncode == _REFUSED and (out / "refused.json").exists():
            reason = json.loads((out / "refused.json").read_text(encoding="utf-8"))
            error = InputTooLargeError if reason["too_large"] else InvalidInputError
            raise error(reason["message"])
        if done.returncode != 0:
            last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
            if "MemoryError" in last:
                raise InputTooLargeError(f"{path}: reading it needed more than "
                                         f"{limit / 2**20:.0f} MB; expected an export whose "
                                         "parts are no larger than the file")
            raise InvalidInputError(f"{path}: the HDF5 library could not read it (exit status "
                                    f"{done.returncode}{': ' + last[:200] if last else ''})")
        vectors = read_npy(out / "vectors.npy")
        return vectors, {name: (out / f"{name}.json").read_bytes() for name in TEXTS}


def extract(path: Path, out: Path) -> None:
    """The child's work: check the file's objects, then write what they hold to ``out``."""
    import h5py

    size = path.stat().st_size
    try:
        with h5py.File(os.fsencode(path), "r") as fh:
            vectors = _dataset(h5py, fh, "vectors", size, path)
            if vectors.dtype.kind != "f" or vectors.dtype.itemsize != 4 or vectors.ndim != 2:
                raise Refused(f"{path}: vectors hold {vectors.dtype} of shape "
                              f"{vectors.shape}; expected a 2-D float32 array")
            texts = {"manifest": _manifest(h5py, fh, size, path)}
            for name in TEXTS[1:]:
                dataset = _dataset(h5py, fh, name, size, path)
                if dataset.shape != () or h5py.check_string_dtype(dataset.dtype) is None:
                    raise Refused(f"{path}: {name} is {dataset.dtype} of shape "
                                  f"{dataset.shape}; expected one JSON string")
                texts[name] = dataset[()]
            np.save(out / "vectors.npy", np.asarray(vectors[()]), allow_pickle=False)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
        raise Refused(f"{path}: not a readable latentmem HDF5 file "
                      f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    for name, text in texts.items():
        data = text if isinstance(text, bytes) else str(text).encode("utf-8", "surrogatepass")
        (out / f"{name}.json").write_bytes(data)


def _dataset(h5py: Any, fh: Any, name: str, size: int, path: Path) -> Any:
    link = fh.get(name, getlink=True)
    if link is None:
        raise Refused(f"{path}: no '{name}' dataset")
    if not isinstance(link, h5py.HardLink):
        raise Refused(f"{path}: '{name}' is a {type(link).__name__}; expected a dataset "
                      "stored in the file itself")
    obj = fh[name]
    if not isinstance(obj, h5py.Dataset):
        raise Refused(f"{path}: '{name}' is a {type(obj).__name__}; expected a dataset")
    plist = obj.id.get_create_plist()
    if plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT) \
            or plist.get_external_count() > 0:
        raise Refused(f"{path}: '{name}' keeps its data outside the file or in chunks; "
                      "expected contiguous data in the file (as latentmem writes it)")
    if plist.get_nfilters() > 0:
        raise Refused(f"{path}: '{name}' is compressed or filtered; expected plain data "
                      "(latentmem writes no filters)")
    string = h5py.check_string_dtype(obj.dtype)
    if string is not None and string.length is None:
        return obj  # variable-length: the text itself lies in the file's heap
    declared = obj.size * obj.dtype.itemsize
    stored = obj.id.get_storage_size()
    if declared > size or stored != declared:
        raise Refused(f"{path}: '{name}' declares {declared} bytes and stores {stored}, in "
                      f"a file of {size}; expected the data itself", too_large=True)
    return obj


def _manifest(h5py: Any, fh: Any, size: int, path: Path) -> Any:
    if "manifest" not in fh.attrs:
        raise Refused(f"{path}: no 'manifest' attribute")
    attr = fh.attrs.get_id("manifest")
    if attr.get_storage_size() > size:
        raise Refused(f"{path}: the manifest declares {attr.get_storage_size()} bytes in a "
                      f"file of {size}", too_large=True)
    if attr.shape != () or h5py.check_string_dtype(attr.dtype) is None:
        raise Refused(f"{path}: the manifest is {attr.dtype} of shape {attr.shape}; "
                      "expected one JSON string")
    return fh.attrs["manifest"]


def _child(argv: list[str]) -> int:
    path, out, limit = Path(argv[0]), Path(argv[1]), int(argv[2])
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # no such limit here (Windows): still a process of its own
    try:
        extract(path, out)
    except Refused as exc:
        (out / "refused.json").write_text(json.dumps(
            {"message": str(exc), "too_large": exc.too_large}), encoding="utf-8")
        return _REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
