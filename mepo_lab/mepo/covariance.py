"""MePo's meta covariance ``Σ_pre``: the reference geometry of the pretrained feature space ("MetaCov").

With ``P ∈ R^{K×d}`` the class prototypes (mean post-LayerNorm CLS feature per pretraining class),
``Σ = (P − P̄)ᵀ(P − P̄) / (K − 1)``, i.e. ``np.cov(P, rowvar=False)``: a *between-class* covariance,
float64, saved with ``np.save`` (``docs/reference/mepo.md#meta-covariance``; the released files:
``docs/reference/releases.md#covariance-file``). Every covariance is validated (square, right size,
finite, symmetric, PSD) where it is computed, saved, loaded and used: the reference replaces a missing
target by ``torch.randn(768, 768)`` and then crashes in Cholesky (``docs/reference/mepo.md#alignment``).

Aligning features to ``Σ_pre``: :mod:`mepo_lab.mepo.whitening` (the formula, official and corrected) and
:mod:`mepo_lab.mepo.alignment` (the transforms the GCL learners apply).
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch

__all__ = ["RankDeficientWarning", "validate_covariance", "meta_covariance", "save_covariance", "load_covariance"]

Array = Union[np.ndarray, torch.Tensor]
F64 = torch.float64


class RankDeficientWarning(UserWarning):
    """A covariance was estimated from B ≤ d samples: rank ≤ B − 1, only the ridge makes it PD.

    Silence with ``warnings.simplefilter("ignore", RankDeficientWarning)``.
    """


# ----------------------------------------------------------------------------- validation
def validate_covariance(cov: Array, dim: int | None = None, name: str = "target_cov") -> np.ndarray:
    """Check that ``cov`` is a d×d finite, symmetric, PSD matrix; return it as float64 numpy.

    Symmetric: ``max|Σ − Σᵀ| ≤ 1e-8·max|Σ| + 1e-12``; PSD: ``λ_min ≥ −1e-8·max(λ_max, 0)``
    (fast path: ``chol(Σ + 1e-8·max diag·I)`` succeeds; eigenvalues only when it fails).
    Raises one ``ValueError`` per problem, naming it and the fix.
    """
    hint = "it must be a covariance, e.g. from meta_covariance(prototypes)"
    m = _to_numpy64(cov)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {m.shape}: {hint}")
    if dim is not None and m.shape[0] != dim:
        raise ValueError(f"{name} is {m.shape[0]}×{m.shape[0]} but the features have d = {dim}: "
                         f"use the covariance computed with the same backbone (d×d)")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or inf: {hint}")
    scale = float(np.abs(m).max(initial=0.0))
    asym = float(np.abs(m - m.T).max(initial=0.0))
    if asym > 1e-8 * scale + 1e-12:
        raise ValueError(f"{name} is not symmetric (max |Σ − Σᵀ| = {asym:.3g}): {hint}")
    lowest = _smallest_eigenvalue(torch.from_numpy(m))
    if lowest is not None:
        raise ValueError(f"{name} is not positive semi-definite (smallest eigenvalue {lowest:.3g}): {hint}")
    return m


def _smallest_eigenvalue(m: torch.Tensor) -> float | None:
    """``None`` if ``m`` is PSD within ``1e-8·λ_max``, else its smallest eigenvalue (torch LAPACK only)."""
    if m.numel() == 0:
        return None
    shift = 1e-8 * float(m.diagonal().max().clamp_min(0.0)) + 1e-300
    if int(torch.linalg.cholesky_ex(m + shift * torch.eye(len(m), dtype=m.dtype))[1]) == 0:
        return None
    eig = torch.linalg.eigvalsh(m)
    return None if eig[0] >= -1e-8 * max(float(eig[-1]), 0.0) else float(eig[0])


def meta_covariance(prototypes: Array) -> np.ndarray:
    """Prototype covariance ``Σ = (P − P̄)ᵀ(P − P̄)/(K − 1)`` = ``np.cov(P, rowvar=False)``, float64 d×d."""
    p = _to_numpy64(prototypes)
    if p.ndim != 2:
        raise ValueError(f"prototypes must be a 2-D (classes × d) array, got shape {p.shape}")
    if p.shape[0] < 2:
        raise ValueError(f"meta_covariance needs at least 2 prototypes (rows), got {p.shape[0]}")
    if not np.isfinite(p).all():
        raise ValueError("prototypes contain NaN or inf: check the feature extraction")
    return np.atleast_2d(np.cov(p, rowvar=False))


def save_covariance(path: str | os.PathLike, cov: Array) -> None:
    """Validate and ``np.save`` a d×d float64 covariance (the released ``cov_matrix*.npy`` format)."""
    np.save(path, validate_covariance(cov, name="the covariance to save"))


def load_covariance(path: str | os.PathLike, dim: int | None = None) -> np.ndarray:
    """``np.load`` a covariance ``.npy`` and validate it (the error names the file)."""
    return validate_covariance(np.load(path), dim, name=f"the covariance in {os.fspath(path)!r}")


def _to_numpy64(x: Array) -> np.ndarray:
    """A float64 numpy copy of an array or tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", F64).numpy().copy()
    return np.array(x, dtype=np.float64)
