"""One ``bench perf`` measurement at one store size, run in its own process so that
peak RSS belongs to that size alone. Invoked by ``latentmem.bench.perf``; prints JSON.

Of the n memories, ``real`` (default 2,000) are embedded for real through the
bulk ingest path (that is the ingest rate reported); the rest get *generated*
vectors: mixtures of two real vectors plus Gaussian noise, renormalised, so
their geometry is roughly that of real text rather than uniform noise. Their
text is real corpus sentences (BM25 works on real text). They are written with
``Memory.import_records`` in batches, chained into sessions of 20 by ``next``
edges, like a conversation store. Single adds and queries use fresh sentences
that were never stored, so neither the embedding cache nor the index has seen
them.
"""

from __future__ import annotations

import json
import lzma
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

SHARED_TEXT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "text"
SESSION = 20


def corpus(need: int, seed: int = 7) -> tuple[list[str], str]:
    """``need`` distinct realistic sentences: the shared corpus if present, else synthetic."""
    out: list[str] = []
    seen: set[str] = set()
    for part in sorted(SHARED_TEXT.glob("sentences-*.tsv.xz")):
        with lzma.open(part, "rt", encoding="utf-8") as fh:
            for line in fh:
                text = line.rstrip("\n").split("\t", 1)[-1].strip()
                if len(text) > 20 and text not in seen:
                    seen.add(text)
                    out.append(text)
                    if len(out) >= need:
                        return out, f"{SHARED_TEXT}/sentences-*.tsv.xz"
    rng = random.Random(seed)
    subjects = ["I", "My sister", "Our team", "The landlord", "My doctor", "Ana", "We", "Jon"]
    verbs = ["visited", "fixed", "booked", "cancelled", "painted", "ordered", "found", "moved"]
    objects = ["the flat in Alfama", "a red bicycle", "tickets to Porto", "the piano",
               "a new laptop", "the garden shed", "a table for six", "the vet appointment"]
    whens = ["last Tuesday", "in May", "yesterday", "two weeks ago", "on the 3rd", "this morning"]
    source = "synthetic (../shared/data/text is absent)" if not out else "shared corpus + synthetic"
    while len(out) < need:
        text = (f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} "
                f"{rng.choice(whens)}, note {len(out)}.")
        out.append(text)
    return out, source


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def measure(n: int, embedder_name: str, queries: int, adds: int, real: int,
            home: str | None) -> dict[str, Any]:
    from latentmem.encode.base import get_embedder
    from latentmem.memory import Memory
    from latentmem.types import Edge, Record

    real = min(real, n)
    texts, source = corpus(n + adds + queries)
    stored, fresh_adds, fresh_queries = texts[:n], texts[n:n + adds], texts[n + adds:]
    base = get_embedder(embedder_name)
    base.embed_batch(["warm-up"])
    root = Path(home) if home else Path(tempfile.mkdtemp(prefix="lm-perf-"))  # main() cleans up
    out: dict[str, Any] = {"n": n, "text_source": source, "real_vectors": real,
                           "generated_vectors": n - real, "home": str(root)}
    with Memory(root / "store", embedder=base, embed_cache=False, track_access=False) as m:
        t0 = time.perf_counter()
        for start in range(0, real, 100):
            chunk = stored[start:start + 100]
            m.add([{"role": "user", "content": t} for t in chunk], user_id="perf",
                  session_id=f"real-{start // SESSION}")
        out["bulk_ingest_turns_per_s"] = real / (time.perf_counter() - t0)
        t_fill = time.perf_counter()
        sample = np.stack([np.asarray(r.vector) for r in m.all(user_id="perf", include_vectors=True)])
        rng = np.random.default_rng(0)
        now = datetime(2024, 1, 1, tzinfo=UTC)
        for start in range(real, n, 10_000):
            stop = min(n, start + 10_000)
            a = sample[rng.integers(0, len(sample), stop - start)]
            b = sample[rng.integers(0, len(sample), stop - start)]
            vecs = a + 0.5 * b + rng.normal(0, 0.03, a.shape).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            records = []
            for i, vec in zip(range(start, stop), vecs, strict=True):
                when = now + timedelta(minutes=i)
                records.append(Record(
                    id=f"{i:026d}", user_id="perf", session_id=f"gen-{i // SESSION}",
                    text=stored[i], title=stored[i][:60], summary=stored[i][:240],
                    event_time=when, created_at=when, updated_at=when,
                    content_hash=str(i), vector=vec.astype(np.float32),
                ))
            edges = [Edge(records[j - 1].id, records[j].id, "next")
                     for j in range(1, len(records)) if (start + j) % SESSION]
            m.import_records(records, edges)
        out["fill_seconds"] = time.perf_counter() - t_fill

        add_ms = []
        for i, text in enumerate(fresh_adds):
            t = time.perf_counter()
            m.add(text, user_id="perf", session_id=f"adds-{i // SESSION}")
            add_ms.append((time.perf_counter() - t) * 1e3)
        out["add_ms_p50"], out["add_ms_p95"] = pct(add_ms, 50), pct(add_ms, 95)

        qvecs = base.embed_batch(fresh_queries)
        for q in fresh_queries[:5]:
            m.search(q, user_id="perf")  # warm the page cache
        with_embed, without = [], []
        for q, v in zip(fresh_queries, qvecs, strict=True):
            t = time.perf_counter()
            m.search(q, user_id="perf", k=10)
            with_embed.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            m.search(q, user_id="perf", k=10, query_vector=v)
            without.append((time.perf_counter() - t) * 1e3)
        out["search_ms_p50"], out["search_ms_p95"] = pct(with_embed, 50), pct(with_embed, 95)
        out["search_noembed_ms_p50"] = pct(without, 50)
        out["search_noembed_ms_p95"] = pct(without, 95)
        total = m.stats()["records"]
        m.flush()
        m.store.checkpoint()
    size = sum(p.stat().st_size for p in (root / "store").glob("*") if p.is_file())
    out.update({"records": total, "disk_bytes": size, "bytes_per_memory": size / total,
                "peak_rss_mb": peak_rss_mb()})
    return out


def main() -> None:
    args = json.loads(sys.argv[1])
    if args.get("home"):
        print(json.dumps(measure(**args)))
        return
    with tempfile.TemporaryDirectory(prefix="lm-perf-") as tmp:
        args["home"] = tmp
        result = measure(**args)
        result["home"] = None  # deleted with the temporary directory
    print(json.dumps(result))


if __name__ == "__main__":
    main()
