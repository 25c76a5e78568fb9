"""Plots shared by the task-incremental experiments (BECAME, H-embedding), drawn from their ``results.json``.

The accuracy matrices ``R[t, i]`` side by side (tasks not trained yet are hatched, never drawn as 0), and ACC
and BWT per method with seed dots (Lopez-Paz & Ranzato, NeurIPS 2017, for BWT).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def mean_matrix(rows: list[dict], key: str = "matrix") -> np.ndarray:
    """Mean over seeds of ``row[key]`` (None entries = NaN, e.g. tasks not trained yet)."""
    # untrained tasks are NaN in every seed, so a plain mean keeps them NaN (and warns about nothing)
    return np.array([[[np.nan if v is None else v for v in r] for r in row[key]] for row in rows], float).mean(0)


def by_method(result: dict) -> dict[str, list[dict]]:
    """``results.json`` rows grouped by method, in order."""
    out: dict[str, list[dict]] = {}
    for row in result["rows"]:
        out.setdefault(row["method"], []).append(row)
    return out


def accuracy_matrices(result: dict, names: dict[str, str] | None = None) -> Figure:
    """``R[t, i]`` (accuracy on task i after training task t, mean over seeds) for every method; one colour bar."""
    groups = by_method(result)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.4), squeeze=False)
    for ax, (method, rows) in zip(axes[0], groups.items()):
        r = 100 * mean_matrix(rows)
        ax.add_patch(plt.Rectangle((-0.5, -0.5), r.shape[1], r.shape[0], hatch="//", fill=False, color="0.8", lw=0))
        im = ax.imshow(np.ma.masked_invalid(r), vmin=0, vmax=100, cmap="viridis")
        ax.set(title=(names or {}).get(method, method), xlabel="evaluated task i", ylabel="after task t")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="accuracy (%)")
    return fig


def acc_bwt(result: dict, names: dict[str, str] | None = None) -> Figure:
    """ACC (higher is better) and BWT (closer to 0 is better; negative = forgetting): mean bars, seed dots."""
    groups = by_method(result)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, key, title in zip(axes, ("ACC", "BWT"), ("ACC (higher is better)", "BWT (negative = forgetting)")):
        for i, rows in enumerate(groups.values()):
            values = 100 * np.array([r[key] for r in rows])
            ax.bar(i, values.mean(), color="tab:blue" if key == "ACC" else "tab:red", alpha=0.5)
            ax.scatter(np.full(len(values), i), values, color="k", s=12, zorder=3)
        ax.set_xticks(range(len(groups)), [(names or {}).get(m, m) for m in groups], rotation=30, ha="right", fontsize=8)
        ax.set(title=title, ylabel="%")
    fig.tight_layout()
    return fig
