"""The ONNX Runtime path of all-MiniLM-L6-v2 (encode/onnx.py) against the torch path, the
reference: the same vectors and token vectors on fixed texts (short, long past the 256-token
cut, non-Latin, emoji, empty-looking), in batches and alone; the int8 variant within its
bound and under its own name; and the fallback to torch when the graph cannot be written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentmem.encode.base import get_embedder
from latentmem.encode.minilm import shared_minilm
from latentmem.encode.onnx import OnnxMiniLMEmbedder, default_minilm, shared_onnx

TEXTS = [
    "Caroline went to the LGBTQ support group yesterday and found it powerful.",
    "What does Melanie like to paint?",
    "hi",
    ".",
    "   ",
    "I moved to Lisbon in May 2023; the flat near the river is lovely in the evening.",
    "Der Zug nach München fährt um 7:45 Uhr vom Gleis 12 ab.",
    "東京の桜は三月の終わりに咲きます。",
    "Dinner tonight? 🍝🍷 my place at 8!!",
    "O'Neill's e-mail (re: Q3 budget) said \"no\" — twice.",
    " ".join(f"word{i} and then some more text" for i in range(120)),  # ~700 tokens: cut
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return shared_minilm().embed_batch(TEXTS)


def test_onnx_gives_the_torch_vectors(torch_vectors: np.ndarray) -> None:
    onnx = shared_onnx()
    assert onnx.name == shared_minilm().name and onnx.dim == 384
    batch = onnx.embed_batch(TEXTS)
    assert batch.dtype == np.float32 and batch.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    cos = (batch * torch_vectors).sum(1)
    assert cos.min() >= 0.9999, dict(zip(TEXTS, cos.round(6), strict=True))
    alone = np.vstack([onnx.embed_batch([t]) for t in TEXTS])
    assert np.allclose(alone, batch, atol=1e-5)  # padding and batching change nothing
    assert onnx.embed_batch([]).shape == (0, 384)
    many = TEXTS * 13  # more than one slice of 64, run on the thread pool
    assert np.allclose(onnx.embed_batch(many), np.vstack([batch] * 13), atol=1e-5)


def test_onnx_token_vectors_match_the_torch_path() -> None:
    for max_tokens in (64, 16):
        ours = shared_onnx().token_vectors(TEXTS, max_tokens)
        ref = shared_minilm().token_vectors(TEXTS, max_tokens)
        assert [v.shape for v in ours] == [v.shape for v in ref]
        for a, b in zip(ours, ref, strict=True):
            assert (a * b).sum(1).min() >= 0.999


def test_int8_stays_close_and_has_its_own_name(torch_vectors: np.ndarray) -> None:
    int8 = get_embedder("minilm-int8")
    assert int8.name == "all-MiniLM-L6-v2-int8"  # its vectors never mix with fp32 ones
    vectors = int8.embed_batch(TEXTS)
    # Dynamic quantisation scales each run's activations by its range: texts run alone,
    # so a vector does not depend on what it was embedded with.
    assert np.array_equal(vectors[::-1], int8.embed_batch(TEXTS[::-1]))
    assert np.array_equal(vectors[2], int8.embed_batch([TEXTS[2]])[0])
    cos = (vectors * torch_vectors).sum(1)
    # 0.987 on these texts (the shortest ones lose most: "hi", ".", 0.974-0.976); 0.992
    # on the mean over 10k corpus sentences (BENCHMARKS.md). A floor, not the target.
    assert cos.mean() >= 0.985 and cos.min() >= 0.97, cos.round(4)


def test_the_default_path_is_onnx_and_falls_back_to_torch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert isinstance(get_embedder("minilm"), OnnxMiniLMEmbedder)
    assert get_embedder("minilm-torch") is shared_minilm()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("LATENTMEM_CACHE_DIR", str(blocked))  # the graph cannot be written
    assert default_minilm() is shared_minilm()
    assert "using the torch path" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_embedder_reports_every_figure(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from latentmem.cli import main

    out = tmp_path / "embedder.json"
    assert main(["bench", "embedder", "--n", "40", "--singles", "5", "--cold", "1",
                 "--paths", "minilm-torch,minilm-onnx", "--wait-quiet", "0",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 40 and result["singles"] == 5 and result["commit"]
    assert set(result["paths"]) == {"minilm-torch", "minilm-onnx"}
    for row in result["paths"].values():
        assert row["bulk_per_s"] > 0 and row["single_p95_ms"] >= row["single_p50_ms"] > 0
        assert row["cos_min"] >= 0.9999 and row["peak_rss_mb"] > 0
    assert [c["embedder"] for c in result["cold_start"]] == ["minilm", "minilm-torch"]
    assert all(c["median_s"] > 0 for c in result["cold_start"])
    assert "cold `latentmem search`" in capsys.readouterr().out
