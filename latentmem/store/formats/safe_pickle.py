"""Loading pickles without running anyone's code.

``pickle`` calls whatever callable a file names, so a pickle from elsewhere
can run ``os.system``. This unpickler resolves only the few numpy callables
that rebuild an array (protocols 2 to 5) and nothing else; plain data (dict,
list, str, bytes, numbers, bool, None) needs no lookup at all. Anything else
raises ``UnsafeDataError`` before it can be called.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from latentmem.errors import InvalidInputError, UnsafeDataError

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.dtypes", "Float32DType"),
    ("numpy.dtypes", "Float64DType"),
    ("numpy.dtypes", "Int64DType"),
}


def _latin1_bytes(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Protocol 2 spells raw bytes as ``_codecs.encode(str, 'latin1')``; admit that use only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafeDataError("refusing a codecs.encode call other than latin1 bytes in a pickle")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("_codecs", "encode"), ("codecs", "encode")):
            return _latin1_bytes
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafeDataError(
            f"refusing to load {module}.{name} from a pickle: only plain data and numpy "
            "arrays are allowed"
        )


def safe_loads(data: bytes, source: str = "pickle") -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafeDataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, ImportError, MemoryError) as exc:
        raise InvalidInputError(f"{source}: not a readable pickle ({exc})") from exc
