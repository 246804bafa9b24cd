"""``latentmem demo``: the main job, end to end, on the embedded default.

Builds a memory from a sample conversation written for this project
(``latentmem/data/sample_conversation.json``), shows search hits with their
score breakdown and a packed context, then exports to the seed formats,
re-imports each into an empty store and checks the round trip is exact.
"""

from __future__ import annotations

import json
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.memory import Memory

SEED_FORMATS = ("csv", "npy", "hdf5", "pickle", "jsonl")


def load_sample() -> dict[str, Any]:
    text = (resources.files("latentmem") / "data" / "sample_conversation.json").read_text()
    return json.loads(text)


def _same(a: Memory, b: Memory) -> bool:
    ra, _ = a.export_rows()
    rb, _ = b.export_rows()
    if len(ra) != len(rb):
        return False
    for x, y in zip(sorted(ra, key=lambda r: r.id), sorted(rb, key=lambda r: r.id), strict=True):
        if x.to_dict() != y.to_dict():
            return False
        assert x.vector is not None and y.vector is not None
        if x.vector.tobytes() != y.vector.tobytes():
            return False
    return True


def run_demo(home: str | None = None, json_out: bool = False) -> int:
    from latentmem.store import formats

    root = Path(home) if home else Path(tempfile.mkdtemp(prefix="latentmem-demo-"))
    sample = load_sample()
    user = sample["user_id"]
    report: dict[str, Any] = {"home": str(root)}
    say = (lambda *a, **k: None) if json_out else print

    say(f"latentmem demo: building a memory in {root}/store")
    t0 = time.perf_counter()
    with Memory(root / "store") as m:
        m.delete_all(user)
        load_s = time.perf_counter() - t0
        turns = 0
        add_ms: list[float] = []
        for session in sample["sessions"]:
            receipt = m.add(
                session["messages"], user_id=user, session_id=session["session_id"],
                event_time=session["date"],
            )
            turns += len(receipt.ids)
            add_ms.append(receipt.timings_ms["total"])
        say(f"  remembered {turns} turns in {len(sample['sessions'])} sessions "
            f"({sum(add_ms):.0f} ms incl. embedding; model load {load_s:.1f} s)\n")
        report["turns"] = turns
        report["searches"] = []
        for question in sample["questions"]:
            t = time.perf_counter()
            hits = m.search(question, user_id=user, k=3)
            ms = (time.perf_counter() - t) * 1e3
            say(f"? {question}   ({ms:.1f} ms)")
            for rank, hit in enumerate(hits, start=1):
                rec = hit.record
                say(f"  {rank}. {rec.speaker}: {rec.text}")
                say(f"     {hit.explain()}")
            report["searches"].append({"query": question, "ms": ms, "hits": [h.to_dict() for h in hits]})
            say("")
        ctx = m.context("What should I know about Maya's plans for November?", user_id=user,
                        budget_tokens=160)
        say("Packed context for \"What should I know about Maya's plans for November?\" "
            f"({ctx.used_tokens}/{ctx.budget_tokens} tokens, {ctx.tokenizer}):")
        say("  " + ctx.text.replace("\n", "\n  "))
        say(f"  left out: {len(ctx.omitted)} lower-ranked memories (over budget or duplicate)\n")
        report["context"] = ctx.to_dict()
        when = m.context("When did the piano arrive?", user_id=user, budget_tokens=140)
        say("A \"when\" question gets the dates its memories' relative times stand for:")
        say("  " + when.text.replace("\n", "\n  ") + "\n")
        report["context_when"] = when.to_dict()

        say("Export, re-import into an empty store, compare:")
        report["formats"] = {}
        for fmt in SEED_FORMATS:
            target = root / "export" / fmt
            n_out = formats.export_memory(m, target, fmt)
            size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) \
                if target.is_dir() else target.stat().st_size
            with Memory(root / f"reimport-{fmt}", embedder=m.config.embedder) as fresh:
                n_in = formats.import_into(fresh, target, fmt)
                ok = _same(m, fresh)
                probe = fresh.search(sample["questions"][0], user_id=user, k=1, track_access=False)
            report["formats"][fmt] = {"exported": n_out, "imported": n_in, "bytes": size,
                                      "exact": ok}
            say(f"  {fmt:<7} {n_out:>3} out, {n_in:>3} in, {size:>8,} bytes, "
                f"round trip {'exact' if ok else 'MISMATCH'}; top hit after import: "
                f"{probe[0].text if probe else '-'}")
            if not ok:
                return 1
        vec = m.get(report["searches"][0]["hits"][0]["id"], include_vector=True).vector
        report["vector_norm"] = float(np.linalg.norm(vec)) if vec is not None else None
    report["seconds"] = time.perf_counter() - t0
    say(f"\ndone in {report['seconds']:.1f} s. Try: latentmem --home {root}/store ... "
        f"e.g. latentmem search \"who is Pastel\" --home {root}/store --user {user}")
    if json_out:
        print(json.dumps(report, indent=2, default=str))
    return 0
