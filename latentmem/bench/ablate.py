"""``latentmem bench ablate``: what each retrieval component contributes, on LoCoMo.

Each conversation is ingested once; then every variant (the defaults with one
component switched off, plus a plain-RRF baseline with all of them off) answers
every question of categories 1-4 with one search and one context, exactly as
``bench locomo`` does. Swapping the configuration of an open store is sound
because every component here acts at query time; ingest does not depend on it.

``--variants`` runs other configurations the same way: it is how the defaults
were searched for (one JSON object of candidate settings per call).

Honesty about fitting. The conversations are split into a *fit* part (where
defaults were chosen) and a *held-out* part (never looked at while choosing);
both are reported, and the held-out column is the one to believe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from latentmem.bench import metrics as M
from latentmem.bench.report import stamp, table, write_json
from latentmem.config import Config
from latentmem.errors import InvalidInputError

# name -> Config overrides. "all on" is the shipped default; "-" switches a default
# component off, "+" switches on one that is off by default (it measured no better).
VARIANTS: dict[str, dict[str, Any]] = {
    "all on (default)": {},
    "- dense": {"use_dense": False},
    "- bm25": {"use_bm25": False},
    "- linear fusion (rrf)": {"fusion": "rrf"},
    "- diffusion": {"diffusion_hops": 0},
    "- diffusion length gate": {"diffusion_chars": 0.0},
    "- speaker match": {"speaker_boost": 0.0},
    "- speaker names out of the query vector": {"speaker_names_in_vector": True},
    "- query time": {"time_boost": 0.0},
    "- event anchors (before/after an event)": {"anchor_days": 0.0},
    "- times the text mentions": {"time_mentions": False},
    "- session scale": {"session_boost": 0.0},
    "- listing diversity": {"listing_diversity": 0.0},
    "- learned rerank": {"learned_rerank": False},
    "+ learned rerank in context": {"learned_in_context": True},
    "+ entity hop": {"entity_gain": 0.2},
    "+ session centroid": {"session_centroid": 0.2},
    "+ topic level": {"topic_weight": 0.2},
    "+ session diversity (always)": {"session_diversity": 0.05},
    "+ mmr": {"mmr": 0.2},
    "+ late interaction (maxsim)": {"maxsim_weight": 0.3},
    "plain rrf (all off)": {"fusion": "rrf", "diffusion_hops": 0, "speaker_boost": 0.0,
                            "speaker_names_in_vector": True, "time_boost": 0.0,
                            "session_boost": 0.0, "listing_diversity": 0.0,
                            "session_diversity": 0.0, "entity_gain": 0.0, "mmr": 0.0,
                            "session_centroid": 0.0, "maxsim_weight": 0.0,
                            "learned_rerank": False},
}
FIT = ("conv-26", "conv-30")


def _variants(text: str) -> dict[str, dict[str, Any]]:
    """--variants: a JSON object {name: {config key: value}} (inline, or a file's path)."""
    raw = Path(text).read_text() if Path(text).is_file() else text
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--variants: not JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise argparse.ArgumentTypeError("--variants: expected {name: {config key: value}}")
    for overrides in data.values():
        try:
            Config.from_dict(overrides)
        except (InvalidInputError, TypeError) as exc:
            raise argparse.ArgumentTypeError(f"--variants: {exc}") from exc
    return data


def evaluate(systems: dict[str, Any], bases: dict[str, Config], units: list[Any], fit: set[str],
             budget: int, overrides: dict[str, Any]) -> dict[str, Any]:
    parts: dict[str, dict[str, list[float]]] = {"fit": defaultdict(list), "held_out": defaultdict(list)}
    t0 = time.perf_counter()
    Config.from_dict(overrides)  # checked once, before any store is touched
    for unit in units:
        sys_ = systems[unit.name]
        sys_.memory.config = bases[unit.name].replace(**overrides)
        part = parts["fit" if unit.name in fit else "held_out"]
        for q in unit.questions:
            if q.apart:
                continue
            ranked = sys_.search(q.text, 20)
            ctx = sys_.context(q.text, budget)
            for k in (5, 10, 20):
                part[f"recall@{k}"].append(M.recall_at_k(ranked, q.gold, k))
            part["context_recall"].append(M.context_recall(ctx, q.gold_texts))
            part[f"recall@10:{q.category}"].append(M.recall_at_k(ranked, q.gold, 10))
        sys_.memory.config = bases[unit.name]
    out: dict[str, Any] = {}
    for name in ("fit", "held_out"):
        out[name] = {k: round(M.mean(v), 4) for k, v in sorted(parts[name].items())}
        out[name]["questions"] = len(parts[name]["recall@10"])
    both = {k: parts["fit"][k] + parts["held_out"][k] for k in parts["fit"]}
    out["all"] = {k: round(M.mean(v), 4) for k, v in sorted(both.items())}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.bench.cli import _setup, prewarm
    from latentmem.bench.locomo import load_split
    from latentmem.bench.systems import LatentMemSystem

    units, fit = load_split(args.data, args.fit)
    names = {u.name for u in units}
    started = stamp()
    setup = _setup(args)
    prewarm(setup, units, args.quiet)
    systems: dict[str, Any] = {}
    try:
        for unit in units:
            systems[unit.name] = LatentMemSystem(setup)
            systems[unit.name].ingest(unit.sessions)
        bases = {name: s.memory.config for name, s in systems.items()}
        results: dict[str, Any] = {}
        for name, overrides in (args.variants or VARIANTS).items():
            print(f"{name} ...", file=sys.stderr, flush=True)
            results[name] = {"overrides": overrides,
                             **evaluate(systems, bases, units, fit, args.budget, overrides)}
    finally:
        for s in systems.values():
            s.close()
    out = {"benchmark": "ablate", "data": str(args.data), "budget_tokens": args.budget,
           "fit": sorted(fit), "held_out": sorted(names - fit), "settings": setup.settings,
           "variants": results, **started}
    rows = []
    for name, r in results.items():
        rows.append([name, r["held_out"]["recall@5"], r["held_out"]["recall@10"],
                     r["held_out"]["context_recall"], r["fit"]["recall@10"],
                     r["all"]["recall@10"], r["all"]["context_recall"]])
    print(table(rows, ["variant", "held-out R@5", "held-out R@10", "held-out ctx", "fit R@10",
                       "all R@10", "all ctx"]))
    print(f"\nfit: {', '.join(sorted(fit))}; held out: {', '.join(sorted(names - fit))}; "
          f"commit {out['commit']}")
    write_json(out, args.json_out)
    return 0


def split_args(p: argparse.ArgumentParser, fit_help: str) -> None:
    """``--data`` and ``--fit``, shared by the benches that fit on part of LoCoMo."""
    p.add_argument("--data", required=True, help="LoCoMo JSON (list of samples)")
    p.add_argument("--fit", default=",".join(FIT), help=f"{fit_help} (default {','.join(FIT)})")


def add_parser(subparsers: Any) -> None:
    from latentmem.bench.cli import engine_args

    p = subparsers.add_parser("ablate", help="each retrieval component switched off, on LoCoMo")
    split_args(p, "conversations the defaults were chosen on")
    p.add_argument("--budget", type=int, default=1000, help="context budget in tokens")
    p.add_argument("--variants", type=_variants, default=None, metavar="JSON",
                   help="instead of the ablation list, these {name: {key: value}} variants "
                        "(inline JSON or a file); how the defaults were searched for")
    engine_args(p)  # --set changes the baseline every variant starts from
    p.set_defaults(func=run_cli)
