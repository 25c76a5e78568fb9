"""How many test images one evaluation pass takes: sized from free device memory on a GPU (issue 10).

The Si-Blurry scripts evaluate in fixed batches (128; 64 in the ``colab`` preset), sized for the smallest GPU
they meet. On a large GPU that leaves most of the memory idle and the evaluation launch-bound. For a learner
whose scores do not depend on batch-mates (:attr:`Learner.batch_independent`; not under the official
batch-statistics alignment), the batch size changes nothing but speed, so on CUDA (``gcl.eval_batch_auto``)
it is chosen from the memory free at the start of the run:

``n = largest power of two with n · bytes_per_image ≤ share · free``, clipped to ``[gcl.eval_batch_size, cap]``,

where ``bytes_per_image`` is :func:`activation_bytes`, an upper estimate of one image's live tensors in a
no-grad ViT pass. An out-of-memory error at an automatic size halves it and repeats the evaluation, down to
``gcl.eval_batch_size``. Learners on cached features keep their rule (16,384 rows when batch-independent);
on the CPU and for batch-dependent learners the configured size is used unchanged.
"""
from __future__ import annotations

import torch

from mepo_lab.config import GCLConfig
from mepo_lab.protocols.learner import Learner

CAP = 1024  # beyond this a ViT-B/16 pass is compute-bound: larger batches only hold more memory
FEATURE_BATCH = 16384  # rows per pass for batch-independent learners on cached features


def activation_bytes(vit: torch.nn.Module, extra_tokens: int = 32, bytes_per: int = 4) -> int:
    """Upper estimate of one image's memory in a no-grad pass of a timm ViT, in bytes.

    ``bytes_per · (T · (6 D + 2 D_mlp) + H · T² + 6 P²)`` with ``T`` tokens (patches, prefix tokens and up to
    ``extra_tokens`` prompt tokens), width ``D``, MLP width ``D_mlp``, ``H`` heads and ``P``-pixel inputs: the
    residual stream, norm output, q/k/v and attention output (``6 D``), the MLP's hidden activation before and
    after GELU (``2 D_mlp``), an unfused attention matrix (``H · T²``), and the float input with its resize
    intermediate (``6 P²``). fp32 throughout (autocast keeps LayerNorm in fp32), so an over-estimate under bf16.
    """
    embed, block = vit.patch_embed, vit.blocks[0]
    tokens = int(embed.num_patches) + int(getattr(vit, "num_prefix_tokens", 1)) + extra_tokens
    width, hidden, heads = int(vit.embed_dim), int(block.mlp.fc1.out_features), int(block.attn.num_heads)
    pixels = int(embed.img_size[0]) * int(embed.img_size[1])
    return bytes_per * (tokens * (6 * width + 2 * hidden) + heads * tokens ** 2 + 6 * pixels)


def fit_batch(free_bytes: int, per_item: int, floor: int, cap: int = CAP, share: float = 0.5) -> int:
    """Largest power of two ``n`` with ``n · per_item ≤ share · free_bytes``, clipped to ``[floor, max(floor, cap)]``."""
    if per_item <= 0:
        raise ValueError(f"per_item must be positive, got {per_item}")
    room = int(share * free_bytes) // per_item
    n = 1 << (room.bit_length() - 1) if room >= 1 else 1
    return max(floor, min(n, cap))


class EvalBatch:
    """The evaluation batch size of one run: see the module docstring. ``auto`` tells whether it may halve."""

    def __init__(self, learner: Learner, cfg: GCLConfig, device: torch.device) -> None:
        self.floor, self.size, self.auto = cfg.eval_batch_size, cfg.eval_batch_size, False
        if not learner.batch_independent:
            return
        if learner.input_kind == "features":
            self.size = max(self.size, FEATURE_BATCH)
            return
        vit = learner.eval_backbone
        if cfg.eval_batch_auto and device.type == "cuda" and vit is not None and hasattr(vit, "patch_embed"):
            free, _ = torch.cuda.mem_get_info(device)
            self.size = fit_batch(free, activation_bytes(vit), self.floor, CAP)
            self.auto = self.size > self.floor

    def halve(self) -> bool:
        """After an out-of-memory error: halve an automatic size (not below the floor); False when it cannot."""
        if not self.auto or self.size <= self.floor:
            return False
        self.size = max(self.floor, self.size // 2)
        return True
