"""The topic level: a user's sessions roll up into topics.

Scales. A turn is a memory; a session is the mean of its turns' vectors (computed when
needed, ``store.session_centroids``); a topic is a k-means cluster of a user's
session vectors, with ``k = ceil(sqrt(sessions))``, its own unit centroid, and the few
memories nearest that centroid as its extracted key sentences. No LLM: a topic is named
by what it holds, not summarised.

Where it is built. ``build`` reads every vector of the user's sessions once (100k
memories: about a second), so it runs in the sleep cycle's optimise phase (for every
user whose session memories changed since the last build: ``signature``), and lazily on
a search of a user without one who has at most ``LAZY_SESSIONS`` sessions (a bench, a
fresh store; built in memory only, as a search writes nothing); a bigger user waits for
the cycle. It is kept as JSON in the ``models`` table (``topics/<user>``). Sessions newer
than the build are assigned to their nearest topic when a query meets them.

How retrieval uses it (``Config.topic_weight``, coarse to fine): the query is compared
with every topic centroid; each candidate then gains ``topic_weight`` times the min-max
normalised similarity of its session's topic, beside the session-level evidence of
``rerank.session_scale``. Measured on LoCoMo dev with ``bench ablate`` (variant "+ topic
level", weight 0.2) it *lowered* recall: held-out R@10 0.795 -> 0.773, fit part 0.819 ->
0.806. A LoCoMo conversation has 19-32 sessions, so 5-6 topics; the question's topic
is rarely in doubt once its turns match, and the boost promotes the off-topic turns of
on-topic sessions. It is off by default; the structure itself is what ``Memory.topics``
and ``latentmem topics`` show. Not tried: a topic-first candidate stage for users with
thousands of sessions, where it would narrow the search (no such data here).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from latentmem.store.base import ModelState, Records, Scans, Scope, Store

MODEL_PREFIX = "topics/"
VERSION = 2
KEY_MEMORIES = 3
LAZY_SESSIONS = 500  # ~10k memories: a scan of ~20 ms on a search, once


@dataclass
class Topics:
    user_id: str
    signature: list[float]  # what the user's session memories were when built (signature())
    sessions: dict[str, int]  # session id -> topic
    centroids: np.ndarray  # (topics, dim), unit rows
    keys: list[list[str]]  # per topic, the ids of the memories nearest its centroid

    def to_json(self) -> str:
        return json.dumps({
            "version": VERSION, "user_id": self.user_id, "signature": self.signature,
            "sessions": self.sessions, "keys": self.keys,
            "centroids": [[round(float(v), 6) for v in row] for row in self.centroids],
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Topics | None:
        data = json.loads(text)
        if data.get("version") != VERSION:
            return None
        return cls(str(data["user_id"]), [float(v) for v in data["signature"]],
                   {str(k): int(v) for k, v in data["sessions"].items()},
                   np.asarray(data["centroids"], dtype=np.float32), data["keys"])

    def assign(self, vectors: dict[str, np.ndarray]) -> dict[str, int]:
        """The topic of each session: as built, else its nearest centroid."""
        out = {s: t for s, t in self.sessions.items() if s in vectors}
        for sid, vec in vectors.items():
            if sid not in out and len(self.centroids):
                out[sid] = int(np.argmax(self.centroids @ vec))
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def signature(source: Scans, user_id: str) -> list[float]:
    """How many session memories the user has, the newest rowid, the latest update: when
    it differs from a build's, the user's topics are stale (a change elsewhere in the
    store does not make them so). ``source``: the store, or a snapshot of it."""
    return source.session_signature(user_id)


def build(store: Scans, user_id: str, reader: Scans | None = None) -> Topics | None:
    """Cluster the user's sessions; None when the user has no session. ``reader``: a
    snapshot of the store (a sleep cycle's), so the scan of the user's vectors holds no
    lock a search needs."""
    source = reader if reader is not None else store
    mark = signature(source, user_id)
    ids, sids, vectors = source.session_vectors(user_id)
    if not ids:
        return None
    # Rows come ordered by session: each session is one contiguous run of rows.
    starts = [0] + [i for i in range(1, len(sids)) if sids[i] != sids[i - 1]]
    names = [sids[i] for i in starts]
    member = np.repeat(np.arange(len(starts)), np.diff([*starts, len(sids)]))
    sessions = _unit(np.add.reduceat(vectors, starts, axis=0))
    k = max(1, math.ceil(math.sqrt(len(names))))
    if k == 1 or len(names) <= k:
        labels = np.zeros(len(names), dtype=np.int64) if k == 1 else np.arange(len(names))
    else:
        km = faiss.Kmeans(sessions.shape[1], k, niter=20, nredo=3, seed=0, spherical=True,
                          min_points_per_centroid=1, max_points_per_centroid=10**6)
        km.train(sessions)
        _, found = km.index.search(sessions, 1)
        labels = found[:, 0].astype(np.int64)
    used = sorted(set(labels.tolist()))  # k-means may leave a cluster empty
    renumber = {old: new for new, old in enumerate(used)}
    labels = np.array([renumber[int(x)] for x in labels])
    onehot = np.zeros((len(used), len(names)), dtype=np.float32)
    onehot[labels, np.arange(len(names))] = 1.0
    centroids = _unit(onehot @ sessions)
    topic_of_row = labels[member]
    keys: list[list[str]] = []
    for t in range(len(used)):
        rows_t = np.nonzero(topic_of_row == t)[0]
        sims = vectors[rows_t] @ centroids[t]
        keys.append([ids[int(rows_t[i])] for i in np.argsort(-sims)[:KEY_MEMORIES]])
    return Topics(user_id, mark, {s: int(labels[i]) for i, s in enumerate(names)},
                  centroids, keys)


def load(store: ModelState, user_id: str) -> Topics | None:
    text = store.load_model(MODEL_PREFIX + user_id)
    return Topics.from_json(text) if text else None


def refresh(store: Store, user_id: str, reader: Scans | None = None) -> Topics | None:
    """Build and keep the user's topics (a sleep cycle, or ``Memory.topics``). A user left
    without session memories (merged into session-less records, archived, deleted) keeps
    none: topics kept from before would name memories that are gone."""
    topics = build(store, user_id, reader)
    if topics is not None:
        store.save_model(MODEL_PREFIX + user_id, topics.to_json())
    else:
        store.delete_models([MODEL_PREFIX + user_id])
    return topics


def scores(topics: Topics, store: Records, scope: Scope, sessions: list[str],
           qvec: np.ndarray) -> dict[str, float]:
    """Min-max normalised similarity of the query to each session's topic."""
    unknown = [s for s in sessions if s not in topics.sessions]
    assigned = {s: topics.sessions[s] for s in sessions if s in topics.sessions}
    if unknown:
        assigned.update(topics.assign(store.session_centroids(scope, unknown)))
    if not assigned or not len(topics.centroids):
        return {}
    sims = topics.centroids @ qvec.astype(np.float32)
    lo, hi = float(sims.min()), float(sims.max())
    if hi - lo < 1e-9:
        return {s: 0.0 for s in assigned}
    return {s: (float(sims[t]) - lo) / (hi - lo) for s, t in assigned.items()}


def describe(topics: Topics, store: Records) -> list[dict[str, Any]]:
    """Each topic with its sessions and key memories (id and text), for ``Memory.topics``."""
    ids = [i for keys in topics.keys for i in keys]
    found = {r.record.id: r.record for r in store.get_rows_by_id(ids)}
    out = []
    for t, keys in enumerate(topics.keys):
        out.append({
            "topic": t,
            "sessions": sorted(s for s, x in topics.sessions.items() if x == t),
            "key_memories": [{"id": i, "text": found[i].text if i in found else None}
                             for i in keys],
        })
    return out
