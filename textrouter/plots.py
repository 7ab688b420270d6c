"""PNG figures of evaluation results (matplotlib, Agg backend; written atomically)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ValueError(f"--plot {p} must end in .png")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, p)


def accuracy_bars(rows: Mapping[str, Mapping[str, Any]], path: str | Path, title: str) -> None:
    """One bar per method: accuracy (%) with the std across folds as an error bar when present.

    The y axis spans the data (not 0..100): 50-60% differences are what matters here, and from 0
    they look flat. Value labels sit above the error bar's top, so they never overlap it."""
    plt = _plt()
    names = list(rows)
    means = [100 * (r.get("accuracy_mean", r.get("accuracy")) or 0) for r in rows.values()]
    stds = [100 * (r.get("accuracy_std") or 0) for r in rows.values()]
    lo, hi = y_range(means, stds)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    colors = ["tab:green" if n.startswith("GRPO") else ("tab:gray" if n == "oracle" else "tab:blue") for n in names]
    ax.bar(range(len(names)), [m - lo for m in means], bottom=lo, yerr=stds, color=colors, capsize=3)
    pad = 0.02 * (hi - lo)
    for i, (m, sd) in enumerate(zip(means, stds)):
        ax.text(i, m + sd + pad, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(lo, hi)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("routed accuracy (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def y_range(means: Sequence[float], stds: Sequence[float]) -> tuple[float, float]:
    """(low, high) of the bar chart's y axis in %: the bars' tops and error bars, with room for labels."""
    tops = [m + s for m, s in zip(means, stds)]
    bottoms = [m - s for m, s in zip(means, stds)]
    span = max(max(tops) - min(bottoms), 5.0)
    lo = max(0.0, min(bottoms) - 0.25 * span)
    return lo, min(100.0, max(tops) + 0.2 * span)


def margin_curve_plot(curve: Sequence[Sequence[float]], chosen: Mapping[str, float], path: str | Path,
                      title: str) -> None:
    """Accuracy (%) against tool-call rate (%) over the decision margin, chosen point marked."""
    plt = _plt()
    pts = sorted(curve, key=lambda c: c[1])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([100 * c[1] for c in pts], [100 * c[2] for c in pts], marker=".", color="tab:blue",
            label="margin sweep")
    ax.scatter([100 * chosen["tool_rate"]], [100 * chosen["accuracy"]], s=90, color="tab:red", zorder=3,
               label=f"chosen (margin {chosen['margin']:+.2f})")
    _finish(plt, fig, ax, "tool-call rate (%, cost-weighted)", title, path)


def efficiency_curve(fractions: Sequence[float], series: Mapping[str, Sequence[tuple[float, float]]],
                     path: str | Path, title: str) -> None:
    """Accuracy (mean, std) vs fraction of the training folds, one line per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [100 * f for f in fractions]
    for name, pts in series.items():
        ax.errorbar(x, [100 * m for m, _ in pts], yerr=[100 * s for _, s in pts], marker="o", capsize=3, label=name)
    _finish(plt, fig, ax, "% of the training folds used", title, path)


def _finish(plt, fig, ax, xlabel: str, title: str, path: str | Path) -> None:
    """Axis labels (y: routed accuracy), title, legend; save as PNG and close."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("routed accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
