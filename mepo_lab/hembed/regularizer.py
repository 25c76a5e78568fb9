"""HyperCL's output regulariser with the optimiser lookahead ``ΔΘ``.

Before task t the generated weights of every earlier task are stored, ``W*_{t'} = h(e_{t'}, Θ)``, and while
task t is trained the hypernetwork is kept on them (von Oswald et al., "Continual learning with hypernetworks",
ICLR 2020, arXiv 1906.00695, Eq. 2; official HyperCL ``utils/hnet_regularizer.py::calc_fix_target_reg``, reused by
Wu et al., "H-embedding guided hypernetworks for continual learning", NeurIPS 2025, arXiv 2502.11609, official code
viki760/Hembedding_Guided_Hypernet ``cifar/train/train_Hemb.py``)::

    L_reg = (1/|T|) Σ_{t' ∈ T} ‖ h(e_{t'}, Θ + ΔΘ) − W*_{t'} ‖²

``ΔΘ`` is the step the Θ-optimiser would take from the task loss alone (HyperCL ``utils/optim_step.py::
calc_delta_theta``), computed here without touching the parameters or the optimiser state, and detached.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.func import functional_call

from mepo_lab.hembed.hypernet import ChunkedHypernet

__all__ = ["delta_theta", "hypercl_reg", "store_targets"]


def _groups_by_param(optimizer: torch.optim.Optimizer) -> dict[int, dict]:
    return {id(p): group for group in optimizer.param_groups for p in group["params"]}


def _sgd_delta(p: torch.Tensor, grad: torch.Tensor, group: dict) -> torch.Tensor:
    if group["momentum"] != 0:
        raise ValueError(f"delta_theta supports SGD only without momentum (its lookahead would need the momentum "
                         f"buffer's update), got momentum={group['momentum']}: use momentum=0 or Adam")
    if group["weight_decay"] != 0:
        grad = grad + group["weight_decay"] * p
    return -float(group["lr"]) * grad


def _adam_delta(p: torch.Tensor, grad: torch.Tensor, group: dict, state: Mapping) -> torch.Tensor:
    if group["amsgrad"]:
        raise ValueError("delta_theta does not support Adam with amsgrad=True: build the optimiser with amsgrad=False")
    lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
    beta1, beta2 = (float(b) for b in group["betas"])
    decoupled = bool(group.get("decoupled_weight_decay", False))
    if wd != 0 and not decoupled:
        grad = grad + wd * p
    step = int(state["step"]) + 1 if "step" in state else 1
    exp_avg = state["exp_avg"].detach() if "exp_avg" in state else torch.zeros_like(p)
    exp_avg_sq = state["exp_avg_sq"].detach() if "exp_avg_sq" in state else torch.zeros_like(p)
    m = exp_avg.lerp(grad, 1 - beta1)
    v = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
    denom = v.sqrt() / (1 - beta2 ** step) ** 0.5 + eps
    delta = -(lr / (1 - beta1 ** step)) * m / denom
    if wd != 0 and decoupled:
        delta = delta - lr * wd * p
    return delta


def delta_theta(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """``ΔΘ``: the change ``optimizer.step()`` would make to each of ``params`` now, from their current ``.grad``.

    SGD (momentum 0): ``Δ = −lr (g + λ p)``. Adam (amsgrad off), with ``s = state step + 1`` (1 for an empty
    state), ``m = β₁ m + (1 − β₁) g``, ``v = β₂ v + (1 − β₂) g²`` and
    ``Δ = −lr/(1 − β₁ˢ) · m / (√v / √(1 − β₂ˢ) + ε)``; L2 weight decay adds ``λ p`` to g, decoupled (AdamW) adds
    ``−lr λ p`` to Δ; ``maximize`` flips g. A parameter without a gradient gets zeros (the optimiser skips it).
    Nothing is changed: not the parameters, not the optimiser state. Returns detached tensors aligned with
    ``params`` (HyperCL ``utils/optim_step.py::calc_delta_theta``; von Oswald et al. 2020).
    """
    if isinstance(optimizer, torch.optim.Adam):
        kind = "adam"
    elif isinstance(optimizer, torch.optim.SGD):
        kind = "sgd"
    else:
        raise ValueError(  # noqa: TRY004 (the package raises ValueError for every bad input)
            "delta_theta supports torch.optim.SGD (momentum 0) and torch.optim.Adam/AdamW, "
            f"got {type(optimizer).__name__}")
    groups = _groups_by_param(optimizer)
    out = []
    with torch.no_grad():
        for i, p in enumerate(params):
            if id(p) not in groups:
                raise ValueError(f"params[{i}] (shape {tuple(p.shape)}) is not optimised by this optimizer: "
                                 "pass the parameters the optimizer was built with (e.g. hnet.theta())")
            group = groups[id(p)]
            if p.grad is None:
                out.append(torch.zeros_like(p).detach())
                continue
            grad = -p.grad.detach() if group.get("maximize", False) else p.grad.detach()
            if kind == "sgd":
                d = _sgd_delta(p.detach(), grad, group)
            else:
                d = _adam_delta(p.detach(), grad, group, optimizer.state.get(p, {}))
            out.append(d.detach())
    return out


def _check_delta(hnet: ChunkedHypernet, delta: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    theta = hnet.theta()
    if len(delta) != len(theta):
        raise ValueError(f"delta must have one tensor per entry of hnet.theta() ({len(theta)}), got {len(delta)}: "
                         "compute it with delta_theta(optimizer, hnet.theta())")
    for i, (d, p) in enumerate(zip(delta, theta)):
        if d.shape != p.shape:
            raise ValueError(f"delta[{i}] has shape {tuple(d.shape)} but hnet.theta()[{i}] has {tuple(p.shape)}: "
                             "delta must be aligned with hnet.theta()")
    return list(delta)


def hypercl_reg(hnet: ChunkedHypernet, targets: dict[int, torch.Tensor], embs: dict[int, torch.Tensor] | None = None,
                delta: list[torch.Tensor] | None = None) -> torch.Tensor:
    """``(1/|T|) Σ_{t' ∈ T} ‖ flat(h(e_{t'}, Θ + ΔΘ)) − W*_{t'} ‖²`` (sum of squares), a 0-dim tensor.

    ``targets`` maps each earlier task t' to its stored flat weights ``W*_{t'}`` (see :func:`store_targets`).
    ``e_{t'}`` is ``hnet.task_embs[t']`` detached (earlier embeddings are frozen), or ``embs[t']`` as given.
    ``delta`` (aligned with ``hnet.theta()``; None = no lookahead) is added to Θ through
    ``torch.func.functional_call``, so the gradient reaches Θ itself. An empty ``targets`` gives a grad-less 0.
    (von Oswald et al. 2020, Eq. 2; HyperCL ``utils/hnet_regularizer.py::calc_fix_target_reg``.)
    """
    device = hnet.chunk_embs.device
    if not targets:
        return torch.zeros((), device=device)
    if embs is not None and set(targets) - set(embs):
        raise ValueError(f"embs lacks the tasks {sorted(set(targets) - set(embs))} that have targets: "
                         "give an embedding for every task in targets, or embs=None to use hnet.task_embs")
    params = None
    if delta is not None:
        delta = _check_delta(hnet, delta)
        params = {name: p + d.to(p.device, p.dtype)
                  for name, p, d in zip(hnet.theta_names(), hnet.theta(), delta)}
    reg = torch.zeros((), device=device)
    for t, target in targets.items():
        if target.ndim != 1 or target.numel() != hnet.n_params:
            raise ValueError(f"targets[{t}] must be a flat vector of the {hnet.n_params} generated weights, got shape "
                             f"{tuple(target.shape)}: build the targets with store_targets(hnet, tasks)")
        e = embs[t] if embs is not None else hnet.embedding(t).detach()
        weights = hnet(e) if params is None else functional_call(hnet, params, (e,))
        reg = reg + (hnet.flat(weights) - target.to(device)).pow(2).sum()
    return reg / len(targets)


def store_targets(hnet: ChunkedHypernet, tasks: list[int]) -> dict[int, torch.Tensor]:
    """``{t: flat(h(e_t, Θ))}`` for each task in ``tasks``, detached: the HyperCL targets ``W*``, taken before a
    new task is trained (von Oswald et al. 2020; official ``hnet_regularizer.py::get_current_targets``)."""
    out: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for t in tasks:
            weights = hnet(t)  # validates t (a task index of hnet)
            out[int(t)] = hnet.flat(weights).detach().clone()
    return out
