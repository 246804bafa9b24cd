"""Decoding: vectors -> candidate texts -> the one whose re-embedding is closest.

Step 0: beam search from the target vector; every finished beam is re-embedded with MiniLM
and the candidate with the highest cosine to the target wins (not the one the decoder
likes best: the decoder's score and the cosine disagree often enough to matter).

Each correction step (vec2text's idea, without a second model) starts from the best
hypothesis so far, with vector h and cosine c, and decodes new candidates from
  * the model conditioned on (target, h, target - h), when it was trained to use a
    hypothesis (``hyp_cond``; the GPU recipe trains it on its own step-0 outputs), and
  * the target pushed away from the miss, unit(target + alpha (target - h)), which asks the
    decoder for text whose vector lands where h fell short.
A candidate replaces the hypothesis only when its cosine is higher, so more steps never
lower the cosine to the target; they cost one or two beam searches and a re-embedding each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from latentmem.invert.model import CLS, PAD, SEP, UNK, InverterModel

Embed = Callable[[Sequence[str]], np.ndarray]


@torch.inference_mode()
def beam_search(model: InverterModel, target: torch.Tensor, hyp: torch.Tensor | None = None,
                beam: int = 4, max_len: int | None = None, alpha: float = 0.7,
                bow_weight: float = 0.0) -> list[list[tuple[list[int], float]]]:
    """For each target, up to ``beam`` finished token-id sequences with length-normalised
    log-probabilities, best first. Keys and values of past positions are cached.
    ``bow_weight``: add that times the content head's log-probability of each piece."""
    b_size = target.shape[0]
    max_len = min(max_len or model.config.max_len, model.config.max_len)
    bow = model.bow_logits(target).float() if model.config.bow_hidden else None
    mems = model.memories(model.context(target, hyp, bow).repeat_interleave(beam, 0))
    bias = None
    if bow_weight and bow is not None:
        bias = F.logsigmoid(bow)
        if model.config.vocab:
            bias = bias[:, model.vocab]
        bias = (bow_weight * bias).repeat_interleave(beam, 0)
    caches: list[list[torch.Tensor]] = [[] for _ in model.layers]
    n_out = model.out_bias.shape[0]
    ban = torch.zeros(n_out, device=target.device)
    ban[model.to_out(torch.tensor([PAD, CLS, UNK], device=target.device))] = -torch.inf
    sep = int(model.to_out(torch.tensor([SEP], device=target.device))[0])
    scores = torch.full((b_size, beam), -torch.inf, device=target.device)
    scores[:, 0] = 0.0
    seqs: list[list[list[int]]] = [[[] for _ in range(beam)] for _ in range(b_size)]
    done: list[list[tuple[list[int], float]]] = [[] for _ in range(b_size)]
    closed = [False] * b_size
    last = torch.full((b_size * beam, 1), CLS, dtype=torch.long, device=target.device)
    for t in range(max_len - 1):
        h = model.hidden(last, mems, start=t, caches=caches)[:, -1]
        logp = F.log_softmax(model.logits(h).float(), dim=-1) + ban
        if bias is not None:
            logp = logp + bias
        if t == 0:
            logp[:, sep] = -torch.inf
        total = (scores.view(-1, 1) + logp).view(b_size, beam * n_out)
        top_s, top_i = total.topk(2 * beam, dim=-1)
        new_scores = torch.full_like(scores, -torch.inf)
        src = torch.zeros((b_size, beam), dtype=torch.long)
        cls = torch.zeros((b_size, beam), dtype=torch.long)
        new_seqs: list[list[list[int]]] = [[[] for _ in range(beam)] for _ in range(b_size)]
        last_step = t == max_len - 2
        for b in range(b_size):
            src[b] = b * beam
            if closed[b]:
                continue
            k = 0
            for s, i in zip(top_s[b].tolist(), top_i[b].tolist(), strict=True):
                if s == -float("inf"):
                    break
                bi, c = divmod(i, n_out)
                prev = seqs[b][bi]
                if c == sep or last_step:
                    seq = prev if c == sep else [*prev, c]
                    done[b].append((seq, s / (len(seq) + 1) ** alpha))
                    continue
                new_seqs[b][k] = [*prev, c]
                new_scores[b, k] = s
                src[b, k] = b * beam + bi
                cls[b, k] = c
                k += 1
                if k == beam:
                    break
            if len(done[b]) >= beam:
                best_done = max(score for _, score in done[b])
                best_alive = float(new_scores[b].max()) / (t + 3) ** alpha
                closed[b] = best_done >= best_alive
            if k == 0:
                closed[b] = True
        if all(closed) or last_step:
            break
        flat = src.view(-1).to(target.device)
        for cache in caches:
            cache[:] = [cache[0][flat], cache[1][flat]]
        last = model.from_out(cls.view(-1, 1).to(target.device))
        scores = new_scores
        seqs = new_seqs
    out = []
    for b in range(b_size):
        ranked = sorted(done[b], key=lambda x: -x[1])[:beam]
        out.append([(model.from_out(torch.tensor(s, dtype=torch.long)).tolist(), score)
                    for s, score in ranked] or [([], -float("inf"))])
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class TrainedInverter:
    """The ``Inverter`` backed by an ``InverterModel``; see the module docstring."""

    name = "latentmem-minilm-inverter"
    dim = 384
    embedder = "all-MiniLM-L6-v2"

    def __init__(self, model: InverterModel, *, beam: int = 4, batch_size: int = 32,
                 alpha: float = 1.0, bow_weight: float | None = None, embed: Embed | None = None,
                 tokenizer: Any = None) -> None:
        """``bow_weight`` None: the weights file's own (its meta ``decode.bow_weight``), else 0."""
        from latentmem.invert import data

        self.model = model.eval()
        self.beam = beam
        self.batch_size = batch_size
        self.alpha = alpha
        if bow_weight is None:
            bow_weight = float((model.meta.get("decode") or {}).get("bow_weight", 0.0))
        self.bow_weight = bow_weight
        self.tok: Any = tokenizer if tokenizer is not None else data.tokenizer()
        self._embed = embed

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._embed is None:
            from latentmem.encode.base import get_embedder

            self._embed = get_embedder("minilm").embed_batch
        return np.asarray(self._embed(list(texts)), dtype=np.float32)

    def invert(self, vectors: np.ndarray, steps: int = 0) -> list[str]:
        return [trace[-1][0] for trace in self.invert_trace(vectors, steps)]

    def invert_trace(self, vectors: np.ndarray, steps: int = 0) -> list[list[tuple[str, float]]]:
        """For each vector, the best (text, cosine) after 0, 1, ..., ``steps`` corrections."""
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), found {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("vectors contain NaN or infinity")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, found {steps!r}")
        arr = _unit(arr)
        out: list[list[tuple[str, float]]] = []
        for start in range(0, len(arr), self.batch_size):
            out.extend(self._chunk(arr[start : start + self.batch_size], steps))
        return out

    def _decode(self, target: np.ndarray, hyp: np.ndarray | None) -> list[list[str]]:
        device = self.model.out_bias.device
        t = torch.from_numpy(target).to(device)
        h = None if hyp is None else torch.from_numpy(hyp).to(device)
        beams = beam_search(self.model, t, h, beam=self.beam, bow_weight=self.bow_weight)
        return [list(dict.fromkeys(self.tok.decode(ids, skip_special_tokens=True,
                                                   clean_up_tokenization_spaces=True).strip()
                                   for ids, _ in cands)) for cands in beams]

    def _pick(self, target: np.ndarray, cands: list[list[str]], best: list[tuple[str, float]],
              best_vec: np.ndarray) -> None:
        flat = [c for cs in cands for c in cs]
        vecs = self.embed(flat) if flat else np.zeros((0, self.dim), np.float32)
        pos = 0
        for i, cs in enumerate(cands):
            for c in cs:
                cos = float(vecs[pos] @ target[i])
                if cos > best[i][1]:
                    best[i] = (c, cos)
                    best_vec[i] = vecs[pos]
                pos += 1

    def _chunk(self, target: np.ndarray, steps: int) -> list[list[tuple[str, float]]]:
        n = len(target)
        best: list[tuple[str, float]] = [("", -2.0)] * n
        best_vec = np.zeros_like(target)
        self._pick(target, self._decode(target, None), best, best_vec)
        trace = [[b] for b in best]
        for _ in range(steps):
            cands = self._decode(_unit(target + self.alpha * (target - best_vec)), None)
            if self.model.config.hyp_cond:
                more = self._decode(target, best_vec.copy())
                cands = [a + b for a, b in zip(cands, more, strict=True)]
            self._pick(target, cands, best, best_vec)
            for i in range(n):
                trace[i].append(best[i])
        return trace
