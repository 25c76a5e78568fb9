"""H-embedding: place a guide embedding for a new task among the earlier task embeddings by transferability.

Before task ``t`` is trained, each earlier embedding ``e_i`` (i < t) gets an H-score ``H_i``
(:func:`mepo_lab.hembed.hscore.h_score` of the features that the weights generated from ``e_i`` give on
task-t data). Scores become target distances (more transferable = closer) and the guide ``ê`` solves a small
multidimensional-scaling problem::

    min_{ê, s}  Σ_i | s · d_i − ‖ê − e_i‖₂ |            (Adam; s trainable only when there are >= 2 e_i)

Reference: Wu et al., "H-embedding guided hypernetworks for continual learning", NeurIPS 2025,
arXiv 2502.11609; official code viki760/Hembedding_Guided_Hypernet, ``metrics/online_embedding/Hembedding.py``
(``get_Hembedding``) and ``cifar/train/train_Hemb.py``. The ``ahp`` mode is our reading of the final paper's
"AHP normalisation" and is [UNVERIFIED].
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["MODES", "h_embedding", "place_embedding", "target_distances"]

Array = np.ndarray | torch.Tensor | Sequence[float]
MODES = ("direct", "reciprocal", "ahp")


def _vector(x: Array, name: str) -> np.ndarray:
    """Float64 1-D numpy copy of ``x``; ValueError when it is not 1-D, empty or not finite."""
    v = x.detach().cpu().to(torch.float64).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per earlier task), got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"{name} is empty: the H-embedding needs at least one earlier task embedding")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contain NaN or inf: {v.tolist()}; check the H-scores / features")
    return v


def target_distances(scores: Array, mode: str = "direct", eps: float = 0.1) -> np.ndarray:
    """Target distances ``d_i`` from the H-scores ``H_i`` of the earlier tasks (higher score = smaller distance).

    ``direct`` (official default): ``d_i = (max_j H_j − H_i) + ε + min_j H_j``;
    ``reciprocal``: ``d_i = 1 / (H_i − min_j H_j + ε)``;
    ``ahp`` [UNVERIFIED, our interpretation of the paper's "AHP normalisation"]: shift ``h_i = H_i − min_j H_j + ε``
    (> 0), pairwise-ratio matrix ``A_ij = h_i / h_j``, priority vector ``w`` = principal eigenvector of ``A``
    normalised to sum 1, ``d_i = 1 / (n · w_i)`` (so equal scores give distance 1). ``A`` is a consistent
    AHP matrix, hence ``w = h / Σ h`` and ``d_i = mean(h) / h_i``: a rescaled ``reciprocal``.

    With genuine H-scores (>= 0) every ``direct`` distance is >= ε. Returns float64 ``(k,)``.
    Reference: Wu et al., NeurIPS 2025, arXiv 2502.11609; official
    ``metrics/online_embedding/Hembedding.py::get_Hembedding`` (viki760/Hembedding_Guided_Hypernet).
    Raises ValueError for an unknown mode, ε <= 0, or empty, non-1-D or non-finite scores.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive number (official 0.1), got {eps}")
    h = _vector(scores, "scores")
    if mode == "direct":
        return (h.max() - h) + eps + h.min()
    shifted = h - h.min() + eps
    if mode == "reciprocal":
        return 1.0 / shifted
    ratios = shifted[:, None] / shifted[None, :]
    values, vectors = np.linalg.eig(ratios)
    w = np.abs(np.real(vectors[:, int(np.argmax(np.real(values)))]))
    w = w / w.sum()
    return 1.0 / (h.size * w)


def _stack(prev_embs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Earlier embeddings as a detached float32 CPU (k, m) tensor; a sequence of (m,) tensors is stacked."""
    if not isinstance(prev_embs, torch.Tensor):
        if len(prev_embs) == 0:
            raise ValueError("place_embedding needs at least one earlier task embedding, got none")
        prev_embs = torch.stack([torch.as_tensor(e).detach().reshape(-1).cpu() for e in prev_embs])
    e = prev_embs.detach().cpu().to(torch.float32)
    if e.ndim != 2:
        raise ValueError(f"prev_embs must be a (k tasks × m) tensor, got shape {tuple(e.shape)}; "
                         "for one embedding use emb[None]")
    if e.shape[0] == 0:
        raise ValueError("place_embedding needs at least one earlier task embedding, got none")
    if e.shape[1] == 0 or not torch.isfinite(e).all():
        raise ValueError(f"prev_embs must be non-empty and finite, got shape {tuple(e.shape)} with "
                         f"{int((~torch.isfinite(e)).sum())} non-finite values")
    return e


def _placement_loss(e_hat: torch.Tensor, scale: torch.Tensor, prev: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """``Σ_i | s · d_i − ‖ê − e_i‖₂ |``."""
    return (scale * dist - torch.linalg.vector_norm(e_hat[None, :] - prev, dim=1)).abs().sum()


def place_embedding(prev_embs: torch.Tensor | Sequence[torch.Tensor], distances: Array, iters: int = 2000,
                    lr: float = 1e-3, seed: int = 0) -> tuple[torch.Tensor, float, float]:
    """Guide ``ê = argmin_{ê, s} Σ_i | s · d_i − ‖ê − e_i‖₂ |`` by Adam; returns ``(ê, s, final loss)``.

    ``ê`` starts from ``U[0, 1)^m`` drawn with ``torch.Generator().manual_seed(seed)``; the scale ``s`` starts
    at 1 and is optimised (jointly, same Adam) only when there are ``k >= 2`` earlier embeddings, as in the
    official code. ``prev_embs``: (k, m) tensor or a sequence of k (m,) tensors (e.g. a ParameterList), treated
    as constants; ``distances``: (k,) non-negative. The optimisation runs in float32 on the CPU; ``ê`` comes back
    detached, float32, on the device of ``prev_embs``, and the final loss is the objective at the returned ``ê, s``.

    Reference: Wu et al., NeurIPS 2025, arXiv 2502.11609; official ``metrics/online_embedding/Hembedding.py``
    (``get_Hembedding``, Adam lr 1e-3, 2000 iterations; viki760/Hembedding_Guided_Hypernet).
    Raises ValueError for no embeddings, a bad shape, non-finite values, negative distances, a length
    mismatch, ``iters < 0`` or ``lr <= 0``.
    """
    device = prev_embs.device if isinstance(prev_embs, torch.Tensor) else torch.device("cpu")
    prev = _stack(prev_embs)
    d = _vector(distances, "distances")
    if d.size != prev.shape[0]:
        raise ValueError(f"distances and prev_embs must have the same length, got {d.size} and {prev.shape[0]}")
    if (d < 0).any():
        raise ValueError(f"distances must be non-negative, got {d.tolist()}; check the scores and mode")
    if int(iters) != iters or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number (official 1e-3), got {lr}")
    dist = torch.as_tensor(d, dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    e_hat = torch.rand(prev.shape[1], generator=gen).requires_grad_(True)
    scale = torch.ones((), requires_grad=prev.shape[0] >= 2)
    opt = torch.optim.Adam([e_hat, scale] if scale.requires_grad else [e_hat], lr=lr)
    for _ in range(int(iters)):
        opt.zero_grad()
        _placement_loss(e_hat, scale, prev, dist).backward()
        opt.step()
    with torch.no_grad():
        final = float(_placement_loss(e_hat, scale, prev, dist))
    return e_hat.detach().to(device), float(scale.detach()), final


def h_embedding(prev_embs: torch.Tensor | Sequence[torch.Tensor], scores: Array, mode: str = "direct",
                eps: float = 0.1, iters: int = 2000, lr: float = 1e-3, seed: int = 0) -> torch.Tensor:
    """H-embedding guide ``ê_t``: :func:`target_distances` of the scores, then :func:`place_embedding`.

    ``scores[i]`` is the H-score of earlier embedding ``prev_embs[i]`` on the new task's data. Returns the
    detached float32 ``(m,)`` guide (the scale and loss are dropped; call the two steps to keep them).
    Reference: Wu et al., NeurIPS 2025, arXiv 2502.11609; official ``metrics/online_embedding/Hembedding.py``
    (``get_Hembedding``) and ``cifar/train/train_Hemb.py`` (viki760/Hembedding_Guided_Hypernet).
    Raises ValueError as those two functions do, and when scores and prev_embs differ in length.
    """
    distances = target_distances(scores, mode=mode, eps=eps)
    k = _stack(prev_embs).shape[0]
    if distances.size != k:
        raise ValueError(f"scores and prev_embs must have the same length, got {distances.size} and {k}")
    return place_embedding(prev_embs, distances, iters=iters, lr=lr, seed=seed)[0]
