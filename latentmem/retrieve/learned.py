"""The last stage of a search: a small fitted model reorders the top of the ranking.

Why. Every earlier stage scores a memory by how well it matches the query. Two
things that predict whether a memory holds an answer are not about matching:

* *Length.* A longer turn carries more facts. Both first-stage retrievers are
  biased the other way: BM25 normalises by length (b = 0.75) and a mean-pooled
  MiniLM vector of a long text is diluted by everything else the text says.
  On LoCoMo dev, evidence turns are about 50 WordPiece tokens against 39 for
  the other top-100 candidates.
* *Asking.* A turn that asks a question ("Where did you go?") is rarely where
  the answer is; the reply is.

Model. Logistic regression over four features of each of the top ``depth``
candidates: the score of the earlier stages, log(1 + position) in their
ranking, log(1 + characters) minus its median over the candidates *of the same
speaker*, and whether the text contains a question mark. Length is relative
to the speaker because speakers differ in verbosity: an assistant's replies
are long whatever they hold. Relative to all candidates instead, the model
fitted on LoCoMo (two people talking) pushed long assistant turns up on
LongMemEval and cut its turn recall@10 from 0.890 to 0.728 (27 dev questions);
per speaker it is 0.878, and LoCoMo's held-out recall@10 gains the same.
The weights live in ``latentmem/data/ranker.json`` and are *fitted*, not set
by hand: ``latentmem bench fit-ranker`` fits them on the fit part of the LoCoMo
dev data (conv-26 and conv-30) with this stage switched off, and writes the
file with the command and data that produced it. The ablation table in
BENCHMARKS.md shows the held-out effect (``- learned rerank``). The stage reads the earlier
stages' scores, so it is refitted when they change: last on 2026-11-30 after the diffusion
length gate (held-out R@10 0.795 -> 0.796 against the earlier weights, LongMemEval dev
R@5 0.761 -> 0.771), and again after speaker names left the query vector (eb61759): LoCoMo
held-out R@10 0.800 -> 0.806 against the earlier weights, but LongMemEval dev turn R@10
0.895 -> 0.870 (its fit half 0.871 -> 0.830, its reported half 0.919 -> 0.909; the
length weight fell from 0.87 to 0.47). Fitting on LoCoMo's fit part *and* LongMemEval's
even-numbered questions was tried and was worse on both held-out parts (LoCoMo held-out
R@10 0.7995 against 0.804 for the LoCoMo-only fit, measured the same way; LongMemEval odd
half 0.869 against 0.909), so the fit stays on LoCoMo alone.

The new score of a reordered memory is the model's output squashed to (0, 1);
the candidates below ``depth`` keep their order after them. A memory without
stored text (lossy) gets the median length and "does not ask".

Rejected: cost-aware packing (prefer short memories per token of budget) lost
context recall, because evidence turns are the longer ones; a
"previous turn + this turn" second dense vector (contextualised embedding) found
more evidence alone but nothing on top of diffusion, at twice the add cost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from latentmem.errors import InvalidInputError

FEATURES = ("score", "log_position", "relative_length", "asks")


def features(scores: Sequence[float], lengths: Sequence[int | None],
             asks: Sequence[bool], speakers: Sequence[str | None]) -> np.ndarray:
    """One row per candidate, in ranking order (``scores`` sorted as ranked)."""
    n = len(scores)
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    by_speaker: dict[str | None, list[int]] = {}
    for i, sp in enumerate(speakers):
        by_speaker.setdefault(sp, []).append(i)
    relative = np.zeros(n)
    for members in by_speaker.values():
        known = [x for x in (lengths[i] for i in members) if x is not None]
        median_len = float(np.median(known)) if known else 0.0
        for i in members:
            length = lengths[i]
            relative[i] = math.log1p(median_len if length is None else length) - math.log1p(median_len)
    return np.column_stack([
        np.asarray(scores, dtype=np.float64),
        np.log1p(np.arange(n, dtype=np.float64)),
        relative,
        np.asarray(asks, dtype=np.float64),
    ])


@dataclass(frozen=True)
class Ranker:
    """A fitted logistic model over ``FEATURES`` (standardised by ``mean`` / ``scale``)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    depth: int = 100
    meta: dict[str, Any] = field(default_factory=dict)

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.asarray(z @ np.asarray(self.weights) + self.bias, dtype=np.float64)

    def to_json(self) -> str:
        return json.dumps({"features": list(FEATURES), **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "ranker") -> Ranker:
        try:
            data = json.loads(text)
            if data.get("features") != list(FEATURES):
                raise ValueError(f"features {data.get('features')} != {list(FEATURES)}")
            ranker = cls(tuple(map(float, data["weights"])), float(data["bias"]),
                         tuple(map(float, data["mean"])), tuple(map(float, data["scale"])),
                         int(data.get("depth", 100)), dict(data.get("meta", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"{source} is not a latentmem ranker: {exc}") from exc
        if not (len(ranker.weights) == len(ranker.mean) == len(ranker.scale) == len(FEATURES)):
            raise InvalidInputError(f"{source}: expected {len(FEATURES)} weights, means and scales")
        if ranker.depth < 1 or any(s <= 0 for s in ranker.scale):
            raise InvalidInputError(f"{source}: depth must be >= 1 and scales > 0")
        return ranker

    @classmethod
    def load(cls, path: str | Path) -> Ranker:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InvalidInputError(f"ranker file {path} cannot be read: {exc}") from exc
        return cls.from_json(text, str(path))


@lru_cache(maxsize=1)
def default_ranker() -> Ranker:
    text = resources.files("latentmem").joinpath("data/ranker.json").read_text()
    return Ranker.from_json(text, "latentmem/data/ranker.json")


Scored = tuple[float, str, int, dict[str, float]]


class Row(Protocol):
    speaker: str | None
    text_chars: int | None
    asks: bool


def logits(scored: list[Scored], rows: Mapping[int, Row], ranker: Ranker) -> list[float]:
    """The model's logit for each of the top ``ranker.depth`` of ``scored``, in order,
    without reordering: what the calibrated relevance reads when the stage is off."""
    head = scored[: ranker.depth]
    if not head:
        return []
    heads = [rows[rowid] for _, _, rowid, _ in head]
    x = features([s for s, _, _, _ in head], [r.text_chars for r in heads], [r.asks for r in heads],
                 [r.speaker for r in heads])
    return [float(v) for v in ranker.logits(x)]


def rerank(scored: list[Scored], rows: Mapping[int, Row], ranker: Ranker) -> list[Scored]:
    """Reorder the top ``ranker.depth`` of ``scored`` (score, id, rowid, parts); ``rows``
    maps each rowid to its text length and question mark (a store ``LightRow``)."""
    head, tail = scored[: ranker.depth], scored[ranker.depth :]
    if not head:
        return scored
    heads = [rows[rowid] for _, _, rowid, _ in head]
    x = features([s for s, _, _, _ in head], [r.text_chars for r in heads], [r.asks for r in heads],
                 [r.speaker for r in heads])
    z = ranker.logits(x)
    new = 1.0 / (1.0 + np.exp(-z))
    out: list[Scored] = []
    for (_, rid, rowid, parts), logit, score in zip(head, z.tolist(), new.tolist(), strict=True):
        out.append((score, rid, rowid, {**parts, "learned": logit, "final": score}))
    out.sort(key=lambda s: (-s[0], s[1]))
    # What the model did not see stays below it, in its order.
    floor = out[-1][0] if out else 0.0
    return out + [(min(s, floor), rid, rowid, parts) for s, rid, rowid, parts in tail]
