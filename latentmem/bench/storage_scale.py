"""``latentmem bench storage --scale N``: bytes per memory of each configuration at N memories.

LoCoMo's stores hold a few hundred memories each, where what every store pays once (a
page per table, a text dictionary, a PQ codebook) weighs on each memory. Here one store
per configuration takes N turns of real text (``--scale-text``: one sentence a line, or
``source<TAB>sentence`` as in ``../shared/data/text``; ``.xz`` is read as such), in
sessions of 20 turns between two speakers, written as ``bench locomo`` writes LoCoMo
(``Memory.add`` of one session's messages). Bytes do not depend on what a vector says,
only on its tier, so the vectors come from the hash embedder at the model's dimension
(384): no model runs, and a million turns take minutes, not hours. Recall is not measured
here (``bench storage`` without ``--scale`` does that); the lossy configuration is left
out (its inverter would run once per memory).
"""

from __future__ import annotations

import lzma
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentmem.bench.storage import Variant, disk, vacuum
from latentmem.encode.fake import HashEmbedder
from latentmem.errors import InvalidInputError
from latentmem.memory import Memory

SESSION = 20
DIM = 384  # all-MiniLM-L6-v2's


def sentences(path: str | Path) -> Iterator[str]:
    """The sentences of a text file, one a line (after a tab when there is one)."""
    p = Path(path)
    opener: Any = lzma.open if p.suffix == ".xz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        for line in f:
            text = line.rstrip("\n").split("\t")[-1].strip()
            if text:
                yield text


def texts(path: str | Path, n: int) -> list[str]:
    out: list[str] = []
    for text in sentences(path):
        out.append(text)
        if len(out) == n:
            return out
    raise InvalidInputError(f"{path}: {len(out)} sentences, fewer than the {n} asked for")


def run_scale(variant: Variant, corpus: list[str]) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="lm-scale-"))
    t0 = time.perf_counter()
    try:
        with Memory(folder / "store", embedder=HashEmbedder(DIM), track_access=False,
                    **variant.settings) as memory:
            for start in range(0, len(corpus), SESSION):
                msgs = [{"role": "user" if i % 2 else "assistant",
                         "name": "Ana" if i % 2 else "Bo", "content": text}
                        for i, text in enumerate(corpus[start:start + SESSION])]
                memory.add(msgs, user_id="bench", session_id=f"s{start // SESSION}")
            n = memory.stats()["records"]
            written = disk(memory)
            vacuum(memory)
            vacuumed = disk(memory)
            rag = sum(len(t.encode("utf-8")) for t in corpus) + 4 * DIM * len(corpus)
            objects = vacuumed["objects"] or {}
            cache = sum(v for k, v in objects.items() if k.startswith(("embed_cache",
                                                                       "sqlite_autoindex_embed")))
            return {
                "name": variant.name, "memories": n, "seconds": round(time.perf_counter() - t0, 1),
                "profile": memory.stats()["profile"], "vector_tier": memory.store.codec.tier,
                "bytes_per_memory": round(written["total"] / n, 1),
                "bytes_per_memory_vacuumed": round(vacuumed["total"] / n, 1),
                # The store's own embedding cache (a float32 vector per text, in the default
                # profile), which bench storage's LoCoMo stores keep in a shared file instead.
                "embed_cache_bytes_per_memory": round(cache / n, 1),
                "bytes_per_memory_vacuumed_without_cache": round((vacuumed["total"] - cache) / n, 1),
                "rag_bytes_per_memory": round(rag / n, 1),
                "ratio_to_rag_vacuumed": round(vacuumed["total"] / rag, 3),
                "bytes_per_memory_by_object": {
                    k: round(v / n, 1) for k, v in sorted(
                        {**(vacuumed["objects"] or {}), "(index file)": vacuumed["index"]}.items(),
                        key=lambda kv: -kv[1]) if v},
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def scale_rows(variants: list[Variant], path: str | Path, n: int) -> list[dict[str, Any]]:
    corpus = texts(path, n)
    out = []
    for variant in variants:
        if variant.after_ingest is not None or variant.settings.get("mode") == "lossy":
            continue
        print(f"{variant.name} at {n:,} memories ...", file=sys.stderr, flush=True)
        out.append(run_scale(variant, corpus))
    return out
