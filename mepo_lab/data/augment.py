"""Batched, per-sample random augmentation on uint8 image tensors (no Python loop over images).

The train transform of MePo's meta-refinement is ImageNet's RandomResizedCrop + horizontal flip +
ColorJitter(brightness = 63/255) (``docs/reference/mepo.md#pseudo-tasks``). On the synthetic world's 32-pixel images a
crop down to 8 % of the area would cut most objects away, so the crop scale defaults to (0.35, 1).
Crops are done with one ``affine_grid`` + ``grid_sample`` for the whole batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def train_augment(images: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.35, 1.0),
                  ratio: tuple[float, float] = (3 / 4, 4 / 3), brightness: float = 63 / 255) -> torch.Tensor:
    """Random resized crop (area fraction ``scale``, aspect ``ratio``), flip and brightness jitter.

    ``images``: uint8 ``(B, 3, H, W)``; returns uint8 of the same shape. All random numbers come from
    ``generator`` (on CPU), so a seeded generator gives the same augmentations.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"train_augment expects uint8 images, got {images.dtype}")
    b = len(images)
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    area = scale[0] + (scale[1] - scale[0]) * rand(b)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand(b)
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop size as a fraction of the image side
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * (2 * rand(b) - 1)  # crop centre in [-1, 1] coordinates, kept inside the image
    cy = (1 - h) * (2 * rand(b) - 1)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    x = images.float()
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    gain = 1 + brightness * (2 * rand(b) - 1)
    return (out * gain.to(x.device).view(-1, 1, 1, 1)).clamp_(0, 255).round_().to(torch.uint8)
