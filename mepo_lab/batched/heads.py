"""The feature learners ``linear`` and ``ncm`` for many runs at once: parameters stacked along a run axis.

The updates are those of :class:`~mepo_lab.learners.linear.LinearLearner` and
:class:`~mepo_lab.learners.ncm.NCMLearner`, written with batched matrix products::

    linear:  z_r = [g(f_r), 1] θ_rᵀ + mask_r;  G_r = softmax(z_r) − onehot(y_r);  ∇_r = G_rᵀ [g(f_r), 1]
             Adam (Kingma & Ba, 2015) on every θ_r with the gradient ∇_r / B   (online_iter times per batch)
    ncm:     S_r += onehot(y_r)ᵀ g(f_r);  n_r += Σ onehot(y_r);  μ_r = S_r / n_r;  score = cos(g(f), μ_r) or −‖g(f) − μ_r‖²

``torch.bmm`` runs the same GEMM per run as the single-run ``@``, and the Adam arithmetic is element-wise, so a
run's numbers do not depend on the runs beside it (checked by the equivalence tests).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mepo_lab.learners.linear import LinearLearner
from mepo_lab.learners.ncm import NCMLearner


def head_key(learner) -> tuple:
    """Runs whose heads can share a program: same learner class and the same hyper-parameters."""
    if type(learner) is LinearLearner:
        return ("linear", float(learner.lr), tuple(learner.betas), float(learner.eps))
    if type(learner) is NCMLearner:
        return ("ncm", learner.metric)
    raise ValueError(f"cannot batch learner {getattr(learner, 'name', type(learner).__name__)!r}: only the "
                     "feature learners 'linear' and 'ncm' are batched; run it with run_gcl")


def _seen_mask(n_seen: torch.Tensor, n_classes: int, device) -> torch.Tensor:
    """``(R, 1, C)``: 0 for units below each run's ``n_seen``, −inf above (``logit_mask('seen')`` per run)."""
    blocked = torch.arange(n_classes, device=device)[None, :] >= n_seen[:, None]
    return torch.zeros(len(n_seen), 1, n_classes, device=device).masked_fill_(blocked[:, None, :], float("-inf"))


def train_mask(mode: str, n_seen: torch.Tensor, y: torch.Tensor, n_classes: int, device) -> torch.Tensor | None:
    """The additive training mask of each run (``seen``, ``batch`` or ``none``), shaped ``(R, 1, C)``."""
    if mode == "none":
        return None
    if mode == "seen":
        return _seen_mask(n_seen, n_classes, device)
    mask = torch.full((len(y), 1, n_classes), float("-inf"), device=device)
    return mask.scatter_(2, y[:, None, :], 0.0)


class BatchedLinear:
    """Online linear heads of ``R`` runs with Adam; ``theta[r]`` is run ``r``'s ``[W | b]``."""

    def __init__(self, learners: list[LinearLearner]) -> None:
        first = learners[0]
        self.learners, self.lr, self.betas, self.eps = learners, first.lr, first.betas, first.eps
        self.theta = torch.stack([lr.theta for lr in learners])
        self.m = torch.stack([lr.m for lr in learners])
        self.v = torch.stack([lr.v for lr in learners])
        self.t = np.array([lr.t for lr in learners], np.int64)
        self.n_classes = self.theta.shape[1]

    def observe(self, pos: np.ndarray, g: torch.Tensor, y: torch.Tensor, n_seen: torch.Tensor, mode: str,
                online_iter: int) -> None:
        """``online_iter`` masked cross-entropy Adam steps of the runs at ``pos`` on their batches ``g`` ``(R', B, d)``."""
        full = len(pos) == len(self.learners)
        idx = torch.from_numpy(pos)
        th, m, v = (self.theta, self.m, self.v) if full else (self.theta[idx], self.m[idx], self.v[idx])
        f = g.float()
        f1 = torch.cat([f, torch.ones(*f.shape[:2], 1, device=f.device)], 2)
        mask = train_mask(mode, n_seen, y, self.n_classes, f.device)
        target = F.one_hot(y, self.n_classes).to(f.dtype)
        t = int(self.t[pos[0]])
        if not np.all(self.t[pos] == t):
            raise RuntimeError("runs stepped in one group must have taken the same number of Adam steps")
        for _ in range(online_iter):
            z = torch.bmm(f1, th.mT)
            if mask is not None:
                z += mask
            grad_z = torch.log_softmax(z, 2).exp_().sub_(target)
            t += 1
            self._adam(th, m, v, torch.bmm(grad_z.mT, f1), 1.0 / y.shape[1], t)
        self.t[pos] = t
        if not full:
            self.theta[idx], self.m[idx], self.v[idx] = th, m, v

    def _adam(self, th: torch.Tensor, m: torch.Tensor, v: torch.Tensor, grad: torch.Tensor, scale: float,
              t: int) -> None:
        """``LinearLearner._adam_step`` on stacked tensors (same operations in the same order)."""
        b1, b2 = self.betas
        m.mul_(b1).add_(grad, alpha=(1 - b1) * scale)
        v.mul_(b2).addcmul_(grad, grad, value=(1 - b2) * scale * scale)
        denom = v.sqrt().div_((1 - b2 ** t) ** 0.5).add_(self.eps)
        th.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** t))

    @torch.no_grad()
    def logits(self, pos: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(R', L, C)`` of features ``x`` ``(R', L, d)`` under the heads at ``pos``."""
        th = self.theta if len(pos) == len(self.learners) else self.theta[torch.from_numpy(pos)]
        return torch.bmm(x.float(), th[:, :, :-1].mT) + th[:, None, :, -1]

    def write_back(self) -> None:
        """Hand each learner its final parameters and Adam state (as after its sequential run)."""
        for r, lr in enumerate(self.learners):
            lr.theta, lr.m, lr.v, lr.t = self.theta[r].clone(), self.m[r].clone(), self.v[r].clone(), int(self.t[r])


class BatchedNCM:
    """Nearest-class-mean heads of ``R`` runs: per-run class sums ``(R, C, d)`` and counts ``(R, C)`` in float64."""

    def __init__(self, learners: list[NCMLearner]) -> None:
        self.learners, self.metric = learners, learners[0].metric
        self.sums = torch.stack([lr.sums for lr in learners])
        self.counts = torch.stack([lr.counts for lr in learners])
        self.n_classes = self.sums.shape[1]

    def observe(self, pos: np.ndarray, g: torch.Tensor, y: torch.Tensor, n_seen: torch.Tensor, mode: str,
                online_iter: int) -> None:
        """Add each run's batch to its class sums and counts (masks and ``online_iter`` do not apply)."""
        idx = torch.from_numpy(pos)
        onehot = F.one_hot(y, self.n_classes).to(torch.float64)
        if len(pos) == len(self.learners):
            self.sums += torch.bmm(onehot.mT, g.to(torch.float64))
            self.counts += onehot.sum(1)
        else:
            self.sums[idx] += torch.bmm(onehot.mT, g.to(torch.float64))
            self.counts[idx] += onehot.sum(1)

    @torch.no_grad()
    def logits(self, pos: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """Cosine or negative squared Euclidean scores ``(R', L, C)``; classes never seen score −inf."""
        idx = torch.from_numpy(pos)
        sums, counts = self.sums[idx], self.counts[idx]
        means = (sums / counts.clamp_min(1).unsqueeze(-1)).float()
        f = x.float()
        if self.metric == "cosine":
            scores = torch.bmm(F.normalize(f, dim=-1), F.normalize(means, dim=-1).mT)
        else:
            scores = -torch.cdist(f, means).pow(2)
        return scores.masked_fill((counts == 0)[:, None, :], float("-inf"))

    def write_back(self) -> None:
        """Hand each learner its final class sums and counts."""
        for r, lr in enumerate(self.learners):
            lr.sums, lr.counts, lr._prototypes = self.sums[r].clone(), self.counts[r].clone(), None


def make_heads(learners: list) -> BatchedLinear | BatchedNCM:
    """The batched head of learners that share :func:`head_key`."""
    return BatchedLinear(learners) if type(learners[0]) is LinearLearner else BatchedNCM(learners)
