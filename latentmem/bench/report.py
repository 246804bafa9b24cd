"""Printing tables, describing the machine, and drawing the plots of ``--report DIR``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from latentmem.errors import MissingExtraError


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform()}


def commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{sha}{'+dirty' if dirty else ''}" if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stamp() -> dict[str, Any]:
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(),
            "machine": machine()}


def write_json(result: dict[str, Any], path: str | None) -> None:
    """Write a bench result (``--json OUT``); nothing when no path was given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2, ensure_ascii=False))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def plots(result: dict[str, Any], out_dir: str | Path, ks: list[int]) -> list[Path]:
    """recall@k curves per category and system, and a search latency histogram."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError("--report needs matplotlib: pip install 'latentmem[bench]'") from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    systems: dict[str, Any] = result["systems"]
    categories = sorted({c for s in systems.values() for c in s["by_category"]})
    panels = ["overall", *categories]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), sharey=True)
    for ax, panel in zip(axes if len(panels) > 1 else [axes], panels, strict=True):
        for name, s in systems.items():
            src = s if panel == "overall" else s["by_category"].get(panel, {})
            ys = [src.get(f"recall@{k}") for k in ks]
            if all(y is not None for y in ys):
                ax.plot(ks, ys, marker="o", label=name)
        ax.set_title(panel)
        ax.set_xlabel("k")
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.grid(alpha=0.3)
    (axes[0] if len(panels) > 1 else axes).set_ylabel("evidence recall@k")
    (axes[0] if len(panels) > 1 else axes).legend()
    fig.tight_layout()
    curves = out / "recall_at_k.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, s in systems.items():
        ax.hist(s["search_ms"], bins=40, alpha=0.5, label=f"{name} (p50 {s['search_ms_p50']:.1f} ms)")
    ax.set_xlabel("search latency (ms)")
    ax.set_ylabel("questions")
    ax.legend()
    fig.tight_layout()
    hist = out / "search_latency.png"
    fig.savefig(hist, dpi=110)
    plt.close(fig)
    return [curves, hist]
