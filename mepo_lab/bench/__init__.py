"""``mepo-lab bench``: the speed and quality targets, measured in one run, reported as ratios.

``report`` (rows and the table), ``core`` (streams, world, feature-cached runs, pretraining and probing,
refinement, live panels, the batched grid, quickstart), ``learners`` (image-learner throughput, backbone passes
of a prompt learner's run, augmentation cost) and ``gpu`` (issue 10: compiled against eager training steps, full
DualPrompt and MISA runs on fake CIFAR-100).
"""
from __future__ import annotations

from mepo_lab import paths
from mepo_lab.bench.core import (bench_backbone, bench_gcl, bench_grid, bench_quickstart, bench_refine, bench_stream,
                                 bench_widgets, bench_world)
from mepo_lab.bench.gpu import bench_gpu
from mepo_lab.bench.learners import bench_augment, bench_learners, bench_passes
from mepo_lab.bench.report import format_report
from mepo_lab.config import Preset

__all__ = ["BENCHMARKS", "DEFAULT", "format_report", "run_benchmarks"]

BENCHMARKS = {"stream": bench_stream, "world": bench_world, "gcl": bench_gcl, "backbone": bench_backbone,
              "refine": bench_refine, "learners": bench_learners, "passes": bench_passes, "augment": bench_augment,
              "gpu": bench_gpu, "widgets": bench_widgets, "grid": bench_grid, "quickstart": bench_quickstart}
DEFAULT = ("stream", "world", "gcl", "backbone", "refine", "learners", "passes", "augment", "widgets", "gpu")


def run_benchmarks(preset: Preset, only: list[str] | None = None, data_home=None, out=None) -> list[dict]:
    """Run the selected benchmarks (default: all but the minutes-long ``grid`` and ``quickstart``)."""
    names = list(only) if only else list(DEFAULT)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    report = []
    for name in names:
        report.extend(BENCHMARKS[name](preset, data_home=data_home))
        if out:
            paths.atomic_save_json(out, report)
    return report
