"""Target networks whose weights the hypernetwork generates, behind one interface for the strategy.

A target turns images into what it trains on once (``prepare``: frozen features, or the images themselves),
and maps generated weights + prepared inputs to logits (``logits``) or to penultimate features (``hidden``,
what the H-score of Wu et al., NeurIPS 2025, arXiv 2502.11609 is computed on). ``shapes`` is the list of
generated tensors the hypernetwork must produce. Three targets:

* ``mlp`` — a 2-layer head on frozen backbone features (the CPU default; :mod:`mepo_lab.hembed.target`);
* ``lora`` — a frozen timm ViT with a rank-``r`` LoRA on the ``qkv`` projections of its last blocks and a linear
  head, LoRA factors and head generated (Hu et al., ICLR 2022, arXiv 2106.09685; our reading of the final
  paper's "PEFT-friendly" setting, whose exact placement is not published);
* ``resnet32`` — the official ResNet-32 with every weight generated (:mod:`mepo_lab.hembed.resnet`).

Generated values ``w`` are used as ``offset + gain·w`` with ``gain = 1/sqrt(fan_in)`` for matrices and
convolutions (fan-in of that tensor), ``0.1`` for vectors, and ``offset = 1`` for normalisation scales (else 0):
a fixed reparametrisation standing in for HyperCL's hypernetwork initialisation, so that a hypernetwork with
PyTorch's default initialisation starts from sensibly scaled target weights.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from mepo_lab.backbones.base import cls_features
from mepo_lab.hembed.target import mlp_features, mlp_forward, mlp_shapes


class MlpTarget:
    """``mlp``: features ``f = frozen(x)`` once, then ``relu(f W₁ᵀ + b₁) W₂ᵀ + b₂`` with generated W, b."""

    def __init__(self, featurize: Callable[[torch.Tensor], torch.Tensor], d_in: int, hidden: int, n_out: int):
        self.featurize, self.shapes = featurize, mlp_shapes(d_in, hidden, n_out)
        self.gains = [1 / math.sqrt(d_in)] * 2 + [1 / math.sqrt(hidden)] * 2
        self.offsets = [0.0] * 4

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen features of float images in [0, 1]."""
        return self.featurize(x)

    def logits(self, weights: Sequence[torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Logits of the generated head."""
        return mlp_forward(weights, inputs)

    def hidden(self, weights: Sequence[torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Hidden activations of the generated head."""
        return mlp_features(weights, inputs)


class ModuleTarget:
    """A module whose trainable parameters are generated: ``module(x, features_only=...)`` via
    ``torch.func.functional_call`` with the generated values in place of those parameters (frozen ones stay)."""

    def __init__(self, module: nn.Module, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.module = module
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the target module has no trainable parameter to generate")
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.gains = [1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.1 for _, p in named]  # p[0]: one fan-in
        self.offsets = [1.0 if p.ndim == 1 and _is_norm_scale(module, n) else 0.0 for n, p in named]
        self._prepare = prepare or (lambda x: x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What the module trains on (the images by default)."""
        return self._prepare(x)

    def _call(self, weights: Sequence[torch.Tensor], inputs: torch.Tensor, features_only: bool) -> torch.Tensor:
        return functional_call(self.module, dict(zip(self.names, weights)), (inputs,),
                               {"features_only": features_only})

    def logits(self, weights: Sequence[torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Logits with the generated parameters."""
        return self._call(weights, inputs, False)

    def hidden(self, weights: Sequence[torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Penultimate features with the generated parameters."""
        return self._call(weights, inputs, True)


def _is_norm_scale(module: nn.Module, name: str) -> bool:
    owner, _, leaf = name.rpartition(".")
    sub = module.get_submodule(owner) if owner else module
    return leaf == "weight" and isinstance(sub, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm))


class LoRAQKV(nn.Module):
    """``qkv(x) = x Wᵀ + b + (x Aᵀ) Bᵀ · scale`` with ``W, b`` frozen and ``A (r, d)``, ``B (3d, r)`` the trainable
    (here: generated) LoRA factors (Hu et al. 2022)."""

    def __init__(self, qkv: nn.Linear, rank: int, scale: float = 1.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {rank}")
        self.base, self.scale = qkv.requires_grad_(False), scale
        self.lora_a = nn.Parameter(torch.zeros(rank, qkv.in_features))
        self.lora_b = nn.Parameter(torch.zeros(qkv.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T) @ self.lora_b.T * self.scale


class LoRAViT(nn.Module):
    """A frozen timm ViT with :class:`LoRAQKV` in its last ``blocks`` blocks and a linear head on the CLS feature.

    Input: float images in [0, 1], resized to the ViT's input size and normalised with ``mean``/``std``.
    ``forward(x, features_only=True)`` returns the post-norm CLS feature (the H-score's features)."""

    def __init__(self, vit: nn.Module, n_out: int, rank: int = 4, blocks: int = 1,
                 mean: Sequence[float] = (0.5,) * 3, std: Sequence[float] = (0.5,) * 3, precision: str = "fp32"):
        super().__init__()
        depth = len(vit.blocks)
        if not 1 <= blocks <= depth:
            raise ValueError(f"lora blocks must be in [1, {depth}] for this {depth}-block ViT, got {blocks}")
        self.vit = vit.requires_grad_(False).eval()
        for block in vit.blocks[depth - blocks:]:
            block.attn.qkv = LoRAQKV(block.attn.qkv, rank)
        self.head = nn.Linear(int(vit.num_features), n_out)
        self.size, self.precision = tuple(vit.patch_embed.img_size), precision
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, features_only: bool = False) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.precision == "bf16" and x.is_cuda):
            f = cls_features(self.vit, (x - self.mean) / self.std).float()
        return f if features_only else self.head(f)
