"""Supervised pretraining of the micro ViT on the synthetic world's pretraining classes, cached.

This is the lab's "ImageNet pretraining": cross-entropy with label smoothing, AdamW, linear warm-up
then cosine decay, horizontal flips. The result is stored once under
``<data home>/micro_vit/<key>/`` (``backbone.pt``: a head-less timm state dict, the released MePo
format; ``info.json``: configs, training curve, held-out accuracy, seconds), where ``key`` hashes
the world, ViT and pretraining configs, so changing any of them trains a new backbone.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mepo_lab import paths, shipped
from mepo_lab.backbones.base import Backbone, backbone_state, weights_hash
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import Preset
from mepo_lab.data.normalization import normalize
from mepo_lab.data.synthetic import WORLD_VERSION, SyntheticWorld, pretraining_fields
from mepo_lab.device import pick_device


HEAD_FILE = "head.pt"


def cache_key(preset: Preset) -> str:
    """Hash of everything that determines the pretrained weights (world version and configs; not ``world.shift``,
    which only changes the downstream images)."""
    blob = json.dumps([WORLD_VERSION, pretraining_fields(preset.world), asdict(preset.vit), asdict(preset.pretrain)],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def random_backbone(preset: Preset, seed: int = 0) -> Backbone:
    """The same architecture with timm's random initialisation (the "no pretraining" baseline)."""
    model = create_micro_vit(preset.vit, preset.world.image_size, num_classes=0, seed=seed).eval()
    return Backbone(model, "random", weights_hash(model), {"seed": seed})


def pretrained_backbone(preset: Preset, data_home: str | Path | None = None, *, force: bool = False,
                        progress: bool = True, callback: Callable[[dict], None] | None = None) -> Backbone:
    """Load the cached pretrained micro ViT for ``preset``, or pretrain it now and cache it.

    ``callback(entry)`` receives each training-log entry (step, epoch, loss, acc, lr) for live plots.
    """
    folder = paths.subdir("micro_vit", data_home) / cache_key(preset)
    weights, info_path = folder / "backbone.pt", folder / "info.json"
    model = create_micro_vit(preset.vit, preset.world.image_size, num_classes=0)
    if not force and not weights.exists():
        shipped.install(f"micro_vit/{folder.name}", data_home, what="pretrained micro ViT",
                        log=shipped.notice(progress, "; `mepo-lab pretrain --force` retrains"))
    if weights.exists() and info_path.exists() and not force:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        info = json.loads(info_path.read_text())
        return Backbone(model.eval(), "pretrained", weights_hash(model), info | {"cached": True})
    info = _pretrain(preset, progress, callback)
    state, head = info.pop("state"), info.pop("head")
    model.load_state_dict(state)
    paths.atomic_write(folder / HEAD_FILE, lambda h: torch.save(head, h))
    paths.atomic_write(weights, lambda h: torch.save(state, h))
    paths.atomic_save_json(info_path, info)
    return Backbone(model.eval(), "pretrained", weights_hash(model), info | {"cached": False})


def pretraining_head(preset: Preset, data_home: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The classifier head (``head.weight``, ``head.bias``; one row per pretraining class) that the cached micro
    ViT of ``preset`` was pretrained with — what a data-free method inverts. Saved since the head was kept;
    a cache from before raises FileNotFoundError naming the fix."""
    path = paths.subdir("micro_vit", data_home) / cache_key(preset) / HEAD_FILE
    if not path.exists():
        raise FileNotFoundError(f"no pretraining head at {path}: the cached micro ViT predates saving it; run "
                                "`mepo-lab pretrain --force` (same preset) to pretrain again and keep the head")
    return torch.load(path, map_location="cpu", weights_only=True)


def _pretrain(preset: Preset, progress: bool, callback: Callable[[dict], None] | None) -> dict:
    start = time.perf_counter()
    world, cfg = SyntheticWorld(preset.world), preset.pretrain
    data = world.dataset("pretrain", "train")
    held_out = world.dataset("pretrain", "test", per_class=max(2, preset.world.test_per_class // 5))
    gen_seconds = time.perf_counter() - start
    device = pick_device(preset.device)
    model = create_micro_vit(preset.vit, preset.world.image_size, data.n_classes, seed=cfg.seed).to(device)
    log = train_classifier(model, data.images, data.targets, cfg, device, progress, callback)
    model.eval()
    acc = evaluate_classifier(model, held_out.images, held_out.targets, device)
    return {
        "state": backbone_state(model),
        "head": {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith("head.")},
        "world": asdict(preset.world), "vit": asdict(preset.vit), "pretrain": asdict(preset.pretrain),
        "n_classes": data.n_classes, "n_images": len(data), "held_out_acc": acc, "log": log,
        "data_seconds": gen_seconds, "seconds": time.perf_counter() - start, "device": str(device),
    }


def _lr_at(step: int, total: int, cfg) -> float:
    """Linear warm-up to ``cfg.lr`` over ``warmup_frac`` of the steps, then cosine decay to 0."""
    warm = max(1, int(cfg.warmup_frac * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train_classifier(model: torch.nn.Module, images: np.ndarray, targets: np.ndarray, cfg, device,
                     progress: bool = True, callback: Callable[[dict], None] | None = None) -> list[dict]:
    """Minimise ``CE_smooth(model(normalize(flip(x))), y)`` with AdamW for ``cfg.epochs`` epochs.

    Returns the training log (one entry every ~2 % of the steps).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(targets), cfg.batch_size
    total = max(1, int(cfg.epochs * math.ceil(n / bs)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(targets)
    log, every, order = [], max(1, total // 50), torch.empty(0, dtype=torch.long)
    model.train()
    bar = tqdm(range(total), desc="pretraining micro ViT", disable=not progress, mininterval=1.0)
    for step in bar:
        pos = (step * bs) % n
        if pos < bs or len(order) == 0:
            order = torch.randperm(n, generator=gen)
        idx = order[pos:pos + bs]
        x = normalize(x_all[idx].to(device))
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(-1), x)
        y = y_all[idx].to(device)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, total, cfg)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == total - 1:
            entry = {"step": step, "epoch": step * bs / n, "loss": float(loss.detach()),
                     "acc": float((logits.argmax(1) == y).float().mean()), "lr": opt.param_groups[0]["lr"]}
            log.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", acc=f"{entry['acc']:.2f}")
            if callback:
                callback(entry)
    return log


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, images: np.ndarray, targets: np.ndarray, device,
                        batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (with its head) on uint8 images."""
    correct = 0
    for start in range(0, len(targets), batch_size):
        x = normalize(torch.from_numpy(images[start:start + batch_size]).to(device))
        pred = model(x).argmax(1).cpu().numpy()
        correct += int((pred == targets[start:start + batch_size]).sum())
    return correct / max(1, len(targets))

