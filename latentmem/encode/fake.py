"""A deterministic embedder for unit tests: feature hashing of words and bigrams.

It needs no model and gives the same vector for the same text on every
machine, yet texts that share words are close, so retrieval tests still mean
something.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from latentmem.encode.base import normalise, register_embedder

_WORD = re.compile(r"\w+")


class HashEmbedder:
    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        return words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(text):
                digest = hashlib.blake2b(feat.encode(), digest_size=8).digest()
                h = int.from_bytes(digest, "little")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return normalise(out)


    def token_vectors(self, texts: Sequence[str], max_tokens: int = 64) -> list[np.ndarray]:
        """One hashed vector per word: exact-word MaxSim, enough to test the reranker."""
        return [self.embed_batch(_WORD.findall(t.lower())[:max_tokens] or [t]) for t in texts]


register_embedder("hash", HashEmbedder)
