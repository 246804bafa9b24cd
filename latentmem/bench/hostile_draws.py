"""What ``hostile_input`` draws: Hypothesis strategies for one hostile call to the SDK or
the CLI.

Each strategy mixes the hostile (NUL, lone surrogates, RTL and combining marks, path
separators, 1 MB texts, metadata nested thousands deep or cyclic, NaN and wrong-sized
vectors, times out of range, ids that are not strings) with valid values, so that some
calls pass their checks and reach the store, and the store then holds memories for later
calls to aim at: ``Known(n)`` stands for the id of the n-th memory present when the call
runs (Hypothesis draws before the call, when the ids are not known yet).

Weights are by repetition (``_weighted``): Hypothesis's ``one_of`` draws its branches
evenly, and a 1 MB text in every other call would make the run slow without making it
more hostile. Built only when a run starts: Hypothesis is a ``dev`` extra.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import numpy as np

from latentmem.types import Record

DIM = 64  # the hash embedder's
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
SHORT = reprlib.Repr()
SHORT.maxstring, SHORT.maxother, SHORT.maxlevel, SHORT.maxlist, SHORT.maxdict = 80, 80, 3, 4, 4

NASTY = (
    "\x00", "\ud800", "\udfff", "\udcff", "\ud83d", "\u202e", "\u200f", "\u061c",
    "مرحبا بالعالم", "שלום עולם", "e\u0301\u0302\u0303", "\u0300" * 40, "\u200b", "\ufeff",
    "\u2028", "\r\n", "\x1b[31m", "/", "..", "../../etc/passwd", "\\", "C:\\Windows\\",
    "%s%n", "' OR 1=1 --", '"', "NEAR(", "*", " AND ", "-", "{}", "😀", "\U0010ffff",
    "\uffff", " ", "\t", "\x7f", "ǅ", "ﷺ", "\U000e0001",
)
PATHS = ("a/b", "..", "../..", "/", "u/../v", "a\\b", "./u", "~", "/etc/passwd", "a\x00b", "",
         "   ", "\ud800", "u\u202e", "x" * 257)
PLAIN = ("hello there", "I moved to Lisbon in May", "Ana likes green tea",
         "the meeting is on Friday because Bo is away", "بيت", "naïve café", "x")
COMMANDS = ("add", "search", "context", "get", "history", "explain", "demote", "undo", "delete",
            "merge", "keys", "import", "export", "topics", "stats", "sleep")
JUNK: tuple[Any, ...] = (None, True, False, -1, 0, 10**30, math.nan, math.inf, -0.0, b"bytes",
                         bytearray(b"x"), [1, 2], {"a": 1}, (), {1, 2}, 1j, date(2020, 1, 1))


@dataclass(frozen=True)
class Known:
    """The id of the ``n``-th memory present when the call runs (modulo their number)."""

    n: int


class Call:
    """One drawn call. Its repr is cut short: drawn values may be cyclic or 100,000 deep."""

    def __init__(self, surface: str, op: str, args: Any) -> None:
        self.surface = surface  # "sdk" or "cli"
        self.op = op  # a Memory method, or the CLI's command
        self.args = args  # kwargs for the method, or (argv, stdin text)

    def __repr__(self) -> str:
        return f"{self.surface} {self.op} {SHORT.repr(self.args)}"


def _weighted(st: Any, *pairs: tuple[Any, int]) -> Any:
    return st.sampled_from([s for s, w in pairs for _ in range(w)]).flatmap(lambda s: s)


def _repeat(unit: str, n: int) -> str:
    return (unit * (n // max(len(unit), 1) + 1))[:n]


def deep(depth: int, kind: str) -> Any:
    """Metadata ``depth`` dicts (or lists) deep: built without recursion, as no encoder is."""
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value} if kind == "dict" else [value]
    return {"deep": value}


def cyclic(kind: str) -> dict[str, Any]:
    """Metadata that holds itself, directly (``dict``) or through a list inside it."""
    top: dict[str, Any] = {"k": 1}
    if kind == "dict":
        top["self"] = top
    else:
        inner: list[Any] = [1]
        inner.append(inner)
        top["list"] = inner
    return top


def _record(id: Any, user: Any, text: Any, vector: Any, meta: Any, created: Any,
            extra: dict[str, Any]) -> Record:
    rec = Record(id=id, user_id=user, text=text, metadata=meta, created_at=created,
                 updated_at=created, vector=vector)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def build(st: Any) -> Any:
    """The strategy of one ``Call``: an SDK method's arguments drawn valid, except for none,
    one or two of them drawn hostile (so that a refusal names its cause, and a third of the
    calls get through); or a command line."""
    junk = st.sampled_from(JUNK) | st.builds(object)
    piece = st.sampled_from(NASTY) | st.text(st.characters(exclude_categories=()), max_size=12)
    short = st.lists(piece, max_size=8).map("".join)
    huge = st.builds(_repeat, st.sampled_from(["x", "word ", "\u0301", "مرحبا ", "a\x00", "\ud800"]),
                     st.sampled_from([257, 100_001, 1_000_000, 1 << 20]))
    fine_piece = st.sampled_from([p for p in NASTY if p.strip() and "\x00" not in p
                                  and not any("\ud800" <= c <= "\udfff" for c in p)])
    fine = st.lists(fine_piece | st.text(st.characters(exclude_characters="\x00"), max_size=12)
                    | st.sampled_from(PLAIN), min_size=1, max_size=6).map(" ".join).filter(
        lambda t: bool(t.strip()))
    text_ok = _weighted(st, (fine, 6), (st.sampled_from(PLAIN), 3),
                        (st.builds(_repeat, st.sampled_from(["word ", "e\u0301 ", "שלום "]),
                                   st.sampled_from([2_000, 20_000])), 1))
    text_bad = _weighted(st, (short, 6), (huge, 2), (junk, 1), (st.sampled_from(["", " \n"]), 1))

    scope_ok = st.sampled_from(["u", "u", "u", "ana", "acme:ana", "a/b", "..", "../..", "/",
                                "u/../v", "a\\b", "~", "שלום", "e\u0301"])
    scope_bad = _weighted(st, (st.sampled_from(PATHS), 3), (short, 2), (junk, 1),
                          (st.builds(_repeat, st.just("x"), st.just(1_000_000)), 1))
    known = st.builds(Known, st.integers(0, 1000))
    id_bad = _weighted(st, (st.just(UNKNOWN_ID), 1), (short, 3), (st.sampled_from(PATHS), 1),
                       (junk, 1), (huge, 1))
    ids_ok = st.lists(known, min_size=1, max_size=3) | known
    ids_bad = _weighted(st, (st.lists(known | id_bad, max_size=4), 3), (id_bad, 2), (junk, 1))
    count_bad = _weighted(st, (st.sampled_from([0, -1, 1001, 10**6, 10**30, -(10**30)]), 3),
                          (st.floats(), 1), (junk, 1), (st.just("5"), 1))
    flag_ok = st.booleans()

    offset = st.sampled_from([timezone(timedelta(hours=h)) for h in (-14, -5, 0, 5, 14)])
    when_ok = st.sampled_from(["2023-05-08T13:56:00Z", "2023-05-08", "1:56 pm on 8 May, 2023",
                               1683554160, datetime(2023, 5, 8, tzinfo=UTC), date(2020, 2, 29),
                               "2024-02-29T23:59:59+14:00"])
    when_bad = _weighted(st, (st.sampled_from([
        "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "0001-01-01", "9999-12-31",
        "2023-13-45", "0000-00-00", "2023-05-08T25:61", "yesterday", "1:56 pm on 31 February, 2023",
        "2023-05-08T13:56\x00", "2023-05-08\ud800", "+002023-05-08", "\u0662\u0660\u0662\u0663-05-08",
        253402300800, -62135596800, date.min, date.max]), 4), (short, 1),
        (st.builds(datetime.replace, st.sampled_from([datetime.min, datetime.max]), tzinfo=offset), 1),
        (st.floats() | st.integers(-(2**70), 2**70), 2), (junk, 1))

    json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) \
        | st.floats(allow_nan=False, allow_infinity=False) | fine
    meta_ok = st.dictionaries(fine, st.recursive(json_leaf, lambda c: st.lists(c, max_size=3)
                                                 | st.dictionaries(fine, c, max_size=3),
                                                 max_leaves=8), max_size=4)
    meta_bad = _weighted(st, (st.sampled_from([
        {"x": math.nan}, {"x": [math.inf]}, {1: "a"}, {(1, 2): 1}, {"a": {1, 2}}, {"a": b"x"},
        {"a": np.float32(1)}, {"\x00": 1}, {"a": "\ud800"}, {"\udcff": "a"}, {"a": "b\x00"},
        {"a": 10**30}, {"a": 10**5000}, [1], "x", 5]), 4),
        (st.builds(deep, st.sampled_from([100, 101, 999, 1000, 5000, 100_000]),
                   st.sampled_from(["dict", "list"])), 2),
        (st.builds(cyclic, st.sampled_from(["dict", "list"])), 1), (junk, 1))

    vector_ok = st.lists(st.floats(-1, 1), min_size=DIM, max_size=DIM).filter(any) \
        | st.just(np.arange(1, DIM + 1, dtype=np.float64))
    vector_bad = _weighted(
        st, (st.lists(st.floats(width=32), min_size=DIM, max_size=DIM), 2),
        (st.integers(0, 200).filter(lambda n: n != DIM).map(lambda n: [0.5] * n), 1),
        (st.sampled_from([[0.0] * DIM, [1e39] * DIM, [1e-45] * DIM, ["1"] * DIM, ["x"] * DIM,
                          np.ones((1, DIM)), np.ones(DIM, dtype=np.complex64),
                          np.array([object()] * DIM), np.ones(DIM, dtype="datetime64[s]"),
                          [[0.5] * DIM, [0.5]], "abc", {"a": 1}]), 2), (junk, 1))

    role_ok = st.sampled_from(["user", "assistant", "system"])
    message = st.fixed_dictionaries({"content": text_ok}, optional={
        "role": role_ok, "name": scope_ok, "timestamp": when_ok, "metadata": meta_ok})
    bad_message = st.fixed_dictionaries({}, optional={
        "role": role_ok | short | junk, "content": text_ok | text_bad, "text": text_bad,
        "name": scope_bad, "timestamp": when_bad, "metadata": meta_bad})
    content_ok = _weighted(st, (text_ok, 4), (st.lists(text_ok, min_size=1, max_size=4), 1),
                           (st.lists(message, min_size=1, max_size=4), 2))
    content_bad = _weighted(st, (text_bad, 4), (st.lists(text_ok | text_bad, max_size=4), 1),
                            (bad_message, 1), (st.lists(message | bad_message, max_size=4), 2),
                            (junk, 1))
    number_bad = st.floats() | st.sampled_from([-1, 2, True, "0.5"]) | junk
    kind_ok = st.sampled_from(["note", "fact", "preference"])
    kind_bad = short | junk

    text, scope, ident, when = (text_ok, text_bad), (scope_ok, scope_bad), (known, id_bad), \
        (when_ok, when_bad)
    meta, vector, flag = (meta_ok, meta_bad), (vector_ok, vector_bad), (flag_ok, junk)
    k, count = (st.integers(1, 50), count_bad), (st.integers(1, 5000), count_bad)
    record = st.builds(_record, known | st.uuids().map(str), scope_ok, text_ok | st.none(),
                       vector_ok, meta_ok, when_ok, st.just({}))
    bad_record = st.builds(
        _record, known | id_bad, scope_ok | scope_bad, st.none() | text_ok | text_bad,
        vector_ok | vector_bad, meta_ok | meta_bad, when_ok | when_bad | st.none(),
        st.fixed_dictionaries({}, optional={
            "event_time": when_bad, "speaker": scope_bad, "level": short, "type": kind_bad,
            "importance": number_bad, "sources": ids_bad, "access_count": count_bad,
            "session_id": scope_bad}))
    R, Opt = True, False  # required, optional
    sdk: dict[str, tuple[dict[str, tuple[Any, Any, bool]], int]] = {
        "add": ({"content": (*(content_ok, content_bad), R), "user_id": (*scope, R),
                 "agent_id": (*scope, Opt), "session_id": (*scope, Opt),
                 "event_time": (*when, Opt), "metadata": (*meta, Opt), "role": (role_ok, short | junk, Opt),
                 "speaker": (*scope, Opt), "type": (kind_ok, kind_bad, Opt),
                 "importance": (st.floats(0, 1), number_bad, Opt), "vector": (*vector, Opt),
                 "supersedes": (ids_ok, ids_bad, Opt)}, 10),
        "search": ({"query": (*text, R), "user_id": (*scope, R), "k": (*k, Opt),
                    "agent_id": (*scope, Opt), "session_id": (*scope, Opt), "as_of": (*when, Opt),
                    "now": (*when, Opt), "query_vector": (*vector, Opt), "track_access": (*flag, Opt),
                    "learned": (*flag, Opt), "weights": (st.none(), junk, Opt)}, 6),
        "context": ({"query": (*text, R), "user_id": (*scope, R), "budget_tokens": (*count, Opt),
                     "k": (*k, Opt), "as_of": (*when, Opt), "now": (*when, Opt),
                     "session_id": (*scope, Opt)}, 3),
        "get": ({"id": (*ident, R), "include_vector": (*flag, Opt), "user_id": (*scope, Opt)}, 2),
        "update": ({"id": (*ident, R), "text": (*text, Opt), "metadata": (*meta, Opt),
                    "event_time": (*when, Opt), "importance": (st.floats(0, 1), number_bad, Opt),
                    "title": (text_ok, text_bad, Opt), "type": (kind_ok, kind_bad, Opt),
                    "user_id": (*scope, Opt)}, 5),
        "delete": ({"ids": (ids_ok, ids_bad, R), "user_id": (*scope, Opt)}, 2),
        "feedback": ({"id": (*ident, R), "useful": (*flag, R), "user_id": (*scope, Opt)}, 2),
        "history": ({"id": (*ident, R), "user_id": (*scope, Opt)}, 1),
        "explain": ({"id": (*ident, R), "user_id": (*scope, Opt)}, 1),
        "edges": ({"id": (*ident, R), "user_id": (*scope, Opt)}, 1),
        "undo": ({"event": (st.integers(1, 40), count_bad, R), "user_id": (*scope, Opt)}, 1),
        "journal": ({"limit": (*k, Opt), "user_id": (*scope, Opt), "cycle": (text_ok, text_bad, Opt)}, 1),
        "all": ({"user_id": (*scope, Opt), "agent_id": (*scope, Opt), "session_id": (*scope, Opt),
                 "limit": (*k, Opt), "offset": (*k, Opt), "include_vectors": (*flag, Opt)}, 1),
        "demote": ({"ids": (ids_ok, ids_bad, R), "user_id": (*scope, Opt)}, 1),
        "merge": ({"ids": (st.lists(known, min_size=2, max_size=3), ids_bad, R),
                   "weights": (st.none(), st.lists(st.floats(), max_size=4) | junk, Opt),
                   "mode": (st.sampled_from(["lossless", "lossy"]), short | junk, Opt),
                   "originals": (st.sampled_from(["keep", "demote", "archive"]), short, Opt),
                   "user_id": (*scope, Opt)}, 1),
        "forget": ({"id": (*ident, R), "reason": (text_ok, text_bad, Opt),
                    "user_id": (*scope, Opt)}, 1),
        "topics": ({"user_id": (*scope, Opt), "rebuild": (*flag, Opt)}, 1),
        "delete_all": ({"user_id": (st.sampled_from(["ana", "a/b", ".."]), scope_bad, R)}, 1),
        "sleep": ({"budget": (st.just(5.0), st.floats() | junk, Opt),
                   "phases": (st.lists(st.sampled_from(["consolidate", "forget"]), max_size=2),
                              st.lists(short, min_size=1, max_size=2) | junk, Opt)}, 1),
        "convert_vectors": ({"tier": (st.nothing(), short | junk | st.sampled_from(["fp64", "PQ"]),
                                      R)}, 1),
        "import_records": ({"records": (st.lists(record, min_size=1, max_size=3),
                                        st.lists(bad_record | junk, max_size=3) | junk, R),
                            "on_conflict": (st.sampled_from(["error", "skip"]), short | junk, Opt)},
                           3),
    }
    calls = [(_arguments(st, op, spec), weight) for op, (spec, weight) in sdk.items()]
    return _weighted(st, *calls, (cli(st, text_ok, text_bad, scope, ident, when), 12))


def _arguments(st: Any, op: str, spec: dict[str, tuple[Any, Any, bool]]) -> Any:
    names = sorted(spec)

    @st.composite
    def draw(draw: Any) -> Call:
        hostile = set(draw(st.permutations(names))[:draw(st.sampled_from([0, 1, 1, 1, 2]))])
        args: dict[str, Any] = {}
        for name in names:
            valid, bad, required = spec[name]
            if name in hostile or valid.is_empty:
                args[name] = draw(bad)
            elif required or draw(st.booleans()):
                args[name] = draw(valid)
        return Call("sdk", op, args)

    return draw()


def cli(st: Any, text_ok: Any, text_bad: Any, scope: tuple[Any, Any], ident: tuple[Any, Any],
        when: tuple[Any, Any]) -> Any:
    """argv for ``latentmem.cli.main``, strings only as a shell gives them (``{tmp}``, a
    scratch folder, and ``{file}``, a file of garbage in it, are filled in at run time),
    with the text that ``-`` reads from stdin."""
    def text_of(pair: tuple[Any, Any], weights: tuple[int, int] = (3, 1)) -> Any:
        return _weighted(st, (pair[0], weights[0]), (pair[1], weights[1])).map(
            lambda v: v if isinstance(v, str | Known) else str(v))

    word = text_of((text_ok, text_bad))
    long_digits = st.builds(_repeat, st.just("9"), st.just(5_000))
    arg = _weighted(st, (word, 4), (st.sampled_from(PATHS), 2),
                    (st.sampled_from(["-", "--", "-k", "--help", "--json", "5", "-1", "1e309",
                                      "nan", "#3"]), 1), (long_digits, 1))
    ids = st.lists(text_of(ident), min_size=1, max_size=3)
    opt = st.lists(st.tuples(st.sampled_from(["--user", "--session", "--agent"]), text_of(scope)),
                   max_size=2).map(lambda pairs: [x for pair in pairs for x in pair])
    at = text_of(when)
    meta = st.sampled_from(['{"a": 1}', '{"a": 1}', '{"b": [1, "שלום"]}', '{"a": NaN}', "[1]",
                            "{", '{"\\ud800": 1}', '{"a": "\\u0000"}', "1e999", "null"]) \
        | st.builds(_repeat, st.sampled_from(["[", '{"a":']), st.sampled_from([5_000, 100_000]))
    flags = {"--event-time": at, "--metadata": meta, "--speaker": text_of(scope),
             "--type": word, "--supersedes": text_of(ident)}
    given = st.sampled_from(["{file}", "{tmp}", "{tmp}/missing/x", "{tmp}/x\x00y", "/dev/null",
                             "{tmp}/store/memory.db", "{tmp}/\udcff"])
    written = st.sampled_from(["{tmp}", "{tmp}/missing/x", "{tmp}/x\x00y", "/dev/null",
                               "{tmp}/out", "{tmp}/\udcff", "{tmp}/sub/../out"])
    fmt = st.sampled_from(["csv", "npy", "hdf5", "pickle", "jsonl", "locomo", "chat", "xml"])
    forms = [
        st.tuples(st.just(["add"]), st.lists(word, min_size=1, max_size=1), opt,
                  st.lists(st.sampled_from(sorted(flags)), max_size=2).flatmap(
                      lambda names: st.tuples(*[flags[n].map(lambda v, n=n: [n, v])
                                                for n in names]))),
        st.tuples(st.sampled_from([["search"], ["context"]]),
                  st.lists(word, min_size=1, max_size=1), opt,
                  st.lists(st.tuples(st.sampled_from(["-k", "--budget", "--as-of", "--now"]),
                                     arg | at), max_size=2)),
        st.tuples(st.sampled_from([["get"], ["history"], ["explain"], ["demote"], ["undo"],
                                   ["delete"], ["merge"], ["keys", "revoke"]]), ids, opt),
        st.tuples(st.just(["import"]), st.lists(given, min_size=1, max_size=1),
                  st.lists(st.tuples(st.just("--format"), fmt), max_size=1)),
        st.tuples(st.just(["export"]), st.lists(written, min_size=1, max_size=1),
                  st.lists(st.tuples(st.just("--format"), fmt), max_size=1)),
        st.tuples(st.sampled_from([["explain", "--cycle"], ["keys", "create", "--tenant"],
                                   ["keys", "create", "--tenant", "acme", "--label"],
                                   ["keys", "create", "--tenant", "acme", "--user"],
                                   ["topics", "--user"], ["stats", "--user"],
                                   ["sleep", "--budget"], ["sleep", "--phases"]]),
                  st.lists(arg, min_size=1, max_size=1)),
        st.lists(arg, max_size=4).map(lambda a: (a,)),
    ]
    argv = st.one_of(*forms).map(_flatten)
    home = st.sampled_from([[], [], [], [], [], ["--home", "{file}"], ["--home", "{tmp}/x\x00y"],
                            ["--home", "{file}/sub"], ["--json"], ["--json"]])
    stdin = st.sampled_from(["", "piped text", "\x00", "\ud800"]) | text_ok
    return st.tuples(argv, home, stdin).map(
        lambda t: Call("cli", t[0][0] if t[0] and t[0][0] in COMMANDS else "?",
                       (t[0] + t[1], t[2])))


def _flatten(parts: tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    for part in parts:
        for item in part:
            if isinstance(item, list | tuple):
                out.extend(_flatten((item,)))
            else:
                out.append(item)
    return out
