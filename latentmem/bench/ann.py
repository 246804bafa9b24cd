"""``latentmem bench ann``: how the IVF index of a large partition trades recall for time
(latentmem/store/ann.py), the figures its ``nlist`` and ``nprobe`` were chosen from.

Vectors: ``--real`` corpus sentences embedded by the chosen embedder, then generated
vectors up to each size (``perf_data.generated_vectors``, as ``bench perf`` fills its
stores; seed 0), so the geometry is roughly that of real text but it is not real text:
the output says so. Queries: chat questions of the corpus, embedded for real. For each
size the exact top 10 and top 100 come from an fp32 ``IndexFlatIP``; then for each
``nlist`` an ``IVFPart`` is trained as the engine trains one (a strided sample of 40 per
list) and searched one query at a time on one thread, like a search, at every
``nprobe``. The flat fp16 scan the engine uses below the threshold is timed beside it.
Nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from latentmem.bench.perf_data import generated_vectors, load_texts, pct
from latentmem.bench.report import stamp, table, write_json


def _timed(search: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    import faiss

    found, times = [], []
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for q in queries:
            t = time.perf_counter()
            _, ids = search(q.reshape(1, -1), k)
            times.append((time.perf_counter() - t) * 1e3)
            found.append(ids[0])
    finally:
        faiss.omp_set_num_threads(threads)
    return np.array(found), times


def _recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(e[:k].tolist())) / k
                          for f, e in zip(found, exact, strict=True)]))


def measure(n: int, sample: np.ndarray, queries: np.ndarray, nlists: list[int],
            nprobes: list[int]) -> dict[str, Any]:
    import faiss

    rng = np.random.default_rng(0)
    real = sample[:n]
    parts = [real] + [generated_vectors(sample, min(100_000, n - len(real) - lo), rng)
                      for lo in range(0, n - len(real), 100_000)]
    x = np.concatenate(parts)
    ids = np.arange(1, n + 1, dtype=np.int64)
    exact_index = faiss.IndexFlatIP(x.shape[1])
    exact_index.add(x)
    _, exact = exact_index.search(queries, 100)
    exact = exact + 1
    del exact_index
    flat = faiss.IndexScalarQuantizer(x.shape[1], faiss.ScalarQuantizer.QT_fp16,
                                      faiss.METRIC_INNER_PRODUCT)
    flat.add(x)
    found, times = _timed(flat.search, queries, 100)
    out: dict[str, Any] = {"n": n, "flat_fp16": {
        "recall@10": _recall(found + 1, exact, 10), "ms_p50": pct(times, 50),
        "ms_p95": pct(times, 95)}, "ivf": []}
    del flat
    for nlist in nlists:
        t = time.perf_counter()
        part = _with_lists(x, nlist)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        for lo in range(0, n, 100_000):
            part.add(ids[lo:lo + 100_000], x[lo:lo + 100_000])
        add_s = time.perf_counter() - t
        for nprobe in nprobes:
            found, times = _timed(lambda q, k, p=nprobe, ix=part: _ivf(ix, q, k, p), queries, 100)
            out["ivf"].append({"nlist": part.nlist, "nprobe": nprobe, "train_s": train_s,
                               "add_s": add_s, "recall@10": _recall(found, exact, 10),
                               "recall@10_in_100": float(np.mean([
                                   len(set(f.tolist()) & set(e[:10].tolist())) / 10
                                   for f, e in zip(found, exact, strict=True)])),
                               "recall@100": _recall(found, exact, 100),
                               "ms_p50": pct(times, 50), "ms_p95": pct(times, 95)})
    return out


def _with_lists(x: np.ndarray, nlist: int) -> Any:
    """An empty IVF partition of ``nlist`` lists trained as the engine trains one (where the
    engine takes ``nlist_for(n)``, the sweep chooses)."""
    import faiss

    from latentmem.store import ann

    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFScalarQuantizer(quantizer, x.shape[1], nlist,
                                          faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    index.by_residual = False
    index.cp.niter = ann.TRAIN_ITERATIONS
    index.cp.seed = 1234
    index.train(np.ascontiguousarray(x[::max(1, len(x) // (ann.TRAIN_PER_LIST * nlist))]))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return ann.IVFPart(index, len(x), quantizer)


def _ivf(part: Any, q: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    ids, scores = part.search(q, k, nprobe, None)
    return scores[None], ids[None]


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.encode.base import get_embedder

    embedder = get_embedder(args.embedder)
    texts = load_texts(args.queries, 0, args.real)
    sample = embedder.embed_batch(texts.ingest)
    queries = embedder.embed_batch(texts.queries)
    out: dict[str, Any] = {
        "benchmark": "ann", **stamp(), "embedder": args.embedder,
        "command": (f"latentmem bench ann --n {','.join(map(str, args.n))} --nlist "
                    f"{','.join(map(str, args.nlist))} --nprobe {','.join(map(str, args.nprobe))} "
                    f"--real {args.real} --queries {args.queries}"),
        "data": (f"{len(sample)} real vectors of {texts.source}, the rest generated from them "
                 f"(perf_data.generated_vectors); {len(queries)} real chat questions as queries"),
        "sizes": [],
    }
    for n in args.n:
        out["sizes"].append(measure(n, sample, queries, args.nlist, args.nprobe))
        write_json(out, args.json_out)
    rows = []
    for size in out["sizes"]:
        f = size["flat_fp16"]
        rows.append([f"{size['n']:,}", "flat fp16", "-", "-", "-", f"{f['recall@10']:.4f}", "-",
                     f"{f['ms_p50']:.2f}", f"{f['ms_p95']:.2f}"])
        for r in size["ivf"]:
            rows.append([f"{size['n']:,}", "IVF", r["nlist"], r["nprobe"],
                         f"{r['train_s']:.1f} + {r['add_s']:.1f}", f"{r['recall@10']:.4f}",
                         f"{r['recall@10_in_100']:.4f}", f"{r['ms_p50']:.2f}", f"{r['ms_p95']:.2f}"])
    print(table(rows, ["n", "index", "nlist", "nprobe", "train + add s", "recall@10",
                       "top 10 in 100", "p50 ms", "p95 ms"]))
    print(f"{out['data']}; top 100 per query, one thread; {out['date']}")
    return 0


def _ints(text: str) -> list[int]:
    from latentmem.bench.cli import _int_list

    return _int_list(text.replace("_", ""))


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("ann", help="IVF recall against the exact scan, by nlist and nprobe")
    p.add_argument("--n", type=_ints, default=[200_000, 1_000_000], help="partition sizes")
    p.add_argument("--nlist", type=_ints, default=[512, 1024], help="IVF list counts")
    p.add_argument("--nprobe", type=_ints, default=[16, 32, 64, 128], help="lists probed")
    p.add_argument("--real", type=int, default=2000, help="real vectors the rest are made from")
    p.add_argument("--queries", type=int, default=200, help="real queries")
    p.add_argument("--embedder", default="minilm")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT")
    p.set_defaults(func=run_cli)
