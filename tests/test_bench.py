"""The benchmark harness: metric arithmetic, end-to-end runs on tiny files, the CI floor."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from latentmem.bench import metrics as M
from latentmem.cli import main
from tests.conftest import LOCOMO_DEV, LONGMEMEVAL_DEV, require_shared

LOCOMO_KEYS = {"questions", "recall@1", "recall@5", "recall@10", "recall@20", "context_recall",
               "budget_tokens", "by_category", "search_ms_p50", "search_ms_p95",
               "ingest_turns_per_s"}


def test_metrics_by_hand() -> None:
    ranked = ["a", "b", "c", "d"]
    assert M.recall_at_k(ranked, ["b", "x"], 2) == 0.5
    assert M.recall_at_k(ranked, ["b", "b"], 2) == 1.0
    assert M.recall_all_at_k(ranked, ["a", "c"], 2) == 0.0
    assert M.recall_all_at_k(ranked, ["a", "c"], 3) == 1.0
    assert M.recall_any_at_k(ranked, ["x", "d"], 4) == 1.0
    assert M.ndcg_at_k(ranked, ["a"], 10) == 1.0
    assert M.ndcg_at_k(ranked, ["b"], 10) == pytest.approx(1 / math.log2(3))
    assert M.ndcg_at_k(ranked, ["c", "a"], 10) == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))
    assert M.parse_evidence(["D8:6; D9:17", "D1:2", "D1:2"]) == ["D8:6", "D9:17", "D1:2"]
    assert M.context_recall("x hello y", ["hello", "bye"]) == 0.5
    assert M.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert M.dedupe(["s1", "s2", "s1"]) == ["s1", "s2"]


def _locomo(tmp_path: Path) -> Path:
    turns1 = [
        {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a grey terrier called Pastel."},
        {"speaker": "Bo", "dia_id": "D1:2", "text": "What a cute dog! How old is he?"},
        {"speaker": "Ana", "dia_id": "D1:3", "text": "He is three, and scared of trams."},
    ]
    turns2 = [
        {"speaker": "Bo", "dia_id": "D2:1", "text": "I started a pottery class on Mondays."},
        {"speaker": "Ana", "dia_id": "D2:2", "text": "Pottery sounds relaxing, enjoy it."},
    ]
    sample = {
        "sample_id": "conv-t",
        "conversation": {"speaker_a": "Ana", "speaker_b": "Bo",
                         "session_1_date_time": "1:56 pm on 8 May, 2023", "session_1": turns1,
                         "session_2_date_time": "10:00 am on 9 June, 2023", "session_2": turns2},
        "qa": [
            {"question": "What is the name of Ana's dog?", "answer": "Pastel",
             "evidence": ["D1:1"], "category": 4},
            {"question": "When did Bo start pottery?", "answer": "June 2023",
             "evidence": ["D2:1"], "category": 2},
            {"question": "How old is the dog and what scares him?", "answer": "3, trams",
             "evidence": ["D1:3; D1:1"], "category": 1},
            {"question": "What is Bo's cat called?", "adversarial_answer": "none",
             "evidence": ["D1:1"], "category": 5},
        ],
    }
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([sample]))
    return path


def test_locomo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    code = main(["bench", "locomo", "--data", str(_locomo(tmp_path)), "--embedder", "hash",
                 "--system", "latentmem,dense,bm25", "--cache", str(tmp_path / "c.db"),
                 "--json", str(out), "--report", str(tmp_path / "plots"), "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert LOCOMO_KEYS <= set(result)
    assert result["questions"] == 3 and result["budget_tokens"] == 1000
    assert set(result["by_category"]) == {"single-hop", "temporal", "multi-hop"}
    assert result["apart_overall"]["questions"] == 1
    assert set(result["systems"]) == {"latentmem", "dense", "bm25"}
    assert set(result["ratios"]) == {"dense", "bm25"}
    assert all(0.0 <= result[f"recall@{k}"] <= 1.0 for k in (1, 5, 10, 20))
    assert result["recall@20"] == 1.0  # five turns: everything is in the top 20
    assert (tmp_path / "plots" / "recall_at_k.png").stat().st_size > 1000
    assert "recall@10 by category" in capsys.readouterr().out


def test_locomo_unknown_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "locomo", "--data", str(_locomo(tmp_path)), "--embedder", "hash",
                 "--conversations", "conv-404", "--quiet"])
    assert code == 2 and "conv-404" in capsys.readouterr().err


def test_longmemeval_end_to_end(tmp_path: Path) -> None:
    item = {
        "question_id": "q1", "question_type": "single-session-user",
        "question": "What breed is my dog?", "answer": "terrier",
        "question_date": "2023/06/01 (Thu) 10:00",
        "haystack_dates": ["2023/05/20 (Sat) 02:21", "2023/05/21 (Sun) 09:00"],
        "haystack_session_ids": ["s_a", "answer_s_b"],
        "haystack_sessions": [
            [{"role": "user", "content": "Recommend a pasta recipe.", "has_answer": False},
             {"role": "assistant", "content": "Try carbonara.", "has_answer": False}],
            [{"role": "user", "content": "My dog is a terrier, any tips?", "has_answer": True},
             {"role": "assistant", "content": " ", "has_answer": False},  # blank, as in the data
             {"role": "assistant", "content": "Terriers love digging.", "has_answer": False}],
        ],
        "answer_session_ids": ["answer_s_b"],
    }
    abstain = {**item, "question_id": "q2_abs", "question": "What breed is my cat?"}
    path = tmp_path / "lme.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump([item, abstain], fh)
    out = tmp_path / "r.json"
    assert main(["bench", "longmemeval", "--data", str(path), "--embedder", "hash",
                 "--cache", str(tmp_path / "c.db"), "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert {"turn_recall@5", "turn_recall@10", "session_recall_any@5", "context_recall",
            "by_category"} <= set(result)
    assert result["questions"] == 1 and result["apart_overall"]["questions"] == 1
    assert result["session_recall_any@5"] == 1.0


def test_ablate_end_to_end(tmp_path: Path) -> None:
    one = json.loads(_locomo(tmp_path).read_text())[0]
    two = {**one, "sample_id": "conv-u"}
    data = tmp_path / "two.json"
    data.write_text(json.dumps([one, two]))
    out = tmp_path / "a.json"
    assert main(["bench", "ablate", "--data", str(data), "--fit", "conv-t", "--embedder", "hash",
                 "--cache", str(tmp_path / "c.db"), "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["fit"] == ["conv-t"] and result["held_out"] == ["conv-u"]
    variants = result["variants"]
    assert "all on (default)" in variants and "plain rrf (all off)" in variants
    for v in variants.values():
        assert v["fit"]["questions"] == v["held_out"]["questions"] == 3
        assert 0.0 <= v["held_out"]["recall@10"] <= 1.0
    assert main(["bench", "ablate", "--data", str(data), "--fit", "conv-x", "--embedder", "hash",
                 "--cache", str(tmp_path / "c.db"), "--quiet"]) == 2
    assert main(["bench", "ablate", "--data", str(data), "--fit", "conv-t", "--embedder", "hash",
                 "--cache", str(tmp_path / "c.db"), "--json", str(out), "--quiet", "--variants",
                 '{"rrf": {"fusion": "rrf"}, "w": {"weights": {"recency": 0.0}}}']) == 0
    assert list(json.loads(out.read_text())["variants"]) == ["rrf", "w"]
    with pytest.raises(SystemExit):
        main(["bench", "ablate", "--data", str(data), "--variants", '{"x": {"no_such": 1}}'])


def test_set_overrides_reach_the_engine(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["bench", "locomo", "--data", str(_locomo(tmp_path)), "--embedder", "hash",
                 "--system", "latentmem", "--cache", str(tmp_path / "c.db"), "--json", str(out),
                 "--quiet", "--set", "diffusion_hops=0", "--set", "fusion=rrf"]) == 0
    assert json.loads(out.read_text())["settings"] == {"diffusion_hops": 0, "fusion": "rrf"}
    with pytest.raises(SystemExit):
        main(["bench", "locomo", "--data", str(_locomo(tmp_path)), "--set", "no_such_key=1"])


# recall@10 of latentmem on conv-26 when this floor was set, minus 0.02: 0.819 with the
# learned last stage (0.832 at commit 49fabf8 without it; the stage gains on the other
# fit conversation and on the held-out ones, see BENCHMARKS.md). Raised on 2026-11-30
# (speaker names out of the query vector, feaafb1): recall@10 0.856, context recall at
# 1,000 tokens 0.898; each floor is that minus 0.02.
LOCOMO_CONV26_FLOOR = 0.836
LOCOMO_CONV26_CONTEXT_FLOOR = 0.878


def _real_bench(tmp_path: Path, bench: str, data: Path, *subset: str) -> dict:
    """latentmem's figures from ``latentmem bench BENCH`` on real data, real model."""
    out = tmp_path / "r.json"
    assert main(["bench", bench, "--data", str(data), *subset, "--system", "latentmem",
                 "--cache", str(tmp_path / "cache.db"), "--json", str(out), "--quiet"]) == 0
    return dict(json.loads(out.read_text()))


@pytest.mark.slow
def test_locomo_quality_floor(tmp_path: Path) -> None:
    result = _real_bench(tmp_path, "locomo", require_shared(LOCOMO_DEV), "--conversations", "conv-26")
    assert result["recall@10"] >= LOCOMO_CONV26_FLOOR, result["recall@10"]
    assert result["context_recall"] >= LOCOMO_CONV26_CONTEXT_FLOOR, result["context_recall"]
    # Calibrated relevance on the same run (bench/calibration.py). On 2026-12-03 the shipped
    # model gave ECE 0.025 over the top-10 hits of conv-26's 150 questions, and 85% of its
    # 47 adversarial questions had every hit below 0.5. The floors are the issue's ECE goal
    # (0.05) and a tenth under the share.
    cal = result["systems"]["latentmem"]["calibration"]["shipped"]
    assert cal["ece"] <= 0.05, cal["ece"]
    assert cal["no_evidence_below@0.5"] >= 0.75, cal["no_evidence_below@0.5"]


# LongMemEval dev, the first question of each type (6 scored): turn recall@10 was 0.806 on
# 2026-12-03 (26c1ad3). One question moves it by about 0.17, so the floor (a question lost,
# and most of another) catches a broken transfer, like the learned stage's first version
# that cut the 27-question figure from 0.890 to 0.728, not small drifts. About 2.5 minutes:
# every haystack is embedded by the real model. (Two questions a type took 4.5 minutes,
# which CI's 20 no longer had room for.)
LONGMEMEVAL_PER_TYPE_1_FLOOR = 0.6


@pytest.mark.slow
def test_longmemeval_quality_floor(tmp_path: Path) -> None:
    result = _real_bench(tmp_path, "longmemeval", require_shared(LONGMEMEVAL_DEV), "--per-type", "1")
    assert result["questions"] == 6
    assert result["turn_recall@10"] >= LONGMEMEVAL_PER_TYPE_1_FLOOR, result["turn_recall@10"]
