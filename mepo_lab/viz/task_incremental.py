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


def plot_task_run(row: dict, past: list[tuple[str, dict]] = (), names: dict[str, str] | None = None) -> Figure:
    """``R[t, i]`` of one run's row (tasks not trained yet hatched) and the ACC / BWT of the ``past`` runs
    (``(label, row)`` pairs, grey, oldest first) and of this run (colour): the widgets' picture of a run."""
    name = (names or {}).get(row["method"], row["method"])
    fig, (mat, bars) = plt.subplots(1, 2, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
    r = 100 * np.array([[np.nan if v is None else v for v in line] for line in row["matrix"]], float)
    mat.add_patch(plt.Rectangle((-0.5, -0.5), r.shape[1], r.shape[0], hatch="//", fill=False, color="0.8", lw=0))
    im = mat.imshow(np.ma.masked_invalid(r), vmin=0, vmax=100, cmap="viridis")
    fig.colorbar(im, ax=mat, shrink=0.85, label="accuracy (%)")
    mat.set(title=f"R[t, i]: {name}", xlabel="evaluated task i", ylabel="after task t")
    runs = [*past, ("now", row)]
    x = np.arange(len(runs))
    for k, (key, colour) in enumerate((("ACC", "tab:blue"), ("BWT", "tab:red"))):
        values = [100 * old[key] for _, old in runs]
        colours = ["0.7"] * (len(runs) - 1) + [colour]
        bars.bar(x + (k - 0.5) * 0.4, values, 0.4, color=colours, edgecolor=colour, label=key)
    bars.axhline(0, color="k", lw=0.8)
    bars.set_xticks(x, [label for label, _ in runs], rotation=20, ha="right", fontsize=7)
    bars.set(ylabel="%", title="ACC (higher is better), BWT (negative = forgetting)")
    bars.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
