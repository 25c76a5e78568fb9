"""Output alignment as a formula: whitening–colouring of features towards ``Σ_pre``, official and corrected.

For a batch ``F ∈ R^{B×d}`` of final features (``docs/reference/mepo.md#alignment``)::

    Fc = F − μ;   L = chol(C + r I);   Lt = chol(Σ + r I)          # lower factors, r = 1e-4
    official :  A = L⁻¹ Lt      (μ, C = batch mean and covariance, ddof 1)
    corrected:  A = L⁻ᵀ Ltᵀ     (μ, C = running source statistics, or the batch's)
    F̂ = Fc A;   F_out = (1 − α) F + α F̂ / ‖F̂‖   (row-wise norm)

``official`` reproduces ``transform_to_target_covariance`` of ``SunGL001/MePo GCL/models/dualprompt.py``
(FlyGCL copies it). Its ``cov(F̂) = Ltᵀ L⁻ᵀ C L⁻¹ Lt`` is not ``Σ`` (``docs/reference/mepo.md#q1``).
``corrected`` gives ``cov(Fc A) = Aᵀ C A = Lt L⁻¹ C L⁻ᵀ Ltᵀ ≈ Lt Ltᵀ = Σ + r I`` whenever ``C + r I ≈ C``;
with running statistics it also fixes ``#q2``–``#q4`` (rank ≤ B − 1 batch covariances, the crash on
B = 1, predictions depending on batch-mates). Everything is computed in float64; results come back with
the type (numpy / torch), dtype and device of ``feats``. The GCL transforms built on these pieces live in
:mod:`mepo_lab.mepo.alignment`.
"""
from __future__ import annotations

import warnings
from typing import Union

import numpy as np
import torch

from mepo_lab.mepo.covariance import RankDeficientWarning, validate_covariance

__all__ = ["MODES", "whiten_color", "align_features", "batch_moments", "ridge_cholesky", "alignment_matrix",
           "apply_alignment", "mix"]

Array = Union[np.ndarray, torch.Tensor]
MODES = ("official", "corrected")
F64 = torch.float64


def _to_torch64(x: Array, device: torch.device | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        return torch.tensor(np.asarray(x, dtype=np.float64), device=device)
    return x.to(device if device is not None else x.device, F64)  # differentiable (prompt learners)


def _like(y: torch.Tensor, feats: Array) -> Array:
    """Return float64 ``y`` with the type, dtype and device of ``feats``."""
    if isinstance(feats, torch.Tensor):
        return y.to(feats.device, feats.dtype)
    return y.cpu().numpy().astype(np.asarray(feats).dtype, copy=False)


def _check_feats(x: torch.Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"feats must be a 2-D (batch × d) array, got shape {tuple(x.shape)}")


def _check_alpha(alpha: float) -> float:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = no alignment, 1 = aligned only), got {alpha}")
    return float(alpha)


def _too_few_message(mode: str, n: int) -> str:
    if mode == "official":
        return ("the official alignment estimates the covariance from the batch and needs at least 2 "
                f"samples, got {n} — this is the reference code's crash (docs/reference/mepo.md#q3); "
                "use mode='corrected' with a running source covariance")
    return (f"batch statistics need at least 2 samples, got {n}: pass source_mean and source_cov "
            "(running stream statistics, e.g. CorrectedAlignment) to align single samples")


def batch_moments(x: torch.Tensor, mode: str, warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean ``μ`` and covariance ``C = (F − μ)ᵀ(F − μ)/(B − 1)``; B ≥ 2, warns when B ≤ d."""
    b, d = x.shape
    if b < 2:
        raise ValueError(_too_few_message(mode, b))
    if warn and b <= d:
        warnings.warn(f"covariance estimated from B = {b} ≤ d = {d} samples is rank-deficient "
                      f"(rank ≤ {b - 1}); only the ridge makes it positive definite",
                      RankDeficientWarning, stacklevel=4)
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (b - 1)


def ridge_cholesky(cov: torch.Tensor, ridge: float, name: str) -> torch.Tensor:
    """Lower Cholesky factor ``L`` of ``cov + ridge·I`` (``L Lᵀ = cov + ridge·I``); ``cov`` may carry leading
    batch axes ``(..., d, d)``, factorised one matrix at a time (LAPACK), as the 2-D case."""
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    lower, info = torch.linalg.cholesky_ex(cov + ridge * eye)
    if bool((info != 0).any()):
        raise ValueError(f"{name} + {ridge:g}·I is not positive definite (Cholesky failed): "
                         "use a positive ridge and a valid covariance")
    return lower


def alignment_matrix(l_src: torch.Tensor, l_tgt: torch.Tensor, mode: str) -> torch.Tensor:
    """``official``: ``A = L⁻¹ Lt``; ``corrected``: ``A = L⁻ᵀ Ltᵀ`` (triangular solves, no inverse)."""
    if mode == "official":
        return torch.linalg.solve_triangular(l_src, l_tgt, upper=False)
    if mode == "corrected":
        return torch.linalg.solve_triangular(l_src.mT, l_tgt.mT, upper=True)
    raise ValueError(f"unknown alignment mode {mode!r}: choose one of {', '.join(MODES)}")


def apply_alignment(xc: torch.Tensor, l_src: torch.Tensor, l_tgt: torch.Tensor, mode: str) -> torch.Tensor:
    """``xc A`` without forming ``A``: ``(xc L⁻¹) Lt`` or ``(xc L⁻ᵀ) Ltᵀ`` (O(B d²) triangular solve)."""
    if mode == "official":
        return torch.linalg.solve_triangular(l_src, xc, upper=False, left=False) @ l_tgt
    return torch.linalg.solve_triangular(l_src.mT, xc, upper=True, left=False) @ l_tgt.mT


def mix(x: torch.Tensor, xhat: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 − α) x + α x̂/‖x̂‖`` row-wise (an all-zero row of ``x̂`` stays zero instead of NaN)."""
    norm = xhat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(xhat.dtype).tiny)
    return (1.0 - alpha) * x + alpha * (xhat / norm)


# ----------------------------------------------------------------------------- public transforms
def _whiten64(feats: Array, target_cov: Array, mode: str, source_cov: Array | None,
              source_mean: Array | None, ridge: float) -> torch.Tensor:
    if mode not in MODES:
        raise ValueError(f"unknown alignment mode {mode!r}: choose one of {', '.join(MODES)}")
    x = _to_torch64(feats)
    _check_feats(x)
    tgt = _to_torch64(validate_covariance(target_cov, x.shape[1]), x.device)
    if mode == "official" and (source_cov is not None or source_mean is not None):
        raise ValueError("official mode uses batch statistics by definition (the reference code): "
                         "drop source_cov/source_mean or use mode='corrected'")
    if (source_cov is None) != (source_mean is None):
        raise ValueError("source_cov and source_mean go together: pass both (running statistics) "
                         "or neither (batch statistics)")
    if source_cov is None:
        mu, cov = batch_moments(x, mode)
    else:
        cov = _to_torch64(validate_covariance(source_cov, x.shape[1], "source_cov"), x.device)
        mu = _to_torch64(source_mean, x.device).reshape(-1)
        if mu.shape[0] != x.shape[1]:
            raise ValueError(f"source_mean has {mu.shape[0]} entries but the features have d = {x.shape[1]}")
    return apply_alignment(x - mu, ridge_cholesky(cov, ridge, "the source covariance"),
                           ridge_cholesky(tgt, ridge, "target_cov"), mode)


def whiten_color(feats: Array, target_cov: Array, mode: str = "official",
                 source_cov: Array | None = None, source_mean: Array | None = None,
                 ridge: float = 1e-4) -> Array:
    """Centred, whitened-and-coloured features ``F̂ = (F − μ) A`` (before row normalisation).

    ``official``: ``μ, C`` = batch mean/covariance, ``A = chol(C + rI)⁻¹ chol(Σ + rI)``.
    ``corrected``: ``A = chol(C + rI)⁻ᵀ chol(Σ + rI)ᵀ`` with ``μ, C`` = ``source_mean, source_cov``
    when given (then any B works, even 1), else the batch's (B ≥ 2).
    """
    return _like(_whiten64(feats, target_cov, mode, source_cov, source_mean, ridge), feats)


def align_features(feats: Array, target_cov: Array, alpha: float, mode: str = "official",
                   source_cov: Array | None = None, source_mean: Array | None = None,
                   ridge: float = 1e-4) -> Array:
    """MePo output alignment ``F_out = (1 − α) F + α F̂/‖F̂‖`` with ``F̂ = whiten_color(F, ...)``.

    ``α = 0`` returns ``feats`` itself (no computation, no batch-size check; the reference still
    computes F̂ and would crash on B = 1); ``α = 1`` gives unit-norm rows.
    """
    alpha = _check_alpha(alpha)
    if alpha == 0.0:
        validate_covariance(target_cov, feats.shape[1] if len(feats.shape) == 2 else None)
        return feats
    xhat = _whiten64(feats, target_cov, mode, source_cov, source_mean, ridge)
    return _like(mix(_to_torch64(feats), xhat, alpha), feats)
