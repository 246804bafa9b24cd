"""The importance controller: how much a memory is likely to matter, learned from use.

**Features** (no LLM, ~0.2 ms a memory; each centred and scaled by fixed constants, so a
learned weight keeps its meaning across stores):

* ``prior``: the logit of ``segment.importance_prior`` (length, numbers, dates, names,
  first person), clipped to [0.02, 0.98];
* information: content-word count (log), word entropy, type-token ratio, share of
  content words, mean content-word length;
* specifics: numbers, date or time words, named entities (``graph.entities.extract``);
* personal: first-person share, a preference cue, a first-person event ("I went", "we
  adopted"), second-person share;
* chat filler and form: phatic words (thanks, wow, congrats), question marks, a text that
  is only questions, exclamations;
* the speaker's role (user, assistant, or neither);
* ``novelty``: 1 - the highest cosine to the 32 memories stored just before it in the
  same session (the user's session-less memories count as one session). Measured on the
  LoCoMo fit conversations, this local novelty predicts evidence turns at least as well
  as novelty against the user's whole store, and it costs one indexed read of 32 rows
  instead of a scan of the user's FAISS partition (68 ms a memory at 1M). It is
  recomputed from the store, never stored, so ``rescore`` sees what ``add`` saw (unless
  memories in between were deleted since).

**Model**: logistic regression. The untrained weights are 1 on ``prior`` and 0 elsewhere,
so an untrained controller returns ``importance_prior`` (clipped) exactly.

**Learning**: every explicit feedback (``Memory.feedback``) joins a replay buffer of the
last 1,000 events, and the weights are refit on it: the L2-regularised maximum a
posteriori fit (L2 = 8 per standardised feature, chosen by cross-fitting the two LoCoMo
fit conversations), centred on the prior weights: warm-started Newton steps, each halved
until the objective falls. Deterministic, no learning rate. Feedback older than the
buffer is forgotten, so the model follows a drifting use.

What the explicit events teach. Feedback is given on *retrieved* memories, so the ones
judged not useful are not typical memories: they matched a query, and look informative.
Fitted pointwise (useful = 1, not useful = 0, one term each), the model learned what
separates useful hits from other hits, which ranks a whole store badly at first:
cross-fitted on the two fit conversations (feedback from one, AUC over every turn of the
other), 100 events took the AUC from the prior's 0.706 *down* to 0.691 (worst order
0.584). So the main term contrasts what was useful with the whole store: one row, ``mean
features of the useful events - population mean``, labelled 1 and weighted
``POSITIVE_CONTRAST`` per useful event (the same form as the implicit term below); the
pointwise events stay, weighted ``EXPLICIT_POINTWISE``, so "not useful" still counts.
Cross-fitted, 10 / 50 / 100 / 500 events: 0.714 / 0.741 / 0.748 / 0.784 (worst order at
100: 0.699), against 0.702 / 0.699 / 0.691 / 0.766 pointwise. Rejected: the contrast
alone (0.750 at 100, 0.772 at 500: negatives do help later); a "not useful - population"
contrast labelled 0 (it teaches that informative memories are unimportant: 0.58 at 100);
a heavier L2 (the model then barely moves: 0.707 at 500).

The implicit signal is which memories *lead* each context ``Memory.context`` packs: the 3
with the best retrieval scores. Their mean features, contrasted with the mean of every
memory scored since the store opened, form one pairwise term (``led mean - population
mean``) weighted by ``controller_implicit_weight`` per memory, capped at 1,000 memories,
so it cannot swamp explicit feedback. Taking every packed memory instead was measured
and rejected: the packer fills the end of its budget with whatever short turns still
fit, so "packed" leans towards short filler, and on the LoCoMo fit conversations it
taught the opposite of importance (held-out AUC 0.72 -> 0.43 in one direction); the top
5 raised it (0.72 -> 0.79, 0.69 -> 0.75). After the diffusion length gate (2026-11-30)
the leaders changed, and cross-fitted on conv-26/30 (contexts of one conversation, AUC
over the other's turns) the top 3 did better than the top 5 after 100 / 200 contexts:
0.744 / 0.748 against 0.727 / 0.730 (top 1: 0.730 / 0.732; top 10: 0.546 / 0.554).

**Output**: importance is computed with the *prior's* intercept, not the learned one.
Feedback is sampled from retrieved memories (most of which are not useful), so the fitted
intercept measures how feedback is collected, not how important memories are; leaving it
out keeps importance on the prior's scale (what forgetting thresholds expect) while the
learned slopes reorder it. A memory with explicit feedback of its own is pulled towards
it: ``(2 * score + useful) / (2 + feedback count)``.

**Persistence**: the weights, the buffer and the implicit sums are JSON in the store's
``models`` table (name ``controller``); every event is also a row of ``feedback``
(``source`` ``explicit`` or ``context``). Two
processes that both learn keep the last writer's model.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from latentmem.encode import segment
from latentmem.graph import entities
from latentmem.store.base import Scope, Store, StoredRow
from latentmem.types import Context

MODEL_NAME = "controller"
STATE_VERSION = 1
NOVELTY_WINDOW = 32
BUFFER = 1000
IMPLICIT_CAP = 1000
IMPLICIT_TOP = 3
# Explicit feedback (see the docstring): the "useful - population" contrast's weight per
# useful event, and each pointwise event's weight. Chosen by cross-fitting conv-26/conv-30.
POSITIVE_CONTRAST = 8.0
EXPLICIT_POINTWISE = 0.1
L2 = 8.0
L2_INTERCEPT = 0.1  # the intercept only absorbs how feedback was sampled
NEWTON_STEPS = 12
OWN_FEEDBACK_PRIOR = 2.0  # how many feedback events a memory's model score counts as
SAVE_EVERY_CONTEXTS = 25
FEATURE_CACHE = 20_000

FEATURES = (
    "bias", "prior", "length", "entropy", "type_token", "content_ratio", "word_length",
    "numbers", "dates", "names", "first_person", "preference", "first_person_event",
    "second_person", "phatic", "question", "question_only", "exclaim", "role_user",
    "role_assistant", "novelty",
)
# (centre, scale) of each raw feature: about the mean and standard deviation of chat turns
# (LoCoMo's fit conversations), the scale at least 0.25 for rare 0/1 cues, so that 0 is a
# typical memory and the L2 penalty treats features alike.
_NORM: dict[str, tuple[float, float]] = {
    "length": (2.7, 0.6), "entropy": (4.2, 0.8), "type_token": (0.9, 0.1),
    "content_ratio": (0.65, 0.1), "word_length": (5.3, 0.7), "numbers": (0.0, 0.25),
    "dates": (0.1, 0.3), "names": (1.2, 1.0), "first_person": (0.05, 0.05),
    "preference": (0.05, 0.25), "first_person_event": (0.1, 0.25),
    "second_person": (0.04, 0.05), "phatic": (0.07, 0.08), "question": (0.17, 0.28),
    "question_only": (0.0, 0.25), "exclaim": (0.4, 0.3), "role_user": (0.0, 0.5),
    "role_assistant": (0.0, 0.5), "novelty": (0.4, 0.17),
}
_CENTRE = np.array([0.0, 0.0] + [_NORM[f][0] for f in FEATURES[2:]])
_SCALE = np.array([1.0, 1.0] + [_NORM[f][1] for f in FEATURES[2:]])

_WORD = re.compile(r"[A-Za-z0-9']+")
_SECOND = frozenset("you your you're you've you'll yours yourself".split())
_PHATIC = frozenset(
    """thanks thank congrats congratulations wow awesome great glad hope proud amazing cool
    nice lovely happy sounds sure yeah yes hey hi hello totally definitely absolutely cute
    sweet fantastic wonderful incredible appreciate luck bye haha lol omg""".split()
)
_FIRST_PERSON_EVENT = re.compile(
    r"\b(?:i|we)\s+(?:just\s+|finally\s+|recently\s+|also\s+|actually\s+)?"
    r"(?:\w+ed|went|got|made|took|saw|met|had|did|bought|began|won|ran|found|gave|lost|left|"
    r"came|wrote|read|joined|moved|became|built|taught|drew|sold|flew|grew|spent|paid)\b",
    re.IGNORECASE,
)


def text_features(text: str | None, role: str | None, novelty: float) -> np.ndarray:
    """The normalised feature vector of one memory (``FEATURES`` order)."""
    text = text or ""
    words = [w.lower() for w in _WORD.findall(text)]
    n = max(1, len(words))
    content = [w for w in words if w not in segment._STOP]
    counts = Counter(words)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    sentences = segment.sentences(text)
    prior = min(0.98, max(0.02, segment.importance_prior(text)))
    raw = {
        "length": math.log1p(len(content)),
        "entropy": entropy,
        "type_token": len(counts) / n,
        "content_ratio": len(content) / n,
        "word_length": sum(map(len, content)) / len(content) if content else 0.0,
        "numbers": min(3, len(segment._NUMBER.findall(text))) / 3,
        "dates": 1.0 if segment._DATEISH.search(text) else 0.0,
        "names": min(4, len(entities.extract(text))),
        "first_person": len(segment._FIRST_PERSON.findall(text)) / n,
        "preference": 1.0 if segment._PREFERENCE.search(text) else 0.0,
        "first_person_event": min(2, len(_FIRST_PERSON_EVENT.findall(text))) / 2,
        "second_person": sum(w in _SECOND for w in words) / n,
        "phatic": sum(w in _PHATIC for w in words) / n,
        "question": min(2, text.count("?")) / 2,
        "question_only": 1.0 if sentences and all(s.endswith("?") for s in sentences) else 0.0,
        "exclaim": min(2.0, text.count("!") / max(1, len(sentences))),
        "role_user": 1.0 if role == "user" else 0.0,
        "role_assistant": 1.0 if role == "assistant" else 0.0,
        "novelty": min(1.0, max(0.0, novelty)),
    }
    x = np.array([1.0, math.log(prior / (1 - prior))] + [raw[f] for f in FEATURES[2:]])
    return (x - _CENTRE) / _SCALE


def novelties(previous: np.ndarray, vectors: np.ndarray, window: int = NOVELTY_WINDOW) -> list[float]:
    """Novelty of each of ``vectors`` (in order) against the ``window`` vectors before it:
    the tail of ``previous`` (oldest first), then the earlier ones of ``vectors``."""
    pool = np.concatenate([previous.reshape(-1, vectors.shape[1]), vectors]).astype(np.float32)
    first = len(pool) - len(vectors)
    out: list[float] = []
    block = 256
    for lo in range(first, len(pool), block):
        hi = min(len(pool), lo + block)
        start = max(0, lo - window)
        sims = pool[lo:hi] @ pool[start:hi].T
        for i in range(lo, hi):
            row = sims[i - lo, max(0, i - window) - start : i - start]
            out.append(1.0 - float(row.max()) if len(row) else 1.0)
    return out


class Controller:
    """Scores importance from features; learns from feedback. See the module docstring."""

    def __init__(self, implicit_weight: float = 0.05) -> None:
        self.implicit_weight = implicit_weight
        self.lock = threading.RLock()
        self.prior_weights = np.zeros(len(FEATURES))
        self.prior_weights[FEATURES.index("prior")] = 1.0
        # Features of recently seen memories by id: context() packs the same ones often.
        self._features: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        # The mean features of every memory scored (what the implicit signal contrasts
        # with): a fact about the store, kept by ``reset``.
        self.population_n = 0
        self.population_sum = np.zeros(len(FEATURES))
        self.reset()

    def reset(self) -> None:
        """Back to the untrained prior (the store keeps its feedback log)."""
        d = len(FEATURES)
        self.weights = self.prior_weights.copy()
        self.buffer_x: list[list[float]] = []
        self.buffer_y: list[int] = []
        self.events = 0
        self.packed_n = 0
        self.packed_sum = np.zeros(d)
        self._contexts = 0

    # -- scoring -----------------------------------------------------------------

    def score(self, x: np.ndarray) -> np.ndarray:
        """Importance in (0, 1) of each row of ``x``, with the prior's intercept."""
        w = self.weights.copy()
        w[0] = self.prior_weights[0]
        z = np.atleast_2d(x) @ w
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

    def score_new(self, store: Store, user_id: str, session_id: str | None,
                  texts: Sequence[str], roles: Sequence[str | None],
                  vectors: np.ndarray) -> list[float]:
        """Importance of memories about to be added (in order, to one user and session)."""
        previous = store.previous_vectors(user_id, session_id, None, NOVELTY_WINDOW)
        nov = novelties(previous, np.asarray(vectors, dtype=np.float32))
        x = np.stack([text_features(t, r, v) for t, r, v in zip(texts, roles, nov, strict=True)])
        with self.lock:
            self.population_n += len(x)
            self.population_sum += x.sum(axis=0)
        return [round(float(s), 4) for s in self.score(x)]

    def features_of(self, store: Store,
                    ids: Sequence[str]) -> tuple[list[tuple[str, str]], np.ndarray]:
        """([(id, user id)], features) of the stored memories among ``ids``, novelty
        recomputed from the store."""
        missing = [i for i in ids if i not in self._features]
        for row in store.get_rows_by_id(missing, with_vector=True):
            rec = row.record
            assert rec.vector is not None
            prev = store.previous_vectors(rec.user_id, rec.session_id, row.rowid, NOVELTY_WINDOW)
            x = text_features(rec.text, rec.role, novelties(prev, rec.vector.reshape(1, -1))[0])
            self._features[rec.id] = (rec.user_id, x)
        found = [(i, *self._features[i]) for i in ids if i in self._features]
        while len(self._features) > FEATURE_CACHE:
            self._features.popitem(last=False)
        if not found:
            return [], np.zeros((0, len(FEATURES)))
        return [(i, u) for i, u, _ in found], np.stack([x for _, _, x in found])

    # -- learning ----------------------------------------------------------------

    def learn(self, x: np.ndarray, useful: Sequence[bool]) -> None:
        """Add explicit feedback events and refit."""
        for row, y in zip(np.atleast_2d(x), useful, strict=True):
            self.buffer_x.append([round(float(v), 4) for v in row])
            self.buffer_y.append(int(bool(y)))
        del self.buffer_x[:-BUFFER], self.buffer_y[:-BUFFER]
        self.events += len(useful)
        self.refit()

    def observe_packed(self, x: np.ndarray) -> bool:
        """Add the features of memories a context packed; True when it is time to save."""
        if self.implicit_weight <= 0 or len(x) == 0:
            return False
        self.packed_n += len(x)
        self.packed_sum += x.sum(axis=0)
        self._contexts += 1
        if self._contexts % SAVE_EVERY_CONTEXTS:
            return False
        self.refit()
        return True

    def _design(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(self.buffer_x, dtype=np.float64).reshape(-1, len(FEATURES))
        y = np.asarray(self.buffer_y, dtype=np.float64)
        s = np.full(len(y), EXPLICIT_POINTWISE)
        useful = y > 0
        if useful.any():
            # Without a population yet (a store from before it was kept), the events' own
            # mean stands in for it.
            base = (self.population_sum / self.population_n if self.population_n
                    else x.mean(axis=0))
            x = np.vstack([x, x[useful].mean(axis=0) - base])
            y = np.append(y, 1.0)
            s = np.append(s, POSITIVE_CONTRAST * float(useful.sum()))
        if self.implicit_weight > 0 and self.packed_n and self.population_n:
            diff = self.packed_sum / self.packed_n - self.population_sum / self.population_n
            x = np.vstack([x, diff])
            y = np.append(y, 1.0)
            s = np.append(s, self.implicit_weight * min(self.packed_n, IMPLICIT_CAP))
        return x, y, s

    def refit(self) -> None:
        """Fit the weights to the buffer and the implicit sums (called after each event):
        Newton steps from the current weights, each halved until the objective falls."""
        x, y, s = self._design()
        if len(y) == 0:
            self.weights = self.prior_weights.copy()
            return
        lam = np.full(len(FEATURES), L2)
        lam[0] = L2_INTERCEPT

        def loss(w: np.ndarray) -> float:
            z = x @ w
            return float(s @ (np.logaddexp(0.0, z) - y * z)
                         + 0.5 * lam @ (w - self.prior_weights) ** 2)

        w = self.weights.copy()
        current = loss(w)
        for _ in range(NEWTON_STEPS):
            p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
            grad = x.T @ (s * (p - y)) + lam * (w - self.prior_weights)
            hess = (x * (s * p * (1 - p))[:, None]).T @ x + np.diag(lam)
            step = np.linalg.solve(hess, grad)
            for _ in range(30):
                trial = loss(w - step)
                if trial <= current:
                    break
                step = step / 2
            else:
                break
            w, current = w - step, trial
            if float(np.abs(step).max()) < 1e-6:
                break
        self.weights = w

    # -- persistence ---------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "features": list(FEATURES),
            "weights": [round(float(v), 6) for v in self.weights],
            "events": self.events,
            "buffer_x": self.buffer_x,
            "buffer_y": self.buffer_y,
            "packed_n": self.packed_n,
            "packed_sum": [round(float(v), 6) for v in self.packed_sum],
            "population_n": self.population_n,
            "population_sum": [round(float(v), 6) for v in self.population_sum],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Take a saved state. One saved with other features starts from the prior again:
        its weights mean nothing for these features."""
        if state.get("version") != STATE_VERSION or state.get("features") != list(FEATURES):
            return
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.events = int(state["events"])
        self.buffer_x = [list(map(float, r)) for r in state["buffer_x"]]
        self.buffer_y = [int(v) for v in state["buffer_y"]]
        self.packed_n = int(state["packed_n"])
        self.packed_sum = np.asarray(state["packed_sum"], dtype=np.float64)
        self.population_n = int(state["population_n"])
        self.population_sum = np.asarray(state["population_sum"], dtype=np.float64)

    @classmethod
    def load(cls, store: Store, implicit_weight: float = 0.05) -> Controller:
        controller = cls(implicit_weight)
        saved = store.load_model(MODEL_NAME)
        if saved is not None:
            controller.load_state(json.loads(saved))
        return controller

    def save(self, store: Store) -> None:
        store.save_model(MODEL_NAME, json.dumps(self.state(), separators=(",", ":")))

    # -- what Memory calls ------------------------------------------------------------

    def feedback(self, store: Store, row: StoredRow, useful: bool,
                 source: str = "explicit") -> float:
        """Log one feedback event, learn from it and persist; the memory's new importance.
        All or nothing: the model in memory changes only once the store did."""
        rid = row.record.id
        with self.lock:
            _, x = self.features_of(store, [rid])
            before = self.state()
            try:
                with store.transaction():
                    # Learn on top of what is stored, not of this process's copy: another
                    # process on the same store may have learned since (its state would be
                    # overwritten). The lock makes learners take turns.
                    store.lock_model(MODEL_NAME)
                    saved = store.load_model(MODEL_NAME)
                    if saved is not None:
                        self.load_state(json.loads(saved))
                    self.learn(x, [useful])
                    store.add_feedback([(rid, row.record.user_id, useful, source)], time.time())
                    importance = _blend(float(self.score(x)[0]),
                                        store.feedback_counts([rid]).get(rid))
                    store.set_importance([(row.rowid, importance)])
                    self.save(store)
            except BaseException:
                self.load_state(before)
                raise
        return importance

    def observe_context(self, store: Store, context: Context) -> None:
        """The implicit signal: the memories that lead a packed context."""
        if self.implicit_weight <= 0 or not context.items:
            return
        best = sorted(context.items, key=lambda item: -item.score)[:IMPLICIT_TOP]
        ids = [item.id for item in best]
        with self.lock:
            found, x = self.features_of(store, ids)
            store.add_feedback([(i, u, True, "context") for i, u in found], time.time())
            if self.observe_packed(x):
                self.save(store)

    def rescore(self, store: Store, scope: Scope | None = None) -> int:
        """Refresh the stored importance of every memory in ``scope`` (all when None) with
        the current model and each memory's own feedback; how many changed. For a sleep
        cycle."""
        changed = 0
        for rows, x in scope_features(store, scope):
            counts = store.feedback_counts([r.record.id for r in rows])
            updates = []
            for row, score in zip(rows, self.score(x), strict=True):
                value = _blend(float(score), counts.get(row.record.id))
                if abs(value - row.record.importance) > 1e-4:
                    updates.append((row.rowid, value))
            store.set_importance(updates)
            changed += len(updates)
        return changed


def _blend(score: float, counts: tuple[int, int] | None) -> float:
    """A memory's importance: its model score, pulled towards its own explicit feedback."""
    if counts is None:
        return round(score, 4)
    n, useful = counts
    return round((OWN_FEEDBACK_PRIOR * score + useful) / (OWN_FEEDBACK_PRIOR + n), 4)


def scope_features(store: Store, scope: Scope | None = None,
                   page: int = 5000) -> Iterator[tuple[list[StoredRow], np.ndarray]]:
    """(rows, features) of every memory in ``scope``, a page at a time, in rowid order.
    Novelty comes from the rows scanned before it in the same session (the first of a
    session is seeded from the store), so a scope narrower than its sessions (one agent of
    several) sees a slightly different novelty than ``add`` did."""
    recent: OrderedDict[tuple[str, str | None], list[np.ndarray]] = OrderedDict()
    offset = 0
    while True:
        rows = store.list_rows(scope, page, offset, with_vector=True)
        if not rows:
            return
        offset += len(rows)
        feats = []
        for row in rows:
            rec = row.record
            assert rec.vector is not None
            key = (rec.user_id, rec.session_id)
            before = recent.pop(key, None)
            if before is None:
                seed = store.previous_vectors(rec.user_id, rec.session_id, row.rowid,
                                              NOVELTY_WINDOW)
                before = list(seed)
            nov = novelties(np.asarray(before, dtype=np.float32).reshape(-1, len(rec.vector)),
                            rec.vector.reshape(1, -1))[0]
            feats.append(text_features(rec.text, rec.role, nov))
            recent[key] = [*before[-(NOVELTY_WINDOW - 1):], rec.vector]
            if len(recent) > 256:  # sessions are mostly contiguous in rowid order
                recent.popitem(last=False)
        yield rows, np.stack(feats)
