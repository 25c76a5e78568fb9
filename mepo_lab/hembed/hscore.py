"""H-score: how well features ``f`` separate labels ``y``, the transferability signal of the H-embedding.

For ``f ∈ R^{n×d}`` and labels ``y ∈ {classes}^n``::

    Cov(f)  = (f − f̄)ᵀ (f − f̄) / (n − 1)
    g_j     = mean of f over the samples whose label is y_j      (class-conditional mean, one row per sample)
    Cov(g)  = (g − ḡ)ᵀ (g − ḡ) / (n − 1)
    H(f, y) = tr( Cov(f)⁺ · Cov(g) )                             (Moore–Penrose pseudo-inverse, rcond 1e-15)

A large H means the between-class spread fills a large part of the total feature spread (a Fisher-LDA ratio).
Since ``Cov(g) ⪯ Cov(f)`` (law of total covariance) and ``rank Cov(g) ≤ |Y| − 1``,
``0 ≤ H ≤ min(rank Cov(f), |Y| − 1)``; H does not change when ``f`` is multiplied by an invertible matrix.

Reference: Wu et al., "H-embedding guided hypernetworks for continual learning", NeurIPS 2025,
arXiv 2502.11609; official code viki760/Hembedding_Guided_Hypernet, ``metrics/online_embedding/Hscore.py``
(``getDiffNN``), reproduced here in float64 numpy.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["h_score"]

Array = np.ndarray | torch.Tensor


def _as_numpy(x: Array, float64: bool = False) -> np.ndarray:
    """Detached CPU numpy view of a numpy array, torch tensor (any dtype/device) or sequence."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.to(torch.float64) if float64 else x).numpy()
    return np.asarray(x, dtype=np.float64 if float64 else None)


def _centred_cov(x: np.ndarray) -> np.ndarray:
    """Unbiased covariance ``(x − x̄)ᵀ (x − x̄) / (n − 1)`` of the rows of ``x``."""
    xc = x - x.mean(axis=0, keepdims=True)
    return xc.T @ xc / (x.shape[0] - 1)


def _check(f: np.ndarray, y: np.ndarray) -> None:
    """Raise one ValueError naming the first problem with the inputs and how to fix it."""
    if f.ndim != 2:
        raise ValueError(f"features must be a 2-D (n samples × d) array, got shape {f.shape}; "
                         "reshape to (n, -1)")
    if f.shape[1] == 0:
        raise ValueError(f"features must have at least one column (d >= 1), got shape {f.shape}")
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices, got shape {y.shape}; for one-hot labels pass "
                         "labels.argmax(1)")
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {y.dtype}; cast them, e.g. labels.astype(int)")
    if f.shape[0] != y.shape[0]:
        raise ValueError(f"features and labels must have the same length, got {f.shape[0]} and {y.shape[0]}")
    if f.shape[0] < 2:
        raise ValueError(f"H-score needs at least 2 samples for a covariance, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf; check the feature extractor (e.g. a diverged model)")
    if np.unique(y).size < 2:
        raise ValueError("H-score needs at least 2 classes, got labels of a single class; pass data of "
                         "the whole task")


def h_score(features: Array, labels: Array, rcond: float = 1e-15) -> float:
    """H-score ``H(f, y) = tr( Cov(f)⁺ · Cov(g) )``, ``g_j = E[f | y = y_j]``, both covariances centred, /(n − 1).

    ``features``: (n, d) numpy array or torch tensor, any float dtype or device (computed in float64);
    ``labels``: (n,) integer class indices (numpy or torch); ``rcond``: relative cut-off of
    ``numpy.linalg.pinv`` (singular values below ``rcond · σ_max`` are treated as zero, official 1e-15).
    Returns a Python float in ``[0, min(d, |Y| − 1)]`` up to rounding.

    Reference: Wu et al., NeurIPS 2025, arXiv 2502.11609, §H-score; official
    ``metrics/online_embedding/Hscore.py::getDiffNN`` (viki760/Hembedding_Guided_Hypernet).
    Raises ValueError for non-2-D, empty-column or non-finite features, non-integer or non-1-D labels,
    mismatched lengths, fewer than 2 samples or fewer than 2 classes.
    """
    f = _as_numpy(features, float64=True)
    y = _as_numpy(labels)
    _check(f, y)
    g = np.empty_like(f)
    for c in np.unique(y):
        mask = y == c
        g[mask] = f[mask].mean(axis=0)
    cov_f = _centred_cov(f)
    cov_g = _centred_cov(g)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=rcond) @ cov_g))


def chance_level(rank: int, n: int, n_classes: int) -> float:
    """Expected H-score of features of rank ``r`` under labels drawn independently of them: ``r·(|Y| − 1)/(n − 1)``.

    With random labels, ``Cov(f)^{+1/2} Cov(g) Cov(f)^{+1/2}`` is (n − 1)⁻¹ times the projection of the r
    whitened feature directions on the |Y| − 1 label contrasts, whose expected trace is r(|Y| − 1)/(n − 1): an
    H-score is informative only well above this level, i.e. with n ≫ r (our derivation, checked numerically in
    the tests; the H-score is from Wu et al., NeurIPS 2025, arXiv 2502.11609).
    """
    if n < 2 or rank < 0 or n_classes < 2:
        raise ValueError(f"need n >= 2, rank >= 0 and n_classes >= 2, got {n}, {rank}, {n_classes}")
    return rank * (n_classes - 1) / (n - 1)


def block_contrast(matrix: Array, groups: list[str]) -> dict[str, float]:
    """Means of an H-score matrix ``H[i, j]`` (head of task i on data of task j) over its diagonal, over the
    off-diagonal pairs of the same group (``within``) and over pairs of different groups (``across``): a designed
    similarity shows as ``within > across``. NaN where a kind of pair does not exist."""
    h = _as_numpy(matrix, float64=True)
    if h.ndim != 2 or h.shape[0] != h.shape[1] or h.shape[0] != len(groups):
        raise ValueError(f"matrix must be square with one row per group label, got shape {h.shape} and "
                         f"{len(groups)} groups")
    g = np.asarray(groups)
    same, eye = g[:, None] == g[None, :], np.eye(len(g), dtype=bool)
    pick = {"diagonal": eye, "within": same & ~eye, "across": ~same}
    return {k: float(np.nanmean(h[m])) if m.any() else float("nan") for k, m in pick.items()}
