"""Plots of Si-Blurry stream statistics (class x time raster, per-task composition, shares).

Inputs come from :func:`mepo_lab.protocols.stream_stats.stream_statistics` — Si-Blurry (Moon et al., ICCV
2023, MVP) as implemented in the MISA/MePo ``utils/onlinesampler.py``. Every function returns a
matplotlib ``Axes`` or ``Figure`` and never calls ``plt.show()``; new figures are made with pyplot,
like every plot of the lab, so ``plt.show()`` in a notebook cell displays them.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mepo_lab.protocols.stream_stats import StreamStatistics, stream_statistics
from mepo_lab.protocols.streams import Stream

__all__ = ["plot_stream_raster", "plot_task_histograms", "plot_shares", "plot_stream_overview"]

DISJOINT_COLOR, BLURRY_COLOR, POOLED_COLOR = "tab:blue", "tab:orange", "tab:red"


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    return plt.subplots(figsize=figsize, layout="constrained")[1] if ax is None else ax


def _task_lines(ax: Axes, stats: StreamStatistics) -> None:
    for pos in stats.task_boundaries[1:-1]:
        ax.axvline(pos, color="black", lw=0.8, ls="--")


def plot_stream_raster(stats: StreamStatistics, ax: Axes | None = None) -> Axes:
    """Class x time heatmap of the stream (``stats.raster``), classes by first appearance.

    Si-Blurry (Moon et al., ICCV 2023, MVP) as implemented in the MISA/MePo
    ``utils/onlinesampler.py``. Cell ``(r, b)`` = samples of class ``raster_classes[r]`` in time
    bin ``b``; disjoint classes use a blue colormap, blurry ones orange (one colour bar each, in samples
    per time bin), empty cells are white; dashed lines mark task boundaries (x axis in stream positions).
    """
    ax = _axes(ax, (9, 4.5))
    raster = stats.raster
    is_dis = stats.class_is_disjoint[stats.raster_classes][:, None]
    extent = (0, max(stats.n_samples, 1), raster.shape[0], 0)
    vmax = max(int(raster.max()), 1)
    images = {}
    for rows, cmap, kind in ((~is_dis, "Oranges", "blurry"), (is_dis, "Blues", "disjoint")):
        masked = np.ma.masked_where(~rows | (raster == 0), raster)
        images[kind] = ax.imshow(masked, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=vmax,
                                 extent=extent)
    bin_size = max(stats.n_samples, 1) / max(stats.n_bins, 1)
    for kind in ("disjoint", "blurry"):
        bar = ax.figure.colorbar(images[kind], ax=ax, pad=0.01, fraction=0.03)
        bar.set_label(f"{kind}: samples per bin (~{bin_size:.0f} samples)", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    _task_lines(ax, stats)
    ax.set_xlabel("position in stream (samples)")
    ax.set_ylabel("class (sorted by first appearance)")
    ax.set_title("Class x time raster")
    ax.legend(handles=[Patch(color=DISJOINT_COLOR, label="disjoint class"),
                       Patch(color=BLURRY_COLOR, label="blurry class")],
              loc="upper right", fontsize="small")
    return ax


def plot_task_histograms(stats: StreamStatistics, ax: Axes | None = None) -> Axes:
    """Stacked bars per task: disjoint-class samples, blurry samples kept, pooled received.

    Si-Blurry (Moon et al., ICCV 2023, MVP) as implemented in the MISA/MePo
    ``utils/onlinesampler.py``. Bar height = task size = ``n_disjoint + n_blurry_kept + n_pooled``.
    """
    ax = _axes(ax, (5, 3.5))
    tasks = np.arange(stats.n_tasks)
    bottom = np.zeros(stats.n_tasks)
    for values, color, label in ((stats.n_disjoint, DISJOINT_COLOR, "disjoint classes"),
                                 (stats.n_blurry_kept, BLURRY_COLOR, "blurry, kept"),
                                 (stats.n_pooled, POOLED_COLOR, "blurry, from pool")):
        ax.bar(tasks, values, bottom=bottom, color=color, label=label)
        bottom = bottom + values
    ax.set_xticks(tasks)
    ax.set_xlabel("task")
    ax.set_ylabel("samples")
    ax.set_title("Task composition")
    ax.legend(fontsize="small")
    return ax


def plot_shares(stats: StreamStatistics, ax: Axes | None = None) -> Axes:
    """Per-task shares of samples: disjoint-class, blurry-class and pool-received fractions.

    Si-Blurry (Moon et al., ICCV 2023, MVP) as implemented in the MISA/MePo
    ``utils/onlinesampler.py``. ``disjoint_share + blurry_share = 1`` for a non-empty task;
    ``pooled_share <= blurry_share``.
    """
    ax = _axes(ax, (5, 3.5))
    tasks = np.arange(stats.n_tasks)
    for values, color, label in ((stats.disjoint_share, DISJOINT_COLOR, "disjoint classes"),
                                 (stats.blurry_share, BLURRY_COLOR, "blurry classes"),
                                 (stats.pooled_share, POOLED_COLOR, "from pool")):
        ax.plot(tasks, values, marker="o", color=color, label=label)
    ax.set_xticks(tasks)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("task")
    ax.set_ylabel("fraction of task samples")
    ax.set_title("Shares per task")
    ax.legend(fontsize="small")
    return ax


def plot_stream_overview(stream: Stream, stats: StreamStatistics | None = None) -> Figure:
    """Three-panel figure: raster on top, task composition and shares below.

    Si-Blurry (Moon et al., ICCV 2023, MVP) as implemented in the MISA/MePo
    ``utils/onlinesampler.py``. ``stats`` defaults to ``stream_statistics(stream)``.
    """
    stats = stream_statistics(stream) if stats is None else stats
    fig = plt.figure(figsize=(11, 8), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=(1.3, 1))
    plot_stream_raster(stats, fig.add_subplot(grid[0, :]))
    plot_task_histograms(stats, fig.add_subplot(grid[1, 0]))
    plot_shares(stats, fig.add_subplot(grid[1, 1]))
    variant = "stochastic" if stream.stochastic else "fixed"
    fig.suptitle(f"Si-Blurry ({variant}) N={stream.n} M={stream.m} T={stream.n_tasks} "
                 f"C={stream.n_classes} seed={stream.seed}")
    return fig
