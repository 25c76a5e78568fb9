"""``linear``: a frozen backbone's features into an online linear head (the protocol's classifier).

The trainable part of every prompt method in the Si-Blurry lineage ends in such a head, trained with
Adam at 5e-3 on each incoming batch ``online_iter`` times (``docs/reference/si_blurry.md#training``), with a
logit mask (``#masks``). On cached features it runs a whole CIFAR-100-sized stream in seconds.

One update, written out (it is short, and ~10x faster than autograd + ``torch.optim.Adam`` for a
32-sample batch on a CPU, where per-call overhead dominates)::

    z = g(f) Wᵀ + b + mask                     # logits; mask is 0 or −inf
    p = softmax(z);  G = (p − onehot(y)) / B     # ∂ mean CE / ∂z
    ∇W = Gᵀ g(f);    ∇b = Σ_i G_i
    Adam (Kingma & Ba, 2015), bias-corrected, no weight decay:
    m ← β1 m + (1 − β1) ∇;  v ← β2 v + (1 − β2) ∇²;  θ ← θ − lr · m̂ / (√v̂ + ε)

``g`` is an optional feature transform (identity, or MePo's output alignment). Masked units get
``p = 0`` hence zero gradient; Adam still decays their moments, exactly as ``torch.optim.Adam``
does (tests check the two agree).
"""
from __future__ import annotations

import torch

from mepo_lab.protocols.learner import FeatureTransform, Learner, StepContext, logit_mask


class LinearLearner(Learner):
    """Online linear head on features, Adam (``lr``, β = (0.9, 0.999), ε = 1e-8), masked cross-entropy."""

    name = "linear"
    input_kind = "features"

    def __init__(self, lr: float = 5e-3, transform: FeatureTransform | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, self.transform, self.betas, self.eps = lr, transform, betas, eps

    def setup(self, n_classes: int, in_dim: int, device: torch.device) -> None:
        self.n_classes, self.device = n_classes, device
        init = torch.nn.Linear(in_dim, n_classes)  # torch's default init, drawn from the seeded RNG
        # W and b live side by side in one buffer (last column = bias) so Adam is a few fused ops.
        self.theta = torch.cat([init.weight.detach(), init.bias.detach()[:, None]], 1).to(device)
        self.m, self.v, self.t = torch.zeros_like(self.theta), torch.zeros_like(self.theta), 0

    @property
    def weight(self) -> torch.Tensor:
        return self.theta[:, :-1]

    @property
    def bias(self) -> torch.Tensor:
        return self.theta[:, -1]

    def observe(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        f = self.train_features(x).float()
        f1 = torch.cat([f, torch.ones(len(f), 1, device=f.device)], 1)  # append the bias input
        mask = logit_mask(ctx.train_mask, self.n_classes, ctx.n_seen, y, self.device)
        target = torch.nn.functional.one_hot(y, self.n_classes).to(f.dtype)
        for _ in range(ctx.online_iter):
            z = f1 @ self.theta.T
            if mask is not None:
                z += mask
            logp = torch.log_softmax(z, 1)
            grad_z = logp.exp_().sub_(target)  # softmax − onehot (logp is not needed again here)
            self._adam_step(grad_z.T @ f1, 1.0 / len(y))
        return {"loss": -(torch.log_softmax(z, 1) * target).sum() / len(y)}

    def _adam_step(self, grad: torch.Tensor, scale: float) -> None:
        """``torch.optim.Adam``'s update with the gradient ``scale · grad`` (same operation order)."""
        (b1, b2), self.t = self.betas, self.t + 1
        self.m.mul_(b1).add_(grad, alpha=(1 - b1) * scale)
        self.v.mul_(b2).addcmul_(grad, grad, value=(1 - b2) * scale * scale)
        denom = self.v.sqrt().div_((1 - b2 ** self.t) ** 0.5).add_(self.eps)
        self.theta.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.t))

    def state_dict(self) -> dict:
        return {"theta": self.theta.clone(), "m": self.m.clone(), "v": self.v.clone(), "t": self.t,
                "transform": self._transform_state()}

    def load_state_dict(self, state: dict) -> None:
        self.theta, self.m, self.v, self.t = (state["theta"].to(self.device), state["m"].to(self.device),
                                              state["v"].to(self.device), state["t"])
        self._load_transform_state(state["transform"])

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_features(x).float() @ self.weight.T + self.bias

    def describe(self) -> dict:
        return {"name": self.name, "lr": self.lr, "optimizer": "Adam", "betas": list(self.betas),
                "transform": getattr(self.transform, "name", None)}

