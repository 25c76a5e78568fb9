"""``ncm``: nearest class mean on frozen features (no gradients, no forgetting by construction).

Keeps a running sum and count per class; class ``c``'s prototype is ``μ_c = Σ f / n_c``. The score is
the negative squared distance ``−||g(f) − μ_c||²`` (``metric="euclidean"``) or the cosine
``<g(f)/||g(f)||, μ_c/||μ_c||>`` (``metric="cosine"``, the SimpleShot/SLCA-style choice for ViT
features); classes never seen score ``−inf``. Each sample updates its class mean once, so
``online_iter`` has no effect — a useful contrast to the gradient learners when teaching forgetting.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mepo_lab.protocols.learner import FeatureTransform, Learner, StepContext

METRICS = ("cosine", "euclidean")


class NCMLearner(Learner):
    """Nearest class mean with running prototypes."""

    name = "ncm"
    input_kind = "features"

    def __init__(self, metric: str = "cosine", transform: FeatureTransform | None = None) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown NCM metric {metric!r}: choose one of {', '.join(METRICS)}")
        self.metric, self.transform = metric, transform

    def setup(self, n_classes: int, in_dim: int, device: torch.device) -> None:
        self.sums = torch.zeros(n_classes, in_dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_classes, dtype=torch.float64, device=device)
        self._prototypes: torch.Tensor | None = None

    def observe(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        onehot = torch.nn.functional.one_hot(y, len(self.counts)).to(torch.float64)
        self.sums += onehot.T @ self.train_features(x).to(torch.float64)
        self.counts += onehot.sum(0)
        self._prototypes = None
        return {}

    def prototypes(self) -> torch.Tensor:
        """Class means ``μ_c`` (float32; rows of unseen classes are 0), recomputed after updates."""
        if self._prototypes is None:
            self._prototypes = (self.sums / self.counts.clamp_min(1).unsqueeze(1)).float()
            if self.metric == "cosine":
                self._prototypes = F.normalize(self._prototypes, dim=1)
        return self._prototypes

    def state_dict(self) -> dict:
        return {"sums": self.sums.clone(), "counts": self.counts.clone(), "transform": self._transform_state()}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts = state["sums"].to(self.sums.device), state["counts"].to(self.counts.device)
        self._prototypes = None
        self._load_transform_state(state["transform"])

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        f, means = self.eval_features(x).float(), self.prototypes()
        if self.metric == "cosine":
            scores = F.normalize(f, dim=1) @ means.T
        else:
            scores = -torch.cdist(f, means).pow(2)
        return scores.masked_fill(self.counts == 0, float("-inf"))

    def describe(self) -> dict:
        return {"name": self.name, "metric": self.metric, "transform": getattr(self.transform, "name", None)}
