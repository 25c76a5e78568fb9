"""The BECAME experiment behind ``mepo-lab became``: six methods x seeds on a task-incremental split.

Every (seed, method) trains a fresh multi-head network through the tasks with
:func:`mepo_lab.protocols.task_incremental.run_task_incremental` and records the accuracy matrix
``R[t, i]``, ACC (mean of its last row), BWT and the merge coefficient ``α_t`` of every task.
``results.json`` is rewritten atomically after every run; a rerun with the same configuration skips the runs
already in it. Tasks take the classes in label order (task ``t`` = classes ``t·k … t·k + k − 1``), as the
official CIFAR-100 splits do; seeds vary the initialisation and the batch order.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.became.config import BecameConfig
from mepo_lab.became.models import MODELS, MultiHeadNet
from mepo_lab.became.strategy import BecameStrategy
from mepo_lab.config import WorldConfig, run_fingerprint
from mepo_lab.data.base import ImageArrays
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.device import pick_device
from mepo_lab.protocols.task_incremental import (
    Task,
    format_runs_table,
    run_task_incremental,
    split_tasks,
    summarise_runs,
)


def build_tasks(cfg: BecameConfig, data_home: str | Path | None = None, download: bool = False,
                verify: bool = True) -> list[Task]:
    """``cfg.n_tasks`` tasks of ``cfg.classes_per_task`` classes: the synthetic world's downstream classes, or
    CIFAR-100 (``<data home>/datasets``, checksummed unless ``verify=False``; the first
    ``n_tasks · classes_per_task`` classes)."""
    n_classes = cfg.n_tasks * cfg.classes_per_task
    if cfg.data == "synthetic":
        world = SyntheticWorld(WorldConfig(seed=cfg.world_seed, image_size=cfg.image_size,
                                           n_downstream_classes=n_classes))
        train = world.dataset("downstream", "train", cfg.train_per_class)
        test = world.dataset("downstream", "test", cfg.test_per_class)
    else:
        train, test = (_cifar(split, n_classes, data_home, download, verify) for split in ("train", "test"))
    groups = [list(range(t * cfg.classes_per_task, (t + 1) * cfg.classes_per_task)) for t in range(cfg.n_tasks)]
    return split_tasks(train, test, cfg.n_tasks, classes=groups)


def _cifar(split: str, n_classes: int, data_home, download: bool, verify: bool) -> ImageArrays:
    from mepo_lab.data.arrays import dataset_arrays

    if n_classes > 100:
        raise ValueError(f"CIFAR-100 has 100 classes, the preset asks for {n_classes}: lower n_tasks or classes_per_task")
    images, targets = dataset_arrays("cifar100", split, root=paths.subdir("datasets", data_home), download=download,
                                     verify=verify)
    keep = targets < n_classes
    return ImageArrays(np.asarray(images[keep]), targets[keep], [str(c) for c in range(100)], f"cifar100-{split}")


def build_model(cfg: BecameConfig, seed: int) -> MultiHeadNet:
    """The ``cfg.model`` network with one head per task."""
    heads = [cfg.classes_per_task] * cfg.n_tasks
    if cfg.model == "alexnet":
        return MODELS["alexnet"](heads, cfg.image_size, cfg.width, seed=seed)
    if cfg.model == "pretrained_vit":
        return MODELS["pretrained_vit"](heads, cfg.backbone, cfg.adapt_blocks, pretrained=cfg.pretrained,
                                        precision=cfg.precision, seed=seed)
    return MODELS["vit"](heads, cfg.image_size, seed=seed)


def run_one(tasks: list[Task], cfg: BecameConfig, method: str, seed: int, progress: bool = False) -> dict:
    """One method from one seed through every task; one row of ``results.json``."""
    start = time.perf_counter()
    logs: list[dict] = []
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator: seed it, leave it as it was
        torch.manual_seed(seed)
        strategy = BecameStrategy(build_model(cfg, seed), method, cfg, seed, pick_device(cfg.device))
        matrix = run_task_incremental(strategy, tasks, progress=progress,
                                      on_task=lambda t, row, log: logs.append(log))
    r = matrix.matrix
    return {"method": method, "seed": seed, "ACC": matrix.acc(), "BWT": matrix.bwt(),
            "matrix": [[None if np.isnan(v) else float(v) for v in row] for row in r],
            "alpha": [log.get("alpha") for log in logs],
            "memory": logs[-1].get("memory") if logs else None, "seconds": time.perf_counter() - start}


def fingerprint(cfg: BecameConfig) -> str:
    """Every setting except the name, seeds, methods and device (:func:`mepo_lab.config.run_fingerprint`)."""
    return run_fingerprint(cfg)


summarise = summarise_runs  # names kept for existing callers
format_table = format_runs_table


def run_became(cfg: BecameConfig, out: str | Path, data_home: str | Path | None = None, download: bool = False,
               progress: bool = True, verify: bool = True) -> dict:
    """Every (seed, method) of ``cfg``, resumable; ``out/results.json`` after each run; returns the result."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, fp = out / "results.json", fingerprint(cfg)
    rows = paths.load_matching_json(path, fp).get("rows", [])
    done = {(r["method"], r["seed"]) for r in rows}
    tasks = build_tasks(cfg, data_home, download, verify)
    start = time.perf_counter()
    for seed, method in tqdm([(s, m) for s in cfg.seeds for m in cfg.methods if (m, s) not in done],
                             desc="BECAME runs", disable=not progress):
        rows.append(run_one(tasks, cfg, method, seed))
        paths.atomic_save_json(path, _result(cfg, fp, rows, time.perf_counter() - start))
    result = _result(cfg, fp, rows, time.perf_counter() - start)
    paths.atomic_save_json(path, result)
    return result


def _result(cfg: BecameConfig, fp: str, rows: list[dict], seconds: float) -> dict:
    order = {m: i for i, m in enumerate(cfg.methods)}
    rows = sorted(rows, key=lambda r: (order.get(r["method"], 99), r["seed"]))
    return {"command": "became", "config": dataclasses.asdict(cfg), "fingerprint": fp, "rows": rows,
            "summary": summarise(rows), "seconds": seconds}
