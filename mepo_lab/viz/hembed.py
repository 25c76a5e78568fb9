"""Plots of the H-embedding experiment, drawn from its ``results.json`` (a dict).

The accuracy matrices of HNET, HNET + random guide and HNET + H-embedding; ACC and BWT with seed dots; the
task × task H-score matrix ``H[i, j]`` (task i's generated head on task j's data; Wu et al., NeurIPS 2025,
arXiv 2502.11609) with the designed groups on the axes; and the learned task embeddings in 2-D (PCA), coloured
by group, with the guides the H-embedding placed.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from mepo_lab.viz import save_figure_set
from mepo_lab.viz.task_incremental import (
    acc_bwt,
    accuracy_matrices,
    by_method,
    mean_matrix,
)

METHOD_NAMES = {"hnet": "HNET (no guide)", "hnet_random_guide": "HNET + random guide",
                "hnet_hembedding": "HNET + H-embedding"}


def plot_accuracy_matrices(result: dict) -> Figure:
    """``R[t, i]`` (mean over seeds) for every method; one colour bar."""
    return accuracy_matrices(result, METHOD_NAMES)


def plot_acc_bwt(result: dict) -> Figure:
    """ACC and BWT per method: mean bars, seed dots."""
    return acc_bwt(result, METHOD_NAMES)


def _tick_labels(result: dict) -> list[str]:
    return [f"{t} {g[:5]}" for t, g in enumerate(result.get("groups", []))]


def plot_hscore_matrix(result: dict, method: str = "hnet_hembedding") -> Figure:
    """``H[i, j]`` of the final generated heads (mean over seeds) for ``method`` (the first method if absent)."""
    groups = by_method(result)
    rows = groups.get(method) or next(iter(groups.values()))
    h = mean_matrix(rows, "hscore_matrix")
    fig, ax = plt.subplots(figsize=(4.6, 4))
    im = ax.imshow(h, cmap="magma", vmin=0)
    labels = _tick_labels(result) or [str(i) for i in range(len(h))]
    ax.set_xticks(range(len(h)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(h)), labels, fontsize=8)
    ax.set(xlabel="data of task j", ylabel="generated head of task i",
           title=f"H-score H[i, j] ({METHOD_NAMES.get(rows[0]['method'], rows[0]['method'])})")
    fig.colorbar(im, ax=ax, shrink=0.85, label="H-score (max = |Y| − 1)")
    fig.tight_layout()
    return fig


def embedding_points(row: dict) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA coordinates of a run's task embeddings and of its guides (same projection; guides may be empty)."""
    embs = np.asarray(row["embeddings"], float)
    guides = np.asarray([row["guides"][k] for k in sorted(row["guides"], key=int)], float).reshape(-1, embs.shape[1])
    centre = embs.mean(0)
    _, _, vt = np.linalg.svd(embs - centre, full_matrices=False)
    basis = vt[:2].T
    return (embs - centre) @ basis, (guides - centre) @ basis


def plot_embeddings(result: dict, method: str = "hnet_hembedding") -> Figure:
    """The learned task embeddings of the first seed of ``method`` in 2-D (PCA), coloured by designed group,
    with the guides ``ê_t`` (crosses) and a line from each guide to the embedding learned for that task."""
    groups = by_method(result)
    row = (groups.get(method) or next(iter(groups.values())))[0]
    points, guides = embedding_points(row)
    labels = result.get("groups") or ["task"] * len(points)
    colours = {g: plt.cm.tab10(i) for i, g in enumerate(dict.fromkeys(labels))}
    fig, ax = plt.subplots(figsize=(4.8, 4))
    for t, (x, y) in enumerate(points):
        ax.scatter(x, y, color=colours[labels[t]], s=60, zorder=3,
                   label=labels[t] if labels.index(labels[t]) == t else None)
        ax.annotate(str(t), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    for (x, y), t in zip(guides, sorted(row["guides"], key=int)):
        ax.scatter(x, y, marker="x", color=colours[labels[int(t)]], s=50)
        ax.plot([x, points[int(t)][0]], [y, points[int(t)][1]], color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="PC 1", ylabel="PC 2",
           title=f"Task embeddings ({METHOD_NAMES.get(row['method'], row['method'])}, seed {row['seed']})")
    ax.legend(fontsize=8, title="group (x = guide)")
    fig.tight_layout()
    return fig


FIGURES = {"accuracy_matrices": plot_accuracy_matrices, "acc_bwt": plot_acc_bwt, "hscores": plot_hscore_matrix,
           "embeddings": plot_embeddings}


def save_hembed_figures(result: dict, out: Path) -> list[Path]:
    """Every figure of :data:`FIGURES` as ``out/<name>.png``; returns the paths."""
    return save_figure_set(result, out, FIGURES)
