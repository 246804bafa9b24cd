"""How the diffusion length gate was chosen and checked on LongMemEval dev (BENCHMARKS.md).

Each question is ingested once; every variant (a JSON object of config overrides) is
searched and packed with the question asked at its question_date. Even-numbered
questions are the fit half, odd-numbered ones the reported half. Run from the repository
root after `make install`:

    .venv/bin/python docs/benchmarks/lme_parity_split.py \\
        '{"ungated": {"diffusion_chars": 0}, "c300": {"diffusion_chars": 300}, "c600": {"diffusion_chars": 600}, "c1200": {"diffusion_chars": 1200}, "off": {"diffusion_hops": 0}}'

The figures in BENCHMARKS.md were taken just before 0bb41ad made 600 the default (their
"none" row, the default then, is "ungated" here); raw per-question results:
bench-results/longmemeval-dev-diffusion-gate-split.json.
"""
import argparse, json, sys, numpy as np
from dataclasses import replace
from latentmem.bench.cli import _setup
from latentmem.bench.longmemeval import load_longmemeval
from latentmem.bench.systems import LatentMemSystem
from latentmem.bench import metrics as M
args = argparse.Namespace(data="../shared/data/longmemeval/longmemeval_s_dev.json.gz", embedder="minilm", cache=None, quiet=True, set=[])
units = load_longmemeval(args.data)
setup=_setup(args)
variants = json.loads(sys.argv[1])
res = {v: {"fit": [], "rep": []} for v in variants}
for qi, u in enumerate(units):
    q=u.questions[0]
    if q.apart: continue
    s=LatentMemSystem(setup); s.ingest(u.sessions); m=s.memory; base=m.config
    part = "fit" if qi % 2 == 0 else "rep"
    for name, over in variants.items():
        m.config = replace(base, **over)
        ranked = s.search(q.text, 50, now=q.asked_at)
        ctx = s.context(q.text, 4000, now=q.asked_at)
        res[name][part].append((M.recall_at_k(ranked, q.gold, 5), M.recall_at_k(ranked, q.gold, 10), M.context_recall(ctx, q.gold_texts), q.category))
    m.config = base; s.close()
for name, r in res.items():
    line = name.ljust(14)
    for part in ("fit", "rep"):
        a = np.array([x[:3] for x in r[part]])
        line += f" | {part} n={len(a)} R5 {a[:,0].mean():.3f} R10 {a[:,1].mean():.3f} ctx {a[:,2].mean():.3f}"
    print(line)
json.dump({k: {p: [list(x) for x in v[p]] for p in v} for k, v in res.items()}, open("lme-parity-split.json", "w"))
