"""``bench perf --systems``: the same measurements for two other ways to keep memories, each
size in its own process like ``perf_worker``. Run by ``latentmem.bench.perf``; prints JSON.

* ``faiss``: plain FAISS + MiniLM, what a RAG tutorial writes: the same embedder as
  latentmem (``--embedder``), an exact ``IndexFlatIP`` in memory and a Python list of the
  texts; nothing persisted, no BM25, no graph, no rescoring.
* ``mem0``: mem0 OSS with ``infer=False`` (no LLM), configured as ``bench locomo``
  configures it (``bench/systems.py``): its FAISS store persisted in a folder, its SQLite
  history, the same all-MiniLM-L6-v2 weights through its own HuggingFace embedder
  (sentence-transformers on torch: mem0 has no ONNX path). An optional extra: without
  ``mem0ai`` the size is reported as skipped, saying why.

What is timed is what ``perf_worker`` times, through each system's public calls: bulk
ingest (real texts in sessions of 20, embedded by the system), single adds of fresh
texts, and searches with the query embedded, k = 10. The rest of the store is filled
with the same generated vectors as latentmem's (``perf_data.generated_vectors`` over
the ingest texts' vectors, seed 0) and real corpus text, written by the cheapest call
each system has: ``index.add`` for FAISS; for mem0 its vector store's own ``insert``
(the call its ``add`` makes after embedding) in batches of 10,000, skipping its history
table, which no search reads. mem0's FAISS store writes its whole index and a JSON of
every payload to disk after each insert, so its single adds slow down as the store
grows: that is measured as it is. Because of that cost its timed counts are capped
(``MEM0_CAPS``) and the output says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from latentmem.bench.perf_data import (
    CpuShare,
    Texts,
    generated_vectors,
    load_texts,
    pct,
    peak_rss_mb,
    reset_peak,
)

SESSION = 20
FILL_BATCH = 10_000
USER = "perf"
PEERS = ("faiss", "mem0")
# mem0 persists its whole FAISS index on every insert: at most this many of each.
MEM0_CAPS = {"real": 200, "adds": 30, "queries": 100}


class PlainFaiss:
    """Plain FAISS + MiniLM: embed, ``IndexFlatIP``, a list of texts."""

    def __init__(self, embedder: Any) -> None:
        import faiss

        self.embedder = embedder
        self.index = faiss.IndexFlatIP(embedder.dim)
        self.texts: list[str] = []

    def add_many(self, texts: list[str]) -> None:
        self.put(texts, self.embedder.embed_batch(texts))

    def put(self, texts: list[str], vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.texts += texts

    def search(self, query: str, k: int) -> list[str]:
        _, ids = self.index.search(self.embedder.embed_batch([query]), k)
        return [self.texts[i] for i in ids[0] if i >= 0]


class Mem0Store:
    """mem0 with ``infer=False``, as ``bench/systems.Mem0System`` configures it."""

    def __init__(self, folder: str) -> None:
        os.environ.setdefault("MEM0_TELEMETRY", "False")
        from latentmem.bench.systems import BenchSetup, Mem0System
        from latentmem.encode.fake import HashEmbedder

        # Mem0System builds mem0's own embedder from the MiniLM weights; the setup's
        # embedder and cache are not used by it.
        self.system = Mem0System(BenchSetup(HashEmbedder(8), os.path.join(folder, "unused")))
        self.m = self.system.m

    def add_many(self, texts: list[str]) -> None:
        self.m.add([{"role": "user", "content": t} for t in texts], user_id=USER, infer=False)

    def put(self, texts: list[str], vectors: np.ndarray) -> None:
        now = datetime.now(UTC).isoformat()
        payloads = [{"data": t, "hash": hashlib.md5(t.encode()).hexdigest(), "user_id": USER,
                     "created_at": now, "updated_at": now} for t in texts]
        ids = [f"gen-{len(self.m.vector_store.docstore) + i}" for i in range(len(texts))]
        self.m.vector_store.insert(vectors=[v.tolist() for v in vectors], ids=ids,
                                   payloads=payloads)

    def search(self, query: str, k: int) -> list[str]:
        out = self.m.search(query, top_k=k, filters={"user_id": USER})
        results = out["results"] if isinstance(out, dict) else out
        return [r["memory"] for r in results]

    def close(self) -> None:
        self.system.close()


def _open(system: str, embedder: Any, folder: str) -> Any:
    if system == "faiss":
        return PlainFaiss(embedder)
    return Mem0Store(folder)


def measure(system: str, n: int, embedder_name: str = "minilm", queries: int = 200,
            adds: int = 100, real: int = 2000) -> dict[str, Any]:
    from latentmem.encode.base import get_embedder

    asked = {"queries": queries, "adds": adds, "real": real}
    capped = [k for k, v in asked.items() if system == "mem0" and v > MEM0_CAPS[k]]
    if capped:
        queries, adds, real = (min(asked[k], MEM0_CAPS[k]) for k in ("queries", "adds", "real"))
    real = min(real, n)
    embedder = get_embedder(embedder_name)
    texts: Texts = load_texts(queries, adds, real)
    sample = embedder.embed_batch(texts.ingest)  # the generated vectors' raw material
    separate = reset_peak()
    out: dict[str, Any] = {"system": system, "n": n, "real_vectors": real,
                           "generated_vectors": n - real, "queries": len(texts.queries),
                           "adds": len(texts.adds), "text_source": texts.source,
                           "capped": {k: MEM0_CAPS[k] for k in capped} or None}
    with tempfile.TemporaryDirectory(prefix=f"lm-perf-{system}-") as folder:
        store = _open(system, embedder, folder)
        for q in texts.warmup:
            store.search(q, 10)
        t0 = time.perf_counter()
        for lo in range(0, len(texts.ingest), SESSION):
            store.add_many(texts.ingest[lo:lo + SESSION])
        out["bulk_ingest_turns_per_s"] = len(texts.ingest) / (time.perf_counter() - t0)
        rng = np.random.default_rng(0)
        stream = texts.fill()
        t0 = time.perf_counter()
        for lo in range(real, n, FILL_BATCH):
            count = min(FILL_BATCH, n - lo)
            store.put([next(stream) for _ in range(count)], generated_vectors(sample, count, rng))
        out["fill_seconds"] = time.perf_counter() - t0
        cpu = CpuShare()
        times = []
        for text in texts.adds:
            t = time.perf_counter()
            store.add_many([text])
            times.append((time.perf_counter() - t) * 1e3)
        out["add_ms_p50"], out["add_ms_p95"] = pct(times, 50), pct(times, 95)
        times = []
        for q in texts.queries:
            t = time.perf_counter()
            store.search(q, 10)
            times.append((time.perf_counter() - t) * 1e3)
        out["search_ms_p50"], out["search_ms_p95"] = pct(times, 50), pct(times, 95)
        out["other_processes_cpu_share"] = cpu.stop()
        out["peak_rss_mb"] = peak_rss_mb()
        out["peak_rss_note"] = ("VmHWM after the model loaded, through ingest, fill, adds "
                                "and searches" if separate else "cumulative peak")
        if system == "mem0":
            store.close()
    return out


def main() -> None:
    args = json.loads(sys.argv[1])
    print(json.dumps(measure(**args)))


if __name__ == "__main__":
    main()
