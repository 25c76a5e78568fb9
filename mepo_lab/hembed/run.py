"""The H-embedding experiment behind ``mepo-lab hembed``: three methods × seeds on a task sequence.

Every (seed, method) trains a fresh hypernetwork through the tasks — the binary tasks of designed similarity of
:func:`mepo_lab.hembed.tasks.similarity_tasks` (groups alternate, A1 B1 A2 B2 …) or CIFAR-10 followed by
CIFAR-100 splits — with the configured target network, and records the accuracy matrix, ACC, BWT, the H-scores behind each guide, the task × task
H-score matrix of the final generated heads, the learned embeddings and guides, and the drift of every task's
generated weights. ``results.json`` is rewritten atomically after every run; a rerun with the same configuration
skips the runs already in it. Wu et al., NeurIPS 2025, arXiv 2502.11609.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.backbones.base import Backbone
from mepo_lab.backbones.pretrain import pretrained_backbone, random_backbone
from mepo_lab.backbones.zoo import create_backbone
from mepo_lab.config import PRESETS, run_fingerprint
from mepo_lab.data.arrays import dataset_arrays
from mepo_lab.data.base import ImageArrays
from mepo_lab.device import pick_device
from mepo_lab.hembed.config import HembedConfig
from mepo_lab.hembed.hscore import block_contrast
from mepo_lab.hembed.strategy import HnetStrategy
from mepo_lab.hembed.tasks import similarity_tasks
from mepo_lab.protocols.task_incremental import (
    Task,
    run_task_incremental,
    split_tasks,
    summarise_runs,
)


def build_tasks(cfg: HembedConfig, data_home: str | Path | None = None, download: bool = False,
                verify: bool = True) -> tuple[list[Task], list[str]]:
    """The tasks and a group label per task: the designed-similarity tasks in the world of ``cfg.world_preset``,
    or (``data="cifar"``) CIFAR-10 as task 0 followed by ``cfg.cifar100_tasks`` tasks of 10 consecutive CIFAR-100
    classes, as the official code orders them (``<data home>/datasets``, checksummed unless ``verify=False``)."""
    if cfg.data == "similarity":
        world = PRESETS[cfg.world_preset]().world
        return similarity_tasks(world.seed, cfg.n_per_group, world.image_size, cfg.train_per_class,
                                cfg.test_per_class, cfg.groups, n_downstream_classes=world.n_downstream_classes,
                                contrast=cfg.contrast)
    root = paths.subdir("datasets", data_home)
    arrays = {(name, split): dataset_arrays(name, split, root=root, download=download, verify=verify)
              for name in ("cifar10", "cifar100") for split in ("train", "test")}
    parts = {key: ImageArrays(images, targets, [str(c) for c in range(int(targets.max()) + 1)], "-".join(key))
             for key, (images, targets) in arrays.items()}
    first = split_tasks(parts["cifar10", "train"], parts["cifar10", "test"], 1)
    n = cfg.cifar100_tasks
    rest = split_tasks(parts["cifar100", "train"], parts["cifar100", "test"], n,
                       classes=[list(range(10 * t, 10 * t + 10)) for t in range(n)])
    tasks = [first[0]] + [Task(t.index + 1, t.classes, t.train, t.test) for t in rest]
    return tasks, ["cifar10"] + ["cifar100"] * n


def build_backbone(cfg: HembedConfig, data_home: str | Path | None = None, progress: bool = False) -> Backbone | None:
    """The frozen ViT of the target: the micro ViT of ``cfg.world_preset`` (pretrained on the world and cached, or
    random), a zoo / local ViT for ``target="lora"``, or None for ``resnet32`` (every weight is generated)."""
    if cfg.target == "resnet32":
        return None
    if cfg.backbone not in ("pretrained", "random"):
        return create_backbone(cfg.backbone, pretrained=cfg.pretrained)
    preset = PRESETS[cfg.world_preset]()
    if cfg.backbone == "random":
        return random_backbone(preset)
    return pretrained_backbone(preset, data_home, progress=progress)


def _nan_free(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]


def run_one(tasks: list[Task], backbone: Backbone | None, cfg: HembedConfig, method: str, seed: int,
            progress: bool = False, groups: list[str] | None = None) -> dict:
    """One method from one seed through every task; one row of ``results.json``. ``groups`` labels the tasks
    for the H-score block contrast (default: each task's ``meta["group"]``)."""
    start = time.perf_counter()
    logs: list[dict] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        strategy = HnetStrategy(backbone and backbone.model, [t.n_classes for t in tasks], method, cfg, seed,
                                pick_device(cfg.device))
        matrix = run_task_incremental(strategy, tasks, progress=progress,
                                      on_task=lambda t, row, log: logs.append(log))
    embs = [e.detach().cpu().tolist() for e in strategy.hnet.task_embs]
    hscores = strategy.score_matrix(tasks)
    groups = groups or [(t.train.meta or {}).get("group", "") for t in tasks]
    return {"method": method, "seed": seed, "ACC": matrix.acc(), "BWT": matrix.bwt(),
            "matrix": _nan_free(matrix.matrix), "scores": [log["scores"] for log in logs],
            "hscore_matrix": _nan_free(hscores), "hscore_blocks": block_contrast(hscores, groups),
            "embeddings": embs, "initial_embeddings": [e.tolist() for e in strategy.initial_embs],
            "guides": {str(t): g.cpu().tolist() for t, g in strategy.guides.items()},
            "drift": strategy.drift(), "seconds": time.perf_counter() - start}


def fingerprint(cfg: HembedConfig) -> str:
    """Every setting except the name, seeds, methods and device (:func:`mepo_lab.config.run_fingerprint`)."""
    return run_fingerprint(cfg)


def run_hembed(cfg: HembedConfig, out: str | Path, data_home: str | Path | None = None,
               progress: bool = True, download: bool = False, verify: bool = True) -> dict:
    """Every (seed, method) of ``cfg``, resumable; ``out/results.json`` after each run; returns the result."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, fp = out / "results.json", fingerprint(cfg)
    rows = paths.load_matching_json(path, fp).get("rows", [])
    done = {(r["method"], r["seed"]) for r in rows}
    tasks, groups = build_tasks(cfg, data_home, download, verify)
    backbone = build_backbone(cfg, data_home, progress)
    start = time.perf_counter()
    for seed, method in tqdm([(s, m) for s in cfg.seeds for m in cfg.methods if (m, s) not in done],
                             desc="H-embedding runs", disable=not progress):
        rows.append(run_one(tasks, backbone, cfg, method, seed, groups=groups))
        paths.atomic_save_json(path, _result(cfg, fp, rows, groups, time.perf_counter() - start))
    result = _result(cfg, fp, rows, groups, time.perf_counter() - start)
    paths.atomic_save_json(path, result)
    return result


def _result(cfg: HembedConfig, fp: str, rows: list[dict], groups: list[str], seconds: float) -> dict:
    order = {m: i for i, m in enumerate(cfg.methods)}
    rows = sorted(rows, key=lambda r: (order.get(r["method"], 99), r["seed"]))
    return {"command": "hembed", "config": dataclasses.asdict(cfg), "fingerprint": fp, "groups": groups,
            "rows": rows, "summary": summarise_runs(rows), "seconds": seconds}
