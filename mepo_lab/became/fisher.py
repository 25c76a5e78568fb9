"""Diagonal Fisher information of the current task, and its accumulation over tasks, for BECAME's merge.

Li et al., "BECAME: BayEsian Continual Learning with Adaptive Model MErging", ICML 2025, arXiv 2504.02666;
official code ``GPM-based/fisher.py::compute_fisher_matrix_diag`` of the BECAME repository (limei0818/BECAME).

Two estimators over ``N`` inputs, with ``CE`` the cross-entropy of the current task's logits:

* ``"batch"`` (official): consecutive batches ``B`` of ``batch_size`` inputs in the given order (the last one
  may be smaller); square the gradient of the batch's *mean* loss and weight it by the batch size::

      F = (1/N) Σ_B |B| · (∇_θ CE(f(x_B), ŷ_B))²

  Cheap (one backward per batch) but biased: the square of a mean is not the mean of the squares.
* ``"sample"``: the exact empirical diagonal ``F = (1/N) Σ_i (∇_θ CE(f(x_i), ŷ_i))²``, with per-sample
  gradients from ``torch.func`` (``vmap`` of ``grad``); memory grows as ``batch_size × #parameters``.
  ``"batch"`` with ``batch_size=1`` equals it.

Labels: ``labels="pred"`` uses the model's own argmax ``ŷ`` (the official ``fisher_comp="true"``, the
default there: a deterministic stand-in for sampling ``y ~ p(y|x)``); ``labels="true"`` uses the given ``y``
(the official ``fisher_comp="empirical"``). Mind the naming: the official "true" means predicted labels.

Mode: the official code calls ``model.train()`` first (dropout active). ``train=None`` keeps the caller's
mode; ``True``/``False`` set it for the computation. The mode and every buffer (e.g. BatchNorm running
statistics) are restored afterwards, and ``.grad`` fields are not touched, so the model is left as it was.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from mepo_lab.became.merge import Params, check_compatible


class _Predict(nn.Module):
    """Wraps ``predict`` so that ``functional_call`` can swap in the parameters of ``model``."""

    def __init__(self, model: nn.Module, predict: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        object.__setattr__(self, "predict", predict)  # not registered: predict may be the model itself

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x)


@contextmanager
def _untouched(model: nn.Module, train: bool | None) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    if train is not None:
        model.train(train)
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, mode in modes.items():
            m.training = mode
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])


def _targets(logits: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return logits.detach().argmax(-1) if y is None else y


def _batch_fisher(model, x, y, predict, names, params, batch_size) -> Params:
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in zip(names, params)}
    device = params[0].device
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        logits = predict(xb)
        if not logits.requires_grad:
            raise ValueError("predict returned logits without a graph: it must not run under torch.no_grad, and "
                             "it must use the trainable parameters of model")
        yb = None if y is None else y[start:start + batch_size].to(device)
        loss = F.cross_entropy(logits, _targets(logits, yb))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                fisher[n] += g.float().square() * len(xb)
    return {n: f / len(x) for n, f in fisher.items()}


def _sample_fisher(model, x, y, predict, names, params, batch_size) -> Params:
    batchnorm = [n for n, m in model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)]
    if batchnorm:
        raise ValueError(f"estimator='sample' needs per-sample gradients, but BatchNorm {batchnorm[0]!r} uses batch "
                         "statistics (train mode or no running stats), which mixes samples: use estimator='batch'")
    wrapper = _Predict(model, predict)
    keys = [f"model.{n}" for n in names]

    def loss(values, xi, yi):
        logits = functional_call(wrapper, dict(zip(keys, values)), (xi.unsqueeze(0),))
        return F.cross_entropy(logits, _targets(logits, None if yi is None else yi.unsqueeze(0)))

    per_sample = vmap(grad(loss), in_dims=(None, 0, None if y is None else 0), randomness="different")
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in zip(names, params)}
    device = params[0].device
    values = tuple(p.detach() for p in params)
    for start in range(0, len(x), batch_size):
        yb = None if y is None else y[start:start + batch_size].to(device)
        with warnings.catch_warnings():  # ops without a vmap rule (e.g. CPU flash attention) fall back, correctly
            warnings.filterwarnings("ignore", message="There is a performance drop")
            grads = per_sample(values, x[start:start + batch_size].to(device), yb)
        for n, g in zip(names, grads):
            fisher[n] += g.float().square().sum(0)
    return {n: f / len(x) for n, f in fisher.items()}


def diag_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                predict: Callable[[torch.Tensor], torch.Tensor], *, labels: str = "pred", estimator: str = "batch",
                batch_size: int = 64, train: bool | None = None) -> Params:
    """Diagonal Fisher ``{name: F}`` of every parameter of ``model`` with ``requires_grad``, on inputs ``x``.

    ``predict(x_batch)`` returns the current task's logits (it closes over ``model``, e.g.
    ``lambda xb: model(xb, task)``). ``estimator="batch"``: the official
    ``F = (1/N) Σ_B |B| (∇ CE(f(x_B), ŷ_B))²``; ``"sample"``: ``F = (1/N) Σ_i (∇ CE(f(x_i), ŷ_i))²``.
    ``labels="pred"``: ``ŷ = argmax f(x)`` (official ``fisher_comp="true"``); ``"true"``: ``ŷ = y``. Parameters
    the loss does not reach get zeros. Batches are moved to the parameters' device; the result is float32
    there. ``train``: ``None`` keeps the model's mode, ``True`` is the official ``model.train()``.
    Paper: Li et al., ICML 2025, arXiv 2504.02666 (official ``compute_fisher_matrix_diag``).
    """
    if labels not in ("pred", "true"):
        raise ValueError(f"labels must be 'pred' (argmax predictions, official) or 'true' (given y), got {labels!r}")
    if estimator not in ("batch", "sample"):
        raise ValueError(f"estimator must be 'batch' (official) or 'sample' (exact per-sample), got {estimator!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) == 0:
        raise ValueError("x is empty: pass at least one input")
    if labels == "true" and y is None:
        raise ValueError("labels='true' needs the labels y; pass y, or use labels='pred'")
    if labels == "true" and len(y) != len(x):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no parameter with requires_grad=True: nothing to compute a Fisher for")
    names, params = [n for n, _ in named], [p for _, p in named]
    fn = _batch_fisher if estimator == "batch" else _sample_fisher
    with _untouched(model, train):
        return fn(model, x, y if labels == "true" else None, predict, names, params, int(batch_size))


def accumulate(fisher_old: Params | None, fisher_new: Params, gamma: float = 1.0) -> Params:
    """The Fisher of the tasks so far: ``F_{<t+1} = F_t + γ F_{<t}`` (``F_t`` alone when ``fisher_old`` is None).

    BECAME accumulates with ``γ = fisher_gamma = 1`` (official ``main_cifar100.py``); ``γ < 1`` forgets old
    tasks geometrically. Returns new tensors. Paper: Li et al., ICML 2025, arXiv 2504.02666.
    """
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0 (it weights a Fisher, which is non-negative), got {gamma}")
    if fisher_old is None:
        check_compatible(fisher_new=fisher_new)
        return {n: f.detach().clone() for n, f in fisher_new.items()}
    check_compatible(fisher_new=fisher_new, fisher_old=fisher_old)
    return {n: f.detach() + gamma * fisher_old[n].detach().to(f.device) for n, f in fisher_new.items()}
