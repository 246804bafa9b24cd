"""LoCoMo: turn-level evidence retrieval over long multi-session conversations.

Input is the official file (a list of samples). Each conversation goes into a
fresh store with the session date-times as event times (plus one second per
turn, to keep order) and the speakers kept; shared photos are kept as their
caption, as in ``latentmem import --format locomo``. Questions of categories
1-4 are scored; category 5 (adversarial: the answer is not in the
conversation) is answered too but reported apart. Category names follow the
official evaluation code: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop,
5 adversarial. Evidence ids are parsed defensively (some are "D8:6; D9:17").
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from latentmem.bench.metrics import parse_evidence
from latentmem.bench.runner import Question, Unit
from latentmem.bench.systems import Session, Turn
from latentmem.errors import InvalidInputError
from latentmem.retrieve.timeparse import parse_time
from latentmem.store.formats.conversations import locomo_sessions, turn_text

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


def load_locomo(path: str | Path, conversations: list[str] | None = None) -> list[Unit]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        data = [data]
    wanted = set(conversations or [])
    units = []
    for i, sample in enumerate(data):
        name = str(sample.get("sample_id", f"sample-{i}"))
        if wanted and name not in wanted:
            continue
        sessions: list[Session] = []
        texts: dict[str, str] = {}
        for session_id, date, turns in locomo_sessions(sample, f"{path}: {name}"):
            start = parse_time(date) if date else None
            session = Session(session_id)
            for j, t in enumerate(turns):
                key = str(t.get("dia_id", f"{session_id}#{j}"))
                text = turn_text(t)
                texts[key] = text
                session.turns.append(Turn(
                    key, text, t.get("speaker"), None,
                    start + timedelta(seconds=j) if start else None,
                ))
            sessions.append(session)
        questions = []
        for n, qa in enumerate(sample.get("qa", [])):
            gold = [e for e in parse_evidence(qa.get("evidence", [])) if e in texts]
            category = int(qa.get("category", 0))
            if not gold:
                continue
            questions.append(Question(
                id=f"{name}/{n}", category=CATEGORIES.get(category, str(category)),
                text=str(qa["question"]), gold=gold, gold_texts=[texts[g] for g in gold],
                apart=category == 5,
            ))
        units.append(Unit(name, sessions, questions))
    missing = wanted - {u.name for u in units}
    if missing:
        raise InvalidInputError(f"{path}: no conversations named {sorted(missing)}")
    return units


def load_split(path: str | Path, fit_text: str) -> tuple[list[Unit], set[str]]:
    """All conversations of ``path`` and the names of the fit part (``--fit a,b``); refuses
    names not in the file and a split that leaves nothing held out."""
    fit = {c.strip() for c in fit_text.split(",") if c.strip()}
    units = load_locomo(path)
    names = {u.name for u in units}
    if not fit <= names:
        raise InvalidInputError(f"--fit names {sorted(fit - names)}, not in {path}")
    if names <= fit:
        raise InvalidInputError("every conversation is in --fit: nothing is left to evaluate on")
    return units, fit
