"""Plots of GCL run records: anytime accuracy, per-class forgetting, metric bars with seed bands.

All functions take :class:`~mepo_lab.protocols.results.RunResult` objects (or lists of them), draw on a given
``ax`` or a new figure, and return the figure. Accuracies are shown in percent.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mepo_lab.protocols.results import LOWER_IS_BETTER, METRIC_KEYS, RunResult


def _axes(ax, figsize=(7, 3.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def run_label(r: RunResult) -> str:
    """``method / backbone`` (plus ``/ alignment`` when one is used)."""
    return " / ".join([r.method, r.backbone] + ([r.alignment] if r.alignment != "none" else []))


def plot_anytime(runs: RunResult | Sequence[RunResult], ax=None, boundaries: bool = True):
    """Anytime accuracy (%) against samples seen; runs sharing a label are averaged with a ±std band.

    Evaluations are placed at their scheduled points (1000, 2000, … samples: the reference's
    ``data_cnt``) so that seeds line up. Dotted lines mark task ends when every run shares one
    stream. This curve's mean is A_auc.
    """
    runs = [runs] if isinstance(runs, RunResult) else list(runs)
    fig, ax = _axes(ax)
    rows = [{"samples": s, "accuracy": 100 * a, "run": run_label(r), "seed": r.seed}
            for r in runs for s, a in zip(r.anytime_points or r.anytime_samples, r.anytime_acc)]
    if rows:
        sns.lineplot(data=pd.DataFrame(rows), x="samples", y="accuracy", hue="run", errorbar="sd",
                     ax=ax, marker="o", markersize=3)
    one_stream = len({r.stream_seed for r in runs}) == 1
    if boundaries and runs and one_stream:
        for s in runs[0].task_end_samples[:-1]:
            ax.axvline(s, color="0.6", ls=":", lw=1)
    title = "anytime accuracy" + (" (dotted: task ends)" if boundaries and one_stream else " (mean ± std over seeds)")
    ax.set(xlabel="samples seen", ylabel="accuracy on exposed classes (%)", ylim=(0, 100), title=title)
    return fig


def seen_mask(run: RunResult) -> np.ndarray:
    """``(n_task_ends, n_classes)`` booleans: was class ``j`` (exposure order) seen by the end of task ``t``?

    From ``task_end_n_seen``; records written before it existed fall back to the last anytime evaluation
    at or before each task end (exact when an evaluation falls on the task end).
    """
    n_tasks, n_classes = len(run.class_acc), len(run.class_acc[0]) if run.class_acc else 0
    seen = list(run.task_end_n_seen)
    if len(seen) != n_tasks:
        points, counts = np.asarray(run.anytime_samples), np.asarray(run.anytime_n_seen)
        seen = [int(counts[points <= end].max(initial=0)) if len(points) else n_classes
                for end in run.task_end_samples]
        seen[-1:] = [len(run.exposed_classes)] * min(1, len(seen))
    return np.arange(n_classes)[None, :] < np.asarray(seen)[:, None]


def plot_class_forgetting(run: RunResult, ax=None, max_classes: int = 100):
    """Heatmap of per-class accuracy (%) after each task, classes in exposure order; unseen cells hatched grey.

    Reading it: a bright cell that darkens further down its column is a forgotten class; F_last is
    the mean drop from each column's best earlier value to its last row. A class not seen yet has no
    accuracy to lose: its cells are masked (grey, hatched), not drawn as 0 like a forgotten class.
    """
    n = min(max_classes, len(run.exposed_classes))
    acc = 100 * np.asarray(run.class_acc)[:, :n]
    hidden = ~seen_mask(run)[:, :n]
    fig, ax = _axes(ax, figsize=(min(14, 3 + acc.shape[1] * 0.12), 2 + 0.35 * len(acc)))
    ax.set_facecolor("0.85")
    ax.add_patch(plt.Rectangle((0, 0), acc.shape[1], acc.shape[0], fill=False, hatch="///", ec="0.6", lw=0))
    sns.heatmap(acc, mask=hidden, ax=ax, vmin=0, vmax=100, cmap="viridis", cbar_kws={"label": "accuracy (%)"})
    ax.set(xlabel="class (exposure order)", ylabel="after task",
           title=f"per-class accuracy — {run_label(run)} (hatched grey: not seen yet)")
    ax.set_xticks([])
    return fig


def plot_class_curves(run: RunResult, ax=None, classes: Sequence[int] | None = None):
    """Per-class anytime accuracy (%) for a few classes (default: the first 8 exposed)."""
    fig, ax = _axes(ax)
    acc = 100 * np.asarray(run.anytime_class_acc)
    if acc.ndim != 2:  # no anytime evaluation yet (a stream shorter than one eval period)
        acc = np.zeros((0, 0))
    classes = [j for j in (range(8) if classes is None else classes) if j < acc.shape[1]]
    seen = np.asarray(run.anytime_n_seen)
    for j in classes:
        live = seen > j
        ax.plot(np.asarray(run.anytime_samples)[live], acc[live, j], lw=1.2, label=f"class #{j}")
    for s in run.task_end_samples[:-1]:
        ax.axvline(s, color="0.6", ls=":", lw=1)
    ax.set(xlabel="samples seen", ylabel="class accuracy (%)", ylim=(-2, 102), title="per-class curves")
    if classes:
        ax.legend(fontsize=7, ncol=2, loc="lower left")
    return fig


def metric_title(metric: str) -> str:
    """``"F_last (lower is better)"``, ``"A_auc (higher is better)"``: which way is good, on every panel."""
    return f"{metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)"


def plot_metric_bars(rows: Sequence[dict], metrics: Sequence[str] = METRIC_KEYS, hue: str = "backbone",
                     x: str = "method"):
    """Bars of each metric (%) per ``x`` and ``hue``, mean over seeds with ±std error bars.

    ``rows`` are the flat records of ``results.json`` (one per run and seed). The bars show the spread
    over seeds, which swamps effects of a point or two: compare two settings with
    :func:`plot_paired_differences` instead.
    """
    frame = pd.DataFrame([{**r, **{m: 100 * r[m] for m in metrics if r.get(m) is not None}} for r in rows])
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.barplot(data=frame, x=x, y=metric, hue=hue, errorbar="sd", ax=ax, capsize=0.1)
        ax.set(title=metric_title(metric), ylabel="%" if metric == metrics[0] else "", xlabel="")
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def plot_paired_differences(diffs: dict[str, dict], ax=None):
    """Paired gains (points, in points of %) with their 95 % t-intervals and the per-seed differences.

    ``diffs`` maps a label to :func:`mepo_lab.protocols.results.paired_difference`; an interval that
    excludes the dashed zero line is a gain (or loss) the seeds agree on. For F_last a negative
    difference is the improvement.
    """
    fig, ax = _axes(ax, figsize=(7, 0.9 + 0.55 * len(diffs)))
    for row, (label, d) in enumerate(diffs.items()):
        ax.scatter(100 * np.asarray(d["per_seed"]), [row] * d["n"], color="0.6", s=14, zorder=2,
                   label="per seed" if row == 0 else None)
        if d["n"] > 1:
            ax.hlines(row, 100 * d["low"], 100 * d["high"], color="C0", lw=3, zorder=1,
                      label="95 % interval" if row == 0 else None)
        ax.plot(100 * d["mean"], row, "D", color="C0", zorder=3, label="mean" if row == 0 else None)
    ax.axvline(0, color="black", ls="--", lw=1)
    ax.set_yticks(range(len(diffs)), list(diffs), fontsize=8)
    ax.invert_yaxis()
    metric = next(iter(diffs.values()))["metric"] if diffs else ""
    ax.set(xlabel=f"paired difference in {metric} (points)", title=f"gain, paired by seed — {metric_title(metric)}")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
