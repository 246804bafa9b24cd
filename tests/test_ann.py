"""The IVF index a large partition switches to (latentmem/store/ann.py): its recall against
the exact scan on small fixed data, and the index agreeing with the store through adds,
deletes, reopening and another process's writes. A low ``ann_min_vectors`` makes a
partition of a few thousand vectors use IVF; FAISS is real throughout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentmem import Config, InvalidInputError, Memory
from latentmem.check import index_problems
from latentmem.memory import INDEX_FILE
from latentmem.store.ann import Ann, nlist_for
from latentmem.store.vector_index import FaissIndex

DIM = 48


def _clustered(n: int, seed: int, centres: int = 60) -> np.ndarray:
    """Unit vectors around ``centres`` directions, as embeddings of related texts are."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((centres, DIM))
    x = base[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(index: FaissIndex, x: np.ndarray, rowids: np.ndarray, queries: np.ndarray,
            k: int = 10, **kw: object) -> float:
    exact = rowids[np.argsort(-(queries @ x.T), axis=1)[:, :k]]
    found = [set(index.search("u", q, k, **kw)[0].tolist()) for q in queries]  # type: ignore[arg-type]
    return float(np.mean([len(f & set(e.tolist())) / k for f, e in zip(found, exact, strict=True)]))


def test_ivf_recall_against_the_exact_scan() -> None:
    x, queries = _clustered(4000, 1), _clustered(100, 2)
    rowids = np.arange(1, 4001, dtype=np.int64)
    index = FaissIndex(DIM, ann=Ann(min_vectors=1000, nprobe=16))
    for lo in range(0, 4000, 250):  # grows through the threshold
        index.add("u", rowids[lo:lo + 250], x[lo:lo + 250])
    assert index.due() == ["u"]  # trained for 1,000, holds 4,000
    index.refill("u", lambda: iter([("u", rowids, x), ("v", rowids[:5], x[:5])]), 4000)
    assert index.due() == [] and index.count() == 4000
    assert index.kinds()["u"].startswith("ivf")
    assert _recall(index, x, rowids, queries) >= 0.95
    assert _recall(index, x, rowids, queries, exact=True) >= 0.99  # fp16 ties only
    # A scope is searched over its own rows exactly: a small one from its vectors (with
    # a rowid the index lacks, through the lists), a larger one through every list.
    for allowed in (rowids[::400], np.append(rowids[::400], 10**9), rowids[::97]):
        got = index.search("u", queries[0], 5, allowed=allowed)[0]
        known = allowed[allowed <= 4000]
        want = known[np.argsort(-(x[known - 1] @ queries[0]))[:5]]
        assert got.tolist() == want.tolist()


def test_partition_kind_follows_its_size() -> None:
    x = _clustered(3000, 3)
    rowids = np.arange(1, 3001, dtype=np.int64)
    index = FaissIndex(DIM, ann=Ann(min_vectors=1000))
    index.add("u", rowids[:999], x[:999])
    index.add("v", rowids[999:1500], x[999:1500])
    assert index.kinds() == {"u": "flat", "v": "flat"}
    index.add("u", rowids[1500:], x[1500:])
    assert index.kinds()["u"].startswith("ivf") and index.kinds()["v"] == "flat"
    assert sorted(index.ids("u").tolist()) == sorted([*rowids[:999], *rowids[1500:]])
    np.testing.assert_allclose(index.reconstruct("u", 2000), x[1999], atol=1e-3)
    index.remove("u", rowids[1500:2900])
    assert index.kinds()["u"].startswith("ivf")  # 1,099 left: above half the threshold
    index.remove("u", rowids[:700])
    assert index.kinds()["u"] == "flat"  # 399: below half
    assert sorted(index.ids("u").tolist()) == sorted([*rowids[700:999], *rowids[2900:]])
    assert index.count() == 399 + 501


def test_fill_trains_once_for_the_whole_partition() -> None:
    x = _clustered(3000, 4)
    rowids = np.arange(1, 3001, dtype=np.int64)

    def chunks():  # type: ignore[no-untyped-def]
        return (("u", rowids[lo:lo + 700], x[lo:lo + 700]) for lo in range(0, 3000, 700))

    index = FaissIndex(DIM, ann=Ann(min_vectors=1000))
    index.fill(chunks, {"u": 3000})
    # One training for 3,000 vectors: as many lists as its sample allows, up to nlist_for.
    assert 32 <= int(index.kinds()["u"][3:]) <= nlist_for(3000) and index.count() == 3000
    assert sorted(index.ids("u").tolist()) == rowids.tolist()


def _agrees(m: Memory) -> None:
    assert index_problems(m.store, m.index) == []
    stored = {u: n for u, n in m.store.users()}
    assert {u: len(m.index.ids(u)) for u in m.index.users()} == stored  # type: ignore[attr-defined]


def test_the_ivf_index_stays_the_stores_through_adds_deletes_and_restarts(tmp_path: Path) -> None:
    home = tmp_path / "h"
    settings = {"embedder": "hash", "vector_tier": "fp32", "ann_min_vectors": 600, "ann_nprobe": 8}
    texts = [f"note {i} about topic {i % 37} and place {i % 11}" for i in range(1500)]
    with Memory(home, **settings) as m:
        ids = m.add(texts[:1000], user_id="u", session_id="s1").ids
        m.add(texts[1000:1100], user_id="v")
        kinds = m.index.kinds()  # type: ignore[attr-defined]
        assert kinds["u"].startswith("ivf") and kinds["v"] == "flat"
        m.delete(ids[:100])
        m.add(texts[1100:1500], user_id="u", session_id="s2")
        _agrees(m)
        hit = m.search(texts[1234], user_id="u", k=1, track_access=False)[0]
        assert hit.record.text == texts[1234]
        scoped = m.search(texts[5], user_id="u", session_id="s2", k=3, track_access=False)
        assert scoped and all(h.record.session_id == "s2" for h in scoped)
    assert (home / INDEX_FILE).exists()
    with Memory(home, **settings) as m:
        assert m.core.index_file_status == "read"
        assert m.index.kinds()["u"].startswith("ivf")  # type: ignore[attr-defined]
        _agrees(m)
        # Another process deletes and adds behind this one's back: the next search
        # rebuilds the index from the store.
        with Memory(home, **settings) as other:
            other.delete(ids[100:700])
            other.add("a late note about topic 3", user_id="u")
        m.search("topic 3", user_id="u", track_access=False)
        _agrees(m)
        assert m.index.kinds()["u"].startswith("ivf")  # type: ignore[attr-defined]
    # The threshold is not fixed in the store: without it the same file's index is flat,
    # and the converted index is what the next open reads.
    flat = {**settings, "ann_min_vectors": None}
    with Memory(home, **flat) as m:
        assert m.core.index_file_status.startswith("read; partitions converted")
        assert m.index.kinds() == {"u": "flat", "v": "flat"}  # type: ignore[attr-defined]
        _agrees(m)
    with Memory(home, **flat) as m:
        assert m.core.index_file_status == "read"


def test_a_grown_partition_is_trained_again_from_the_store(tmp_path: Path) -> None:
    with Memory(tmp_path / "h", embedder="hash", ann_min_vectors=300) as m:
        m.add([f"first batch note {i}" for i in range(300)], user_id="u")
        before = m.index.kinds()["u"]  # type: ignore[attr-defined]
        m.import_records([], [])  # a write that changes no vector trains nothing
        m.add([f"second batch note {i}" for i in range(400)], user_id="u")
        assert m.index.due() == []  # type: ignore[attr-defined]
        assert m.index.kinds()["u"] != before  # type: ignore[attr-defined]
        _agrees(m)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("ann_min_vectors", 0, "ann_min_vectors must be a number >= 1, found 0"),
    ("ann_min_vectors", "many", "ann_min_vectors must be an integer, found 'many'"),
    ("ann_min_vectors", 1.5, "ann_min_vectors must be an integer, found 1.5"),
    ("ann_nprobe", 0, "ann_nprobe must be a number >= 1, found 0"),
    ("ann_nprobe", True, "ann_nprobe must be an integer, found True"),
])
def test_ann_settings_are_checked(tmp_path: Path, key: str, value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Config.from_dict({key: value})
    with pytest.raises(InvalidInputError, match=message):
        Memory(tmp_path / "h", embedder="hash", **{key: value})
    assert not (tmp_path / "h").exists()


def test_ann_settings_by_section() -> None:
    config = Config.from_dict({"storage": {"ann_min_vectors": None, "ann_nprobe": 32}})
    assert config.storage.ann_min_vectors is None and config.storage.ann_nprobe == 32
    assert Config().storage.ann_min_vectors == 200_000


def test_bench_ann_reports_recall_by_nprobe(tmp_path: Path) -> None:
    import argparse
    import json

    from latentmem.bench.ann import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    out = tmp_path / "ann.json"
    args = parser.parse_args(["ann", "--n", "1500", "--nlist", "16", "--nprobe", "2,16",
                              "--real", "100", "--queries", "10", "--embedder", "hash",
                              "--json", str(out)])
    assert args.func(args) == 0
    (size,) = json.loads(out.read_text())["sizes"]
    assert size["n"] == 1500 and size["flat_fp16"]["recall@10"] >= 0.99
    few, every = size["ivf"]
    assert (few["nlist"], few["nprobe"], every["nprobe"]) == (16, 2, 16)
    assert every["recall@10"] >= 0.99 and few["recall@10"] <= every["recall@10"]
