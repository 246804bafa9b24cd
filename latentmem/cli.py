"""The ``latentmem`` command line.

Every command takes ``--home PATH`` (else ``LATENTMEM_HOME``, else ``./.latentmem``),
``--user`` for the scope and ``--json`` for machine-readable output. Errors are
one line on stderr with a non-zero exit: 2 for bad input or usage, 1 for
everything else the engine reports, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latentmem.errors import InvalidInputError, LatentMemError

IMPORT_FORMATS = ("csv", "npy", "hdf5", "pickle", "jsonl", "locomo", "chat")
EXPORT_FORMATS = ("csv", "npy", "hdf5", "pickle", "jsonl")


def one_line(message: str, limit: int = 1000) -> str:
    """``message`` fit for one line of a terminal: what would break the line or reach the
    terminal as a control (a newline, an escape, a lone surrogate from a shell's undecodable
    bytes) is shown escaped, as in a repr, and a message that quotes a huge argument back
    (argparse's "unrecognized arguments") is cut at ``limit`` characters."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message[:limit])
    if len(line) <= limit and len(message) <= limit:
        return line
    return f"{line[:limit]}... ({len(message)} characters)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, not usage + message
        sys.stderr.write(f"latentmem: error: {one_line(message)} (see --help)\n")
        raise SystemExit(2)


def _open(args: argparse.Namespace) -> Any:
    from latentmem.memory import Memory

    profile = getattr(args, "profile", None)
    return Memory(args.home, **({"profile": profile} if profile else {}))


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    else:
        human()


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, found {text!r}")
    return int(text)


def _path(text: str) -> str:
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"expected a file's path, found one with a NUL "
                                         f"character: {text[:100]!r}")
    return text


def _shown_path(path: str) -> str:
    """A path fit to print: bytes of a name that are not UTF-8 (which a shell hands over as
    lone surrogates, and a UTF-8 stdout refuses) become U+FFFD."""
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in path)


def _text_arg(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def cmd_add(args: argparse.Namespace) -> int:
    metadata = None
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"--metadata is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise InvalidInputError("--metadata is nested too deep to read") from exc
    with _open(args) as m:
        receipt = m.add(
            _text_arg(args.text),
            user_id=args.user,
            agent_id=args.agent,
            session_id=args.session,
            event_time=args.event_time,
            metadata=metadata,
            speaker=args.speaker,
            type=args.type,
            supersedes=args.supersedes,
        )
    _emit(
        args,
        receipt.to_dict(),
        lambda: print(
            f"added {', '.join(receipt.ids)} in {receipt.timings_ms['total']:.1f} ms "
            f"(embed {receipt.timings_ms['embed']:.1f} ms)"
        ),
    )
    return 0


def _print_hits(hits: Sequence[Any]) -> None:
    if not hits:
        print("no memories found")
    for rank, hit in enumerate(hits, start=1):
        rec = hit.record
        when = rec.event_time.strftime("%Y-%m-%d %H:%M") if rec.event_time else "undated"
        who = f"{rec.speaker}: " if rec.speaker else ""
        rel = "" if hit.relevance is None else f"relevance {hit.relevance:.2f} "
        print(f"{rank:>2}. [{rec.id}] {when} {who}{rec.text}")
        print(f"    {rel}{hit.explain()}")


NOW_HELP = ("when the query is asked (ISO-8601): 'last week' and recency are read from it "
            "(default: the latest memory's time); hides nothing")


def cmd_search(args: argparse.Namespace) -> int:
    with _open(args) as m:
        hits = m.search(
            args.query, user_id=args.user, k=args.k, agent_id=args.agent,
            session_id=args.session, as_of=args.as_of, now=args.now, threshold=args.threshold,
        )
    _emit(args, [h.to_dict() for h in hits], lambda: _print_hits(hits))
    return 0


def cmd_context(args: argparse.Namespace) -> int:
    with _open(args) as m:
        ctx = m.context(
            args.query, user_id=args.user, budget_tokens=args.budget, agent_id=args.agent,
            session_id=args.session, now=args.now, min_relevance=args.min_relevance,
        )

    def human() -> None:
        print(ctx.text)
        print(
            f"\n# {len(ctx.items)} memories, {ctx.used_tokens}/{ctx.budget_tokens} tokens "
            f"({ctx.tokenizer}); {len(ctx.omitted)} left out",
            file=sys.stderr,
        )

    _emit(args, ctx.to_dict(), human)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with _open(args) as m:
        rec = m.get(args.id, include_vector=args.vector, user_id=args.user)
    data = rec.to_dict(include_vector=args.vector)
    _emit(args, data, lambda: print(json.dumps(data, indent=2, ensure_ascii=False)))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with _open(args) as m:
        events = m.history(args.id, user_id=args.user)

    def human() -> None:
        for e in events:
            print(f"{e['seq']:>6} {e['at']:%Y-%m-%d %H:%M:%S} {e['event']:<7} {e['new_text'] or ''}")

    _emit(args, events, human)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _open(args) as m:
        n = m.delete(args.ids, user_id=args.user)
    _emit(args, {"deleted": n}, lambda: print(f"deleted {n} memor{'y' if n == 1 else 'ies'}"))
    return 0


def _progress(desc: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    from tqdm import tqdm

    bar: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=desc, unit="turn", file=sys.stderr, leave=False))
        bar[0].total = total
        bar[0].n = done
        bar[0].refresh()

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


def cmd_import(args: argparse.Namespace) -> int:
    from latentmem.store import formats

    with _open(args) as m:
        if args.format in ("locomo", "chat"):
            update, close = _progress(f"importing {args.format}")
            try:
                n = formats.import_conversation(
                    m, args.path, args.format, user_id=args.user_given, progress=update
                )
            finally:
                close()
        else:
            n = formats.import_into(m, args.path, args.format, on_conflict=args.on_conflict)
    _emit(args, {"imported": n}, lambda: print(f"imported {n} memories from {_shown_path(args.path)}"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from latentmem.store import formats

    with _open(args) as m:
        n = formats.export_memory(m, args.path, args.format, user_id=args.user_given)
    path = _shown_path(args.path)
    _emit(args, {"exported": n, "path": path},
          lambda: print(f"exported {n} memories to {path} ({args.format})"))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as m:
        stats = m.stats()

    def human() -> None:
        for key, value in stats.items():
            print(f"{key:>18}: {value}")

    _emit(args, stats, human)
    return 0


def cmd_convert_vectors(args: argparse.Namespace) -> int:
    with _open(args) as m:
        before = m.stats()["vector_tier"]
        count = m.convert_vectors(args.tier)
    result = {"from": before, "to": args.tier, "vectors": count}
    _emit(args, result,
          lambda: print(f"{count} vectors re-encoded from {before} to {args.tier}"))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from latentmem.check import NoEmbedding
    from latentmem.config import Config, resolve_home
    from latentmem.errors import NotFoundError
    from latentmem.memory import Memory
    from latentmem.store import DB_FILE, open_store

    home = resolve_home(args.home)
    if isinstance(home, Path) and not (home / DB_FILE).exists():
        raise NotFoundError(f"no store at {home} ({DB_FILE} is absent)")
    # A check embeds nothing: the store is opened as written, without loading its model.
    store = open_store(home, Config.load(home).storage)
    try:
        name, dim = store.get_meta("embedder"), store.get_meta("dim")
    finally:
        store.close()
    embedder = NoEmbedding(name, int(dim)) if name is not None and dim is not None else None
    with Memory(home, embedder=embedder) as m:
        report = m.check(repair=args.repair)

    def human() -> None:
        count = "?" if report["memories"] is None else report["memories"]
        users = "?" if report["users"] is None else report["users"]
        print(f"store {m.location}: {count} memories of {users} users, "
              f"schema {report['schema_version']}")
        print(f"vector index: {report['vector_index']}; saved file at open: "
              f"{report['index_file']}")
        for line in report["repaired"]:
            print(f"repaired: {line}")
        for line in report["problems"]:
            print(f"PROBLEM {line}")
        if report["ok"]:
            print("ok: no problems found")
        else:
            print(f"{len(report['problems'])} problems; "
                  + ("`latentmem check --repair` rebuilds what is derived; "
                     if not args.repair else "")
                  + "RELIABILITY.md, 'Recovery', says what to do about the rest")

    _emit(args, report, human)
    return 0 if report["ok"] else 1


def cmd_topics(args: argparse.Namespace) -> int:
    with _open(args) as m:
        shown = m.topics(args.user, rebuild=args.rebuild)

    def human() -> None:
        for topic in shown:
            print(f"topic {topic['topic']}: {len(topic['sessions'])} sessions "
                  f"({', '.join(topic['sessions'][:5])}{', ...' if len(topic['sessions']) > 5 else ''})")
            for key in topic["key_memories"]:
                print(f"    [{key['id']}] {(key['text'] or '(text not kept)')[:100]}")

    _emit(args, shown, human)
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    import numpy as np

    from latentmem import invert
    from latentmem.encode.base import get_embedder

    if (args.text is None) == (args.id is None):
        raise InvalidInputError("give a text or --id ID (one of the two)")
    steps = invert.DEFAULT_STEPS if args.steps is None else args.steps
    if args.id is not None:
        with _open(args) as m:
            rec = m.get(args.id, include_vector=True, user_id=args.user)
            inverted = m.invert(args.id, steps=steps, user_id=args.user)
            original, vector = rec.text, np.asarray(rec.vector, dtype=np.float32)
            again = m.embedder.embed_batch([inverted])[0]
    else:
        inverter = invert.require_default()
        original = _text_arg(args.text)
        if not original.strip():
            raise InvalidInputError("the text to invert is empty")
        embedder = get_embedder("minilm")
        vector = embedder.embed_batch([original])[0]
        inverted = invert.invert_one(inverter, vector, steps)
        again = embedder.embed_batch([inverted])[0]
    cosine = float(np.dot(vector, again))
    data = {"text": original, "inverted": inverted, "cosine": round(cosine, 4), "steps": steps,
            "id": args.id}

    def human() -> None:
        print(f"original: {original}")
        print(f"inverted: {inverted}")
        print(f"cosine:   {cosine:.3f} (MiniLM of the inverted text vs the vector; {steps} "
              f"correction step{'s' if steps != 1 else ''})")

    _emit(args, data, human)
    return 0


def cmd_audit_inversion(args: argparse.Namespace) -> int:
    with _open(args) as m:
        report = m.audit_inversion(user_id=args.user, limit=args.limit, steps=args.steps)

    def human() -> None:
        if not report["n"]:
            print(f"user {report['user_id']!r} has no memories with text to audit")
            return
        print(f"{report['n']} of {report['with_text']} memories with text, inverted from their "
              f"stored {report['vector_tier']} vectors (vector_noise {report['vector_noise']}, "
              f"{report['steps']} correction steps):")
        print(f"  token F1 {report['token_f1']:.1f}  BLEU {report['bleu']:.1f}  exact "
              f"{report['exact']:.1f}%  cosine {report['cosine']:.3f}")
        for ex in report["examples"]:
            print(f"  {ex['id']}  F1 {ex['token_f1']:.0f}\n    text:     {ex['text']}\n"
                  f"    inverted: {ex['inverted']}")

    _emit(args, report, human)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from latentmem import server

    llm = {"url": args.llm_url, "key": args.llm_key or os.environ.get("LATENTMEM_LLM_KEY"),
           "model": args.llm_model}
    with _open(args) as m:
        try:
            srv = server.make_server(m, args.host, args.port, log_requests=True,
                                     insecure=args.insecure_no_auth,
                                     sleep_every=None if args.no_sleep else args.sleep_every,
                                     sleep_budget=args.sleep_budget, llm=llm)
        except OSError as exc:  # the port is taken, the address is not this machine's, ...
            sys.stderr.write(f"latentmem: cannot listen on {args.host}:{args.port}: {exc}\n")
            return 1
        if not args.insecure_no_auth and not m.store.api_keys():
            sys.stderr.write("latentmem: no API key exists yet: make one with `latentmem keys "
                             "create --tenant NAME` (every request needs one)\n")
        # Load the model before the first request rather than during it (~3 s); past the
        # store's embedding cache, which should hold only what was remembered.
        getattr(m.embedder, "inner", m.embedder).embed_batch(["warm up"])
        server.serve(srv)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from latentmem.server import keys

    with _open(args) as m:
        if args.keys_command == "create":
            token, row = keys.create(m.store, args.tenant, args.users, read_only=args.read_only,
                                     admin=args.admin, label=args.label)
            _emit(args, {**row.to_dict(), "key": token}, lambda: print(
                f"{token}\n(key {row.id} for tenant {row.tenant!r}; shown once, stored only "
                "as a hash: keep it now)"))
        elif args.keys_command == "list":
            rows = [k.to_dict() for k in m.store.api_keys()]

            def human() -> None:
                for k in rows:
                    flags = [f for f, on in (("admin", k["admin"]), ("read-only", k["read_only"]),
                                             ("REVOKED", k["revoked_at"] is not None)) if on]
                    users = "all users" if k["users"] is None else ",".join(k["users"])
                    print(f"{k['id']}  tenant={k['tenant']}  {users}  {' '.join(flags)}  "
                          f"{k['label']}")
            _emit(args, rows, human)
        else:
            row = keys.revoke(m.store, args.key_id)
            _emit(args, row.to_dict(), lambda: print(
                f"revoked {row.id}; servers sharing this store refuse it within "
                f"{keys.REVOCATION_TTL:g} s"))
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from latentmem.server import mcp_server
    from latentmem.tenancy import UNRESTRICTED, Principal, check_tenant

    who = UNRESTRICTED if args.tenant is None else Principal(check_tenant(args.tenant))
    with _open(args) as m:
        mcp_server.run_stdio(m, who)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from latentmem.demo import run_demo

    return run_demo(args.home, json_out=args.json)


def build_parser() -> argparse.ArgumentParser:
    # The global options are accepted before the command and after it. The copies on
    # the sub-commands default to SUPPRESS so they do not overwrite a value given first.
    def add_common(target: argparse.ArgumentParser, default: Any) -> None:
        target.add_argument("--home", default=default,
                            help="store: a directory or a postgresql:// URL "
                                 "(default: $LATENTMEM_HOME or ./.latentmem)")
        target.add_argument("--user", default=default, help="user scope (default: 'default')")
        target.add_argument("--profile", default=default, choices=["default", "compact"],
                            help="storage profile of a new store (latentmem/store/profiles.py); "
                                 "an existing store keeps its own")
        target.add_argument("--json", action="store_true",
                            default=False if default is None else default,
                            help="machine-readable output")

    common = _Parser(add_help=False)
    add_common(common, argparse.SUPPRESS)
    scoped = _Parser(add_help=False)
    scoped.add_argument("--agent", default=None, help="agent scope")
    scoped.add_argument("--session", default=None, help="session scope")

    parser = _Parser(prog="latentmem", description="Long-term memory for LLMs, offline.")
    parser.add_argument("--version", action="version", version=_version())
    add_common(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("add", parents=[common, scoped], help="remember a text ('-' reads stdin)")
    p.add_argument("text")
    p.add_argument("--event-time", default=None, help="when it happened (ISO-8601, ...)")
    p.add_argument("--speaker", default=None)
    p.add_argument("--type", default=None)
    p.add_argument("--metadata", default=None, help="JSON object")
    p.add_argument("--supersedes", action="append", default=None, metavar="ID",
                   help="a memory this one replaces (kept, marked valid until now; repeatable)")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("search", parents=[common, scoped], help="hybrid search with scores")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--as-of", default=None,
                   help="answer as of this time: later and superseded memories are hidden")
    p.add_argument("--now", default=None, help=NOW_HELP)
    p.add_argument("--threshold", type=float, default=None, metavar="P",
                   help="only hits whose calibrated relevance (0-1) reaches P; none may")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("context", parents=[common, scoped], help="pack memories into a budget")
    p.add_argument("query")
    p.add_argument("--budget", type=int, default=1000, help="token budget (MiniLM WordPiece)")
    p.add_argument("--now", default=None, help=NOW_HELP)
    p.add_argument("--min-relevance", type=float, default=None, metavar="P",
                   help="pack only memories whose calibrated relevance (0-1) reaches P")
    p.set_defaults(func=cmd_context)

    p = sub.add_parser("get", parents=[common], help="show one memory")
    p.add_argument("id")
    p.add_argument("--vector", action="store_true", help="include the vector")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("history", parents=[common], help="what happened to one memory")
    p.add_argument("id")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("delete", parents=[common], help="delete memories for good")
    p.add_argument("ids", nargs="+")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("import", parents=[common], help="import records or a conversation")
    p.add_argument("path", type=_path)
    p.add_argument("--format", required=True, choices=IMPORT_FORMATS)
    p.add_argument("--on-conflict", choices=("error", "skip"), default="error")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", parents=[common], help="export records and vectors")
    p.add_argument("path", type=_path)
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("topics", parents=[common],
                       help="the user's sessions rolled up into topics, with key memories")
    p.add_argument("--rebuild", action="store_true", help="build them again now")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("stats", parents=[common], help="store statistics")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("convert-vectors", parents=[common],
                       help="re-encode every stored vector into another tier (a store made "
                            "before profiles keeps fp32 until this: int8 is the default's)")
    p.add_argument("--tier", required=True, choices=["fp32", "fp16", "int8", "pq"])
    p.set_defaults(func=cmd_convert_vectors)

    p = sub.add_parser("check", parents=[common],
                       help="verify the store and its vector index (exit 1 on a problem)")
    p.add_argument("--repair", action="store_true",
                   help="rebuild the derived parts (indexes, dangling links), then check again; "
                        "never changes a memory")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("invert", parents=[common],
                       help="read text back from a vector: text -> vector -> text, or a memory's")
    p.add_argument("text", nargs="?", default=None, help="text to round-trip ('-' reads stdin)")
    p.add_argument("--id", default=None, help="invert this memory's stored vector instead")
    p.add_argument("--steps", type=int, default=None, choices=range(0, 11), metavar="N",
                   help="correction steps, 0-10 (default 1)")
    p.set_defaults(func=cmd_invert)

    p = sub.add_parser("audit-inversion", parents=[common],
                       help="how much stored text the inverter recovers from the vectors alone")
    p.add_argument("--limit", type=int, default=200, help="memories to sample (default 200)")
    p.add_argument("--steps", type=int, default=0, choices=range(0, 11), metavar="N",
                   help="correction steps, 0-10 (default 0)")
    p.set_defaults(func=cmd_audit_inversion)

    p = sub.add_parser("demo", parents=[common], help="build, search and export a sample memory")
    p.set_defaults(func=cmd_demo)

    from latentmem.lifecycle.cli import duration
    from latentmem.lifecycle.cli import register as lifecycle

    lifecycle(sub, common)

    p = sub.add_parser("serve", parents=[common],
                       help="HTTP JSON API over the store, with background sleep cycles")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="no API keys, plain user ids (local development only: refused unless "
                        "bound to a loopback address)")
    sleeping = p.add_mutually_exclusive_group()
    sleeping.add_argument("--sleep-every", type=duration, default=600.0, metavar="DURATION",
                          help="run a sleep cycle this often (default 10m)")
    sleeping.add_argument("--no-sleep", action="store_true", help="no background sleep cycles")
    p.add_argument("--sleep-budget", type=duration, default=30.0, metavar="DURATION",
                   help="time budget of each cycle, and of POST /v1/sleep without one (default 30s)")
    p.add_argument("--llm-url", default=None, metavar="URL",
                   help="the chat proxy's upstream, an OpenAI-compatible base URL "
                        "(e.g. http://localhost:11434/v1 for Ollama)")
    p.add_argument("--llm-key", default=None, metavar="KEY",
                   help="the upstream's API key (or LATENTMEM_LLM_KEY)")
    p.add_argument("--llm-model", default=None, metavar="NAME",
                   help="the model to ask upstream when a request names none")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("keys", parents=[common], help="API keys of `latentmem serve`")
    keys_sub = p.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=_Parser)
    keys_sub.required = True
    k = keys_sub.add_parser("create", help="make a key (shown once)")
    k.add_argument("--home", default=argparse.SUPPRESS, help="store: a directory or a URL")
    k.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="machine-readable output")
    k.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    k.add_argument("--user", dest="users", action="append", default=None, metavar="USER",
                   help="a user the key may act for (repeatable; default: all of the tenant's)")
    k.add_argument("--read-only", action="store_true", help="reads only")
    k.add_argument("--admin", action="store_true",
                   help="may manage keys, see store-wide stats and run sleep cycles")
    k.add_argument("--label", default="", help="a note shown by `keys list`")
    keys_sub.add_parser("list", parents=[common], help="every key (never the secret)")
    k = keys_sub.add_parser("revoke", parents=[common], help="revoke a key by its id")
    k.add_argument("key_id", metavar="ID")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("mcp", parents=[common],
                       help="an MCP server on stdio (for desktop MCP clients) over the store")
    p.add_argument("--tenant", default=None,
                   help="act inside this tenant (as a server key of it would); default: plain "
                        "user ids")
    p.set_defaults(func=cmd_mcp)

    try:
        from latentmem.bench.cli import register
    except ImportError:  # the bench package is part of the distribution; absent only mid-build
        pass
    else:
        register(sub)
    return parser


def _version() -> str:
    from latentmem import __version__

    return f"latentmem {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    # Remember whether --user was given: exports and imports default to all users / the file's.
    args.user_given = getattr(args, "user", None)
    try:
        return int(args.func(args))
    except LatentMemError as exc:
        status = 2 if isinstance(exc, InvalidInputError) else 1
        sys.stderr.write(f"latentmem: {exc.name()}: {one_line(str(exc))}\n")
        return status
    except (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
            NotADirectoryError) as exc:
        sys.stderr.write(f"latentmem: {type(exc).__name__}: {one_line(str(exc))}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("latentmem: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
