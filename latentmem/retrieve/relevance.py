"""Calibrated relevance: the probability that a hit helps answer its query.

Why. A hit's ``score`` is a position among the candidates of one query: the fusion and
every later stage normalise within the query (the best candidate scores about 1), so a
store with nothing about the question still returns a top hit scored near 1, and the
same score means different things for two queries. An application needs a number it can
hold a threshold against: "keep what is likely to help", and "nothing here is relevant".

What. ``relevance`` estimates P(the memory holds evidence for the query | the features
of the hit), from features that mean the same in every query and every store:

* ``cos``: the cosine of the memory to the query (absolute, not rank-normalised);
* ``cos_gap``: ``cos`` minus the best cosine among the query's candidates, so a hit well
  below what the store offers for this query reads as weaker;
* ``top_cos``: that best cosine, the query-level "does anything here match";
* ``coverage``: the share of the query's content words (stemmed as BM25 stems them,
  stopwords out) that the memory's text holds;
* ``log_position``: log(1 + the hit's place in the final ranking);
* ``lexical`` / ``dense``: whether the hit came in from BM25's / the dense top-N, and
  ``other_speaker``: the query names one speaker and someone else said this;
* ``learned``: the last stage's logit (retrieve/learned.py: the earlier score, the place,
  the length relative to the speaker's, a question mark), computed for the hits even
  where that stage does not reorder them (``context`` by default);
* ``user_role``: the memory is a message a user wrote in a chat with an assistant (role
  "user"). In chat logs the user's own messages hold what is asked about them far more
  often than the assistant's long answers (LongMemEval dev, top 20: 14% of user
  messages are evidence, 1.4% of the assistant's); conversations between people
  (LoCoMo) have no roles, so it is 0 there.

The model is logistic regression over those features, fitted without class weights
(class weights buy recall of a ranker but bias the probabilities) on the top 20 hits of
every dev question with evidence (LoCoMo and LongMemEval): an evidence turn is a
positive, every other hit a negative. Questions whose answer the store does not hold are
negatives too: each store is also asked some of another store's questions, of its own
data set and of the other one ("foreign"); without them the model never sees a store
with nothing relevant and cannot learn that a weak best cosine means exactly that. The
two data sets weigh the same in the fit (LoCoMo has eight times LongMemEval's questions),
and within each the foreign questions together weigh no more than the answerable ones
(``bench/calibration.py``, ``FOREIGN_WEIGHT``): a LongMemEval store holds one question
and is asked about nine foreign ones, and at that ratio the fit learned that
LongMemEval's hits are mostly negatives and underestimated its answerable ones (ECE
0.082 cross-validated on its 96 dev questions).
``latentmem bench fit-relevance`` fits it, reports the cross-validated calibration (leave
one LoCoMo conversation out; LongMemEval questions in five folds) and writes
``latentmem/data/relevance.json`` with the command and data that made it. The features
come from the final ranking, so the file is refitted whenever the ranking stages change
(``--samples`` keeps the searched questions, so a change of features refits in seconds).

The trade-off measured (BENCHMARKS.md, "Calibrated relevance"): without the foreign
questions both data sets were calibrated within 0.04 (ECE), but a question about nothing
in a store scored almost what the right answer did; with them at full weight a query
about nothing scores a third to a sixth of the answer's relevance, and LongMemEval's
answerable hits are underestimated (ECE 0.082). With the foreign weight capped and the
role feature (each alone is not enough: 0.063 and 0.077), both data sets are within 0.05
cross-validated (LoCoMo 0.026, LongMemEval 0.033), and the share of foreign questions
asked of a LongMemEval store whose every hit is below 0.5 goes from 0.998 to 0.987.

Rejected: the text's length as a feature (no gain in cross-validation once the last
stage's logit, which holds length relative to the speaker's, is in); the final
``score`` itself (its scale depends on which stages are on, so a config change would
silently decalibrate); raw BM25 (it grows with the store's size through idf; coverage
carries the signal on a fixed scale). Not tried: isotonic regression on the score, which
could not use the query-level features that tell "nothing here" apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.errors import InvalidInputError
from latentmem.store.lexicon import Lexicon, query_words
from latentmem.types import Hit

FEATURES = ("cos", "cos_gap", "top_cos", "coverage", "log_position", "lexical", "dense",
            "other_speaker", "learned", "user_role")

_lexicon: Lexicon | None = None


def _stems(texts: list[str]) -> list[set[str]]:
    global _lexicon
    if _lexicon is None:
        _lexicon = Lexicon()
    return [set(c) for c in _lexicon.terms(texts)]


def features(query: str, hits: Sequence[Hit]) -> np.ndarray:
    """One row of ``FEATURES`` per hit. The hits are a prefix of one search's ranking;
    ``components`` must hold what ``retrieve.search`` puts there (``dense``,
    ``top_dense``, ``position``, and the first-stage ranks)."""
    if not hits:
        return np.zeros((0, len(FEATURES)))
    words = " ".join(query_words(query))
    found = _stems([words, *[_indexed(h) for h in hits]])
    asked, held = found[0], found[1:]
    rows = []
    for hit, stems in zip(hits, held, strict=True):
        c = hit.components
        cos = float(c.get("dense", 0.0))
        top = float(c.get("top_dense", cos))
        rows.append((
            cos,
            cos - top,
            top,
            len(asked & stems) / len(asked) if asked else 0.0,
            math.log1p(float(c.get("position", 0.0))),
            float("bm25_rank" in c),
            float("dense_rank" in c),
            float(c.get("other_speaker", 0.0)),
            float(c.get("learned", c.get("learned_view", 0.0))),
            float(hit.record.role == "user"),
        ))
    return np.asarray(rows, dtype=np.float64)


def _indexed(hit: Hit) -> str:
    text = hit.record.text or ""
    return f"{hit.record.speaker}: {text}" if hit.record.speaker else text


@dataclass(frozen=True)
class Calibrator:
    """A fitted logistic model over ``FEATURES`` (standardised by ``mean`` / ``scale``)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = np.clip(z @ np.asarray(self.weights) + self.bias, -30.0, 30.0)
        return np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=np.float64)

    def to_json(self) -> str:
        return json.dumps({"features": list(FEATURES), **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "relevance model") -> Calibrator:
        try:
            data = json.loads(text)
            if data.get("features") != list(FEATURES):
                raise ValueError(f"features {data.get('features')} != {list(FEATURES)}")
            model = cls(tuple(map(float, data["weights"])), float(data["bias"]),
                        tuple(map(float, data["mean"])), tuple(map(float, data["scale"])),
                        dict(data.get("meta", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"{source} is not a latentmem relevance model: {exc}") from exc
        if not (len(model.weights) == len(model.mean) == len(model.scale) == len(FEATURES)):
            raise InvalidInputError(f"{source}: expected {len(FEATURES)} weights, means and scales")
        if any(not s > 0 for s in model.scale):
            raise InvalidInputError(f"{source}: scales must be > 0")
        return model

    @classmethod
    def load(cls, path: str | Path) -> Calibrator:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InvalidInputError(f"relevance model {path} cannot be read: {exc}") from exc
        return cls.from_json(text, str(path))


@lru_cache(maxsize=1)
def default_calibrator() -> Calibrator:
    text = resources.files("latentmem").joinpath("data/relevance.json").read_text()
    return Calibrator.from_json(text, "latentmem/data/relevance.json")


def annotate(query: str, hits: Sequence[Hit], model: Calibrator | None = None) -> None:
    """Set each hit's ``relevance`` (in place)."""
    model = model or default_calibrator()
    for hit, p in zip(hits, model.predict(features(query, hits)).tolist(), strict=True):
        hit.relevance = round(float(p), 6)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 300,
        weights: np.ndarray | None = None) -> Calibrator:
    """L2 logistic regression by Newton's method (deterministic: the same examples give
    the same model). ``weights``: per example (never by class, which would bias the
    probabilities); None: all 1."""
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("need both positive and negative examples to fit")
    weight = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.column_stack([(x - mean) / scale, np.ones(len(y))])
    w = np.zeros(z.shape[1])
    ridge = np.full(z.shape[1], l2)
    ridge[-1] = 0.0  # the bias is not penalised
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -30, 30)))
        grad = z.T @ (weight * (p - y)) + ridge * w
        hess = (z * (weight * p * (1 - p))[:, None]).T @ z + np.diag(ridge + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return Calibrator(tuple(w[:-1].tolist()), float(w[-1]), tuple(mean.tolist()),
                      tuple(scale.tolist()))


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean prediction| over equal-width bins, weighted by count."""
    if len(p) == 0:
        return 0.0
    edges = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        mask = edges == b
        if mask.any():
            err += mask.sum() * abs(float(y[mask].mean()) - float(p[mask].mean()))
    return err / len(p)


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float | None]]:
    """Per bin: its range, how many hits, their mean prediction and their observed rate."""
    edges = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = edges == b
        n = int(mask.sum())
        out.append({"low": b / bins, "high": (b + 1) / bins, "n": n,
                    "predicted": round(float(p[mask].mean()), 4) if n else None,
                    "observed": round(float(y[mask].mean()), 4) if n else None})
    return out
