"""One ``bench perf`` measurement at one store size, in its own process so that peak RSS
and caches belong to that size alone. Run by ``latentmem.bench.perf``; prints JSON.

Which vectors are real. The first ``real`` memories (default 2,000) are ingested
for real: realistic sentences, embedded by the chosen embedder through
``Memory.add`` in sessions of 20 turns; that is the ingest rate reported. The
other ``n - real`` memories get *generated* vectors (a real vector plus half of
another plus Gaussian noise, renormalised, so their geometry is roughly that of
real text) with real corpus text (so BM25 and the FTS index work on real text),
written through ``Memory.import_records`` in batches of 10,000 and chained into
sessions of 20 by ``next`` edges. Embedding a million sentences on 2 cores
would take about an hour. Single adds and all queries use fresh texts, embedded
for real at the time they are measured.

The store uses the default configuration (embedding cache on, access tracking
on), so the figures are what an application gets from ``Memory(path)``. With
``store`` (a PostgreSQL server URL, or "embedded-postgres") it is a fresh database
on that server instead of a SQLite folder.

Writers (``writers``, e.g. [1, 4]): that many processes at once, each adding
``WRITER_ADDS`` memories one at a time with vectors given (no embedding: the store's
own cost), into the store as filled; their adds per second in all, and the p50/p95
of one add.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from latentmem.bench.perf_data import (
    CpuShare,
    HeldLock,
    Texts,
    generated_vectors,
    load_texts,
    pct,
    peak_rss_mb,
    reset_peak,
    rss_mb,
)

SESSION = 20
FILL_BATCH = 10_000
USER = "perf"
WRITER_ADDS = 100


def _progress(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _messages(texts: list[str]) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(texts)]


def _ingest(m: Any, texts: list[str], out: dict[str, Any]) -> None:
    embed = store = 0.0
    t0 = time.perf_counter()
    for start in range(0, len(texts), SESSION):
        receipt = m.add(_messages(texts[start:start + SESSION]), user_id=USER,
                        session_id=f"real-{start // SESSION}")
        embed += receipt.timings_ms["embed"]
        store += receipt.timings_ms["store"] + receipt.timings_ms["index"]
    seconds = time.perf_counter() - t0
    out["bulk_ingest_turns"] = len(texts)
    out["bulk_ingest_turns_per_s"] = len(texts) / seconds
    out["bulk_ingest_embed_ms_per_turn"] = embed / len(texts)
    out["bulk_ingest_store_ms_per_turn"] = store / len(texts)


def _fill(m: Any, texts: Texts, start: int, n: int, out: dict[str, Any]) -> None:
    from latentmem.encode import segment
    from latentmem.types import Edge, Record

    sample = np.stack([np.asarray(r.vector) for r in m.all(user_id=USER, include_vectors=True)])
    rng = np.random.default_rng(0)
    stream = texts.fill()
    base = datetime(2024, 1, 1, tzinfo=UTC)
    t0 = time.perf_counter()
    for lo in range(start, n, FILL_BATCH):
        hi = min(n, lo + FILL_BATCH)
        vecs = generated_vectors(sample, hi - lo, rng)
        records = []
        for i, vec in zip(range(lo, hi), vecs, strict=True):
            text = next(stream)
            when = base + timedelta(minutes=i)
            records.append(Record(
                id=f"gen{i:023d}", user_id=USER, session_id=f"gen-{i // SESSION}", text=text,
                title=segment.derive_title(text), summary=segment.derive_summary(text),
                type="message", role="user" if i % 2 == 0 else "assistant",
                event_time=when, created_at=when, updated_at=when,
                importance=float(rng.uniform(0.2, 0.8)), content_hash=f"{i:032x}", vector=vec,
            ))
        edges = [Edge(records[j - 1].id, records[j].id, "next", 1.0, base)
                 for j in range(1, len(records)) if (lo + j) % SESSION]
        m.import_records(records, edges)
        if (hi // FILL_BATCH) % 10 == 0 or hi == n:
            _progress(f"fill {hi:,}/{n:,} ({time.perf_counter() - t0:.0f} s)")
    seconds = time.perf_counter() - t0
    out["fill_synthetic_texts"] = texts.synthetic_fill
    out["fill_seconds"] = seconds
    out["import_records_per_s"] = (n - start) / seconds


def _timed_adds(m: Any, texts: list[str], session: str) -> tuple[list[float], list[Any]]:
    """Add each text alone; the wall time of each add in ms, and the receipts."""
    times: list[float] = []
    receipts: list[Any] = []
    for i, text in enumerate(texts):
        t = time.perf_counter()
        receipts.append(m.add(text, user_id=USER, session_id=f"{session}-{i // SESSION}"))
        times.append((time.perf_counter() - t) * 1e3)
    return times, receipts


def _single_adds(m: Any, texts: list[str], out: dict[str, Any]) -> None:
    fresh, receipts = _timed_adds(m, texts, "live")
    embed = [r.timings_ms["embed"] for r in receipts]
    cached, repeats = _timed_adds(m, texts, "again")
    if any(r.cached_embeddings != 1 for r in repeats):
        raise RuntimeError("a repeated add missed the embedding cache")
    again = [rid for r in repeats for rid in r.ids]
    m.delete(again)  # the store holds n + adds memories again, as before the repeats
    out["add_ms_p50"], out["add_ms_p95"] = pct(fresh, 50), pct(fresh, 95)
    out["add_embed_ms_p50"] = pct(embed, 50)
    out["add_cached_ms_p50"], out["add_cached_ms_p95"] = pct(cached, 50), pct(cached, 95)


def _searches(m: Any, embedder: Any, texts: Texts, out: dict[str, Any]) -> None:
    from latentmem.store.base import Scope

    for q in texts.warmup:
        m.search(q, user_id=USER)
    qvecs = embedder.embed_batch(texts.queries)
    with_embed: list[float] = []
    without: list[float] = []
    dense: list[float] = []
    bm25: list[float] = []
    n_cands = max(m.config.retrieval.candidates, 10)
    for q, v in zip(texts.queries, qvecs, strict=True):
        t = time.perf_counter()
        m.search(q, user_id=USER, k=10)
        with_embed.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        m.search(q, user_id=USER, k=10, query_vector=v)
        without.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        m.index.search(USER, v, n_cands)
        dense.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        m.store.bm25(q, Scope(USER), n_cands)
        bm25.append((time.perf_counter() - t) * 1e3)
    out["search_ms_p50"], out["search_ms_p95"] = pct(with_embed, 50), pct(with_embed, 95)
    out["search_noembed_ms_p50"] = pct(without, 50)
    out["search_noembed_ms_p95"] = pct(without, 95)
    out["search_dense_ms_p50"], out["search_dense_ms_p95"] = pct(dense, 50), pct(dense, 95)
    out["search_bm25_ms_p50"], out["search_bm25_ms_p95"] = pct(bm25, 50), pct(bm25, 95)
    out["query_words_mean"] = float(np.mean([len(q.split()) for q in texts.queries]))
    _ann_recall(m, qvecs, n_cands, out)


def _ann_recall(m: Any, qvecs: np.ndarray, n_cands: int, out: dict[str, Any], k: int = 10) -> None:
    """The vector index's top ``k`` (and its ``n_cands`` candidates) against an exact fp32
    scan of the stored vectors, for the timed queries: 1.0 for a flat partition up to fp16
    ties, what IVF loses otherwise."""
    kinds = getattr(m.index, "kinds", None)
    out["index_kind"] = kinds().get(USER) if kinds is not None else type(m.index).__name__
    best = np.full((len(qvecs), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(qvecs), k), dtype=np.int64)
    for user, rowids, vectors in m.store.iter_vectors():
        if user != USER:
            continue
        scores = np.concatenate([best, (qvecs @ vectors.T).astype(np.float32)], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(rowids, (len(qvecs), len(rowids)))], axis=1)
        top = np.argsort(-scores, axis=1)[:, :k]
        best, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    at_k, in_cands = [], []
    for q, exact in zip(qvecs, best_ids, strict=True):
        found = m.index.search(USER, q, n_cands)[0]
        at_k.append(len(set(found[:k].tolist()) & set(exact.tolist())) / k)
        in_cands.append(len(set(found.tolist()) & set(exact.tolist())) / k)
    out["ann_recall_at_10"] = float(np.mean(at_k))
    out["ann_recall_at_10_in_candidates"] = float(np.mean(in_cands))


def _sleep_cycle(m: Any, texts: Texts, out: dict[str, Any]) -> None:
    """One full sleep cycle in a background thread while this thread keeps searching
    (query embedding included): how long the cycle takes, and what searches see
    meanwhile. A search slower than usual by tens of ms means it waited on the cycle."""
    import gc

    # What else stops a search: a full collection of the GC stops every thread (hundreds
    # of ms in a process that loaded a model), with a cycle running or not.
    pauses: list[float] = []
    started: list[float] = [0.0]

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif info["generation"] == 2:
            pauses.append((time.perf_counter() - started[0]) * 1e3)

    gc.callbacks.append(collected)
    try:
        _cycles(m, texts, out, pauses)
    finally:
        gc.callbacks.remove(collected)


def _cycles(m: Any, texts: Texts, out: dict[str, Any], pauses: list[float]) -> None:
    import threading

    # Two cycles: the first catches up on everything the store holds (here: forgetting
    # memories recorded in 2024 at once), the second is the steady state.
    for prefix in ("sleep", "sleep2"):
        report: list[Any] = []
        thread = threading.Thread(target=lambda r=report: r.append(m.sleep()), name="bench-sleep")
        during: list[float] = []
        m.store.write_longest = 0.0
        # The two locks a search takes: how long the cycle held each, at most.
        locks = {"memory": HeldLock(m.core.lock, thread.name), "store": HeldLock(m.store.lock, thread.name)}
        m.core.lock, m.store.lock = locks["memory"], locks["store"]
        pauses.clear()
        t0 = time.perf_counter()
        thread.start()
        i = 0
        while thread.is_alive():
            q = texts.queries[i % len(texts.queries)]
            t = time.perf_counter()
            m.search(q, user_id=USER, k=10, track_access=False)
            during.append((time.perf_counter() - t) * 1e3)
            i += 1
        thread.join()
        m.core.lock, m.store.lock = locks["memory"].inner, locks["store"].inner
        out[f"{prefix}_seconds"] = time.perf_counter() - t0
        for name, lock in locks.items():
            out[f"{prefix}_longest_{name}_lock_ms"] = max(lock.holds, default=0.0) * 1e3
            out[f"{prefix}_{name}_lock_holds"] = len(lock.holds)
        out[f"{prefix}_phases"] = report[0].to_dict()["phases"] if report else None
        # The searches here write nothing (no access tracking): every write is the cycle's.
        out[f"{prefix}_longest_write_ms"] = m.store.write_longest * 1e3
        out[f"{prefix}_full_gc_ms"] = list(pauses)
        out[f"search_during_{prefix}_n"] = len(during)
        if during:
            out[f"search_during_{prefix}_ms_p50"] = pct(during, 50)
            out[f"search_during_{prefix}_ms_p95"] = pct(during, 95)
            out[f"search_during_{prefix}_ms_max"] = max(during)


def _disk(store_dir: Path, records: int, out: dict[str, Any]) -> None:
    files = {p.name: p.stat().st_size for p in store_dir.iterdir() if p.is_file()}
    out["disk_files"] = files
    out["disk_bytes"] = sum(files.values())
    out["bytes_per_memory"] = out["disk_bytes"] / records
    out["sqlite_bytes_per_memory"] = sum(v for k, v in files.items() if k.startswith("memory.db")) / records
    out["faiss_bytes_per_memory"] = sum(v for k, v in files.items() if "faiss" in k) / records
    conn = sqlite3.connect(str(store_dir / "memory.db"))
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
        out["sqlite_bytes_per_memory_by_object"] = {
            str(name): size / records for name, size in sorted(rows, key=lambda r: -r[1])
        }
    except sqlite3.Error:  # SQLite built without dbstat: the file totals still stand
        out["sqlite_bytes_per_memory_by_object"] = None
    finally:
        conn.close()


def writer(location: str, who: int, count: int, dim: int, embedder: str) -> dict[str, Any]:
    """One writer process: ``count`` single adds with given vectors; their times in ms."""
    from latentmem.encode.base import get_embedder
    from latentmem.memory import Memory

    rng = np.random.default_rng(who)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    times: list[float] = []
    with Memory(location, embedder=get_embedder(embedder)) as m:
        m.add("warm-up", user_id=USER, vector=vectors[0])
        start = time.perf_counter()
        for i in range(1, count):
            t = time.perf_counter()
            m.add(f"writer {who} says hello number {i}", user_id=USER, session_id=f"w{who}",
                  vector=vectors[i])
            times.append((time.perf_counter() - t) * 1e3)
        seconds = time.perf_counter() - start
    return {"times": times, "seconds": seconds}


def _writers(location: str, counts: list[int], dim: int, embedder: str,
             out: dict[str, Any]) -> None:
    import subprocess

    for w in counts:
        procs = [subprocess.Popen(
            [sys.executable, "-m", "latentmem.bench.perf_worker", "--writer",
             json.dumps([location, i, WRITER_ADDS, dim, embedder])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(w)]
        t0 = time.perf_counter()
        results = []
        for p in procs:
            stdout, stderr = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"writer failed: {stderr.strip().splitlines()[-1:]}")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        wall = time.perf_counter() - t0
        times = [t for r in results for t in r["times"]]
        out[f"writers_{w}_adds_per_s"] = len(times) / max(r["seconds"] for r in results)
        out[f"writers_{w}_add_ms_p50"], out[f"writers_{w}_add_ms_p95"] = pct(times, 50), pct(times, 95)
        out[f"writers_{w}_wall_s"] = wall


def measure(n: int, home: str, embedder_name: str = "minilm", queries: int = 200, adds: int = 100,
            real: int = 2000, skip_add_latency: bool = False, sleep: bool = False,
            store: str | None = None, writers: list[int] | None = None) -> dict[str, Any]:
    from latentmem.encode.base import get_embedder
    from latentmem.memory import Memory

    real = min(real, n)
    peaks: dict[str, float] = {}
    separate = reset_peak()
    base = get_embedder(embedder_name)
    base.embed_batch(["warm-up: load the model before anything is timed"])
    texts = load_texts(queries, adds, real)
    root = Path(home)
    out: dict[str, Any] = {
        "n": n, "text_source": texts.source, "real_vectors": real, "generated_vectors": n - real,
        "generated_vectors_note": (
            f"memories {real + 1:,}..{n:,} have generated vectors (mixtures of real ones) "
            "written by import_records; ingest rate, single adds and queries use real "
            "embeddings" if n > real else "all vectors are real embeddings"),
        "queries": len(texts.queries), "adds": 0 if skip_add_latency else len(texts.adds),
        "rss_mb_startup": rss_mb(),
    }
    peaks["startup"] = peak_rss_mb()
    try:
        import faiss
        import torch

        out["threads"] = {"torch": torch.get_num_threads(), "faiss_omp": faiss.omp_get_max_threads()}
    except ImportError:
        out["threads"] = {}

    def phase(name: str) -> None:
        _progress(f"{name} (n={n:,})")
        if separate:
            reset_peak()

    database = None
    location: Path | str = root / "store"
    if store is not None:
        from latentmem.bench.pgserver import Database

        database = Database(store)
        location = database.url
        out["store"] = "postgresql"
    else:
        out["store"] = "sqlite"
    with Memory(location, embedder=base) as m:
        phase("ingest")
        _ingest(m, texts.ingest, out)
        peaks["ingest"] = peak_rss_mb()
        if n > real:
            phase("fill")
            _fill(m, texts, real, n, out)
            peaks["fill"] = peak_rss_mb()
        else:
            out["fill_seconds"], out["import_records_per_s"], out["fill_synthetic_texts"] = 0.0, None, 0
        cpu = CpuShare()
        if not skip_add_latency:
            phase("single adds")
            _single_adds(m, texts.adds, out)
            peaks["add"] = peak_rss_mb()
        phase("search")
        _searches(m, base, texts, out)
        peaks["search"] = peak_rss_mb()
        out["other_processes_cpu_share"] = cpu.stop()
        # Counted before a cycle archives most of them (archived memories stay in the file).
        out["records"] = m.stats()["records"]
        if sleep:
            phase("sleep cycle beside searches")
            _sleep_cycle(m, texts, out)
            peaks["sleep"] = peak_rss_mb()
        phase("flush")
        t = time.perf_counter()
        m.flush()
        m.store.checkpoint()
        out["flush_seconds"] = time.perf_counter() - t
        if database is not None:
            out["bytes_per_memory"] = m.store.file_bytes() / out["records"]
            out["sqlite_bytes_per_memory"] = out["faiss_bytes_per_memory"] = 0.0
            out["postgres_bytes_by_table"] = m.store.bytes_by_object()
    peaks["flush"] = peak_rss_mb()
    if writers:
        phase("writer processes")
        _writers(str(location), writers, base.dim, embedder_name, out)
    if database is None:
        _disk(root / "store", out["records"], out)
    else:
        database.drop()
    out["peak_rss_mb_by_phase"] = peaks if separate else None
    out["peak_rss_mb"] = max(peaks.values())
    out["peak_rss_note"] = ("VmHWM per phase (reset between phases)" if separate
                            else "cumulative peak (could not reset VmHWM)")
    return out


def main() -> None:
    if sys.argv[1] == "--writer":
        print(json.dumps(writer(*json.loads(sys.argv[2]))))
        return
    args = json.loads(sys.argv[1])
    print(json.dumps(measure(**args)))


if __name__ == "__main__":
    main()
