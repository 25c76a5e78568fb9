"""The target network whose weights the hypernetwork generates: a 2-layer MLP head on frozen features.

The official main networks take every weight from outside (von Oswald et al., "Continual learning with
hypernetworks", ICLR 2020, arXiv 1906.00695; Wu et al., "H-embedding guided hypernetworks for continual learning",
NeurIPS 2025, arXiv 2502.11609, official code viki760/Hembedding_Guided_Hypernet ``mnets/mlp.py``,
``mnets/resnet.py``). Here the generated part is a small head on frozen backbone features ``x``::

    a = relu(x W₁ᵀ + b₁)          (the hidden activations: the features the H-score is computed on)
    y = a W₂ᵀ + b₂                (logits)

with ``weights = [W₁ (hidden, d_in), b₁ (hidden,), W₂ (n_out, hidden), b₂ (n_out,)]`` in the order of
:func:`mlp_shapes`, which is the ``target_shapes`` to build the hypernetwork with.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["mlp_features", "mlp_forward", "mlp_shapes"]


def mlp_shapes(d_in: int, hidden: int, n_out: int) -> list[tuple[int, ...]]:
    """``[(hidden, d_in), (hidden,), (n_out, hidden), (n_out,)]``: the shapes of ``W₁, b₁, W₂, b₂``.

    There are ``hidden·(d_in + 1) + n_out·(hidden + 1)`` weights (von Oswald et al. 2020; main-network weight
    layout of the official ``mnets/mlp.py``).
    """
    for name, value in (("d_in", d_in), ("hidden", hidden), ("n_out", n_out)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return [(int(hidden), int(d_in)), (int(hidden),), (int(n_out), int(hidden)), (int(n_out),)]


def _check(weights: Sequence[torch.Tensor], x: torch.Tensor) -> None:
    if len(weights) != 4:
        raise ValueError(f"weights must be [W1, b1, W2, b2] (see mlp_shapes), got {len(weights)} tensors")
    w1, b1, w2, b2 = weights
    if w1.ndim != 2 or w2.ndim != 2 or b1.ndim != 1 or b2.ndim != 1:
        raise ValueError("weights must be [W1 (hidden, d_in), b1 (hidden,), W2 (n_out, hidden), b2 (n_out,)], got "
                         f"shapes {[tuple(w.shape) for w in weights]}")
    hidden, d_in = w1.shape
    if b1.shape[0] != hidden or w2.shape[1] != hidden or b2.shape[0] != w2.shape[0]:
        raise ValueError("inconsistent weight shapes: expected [W1 (h, d), b1 (h,), W2 (o, h), b2 (o,)], got "
                         f"{[tuple(w.shape) for w in weights]}")
    if x.ndim < 1 or x.shape[-1] != d_in:
        raise ValueError(f"x must have shape (..., d_in) with d_in={d_in} (the columns of W1), got {tuple(x.shape)}")


def mlp_features(weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``relu(x W₁ᵀ + b₁)``: the hidden activations of the generated head, shape (..., hidden).

    These are the "penultimate features" on which the H-score of a generated network is computed (Wu et al.
    2025, official ``metrics/online_embedding/Hembedding.py``, features from ``return_features=True``).
    """
    _check(weights, x)
    w1, b1 = weights[0], weights[1]
    return F.relu(F.linear(x, w1, b1))


def mlp_forward(weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``relu(x W₁ᵀ + b₁) W₂ᵀ + b₂``: logits of the generated 2-layer head, shape (..., n_out).

    Differentiable in ``weights``, so the task loss reaches the hypernetwork (von Oswald et al. 2020, Sec. 3).
    """
    _check(weights, x)
    return F.linear(F.relu(F.linear(x, weights[0], weights[1])), weights[2], weights[3])
