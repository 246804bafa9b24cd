"""Train the inverter: ``python -m latentmem.invert.train --config tiny|cpu|gpu --out PATH``.

1. Read the corpus (``sentences-*.tsv.xz``, or a plain text file, one sentence a line),
   keep sentences of at most ``max_tokens`` word pieces, hold out ``val`` of them.
2. Embed them with MiniLM (on the training device; cached as fp16 by a hash of the texts).
   Stage 0 (``bow_steps`` > 0 and a model with a content head): the content head alone
   learns which word pieces each vector's text holds (binary cross-entropy, pairs included),
   then it is frozen.
3. Stage 1: teacher-forced cross-entropy; ``pair_frac`` of the examples are two sentences
   joined, with the normalised mean of their two vectors as the target.
4. Stage 2 (``corr_examples`` > 0): the model decodes ``corr_examples`` training vectors
   greedily, the hypotheses are embedded, and training goes on with ``corr_frac`` of each
   batch conditioned on (target, hypothesis vector); this is what a correction step uses.
5. Write fp16 weights to ``--out`` and the training log (curve, throughput) beside them.

The learning rate warms up, then follows a cosine to zero over the run's progress, which is
the larger of steps done / ``steps`` and time spent / ``minutes``: a run cut short by the
clock still anneals. docs/inversion.md has the GPU recipe and the runs so far.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentmem.invert import data
from latentmem.invert.model import ENV_MINILM, ModelConfig, build, minilm_dir, param_summary, save


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sentences: int | None = None  # corpus lines to use (None: every line of the files given)
    max_tokens: int = 32
    prefer: tuple[str, ...] = ()  # corpus sources to draw prefer_frac of the sentences from
    prefer_frac: float = 0.0
    val: int = 1000
    shortlist: int | None = None  # output vocabulary: the N most frequent word pieces
    pair_frac: float = 0.2
    batch: int = 64
    steps: int = 1000
    minutes: float | None = None
    lr: float = 5e-4
    pretrained_lr_scale: float = 0.3  # MiniLM's copied layers learn slower than new parts
    warmup: int = 100
    weight_decay: float = 0.01
    corr_examples: int = 0
    corr_share: float = 0.2  # of the steps and minutes, for stage 2
    corr_frac: float = 0.5
    eval_every: int = 100
    device: str = "cpu"
    bf16: bool = False
    embed_batch: int = 256
    bow_steps: int = 0  # stage 0: content-head training steps (0: none)
    bow_batch: int = 512
    bow_lr: float = 2e-3
    bow_minutes: float | None = None


CONFIGS: dict[str, TrainConfig] = {
    # CI smoke test: seconds on one CPU thread.
    "tiny": TrainConfig(
        model=ModelConfig(layers=(0, 1), prefix=4, cond_hidden=64, max_len=24, dropout=0.0,
                          bow_hidden=64, bow_k=4),
        sentences=300, max_tokens=20, val=32, shortlist=1000, batch=16, steps=40, lr=1e-3,
        warmup=5, corr_examples=32, corr_share=0.25, eval_every=10, embed_batch=64,
        bow_steps=20, bow_batch=32),
    # What two CPU cores do in about 75 minutes with the embedding (docs/inversion.md, "CPU runs").
    "cpu": TrainConfig(
        model=ModelConfig(layers=(0, 1), prefix=8, cond_hidden=512, hyp_cond=False,
                          max_len=66, dropout=0.0, bow_hidden=1536, bow_k=24),
        sentences=200_000, max_tokens=32, prefer=("msc", "topical_chat", "synthetic_persona_chat"),
        prefer_frac=0.5, val=1000, shortlist=12_288, batch=64, steps=1_000_000, minutes=50.0,
        lr=1e-3, warmup=200, eval_every=500, bow_steps=100_000, bow_batch=256, bow_minutes=10.0),
    # The full recipe, one H100 call under 10 minutes (docs/inversion.md, "GPU recipe").
    "gpu": TrainConfig(
        model=ModelConfig(layers=(0, 1, 2, 3, 4, 5), prefix=16, cond_hidden=512, hyp_cond=True,
                          max_len=66, dropout=0.05, bow_hidden=1536, bow_k=32),
        sentences=None, max_tokens=32, val=2000, batch=512, steps=20_000, minutes=6.0,
        lr=5e-4, warmup=500, corr_examples=100_000, corr_share=0.2, eval_every=500,
        device="cuda", bf16=True, embed_batch=1024, bow_steps=20_000, bow_batch=2048,
        bow_minutes=1.0),
}


def warm_cosine(peak: float, step: int, warmup: int, progress: float) -> float:
    """The learning rate: linear warm-up over ``warmup`` steps, then a cosine from ``peak``
    to zero as ``progress`` goes from 0 to 1."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return peak * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _clock(steps: int, minutes: float | None, t0: float) -> Iterator[tuple[int, float]]:
    """(step, seconds since ``t0``) for up to ``steps`` steps, stopping once ``minutes`` pass."""
    for step in range(steps):
        elapsed = time.perf_counter() - t0
        if minutes is not None and elapsed > minutes * 60:
            return
        yield step, elapsed


def _content_head(name: str) -> bool:
    return name.startswith("bow.") or name == "bow_bias"


def _pretrained(name: str) -> bool:
    new = ("cond", "prefix_", "cq", "ckv", "co.", "ln2", "head", "out_bias", "bow")
    return not any(part in name for part in new)


class Trainer:
    def __init__(self, cfg: TrainConfig, ids: list[list[int]], vectors: np.ndarray,
                 val_ids: list[list[int]], val_vectors: np.ndarray, log: Any = print) -> None:
        self.cfg = cfg
        self.log = log
        self.model = build(cfg.model).to(cfg.device)
        self.ids = ids
        self.vectors = vectors
        self.batches = data.Batches(ids, vectors, cfg.model.max_len, cfg.pair_frac)
        self.val = (data.pad([s[: cfg.model.max_len - 2] for s in val_ids], cfg.device),
                    torch.from_numpy(val_vectors).to(cfg.device))
        groups: dict[bool, list[torch.nn.Parameter]] = {True: [], False: []}
        self.bow_params = [p for name, p in self.model.named_parameters() if _content_head(name)]
        for name, p in self.model.named_parameters():
            if not _content_head(name):
                groups[_pretrained(name)].append(p)
        self.opt = torch.optim.AdamW(
            [{"params": groups[False], "lr_scale": 1.0},
             {"params": groups[True], "lr_scale": cfg.pretrained_lr_scale}],
            lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
        self.curve: list[dict[str, float | None]] = []
        self.step = 0
        self.examples = 0
        self.tokens = 0
        self.train_seconds = 0.0
        self.hyp: np.ndarray | None = None  # stage 2: hypothesis vector per corr example
        self.hyp_idx: np.ndarray | None = None
        self.bow_curve: list[dict[str, float]] = []
        self.bow_seconds = 0.0

    def train_bow(self, steps: int, minutes: float | None) -> None:
        """Stage 0: the content head alone, then frozen."""
        cfg = self.cfg
        opt = torch.optim.AdamW(self.bow_params, lr=cfg.bow_lr, weight_decay=cfg.weight_decay)
        batches = data.Batches(self.ids, self.vectors, cfg.model.max_len, cfg.pair_frac, seed=2)
        t0 = time.perf_counter()
        window: list[float] = []
        for step, elapsed in _clock(steps, minutes, t0):
            progress = max((step + 1) / steps, elapsed / (minutes * 60) if minutes else 0.0)
            for g in opt.param_groups:
                g["lr"] = warm_cosine(cfg.bow_lr, step, cfg.warmup, progress)
            _, seqs, targets = batches.sample(cfg.bow_batch)
            loss = self.model.bow_loss(torch.from_numpy(targets).to(cfg.device), data.pad(seqs, cfg.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            window.append(float(loss.detach()))
            if (step + 1) % cfg.eval_every == 0 or step + 1 == steps:
                f1 = self.bow_f1()
                self.bow_curve.append({"step": step + 1, "examples": (step + 1) * cfg.bow_batch,
                                       "train_loss": float(np.mean(window)), "val_f1": f1,
                                       "seconds": round(time.perf_counter() - t0, 1)})
                self.log(f"content head step {step + 1:>6}  loss {np.mean(window):.2f}  "
                         f"val word-piece F1 {f1:.3f}")
                window = []
        self.bow_seconds = time.perf_counter() - t0

    @torch.no_grad()
    def bow_f1(self) -> float:
        """Mean F1 of the content head's pieces with probability > 0.5 against the
        held-out texts' pieces."""
        ids, vec = self.val
        f1s = []
        for s in range(0, len(ids), 256):
            pred = torch.sigmoid(self.model.bow_logits(vec[s : s + 256])) > 0.5
            for row, p in zip(ids[s : s + 256].tolist(), pred, strict=True):
                gold = {t for t in row if t not in (0, 100, 101, 102)}
                got = set(torch.nonzero(p).flatten().tolist()) - {0, 100, 101, 102}
                hit = len(gold & got)
                f1s.append(2 * hit / max(1, len(gold) + len(got)))
        return float(np.mean(f1s))

    def _lr(self, progress: float) -> float:
        return warm_cosine(self.cfg.lr, self.step, self.cfg.warmup, progress)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        cfg = self.cfg
        _, seqs, targets = self.batches.sample(cfg.batch)
        hyp = None
        if self.hyp is not None and self.hyp_idx is not None:
            n = int(round(cfg.batch * cfg.corr_frac))
            pick = self.batches.rng.integers(0, len(self.hyp_idx), n)
            rows = self.hyp_idx[pick]
            seqs[:n] = [list(self.ids[r])[: cfg.model.max_len - 2] for r in rows]
            targets[:n] = self.vectors[rows]
            hyp_arr = np.zeros_like(targets)
            hyp_arr[:n] = self.hyp[pick]
            hyp = torch.from_numpy(hyp_arr).to(cfg.device)
        self.tokens += sum(len(s) + 1 for s in seqs)
        return data.pad(seqs, cfg.device), torch.from_numpy(targets).to(cfg.device), hyp

    def _autocast(self) -> Any:
        device = self.cfg.device.split(":")[0]  # bf16 on a CPU without AMX is slower, not faster
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.cfg.bf16 and device != "cpu")

    @torch.no_grad()
    def val_loss(self) -> float:
        self.model.eval()
        ids, vec = self.val
        total = 0.0
        for s in range(0, len(ids), 256):
            with self._autocast():
                total += float(self.model.loss(vec[s : s + 256], ids[s : s + 256])) * len(ids[s : s + 256])
        self.model.train()
        return total / max(1, len(ids))

    def run(self, steps: int, minutes: float | None, done_before: int, total_steps: int,
            total_minutes: float | None) -> None:
        """Train ``steps`` more steps (or until ``minutes``); progress for the schedule counts
        from ``done_before`` of ``total_steps`` / ``total_minutes``."""
        cfg = self.cfg
        self.model.train()
        t0 = time.perf_counter()
        window: list[float] = []
        for _, elapsed in _clock(steps, minutes, t0):
            progress = max((self.step + 1) / total_steps,
                           (self.train_seconds + elapsed) / (total_minutes * 60) if total_minutes else 0)
            lr = self._lr(progress)
            for g in self.opt.param_groups:
                g["lr"] = lr * g["lr_scale"]
            ids, targets, hyp = self._batch()
            with self._autocast():
                loss = self.model.loss(targets, ids, hyp)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            window.append(float(loss.detach()))
            self.step += 1
            self.examples += cfg.batch
            if self.step % cfg.eval_every == 0:
                self._point(window, t0)
                window = []
        self.train_seconds += time.perf_counter() - t0
        if window:
            self._point(window, t0, add=False)

    def _point(self, window: list[float], t0: float, add: bool = True) -> None:
        seconds = self.train_seconds + (time.perf_counter() - t0 if add else 0.0)
        point: dict[str, float | None] = {
            "step": self.step, "examples": self.examples, "train_loss": float(np.mean(window)),
            "val_loss": self.val_loss(), "seconds": round(seconds, 1),
            "examples_per_s": round(self.examples / max(seconds, 1e-9), 1)}
        self.curve.append(point)
        self.log(f"step {point['step']:>6}  examples {point['examples']:>8}  "
                 f"train {point['train_loss']:.3f}  val {point['val_loss']:.3f}  "
                 f"{point['examples_per_s']:.0f} ex/s")

    def make_hypotheses(self, n: int, embedder: data.MiniLM) -> None:
        """Stage 2's inputs: the model's own greedy guesses for ``n`` training vectors."""
        from latentmem.invert.decode import beam_search

        rng = np.random.default_rng(1)
        idx = rng.choice(len(self.ids), size=min(n, len(self.ids)), replace=False)
        self.model.eval()
        texts: list[str] = []
        step = 1024 if self.cfg.device != "cpu" else 64
        for s in range(0, len(idx), step):
            target = torch.from_numpy(self.vectors[idx[s : s + step]]).to(self.cfg.device)
            with self._autocast():
                beams = beam_search(self.model, target, beam=1)
            texts += [embedder.tok.decode(b[0][0], skip_special_tokens=True) for b in beams]
        self.model.train()
        self.hyp = embedder.embed(texts, batch_size=self.cfg.embed_batch)
        self.hyp_idx = idx
        cos = float(np.mean(np.sum(self.hyp * self.vectors[idx], axis=1)))
        self.log(f"stage 2: {len(idx)} greedy hypotheses, mean cosine to target {cos:.3f}")


def train(cfg: TrainConfig, corpus: list[Path], out: Path, cache: Path | None = None,
          log: Any = print, init: Path | None = None) -> dict[str, Any]:
    """``init``: go on from these weights (their model settings and shortlist replace the
    config's; the learning-rate schedule starts afresh)."""
    t_start = time.perf_counter()
    start = None
    if init is not None:
        start = torch.load(str(init), map_location="cpu", weights_only=True)
        cfg = replace(cfg, model=ModelConfig.from_dict(start["config"]), shortlist=None)
    tok = data.tokenizer()
    texts, ids = data.read_corpus(corpus, None if cfg.sentences is None else cfg.sentences + cfg.val,
                                  cfg.max_tokens, tok, cfg.prefer, cfg.prefer_frac)
    if len(texts) <= cfg.val + 1:
        raise ValueError(f"the corpus gave {len(texts)} usable sentences; need more than {cfg.val + 1}")
    log(f"read {len(texts)} sentences of <= {cfg.max_tokens} word pieces "
        f"in {time.perf_counter() - t_start:.1f} s")
    if cfg.shortlist:
        vocab = data.shortlist(ids[: -cfg.val], cfg.shortlist)
        cfg = replace(cfg, model=replace(cfg.model, vocab=vocab))
        covered = sum(t in set(vocab) for s in ids[-cfg.val:] for t in s) / max(
            1, sum(len(s) for s in ids[-cfg.val:]))
        log(f"output shortlist of {len(vocab)} word pieces covers {covered:.1%} of held-out pieces")
    dtype = torch.float16 if cfg.device != "cpu" else torch.float32
    embedder = data.MiniLM(cfg.device, dtype)
    t0 = time.perf_counter()
    vectors = data.embed_cached(texts, embedder, cache, progress=True)
    embed_s = time.perf_counter() - t0
    log(f"embedded {len(texts)} sentences in {embed_s:.1f} s ({len(texts) / max(embed_s, 1e-9):.0f}/s)")
    trainer = Trainer(cfg, ids[: -cfg.val], vectors[: -cfg.val], ids[-cfg.val:], vectors[-cfg.val:],
                      log)
    if start is not None:
        trainer.model.load_state_dict({k: v.float() for k, v in start["state"].items()})
        log(f"starting from {init} ({start['meta'].get('examples', '?')} examples seen)")
    log(f"model: {param_summary(trainer.model)}; layers from MiniLM {list(cfg.model.layers)}")
    if cfg.model.bow_hidden and cfg.bow_steps and start is None:
        trainer.train_bow(cfg.bow_steps, cfg.bow_minutes)
    for p in trainer.bow_params:  # the decoder trains against a fixed content head
        p.requires_grad_(False)
    trainer.curve.append({"step": 0, "examples": 0, "train_loss": None,
                          "val_loss": trainer.val_loss(), "seconds": 0.0, "examples_per_s": 0.0})
    log(f"step      0  val {trainer.curve[0]['val_loss']:.3f}")
    share = cfg.corr_share if cfg.corr_examples and cfg.model.hyp_cond else 0.0
    s1_steps = max(1, round(cfg.steps * (1 - share)))
    s1_minutes = None if cfg.minutes is None else cfg.minutes * (1 - share)
    trainer.run(s1_steps, s1_minutes, 0, cfg.steps, cfg.minutes)
    if share:
        trainer.make_hypotheses(cfg.corr_examples, embedder)
        left = None if cfg.minutes is None else max(0.0, cfg.minutes - trainer.train_seconds / 60)
        trainer.run(cfg.steps - trainer.step, left, trainer.step, cfg.steps, cfg.minutes)
    meta = {
        "corpus": [p.name for p in corpus], "sentences": len(texts) - cfg.val, "val": cfg.val,
        "init": None if start is None else {"path": str(init), "examples": start["meta"].get("examples"),
                                            "curve": start["meta"].get("curve")},
        "config": {**asdict(cfg), "model": {**cfg.model.to_dict(), "vocab": len(cfg.model.vocab or [])}},
        "curve": trainer.curve, "bow_curve": trainer.bow_curve,
        "bow_seconds": round(trainer.bow_seconds, 1), "steps": trainer.step, "examples": trainer.examples,
        "train_seconds": round(trainer.train_seconds, 1), "embed_seconds": round(embed_s, 1),
        "examples_per_s": round(trainer.examples / max(trainer.train_seconds, 1e-9), 1),
        "tokens_per_s": round(trainer.tokens / max(trainer.train_seconds, 1e-9), 1),
        "threads": torch.get_num_threads(), "device": cfg.device,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    size = save(trainer.model, out, meta)
    meta["bytes"] = size
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    log(f"wrote {out} ({size / 2**20:.1f} MiB) after {trainer.step} steps, "
        f"{meta['examples_per_s']} examples/s, {meta['total_seconds']} s in all")
    return meta


def export_minilm(dest: Path) -> int:
    """MiniLM as fp16 safetensors plus its tokenizer files (~45 MB) to carry to a GPU machine."""
    import shutil

    from safetensors.torch import save_file

    from latentmem.invert.model import minilm_state

    dest.mkdir(parents=True, exist_ok=True)
    src = Path(minilm_dir())
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, dest / name)
    state = {k: v.half().contiguous() for k, v in minilm_state().items() if v.is_floating_point()}
    save_file(state, str(dest / "model.safetensors"))
    return sum(p.stat().st_size for p in dest.iterdir())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m latentmem.invert.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    p.add_argument("--out", type=Path, help="weights file to write (a .json log goes beside it)")
    p.add_argument("--corpus", type=Path, nargs="+", default=None,
                   help="sentences-*.tsv.xz or text files (default: ../shared/data/text/)")
    p.add_argument("--sentences", type=int, default=None, help="override the config's count")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--minutes", type=float, default=None, help="stop training after this long")
    p.add_argument("--bow-minutes", type=float, default=None,
                   help="stop training the content head (stage 0) after this long")
    p.add_argument("--device", default=None, help="cpu, cuda (default: the config's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "latentmem" / "invert",
                   help="embedding cache directory")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--init", type=Path, default=None, metavar="WEIGHTS",
                   help="go on training from these weights")
    p.add_argument("--export-minilm", type=Path, default=None, metavar="DIR",
                   help="only write fp16 MiniLM to DIR (to carry to a GPU machine) and exit")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export_minilm:
        size = export_minilm(args.export_minilm)
        print(f"wrote {args.export_minilm} ({size / 2**20:.1f} MiB); "
              f"use it with {ENV_MINILM}={args.export_minilm}")
        return 0
    if args.out is None:
        p.error("--out is required")
    cfg = CONFIGS[args.config]
    overrides = {k: v for k, v in (("sentences", args.sentences), ("steps", args.steps),
                                   ("minutes", args.minutes), ("device", args.device),
                                   ("batch", args.batch), ("bow_minutes", args.bow_minutes),
                                   ("lr", args.lr))
                 if v is not None}
    cfg = replace(cfg, **overrides)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device; pass --device cpu", file=sys.stderr)
        return 2
    corpus = args.corpus or data.default_corpus()
    torch.manual_seed(0)
    train(cfg, corpus, args.out, None if args.no_cache else args.cache, init=args.init)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
