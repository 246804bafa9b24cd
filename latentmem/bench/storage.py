"""``latentmem bench storage``: bytes per memory against plain RAG, and what they cost.

Each configuration (a storage profile, a vector tier, the lossy mode, or a tier plus
lifecycle steps) ingests every LoCoMo conversation into a fresh store, exactly as ``bench
locomo`` does, then reports:

* bytes per memory: the store on disk (``memory.db`` after a WAL checkpoint, plus the
  index file where the tier keeps one) over the turns ingested; also after ``VACUUM``,
  and by SQLite object (``dbstat``). The embedding cache is a separate file here, as in
  every bench; a store that keeps its cache inside adds a full fp32 vector per text.
* plain RAG: what a store of the same turns as UTF-8 text plus one fp32 vector each
  would take (``len(text.encode()) + 4 * dim``), and the ratio to it;
* LoCoMo recall@10 and context recall at the budget, scored by ``bench locomo``'s own
  functions (runner.score_question), categories 1-4;
* the accuracy bound: overlap of the engine's dense top 10 (its index proposing, the
  stored vectors rescoring) with the exact fp32 top 10 over the same turns;
* ``storage_to_retrieval_vs_rag``: (plain RAG bytes / plain RAG R@10) / (bytes / R@10),
  the seed's measure of memory efficiency (issue 21), bytes after VACUUM. Plain RAG's
  R@10 is measured in the same run: the ``dense`` system (exact fp32 cosine top k) on the
  same conversations and questions;
* for a configuration that keeps no text (``lossy``), the token F1 of what the inverter
  reads back from each vector against the turn's text.

A configuration is a name, config settings and an optional step run after ingest
(``Variant``); ``variants`` lists them, so a lifecycle row is one more entry.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentmem.bench import metrics as M
from latentmem.bench.report import stamp, table, write_json
from latentmem.bench.runner import QuestionResult, Unit, aggregate, score_question
from latentmem.bench.systems import BenchSetup, DenseSystem, LatentMemSystem
from latentmem.errors import InvalidInputError
from latentmem.memory import Memory
from latentmem.store.codec import TIERS
from latentmem.store.profiles import PROFILES
from latentmem.store.sqlite import Scope

USER = "bench"  # LatentMemSystem's user
KS = (1, 5, 10, 20)
SEARCH_K = 50  # as bench locomo: max(max(k), 50)
DENSE_K = 10
# The lifecycle row demotes this share of each store's memories, lowest importance first.
DEMOTE_SHARE = 0.5


@dataclass
class Variant:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    after_ingest: Callable[[Memory], None] | None = None


def consolidate_and_demote(memory: Memory) -> None:
    """One consolidation pass, then the lowest-importance ``DEMOTE_SHARE`` made lossy."""
    memory.sleep(phases=("consolidate",))
    rows = memory.store.list_rows(Scope(USER))
    rows = [r for r in rows if r.record.text is not None]
    rows.sort(key=lambda r: (r.record.importance, r.rowid))
    doomed = [r.record.id for r in rows[: int(len(rows) * DEMOTE_SHARE)]]
    if doomed:
        memory.demote(doomed, user_id=USER)


# Named configurations beyond the profiles and tiers (``--configs``).
EXTRA = {
    # Vectors and metadata only, each text replaced by what the shipped inverter reads
    # back from its vector (``storage.mode="lossy"``), on the compact profile.
    "lossy": {"profile": "compact", "mode": "lossy"},
}
CONFIGS = (*PROFILES, *EXTRA)


def variants(tiers: list[str], lifecycle: bool = True,
             configs: list[str] | None = None) -> list[Variant]:
    """The configurations in order: ``configs`` (profiles by name, or EXTRA), then the
    default profile with each of ``tiers``, then the lifecycle row."""
    out = [Variant(c, {"profile": c} if c in PROFILES else dict(EXTRA[c]))
           for c in (configs or [])]
    out += [Variant(f"default, {t} vectors", {"vector_tier": t}) for t in tiers]
    if lifecycle and hasattr(Memory, "sleep") and hasattr(Memory, "demote"):
        out.append(Variant(f"pq + consolidate + demote {DEMOTE_SHARE:.0%}",
                           {"vector_tier": "pq"}, consolidate_and_demote))
    return out


def _tiers(text: str) -> list[str]:
    from latentmem.bench.cli import names_of

    return names_of(text, TIERS, "tiers") if text else []


def _configs(text: str) -> list[str]:
    from latentmem.bench.cli import names_of

    return names_of(text, CONFIGS, "configs") if text else []


def storage_to_retrieval(rag_bytes: float, rag_recall: float | None, nbytes: float,
                         recall: float | None) -> float | None:
    """(plain RAG bytes / plain RAG R@10) / (bytes / R@10): how many times more recall a
    byte buys here than in plain RAG."""
    if not rag_recall or recall is None or nbytes <= 0:
        return None
    return (rag_bytes / rag_recall) / (nbytes / recall)


def plain_rag(units: list[Unit], setup: BenchSetup, budget: int) -> dict[str, Any]:
    """The dense system (text + fp32 vector, exact cosine) scored as the configurations are."""
    scored: list[dict[str, float]] = []
    for unit in units:
        system = DenseSystem(setup)
        try:
            system.ingest(unit.sessions)
            for q in unit.questions:
                if q.apart:
                    continue
                ranked = system.search(q.text, SEARCH_K)
                scored.append(score_question(
                    QuestionResult(q, ranked, system.context(q.text, budget), 0.0, 0.0), KS))
        finally:
            system.close()
    quality = aggregate(scored)
    return {"name": "plain RAG (dense)", "recall@10": quality.get("recall@10"),
            "context_recall": quality.get("context_recall"), "quality": quality}


def inversion_f1(memory: Memory, texts: dict[str, str]) -> list[float]:
    """Token F1 of each lossy memory's reconstruction (its summary) against its turn."""
    from latentmem.invert.metrics import token_f1

    out: list[float] = []
    for row in memory.store.list_rows(Scope(USER)):
        key = row.record.metadata.get("key")
        if row.record.text is None and key in texts:
            out.append(token_f1(row.record.summary, texts[key]))
    return out


def disk(memory: Memory) -> dict[str, Any]:
    """Bytes on disk now: the database (WAL checkpointed first) and the index file, and
    the database by SQLite object."""
    memory.flush()
    memory.store.checkpoint()
    db = memory.store.file_bytes()
    index = int(memory.stats()["index_bytes"])
    objects = memory.store.bytes_by_object()
    return {"db": db, "index": index, "total": db + index, "objects": objects,
            "columns": memory.store.bytes_by_column()}


def vacuum(memory: Memory) -> None:
    memory.store.vacuum()
    memory.store.checkpoint()


def _keys(id_key: dict[str, str], hits: list[Any]) -> list[str]:
    """Turn keys of the hits; a merged memory stands for its sources' turns."""
    out: list[str] = []
    for hit in hits:
        rec = hit.record
        key = rec.metadata.get("key")
        found = [key] if key else [id_key[s] for s in rec.sources if s in id_key]
        out.extend(k for k in found if k not in out)
    return out


def dense_overlap(memory: Memory, qvec: np.ndarray, exact_keys: list[str],
                  rowid_key: dict[int, str]) -> float:
    """Overlap of the engine's dense top 10 (index candidates, rescored by the stored
    vectors, as hybrid retrieval does) with the exact fp32 top 10."""
    ids, _ = memory.index.search(USER, qvec, memory.config.retrieval.candidates)
    rows = memory.store.light_rows("rowid", [int(i) for i in ids])
    rows.sort(key=lambda r: -float(r.vector @ qvec))
    got = {rowid_key[r.rowid] for r in rows[:DENSE_K] if r.rowid in rowid_key}
    return len(got & set(exact_keys)) / len(exact_keys) if exact_keys else 1.0


def run_unit(unit: Unit, setup: BenchSetup, variant: Variant, exact: Any, budget: int
             ) -> dict[str, Any]:
    system = LatentMemSystem(setup, **variant.settings)
    memory = system.memory
    try:
        turns = system.ingest(unit.sessions)
        all_rows = memory.store.list_rows(Scope(USER))
        id_key = {r.record.id: r.record.metadata["key"] for r in all_rows}
        texts = [t for s in unit.sessions for t in s.turns]
        keys = [t.key for t in texts]
        vectors = exact.embed_batch([t.indexed for t in texts])
        rag = sum(len(t.text.encode("utf-8")) for t in texts) + 4 * memory.dim * len(texts)
        if variant.after_ingest is not None:
            variant.after_ingest(memory)
        inverted = inversion_f1(memory, {t.key: t.text for t in texts})
        rowid_key = {r.rowid: id_key[r.record.id] for r in memory.store.list_rows(Scope(USER))
                     if r.record.id in id_key}
        written = disk(memory)
        vacuum(memory)
        vacuumed = disk(memory)
        scored: list[dict[str, float]] = []
        overlap: list[float] = []
        search_ms: list[float] = []
        for q in unit.questions:
            t0 = time.perf_counter()
            hits = memory.search(q.text, user_id=USER, k=SEARCH_K, track_access=False)
            t1 = time.perf_counter()
            ctx = system.context(q.text, budget)
            t2 = time.perf_counter()
            search_ms.append((t1 - t0) * 1e3)
            if q.apart:
                continue
            ranked = _keys(id_key, hits)
            scored.append(score_question(
                QuestionResult(q, ranked, ctx, (t1 - t0) * 1e3, (t2 - t1) * 1e3), KS))
            qvec = exact.embed_batch([q.text])[0]
            top = np.argsort(-(vectors @ qvec), kind="stable")[:DENSE_K]
            overlap.append(dense_overlap(memory, qvec, [keys[i] for i in top], rowid_key))
        return {"turns": turns, "records": memory.store.count(), "rag_bytes": rag,
                "written": written, "vacuumed": vacuumed, "scored": scored,
                "overlap": overlap, "search_ms": search_ms, "inverted_f1": inverted,
                "vector_tier": memory.store.codec.tier, "profile": memory.stats().get("profile")}
    finally:
        system.close()


def summarise(name: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    turns = sum(p["turns"] for p in parts)
    rag = sum(p["rag_bytes"] for p in parts)
    written = sum(p["written"]["total"] for p in parts)
    vacuumed = sum(p["vacuumed"]["total"] for p in parts)
    objects: dict[str, float] = defaultdict(float)
    for p in parts:
        for obj, size in (p["vacuumed"]["objects"] or {}).items():
            objects[obj] += size / turns
    objects["(index file)"] = sum(p["vacuumed"]["index"] for p in parts) / turns
    columns: dict[str, float] = defaultdict(float)
    for p in parts:
        for col, size in (p["vacuumed"].get("columns") or {}).items():
            columns[col] += size / turns
    quality = aggregate([s for p in parts for s in p["scored"]])
    inverted = [x for p in parts for x in p.get("inverted_f1", [])]
    return {
        "name": name,
        "profile": parts[0].get("profile"),
        "vector_tier": parts[0].get("vector_tier"),
        "inverted_token_f1": round(100 * M.mean(inverted), 2) if inverted else None,
        "inverted_memories": len(inverted),
        "turns": turns,
        "records": sum(p["records"] for p in parts),
        "bytes_per_memory": round(written / turns, 1),
        "bytes_per_memory_vacuumed": round(vacuumed / turns, 1),
        "rag_bytes_per_memory": round(rag / turns, 1),
        "ratio_to_rag": round(written / rag, 3),
        "ratio_to_rag_vacuumed": round(vacuumed / rag, 3),
        "recall@10": quality.get("recall@10"),
        "context_recall": quality.get("context_recall"),
        "quality": quality,
        "dense_top10_overlap": round(M.mean([x for p in parts for x in p["overlap"]]), 4),
        "dense_top10_overlap_min_conversation": round(
            min(M.mean(p["overlap"]) for p in parts), 4),
        "search_ms_p50": round(M.percentile([x for p in parts for x in p["search_ms"]], 50), 2),
        "bytes_per_memory_by_object": {k: round(v, 1) for k, v in
                                       sorted(objects.items(), key=lambda kv: -kv[1]) if v},
        # Inside the records rows (before SQLite's record headers and page overhead).
        "records_bytes_per_memory_by_column": {k: round(v, 1) for k, v in
                                                sorted(columns.items(), key=lambda kv: -kv[1])},
    }


def run_cli(args: argparse.Namespace) -> int:
    from latentmem.bench.cli import _setup, prewarm
    from latentmem.bench.locomo import load_locomo
    from latentmem.encode.cache import CachedEmbedder, EmbeddingCache

    if args.scale_only:
        return scale_cli(args)
    convs = [c.strip() for c in args.conversations.split(",")] if args.conversations else None
    units = load_locomo(args.data, convs)
    if not units:
        raise InvalidInputError(f"{args.data}: no conversations")
    started = stamp()
    setup = _setup(args)
    prewarm(setup, units, args.quiet)
    cache = EmbeddingCache.open(setup.cache_path)
    exact = CachedEmbedder(setup.embedder, cache)
    results: list[dict[str, Any]] = []
    try:
        print("plain RAG (dense) ...", file=sys.stderr, flush=True)
        rag = plain_rag(units, setup, args.budget)
        for variant in variants(args.tiers, args.lifecycle, args.configs):
            print(f"{variant.name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            parts = [run_unit(u, setup, variant, exact, args.budget) for u in units]
            summary = summarise(variant.name, parts)
            summary["settings"] = variant.settings
            summary["seconds"] = round(time.perf_counter() - t0, 1)
            results.append(summary)
    finally:
        cache.close()
    if not results:
        raise InvalidInputError("no configuration to measure: give --configs or --tiers")
    base = results[0]
    for r in results:
        if r["recall@10"] is not None and base["recall@10"] is not None:
            r["recall@10_delta"] = round(r["recall@10"] - base["recall@10"], 4)
        if r["context_recall"] is not None and base["context_recall"] is not None:
            r["context_recall_delta"] = round(r["context_recall"] - base["context_recall"], 4)
        for key, nbytes in (("", r["bytes_per_memory_vacuumed"]),
                            ("_as_written", r["bytes_per_memory"])):
            ratio = storage_to_retrieval(r["rag_bytes_per_memory"], rag["recall@10"], nbytes,
                                         r["recall@10"])
            r["storage_to_retrieval_vs_rag" + key] = None if ratio is None else round(ratio, 3)
    out = {"benchmark": "storage", "data": str(args.data), "conversations": [u.name for u in units],
           "budget_tokens": args.budget, "embedder": setup.embedder.name,
           "settings": setup.settings, "plain_rag": rag, "configurations": results, **started}
    rag_bytes = results[0]["rag_bytes_per_memory"]
    rows = [["plain RAG (dense)", "-", rag_bytes, 1.0, rag["recall@10"], rag["context_recall"],
             1.0, "-", "-", "-"]]
    rows += [[r["name"], r["bytes_per_memory"], r["bytes_per_memory_vacuumed"],
              r["ratio_to_rag_vacuumed"], r["recall@10"], r["context_recall"],
              r["storage_to_retrieval_vs_rag"], r["dense_top10_overlap"],
              r["inverted_token_f1"], r["search_ms_p50"]] for r in results]
    print(table(rows, ["configuration", "bytes/memory", "vacuumed", "x plain RAG", "R@10",
                       f"ctx@{args.budget}", "storage-to-retrieval vs RAG",
                       "dense top-10 overlap", "inverted token F1", "search p50 ms"]))
    objects = sorted({k for r in results for k in list(r["bytes_per_memory_by_object"])[:10]})
    print("\nbytes per memory by object (after VACUUM):")
    print(table([[o, *[r["bytes_per_memory_by_object"].get(o) for r in results]] for o in objects],
                ["object", *[r["name"] for r in results]]))
    print(f"\n{sum(len(u.questions) for u in units)} questions in {len(units)} conversations; "
          f"plain RAG = UTF-8 text + fp32 vector, R@10 of the dense system; commit {out['commit']}")
    if args.scale:
        out["scale"] = _scale(args)
    write_json(out, args.json_out)
    return 0


def _scale(args: argparse.Namespace) -> list[dict[str, Any]]:
    from latentmem.bench.storage_scale import scale_rows

    rows = scale_rows(variants(args.tiers, False, args.configs), args.scale_text, args.scale)
    print(f"\nat {args.scale:,} memories ({args.scale_text}; hash vectors at 384-d):")
    print(table([[r["name"], r["bytes_per_memory"], r["bytes_per_memory_vacuumed"],
                  r["embed_cache_bytes_per_memory"], r["bytes_per_memory_vacuumed_without_cache"],
                  r["rag_bytes_per_memory"], r["ratio_to_rag_vacuumed"], r["seconds"]]
                 for r in rows],
                ["configuration", "bytes/memory", "vacuumed", "of which embedding cache",
                 "vacuumed without it", "plain RAG", "x plain RAG", "seconds"]))
    return rows


def scale_cli(args: argparse.Namespace) -> int:
    """``--scale-only``: the bytes at scale, without the LoCoMo runs."""
    if not args.scale:
        raise InvalidInputError("--scale-only needs --scale N")
    out = {"benchmark": "storage-scale", "text": str(args.scale_text), **stamp(),
           "scale": _scale(args)}
    write_json(out, args.json_out)
    return 0


def add_parser(subparsers: Any) -> None:
    from latentmem.bench.cli import engine_args

    p = subparsers.add_parser("storage", help="bytes per memory by storage profile and tier, the "
                                              "recall they keep, and storage-to-retrieval "
                                              "against plain RAG, on LoCoMo")
    p.add_argument("--data", required=True, help="LoCoMo JSON (list of samples)")
    p.add_argument("--conversations", default=None, help="e.g. conv-26,conv-30 (default: all)")
    p.add_argument("--configs", type=_configs, default=list(CONFIGS),
                   help=f"profiles and named configurations, comma-separated, first is the "
                        f"baseline (default {','.join(CONFIGS)}; '' for none)")
    p.add_argument("--tiers", type=_tiers, default=["fp32", "fp16"],
                   help=f"the default profile with these vector tiers too ({','.join(TIERS)}; "
                        f"default fp32,fp16; '' for none)")
    p.add_argument("--lifecycle", action=argparse.BooleanOptionalAction, default=True,
                   help="add the consolidate + demote row (default: on)")
    p.add_argument("--budget", type=int, default=1000, help="context budget in tokens")
    p.add_argument("--scale", type=int, default=0, metavar="N",
                   help="also build one store of N turns per configuration and report its bytes "
                        "per memory (bench/storage_scale.py)")
    p.add_argument("--scale-only", action="store_true",
                   help="only the --scale stores (no LoCoMo run; --data is still required)")
    p.add_argument("--scale-text", default="../shared/data/text/sentences-1.tsv.xz",
                   help="the turns' texts for --scale: one sentence a line (default: %(default)s)")
    engine_args(p)
    p.set_defaults(func=run_cli)
