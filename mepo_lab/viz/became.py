"""Plots of the BECAME experiment, drawn from its ``results.json`` (a dict).

The accuracy matrices side by side (tasks not trained yet are hatched, never drawn as 0), ACC and BWT per
method with seed dots, and the merge coefficient ``α_t`` per task.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from mepo_lab.viz import save_figure_set

METHOD_NAMES = {"seqft": "SeqFT", "gpm": "GPM", "gpm_stage2": "GPM + stage 2 (α = 1)", "avg": "α = 1/(t+1)",
                "half": "α = 0.5", "became": "BECAME (closed form)"}


def _mean_matrix(rows: list[dict]) -> np.ndarray:
    # untrained tasks are NaN in every seed, so a plain mean keeps them NaN (and warns about nothing)
    return np.array([[[np.nan if v is None else v for v in r] for r in row["matrix"]] for row in rows], float).mean(0)


def _by_method(result: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in result["rows"]:
        out.setdefault(row["method"], []).append(row)
    return out


def plot_accuracy_matrices(result: dict) -> Figure:
    """``R[t, i]`` (accuracy on task i after training task t, mean over seeds) for every method; one colour bar."""
    groups = _by_method(result)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.4), squeeze=False)
    for ax, (method, rows) in zip(axes[0], groups.items()):
        r = 100 * _mean_matrix(rows)
        ax.add_patch(plt.Rectangle((-0.5, -0.5), r.shape[1], r.shape[0], hatch="//", fill=False, color="0.8", lw=0))
        im = ax.imshow(np.ma.masked_invalid(r), vmin=0, vmax=100, cmap="viridis")
        ax.set(title=METHOD_NAMES.get(method, method), xlabel="evaluated task i", ylabel="after task t")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="accuracy (%)")
    return fig


def plot_acc_bwt(result: dict) -> Figure:
    """ACC (higher is better) and BWT (closer to 0 is better; negative = forgetting): mean bars, seed dots."""
    groups = _by_method(result)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, key, title in zip(axes, ("ACC", "BWT"), ("ACC (higher is better)", "BWT (negative = forgetting)")):
        for i, rows in enumerate(groups.values()):
            values = 100 * np.array([r[key] for r in rows])
            ax.bar(i, values.mean(), color="tab:blue" if key == "ACC" else "tab:red", alpha=0.5)
            ax.scatter(np.full(len(values), i), values, color="k", s=12, zorder=3)
        ax.set_xticks(range(len(groups)), [METHOD_NAMES.get(m, m) for m in groups], rotation=30, ha="right", fontsize=8)
        ax.set(title=title, ylabel="%")
    fig.tight_layout()
    return fig


def plot_alphas(result: dict) -> Figure:
    """The merge coefficient ``α_t`` per task (closed form, fixed rules), mean over seeds."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method, rows in _by_method(result).items():
        alphas = np.array([[np.nan if a is None else a for a in r["alpha"][1:]] for r in rows], float)  # no merge at t = 0
        if alphas.size and np.isfinite(alphas).all():
            ax.plot(np.arange(1, alphas.shape[1] + 1), alphas.mean(0), marker="o", label=METHOD_NAMES.get(method, method))
    ax.set(xlabel="task t", ylabel="α_t (weight of the free fine-tuning)", ylim=(-0.05, 1.05),
           title="Merge coefficient per task")
    ax.legend(fontsize=8)
    return fig


FIGURES = {"accuracy_matrices": plot_accuracy_matrices, "acc_bwt": plot_acc_bwt, "alphas": plot_alphas}


def save_became_figures(result: dict, out: Path) -> list[Path]:
    """Every figure of :data:`FIGURES` as ``out/<name>.png``; returns the paths."""
    return save_figure_set(result, out, FIGURES)