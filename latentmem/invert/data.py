"""Training text for the inverter: reading the corpus, tokenising, embedding, batching.

The corpus is ``sentences-*.tsv.xz`` (``source<TAB>text`` lines, already shuffled; see
``../shared/data/README.md``). MiniLM here is the same model as ``encode/minilm.py``
(mean pooling, L2 norm) but placed on any device and in any dtype, because the GPU
recipe embeds a million sentences on the device before it trains.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentmem.invert.model import CLS, PAD, SEP, UNK, minilm_dir


def default_corpus() -> list[Path]:
    """``../shared/data/text/sentences-*.tsv.xz`` next to the repository, when it is there."""
    root = Path(__file__).resolve().parents[2]
    for base in (Path.cwd() / ".." / "shared", root / ".." / "shared"):
        found = sorted((base / "data" / "text").glob("sentences-*.tsv.xz"))
        if found:
            return found
    return []


def tokenizer() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)


def _lines(paths: Sequence[Path]) -> Iterator[tuple[str, str]]:
    for path in paths:
        opener = lzma.open if str(path).endswith(".xz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                source, sep, text = line.rstrip("\n").partition("\t")
                if not sep:  # a plain text file: one sentence a line
                    source, text = "", source
                if text.strip():
                    yield source, text.strip()


def read_corpus(paths: Sequence[Path], n: int | None, max_tokens: int, tok: Any,
                prefer: Sequence[str] = (), prefer_frac: float = 0.0,
                ) -> tuple[list[str], list[list[int]]]:
    """The first ``n`` lines (all when None) of at most ``max_tokens`` word pieces, with
    their ids ([CLS]/[SEP] not included). With ``prefer``, ``prefer_frac`` of them come from
    those sources (in file order) and the rest from the others."""
    if not paths:
        raise FileNotFoundError("no corpus files (sentences-*.tsv.xz); pass --corpus")
    quota_pref = round((n or 0) * prefer_frac) if prefer else 0
    quota_other = (n - quota_pref) if n is not None else None
    texts: list[str] = []
    ids: list[list[int]] = []
    got_pref = got_other = 0
    chunk: list[tuple[str, str]] = []

    def flush() -> bool:
        nonlocal got_pref, got_other
        enc = tok([t for _, t in chunk], add_special_tokens=False)["input_ids"]
        for (source, text), pieces in zip(chunk, enc, strict=True):
            if not 0 < len(pieces) <= max_tokens:
                continue
            if source in prefer:
                if got_pref >= quota_pref:
                    continue
                got_pref += 1
            else:
                if quota_other is not None and got_other >= quota_other:
                    continue
                got_other += 1
            texts.append(text)
            ids.append(pieces)
        chunk.clear()
        return n is not None and got_pref >= quota_pref and got_other >= (quota_other or 0)

    for item in _lines(paths):
        chunk.append(item)
        if len(chunk) >= 4096 and flush():
            return texts, ids
    flush()
    return texts, ids


class MiniLM:
    """all-MiniLM-L6-v2 sentence vectors on a chosen device (mean pooling, L2 norm)."""

    def __init__(self, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.device = device
        self.tok = tokenizer()
        self.model = AutoModel.from_pretrained(minilm_dir(), local_files_only=True,
                                               dtype=dtype).to(device).eval()

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False,
              ) -> np.ndarray:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        t0 = last = time.perf_counter()
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tok([texts[i] for i in idx], padding=True, truncation=True, max_length=256,
                             return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
            if progress and time.perf_counter() - last > 30:
                last = time.perf_counter()
                done = start + len(idx)
                print(f"  embedded {done}/{len(texts)} ({done / (last - t0):.0f}/s)", file=sys.stderr)
        return out


def embed_cached(texts: Sequence[str], embedder: MiniLM, cache_dir: Path | None,
                 progress: bool = False) -> np.ndarray:
    """MiniLM vectors of ``texts``, stored as fp16 under ``cache_dir`` by a hash of the texts."""
    path = None
    if cache_dir is not None:
        digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"minilm-{len(texts)}-{digest}.npy"
        if path.exists():
            return np.load(path).astype(np.float32)
    vectors = embedder.embed(texts, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors.astype(np.float16))
    return vectors


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class Batches:
    """Random training batches: ``pair_frac`` of them are two sentences joined, whose target
    is the normalised mean of their vectors (so that inverting a merged memory works)."""

    def __init__(self, ids: Sequence[Sequence[int]], vectors: np.ndarray, max_len: int,
                 pair_frac: float, seed: int = 0) -> None:
        self.ids = ids
        self.vectors = vectors
        self.max_len = max_len
        self.pair_frac = pair_frac
        self.rng = np.random.default_rng(seed)

    def sample(self, size: int) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
        """(indices, token ids, target vectors); for a pair, indices hold the first part."""
        first = self.rng.integers(0, len(self.ids), size)
        second = self.rng.integers(0, len(self.ids), size)
        paired = self.rng.random(size) < self.pair_frac
        seqs: list[list[int]] = []
        targets = self.vectors[first].copy()
        for j in range(size):
            seq = list(self.ids[first[j]])
            if paired[j]:
                seq += list(self.ids[second[j]])
                targets[j] = self.vectors[first[j]] + self.vectors[second[j]]
            seqs.append(seq[: self.max_len - 2])
        return first, seqs, unit(targets)


def pad(seqs: Iterable[Sequence[int]], device: str = "cpu") -> torch.Tensor:
    """[CLS] ids [SEP], right-padded with PAD, as one (n, longest + 2) tensor."""
    rows = list(seqs)
    out = np.full((len(rows), max(len(r) for r in rows) + 2), PAD, dtype=np.int64)
    out[:, 0] = CLS
    for i, r in enumerate(rows):
        out[i, 1 : len(r) + 1] = r
        out[i, len(r) + 1] = SEP
    return torch.from_numpy(out).to(device)


def shortlist(ids: Iterable[Sequence[int]], size: int) -> list[int]:
    """The ``size`` most frequent word pieces, plus the special ones the decoder needs."""
    counts: dict[int, int] = {}
    for seq in ids:
        for t in seq:
            counts[t] = counts.get(t, 0) + 1
    keep = sorted(counts, key=lambda t: -counts[t])[: max(0, size - 2)]
    return sorted({*keep, SEP, UNK})
