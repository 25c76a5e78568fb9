"""MePo output alignment as the GCL learners apply it: transforms with state, official and corrected.

A learner calls ``transform(x)`` on every feature batch (training and evaluation) and reads
``transform.batch_dependent`` and ``transform.name``; whoever drives training calls
``transform.update(x)`` on each *training* batch (a no-op for the official transform). Formulas and
references: :mod:`mepo_lab.mepo.whitening` (``docs/reference/mepo.md#alignment``, ``#q1``–``#q4``).
:func:`make_alignment` builds one from a mode name (:data:`ALIGNMENTS`).

* :class:`OfficialAlignment` — the reference: batch mean/covariance of each batch, ``A = L⁻¹ Lt``.
  A batch's output depends on its batch-mates; a batch of one raises (or is skipped, as FlyGCL does).
* :class:`CorrectedAlignment` — ``A = L⁻ᵀ Ltᵀ`` from running float64 statistics of the training
  stream (Chan et al.'s pairwise mean/scatter update), frozen during evaluation, so each sample's
  output ignores its batch-mates and B = 1 works. ``A`` is cached and recomputed lazily, at most
  once per ``update``. Fallback before 2 training samples have been seen: no alignment (the input is
  returned unchanged), since no covariance can be estimated yet.

Both warn (:class:`~mepo_lab.mepo.covariance.RankDeficientWarning`) at most once per instance when a
covariance comes from ≤ d samples.
"""
from __future__ import annotations

import warnings

import torch

from mepo_lab.mepo.covariance import RankDeficientWarning, validate_covariance
from mepo_lab.mepo.whitening import (
    F64,
    _check_alpha,
    _like,
    _to_torch64,
    alignment_matrix,
    apply_alignment,
    batch_moments,
    mix,
    ridge_cholesky,
)

__all__ = ["ALIGNMENTS", "OfficialAlignment", "CorrectedAlignment", "make_alignment"]

#: Alignment modes a GCL run can use: none, the reference's formula, or the corrected one.
ALIGNMENTS = ("none", "official", "corrected")


class _Alignment:
    """Shared part: validated target, α, ridge, and ``Lt = chol(Σ + rI)`` cached per device."""

    name = "alignment"
    batch_dependent = False

    def __init__(self, target_cov, alpha: float, ridge: float = 1e-4) -> None:
        self.target_cov = torch.from_numpy(validate_covariance(target_cov))
        self.dim = self.target_cov.shape[0]
        self.alpha, self.ridge = _check_alpha(alpha), float(ridge)
        self._l_tgt: dict[torch.device, torch.Tensor] = {}
        self._warned = False

    def _target_factor(self, device: torch.device) -> torch.Tensor:
        if device not in self._l_tgt:
            lt = ridge_cholesky(self.target_cov, self.ridge, "target_cov")
            self._l_tgt[device] = lt.to(device)
        return self._l_tgt[device]

    def _input(self, x) -> torch.Tensor:
        f = _to_torch64(x)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (B, {self.dim}), got {tuple(f.shape)}")
        return f

    def _warn_once(self, n: int, stacklevel: int = 3) -> None:
        if n <= self.dim and not self._warned:
            self._warned = True
            warnings.warn(f"{self.name} alignment: covariance estimated from {n} ≤ d = {self.dim} "
                          "samples is rank-deficient; only the ridge makes it positive definite "
                          "(warned once per transform)", RankDeficientWarning, stacklevel=stacklevel)

    def update(self, x) -> None:
        """Record a training batch (no-op unless the transform keeps running statistics)."""

    def describe(self) -> dict:
        """JSON-ready summary for the results file."""
        return {"name": self.name, "alpha": self.alpha, "ridge": self.ridge, "dim": self.dim,
                "batch_dependent": self.batch_dependent}


class OfficialAlignment(_Alignment):
    """Reference alignment: per-batch ``μ, C``; ``F̂ = (F − μ) chol(C + rI)⁻¹ chol(Σ + rI)``.

    ``on_singleton="raise"`` (default) reproduces the reference crash on B ≤ 1 as a clear
    ``ValueError``; ``"skip"`` returns such a batch unaligned (FlyGCL's guard).
    """

    name = "official"
    batch_dependent = True

    def __init__(self, target_cov, alpha: float, ridge: float = 1e-4,
                 on_singleton: str = "raise") -> None:
        if on_singleton not in ("raise", "skip"):
            raise ValueError(f"on_singleton must be 'raise' or 'skip', got {on_singleton!r}")
        super().__init__(target_cov, alpha, ridge)
        self.on_singleton = on_singleton

    def __call__(self, x):
        """``(1 − α) F + α F̂/‖F̂‖`` with this batch's statistics."""
        if self.alpha == 0.0:
            return x
        f = self._input(x)
        if f.shape[0] < 2 and self.on_singleton == "skip":
            return x
        mu, cov = batch_moments(f, "official", warn=False)
        self._warn_once(f.shape[0])
        l_src = ridge_cholesky(cov, self.ridge, "the batch covariance")
        xhat = apply_alignment(f - mu, l_src, self._target_factor(f.device), "official")
        return _like(mix(f, xhat, self.alpha), x)

    def describe(self) -> dict:
        return {**super().describe(), "statistics": "batch", "on_singleton": self.on_singleton,
                "formula": "A = L^-1 Lt"}


class CorrectedAlignment(_Alignment):
    """Corrected alignment, running training statistics: ``F̂ = (F − μ_s) chol(C_s + rI)⁻ᵀ chol(Σ + rI)ᵀ``.

    ``update(x)`` merges a training batch into ``(count, μ_s, M2 = Σ (f − μ_s)(f − μ_s)ᵀ)``;
    ``C_s = M2 / (count − 1)``. ``n_recomputes`` counts the (lazy) rebuilds of ``A``.
    """

    name = "corrected"
    batch_dependent = False

    def __init__(self, target_cov, alpha: float, ridge: float = 1e-4) -> None:
        super().__init__(target_cov, alpha, ridge)
        self.count = 0
        self.mean = torch.zeros(self.dim, dtype=F64)
        self.m2 = torch.zeros(self.dim, self.dim, dtype=F64)
        self.n_recomputes = 0
        self._version = 0
        self._cache: dict[torch.device, tuple[int, torch.Tensor, torch.Tensor]] = {}

    @property
    def cov(self) -> torch.Tensor:
        """Running covariance ``M2 / (count − 1)`` (ddof 1); needs ``count ≥ 2``."""
        if self.count < 2:
            raise ValueError(f"the running covariance needs at least 2 samples, got {self.count}")
        return self.m2 / (self.count - 1)

    @torch.no_grad()
    def update(self, x) -> None:
        """Merge batch ``x`` (Chan et al.): ``δ = μ_b − μ``, ``μ += δ n_b/(n + n_b)``,
        ``M2 += M2_b + δδᵀ n n_b/(n + n_b)``, ``n += n_b`` (float64, detached, kept on the CPU)."""
        f = self._input(x.detach() if isinstance(x, torch.Tensor) else x).cpu()
        nb = f.shape[0]
        if nb == 0:
            return
        mb = f.mean(0)
        fc = f - mb
        delta, n = mb - self.mean, self.count + nb
        self.m2 += fc.T @ fc + torch.outer(delta, delta) * (self.count * nb / n)
        self.mean = self.mean + delta * (nb / n)   # new tensor: never mutate one handed out
        self.count, self._version = n, self._version + 1

    def _matrix(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ_s, A)`` on ``device``, rebuilt only when the statistics changed."""
        cached = self._cache.get(device)
        if cached is None or cached[0] != self._version:
            self._warn_once(self.count, stacklevel=4)
            l_src = ridge_cholesky(self.cov, self.ridge, "the running covariance")
            a = alignment_matrix(l_src, self._target_factor(torch.device("cpu")), "corrected")
            cached = (self._version, self.mean.to(device), a.to(device))
            self._cache[device] = cached
            self.n_recomputes += 1
        return cached[1], cached[2]

    def __call__(self, x):
        """``(1 − α) F + α F̂/‖F̂‖`` with the current running statistics (input unchanged if < 2 seen)."""
        if self.alpha == 0.0 or self.count < 2:
            return x
        f = self._input(x)
        mu, a = self._matrix(f.device)
        return _like(mix(f, (f - mu) @ a, self.alpha), x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors: ``count``, ``mean``, ``m2`` and the ``target_cov`` they belong to."""
        return {"count": torch.tensor(self.count), "mean": self.mean.clone(), "m2": self.m2.clone(),
                "target_cov": self.target_cov.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore running statistics saved by :meth:`state_dict` (same target covariance required)."""
        if not torch.equal(state["target_cov"].to(F64), self.target_cov):
            raise ValueError("the state was saved with a different target covariance")
        self.count = int(state["count"])
        self.mean = state["mean"].to("cpu", F64).clone()
        self.m2 = state["m2"].to("cpu", F64).clone()
        self._version += 1

    def describe(self) -> dict:
        return {**super().describe(), "statistics": "running (training stream)",
                "count": self.count, "fallback": "identity until 2 training samples",
                "formula": "A = L^-T Lt^T"}


def make_alignment(mode: str, alpha: float, covariance, ridge: float = 1e-4,
                   official_singleton: str = "raise") -> _Alignment | None:
    """The feature transform of an alignment ``mode`` (:data:`ALIGNMENTS`; ``None`` for ``none``), fresh per run.

    ``covariance`` is the target ``Σ_pre`` (d×d). ``official_singleton``: what the official transform does
    with a batch of one sample — ``raise`` (the reference's crash, as a clear error) or ``skip`` (leave it
    unaligned, as FlyGCL does).
    """
    if mode == "none":
        return None
    if mode not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {mode!r}: choose one of {', '.join(ALIGNMENTS)}")
    if covariance is None:
        raise ValueError(f"alignment {mode!r} needs the meta covariance of the backbone "
                         "(mepo_lab.registry.meta_covariance_of) or covariance=...")
    if mode == "official":
        return OfficialAlignment(covariance, alpha, ridge, on_singleton=official_singleton)
    return CorrectedAlignment(covariance, alpha, ridge)
