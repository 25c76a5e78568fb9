"""The six methods of the BECAME experiment as task-incremental strategies.

BECAME (Li et al., ICML 2025, arXiv 2504.02666; official ``GPM-based/train_util.py::train_model`` and
``main_cifar100.py``), for task ``t ≥ 1``:

1. stage 1: train under gradient projection (GPM), 1-D parameters frozen → ``θ_GP``;
2. stage 2: from ``θ_GP`` with a fresh optimiser, train freely → ``θ_FT``;
3. ``Δ = θ_FT − θ_GP``, diagonal Fisher ``F_t`` at ``θ_FT``, ``α_t = Σ F_t Δ² / Σ (F_t + F_{<t}) Δ²``,
   ``θ_t = θ_GP + α_t Δ``;
4. ``F_{<t+1} = F_t(θ_t) + γ F_{<t}``; the GPM memory is updated at ``θ_t``.

Task 0 is plain training; its Fisher starts ``F_{<1}``. The baselines share the code: ``seqft`` (no
projection, no stage 2), ``gpm`` (stage 1 only), ``gpm_stage2`` (α = 1: keep ``θ_FT``), ``avg``
(α = 1/(t+1), the official non-Fisher ablation) and ``half`` (α = 0.5).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mepo_lab.became.config import BecameConfig
from mepo_lab.became.fisher import accumulate, diag_fisher
from mepo_lab.became.gpm import (
    GPMMemory,
    eps_schedule,
    layer_inputs,
    linear_layers,
    project_grads_,
)
from mepo_lab.became.merge import merge, merge_alpha
from mepo_lab.became.models import MultiHeadNet
from mepo_lab.device import flush_denormal
from mepo_lab.protocols.task_incremental import Task
from mepo_lab.protocols.transfer import to_input

#: method → (project in stage 1, run stage 2, merge rule)
SPECS = {"seqft": (False, False, None), "gpm": (True, False, None), "gpm_stage2": (True, True, "ft"),
         "avg": (True, True, "avg"), "half": (True, True, "half"), "became": (True, True, "closed")}


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every trainable parameter, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_params_(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Copy ``params`` into the model's parameters of the same names."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in params:
                p.copy_(params[n])


def train_epochs(model: MultiHeadNet, task: int, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float,
                 batch_size: int, gen: torch.Generator, after_backward: Callable[[], None] | None = None) -> float:
    """``epochs`` passes of plain SGD (a fresh optimiser) on ``CE(head_task(body(x)), y)`` in shuffled
    minibatches; ``after_backward`` runs between ``backward`` and ``step`` (gradient projection). Returns the
    last epoch's mean loss."""
    device = next(model.parameters()).device
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    mean = float("nan")
    for _ in range(epochs):
        total, n = 0.0, 0
        for index in torch.randperm(len(y), generator=gen).split(batch_size):
            if len(index) < 2:  # BatchNorm without running statistics needs two samples
                continue
            loss = F.cross_entropy(model(x[index].to(device), task), y[index].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            opt.step()
            total, n = total + loss.item() * len(index), n + len(index)
        mean = total / max(n, 1)
    return mean


class BecameStrategy:
    """One of :data:`SPECS`'s methods on a :class:`MultiHeadNet`; ``train_task`` / ``predict`` for
    :func:`mepo_lab.protocols.task_incremental.run_task_incremental`."""

    def __init__(self, model: MultiHeadNet, method: str, cfg: BecameConfig, seed: int = 0,
                 device: torch.device | str = "cpu"):
        if method not in SPECS:
            raise ValueError(f"unknown method {method!r}: choose one of {', '.join(SPECS)}")
        self.model, self.method, self.cfg, self.device = model.to(device), method, cfg, torch.device(device)
        self.project, self.stage2, self.rule = SPECS[method]
        self.layers = linear_layers(model)
        self.memory, self.fisher_old = GPMMemory(), None
        self.gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Logits of task ``task``'s head (the task id is known at test time)."""
        self.model.eval()
        return self.model(x.to(self.device), task)

    def train_task(self, task: Task) -> dict:
        """Train on ``task`` with the method's stages and merge; update the Fisher and the GPM memory."""
        cfg, t = self.cfg, task.index
        x, y = to_input(task.train.images), torch.from_numpy(task.train.targets)
        hook = (lambda: project_grads_(self.model, self.memory, self.layers, freeze_1d=True)) \
            if self.project and t > 0 else None
        with flush_denormal():
            log = {"task": t, "loss": train_epochs(self.model, t, x, y, cfg.epochs, cfg.lr, cfg.batch_size,
                                                   self.gen, hook), "alpha": None}
            if self.stage2 and t > 0:
                log |= self._stage2_and_merge(t, x, y)
            if self.rule == "closed":
                current = self._fisher(t, x, y)
                self.fisher_old = accumulate(self.fisher_old, current, cfg.gamma)
        if self.project:
            sample = x[torch.randperm(len(x), generator=self.gen)[:cfg.rep_samples]].to(self.device)
            self.model.eval()
            reps = layer_inputs(self.model.body, sample, self.layers, cfg.max_rows, seed=t)  # hooks sit on modules
            added = self.memory.update(reps, eps_schedule(t, cfg.eps0, cfg.eps_inc))
            log["memory"] = {name: int(b.shape[1]) for name, b in self.memory.bases.items()}
            log["added"] = added
        return log

    def _fisher(self, t: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        # train mode, as the official compute_fisher_matrix_diag (dropout on); the model's mode is restored
        return diag_fisher(self.model, x.to(self.device), y.to(self.device), lambda xb: self.model(xb, t),
                           labels=self.cfg.fisher_labels, estimator=self.cfg.fisher_estimator,
                           batch_size=self.cfg.batch_size, train=True)

    def _stage2_and_merge(self, t: int, x: torch.Tensor, y: torch.Tensor) -> dict:
        cfg = self.cfg
        theta_gp = params_of(self.model)
        loss2 = train_epochs(self.model, t, x, y, cfg.epochs2, cfg.lr2, cfg.batch_size, self.gen)
        theta_ft = params_of(self.model)
        if self.rule == "closed":
            fisher_new = self._fisher(t, x, y)
            delta = {n: theta_ft[n] - theta_gp[n] for n in theta_gp}
            alpha = merge_alpha(fisher_new, {n: self.fisher_old[n] for n in fisher_new}, {n: delta[n] for n in fisher_new})
        else:
            alpha = {"ft": 1.0, "avg": 1.0 / (t + 1), "half": 0.5}[self.rule]
        load_params_(self.model, merge(theta_gp, theta_ft, alpha))
        return {"loss2": loss2, "alpha": float(alpha)}
