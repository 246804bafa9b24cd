"""Embedding cache keyed by content hash: the same text is never embedded twice.

The key is the first 16 bytes of sha256(model name + NUL + text). The cache
(``store/embed_cache.py``) lives in a SQLite table (by default in the store's own database, so deleting a
memory can also delete its cached vector) or in a separate file that several
stores share, as the benchmarks do across LongMemEval haystacks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from latentmem.encode.base import Embedder
from latentmem.store.embed_cache import EmbeddingCache

__all__ = ["CachedEmbedder", "EmbeddingCache", "cache_key"]

def cache_key(model: str, text: str) -> bytes:
    return hashlib.sha256(model.encode() + b"\x00" + text.encode()).digest()[:16]


class CachedEmbedder:
    """Wraps an embedder; looks each text up in the cache before embedding it."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.dim = inner.dim
        self.hits = 0
        self.misses = 0

    def token_vectors(self, texts: Sequence[str], max_tokens: int = 64) -> list[np.ndarray]:
        """Not cached: token vectors are 30-60x the size of a text's embedding."""
        inner = getattr(self.inner, "token_vectors", None)
        if inner is None:
            raise AttributeError(f"{self.name} has no token vectors")
        return list(inner(texts, max_tokens))

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        keys = [cache_key(self.name, t) for t in texts]
        found = self.cache.get_many(list(dict.fromkeys(keys)), self.dim)
        missing = [i for i, k in enumerate(keys) if k not in found]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            if key in found:
                out[i] = found[key]
        if missing:
            unique = list(dict.fromkeys(texts[i] for i in missing))
            # As the cache will give them back next time (a store's int8 or fp16 tier).
            vectors = self.cache.kept(self.inner.embed_batch(unique))
            by_text = dict(zip(unique, vectors, strict=True))
            for i in missing:
                out[i] = by_text[texts[i]]
            self.cache.put_many(
                [(cache_key(self.name, t), v) for t, v in by_text.items() if np.isfinite(v).all()]
            )
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        return out
