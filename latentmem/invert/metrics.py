"""Text metrics of an inversion against the text it came from.

Words are lowercased, accent-stripped and split as ``\\w+|[^\\w\\s]``, so "I'm" is i ' m on
both sides, as MiniLM's tokenizer sees it.

* ``token_f1``: bag-of-words F1 over words (punctuation left out);
* ``bleu``: corpus BLEU x100 from sacrebleu (lowercased, its 13a tokenisation: the number
  papers report) when it is installed (the ``bench`` extra, which ``make`` installs); else
  ``corpus_bleu``, our own corpus BLEU-4 (uniform weights, brevity penalty, no smoothing)
  on the tokenisation above, which differs from sacrebleu's in the decimals.
  ``bleu_impl()`` names the one in use;
* ``exact``: the word and punctuation sequences are equal.

``latentmem bench inversion`` and ``Memory.audit_inversion`` both report these.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np


def tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    return re.findall(r"\w+|[^\w\s]", text)


def words(text: str) -> list[str]:
    return [t for t in tokens(text) if re.match(r"\w", t)]


def token_f1(hyp: str, ref: str) -> float:
    h, r = Counter(words(hyp)), Counter(words(ref))
    common = sum((h & r).values())
    if not h or not r:
        return float(h == r)
    if common == 0:
        return 0.0
    p, rec = common / sum(h.values()), common / sum(r.values())
    return 2 * p * rec / (p + rec)


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], n: int = 4) -> float:
    """Corpus BLEU-n, one reference each, x100 (0 when some n-gram order has no match)."""
    match = [0] * n
    total = [0] * n
    hyp_len = ref_len = 0
    for hyp, ref in zip(hyps, refs, strict=True):
        h, r = tokens(hyp), tokens(ref)
        hyp_len += len(h)
        ref_len += len(r)
        for k in range(1, n + 1):
            hc = Counter(tuple(h[i : i + k]) for i in range(len(h) - k + 1))
            rc = Counter(tuple(r[i : i + k]) for i in range(len(r) - k + 1))
            match[k - 1] += sum((hc & rc).values())
            total[k - 1] += sum(hc.values())
    if hyp_len == 0 or min(match) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(match, total, strict=True)) / n
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(log_p)


def _sacrebleu() -> Any:
    try:
        import sacrebleu
    except ImportError:
        return None
    return sacrebleu


def bleu_impl() -> str:
    sb = _sacrebleu()
    return (f"sacrebleu {sb.__version__}, 13a, lowercased" if sb is not None
            else "latentmem corpus_bleu (sacrebleu not installed)")


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU x100 (see the module docstring for which)."""
    sb = _sacrebleu()
    if sb is None:
        return corpus_bleu(hyps, refs)
    return float(sb.corpus_bleu(list(hyps), [list(refs)], lowercase=True).score)


def exact(hyp: str, ref: str) -> bool:
    return tokens(hyp) == tokens(ref)


def scores(hyps: Sequence[str], refs: Sequence[str], cosines: Sequence[float]) -> dict[str, float]:
    n = max(1, len(refs))
    return {
        "n": len(refs),
        "cosine": round(float(np.mean(cosines)) if len(cosines) else math.nan, 4),
        "token_f1": round(100 * sum(token_f1(h, r) for h, r in zip(hyps, refs, strict=True)) / n, 2),
        "bleu": round(bleu(hyps, refs), 2) if refs else math.nan,
        "exact": round(100 * sum(exact(h, r) for h, r in zip(hyps, refs, strict=True)) / n, 2),
    }
