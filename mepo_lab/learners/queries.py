"""The prompt learners' evaluation queries, computed once: per run (:class:`QueryCache`) or per backbone (:func:`query_bank`).

L2P, DualPrompt and MISA pick their prompts with a *query*, the frozen backbone's CLS feature
``q = norm(ViT(x))[:, 0]`` of the (unaugmented) test image. The backbone never changes during a run, so the
query of a test image is the same at every one of the ~50 evaluations. The reference code recomputes it each
time, so half of all evaluation forward passes are repeated work. A :class:`QueryCache` computes each test
image's query the first time the image is evaluated and reuses it. A :func:`query_bank` holds the queries of
the whole test set for a backbone, dataset, preprocessing and precision on disk, so the runs of every seed
and prompt learner share them.

The counters (:data:`PASSES`, in every image learner's record under ``meta["passes"]``) count the backbone's
forward and backward passes by purpose, in images: training queries, prompted training forwards and their
backwards, evaluation queries (only those computed) and prompted evaluation forwards.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mepo_lab import paths

PASSES = ("train_query", "train_forward", "train_backward", "eval_query", "eval_forward")


class QueryCache:
    """Queries of test rows: from ``bank`` (``(N_test, d)``) when given, else computed once per row and kept."""

    def __init__(self, bank: torch.Tensor | None, device: torch.device) -> None:
        self.bank = None if bank is None else bank.to(device)
        self.device = device
        self.values: torch.Tensor | None = None
        self.have = torch.zeros(0, dtype=torch.bool, device=device)

    def get(self, rows: np.ndarray, x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
            ) -> tuple[torch.Tensor, int]:
        """``(queries of rows, how many had to be computed)``; ``x`` are the rows' normalised images."""
        index = torch.as_tensor(np.asarray(rows, np.int64), device=self.device)
        if self.bank is not None:
            if int(index.max()) >= len(self.bank):
                raise ValueError(f"the query bank has {len(self.bank)} rows but test row {int(index.max())} was asked "
                                 "for: build the bank on the same test set")
            return self.bank[index], 0
        self._grow(int(index.max()) + 1)
        missing = ~self.have[index]
        n = int(missing.sum())
        if n:
            fresh = compute(x[missing])
            if self.values is None:  # the first queries fix the width and dtype (fp32, or the autocast dtype)
                self.values = torch.zeros(len(self.have), fresh.shape[1], dtype=fresh.dtype, device=self.device)
            self.values[index[missing]] = fresh
            self.have[index[missing]] = True
        return self.values[index], n

    def _grow(self, size: int) -> None:
        if size <= len(self.have):
            return
        size = max(size, 2 * len(self.have))
        have = torch.zeros(size, dtype=torch.bool, device=self.device)
        have[:len(self.have)] = self.have
        if self.values is not None:
            values = torch.zeros(size, self.values.shape[1], dtype=self.values.dtype, device=self.device)
            values[:len(self.values)] = self.values
            self.values = values
        self.have = have


def bank_key(weights_hash: str, dataset: str, preprocess_id: str, precision: str, n: int) -> str:
    """Cache key of a query bank: backbone, test set, preprocessing, precision and size."""
    blob = f"{weights_hash}|{dataset}|{preprocess_id}|{precision}|{n}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def query_bank(vit: torch.nn.Module, images, preprocess, key: str, *, device: torch.device | str = "cpu",
               amp: bool = True, batch_size: int = 256, data_home: str | Path | None = None) -> torch.Tensor:
    """Queries ``norm(ViT(pre(x)))[:, 0]`` of every test image (uint8 ``(N, 3, H, W)``), cached on disk under ``key``.

    Computed once per backbone, test set, preprocessing and precision (:func:`bank_key`) with the learners'
    own query path (autocast on a GPU, fp32 on the CPU); :class:`QueryCache` serves it to every run.
    """
    from mepo_lab.backbones.base import cls_features
    from mepo_lab.device import Amp
    from mepo_lab.loading import rows

    path = paths.subdir("queries", data_home) / f"{key}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    device = torch.device(device)
    if next(vit.parameters()).device != device:  # leave the caller's model where it is
        vit = copy.deepcopy(vit).to(device)
    training, amp_ctx, n, out = vit.training, Amp(device, amp), len(images), []
    vit.eval()
    for s in range(0, n, batch_size):
        x = preprocess(rows(images, np.arange(s, min(s + batch_size, n))).to(device))
        with amp_ctx.autocast():
            out.append(cls_features(vit, x).cpu())
    vit.train(training)
    bank = torch.cat(out)
    paths.atomic_write(path, lambda h: torch.save(bank, h))
    return bank
