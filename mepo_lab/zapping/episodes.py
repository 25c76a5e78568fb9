"""ASB and Meta-ASB episodes: a sequential phase on one class, then one batch step.

Frati et al., "Reset It and Forget It" (ECAI 2024, arXiv 2310.07996), §3–4; official code ``anml.py``
(``run_sequential_episode`` for ASB, ``run_meta_episode`` for Meta-ASB) of
uvm-neurobotics-lab/reset-it-and-forget-it. One episode on class ``c``:

1. zap row ``c`` of the head (when zapping is on);
2. sequential phase: ``n_seq`` SGD steps of batch 1 on images of class ``c`` (drawn with replacement),
   ``θ ← θ − β ∇ CE(f_θ(x_t), c)`` on the inner parameters (all, or the head only as in OML);
3. batch phase: one Adam step on ``CE`` over the ``n_seq`` trajectory images plus ``remember`` images drawn
   from all training classes.

ASB applies the batch step to the weights the sequential phase left (first order, no higher-order
gradients). Meta-ASB takes the batch loss's gradient with respect to the *pre-episode* weights ``θ₀``
through the ``n_seq`` inner steps (second order: ``torch.func.functional_call`` + ``create_graph=True``;
the official code uses the ``higher`` library) and applies it to ``θ₀``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from mepo_lab.zapping.models import ZapNet
from mepo_lab.zapping.operator import zap_

INNER_PARAMS = ("all", "head")


@dataclass
class EpisodeData:
    """Float images ``x`` (N, 3, H, W) in [0, 1], labels ``y`` and the image indices of every class."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) == 0:
            raise ValueError("the pretraining set is empty: pass at least one image per class")
        self.n_classes = int(self.y.max()) + 1
        order = torch.argsort(self.y, stable=True)
        counts = torch.bincount(self.y, minlength=self.n_classes)
        self.by_class = list(torch.split(order, counts.tolist()))

    def trajectory(self, cls: int, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` indices of class ``cls`` drawn with replacement (the class has ~15 images)."""
        pool = self.by_class[cls]
        return pool[torch.randint(len(pool), (n,), generator=gen)]

    def remember(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` indices drawn uniformly from all training images (without replacement when possible)."""
        if n <= 0:
            return torch.empty(0, dtype=torch.long)
        return torch.randperm(len(self.y), generator=gen)[:n] if n <= len(self.y) else \
            torch.randint(len(self.y), (n,), generator=gen)


def inner_names(net: ZapNet, which: str) -> list[str]:
    """Names of the parameters adapted in the sequential phase: ``all`` or ``head`` (OML)."""
    if which not in INNER_PARAMS:
        raise ValueError(f"inner_params must be one of {', '.join(INNER_PARAMS)}, got {which!r}")
    return [n for n, _ in net.named_parameters() if which == "all" or n.startswith("head.")]


def asb_episode(net: ZapNet, data: EpisodeData, cls: int, outer: torch.optim.Optimizer, gen: torch.Generator, *,
                n_seq: int = 20, inner_lr: float = 0.1, remember: int = 64, zap: bool = True,
                inner_params: str = "all", official_fan: bool = False) -> dict[str, float]:
    """One ASB episode (zap row ``cls``; ``n_seq`` single-image SGD steps; one ``outer`` step on the
    trajectory plus ``remember`` images). Returns the mean sequential loss and the batch loss.

    The inner optimiser is plain SGD (no state) built for the episode; ``outer`` (Adam in the paper) keeps
    its state across episodes, including the moments of zapped rows (the official code does not reset them).
    """
    device = next(net.parameters()).device
    if zap:
        zap_(net.head, [cls], official_fan=official_fan, generator=gen)
    names = set(inner_names(net, inner_params))
    sgd = torch.optim.SGD([p for n, p in net.named_parameters() if n in names], lr=inner_lr)
    traj = data.trajectory(cls, n_seq, gen)
    target = torch.full((1,), cls, dtype=torch.long, device=device)
    seq_loss = 0.0
    for i in traj.tolist():
        loss = F.cross_entropy(net(data.x[i:i + 1].to(device)), target)
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()
        seq_loss += loss.item() / n_seq
    index = torch.cat([traj, data.remember(remember, gen)])
    loss = F.cross_entropy(net(data.x[index].to(device)), data.y[index].to(device))
    outer.zero_grad(set_to_none=True)
    loss.backward()
    outer.step()
    return {"seq_loss": seq_loss, "batch_loss": loss.item()}


def meta_gradient(net: nn.Module, x_seq: torch.Tensor, y_seq: torch.Tensor, x_batch: torch.Tensor,
                  y_batch: torch.Tensor, names: list[str], inner_lr: float,
                  first_order: bool = False) -> tuple[dict[str, torch.Tensor], float]:
    """``∇_{θ₀} CE(f_{θ_T}(x_batch), y_batch)`` with ``θ_{t+1} = θ_t − β ∇ CE(f_{θ_t}(x_t), y_t)`` on ``names``.

    Differentiates through the ``T = len(x_seq)`` inner steps (``create_graph=True``); ``first_order=True``
    treats the inner gradients as constants (the first-order approximation, used to show what the
    second-order terms add). Returns the gradient of every parameter and the batch loss. Attention runs on
    the math kernel, the one with a double backward on every device.
    """
    with sdpa_kernel([SDPBackend.MATH]):
        return _meta_gradient(net, x_seq, y_seq, x_batch, y_batch, names, inner_lr, first_order)


def _meta_gradient(net, x_seq, y_seq, x_batch, y_batch, names, inner_lr, first_order):
    theta0 = dict(net.named_parameters())
    fast = dict(theta0)
    for t in range(len(x_seq)):
        loss = F.cross_entropy(functional_call(net, fast, (x_seq[t:t + 1],)), y_seq[t:t + 1])
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not first_order)
        fast.update({n: fast[n] - inner_lr * g for n, g in zip(names, grads)})
    loss = F.cross_entropy(functional_call(net, fast, (x_batch,)), y_batch)
    params = list(theta0.values())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(theta0.items(), grads)}, loss.item()


def meta_asb_episode(net: ZapNet, data: EpisodeData, cls: int, outer: torch.optim.Optimizer, gen: torch.Generator,
                     *, n_seq: int = 20, inner_lr: float = 0.1, remember: int = 64, zap: bool = True,
                     inner_params: str = "all", official_fan: bool = False) -> dict[str, float]:
    """One Meta-ASB episode: zap row ``cls``, then one ``outer`` step on ``θ₀`` with :func:`meta_gradient`
    (the batch loss after ``n_seq`` differentiable single-image SGD steps on class ``cls``)."""
    device = next(net.parameters()).device
    if zap:
        zap_(net.head, [cls], official_fan=official_fan, generator=gen)
    traj = data.trajectory(cls, n_seq, gen)
    index = torch.cat([traj, data.remember(remember, gen)])
    x_seq, y_seq = data.x[traj].to(device), data.y[traj].to(device)
    grads, loss = meta_gradient(net, x_seq, y_seq, data.x[index].to(device), data.y[index].to(device),
                                inner_names(net, inner_params), inner_lr)
    outer.zero_grad(set_to_none=True)
    for n, p in net.named_parameters():
        p.grad = grads[n]
    outer.step()
    return {"batch_loss": loss}


EPISODES = {"asb": asb_episode, "meta": meta_asb_episode}
