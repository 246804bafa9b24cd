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

All or nothing: a LoCoMo file becomes one ``Memory.add`` per session, so every
session is built and checked first, by the same ``normalise_items`` and scope
checks that ``add`` runs, and only then is anything written. Ids and texts must
be strings: a ``sample_id`` that is a list is refused, not turned into the user
``"['x']"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from latentmem.errors import InvalidInputError
from latentmem.inputs import check_scope_value, normalise_items
from latentmem.retrieve.timeparse import parse_time
from latentmem.store.formats.files import parse_json, read_text

Progress = Callable[[int, int], None]
_SESSION = re.compile(r"^session_([0-9]{1,9})$")


def _load_json(path: Path) -> Any:
    return parse_json(read_text(path), str(path))


def turn_text(turn: dict[str, Any]) -> str:
    text = str(turn.get("text", ""))
    caption = turn.get("blip_caption")
    return f"{text} [shares a photo: {caption}]" if caption else text


def _check_turn(turn: Any, where: str) -> None:
    if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
        raise InvalidInputError(f"{where} has no text (expected an object with a string 'text')")
    for key in ("speaker", "blip_caption"):
        if turn.get(key) is not None and not isinstance(turn[key], str):
            raise InvalidInputError(f"{where}: {key} must be a string, found "
                                    f"{type(turn[key]).__name__}")


def _turn_time(start: datetime | None, turn: int, where: str) -> datetime | None:
    try:
        return start + timedelta(seconds=turn) if start else None
    except OverflowError as exc:
        raise InvalidInputError(f"{where}: no room for one second per turn before year "
                                "10000") from exc


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
    storage = memory.config.storage
    plan = []
    for i, sample in enumerate(data):
        where = f"{path}: sample {i}"
        if not isinstance(sample, dict):
            raise InvalidInputError(f"{where}: expected an object")
        sample_id = sample.get("sample_id")
        if sample_id is not None and not isinstance(sample_id, str):
            raise InvalidInputError(f"{where}: sample_id must be a string, found "
                                    f"{type(sample_id).__name__}")
        user = user_id or sample_id or f"sample-{i}"
        check_scope_value("user_id", user)
        for session_id, date, turns in locomo_sessions(sample, where):
            if date is not None and not isinstance(date, str):
                raise InvalidInputError(f"{where}: {session_id}_date_time must be a string")
            start = parse_time(date, f"{where}: {session_id}_date_time") if date else None
            messages = []
            for j, turn in enumerate(turns):
                _check_turn(turn, f"{where}: {session_id} turn {j}")
                meta = {"sample_id": sample_id}
                for key in ("dia_id", "img_url", "query"):
                    if turn.get(key):
                        meta[key] = turn[key]
                messages.append({
                    "role": None,
                    "name": turn.get("speaker"),
                    "content": turn_text(turn),
                    "event_time": _turn_time(start, j, f"{where}: {session_id}_date_time"),
                    "metadata": meta,
                })
            normalise_items(messages, {}, storage.max_batch, storage.max_text_chars)
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
