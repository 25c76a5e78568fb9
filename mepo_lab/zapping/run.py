"""The zapping experiment behind ``mepo-lab zapping``: six regimes x seeds, evaluated by transfer.

For every seed and regime (:data:`~mepo_lab.zapping.config.REGIMES`): build the model, pretrain it on the
pretraining classes, then evaluate its body on the disjoint transfer classes with the protocols of
:mod:`mepo_lab.protocols.transfer` (Frati et al., ECAI 2024, §4): continual transfer (a fresh head, one
Adam step per image, class after class; the best learning rate of ``eval_lrs``), i.i.d. transfer
(``iid_shots`` per class) and the least-squares zero-shot head. ``results.json`` is rewritten atomically
after every run, and a rerun with the same configuration skips the runs already in it.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.config import WorldConfig
from mepo_lab.data.few_shot import FewShotSplit, omniglot_few_shot, synthetic_few_shot
from mepo_lab.device import pick_device
from mepo_lab.protocols.transfer import (
    best_continual_transfer,
    curve_auc,
    iid_transfer,
    to_input,
    zero_shot_accuracy,
)
from mepo_lab.zapping.claims import summarise
from mepo_lab.zapping.config import ZappingConfig
from mepo_lab.zapping.episodes import EpisodeData
from mepo_lab.zapping.models import MODELS, ZapNet
from mepo_lab.zapping.pretrain import parse_regime, pretrain

EARLY_STEPS = 5  # "rapid adaptation": the loss on the first images of every fresh class


def build_split(cfg: ZappingConfig, data_home: str | Path | None = None, download: bool = False) -> FewShotSplit:
    """The class split of ``cfg``: the synthetic world (offline) or Omniglot (``<data home>/datasets``)."""
    if cfg.data == "synthetic":
        return synthetic_few_shot(WorldConfig(seed=cfg.world_seed, image_size=cfg.image_size),
                                  cfg.n_pretrain_classes, cfg.n_transfer_classes, cfg.train_per_class,
                                  cfg.test_per_class, cfg.pretrain_per_class)
    return omniglot_few_shot(paths.subdir("datasets", data_home), download, cfg.image_size, cfg.n_pretrain_classes,
                             cfg.n_transfer_classes, cfg.train_per_class, cfg.test_per_class)


def build_model(cfg: ZappingConfig, n_classes: int, seed: int) -> ZapNet:
    """The ``cfg.model`` network with ``n_classes`` outputs, initialised from ``seed``."""
    if cfg.model == "conv":
        return MODELS["conv"](n_classes, cfg.image_size, cfg.conv_blocks, cfg.conv_filters, seed=seed,
                              norm=cfg.conv_norm)
    return MODELS["vit"](n_classes, cfg.image_size, seed=seed)


@torch.no_grad()
def held_out_accuracy(net: ZapNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Accuracy of ``net`` on held-out images of the pretraining classes (the learning curves)."""
    was, device = net.training, next(net.parameters()).device
    net.eval()
    hits = sum((net(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum().item()
               for i in range(0, len(y), batch_size))
    net.train(was)
    return hits / len(y)


def run_one(split: FewShotSplit, cfg: ZappingConfig, regime: str, seed: int, progress: bool = False) -> dict:
    """Pretrain with ``regime`` from ``seed`` and evaluate by transfer; one row of ``results.json``."""
    device = pick_device(cfg.device)
    kind, zap = parse_regime(regime)
    data = EpisodeData(to_input(split.pretrain.images), torch.from_numpy(split.pretrain.targets))
    x_held, y_held = to_input(split.pretrain_test.images), torch.from_numpy(split.pretrain_test.targets)
    net = build_model(cfg, split.pretrain.n_classes, seed).to(device)
    fit = pretrain(net, data, regime, cfg, seed, lambda m: held_out_accuracy(m, x_held, y_held), progress)
    start = time.perf_counter()
    body = net.body.eval()
    best, grid = best_continual_transfer(body, net.feature_dim, split.transfer, split.transfer_test, cfg.eval_lrs,
                                         mode=cfg.eval_mode, seed=seed, device=device)
    iid = iid_transfer(body, net.feature_dim, split.transfer, split.transfer_test, shots=cfg.iid_shots,
                       epochs=cfg.iid_transfer_epochs, lr=cfg.iid_transfer_lr, mode=cfg.eval_mode, seed=seed,
                       device=device)
    zero = zero_shot_accuracy(body, split.transfer, split.transfer_test, device=device)
    losses = np.asarray(best.losses)
    return {"regime": regime, "kind": kind, "zap": zap, "seed": seed,
            "continual": {"lr": best.lr, "classes_learned": best.classes_learned, "accuracy": best.accuracy,
                          "by_lr": {str(r.lr): r.final_accuracy for r in grid}},
            "final_accuracy": best.final_accuracy, "curve_auc": curve_auc(best),
            "adaptation_loss": losses.mean(0).tolist(), "early_loss": float(losses[:, :EARLY_STEPS].mean()),
            "iid_transfer_accuracy": iid, "zero_shot_accuracy": zero,
            "pretrain": {"history": fit["history"], "final_held_out_acc": fit["history"][-1].get("held_out_acc")},
            "seconds": {"pretrain": fit["seconds"], "eval": time.perf_counter() - start,
                        "total": fit["seconds"] + time.perf_counter() - start}}


def fingerprint(cfg: ZappingConfig, data_name: str = "") -> str:
    """What makes two runs comparable: every setting except the name, seeds, regimes and device, and the
    data's identity (``FewShotSplit.name``, which carries the synthetic world's generator version)."""
    keep = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("name", "seeds", "regimes", "device")}
    return json.dumps({**keep, "data_name": data_name}, sort_keys=True, default=str)


def _load(path: Path, fp: str) -> list[dict]:
    return paths.load_matching_json(path, fp).get("rows", [])


def run_zapping(cfg: ZappingConfig, out: str | Path, data_home: str | Path | None = None, download: bool = False,
                progress: bool = True) -> dict:
    """Every (seed, regime) of ``cfg``, resumable; writes ``out/results.json`` after each run and returns it.

    The result holds the configuration, one row per run (:func:`run_one`), the summary per regime
    (mean ± std over seeds) and the paper's claims as measured here (:func:`mepo_lab.zapping.claims.summarise`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split = build_split(cfg, data_home, download)
    fp, path = fingerprint(cfg, split.name), out / "results.json"
    rows = _load(path, fp)
    done = {(r["regime"], r["seed"]) for r in rows}
    todo = [(s, r) for s in cfg.seeds for r in cfg.regimes if (r, s) not in done]
    start = time.perf_counter()
    for seed, regime in tqdm(todo, desc="zapping runs", disable=not progress):
        rows.append(run_one(split, cfg, regime, seed, progress))
        result = _result(cfg, fp, split, rows, time.perf_counter() - start)
        paths.atomic_save_json(path, result)
    result = _result(cfg, fp, split, rows, time.perf_counter() - start)
    paths.atomic_save_json(path, result)
    return result


def _result(cfg: ZappingConfig, fp: str, split: FewShotSplit, rows: list[dict], seconds: float) -> dict:
    rows = sorted(rows, key=lambda r: (cfg.regimes.index(r["regime"]) if r["regime"] in cfg.regimes else 99,
                                       r["seed"]))
    summary, claims = summarise(rows)
    return {"command": "zapping", "config": dataclasses.asdict(cfg), "fingerprint": fp, "data": split.name,
            "rows": rows, "summary": summary, "claims": claims, "seconds": seconds}
