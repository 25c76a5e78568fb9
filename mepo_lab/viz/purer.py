"""Plots of the PURER experiment, drawn from its ``results.json`` (a dict) and the dynamic-dataset snapshots.

Meta-test accuracy per method and shot (mean over seeds, the 95 % episode interval as error bar, seed dots);
ECI's pseudo-episode accuracy over meta-iterations with the iterations where the adversarial switch fired
(Hu et al., CVPR 2023, arXiv 2303.11183, Fig. 3's "real-time feedback"); the dynamic dataset X̂ over iterations
(noise → teacher-consistent images: the curriculum); and the data-free vs real-data MePo comparison downstream.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from mepo_lab.viz import save_figure_set

METHOD_NAMES = {"random_init": "random init", "teacher_average": "teacher average", "ei": "EI (no switch)",
                "eci": "ECI", "eci_icfil": "ECI + ICFIL (ours)"}
MEPO_NAMES = {"pretrained": "pretrained (no refinement)", "mepo_real": "MePo, real images",
              "mepo_data_free": "MePo, inverted images"}


def _meta(result: dict) -> list[dict]:
    return [r for r in result["rows"] if r["kind"] == "meta"]


def plot_meta_test(result: dict) -> Figure:
    """N-way K-shot meta-test accuracy per method, one group of bars per shot."""
    rows = _meta(result)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    shots = sorted({r["k_shot"] for r in rows})
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(methods) * len(shots), 3.8))
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        for i, k in enumerate(shots):
            mine = [r for r in rows if r["method"] == m and r["k_shot"] == k]
            if not mine:
                continue
            x = i + (j - (len(methods) - 1) / 2) * width
            accs = 100 * np.array([r["acc"] for r in mine])
            ax.bar(x, accs.mean(), width, yerr=100 * np.mean([r["ci95"] for r in mine]), capsize=3,
                   color=plt.cm.tab10(j), alpha=0.7, label=METHOD_NAMES.get(m, m) if i == 0 else None)
            ax.scatter(np.full(len(accs), x), accs, color="k", s=10, zorder=3)
    n_way = rows[0]["n_way"] if rows else 5
    ax.axhline(100 / n_way, color="0.5", ls=":", lw=1, label="chance")
    ax.set_xticks(range(len(shots)), [f"{n_way}-way {k}-shot" for k in shots])
    ax.set(ylabel="meta-test accuracy (%)", title="Data-free meta-learning: meta-test on held-out classes")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_switch(result: dict) -> Figure:
    """ECI's mean pseudo-episode accuracy per meta-iteration (first seed, every shot) and the switch firings."""
    rows = [r for r in _meta(result) if r["method"] == "eci" and "curve" in r]
    first = min((r["seed"] for r in rows), default=None)
    rows = [r for r in rows if r["seed"] == first]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for i, r in enumerate(sorted(rows, key=lambda r: r["k_shot"])):
        curve = np.asarray(r["curve"], float)
        smooth = np.convolve(curve, np.ones(5) / 5, mode="same") if len(curve) >= 5 else curve
        ax.plot(100 * smooth, color=plt.cm.tab10(i), label=f"{r['k_shot']}-shot (5-iteration mean)")
        for k in r["fired"]:
            ax.axvline(k, color=plt.cm.tab10(i), alpha=0.35, lw=0.8)
    ax.set(xlabel="meta-iteration", ylabel="pseudo-episode accuracy (%)",
           title="ECI: the meta-learner's feedback and the switch (vertical lines: adversarial generator steps)")
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_snapshots(iterations: np.ndarray, images: np.ndarray, per_row: int = 10) -> Figure:
    """The dynamic dataset at the recorded iterations: one row per iteration, ``per_row`` uint8 images each."""
    rows = len(iterations)
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.8, rows * 0.85), squeeze=False)
    for r, (k, imgs) in enumerate(zip(iterations, images)):
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(np.transpose(imgs[c], (1, 2, 0)))
        axes[r][0].set_title(f"it {int(k)}", fontsize=7, loc="left")
    fig.suptitle("ECI's dynamic dataset X̂ over meta-iterations", fontsize=9)
    return fig


def plot_mepo(result: dict) -> Figure:
    """A_auc and A_last downstream of the pretrained, the real-data MePo and the data-free MePo micro ViT."""
    rows = [r for r in result["rows"] if r["kind"] == "mepo"]
    names = list(dict.fromkeys(r["backbone"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("A_auc", "A_last")):
        for i, b in enumerate(names):
            values = 100 * np.array([r[key] for r in rows if r["backbone"] == b])
            ax.bar(i, values.mean(), color=plt.cm.tab10(i), alpha=0.7)
            ax.scatter(np.full(len(values), i), values, color="k", s=12, zorder=3)
        ax.set_xticks(range(len(names)), [MEPO_NAMES.get(b, b) for b in names], rotation=15, ha="right", fontsize=8)
        ax.set(ylabel=f"{key} (%)", title=f"{key} on the embedded default (higher is better)")
    fig.tight_layout()
    return fig


FIGURES = {"meta_test": plot_meta_test, "switch": plot_switch, "mepo": plot_mepo}


def save_purer_figures(result: dict, out: Path) -> list[Path]:
    """Every figure of :data:`FIGURES` (``mepo`` only when MePo rows exist) and one ``snapshots_K.png`` per saved
    ``snapshots_K.npz`` in ``out``; returns the paths."""
    figures = {k: v for k, v in FIGURES.items() if k != "mepo" or any(r["kind"] == "mepo" for r in result["rows"])}
    paths = save_figure_set(result, out, figures)
    for npz in sorted(Path(out).glob("snapshots_*.npz")):
        data = np.load(npz)
        fig = plot_snapshots(data["iterations"], data["images"])
        path = npz.with_suffix(".png")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
