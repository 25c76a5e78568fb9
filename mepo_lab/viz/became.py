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
from mepo_lab.viz.task_incremental import acc_bwt, accuracy_matrices, by_method

METHOD_NAMES = {"seqft": "SeqFT", "gpm": "GPM", "gpm_stage2": "GPM + stage 2 (α = 1)", "avg": "α = 1/(t+1)",
                "half": "α = 0.5", "became": "BECAME (closed form)"}


def plot_accuracy_matrices(result: dict) -> Figure:
    """``R[t, i]`` (accuracy on task i after training task t, mean over seeds) for every method; one colour bar."""
    return accuracy_matrices(result, METHOD_NAMES)


def plot_acc_bwt(result: dict) -> Figure:
    """ACC (higher is better) and BWT (closer to 0 is better; negative = forgetting): mean bars, seed dots."""
    return acc_bwt(result, METHOD_NAMES)


def plot_alphas(result: dict) -> Figure:
    """The merge coefficient ``α_t`` per task (closed form, fixed rules), mean over seeds."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method, rows in by_method(result).items():
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