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
    """One bar per method: accuracy (%) with the std across folds as an error bar when present."""
    plt = _plt()
    names = list(rows)
    means = [100 * (r.get("accuracy_mean", r.get("accuracy")) or 0) for r in rows.values()]
    stds = [100 * (r.get("accuracy_std") or 0) for r in rows.values()]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    colors = ["tab:green" if n.startswith("GRPO") else ("tab:gray" if n == "oracle" else "tab:blue") for n in names]
    ax.bar(range(len(names)), means, yerr=stds, color=colors, capsize=3)
    for i, m in enumerate(means):
        ax.text(i, m + 1, f"{m:.1f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("routed accuracy (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def efficiency_curve(fractions: Sequence[float], series: Mapping[str, Sequence[tuple[float, float]]],
                     path: str | Path, title: str) -> None:
    """Accuracy (mean, std) vs fraction of the training folds, one line per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [100 * f for f in fractions]
    for name, pts in series.items():
        ax.errorbar(x, [100 * m for m, _ in pts], yerr=[100 * s for _, s in pts], marker="o", capsize=3, label=name)
    ax.set_xlabel("% of the training folds used")
    ax.set_ylabel("routed accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
