"""Packing hits into a token budget: the text the next prompt sees.

Selection is greedy by score: each hit is taken if it fits in what is left of
the budget, otherwise it is reported as omitted and smaller ones are still
tried. Exact duplicates (same content hash) are dropped. The selected pieces
are then laid out in event-time order, because an LLM reasons about "before"
and "after" far better from a timeline than from a relevance list. Each line
is ``[mN] YYYY-MM-DD HH:MM Speaker: text``; the short ``mN`` reference maps
to the record id in ``Context.items`` (a 26-character id would cost ~15
tokens per line, a quarter of a typical turn).
"""

from __future__ import annotations

from collections.abc import Sequence

from latentmem.retrieve.tokens import TOKENIZER_NAME, count_many, count_tokens
from latentmem.types import Context, ContextItem, Hit


def _line(ref: int, hit: Hit) -> str:
    rec = hit.record
    when = rec.event_time.strftime("%Y-%m-%d %H:%M") if rec.event_time else "undated"
    who = f"{rec.speaker}: " if rec.speaker else ""
    body = rec.text if rec.text is not None else f"(reconstructed) {rec.summary}"
    return f"[m{ref}] {when} {who}{body}"


def _when(hit: Hit) -> float:
    event = hit.record.event_time
    return event.timestamp() if event is not None else float("inf")


def pack(query: str, hits: Sequence[Hit], budget_tokens: int) -> Context:
    chosen: list[tuple[Hit, int]] = []
    omitted: list[dict[str, object]] = []
    seen: dict[str, str] = {}
    used = 0
    # Cost with the widest ref we will print, so the final text never exceeds the budget.
    costs = count_many([_line(9999, h) for h in hits])
    for hit, cost in zip(hits, costs, strict=True):
        key = hit.record.content_hash
        if key and key in seen:
            omitted.append({"id": hit.id, "reason": f"duplicate of {seen[key]}", "score": hit.score})
            continue
        if used + cost > budget_tokens:
            omitted.append({"id": hit.id, "reason": "budget", "score": hit.score, "tokens": cost})
            continue
        chosen.append((hit, cost))
        used += cost
        if key:
            seen[key] = hit.id
    chosen.sort(key=lambda hc: (_when(hc[0]), hc[0].id))
    lines = []
    items = []
    for ref, (hit, _) in enumerate(chosen, start=1):
        line = _line(ref, hit)
        lines.append(line)
        rec = hit.record
        items.append(
            ContextItem(
                id=rec.id,
                text=rec.text or "",
                tokens=0,
                score=hit.score,
                event_time=rec.event_time,
                session_id=rec.session_id,
                speaker=rec.speaker,
            )
        )
    text = "\n".join(lines)
    for item, line in zip(items, lines, strict=True):
        item.tokens = count_tokens(line)
    return Context(
        query=query,
        text=text,
        budget_tokens=budget_tokens,
        used_tokens=count_tokens(text),
        items=items,
        omitted=omitted,
        tokenizer=TOKENIZER_NAME,
    )
