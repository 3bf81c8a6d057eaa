"""PNG charts of what the benchmark tables show (matplotlib, in the ``bench`` extra).

Each chart is saved beside the benchmark's JSON under ``benchmarks/results/``. Without
matplotlib the benchmark still runs and says that it drew nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._harness import RESULTS_DIR

__all__ = ["cumulative_chart", "memory_chart"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no chart; pip install 'trio-llm[bench]')")
        return None
    return plt


def cumulative_chart(
    name: str,
    title: str,
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    rate: float,
    start_s: float = 0.0,
    marks: Sequence[tuple[float, str]] = (),
) -> Path | None:
    """Completions over time for each ``series`` (label, completion times in seconds), beside
    the rate limit's line (``rate`` per second from ``start_s``): a run at the limit follows
    it, a 429 storm or a stall shows as a gap."""
    plt = _pyplot()
    if plt is None:
        return None
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    end = max((max(times) for _, times in series if times), default=1.0)
    for label, times in series:
        ordered = sorted(times)
        axes.step(ordered, range(1, len(ordered) + 1), where="post", label=label)
    axes.plot(
        [start_s, end], [0, max(0.0, (end - start_s) * rate)], "k--", lw=1, label="rate limit"
    )
    for at, text in marks:
        axes.axvline(at, color="grey", lw=0.8, ls=":")
        axes.text(at, 0, f" {text}", rotation=90, va="bottom", fontsize=8, color="grey")
    axes.set_xlabel("seconds")
    axes.set_ylabel("requests answered")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = RESULTS_DIR / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def memory_chart(name: str, title: str, bars: Sequence[tuple[str, float]]) -> Path | None:
    """Peak RSS (MB) per run, as bars."""
    plt = _pyplot()
    if plt is None:
        return None
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=110)
    labels = [label for label, _ in bars]
    values = [value if math.isfinite(value) else 0.0 for _, value in bars]
    axes.bar(labels, values, color="tab:blue")
    for position, value in enumerate(values):
        axes.text(position, value, f"{value:.0f} MB", ha="center", va="bottom", fontsize=8)
    axes.set_ylabel("peak RSS, MB")
    axes.set_title(title, fontsize=10)
    axes.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    path = RESULTS_DIR / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
