"""LongMemEval: one haystack of chat sessions per question.

Input is the official format (JSON or JSON.gz). Each question gets a fresh
store over its haystack with the haystack dates as event times. Turn keys are
``<session_id>#<index>``; the gold turns are those marked ``has_answer``, the
gold sessions are ``answer_session_ids``. A session-level ranking is read off
the turn ranking (first appearance of each session). Abstention questions
(ids ending in ``_abs``) are answered but reported apart. The speaker of a
turn is its role ("user" / "assistant"). Blank turns are left out (the engine refuses
an empty text); the others keep their index in the key. Each question is asked at its
``question_date`` (``now`` of ``Memory.search``): "ten days ago" means ten days before it,
as the data intends, not before the haystack's last session.
"""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path

from latentmem.bench.runner import Question, Unit
from latentmem.bench.systems import Session, Turn
from latentmem.errors import InvalidInputError
from latentmem.retrieve.timeparse import parse_time


def load_longmemeval(path: str | Path, limit: int | None = None,
                     per_type: int | None = None) -> list[Unit]:
    """``limit``: the first N questions; ``per_type``: the first N of each question type
    (a stratified subset, since files are often sorted by type)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: not valid LongMemEval JSON ({exc})") from exc
    if per_type:
        taken: dict[str, int] = {}
        kept = []
        for item in data:
            kind = str(item.get("question_type"))
            if taken.get(kind, 0) < per_type:
                taken[kind] = taken.get(kind, 0) + 1
                kept.append(item)
        data = kept
    units = []
    for item in data[:limit] if limit else data:
        sessions = []
        gold: list[str] = []
        gold_texts: list[str] = []
        for sid, date, turns in zip(item["haystack_session_ids"], item["haystack_dates"],
                                    item["haystack_sessions"], strict=True):
            start = parse_time(date)
            session = Session(str(sid))
            for j, t in enumerate(turns):
                if not str(t["content"]).strip():
                    continue  # the data has blank turns (one in the dev subset); keys keep j
                key = f"{sid}#{j}"
                turn = Turn(key, str(t["content"]), str(t["role"]), str(t["role"]),
                            start + timedelta(seconds=j) if start else None)
                session.turns.append(turn)
                if t.get("has_answer"):
                    gold.append(key)
                    gold_texts.append(turn.text)
            sessions.append(session)
        qid = str(item["question_id"])
        question = Question(
            id=qid, category=str(item["question_type"]), text=str(item["question"]),
            gold=gold, gold_texts=gold_texts,
            gold_sessions=[str(s) for s in item.get("answer_session_ids", [])],
            apart=qid.endswith("_abs"),
            asked_at=parse_time(item["question_date"]) if item.get("question_date") else None,
        )
        units.append(Unit(qid, sessions, [question]))
    return units
