"""The ``damage`` scenarios of ``latentmem bench reliability``: a store's files damaged at
random, then read.

- ``index_file``: the saved FAISS index (of an fp32 store: the tier that keeps one in a
  file; the others rebuild it from the store at every open) is deleted, truncated at a
  random length, or has 1-16 random bits flipped. On the next open every memory must be
  there, the index must agree with the store (``latentmem check``), and a search must
  score like an exact scan.
- ``sqlite_page``: one random page of the SQLite file (not the header page) is overwritten
  with random bytes. Then every memory is read back by id, the memories are listed and
  searched, and ``latentmem check`` runs. A read may fail, but only with a
  ``StoreCorruptError`` that says so; a read that returns a wrong text, or any other
  exception, is a problem; and ``check`` must report the damage whenever a read met it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

SCENARIOS = ("index_file", "sqlite_page")
PAGE = 4096


def _texts(n: int) -> list[str]:
    return [f"note {i} about topic{i % 41} with words {i * 7} and more" for i in range(n)]


def _build(home: Path, n: int, **config: Any) -> dict[str, str]:
    from latentmem import Memory

    texts = _texts(n)
    with Memory(home, embedder="hash", **config) as m:
        ids = m.add(texts[: n // 2], user_id="ana", session_id="s1").ids
        ids += m.add(texts[n // 2:], user_id="bob", session_id="s2").ids
    return dict(zip(ids, texts, strict=True))


def trial(scenario: str, home: Path, rng: random.Random, n: int = 400) -> dict[str, Any]:
    written = _build(home, n, **({"vector_tier": "fp32"} if scenario == "index_file" else {}))
    damage = _damage_index_file(home, rng) if scenario == "index_file" else \
        _damage_page(home, rng)
    read = _read_back(home, written)
    return {"scenario": scenario, "damage": damage, "acknowledged_writes": len(written),
            "records_checked": len(written), "in_flight": False, **read}


def _damage_index_file(home: Path, rng: random.Random) -> str:
    from latentmem.core import INDEX_FILE

    path = home / INDEX_FILE
    raw = bytearray(path.read_bytes())
    kind = rng.choice(("delete", "truncate", "flip"))
    if kind == "delete":
        path.unlink()
        return "deleted"
    if kind == "truncate":
        cut = rng.randrange(len(raw))
        path.write_bytes(bytes(raw[:cut]))
        return f"truncated to {cut} of {len(raw)} bytes"
    flips = rng.randint(1, 16)
    for _ in range(flips):
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(raw))
    return f"{flips} bits flipped"


def _damage_page(home: Path, rng: random.Random) -> str:
    from latentmem.store import DB_FILE

    path = home / DB_FILE
    pages = path.stat().st_size // PAGE
    page = rng.randrange(2, pages + 1)
    with path.open("r+b") as f:
        f.seek((page - 1) * PAGE)
        f.write(rng.randbytes(PAGE))
    return f"page {page} of {pages} overwritten"


def _read_back(home: Path, written: dict[str, str]) -> dict[str, Any]:
    from latentmem import Memory
    from latentmem.errors import StoreCorruptError

    problems: list[str] = []
    refused = 0  # reads that said the store is damaged
    try:
        m = Memory(home, embedder="hash")
    except StoreCorruptError:
        return {"refused_reads": 1, "check_ok": False, "problems": problems}
    with m:
        for rid, text in written.items():
            try:
                got = m.get(rid).text
            except StoreCorruptError:
                refused += 1
                continue
            except Exception as exc:  # noqa: BLE001 - any other exception is the finding
                problems.append(f"get({rid}) raised {type(exc).__name__}: {exc}")
                continue
            if got != text:
                problems.append(f"get({rid}) returned {got!r}, not the text written")
        for user in ("ana", "bob"):
            try:
                listed = {r.id: r.text for r in m.all(user, limit=10_000)}
                hits = m.search("topic7 words", user_id=user, k=5)
            except StoreCorruptError:
                refused += 1
                continue
            except Exception as exc:  # noqa: BLE001
                problems.append(f"reading {user}'s memories raised {type(exc).__name__}: {exc}")
                continue
            wrong = [rid for rid, text in listed.items() if written.get(rid) != text]
            if wrong:
                problems.append(f"listing {user}'s memories gave {len(wrong)} wrong texts")
            if any(h.id not in written or written[h.id] != h.text for h in hits):
                problems.append(f"a search of {user}'s memories returned a wrong memory")
        try:
            report = m.check()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"check raised {type(exc).__name__}: {exc}")
            return {"refused_reads": refused, "check_ok": False, "problems": problems}
        if refused and report["ok"]:
            problems.append("reads met damage that check did not report")
        if report["ok"]:
            q = m.embedder.embed_batch(["topic7 words"])[0]
            _, scores = m.index.search("ana", q, 10)
            rows = m.store.list_rows(m.core.scope("ana"), with_vector=True)
            exact = np.sort(np.stack([np.asarray(r.record.vector) for r in rows]) @ q)[::-1]
            if not np.allclose(np.sort(scores)[::-1], exact[:len(scores)], atol=5e-3):
                problems.append("after the damage a search differs from the exact scan")
    return {"refused_reads": refused, "check_ok": report["ok"], "problems": problems}
