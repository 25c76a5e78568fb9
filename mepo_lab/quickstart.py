"""The quickstart story on the embedded default, end to end, offline, on a CPU.

world → micro ViT (pretrained once, cached) and a random-init twin → cached features → Si-Blurry
streams (N = 50, M = 10, 5 tasks, stochastic; one per seed) → ``linear`` and ``ncm`` learners →
``results.json`` (one flat record per run) + per-run JSON records + PNG figures.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import matplotlib.pyplot as plt
import numpy as np

from mepo_lab import paths
from mepo_lab.config import Preset, as_dict, get_preset
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.features import FeatureSet, cached_features
from mepo_lab.gcl import run_gcl
from mepo_lab.learners import make_learner
from mepo_lab.pretrain import Backbone, pretrained_backbone, random_backbone
from mepo_lab.results import RunResult, aggregate, format_table
from mepo_lab.stream_stats import stream_statistics
from mepo_lab.streams import si_blurry
from mepo_lab.viz.runs import plot_anytime, plot_class_forgetting, plot_metric_bars
from mepo_lab.viz.streams import plot_stream_raster


@dataclass
class WorldFeatures:
    """Downstream train/test features of one backbone."""

    backbone: Backbone
    train: FeatureSet
    test: FeatureSet


def world_features(preset: Preset, backbone: Backbone, data_home: str | Path | None = None,
                   progress: bool = True) -> WorldFeatures:
    """Cached downstream features of ``backbone``; images are rendered only on a cache miss."""
    world = SyntheticWorld(preset.world)
    sets = {split: cached_features(backbone, world.dataset_name("downstream", split),
                                   lambda s=split: world.dataset("downstream", s), data_home=data_home,
                                   batch_size=preset.feature_batch_size, device=preset.device,
                                   progress=progress)
            for split in ("train", "test")}
    return WorldFeatures(backbone, sets["train"], sets["test"])


def run_on_features(preset: Preset, learner: str, feats: WorldFeatures, seed: int, *,
                    stream_seed: int | None = None, out_path: str | Path | None = None,
                    callbacks: Iterable[Any] = (), progress: bool = True, **learner_kwargs) -> RunResult:
    """One feature-cached Si-Blurry run of ``learner`` (``stream_seed`` defaults to ``seed``)."""
    s = preset.stream
    stream = si_blurry(feats.train.targets, n_tasks=s.n_tasks, n=s.n, m=s.m,
                       seed=seed if stream_seed is None else stream_seed, stochastic=s.stochastic)
    if learner == "linear":
        learner_kwargs.setdefault("lr", preset.gcl.lr)
    result = RunResult(method=learner, backbone=feats.backbone.kind, seed=seed, config=as_dict(preset),
                       meta={"backbone_hash": feats.backbone.weights_hash, "features": feats.train.key})
    return run_gcl(make_learner(learner, **learner_kwargs), feats.train.tensor(), feats.test.tensor(),
                   feats.test.targets, stream, preset.gcl, train_seed=seed, result=result,
                   callbacks=callbacks, out_path=out_path, progress=progress)


def quickstart(preset: str | Preset = "cpu", out: str | Path = "runs/quickstart", *,
               data_home: str | Path | None = None, learners: tuple[str, ...] = ("linear", "ncm"),
               progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the quickstart and write ``out/results.json``, ``out/runs/*.json`` and ``out/*.png``.

    Returns ``{"rows": [...], "table": [...], "figures": [...], "seconds": float}``.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    out, start = Path(out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    log(f"[1/4] backbones (preset {preset.name}, data home {paths.data_home(data_home)})")
    backbones = [pretrained_backbone(preset, data_home, progress=progress), random_backbone(preset)]
    log(f"      pretrained micro ViT: {'cached' if backbones[0].info.get('cached') else 'trained'} "
        f"({backbones[0].info.get('seconds', 0):.0f} s to train, held-out acc "
        f"{100 * backbones[0].info.get('held_out_acc', float('nan')):.1f}%)")
    log("[2/4] features")
    feats = [world_features(preset, b, data_home, progress) for b in backbones]
    log(f"[3/4] GCL runs: {len(learners)} learners x {len(feats)} backbones x seeds {list(preset.seeds)}")
    rows, runs = [], []
    for seed in preset.seeds:
        for f in feats:
            for name in learners:
                run = run_on_features(preset, name, f, seed, progress=False,
                                      out_path=out / "runs" / f"{name}_{f.backbone.kind}_seed{seed}.json")
                runs.append(run)
                rows.append(run.summary())
                paths.atomic_save_json(out / "results.json", rows)
                log(f"      {name:7s} {f.backbone.kind:10s} seed {seed}: A_auc {100 * run.metrics['A_auc']:.2f}  "
                    f"A_last {100 * run.metrics['A_last']:.2f}  ({run.wall_seconds:.1f} s)")
    log("[4/4] figures")
    figures = save_figures(runs, rows, out, preset, feats[0].train.targets)
    table = aggregate(rows)
    log(format_table(table))
    return {"rows": rows, "table": table, "figures": [str(p) for p in figures],
            "seconds": time.perf_counter() - start}


def save_figures(runs: list[RunResult], rows: list[dict], out: Path, preset: Preset,
                 train_targets: np.ndarray) -> list[Path]:
    """Anytime accuracy, per-class forgetting, stream raster and metric bars as PNGs in ``out``."""
    s, first = preset.stream, runs[0]
    stream = si_blurry(train_targets, n_tasks=s.n_tasks, n=s.n, m=s.m, seed=first.stream_seed,
                       stochastic=s.stochastic)
    figs = {
        "anytime_accuracy.png": plot_anytime(runs),
        "class_forgetting.png": plot_class_forgetting(first),
        "stream_raster.png": plot_stream_raster(stream_statistics(stream)).figure,
        "metrics.png": plot_metric_bars(rows),
    }
    saved = []
    for name, fig in figs.items():
        target = out / name
        paths.atomic_write(target, lambda h, f=fig: f.savefig(h, format="png", dpi=120, bbox_inches="tight"))
        plt.close(fig)
        saved.append(target)
    return saved
