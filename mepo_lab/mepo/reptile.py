"""The pieces of MePo's inner and outer loop: meta model, masks, head resets (zapping), Reptile step.

Outer (Reptile, Nichol et al. 2018; ``docs/reference/mepo.md#bi-level``), applied in place to every parameter of the
backbone *and* the head::

    θ ← θ0 + η · mean_i(θ_i − θ0)        # one trajectory: θ ← lerp(θ0, θ_end, η)

done with ``torch._foreach_lerp_`` on the live parameters, so the only extra memory is the anchor θ0
(one copy of the parameters) — no per-task deep copies of the state dict.
"""
from __future__ import annotations

import torch
from torch import nn

from mepo_lab.backbones.base import cls_features


class MetaModel(nn.Module):
    """Backbone + the reference's MLP head ``Linear(d, d) → ReLU → Linear(d, C)`` on the CLS feature."""

    def __init__(self, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        d = int(backbone.num_features)
        self.vit = backbone
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(cls_features(self.vit, x))


def reset_head_(head: nn.Module, generator: torch.Generator) -> None:
    """Zap the whole head: Xavier-normal weights, zero biases (the reference's commented-out block).

    ``W ~ N(0, 2 / (fan_in + fan_out))``; drawn from ``generator`` so resumed runs redraw identically.
    """
    with torch.no_grad():
        for layer in head.modules():
            if isinstance(layer, nn.Linear):
                fan_out, fan_in = layer.weight.shape
                std = (2.0 / (fan_in + fan_out)) ** 0.5
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
                layer.bias.zero_()


def masked_logits(z: torch.Tensor, mode: str, allowed: torch.Tensor) -> torch.Tensor:
    """Restrict logits to the ``allowed`` classes (a boolean vector over all classes).

    ``multiply`` (official, ``docs/reference/mepo.md#q8``): ``z ⊙ m`` — blocked logits become exactly 0, stay in the
    softmax denominator with weight e⁰ and get no gradient. ``neg_inf``/``current_task``: ``z + log m``
    — blocked classes vanish from the softmax (the two differ only in which classes are allowed).
    """
    if mode == "multiply":
        return z * allowed.to(z.dtype)
    return z.masked_fill(~allowed, float("-inf"))


def snapshot(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The anchor θ0: one detached copy of the parameters."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def reptile_step_(params: list[torch.Tensor], anchor: list[torch.Tensor], eta: float,
                  ends_mean: list[torch.Tensor] | None = None) -> None:
    """In place: ``θ ← θ0 + η (θ̄ − θ0)`` with ``θ̄`` = the live parameters (or ``ends_mean``).

    With the live parameters as the trajectory end this is ``θ ← lerp(θ, θ0, 1 − η)``; η = 1 keeps the
    end point, η = 0 restores θ0, and the result is linear in η.
    """
    if ends_mean is not None:
        torch._foreach_copy_(params, ends_mean)
    torch._foreach_lerp_(params, anchor, 1.0 - eta)
