"""Causal edges from cue phrases, without an LLM.

Between consecutive memories A then B of one session: when B opens with a
consequence cue ("so", "that's why", "as a result", "which led to"), A is
taken as a cause of B, an edge A -> B of type ``causal``; when B opens with
"because" or "since that", B explains A, an edge B -> A. Cue phrases are the
classic shallow signal for discourse relations (as in the PDTB's explicit
connectives); they miss implicit causality and that is accepted: a wrong
causal edge costs more than a missing one, since these edges are shown to
users as explanations.
"""

from __future__ import annotations

import re

_CONSEQUENCE = re.compile(
    r"^\W*(so (i|we|you|he|she|they|it)\b|therefore\b|thus\b|hence\b|as a result\b|consequently\b"
    r"|that'?s why\b|that is why\b|which is why\b|this (made|led|caused|meant)\b"
    r"|that (made|led|caused|meant)\b|it (made|led|caused)\b|because of (that|this|it)\b)",
    re.IGNORECASE,
)
_EXPLANATION = re.compile(r"^\W*(because|since (that|then)|due to)\b", re.IGNORECASE)


def direction(later_text: str) -> int:
    """+1 if the earlier memory causes the later one, -1 if the later explains the earlier,
    0 if the later text carries no cue."""
    if _CONSEQUENCE.search(later_text):
        return 1
    if _EXPLANATION.search(later_text):
        return -1
    return 0
