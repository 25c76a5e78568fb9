"""Conv4: the four-block ConvNet of PURER's teachers and meta-learner (after CloserLookFewShot).

``x ∈ [0, 1]`` → ``z = (x − μ) / σ`` (a buffer; the synthetic world's μ = 0.5, σ = 0.25 by default) → 4 blocks of
[conv 3×3 (padding 1, bias) → BatchNorm2d → ReLU → MaxPool2d(2)] → flatten → ``head`` (Linear). After the four
pools the map is ``⌊s/16⌋ × ⌊s/16⌋`` for an ``s × s`` input, so ``feature_dim = width · ⌊s/16⌋²``
(official ``32 · (img_size >> 4)²``). Initialisation as ``network.py::init_layer``: conv weights
``N(0, 2 / (3·3·width))``, BatchNorm weight 1 and bias 0; conv biases and the head keep torch's defaults.

Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning" (PURER), CVPR 2023,
arXiv 2303.11183; official code Egg-Hu/PURER ``network.py`` (``ConvBlock``, ``ConvNet``, ``Conv4``: 32 filters
per block there; CloserLookFewShot uses 64). Unlike the official code, the net normalises its own input, so
inversion and meta-learning act on [0, 1] images.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from mepo_lab.data.normalization import WORLD_MEAN, WORLD_STD

MIN_IMAGE_SIZE = 16  # four 2x2 max-pools


def _stats(values: Sequence[float] | float, in_channels: int, what: str) -> torch.Tensor:
    v = [float(values)] * in_channels if isinstance(values, (int, float)) else [float(x) for x in values]
    if len(v) != in_channels:
        raise ValueError(f"{what} has {len(v)} values for in_channels={in_channels}: pass one value per channel")
    return torch.tensor(v).view(1, in_channels, 1, 1)


class Conv4(nn.Module):
    """``logits = head(features(x))``; ``features(x)`` = the flattened output of the 4 conv blocks."""

    def __init__(self, n_out: int, width: int, in_channels: int, image_size: int,
                 mean: Sequence[float] | float, std: Sequence[float] | float) -> None:
        super().__init__()
        self.width, self.in_channels, self.image_size = width, in_channels, image_size
        self.register_buffer("mean", _stats(mean, in_channels, "mean"))
        self.register_buffer("std", _stats(std, in_channels, "std"))
        blocks = OrderedDict()
        for i in range(4):
            blocks[f"block{i}"] = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1),
                bn=nn.BatchNorm2d(width), relu=nn.ReLU(), pool=nn.MaxPool2d(2)))
        self.trunk = nn.Sequential(blocks)
        self.feature_dim = width * (image_size // 16) ** 2
        self.head = nn.Linear(self.feature_dim, n_out)
        for m in self.trunk.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``flatten(trunk((x − mean) / std))``, shape ``(B, feature_dim)``; ``x`` float in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"Conv4 expects float images (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(x.shape)}: resize the images or build the net with "
                             f"image_size={x.shape[-1] if x.ndim == 4 else '?'}")
        return self.trunk((x - self.mean) / self.std).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def conv4(n_out: int, width: int = 32, in_channels: int = 3, image_size: int = 32, *,
          mean: Sequence[float] | float = WORLD_MEAN, std: Sequence[float] | float = WORLD_STD,
          seed: int | None = None) -> Conv4:
    """The official Conv4 with an ``n_out``-way head (``model.head``), ``width`` filters per block and
    ``model.feature_dim = width · ⌊image_size/16⌋²``; input float images in [0, 1], normalised inside by
    ``(x − mean) / std`` (default: the synthetic world's, :data:`~mepo_lab.data.normalization.WORLD_PREPROCESS`).
    ``seed``: initialise from ``torch.manual_seed(seed)`` without touching the global RNG state.
    Official: PURER ``network.py::Conv4`` (Hu et al., CVPR 2023).
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} (Conv4 halves it four times), "
                         f"got {image_size}: render larger images")
    for name, value in (("n_out", n_out), ("width", width), ("in_channels", in_channels)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if seed is None:
        return Conv4(n_out, width, in_channels, image_size, mean, std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Conv4(n_out, width, in_channels, image_size, mean, std)
