"""Packing hits into a token budget: the text the next prompt sees.

Selection is greedy by score: each hit is taken if it fits in what is left of
the budget, otherwise it is reported as omitted and smaller ones are still
tried. Exact duplicates (same content hash) are dropped.

Layout. The selected memories are grouped by session (or, without a session,
by day), groups in time order and memories in time order inside a group,
because an LLM reasons about "before" and "after" far better from a timeline
than from a relevance list. Each group opens with one header line carrying
the date, time and session; each memory is then ``[N] Speaker: text``, where
``N`` maps to the record id in ``Context.items``. Putting the date on every
line, and a 26-character id, cost ~12 tokens a line, a third of a typical
conversation turn: grouping raised LoCoMo dev context recall at 1,000 tokens
from 0.82 to the figure in BENCHMARKS.md. A group's header is charged to the
budget when its first memory is selected, so the text never exceeds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from latentmem.retrieve.tokens import TOKENIZER_NAME, count_many, count_tokens
from latentmem.types import Context, ContextItem, Hit

_WIDEST_REF = 9999


def _body(ref: int, hit: Hit) -> str:
    rec = hit.record
    who = f"{rec.speaker}: " if rec.speaker else ""
    if rec.text is not None:
        body = rec.text
    elif rec.summary:
        body = f"(reconstructed) {rec.summary}"
    else:  # lossy and no inverter: say so rather than show nothing
        body = "(text not kept)"
    return f"[{ref}] {who}{body}"


def _group(hit: Hit) -> tuple[str, str]:
    """(key, header) of the group a memory is shown under."""
    rec = hit.record
    when = rec.event_time
    day = when.strftime("%Y-%m-%d") if when else "undated"
    if rec.session_id is not None:
        return f"s:{rec.session_id}", f"## session {rec.session_id},"
    return f"d:{day}", "##"


def _header(base: str, first: datetime | None) -> str:
    when = first.strftime("%Y-%m-%d %H:%M (%a)") if first is not None else "undated"
    return f"{base} {when}"


def _when(hit: Hit) -> float:
    event = hit.record.event_time
    return event.timestamp() if event is not None else float("inf")


def pack(query: str, hits: Sequence[Hit], budget_tokens: int) -> Context:
    chosen: list[Hit] = []
    omitted: list[dict[str, object]] = []
    seen: dict[str, str] = {}
    opened: set[str] = set()
    used = 0
    # Charge each line as if it carried the widest ref, and each header as if it held
    # a full date, so the final text is never over budget.
    costs = count_many([_body(_WIDEST_REF, h) for h in hits])
    header_costs = count_many(
        [_header(_group(h)[1], datetime(2000, 12, 30, 23, 59)) for h in hits]
    )
    for hit, cost, hcost in zip(hits, costs, header_costs, strict=True):
        key = hit.record.content_hash
        if key and key in seen:
            omitted.append({"id": hit.id, "reason": f"duplicate of {seen[key]}", "score": hit.score})
            continue
        group = _group(hit)[0]
        need = cost + (0 if group in opened else hcost)
        if used + need > budget_tokens:
            omitted.append({"id": hit.id, "reason": "budget", "score": hit.score, "tokens": need})
            continue
        chosen.append(hit)
        opened.add(group)
        used += need
        if key:
            seen[key] = hit.id

    groups: dict[str, list[Hit]] = {}
    for hit in chosen:
        groups.setdefault(_group(hit)[0], []).append(hit)
    ordered = sorted(groups.values(), key=lambda g: min(_when(h) for h in g))
    lines: list[str] = []
    items: list[ContextItem] = []
    ref = 0
    for members in ordered:
        members.sort(key=lambda h: (_when(h), h.id))
        first = members[0].record.event_time
        lines.append(_header(_group(members[0])[1], first))
        for hit in members:
            ref += 1
            line = _body(ref, hit)
            lines.append(line)
            rec = hit.record
            items.append(
                ContextItem(
                    id=rec.id,
                    text=rec.text or "",
                    tokens=count_tokens(line),
                    score=hit.score,
                    event_time=rec.event_time,
                    session_id=rec.session_id,
                    speaker=rec.speaker,
                    ref=ref,
                )
            )
    text = "\n".join(lines)
    return Context(
        query=query,
        text=text,
        budget_tokens=budget_tokens,
        used_tokens=count_tokens(text),
        items=items,
        omitted=omitted,
        tokenizer=TOKENIZER_NAME,
    )
