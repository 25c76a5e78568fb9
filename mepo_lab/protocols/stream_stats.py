"""Statistics of a Si-Blurry stream, computed from indices and labels only (never images).

The stream is the one built by :func:`mepo_lab.protocols.streams.si_blurry` — Si-Blurry (Moon et al.,
ICCV 2023, MVP) as implemented in the MISA/MePo ``utils/onlinesampler.py``. Everything here is a
handful of ``np.bincount`` calls over the concatenated stream, so a widget can rebuild stream and
statistics on every slider move (a few milliseconds for 50k samples).

"Position" always means the sample position in the concatenated stream ``task 0, task 1, ...``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mepo_lab.protocols.streams import Stream

__all__ = ["StreamStatistics", "stream_statistics", "format_statistics"]


@dataclass(frozen=True, eq=False)
class StreamStatistics:
    """Per-task and per-class summaries of a :class:`~mepo_lab.protocols.streams.Stream`.

    Arrays indexed by task have shape ``(n_tasks,)``, by class ``(n_classes,)``. ``raster`` rows
    follow ``raster_classes`` (classes sorted by first appearance, never-seen classes last).
    Shares are fractions of the task's samples (0 for an empty task).
    """

    n_tasks: int
    n_classes: int
    n: int
    m: int
    seed: int
    stochastic: bool
    n_samples: int
    n_dropped: int
    class_counts: np.ndarray        # (T, C) samples per class per task
    classes_per_task: np.ndarray    # (T,) distinct classes seen in each task
    first_appearance: np.ndarray    # (C,) first stream position of each class, -1 if never
    new_classes_per_task: np.ndarray  # (T,) classes whose first appearance is in the task
    class_task: np.ndarray          # (C,) task a class is assigned to
    class_is_disjoint: np.ndarray   # (C,) bool
    n_disjoint: np.ndarray          # (T,) samples of disjoint classes
    n_blurry_kept: np.ndarray       # (T,) blurry-class samples that stayed in their task
    n_pooled: np.ndarray            # (T,) samples received through the pool
    disjoint_share: np.ndarray      # (T,) n_disjoint / size
    blurry_share: np.ndarray        # (T,) (n_blurry_kept + n_pooled) / size
    pooled_share: np.ndarray        # (T,) n_pooled / size
    task_boundaries: np.ndarray     # (T+1,) cumulative positions, [0, size_0, size_0+size_1, ...]
    raster: np.ndarray              # (C, n_bins) counts per class (row order: raster_classes)
    raster_classes: np.ndarray      # (C,) class id of each raster row
    bin_edges: np.ndarray           # (n_bins+1,) stream positions delimiting the time bins

    @property
    def task_sizes(self) -> np.ndarray:
        """Samples per task (``diff(task_boundaries)``)."""
        return np.diff(self.task_boundaries)

    @property
    def n_bins(self) -> int:
        """Number of time bins of :attr:`raster`."""
        return int(self.raster.shape[1])


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num), dtype=float), where=den > 0)


def _first_positions(stream_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """First position of each class in ``stream_labels`` (-1 if absent)."""
    first = np.full(n_classes, -1, dtype=np.int64)
    present, pos = np.unique(stream_labels, return_index=True)
    first[present] = pos
    return first


def _raster(stream_labels: np.ndarray, first: np.ndarray, n_bins: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class x time-bin counts; bin of position ``p`` is ``p * n_bins // total`` (equal bins)."""
    total, n_classes = len(stream_labels), len(first)
    bins = np.arange(total, dtype=np.int64) * n_bins // max(total, 1)
    flat = np.bincount(stream_labels * n_bins + bins, minlength=n_classes * n_bins)
    order = np.argsort(np.where(first < 0, np.iinfo(np.int64).max, first), kind="stable")
    edges = -(-np.arange(n_bins + 1, dtype=np.int64) * total // n_bins)  # ceil(k * total / n_bins)
    return flat.reshape(n_classes, n_bins)[order], order, edges


def stream_statistics(stream: Stream, n_bins: int = 100) -> StreamStatistics:
    """Summarise a stream from its indices and labels.

    Si-Blurry (Moon et al., ICCV 2023, MVP) as implemented in the MISA/MePo
    ``utils/onlinesampler.py``. With the concatenated stream ``s = concat(task_indices)`` and
    ``y = labels[s]``: ``class_counts[t, c] = #{p in task t : y_p = c}``;
    ``first_appearance[c] = min{p : y_p = c}``; a class is *new* in the task holding its first
    appearance; ``disjoint_share = #disjoint-class samples / task size``,
    ``pooled_share = #pool-received samples / task size``; ``raster[r, b]`` counts class
    ``raster_classes[r]`` among positions ``p`` with ``p * n_bins // len(s) = b``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}; try n_bins=100")
    n_bins = int(n_bins)
    T, C = stream.n_tasks, stream.n_classes
    sizes = stream.task_sizes
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    order = np.concatenate(stream.task_indices + [np.zeros(0, dtype=np.int64)])
    y = stream.labels[order]
    task_pos = np.repeat(np.arange(T, dtype=np.int64), sizes)

    counts = np.bincount(task_pos * C + y, minlength=T * C).reshape(T, C)
    first = _first_positions(y, C)
    seen = first >= 0
    new = np.bincount(task_pos[first[seen]], minlength=T)
    is_dis = stream.class_is_disjoint
    n_dis = counts[:, is_dis].sum(axis=1)
    n_pool = np.bincount(task_pos, weights=stream.blurred[order], minlength=T).astype(np.int64)
    n_kept = sizes - n_dis - n_pool
    raster, raster_classes, edges = _raster(y, first, n_bins)
    return StreamStatistics(
        n_tasks=T, n_classes=C, n=stream.n, m=stream.m, seed=stream.seed,
        stochastic=stream.stochastic, n_samples=int(bounds[-1]), n_dropped=len(stream.dropped),
        class_counts=counts, classes_per_task=(counts > 0).sum(axis=1),
        first_appearance=first, new_classes_per_task=new,
        class_task=stream.class_task, class_is_disjoint=is_dis,
        n_disjoint=n_dis, n_blurry_kept=n_kept, n_pooled=n_pool,
        disjoint_share=_safe_ratio(n_dis, sizes), blurry_share=_safe_ratio(n_kept + n_pool, sizes),
        pooled_share=_safe_ratio(n_pool, sizes), task_boundaries=bounds,
        raster=raster, raster_classes=raster_classes, bin_edges=edges,
    )


def format_statistics(stats: StreamStatistics) -> str:
    """Readable text table of :func:`stream_statistics` (one row per task plus a total row).

    Si-Blurry (Moon et al., ICCV 2023, MVP) as implemented in the MISA/MePo
    ``utils/onlinesampler.py``. Columns: task size, distinct classes, new classes, assigned
    disjoint/blurry classes, and the disjoint / blurry / pooled shares of the task's samples.
    """
    variant = "stochastic" if stats.stochastic else "fixed"
    n_dis_cls = np.bincount(stats.class_task[stats.class_is_disjoint], minlength=stats.n_tasks)
    n_blur_cls = np.bincount(stats.class_task[~stats.class_is_disjoint], minlength=stats.n_tasks)
    head = (f"Si-Blurry stream ({variant}): N={stats.n}% disjoint classes, M={stats.m}% blurry "
            f"samples pooled, {stats.n_tasks} tasks, {stats.n_classes} classes, seed {stats.seed}")
    cols = f"{'task':>4} {'samples':>8} {'classes':>7} {'new':>5} {'disj.cls':>8} " \
           f"{'blur.cls':>8} {'disjoint':>8} {'blurry':>7} {'pooled':>7}"
    lines = [head, f"{stats.n_samples} samples in the stream, {stats.n_dropped} dropped", "",
             cols, "-" * len(cols)]
    for t in range(stats.n_tasks):
        lines.append(
            f"{t:>4} {stats.task_sizes[t]:>8} {stats.classes_per_task[t]:>7} "
            f"{stats.new_classes_per_task[t]:>5} {n_dis_cls[t]:>8} {n_blur_cls[t]:>8} "
            f"{stats.disjoint_share[t]:>8.1%} {stats.blurry_share[t]:>7.1%} "
            f"{stats.pooled_share[t]:>7.1%}")
    total = max(stats.n_samples, 1)
    lines += ["-" * len(cols),
              f"{'all':>4} {stats.n_samples:>8} {int((stats.first_appearance >= 0).sum()):>7} "
              f"{int(stats.new_classes_per_task.sum()):>5} {int(n_dis_cls.sum()):>8} "
              f"{int(n_blur_cls.sum()):>8} {stats.n_disjoint.sum() / total:>8.1%} "
              f"{(stats.n_blurry_kept.sum() + stats.n_pooled.sum()) / total:>7.1%} "
              f"{stats.n_pooled.sum() / total:>7.1%}"]
    return "\n".join(lines)
