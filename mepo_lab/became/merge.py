"""BECAME's closed-form merge: the coefficient ``α*`` and the merged parameters ``θ_GP + α*Δ``.

Li et al., "BECAME: BayEsian Continual Learning with Adaptive Model MErging", ICML 2025, arXiv 2504.02666;
official code ``GPM-based/fisher.py::compute_fisher_merging`` of the BECAME repository (limei0818/BECAME).

With ``θ_GP`` the stage-1 (gradient-projected) model, ``θ_FT`` the stage-2 (unconstrained) model,
``Δ = θ_FT − θ_GP``, ``F_new`` the diagonal Fisher of the current task and ``F_old`` the accumulated Fisher of
the earlier tasks, summed over every parameter element::

    α* = Σ F_new ⊙ Δ²  /  Σ (F_new + F_old) ⊙ Δ²   ∈ [0, 1],        θ = θ_GP + α* Δ

Where ``α*`` comes from (Laplace approximation). Model what the earlier tasks know as a Gaussian centred
on ``θ_GP`` (projection kept their losses nearly unchanged, so ``θ_GP`` stands in for their mode) with
precision ``F_old``, and what the current task wants as a Gaussian centred on its own optimum ``θ_FT`` with
precision ``F_new``. The log-posterior after the task is the sum of the two log-densities. Search only along
the segment ``θ(α) = θ_GP + αΔ``: there ``θ(α) − θ_GP = αΔ`` and ``θ(α) − θ_FT = (α − 1)Δ``, so, up to a
constant, the negative log-posterior is the one-dimensional parabola

    L(α) = ½ α² a + ½ (1 − α)² b,      a = Δᵀ F_old Δ,   b = Δᵀ F_new Δ      (diagonal F: a = Σ F_old ⊙ Δ²).

It is the product of two 1-D Gaussians, one at ``α = 0`` with precision ``a`` and one at ``α = 1`` with
precision ``b``; ``L'(α) = α a − (1 − α) b = 0`` gives the precision-weighted mean ``α* = b / (a + b)``, which
lies in [0, 1] because ``a, b ≥ 0``. The new task pulls towards ``θ_FT`` only as hard as its curvature along
``Δ`` is large compared with the old tasks' curvature along the same direction.

The 0/0 case (``a + b = 0``: ``Δ = 0`` everywhere, or both Fishers are zero wherever ``Δ ≠ 0``) returns
**0.0**, i.e. keep ``θ_GP``. When ``Δ = 0`` every α gives the same model, so any value is correct and 0 is the
honest "nothing was merged". When ``Δ ≠ 0`` but neither task has curvature along it, the Laplace picture
cannot tell the points of the segment apart; moving without evidence risks the earlier tasks, which stage 1
protected, so the conservative choice is the stability anchor ``θ_GP`` — the same answer as the limit
"``F_new = 0`` ⇒ ``α* = 0``". The official code divides anyway and gets NaN. Only an exact zero triggers the
rule: ``α*`` is scale-free, so a tiny but positive denominator is a genuine ratio.
"""
from __future__ import annotations

import math

import torch

Params = dict[str, torch.Tensor]


def check_compatible(**named: Params) -> None:
    """Raise ``ValueError`` unless every dict has the same keys and the same shape under each key."""
    (first, ref), *rest = named.items()
    if not ref:
        raise ValueError(f"{first} is empty: pass at least one parameter tensor")
    for name, other in rest:
        missing, extra = sorted(set(ref) - set(other)), sorted(set(other) - set(ref))
        if missing or extra:
            raise ValueError(f"{name} and {first} must have the same keys: {name} lacks {missing[:5]}, has extra "
                             f"{extra[:5]}; build both over the same parameter names, e.g. {{n: ... for n in {first}}}")
        for key, tensor in ref.items():
            if other[key].shape != tensor.shape:
                raise ValueError(f"shape mismatch at {key!r}: {first} has {tuple(tensor.shape)}, "
                                 f"{name} has {tuple(other[key].shape)}")


def _as_params(fisher_new, fisher_old, delta) -> tuple[Params, Params, Params]:
    values = (fisher_new, fisher_old, delta)
    if all(isinstance(v, torch.Tensor) for v in values):
        return tuple({"": v} for v in values)  # type: ignore[return-value]
    if all(isinstance(v, dict) for v in values):
        return values  # type: ignore[return-value]
    raise ValueError("fisher_new, fisher_old and delta must all be dicts of tensors or all be single tensors, got "
                     + ", ".join(type(v).__name__ for v in values))


def _check_finite(name: str, params: Params, nonnegative: bool = False) -> None:
    for key, tensor in params.items():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name}[{key!r}] has NaN or infinite entries")
        if nonnegative and (tensor < 0).any():
            raise ValueError(f"{name}[{key!r}] has negative entries (min {tensor.min().item():.3g}): a diagonal "
                             "Fisher is a mean of squares, check how it was computed")


def merge_alpha(fisher_new: Params | torch.Tensor, fisher_old: Params | torch.Tensor,
                delta: Params | torch.Tensor) -> float:
    """BECAME's merge coefficient ``α* = Σ F_new Δ² / Σ (F_new + F_old) Δ²`` over every element, in [0, 1].

    Arguments are three dicts with the same keys and shapes (``Δ = θ_FT − θ_GP``), or three tensors of one
    shape. Sums run in float64 as ``b / (b + a)`` with ``b = Σ F_new Δ²``, ``a = Σ F_old Δ²``, so the result
    never leaves [0, 1]. ``F_old = 0`` gives 1, ``F_new = 0`` gives 0, ``F_new = F_old`` gives 0.5; the 0/0
    case (``a + b = 0``) gives 0.0 = keep ``θ_GP`` (see the module docstring for why). ``ValueError`` on
    mismatched keys or shapes, negative Fisher entries or non-finite values.
    Paper: Li et al., ICML 2025, arXiv 2504.02666 (official ``compute_fisher_merging``).
    """
    new, old, d = _as_params(fisher_new, fisher_old, delta)
    check_compatible(fisher_new=new, fisher_old=old, delta=d)
    _check_finite("fisher_new", new, nonnegative=True)
    _check_finite("fisher_old", old, nonnegative=True)
    _check_finite("delta", d)
    b = a = 0.0
    for key, step in d.items():
        sq = step.detach().double().square()
        b += float((new[key].detach().double() * sq).sum())
        a += float((old[key].detach().double() * sq).sum())
    return 0.0 if b + a == 0.0 else b / (b + a)


def merge(theta_gp: Params, theta_ft: Params, alpha: float) -> Params:
    """The point ``θ_GP + α (θ_FT − θ_GP)`` of the merge line, as new tensors (``torch.lerp``).

    BECAME uses ``α = merge_alpha(...)`` in [0, 1]; any finite α is accepted, so the line can be drawn a
    little beyond its ends. Entries must be floating point (merge ``named_parameters``, not a state dict with
    integer buffers). Paper: Li et al., ICML 2025, arXiv 2504.02666.
    """
    check_compatible(theta_gp=theta_gp, theta_ft=theta_ft)
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    for key, tensor in theta_gp.items():
        if not (tensor.is_floating_point() and theta_ft[key].is_floating_point()):
            raise ValueError(f"{key!r} is not floating point ({tensor.dtype}): merge only the parameters, "
                             "e.g. {n: p for n, p in model.named_parameters()}")
    return {key: torch.lerp(gp.detach(), theta_ft[key].detach().to(gp.dtype), alpha) for key, gp in theta_gp.items()}
