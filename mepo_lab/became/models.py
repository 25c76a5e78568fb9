"""Multi-head networks for task-incremental learning: a shared body and one linear head per task.

* :func:`alexnet` — the small AlexNet of the GPM/BECAME code (``GPM-based/model.py``; Saha et al., GPM,
  ICLR 2021): 3 conv layers (64, 128, 256 filters; kernels 4, 3, 2; no bias), BatchNorm without running
  statistics, ReLU, 2x2 max-pooling, dropout 0.2 (0.5 before the fully connected layers), 2 fully connected
  layers of 2048 units; ``width`` scales every layer for the CPU.
* :func:`vit` — the lab's micro ViT (a timm ``VisionTransformer``) trained from scratch, as BECAME trains
  its networks from scratch; GPM projects its patch embedding and its ``qkv``, ``proj``, ``fc1`` and ``fc2``
  layers (token inputs are the representations).
* :func:`pretrained_vit` — a timm ViT-B/16 (a :data:`mepo_lab.backbones.zoo.ZOO` name or ``local:<path>``) with
  every block but the last ``adapt_blocks`` frozen; GPM and the merge act on the trainable part only (blocks
  9–11 of ViT-B/16 by default, our choice for a pretrained backbone: the paper trains from scratch). Images are
  resized to the backbone's input size and normalised with its own statistics.

Heads live in ``model.head`` (an ``nn.ModuleList``), so every head parameter's name starts with ``head.``:
gradient projection and the freezing of 1-D parameters leave them alone, as the official code does.
Inputs are float images in [0, 1]; the networks normalise them to [-1, 1] first.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.backbones.zoo import create_backbone, normalization_stats
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


class _PretrainedBody(nn.Module):
    """``x ∈ [0, 1]`` → resize to the ViT's input size → ``(x − mean)/std`` → pooled feature (bf16 autocast on
    CUDA when ``precision="bf16"``; the feature is returned in float32)."""

    def __init__(self, vit: nn.Module, precision: str):
        super().__init__()
        stats = normalization_stats(vit, mode="backbone")
        self.vit, self.precision = vit, precision
        self.size = tuple(vit.patch_embed.img_size)
        self.register_buffer("mean", torch.tensor(stats["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(stats["std"]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.precision == "bf16" and x.is_cuda):
            return self.vit(x).float()


def pretrained_vit(classes_per_task: Sequence[int], backbone: str = "sup21k", adapt_blocks: int = 3, *,
                   pretrained: bool = True, arch: str | None = None, precision: str = "fp32", seed: int = 0,
                   **timm_kwargs) -> MultiHeadNet:
    """A timm ViT (``create_backbone(backbone)``, head-less) whose last ``adapt_blocks`` blocks and final norm
    train, with one bias-free head per task; everything before those blocks is frozen (``requires_grad=False``),
    so GPM projects, and the Fisher and the merge cover, only the adapted blocks.

    ``pretrained=False`` gives timm's random initialisation (offline tests and timing); ``timm_kwargs`` go to
    ``timm.create_model`` (e.g. ``img_size=32, embed_dim=32, depth=4`` for a tiny test model).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit_model = create_backbone(backbone, pretrained=pretrained, arch=arch, freeze=True, **timm_kwargs).model
        depth = len(vit_model.blocks)
        if not 1 <= adapt_blocks <= depth:
            raise ValueError(f"adapt_blocks must be in [1, {depth}] for this {depth}-block ViT, got {adapt_blocks}")
        for module in (*vit_model.blocks[depth - adapt_blocks:], vit_model.norm, getattr(vit_model, "fc_norm", None)):
            if module is not None:
                module.requires_grad_(True)
        vit_model.train()
        return MultiHeadNet(_PretrainedBody(vit_model, precision), int(vit_model.num_features), classes_per_task)


MODELS = {"alexnet": alexnet, "vit": vit, "pretrained_vit": pretrained_vit}
