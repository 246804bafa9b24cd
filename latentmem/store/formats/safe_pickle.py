"""Loading pickles without running anyone's code.

``pickle`` calls whatever callable a file names, so a pickle from elsewhere
can run ``os.system``. This unpickler names nothing real: the few numpy names an
array's pickle uses (protocols 2 to 5) resolve to stand-ins written here, and
every other name raises ``UnsafeDataError`` before anything can be called. Plain
data (dict, list, str, numbers, bool, None) needs no lookup at all.

Why stand-ins and not numpy's own callables: a pickle that may call
``numpy.ndarray`` or ``_reconstruct`` with a shape of its choosing allocates what
it likes, and one that hands ``dtype.__setstate__`` or ``ndarray.__setstate__`` a
crafted tuple crashes the interpreter (numpy 2.4 segfaults on some dtype states).
The stand-ins accept only what numpy's own pickles of a plain numeric array hold
(a dtype such as ``f4`` with its byte order, a shape, and exactly the bytes that
shape needs) and build the array with ``numpy.frombuffer``; the data never reaches
a numpy ``__setstate__``.

Before the unpickler runs, ``pickletools.genops`` walks the opcodes in Python: a
length field that claims more bytes than the file holds is refused there. The C
unpickler allocates what a BYTEARRAY8 claims, and on one such claim (7.2e18
bytes) CPython 3.11 prints "SystemError: deallocated bytearray object has
exported buffers" to stderr on its own, whatever the caller catches.

``plain_data`` then walks what was loaded, without recursion and within a budget
tied to the file's size: memo references let a few bytes of pickle name the same
list a billion times over (a "billion laughs" bomb), or a list that holds itself.
A shared container counts each time it is met, so the walk ends as soon as what
the data would expand to (in JSON, in the store) outgrows the file, and a list
that holds itself ends at ``MAX_DEPTH``. Rejected: refusing any container met
twice, which also refuses honest data that shares a dict between two records.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from typing import Any

import numpy as np

from latentmem.errors import InputTooLargeError, InvalidInputError, UnsafeDataError
from latentmem.inputs import MAX_METADATA_DEPTH

_DTYPES = frozenset({"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"})
_PLAIN_STATE = (None, None, None, -1, -1, 0)
MAX_DEPTH = MAX_METADATA_DEPTH + 8  # an export's metadata lies 4 levels down its document


class _ArrayClass:
    """What ``numpy.ndarray`` resolves to: an argument of ``_reconstruct``, not a callable."""

    __slots__ = ()


_NDARRAY = _ArrayClass()


class _DType:
    """A plain numeric dtype named by a pickle, with the byte order its state gives."""

    __slots__ = ("code", "order")

    def __init__(self, code: object, align: object = False, copy: object = False) -> None:
        if not isinstance(code, str) or code not in _DTYPES:
            raise UnsafeDataError(
                f"refusing dtype {code!r} in a pickle: only plain numeric arrays are allowed "
                f"({', '.join(sorted(_DTYPES))})"
            )
        self.code = code
        self.order = "="

    def __setstate__(self, state: object) -> None:
        if (not isinstance(state, tuple) or len(state) != 8 or state[0] not in (3, 4)
                or state[1] not in ("<", ">", "|", "=") or state[2:] != _PLAIN_STATE):
            raise UnsafeDataError(f"refusing a dtype state {_short(state)} in a pickle: "
                                  "expected a plain numeric dtype's")
        self.order = state[1]

    def real(self) -> np.dtype:
        dt = np.dtype(self.code)
        return dt.newbyteorder("<" if self.order == "<" else ">") if self.order in "<>" else dt


def _shape(value: object) -> tuple[int, ...]:
    if (not isinstance(value, tuple) or len(value) > 8
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)):
        raise InvalidInputError(f"expected an array shape (a tuple of sizes), found {_short(value)}")
    return value


def _array(raw: object, dtype: object, shape: object, fortran: bool) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise UnsafeDataError(f"refusing an array of {_short(dtype)} in a pickle")
    dims = _shape(shape)
    dt = dtype.real()
    if isinstance(raw, pickle.PickleBuffer):
        raw = raw.raw().tobytes()
    if not isinstance(raw, bytes | bytearray):
        raise InvalidInputError(f"expected an array's bytes, found {type(raw).__name__}")
    need = math.prod(dims) * dt.itemsize
    if len(raw) != need:
        raise InvalidInputError(f"an array of shape {dims} needs {need} bytes; the pickle "
                                f"holds {len(raw)}")
    return np.frombuffer(bytes(raw), dtype=dt).reshape(dims, order="F" if fortran else "C").copy()


class _Array:
    """What ``_reconstruct`` returns: an empty array that the pickle's BUILD fills, once."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if self.array is not None or not isinstance(state, tuple) or len(state) != 5 \
                or state[0] != 1 or not isinstance(state[3], bool):
            raise UnsafeDataError(f"refusing an array state {_short(state)} in a pickle")
        self.array = _array(state[4], state[2], state[1], state[3])


def _reconstruct(cls: object, shape: object, typecode: object) -> _Array:
    if cls is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise UnsafeDataError(f"refusing _reconstruct({_short(cls)}, {_short(shape)}, "
                              f"{_short(typecode)}) in a pickle: not a plain array's pickle")
    return _Array()


def _frombuffer(buf: object, dtype: object, shape: object, order: object) -> _Array:
    if order not in ("C", "F"):
        raise InvalidInputError(f"expected array order 'C' or 'F', found {_short(order)}")
    out = _Array()
    out.array = _array(buf, dtype, shape, order == "F")
    return out


def _scalar(dtype: object, data: object) -> Any:
    return _array(data, dtype, (), False).item()


def _latin1_bytes(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Protocol 2 spells raw bytes as ``_codecs.encode(str, 'latin1')``; admit that use only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafeDataError("refusing a codecs.encode call other than latin1 bytes in a pickle")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    """Protocols 0 to 2 spell ``b""`` as ``bytes()``; admit that call only."""
    if args:
        raise UnsafeDataError("refusing a bytes() call with arguments in a pickle")
    return b""


_STAND_INS: dict[tuple[str, str], Any] = {
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DType,
    ("_codecs", "encode"): _latin1_bytes,
    ("codecs", "encode"): _latin1_bytes,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer for core in ("core", "_core")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _STAND_INS:
            return _STAND_INS[(module, name)]
        raise UnsafeDataError(
            f"refusing to load {module}.{name} from a pickle: only plain data and numpy "
            "arrays are allowed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeDataError("refusing a persistent id in a pickle: only plain data is allowed")


def _short(value: object) -> str:
    text = repr(value) if isinstance(value, str | bytes | int | float | tuple | None) \
        else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def safe_loads(data: bytes, source: str = "pickle") -> Any:
    """The plain data a pickle holds, its arrays as numpy arrays (see the module's doc)."""
    try:
        for _ in pickletools.genops(data):
            pass
    except (ValueError, KeyError, IndexError, OverflowError) as exc:
        raise InvalidInputError(f"{source}: not a readable pickle ({_clip(str(exc))})") from exc
    try:
        raw = _RestrictedUnpickler(io.BytesIO(data)).load()
    except InvalidInputError as exc:
        raise type(exc)(f"{source}: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, ImportError, MemoryError, OverflowError, RecursionError) as exc:
        raise InvalidInputError(f"{source}: not a readable pickle "
                                f"({type(exc).__name__}: {_clip(str(exc))})") from exc
    return plain_data(raw, source, budget=4 * len(data) + (1 << 20))


def _clip(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."


def plain_data(value: Any, source: str, budget: int) -> Any:
    """``value`` rebuilt from fresh dicts and lists, arrays as ndarrays; refuses any other
    type, nesting deeper than ``MAX_DEPTH`` and more than ``budget`` nodes plus characters
    (a shared container counted each time it is met)."""
    spent = 0
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 0)]
    while stack:
        item, parent, key, depth = stack.pop()
        spent += 1 + (len(item) if isinstance(item, str | bytes) else 0)
        if spent > budget:
            raise InputTooLargeError(f"{source}: the pickle expands to more than {budget} "
                                     "items and characters (shared references repeat what "
                                     "they name); expected plain data no larger than the file")
        if isinstance(item, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise InvalidInputError(f"{source}: data nested deeper than {MAX_DEPTH} levels, "
                                        "or a list or dict that holds itself")
        if isinstance(item, dict):
            out: Any = {}
            for k, v in item.items():
                if not isinstance(k, str):
                    raise InvalidInputError(f"{source}: expected string keys, found "
                                            f"{type(k).__name__}")
                out[k] = None
                stack.append((v, out, k, depth + 1))
        elif isinstance(item, list | tuple):
            out = [None] * len(item)
            stack.extend((v, out, i, depth + 1) for i, v in enumerate(item))
        elif isinstance(item, _Array):
            if item.array is None:
                raise InvalidInputError(f"{source}: an array without its data")
            out = item.array
        elif item is None or isinstance(item, str | bool | int | float):
            out = item
        else:
            raise UnsafeDataError(f"{source}: found {type(item).__name__}; expected plain "
                                  "data (dict, list, str, number, bool, None) and arrays")
        parent[key] = out
    return root[0]
