"""Inputs and instruments for ``bench perf``: realistic text, generated vectors, the
machine, peak RSS per phase, and how busy the rest of the machine was.

Text comes from the shared sentence corpus (``sentences-*.tsv.xz``, lines are
``source<TAB>text``) when it is present, else from a synthetic generator of
plausible chat sentences; every result says which.
"""

from __future__ import annotations

import lzma
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SHARED_TEXT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "text"
# Conversational sources of the shared corpus: queries are questions taken from these.
CHAT_SOURCES = {"msc", "synthetic_persona_chat", "topical_chat"}


def _corpus_lines(folder: Path) -> Iterator[tuple[str, str]]:
    for part in sorted(folder.glob("sentences-*.tsv.xz")):
        with lzma.open(part, "rt", encoding="utf-8") as fh:
            for line in fh:
                source, _, text = line.rstrip("\n").partition("\t")
                text = text.strip()
                if len(text) > 20:
                    yield source, text


_WHO = ["I", "My sister", "Our team", "The landlord", "My doctor", "Ana", "We", "Jon", "Priya"]
_DID = ["visited", "fixed", "booked", "cancelled", "painted", "ordered", "found", "moved",
        "argued about", "finally sold"]
_WHAT = ["the flat in Alfama", "a red bicycle", "tickets to Porto", "the piano", "a new laptop",
         "the garden shed", "a table for six", "the vet appointment", "grandma's old car",
         "the quarterly report"]
_WHEN = ["last Tuesday", "in May", "yesterday", "two weeks ago", "on the 3rd", "this morning",
         "after the wedding", "before the trip to Oslo"]
_ASK = ["When did {w} deal with {o}?", "Who {d} {o}?", "What happened with {o} {t}?",
        "Did {w} ever mention {o}?"]


def _synthetic_lines(seed: int) -> Iterator[tuple[str, str]]:
    rng = random.Random(seed)
    count = 0
    while True:
        count += 1
        w, d, o, t = (rng.choice(x) for x in (_WHO, _DID, _WHAT, _WHEN))
        if count % 4 == 0:
            yield "synthetic_chat", rng.choice(_ASK).format(w=w, d=d, o=o, t=t)
        else:
            yield "synthetic_chat", f"{w} {d} {o} {t}, note {count}."


def is_question(source: str, text: str) -> bool:
    words = len(text.split())
    return text.endswith("?") and 4 <= words <= 25 and (
        source in CHAT_SOURCES or source.startswith("synthetic")
    )


@dataclass
class Texts:
    """Distinct reserved texts (queries, single adds, ingest) and a stream for the fill."""

    source: str
    queries: list[str]
    warmup: list[str]
    adds: list[str]
    ingest: list[str]
    _spill: list[str] = field(default_factory=list)
    _rest: Iterator[tuple[str, str]] = field(default_factory=lambda: iter(()))
    synthetic_fill: int = 0  # fill texts made up because the corpus ran out

    def fill(self) -> Iterator[str]:
        """Texts for the generated-vector fill, as many as wanted (synthetic past the corpus)."""
        yield from self._spill
        self._spill = []
        for _, text in self._rest:
            yield text
        for _, text in _synthetic_lines(11):
            self.synthetic_fill += 1
            yield text


def load_texts(queries: int, adds: int, ingest: int, warmup: int = 5, seed: int = 7,
               folder: Path = SHARED_TEXT) -> Texts:
    """Queries are short questions from chat sources; everything reserved is distinct, so
    neither the embedding cache nor the index has seen a query or a single add before."""
    shared = folder.is_dir() and any(folder.glob("sentences-*.tsv.xz"))
    lines = _corpus_lines(folder) if shared else _synthetic_lines(seed)
    source = (f"{folder}/sentences-*.tsv.xz" if shared
              else "synthetic chat sentences (the shared corpus is absent)")
    want_q = queries + warmup
    qs: list[str] = []
    other: dict[str, None] = {}
    seen: set[str] = set()
    spill: list[str] = []
    for src, text in lines:
        if text in seen:
            continue
        if len(qs) < want_q and is_question(src, text):
            qs.append(text)
            seen.add(text)
        elif len(other) < adds + ingest:
            other[text] = None
            seen.add(text)
        else:
            spill.append(text)
        if len(qs) >= want_q and len(other) >= adds + ingest:
            break
    rest = list(other)
    if len(qs) < want_q or len(rest) < adds + ingest:
        raise RuntimeError(f"{source}: not enough distinct sentences for the reserved sets")
    return Texts(source, qs[warmup:], qs[:warmup], rest[:adds], rest[adds:adds + ingest],
                 spill, lines)


def generated_vectors(sample: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors shaped like real ones: a real vector, half of another, a little noise."""
    a = sample[rng.integers(0, len(sample), count)]
    b = sample[rng.integers(0, len(sample), count)]
    vecs = a + 0.5 * b + rng.normal(0, 0.03, a.shape).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32)


# -- the machine ----------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    from latentmem.bench.report import machine

    info = machine()
    info["nproc"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        model = re.search(r"^Model name:\s*(.+)$", out, re.M)
        info["lscpu_model"] = model.group(1).strip() if model else None
    except (OSError, subprocess.SubprocessError):
        info["lscpu_model"] = None
    try:
        info["mem_total_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        info["mem_total_gb"] = None
    return info


def _status_kb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def peak_rss_mb() -> float:
    """VmHWM: peak resident set since start or since the last ``reset_peak``."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so each phase gets its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class CpuShare:
    """The share of the machine's CPU time used by *other* processes between start and
    ``stop``: above a few percent, latencies on a 2-core machine are not clean."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        try:
            fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return (0.0, 0.0, 0.0)
        tick = float(os.sysconf("SC_CLK_TCK"))
        total = sum(fields[:8]) / tick
        busy = total - (fields[3] + fields[4]) / tick
        t = os.times()
        return total, busy, t.user + t.system

    def stop(self) -> float:
        end = self._read()
        total = end[0] - self._start[0]
        if total <= 0:
            return float("nan")
        other = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return max(0.0, other / total)


def wait_quiet(limit_s: float, threshold: float = 0.1, window_s: float = 2.0) -> float:
    """Wait (up to ``limit_s``) until other processes use less than ``threshold`` of the
    machine over ``window_s``; returns the last share seen."""
    deadline = time.monotonic() + limit_s
    while True:
        probe = CpuShare()
        time.sleep(window_s)
        share = probe.stop()
        if share < threshold or time.monotonic() >= deadline:
            return share


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


class HeldLock:
    """A stand-in for a re-entrant lock that records, for one thread, how long each of its
    outermost holds lasted: what a search waiting for that lock could have waited. Used to
    measure how long a sleep cycle blocks searches, whatever it does while it holds the
    lock (a write, an index rebuild, a merge)."""

    def __init__(self, inner: Any, thread_name: str) -> None:
        self.inner, self.thread_name = inner, thread_name
        self.holds: list[float] = []
        self._depth = 0
        self._since = 0.0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = bool(self.inner.acquire(blocking, timeout))
        if got and _thread_name() == self.thread_name:
            self._depth += 1
            if self._depth == 1:
                self._since = time.perf_counter()
        return got

    def release(self) -> None:
        if _thread_name() == self.thread_name:
            self._depth -= 1
            if self._depth == 0:
                self.holds.append(time.perf_counter() - self._since)
        self.inner.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _thread_name() -> str:
    import threading

    return threading.current_thread().name
