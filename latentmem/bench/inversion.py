"""``latentmem bench inversion``: how much text comes back out of a MiniLM vector.

Input: a text file (one sentence a line) or a LoCoMo JSON file (its turns of at most 32
word pieces). Each text is embedded, inverted with 0 and with ``--steps`` correction steps,
and compared with the original (``latentmem/invert/metrics.py`` defines the text metrics):

* cosine: MiniLM(inverted) . target;
* token_f1: bag-of-words F1 over words (punctuation left out), mean over texts, x100;
* bleu: corpus BLEU x100, sacrebleu's when installed (``bleu_impl`` in the output says);
* exact: the word and punctuation sequences are equal.

Baseline: the nearest neighbour of each target in a bank of corpus sentences (its size is
reported). Merge evaluation: consecutive pairs of inputs, target = unit(mean of the two
vectors); for each part, the fraction of its content words found in the inversion.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.bench.report import stamp, table, write_json
from latentmem.errors import InvalidInputError, MissingExtraError
from latentmem.invert.metrics import bleu_impl, scores, words

MAX_TOKENS = 32
BUCKETS = ((1, 8), (9, 16), (17, 24), (25, 32), (33, 10**9))
STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because
been before being below between both but by can could did do does doing down during each few for
from further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours out
over own same she should so some such than that the their theirs them themselves then there these
they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves s t m ll re ve d don oh yeah yes""".split())


# -- data -----------------------------------------------------------------------------


def load_texts(path: str | Path, tok: Any, limit: int | None, seed: int = 0) -> list[str]:
    """Texts of a LoCoMo JSON file (turns of <= 32 word pieces) or a text file, one per line;
    ``limit`` takes an evenly spread random sample, kept in file order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".json":
        try:
            samples = json.loads(path.read_text())
            texts = [t["text"] for s in samples for k, v in s["conversation"].items()
                     if k.startswith("session_") and isinstance(v, list) for t in v]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"{path}: expected a LoCoMo JSON list of samples ({exc})") from exc
        lengths = tok(texts, add_special_tokens=False)["input_ids"]
        texts = [t for t, ids in zip(texts, lengths, strict=True) if 0 < len(ids) <= MAX_TOKENS]
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = list(dict.fromkeys(texts))
    if not texts:
        raise InvalidInputError(f"{path}: found no texts to invert")
    if limit is not None and limit < len(texts):
        keep = sorted(random.Random(seed).sample(range(len(texts)), limit))
        texts = [texts[i] for i in keep]
    return texts


def bank(size: int, inverter: Any, tok: Any, cache: Path | None) -> tuple[list[str], np.ndarray, str]:
    """Nearest-neighbour bank: the inverter's own training sentences when ``size`` covers
    them (read with its settings), else the first ``size`` corpus sentences of <= 32 pieces."""
    from latentmem.invert import data

    meta = getattr(getattr(inverter, "model", None), "meta", {}) or {}
    cfg = meta.get("config", {})
    corpus = data.default_corpus()
    if not corpus:
        raise FileNotFoundError("the NN baseline needs ../shared/data/text/sentences-*.tsv.xz; "
                                "pass --bank 0 to skip it")
    if cfg and meta.get("sentences", 0) <= size and [p.name for p in corpus][: len(meta["corpus"])] \
            == meta["corpus"]:
        val = int(cfg.get("val", 0))
        texts, _ = data.read_corpus(corpus[: len(meta["corpus"])], meta["sentences"] + val,
                                    cfg["max_tokens"], tok, tuple(cfg.get("prefer", ())),
                                    cfg.get("prefer_frac", 0.0))
        vectors = data.embed_cached(texts, data.MiniLM(), cache)
        texts, vectors = texts[: len(texts) - val], vectors[: len(texts) - val]
        what = f"the inverter's {len(texts)} training sentences"
    else:
        texts, _ = data.read_corpus(corpus, size, MAX_TOKENS, tok)
        vectors = data.embed_cached(texts, data.MiniLM(), cache)
        what = f"the first {len(texts)} corpus sentences of <= {MAX_TOKENS} word pieces"
    return texts, vectors, what


def bucket_of(n_tokens: int) -> str:
    for lo, hi in BUCKETS:
        if lo <= n_tokens <= hi:
            return f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}"
    return "0"


def merge_recall(part: str, inverted: str) -> float | None:
    content = {w for w in words(part) if w not in STOPWORDS}
    if not content:
        return None
    return len(content & set(words(inverted))) / len(content)


# -- the bench ---------------------------------------------------------------------------


def run(texts: list[str], inverter: Any, embed: Any, steps: int, tok: Any,
        nn_bank: tuple[list[str], np.ndarray, str] | None, pairs: int, noise: float = 0.0,
        ) -> dict[str, Any]:
    """``noise``: the targets get ``Config.vector_noise``'s Gaussian noise first (seeded), as
    a noised store's vectors would; cosines are then to the noised vector."""
    targets = np.asarray(embed(texts), dtype=np.float32)
    if noise:
        noisy = targets + noise * np.random.default_rng(0).standard_normal(targets.shape)
        targets = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    t0 = time.perf_counter()
    traces = inverter.invert_trace(targets, steps)
    invert_s = time.perf_counter() - t0
    n_tok = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    labels = [bucket_of(n) for n in n_tok]
    result: dict[str, Any] = {"texts": len(texts), "steps": steps, "noise": noise,
                              "invert_seconds": round(invert_s, 1),
                              "ms_per_text": round(1000 * invert_s / len(texts), 1)}
    by_step: dict[str, Any] = {}
    for s in sorted({0, steps}):
        hyps = [tr[s][0] for tr in traces]
        by_step[str(s)] = _with_buckets(hyps, texts, [tr[s][1] for tr in traces], labels)
    result["by_steps"] = by_step
    result.update({k: v for k, v in by_step[str(steps)]["all"].items() if k != "n"})
    result["examples"] = [{"text": t, "inverted": tr[-1][0], "cosine": round(tr[-1][1], 4),
                           "inverted_0": tr[0][0]} for t, tr in zip(texts[:20], traces, strict=False)]
    if nn_bank is not None:
        bank_texts, bank_vecs, what = nn_bank
        best = np.argmax(targets @ bank_vecs.T, axis=1)
        nn_hyps = [bank_texts[i] for i in best]
        nn_cos = np.sum(targets * bank_vecs[best], axis=1).tolist()
        nn = _with_buckets(nn_hyps, texts, nn_cos, labels)
        result["nn"] = nn
        result["nn_bank"] = what
        result.update({f"nn_{k}": v for k, v in nn["all"].items() if k != "n"})
    if pairs:
        result["merge"] = _merge(texts, targets, inverter, steps, pairs, nn_bank)
    return result


def _with_buckets(hyps: list[str], refs: list[str], cos: list[float], labels: list[str],
                  ) -> dict[str, Any]:
    out: dict[str, Any] = {"all": scores(hyps, refs, cos)}
    for label in dict.fromkeys(bucket_of(lo) for lo, _ in BUCKETS):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        if idx:
            out[label] = scores([hyps[i] for i in idx], [refs[i] for i in idx], [cos[i] for i in idx])
    return out


def _merge(texts: list[str], targets: np.ndarray, inverter: Any, steps: int, pairs: int,
           nn_bank: tuple[list[str], np.ndarray, str] | None) -> dict[str, Any]:
    idx = [(i, i + 1) for i in range(0, len(texts) - 1, 2)][:pairs]
    if not idx:
        return {"pairs": 0}
    mean = np.stack([targets[a] + targets[b] for a, b in idx])
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    traces = inverter.invert_trace(mean, steps)
    out: dict[str, Any] = {"pairs": len(idx),
                           "cosine": round(float(np.mean([tr[-1][1] for tr in traces])), 4)}
    candidates = [("", [tr[-1][0] for tr in traces])]
    if nn_bank is not None:
        best = np.argmax(mean @ nn_bank[1].T, axis=1)
        candidates.append(("nn_", [nn_bank[0][i] for i in best]))
    for prefix, inv in candidates:
        first = [merge_recall(texts[a], h) for (a, _), h in zip(idx, inv, strict=True)]
        second = [merge_recall(texts[b], h) for (_, b), h in zip(idx, inv, strict=True)]
        both = [min(x, y) for x, y in zip(first, second, strict=True) if x is not None and y is not None]
        out[f"{prefix}recall_first"] = round(float(np.mean([x for x in first if x is not None])), 4)
        out[f"{prefix}recall_second"] = round(float(np.mean([x for x in second if x is not None])), 4)
        out[f"{prefix}recall_min"] = round(float(np.mean(both)), 4) if both else None
    out["examples"] = [{"a": texts[a], "b": texts[b], "inverted": tr[-1][0]}
                       for (a, b), tr in zip(idx[:5], traces, strict=False)]
    return out


def _print(result: dict[str, Any]) -> None:
    steps = result["steps"]
    rows = []
    systems = [(f"inverter, {s} steps", result["by_steps"][s]) for s in result["by_steps"]]
    if "nn" in result:
        systems.append(("nearest neighbour", result["nn"]))
    for name, res in systems:
        for label, m in res.items():
            rows.append([name, label, m["n"], m["cosine"], m["token_f1"], m["bleu"], m["exact"]])
    print(table(rows, ["system", "word pieces", "texts", "cosine", "token F1", "BLEU", "exact %"]))
    if "nn_bank" in result:
        print(f"\nnearest-neighbour bank: {result['nn_bank']}")
    merge = result.get("merge")
    if merge and merge.get("pairs"):
        print(f"\nmerge ({merge['pairs']} pairs, inverting unit(mean); content words recovered): "
              f"first {merge['recall_first']:.3f}, second {merge['recall_second']:.3f}, "
              f"min {merge['recall_min']}, cosine {merge['cosine']:.3f}"
              + (f"; NN: first {merge['nn_recall_first']:.3f}, second {merge['nn_recall_second']:.3f}"
                 if "nn_recall_first" in merge else ""))
    print("\nexamples (target -> inverted):")
    for ex in result["examples"][:8]:
        print(f"  {ex['text']}\n    -> {ex['inverted']}  ({ex['cosine']:.3f})")
    print(f"\n{result['texts']} texts, {steps} steps, {result['ms_per_text']} ms/text; "
          f"{result['seconds']} s on {result['machine']['cpus']} cpus, commit {result['commit']}")


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.invert import data, load, load_default

    if not 0 <= args.noise <= 1:
        raise InvalidInputError(f"--noise must be in [0, 1], found {args.noise}")
    for name in ("steps", "limit", "bank", "pairs"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "limit" else 0):
            raise InvalidInputError(f"--{name} must be {'positive' if name == 'limit' else '>= 0'}, "
                                    f"found {value}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = stamp()
    t0 = time.perf_counter()
    inverter = load(args.weights) if args.weights else load_default()
    if inverter is None:
        raise MissingExtraError("no inverter weights are installed; train them with "
                                "'python -m latentmem.invert.train' and pass --weights PATH")
    if args.bow_weight is not None:
        from latentmem.invert.decode import TrainedInverter

        if not isinstance(inverter, TrainedInverter):
            raise InvalidInputError("--bow-weight needs latentmem's trained inverter")
        inverter.bow_weight = args.bow_weight
    tok = data.tokenizer()
    texts = load_texts(args.data, tok, args.limit)
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "latentmem" / "invert"
    nn_bank = bank(args.bank, inverter, tok, cache) if args.bank else None
    from latentmem.encode.base import get_embedder

    result = run(texts, inverter, get_embedder(args.embedder).embed_batch, args.steps, tok,
                 nn_bank, args.pairs, args.noise)
    meta = getattr(getattr(inverter, "model", None), "meta", {}) or {}
    result = {"benchmark": "inversion", "data": str(args.data), "limit": args.limit,
              "weights": str(args.weights or "default"),
              "bow_weight": getattr(inverter, "bow_weight", None), "bleu_impl": bleu_impl(),
              "trained_on": {k: meta.get(k) for k in ("sentences", "examples", "device")},
              **result, "seconds": round(time.perf_counter() - t0, 1), **started}
    _print(result)
    write_json(result, args.json_out)
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("inversion", help="text recovered from MiniLM vectors, vs nearest neighbour")
    p.add_argument("--data", required=True, help="text file (one sentence a line) or LoCoMo JSON")
    p.add_argument("--steps", type=int, default=1, help="correction steps (0 is always reported too)")
    p.add_argument("--limit", type=int, default=None, help="a random sample of N texts")
    p.add_argument("--weights", default=None, help="inverter weights (default: the shipped ones)")
    p.add_argument("--bank", type=int, default=20_000,
                   help="nearest-neighbour bank size in corpus sentences (0: no baseline)")
    p.add_argument("--pairs", type=int, default=50, help="sentence pairs for the merge evaluation")
    p.add_argument("--cache", default=None, help="embedding cache directory for the bank")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--embedder", default="minilm",
                   help="the path that embeds the texts: minilm (the default path), "
                        "minilm-torch, minilm-onnx, minilm-int8")
    p.add_argument("--noise", type=float, default=0.0,
                   help="Gaussian noise on the vectors first, as Config.vector_noise (default 0)")
    p.add_argument("--bow-weight", type=float, default=None,
                   help="weight of the content head's log-probabilities in decoding "
                        "(default: the weights file's own)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write every figure")
    p.set_defaults(func=run_cli)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: latentmem bench inversion --data FILE")
