"""Importing conversations: LoCoMo-format files and plain chat JSON.

LoCoMo (snap-research/locomo): a JSON list of samples, each with a
``conversation`` holding ``speaker_a``, ``speaker_b``, ``session_N`` (lists of
turns ``{speaker, dia_id, text, [blip_caption, img_url]}``) and
``session_N_date_time``. Each sample becomes one user (its ``sample_id``,
unless the caller names a user), each session a ``session_id``
(``session_N``), and each turn a memory spoken by its speaker, dated at the
session's date-time plus one second per turn so the order inside a session
survives any sort by time. A shared photo is kept as " [shares a photo:
<caption>]" after the text: the caption is what the other speaker reacted
to. The turn's ``dia_id`` goes into metadata (provenance), nowhere else.

Chat JSON: a list of ``{role, content, [name], [timestamp]}`` messages, or an
object ``{"messages": [...], ["session_id"], ["user_id"]}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from latentmem.errors import InvalidInputError
from latentmem.retrieve.timeparse import parse_time

Progress = Callable[[int, int], None]
_SESSION = re.compile(r"^session_(\d+)$")


def _load_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: not valid JSON ({exc})") from exc


def turn_text(turn: dict[str, Any]) -> str:
    text = str(turn.get("text", ""))
    caption = turn.get("blip_caption")
    return f"{text} [shares a photo: {caption}]" if caption else text


def locomo_sessions(sample: dict[str, Any], where: str) -> list[tuple[str, Any, list[dict]]]:
    """(session_id, date, turns) in session order."""
    conv = sample.get("conversation")
    if not isinstance(conv, dict):
        raise InvalidInputError(f"{where}: missing 'conversation'")
    numbered = sorted(
        (int(m.group(1)), key) for key in conv if (m := _SESSION.match(key))
    )
    out = []
    for _, key in numbered:
        turns = conv[key]
        if not isinstance(turns, list):
            raise InvalidInputError(f"{where}: {key} must be a list of turns")
        if turns:
            out.append((key, conv.get(f"{key}_date_time"), turns))
    return out


def import_locomo(memory: Any, path: Path, user_id: str | None = None,
                  progress: Progress | None = None) -> int:
    data = _load_json(path)
    if not isinstance(data, list):
        data = [data]
    plan = []
    for i, sample in enumerate(data):
        where = f"{path}: sample {i}"
        if not isinstance(sample, dict):
            raise InvalidInputError(f"{where}: expected an object")
        user = user_id or str(sample.get("sample_id") or f"sample-{i}")
        for session_id, date, turns in locomo_sessions(sample, where):
            start = parse_time(date, f"{where}: {session_id}_date_time") if date else None
            messages = []
            for j, turn in enumerate(turns):
                if not isinstance(turn, dict) or "text" not in turn:
                    raise InvalidInputError(f"{where}: {session_id} turn {j} has no text")
                meta = {"sample_id": sample.get("sample_id")}
                for key in ("dia_id", "img_url", "query"):
                    if turn.get(key):
                        meta[key] = turn[key]
                messages.append({
                    "role": None,
                    "name": turn.get("speaker"),
                    "content": turn_text(turn),
                    "event_time": start + timedelta(seconds=j) if start else None,
                    "metadata": meta,
                })
            plan.append((user, session_id, messages))
    total = sum(len(m) for _, _, m in plan)
    done = 0
    for user, session_id, messages in plan:
        memory.add(messages, user_id=user, session_id=session_id)
        done += len(messages)
        if progress:
            progress(done, total)
    return done


def import_chat(memory: Any, path: Path, user_id: str | None = None,
                progress: Progress | None = None) -> int:
    data = _load_json(path)
    session_id = None
    if isinstance(data, dict):
        session_id = data.get("session_id")
        user_id = user_id or data.get("user_id")
        data = data.get("messages")
    if not isinstance(data, list) or not data:
        raise InvalidInputError(f"{path}: expected a non-empty list of messages")
    receipt = memory.add(data, user_id=user_id, session_id=session_id)
    if progress:
        progress(len(receipt.ids), len(receipt.ids))
    return len(receipt.ids)


CONVERSATION_FORMATS: dict[str, Callable[..., int]] = {
    "locomo": import_locomo,
    "chat": import_chat,
}
