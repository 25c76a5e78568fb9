"""Prompts through a frozen timm ViT: a key–query prompt pool and prompted forward passes.

No ViT code is copied: the passes call the model's own modules (``patch_embed``, ``pos_embed``,
``blocks``, ``norm``) and only insert tokens between them.

* **Prompt tuning** (DualPrompt/MISA, ``docs/reference/misa.md#misa``): before block ``i``, prompt tokens are
  concatenated after the sequence, the block runs on the longer sequence, and the extra tokens are cut
  off again (``x = block(cat(x, p))[:, :N]``). Every prompt token gets the CLS position embedding.
* **L2P**: the selected prompts are inserted once, right after the CLS token, and the classifier reads
  the mean of their outputs after the final norm.
* **Key–query matching**: ``d(q, k) = 1 − cos(q, k)`` with ``q`` the frozen backbone's post-norm CLS
  feature; the ``top_k`` closest keys pick the prompts, and ``mean d`` is the surrogate loss that pulls
  the chosen keys towards the queries.

Reference quirk (``docs/reference/misa.md#routing``): when matching is restricted to a slice of keys ``[s, e)``, the reference
uses the index *within the slice* to gather from the *whole* pool, so training always uses prompt slot
0. ``routing="official"`` reproduces it; ``routing="corrected"`` adds ``s``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ROUTINGS = ("official", "corrected")


class PromptPool(nn.Module):
    """``pool`` prompts of ``length`` tokens with one key each, both initialised U(−1, 1) as the reference."""

    def __init__(self, pool: int, length: int, dim: int, with_keys: bool = True) -> None:
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(pool, length, dim).uniform_(-1, 1))
        self.keys = nn.Parameter(torch.empty(pool, dim).uniform_(-1, 1)) if with_keys else None

    def select(self, query: torch.Tensor, top_k: int = 1, window: tuple[int, int] | None = None,
               routing: str = "official") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(distance (B, k), prompts (B, k, length, dim), slot index (B, k))``.

        ``window=(s, e)`` restricts matching to keys ``s..e-1`` (training on task t in DualPrompt).
        """
        if routing not in ROUTINGS:
            raise ValueError(f"unknown prompt routing {routing!r}: choose one of {', '.join(ROUTINGS)}")
        s, e = window if window is not None else (0, len(self.keys))
        dist = 1 - F.cosine_similarity(query.unsqueeze(1), self.keys[s:e].unsqueeze(0), dim=-1)
        d, idx = dist.topk(min(top_k, e - s), dim=1, largest=False)
        slot = idx + s if routing == "corrected" else idx  # official: slice-relative index on the full pool
        return d, self.prompts[slot], slot


def vit_tokens(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[CLS; patches] + pos_embed`` (after ``pos_drop`` and ``norm_pre``), the input of the blocks."""
    if getattr(vit, "no_embed_class", False) or getattr(vit, "num_prefix_tokens", 1) != 1:
        raise ValueError("prompting needs a ViT with one class token and a position embedding that covers it")
    patches = vit.patch_embed(x)
    cls = vit.cls_token.expand(len(patches), -1, -1)
    return vit.norm_pre(vit.pos_drop(torch.cat([cls, patches], dim=1) + vit.pos_embed))


def cls_position(vit: nn.Module) -> torch.Tensor:
    """The CLS token's position embedding ``(1, 1, D)``, added to every prompt token."""
    return vit.pos_embed[:, :1]


def prompt_tuning_forward(vit: nn.Module, x: torch.Tensor, layer_prompts: dict[int, list[torch.Tensor]]
                          ) -> torch.Tensor:
    """Post-norm CLS feature of ``vit`` with ``layer_prompts[i]`` (each ``(B, L, D)``) prepended to block ``i``."""
    h = vit_tokens(vit, x)
    n, pos = h.shape[1], cls_position(vit)
    for i, block in enumerate(vit.blocks):
        extra = layer_prompts.get(i)
        if extra:
            h = torch.cat([h, *(p + pos for p in extra)], dim=1)
        h = block(h)[:, :n]
    return vit.norm(h)[:, 0]


def l2p_forward(vit: nn.Module, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """L2P's feature: mean over the outputs of the ``prompts`` tokens (``(B, T, D)``, after CLS), post-norm."""
    h = vit_tokens(vit, x)
    prompts = prompts + cls_position(vit)
    h = torch.cat([h[:, :1], prompts, h[:, 1:]], dim=1)
    h = vit.norm(vit.blocks(h))
    return vit.fc_norm(h[:, 1:1 + prompts.shape[1]].mean(dim=1))
