"""How latentmem's retrieval defaults were chosen: a grid over Config overrides on LoCoMo.

Each LoCoMo dev conversation is ingested once; each configuration (a JSON object of
Config overrides, ``"weights"`` as a dict) then answers every question of categories
1-4. Printed per configuration: R@5/10/20 and context recall at 1,000 tokens on the fit
part (conv-26, conv-30: where defaults are picked), the held-out part (conv-41/42/43:
reported, never picked on), all, and R@10 per category.

    .venv/bin/python scripts/sweep_locomo.py '{"base": {}, "sess.4": {"session_boost": 0.4}}'

`latentmem bench ablate` is the reproducible report; this is the search that preceded it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import defaultdict
from typing import Any

from latentmem.bench import metrics as M
from latentmem.bench.locomo import load_locomo
from latentmem.bench.systems import BenchSetup, LatentMemSystem
from latentmem.config import ScoringWeights
from latentmem.encode.minilm import shared_minilm

FIT = {"conv-26", "conv-30"}
DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "locomo",
                    "locomo10_dev.json")
CACHE = os.path.expanduser("~/.cache/latentmem/bench-embeddings-minilm.db")


def main(configs: dict[str, dict[str, Any]]) -> None:
    units = load_locomo(DATA)
    setup = BenchSetup(shared_minilm(), CACHE)
    systems = {}
    for unit in units:
        system = LatentMemSystem(setup)
        system.ingest(unit.sessions)
        systems[unit.name] = system
    base = {name: s.memory.config for name, s in systems.items()}
    for label, overrides in configs.items():
        over = dict(overrides)
        if isinstance(over.get("weights"), dict):
            over["weights"] = ScoringWeights(**over["weights"])
        parts: dict[str, dict[str, list[float]]] = {"fit": defaultdict(list),
                                                    "held": defaultdict(list)}
        cats: dict[str, list[float]] = defaultdict(list)
        t0 = time.perf_counter()
        for unit in units:
            system = systems[unit.name]
            system.memory.config = dataclasses.replace(base[unit.name], **over)
            part = parts["fit" if unit.name in FIT else "held"]
            for q in unit.questions:
                if q.apart:
                    continue
                ranked = system.search(q.text, 20)
                ctx = system.context(q.text, 1000)
                for k in (5, 10, 20):
                    part[f"r{k}"].append(M.recall_at_k(ranked, q.gold, k))
                part["ctx"].append(M.context_recall(ctx, q.gold_texts))
                cats[q.category].append(M.recall_at_k(ranked, q.gold, 10))
        fit = {k: round(M.mean(v), 3) for k, v in parts["fit"].items()}
        held = {k: round(M.mean(v), 3) for k, v in parts["held"].items()}
        both = {k: round(M.mean(parts["fit"][k] + parts["held"][k]), 3) for k in parts["fit"]}
        per_cat = {k: round(M.mean(v), 3) for k, v in sorted(cats.items())}
        print(f"{label:28s} fit {fit}  held {held}  all {both}  R@10 by category {per_cat}  "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
    for system in systems.values():
        system.close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {"default": {}})
