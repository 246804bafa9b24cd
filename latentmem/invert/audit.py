"""How much of one user's stored text the inverter reads back from the stored vectors
alone: the privacy risk of leaking the vectors (Morris et al. 2023). ``Memory.
audit_inversion`` checks the arguments and calls ``audit``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from latentmem.invert import metrics
from latentmem.store.base import Scope

if TYPE_CHECKING:
    from latentmem.core import Core


def audit(core: Core, user: str, limit: int, steps: int, seed: int) -> dict[str, Any]:
    """Up to ``limit`` of ``user``'s memories that still hold text, drawn at random
    (``seed``), inverted with ``steps`` correction rounds and compared with their text
    (token F1, BLEU, exact match, x100) and their vector (cosine of the re-embedded
    inversion)."""
    inverter = core.required_inverter()
    rowids = core.store.rowids_in_scope(Scope(user), with_text=True)
    with_text = len(rowids)
    if with_text > limit:
        rowids = np.sort(np.random.default_rng(seed).choice(rowids, size=limit, replace=False))
    rows = [r for r in core.store.get_rows_by_rowid(rowids.tolist(), with_vector=True).values()
            if r.record.text and r.record.vector is not None]
    report: dict[str, Any] = {"user_id": user, "steps": steps, "with_text": with_text,
                              "vector_noise": core.config.storage.vector_noise,
                              "bleu_impl": metrics.bleu_impl(),
                              "vector_tier": core.store.codec.tier}
    if not rows:
        return {**report, "n": 0, "cosine": None, "token_f1": None, "bleu": None,
                "exact": None, "examples": []}
    vectors = np.stack([np.asarray(r.record.vector, dtype=np.float32) for r in rows])
    texts = inverter.invert(vectors, steps)
    again = core.embedder.embed_batch(texts)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosines = np.sum(again * unit, axis=1).tolist()
    refs = [r.record.text or "" for r in rows]
    f1 = [metrics.token_f1(h, t) for h, t in zip(texts, refs, strict=True)]
    best = sorted(range(len(rows)), key=lambda i: -f1[i])[:3]  # the most recovered
    return {**report, **metrics.scores(texts, refs, cosines),
            "examples": [{"id": rows[i].record.id, "text": refs[i], "inverted": texts[i],
                          "token_f1": round(100 * f1[i], 1)} for i in best]}
