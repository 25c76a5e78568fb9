"""The quickstart story on the embedded default, end to end, offline, on a CPU.

world → micro ViT (pretrained once, cached), its random-init twin and its MePo refinement (cached) →
cached features and meta covariances → Si-Blurry streams (N = 50, M = 10, 5 tasks, stochastic; one per
seed) → the grid below → ``results.json`` (one flat record per run), per-run JSON records, PNG figures.

The grid: what pretraining buys (``linear``/``ncm`` on random vs pretrained features) and what MePo
buys (``linear`` on pretrained vs MePo-refined features × alignment none / official / corrected).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt

from mepo_lab import paths
from mepo_lab.config import Preset, get_preset
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.experiment import mepo_gains, run_grid
from mepo_lab.protocols.results import RunResult, aggregate, format_difference, format_table
from mepo_lab.protocols.stream_stats import stream_statistics
from mepo_lab.protocols.streams import si_blurry
from mepo_lab.viz.runs import plot_anytime, plot_class_forgetting, plot_metric_bars, plot_paired_differences
from mepo_lab.viz.streams import plot_stream_raster

QUICKSTART_GRID = [
    ("linear", "random", "none"), ("ncm", "random", "none"), ("ncm", "pretrained", "none"),
    ("linear", "pretrained", "none"), ("linear", "pretrained", "official"), ("linear", "pretrained", "corrected"),
    ("linear", "mepo", "none"), ("linear", "mepo", "official"), ("linear", "mepo", "corrected"),
]
FOUNDATION_GRID = [(m, b, "none") for b in ("pretrained", "random") for m in ("linear", "ncm")]


def quickstart(preset: str | Preset = "cpu", out: str | Path = "runs/quickstart", *,
               data_home: str | Path | None = None, grid: list[tuple[str, str, str]] | None = None,
               progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the quickstart grid and write ``out/results.json``, ``out/runs/*.json`` and ``out/*.png``.

    Returns ``{"rows": [...], "table": [...], "gains": {label: paired difference}, "figures": [...],
    "seconds": float}``; the gains are each MePo ingredient's A_auc gain over the plain pretrained backbone.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    grid, out, start = grid or QUICKSTART_GRID, Path(out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    log(f"[1/3] backbones, features, covariances (preset {preset.name}, data home {paths.data_home(data_home)})")
    log(f"[2/3] GCL runs: {len(grid)} combinations x seeds {list(preset.seeds)}")
    runs, rows = run_grid(preset, grid, out, data_home=data_home, progress=progress, log=log)
    log("[3/3] figures")
    figures = save_figures(runs, rows, out, preset)
    table, gains = aggregate(rows), mepo_gains(rows)
    log(format_table(table))
    for label, diff in gains.items():
        log(f"A_auc gain, paired by seed, {label}: {format_difference(diff)}")
    return {"rows": rows, "table": table, "gains": gains, "figures": [str(p) for p in figures],
            "seconds": time.perf_counter() - start}


def _pick(runs: list[RunResult], **match) -> list[RunResult]:
    return [r for r in runs if all(getattr(r, k) == v for k, v in match.items())]


def save_figures(runs: list[RunResult], rows: list[dict], out: Path, preset: Preset) -> list[Path]:
    """Anytime accuracy, per-class forgetting, stream raster, metric bars and the paired MePo gains as PNGs."""
    s, seed = preset.stream, runs[0].seed
    plain_runs = _pick(runs, alignment="none") or runs
    plain_rows = [r for r in rows if r["alignment"] == "none"] or rows
    forgetting = _pick(runs, method="linear", backbone="pretrained", alignment="none", seed=seed) or runs
    figs = {
        "anytime_accuracy.png": plot_anytime(plain_runs),
        "class_forgetting.png": plot_class_forgetting(forgetting[0]),
        "metrics.png": plot_metric_bars(plain_rows),
    }
    mepo_rows = [r for r in rows if r["method"] == "linear" and r["backbone"] in ("pretrained", "mepo")]
    if len({r["alignment"] for r in mepo_rows}) > 1:
        figs["mepo.png"] = plot_metric_bars(mepo_rows, x="alignment", hue="backbone")
    gains = mepo_gains(rows)
    if gains:  # the small effects, paired by seed: the bars' ± over seeds would swamp them
        figs["mepo_gain.png"] = plot_paired_differences(gains)
    labels = SyntheticWorld(preset.world).targets("downstream", "train")  # indices only, no images
    stream = si_blurry(labels, n_tasks=s.n_tasks, n=s.n, m=s.m, seed=runs[0].stream_seed, stochastic=s.stochastic)
    figs["stream_raster.png"] = plot_stream_raster(stream_statistics(stream)).figure
    saved = []
    for name, fig in figs.items():
        target = out / name
        paths.atomic_write(target, lambda h, f=fig: f.savefig(h, format="png", dpi=120, bbox_inches="tight"))
        plt.close(fig)
        saved.append(target)
    return saved
