"""The networks zapping pretrains: a body (image -> features) and a linear head (the layer that is zapped).

* :func:`conv_net` is the official Omniglot model ("sanml" in uvm-neurobotics-lab/reset-it-and-forget-it,
  ``models/convnet.py`` via the configs ``train-omni-*.yml``): blocks of 3x3 convolution without padding,
  affine InstanceNorm, ReLU, and 2x2 max-pooling after the first two blocks only; 3 blocks x 256 filters
  there, fewer filters on a CPU.
* :func:`vit_net` is the lab's micro ViT (a timm ``VisionTransformer``) with the same linear head.

Both take float images in [0, 1] (``protocols.transfer.to_input``) and normalise them to [-1, 1] first.
"""
from __future__ import annotations

import torch
from torch import nn

from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import MicroViTConfig


class _Centre(nn.Module):
    """``x ↦ (x − 0.5) / 0.5``: [0, 1] images to [-1, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 2.0


class ZapNet(nn.Module):
    """``logits = head(body(x))`` with ``head`` an ``nn.Linear(feature_dim, n_classes)``."""

    def __init__(self, body: nn.Module, feature_dim: int, n_classes: int):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be at least 1, got {n_classes}")
        self.body, self.feature_dim = body, feature_dim
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _conv_out(size: int, blocks: int) -> int:
    for b in range(blocks):
        size -= 2
        if b < 2:
            size //= 2
    return size


NORMS = ("instance", "layer")


def _norm(kind: str, filters: int) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")
    return nn.InstanceNorm2d(filters, affine=True) if kind == "instance" else nn.GroupNorm(1, filters)


def conv_net(n_classes: int, image_size: int = 28, blocks: int = 3, filters: int = 256, seed: int = 0,
             norm: str = "instance") -> ZapNet:
    """The official small conv net: ``blocks`` x [conv3x3 (no padding) → InstanceNorm(affine) → ReLU → pool]
    with pooling after the first two blocks only, flattened into a linear head of ``n_classes`` outputs.

    28-pixel inputs and 3 blocks give a 3x3 map (``feature_dim = 9 · filters``). Frati et al. 2024, §4.
    ``norm="layer"`` (GroupNorm with one group) normalises each image over all channels together instead of
    channel by channel: InstanceNorm erases each channel's mean, so colour, a class factor of the synthetic
    world (not of Omniglot's black-and-white strokes), is lost after the first block.
    """
    if blocks < 1 or filters < 1:
        raise ValueError(f"blocks and filters must be at least 1, got {blocks} and {filters}")
    side = _conv_out(image_size, blocks)
    if side < 1:
        raise ValueError(f"image_size {image_size} is too small for {blocks} blocks: use at least 28 pixels")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = [_Centre()]
        for b in range(blocks):
            layers += [nn.Conv2d(3 if b == 0 else filters, filters, 3), _norm(norm, filters), nn.ReLU()]
            if b < 2:
                layers.append(nn.MaxPool2d(2))
        layers.append(nn.Flatten())
        return ZapNet(nn.Sequential(*layers), filters * side * side, n_classes)


def vit_net(n_classes: int, image_size: int = 28, cfg: MicroViTConfig | None = None, seed: int = 0) -> ZapNet:
    """The micro ViT (CLS features, width ``cfg.embed_dim``) with a linear head of ``n_classes`` outputs.

    Default size for zapping: patch 4, width 64, depth 2, 2 heads (28-pixel images give 49 tokens).
    """
    cfg = cfg or MicroViTConfig(patch_size=4, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
    vit = create_micro_vit(cfg, image_size, num_classes=0, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ZapNet(nn.Sequential(_Centre(), vit), cfg.embed_dim, n_classes)


MODELS = {"conv": conv_net, "vit": vit_net}
