"""The micro ViT of the synthetic world: a plain timm ``VisionTransformer`` sized by :class:`MicroViTConfig`.

Patch 8, width 128, depth 4 on 32-pixel images by default (557 k parameters): small enough to pretrain,
refine and prompt on a laptop CPU, built from timm's own class so every timm hook (``forward_features``,
``blocks``, ``patch_embed``) behaves as on ViT-B/16.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from timm.models.vision_transformer import VisionTransformer

from mepo_lab.config import MicroViTConfig


def create_micro_vit(cfg: MicroViTConfig, image_size: int, num_classes: int = 0,
                     seed: int | None = None) -> VisionTransformer:
    """A timm ``VisionTransformer`` sized by ``cfg`` (CLS pooling, post-norm features).

    ``num_classes=0`` gives the head-less backbone (the released MePo checkpoint format);
    ``seed`` makes timm's initialisation reproducible without touching the global RNG.
    """
    if image_size % cfg.patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {cfg.patch_size}")
    if cfg.embed_dim % cfg.num_heads:
        raise ValueError(f"embed_dim {cfg.embed_dim} must be divisible by num_heads {cfg.num_heads}")
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(seed)
        return VisionTransformer(img_size=image_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                 depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                                 num_classes=num_classes, global_pool="token", class_token=True)
