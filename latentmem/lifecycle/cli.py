"""Lifecycle commands: ``sleep``, ``explain``, ``undo``, ``merge``, ``demote``."""

from __future__ import annotations

import argparse
import functools
import re
import time
from typing import Any

from latentmem.errors import InvalidInputError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration like 30s, 10m or 1h, "
                                          f"found {text!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def cmd_sleep(args: argparse.Namespace) -> int:
    from latentmem.cli import _emit, _open

    cycles = 0
    with _open(args) as m:
        while True:
            report = m.sleep(args.budget, phases=args.phases)
            cycles += 1
            _emit(args, report.to_dict(), functools.partial(print, report.summary()))
            if args.every is None or (args.cycles is not None and cycles >= args.cycles):
                break
            time.sleep(args.every)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from latentmem.cli import _emit, _open
    from latentmem.lifecycle import journal

    with _open(args) as m:
        if args.cycle:
            events = m.journal(journal.MAX_EVENT, cycle=args.cycle)
            if not events:
                raise InvalidInputError(f"no sleep cycle {args.cycle!r}")
        elif args.id:
            events = m.explain(args.id)
        else:
            events = list(reversed(m.journal(args.recent)))

    def human() -> None:
        if not events:
            print("no lifecycle events yet")
        for e in events:
            flag = " (undone)" if e["undone_at"] else " [undo]" if e["undoable"] else ""
            target = f" {e['record_id']}" if e["record_id"] else ""
            print(f"#{e['seq']} {e['at'][:19]} {e['action']}{target}: {e['reason']}{flag}")

    _emit(args, events, human)
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    from latentmem.cli import _emit, _open

    with _open(args) as m:
        event = m.undo(args.event)
    _emit(args, event, lambda: print(f"undid #{event['seq']} ({event['action']} "
                                     f"{event['record_id']})"))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from latentmem.cli import _emit, _open

    with _open(args) as m:
        rec = m.merge(args.ids, args.weights, mode=args.mode, originals=args.originals,
                      user_id=args.user)
    data = rec.to_dict()
    _emit(args, data, lambda: print(f"merged {len(rec.sources)} memories into {rec.id} "
                                    f"({args.mode}): {rec.text or '(lossy) ' + rec.summary}"))
    return 0


def cmd_demote(args: argparse.Namespace) -> int:
    from latentmem.cli import _emit, _open

    with _open(args) as m:
        done = m.demote(args.ids, user_id=args.user)
    _emit(args, {"demoted": done}, lambda: print(f"demoted {len(done)} memor"
                                                 f"{'y' if len(done) == 1 else 'ies'} to lossy"))
    return 0


def _weights(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, found {text!r}") from exc


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from latentmem.lifecycle.sleep import PHASES

    p = sub.add_parser("sleep", parents=[common],
                       help="run sleep cycles: consolidate, forget, preload, optimise")
    p.add_argument("--budget", type=duration, default=None, help="time budget per cycle (30s, 2m)")
    p.add_argument("--every", type=duration, default=None,
                   help="keep running a cycle this often (10m); Ctrl-C stops")
    p.add_argument("--cycles", type=int, default=None, help="with --every: stop after N cycles")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=None)
    p.set_defaults(func=cmd_sleep)

    p = sub.add_parser("explain", parents=[common], help="what the lifecycle did to a memory, and why")
    p.add_argument("id", nargs="?", default=None)
    p.add_argument("--cycle", default=None, help="every action of one sleep cycle")
    p.add_argument("--recent", type=int, default=20, help="without an id: the last N events")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("undo", parents=[common], help="reverse one lifecycle event (see explain)")
    p.add_argument("event", type=lambda s: int(s.lstrip("#")))
    p.set_defaults(func=cmd_undo)

    p = sub.add_parser("merge", parents=[common], help="merge memories into one, with provenance")
    p.add_argument("ids", nargs="+")
    p.add_argument("--mode", choices=("lossless", "lossy"), default="lossless")
    p.add_argument("--originals", choices=("keep", "demote", "archive"), default="keep")
    p.add_argument("--weights", type=_weights, default=None, help="e.g. 2,1 (one per id)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("demote", parents=[common], help="drop memories' text for good, keep vectors")
    p.add_argument("ids", nargs="+")
    p.set_defaults(func=cmd_demote)
