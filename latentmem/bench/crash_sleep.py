"""The ``sleep`` scenario of ``latentmem bench reliability``: kill -9 during sleep cycles.

The child adds memories (half of them repeating earlier ones, so that consolidation has
work) and runs a full cycle after each batch, with a clock that moves 75 days a cycle so
that forgetting has work too (demotions from the fourth cycle, archiving from the sixth);
it acknowledges each add and each finished cycle. The parent kills it at a random moment,
most often inside a cycle (a cycle takes longer than an add). Checked after every kill:

- every acknowledged memory is live, or was taken by a cycle with an event in the journal
  that ``explain`` gives and that can be undone (nothing vanishes without a trace);
- ``latentmem check`` finds nothing (store integrity, full-text index, dangling links,
  vector index against the store);
- the newest cycle's events replay: up to three of its undoable actions are undone, each
  brings its memory back, and the store and index still agree afterwards.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

CHILD = textwrap.dedent("""
    import json, sys, time
    from latentmem import Memory
    from latentmem.lifecycle import sleep
    home = sys.argv[1]
    m = Memory(home, embedder="hash")
    def say(**line):
        sys.stdout.write(json.dumps(line) + "\\n")
        sys.stdout.flush()
    say(ready=True)
    n = 0
    while True:
        n += 1
        texts = [f"cycle {n} fact {i} about curlew{n}w{i}" for i in range(20)]
        texts += [f"seeded fact {i % 60} about godwit{i % 60}" for i in range(n * 20, n * 20 + 20)]
        say(try_=n)
        ids = m.add(texts, user_id="ana", session_id=f"c{n}").ids
        say(op="add", ids=ids, texts=texts)
        say(try_cycle=n)
        sleep.run_cycle(m.core, now=time.time() + n * 75 * 86400)
        say(op="cycle", n=n)
""")


def seed(home: Path) -> None:
    from latentmem import Memory

    with Memory(home, embedder="hash") as m:
        m.add([f"seeded fact {i} about godwit{i}" for i in range(60)], user_id="ana",
              session_id="seed")


def verify(home: Path, lines: list[dict[str, Any]]) -> dict[str, Any]:
    from latentmem import Memory
    from latentmem.errors import NotFoundError

    problems: list[str] = []
    adds = [x for x in lines if x.get("op") == "add"]
    cycles = sum(x.get("op") == "cycle" for x in lines)
    checked = undone = 0
    with Memory(home, embedder="hash") as m:
        m.settle()
        for ack in adds:
            for rid in ack["ids"]:
                checked += 1
                try:
                    m.get(rid)
                    continue
                except NotFoundError:
                    pass
                try:
                    events = m.explain(rid)
                except NotFoundError:
                    problems.append(f"acknowledged {rid} is gone without an event")
                    continue
                if not any(e["undoable"] for e in events):
                    problems.append(f"{rid} was taken by {[e['action'] for e in events]}, "
                                    "which cannot be undone")
        report = m.check()
        problems += [f"check: {p}" for p in report["problems"]]
        newest = m.journal(1)
        if newest and newest[0]["cycle"] is not None:
            for _ in range(3):
                # read again each time: one undo may settle others (a merge's sources)
                events = [e for e in m.journal(10_000, cycle=newest[0]["cycle"])
                          if e["undoable"]]
                if not events:
                    break
                event = events[0]
                m.undo(event["seq"])
                undone += 1
                if event["record_id"] is not None and event["action"] != "merge":
                    try:
                        m.get(event["record_id"])
                    except NotFoundError:
                        problems.append(f"undo of event {event['seq']} ({event['action']}) did "
                                        f"not bring {event['record_id']} back")
            after = m.check()
            problems += [f"check after undo: {p}" for p in after["problems"]]
        live = m.store.count()
    return {"acknowledged_writes": len(adds) + cycles, "records_checked": checked, "live": live,
            "cycles_finished": cycles, "undone": undone,
            "in_flight": bool(lines) and ("try_" in lines[-1] or "try_cycle" in lines[-1]),
            "problems": problems}
