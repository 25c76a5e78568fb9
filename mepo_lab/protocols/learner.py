"""What the GCL runner asks of a learner, and the logit masks of the Si-Blurry lineage.

The runner hands a learner batches whose labels are already remapped to *exposure order* (output
unit ``k`` is the ``k``-th class seen in the stream, as in the MISA/MePo trainers). A learner owns
its parameters and optimiser and performs ``online_iter`` updates per incoming batch.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

MASKS = ("seen", "batch", "none")
FeatureTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepContext:
    """Per-batch facts a learner may use: classes exposed so far, updates per batch, mask mode."""

    n_seen: int
    online_iter: int
    train_mask: str = "seen"


def logit_mask(mode: str, n_classes: int, n_seen: int, y: torch.Tensor | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Additive logit mask (0 = allowed, −inf = blocked), ``docs/reference/si_blurry.md#masks``.

    ``seen``: units ``≥ n_seen`` are blocked (the trainer's exposed-class mask);
    ``batch``: every class absent from ``y`` is blocked (MISA's batch mask);
    ``none``: no mask (returns ``None``).
    """
    if mode == "none":
        return None
    mask = torch.full((n_classes,), float("-inf"), device=device)
    if mode == "seen":
        mask[:n_seen] = 0.0
    elif mode == "batch":
        if y is None:
            raise ValueError("the 'batch' mask needs the batch labels y")
        mask[y.unique()] = 0.0
    else:
        raise ValueError(f"unknown logit mask {mode!r}: choose one of {', '.join(MASKS)}")
    return mask


class Learner(ABC):
    """Base class: ``setup`` once, then ``observe`` each stream batch, ``logits`` for evaluation.

    ``input_kind`` tells the runner what to feed: ``"features"`` (cached backbone features) or
    ``"images"`` (uint8 pixels, full forward pass).
    """

    name: str = "learner"
    input_kind: str = "features"
    train_mask: str | None = None  # a method's own logit masks take precedence over GCLConfig's
    eval_mask: str | None = None

    @abstractmethod
    def setup(self, n_classes: int, in_dim: int, device: torch.device) -> None:
        """Create parameters for ``n_classes`` output units on inputs of width ``in_dim``."""

    @abstractmethod
    def observe(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        """Learn from one stream batch (labels in exposure order); returns e.g. ``{"loss": ...}``."""

    @abstractmethod
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, n_classes)`` for evaluation (argmax = prediction)."""

    def eval_logits(self, x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Scores of test images ``x``, the test set's rows ``rows``: :meth:`logits` unless the learner reuses
        work per test image (the prompt learners' frozen query features)."""
        return self.logits(x)

    def begin_task(self, task: int) -> None:
        """Called by the runner when task ``task`` starts (most learners ignore it)."""

    def train_features(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        """``g(x)`` for a training batch: the transform's running statistics (if any) see it first.

        A learner that passes a batch through ``g`` several times (``online_iter`` updates) sets ``update``
        on the first pass only, so each new sample enters the running statistics once.
        """
        transform = getattr(self, "transform", None)
        if transform is None:
            return x
        if update and hasattr(transform, "update"):
            transform.update(x)
        return transform(x)

    def eval_features(self, x: torch.Tensor) -> torch.Tensor:
        """``g(x)`` for evaluation: the transform with its statistics frozen."""
        transform = getattr(self, "transform", None)
        return x if transform is None else transform(x)

    def state_dict(self) -> dict:
        """Everything ``observe`` has changed (parameters, optimiser, running statistics), for resume."""
        raise NotImplementedError(f"learner {self.name!r} cannot be checkpointed")

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` after ``setup``."""
        raise NotImplementedError(f"learner {self.name!r} cannot be checkpointed")

    def _transform_state(self) -> dict:
        transform = getattr(self, "transform", None)
        return transform.state_dict() if hasattr(transform, "state_dict") else {}

    def _load_transform_state(self, state: dict) -> None:
        if state:
            self.transform.load_state_dict(state)

    @property
    def eval_backbone(self) -> torch.nn.Module | None:
        """The network an image learner runs on test images (sizes evaluation batches on a GPU); ``None`` here."""
        return None

    @property
    def batch_independent(self) -> bool:
        """Whether a sample's scores ignore its batch-mates (false under batch-statistics alignment)."""
        return not getattr(getattr(self, "transform", None), "batch_dependent", False)

    def describe(self) -> dict:
        """JSON-ready description recorded in the results."""
        return {"name": self.name}
