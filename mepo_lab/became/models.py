"""Multi-head networks for task-incremental learning: a shared body and one linear head per task.

* :func:`alexnet` — the small AlexNet of the GPM/BECAME code (``GPM-based/model.py``; Saha et al., GPM,
  ICLR 2021): 3 conv layers (64, 128, 256 filters; kernels 4, 3, 2; no bias), BatchNorm without running
  statistics, ReLU, 2x2 max-pooling, dropout 0.2 (0.5 before the fully connected layers), 2 fully connected
  layers of 2048 units; ``width`` scales every layer for the CPU.
* :func:`vit` — the lab's micro ViT (a timm ``VisionTransformer``) trained from scratch, as BECAME trains
  its networks from scratch; GPM projects its patch embedding and its ``qkv``, ``proj``, ``fc1`` and ``fc2``
  layers (token inputs are the representations).

Heads live in ``model.head`` (an ``nn.ModuleList``), so every head parameter's name starts with ``head.``:
gradient projection and the freezing of 1-D parameters leave them alone, as the official code does.
Inputs are float images in [0, 1]; the networks normalise them to [-1, 1] first.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import MicroViTConfig


class _Centre(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 2.0


class MultiHeadNet(nn.Module):
    """``logits_t = head[t](body(x))``: one head per task, sized by ``classes_per_task``."""

    def __init__(self, body: nn.Module, feature_dim: int, classes_per_task: Sequence[int]):
        super().__init__()
        if not classes_per_task or min(classes_per_task) < 1:
            raise ValueError(f"classes_per_task must list at least one task with >= 1 class, got {list(classes_per_task)}")
        self.body, self.feature_dim = body, feature_dim
        self.head = nn.ModuleList(nn.Linear(feature_dim, k, bias=False) for k in classes_per_task)  # no bias, as official

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        if not 0 <= task < len(self.head):
            raise ValueError(f"task must be in [0, {len(self.head) - 1}], got {task}")
        return self.head[task](self.body(x))


def _side(size: int) -> int:
    for kernel in (4, 3, 2):
        size = (size - kernel + 1) // 2
    return size


def alexnet(classes_per_task: Sequence[int], image_size: int = 32, width: float = 1.0, seed: int = 0) -> MultiHeadNet:
    """The GPM/BECAME AlexNet (conv 64-128-256, fc 2048-2048, BN without running stats), scaled by ``width``."""
    c1, c2, c3, fc = (max(4, round(v * width)) for v in (64, 128, 256, 2048))
    side = _side(image_size)
    if side < 1:
        raise ValueError(f"image_size {image_size} is too small for the AlexNet: use at least 16 pixels")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        body = nn.Sequential(
            _Centre(),
            nn.Conv2d(3, c1, 4, bias=False), nn.BatchNorm2d(c1, track_running_stats=False), nn.ReLU(),
            nn.Dropout(0.2), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, bias=False), nn.BatchNorm2d(c2, track_running_stats=False), nn.ReLU(),
            nn.Dropout(0.2), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 2, bias=False), nn.BatchNorm2d(c3, track_running_stats=False), nn.ReLU(),
            nn.Dropout(0.5), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(c3 * side * side, fc, bias=False), nn.BatchNorm1d(fc, track_running_stats=False), nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(fc, fc, bias=False), nn.BatchNorm1d(fc, track_running_stats=False), nn.ReLU(), nn.Dropout(0.5))
        return MultiHeadNet(body, fc, classes_per_task)


class _ViTBody(nn.Module):
    def __init__(self, vit: nn.Module):
        super().__init__()
        self.centre, self.vit = _Centre(), vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(self.centre(x))


def vit(classes_per_task: Sequence[int], image_size: int = 32, cfg: MicroViTConfig | None = None,
        seed: int = 0) -> MultiHeadNet:
    """The micro ViT (CLS feature) trained from scratch, with one head per task."""
    cfg = cfg or MicroViTConfig(patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
    body = _ViTBody(create_micro_vit(cfg, image_size, num_classes=0, seed=seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultiHeadNet(body, cfg.embed_dim, classes_per_task)


MODELS = {"alexnet": alexnet, "vit": vit}
