"""Learners for the online GCL runner: ``linear`` and ``ncm`` on cached features, ``finetune`` on images."""
from __future__ import annotations

from mepo_lab.learners.base import MASKS, Learner, StepContext, logit_mask
from mepo_lab.learners.finetune import FinetuneLearner
from mepo_lab.learners.linear import LinearLearner
from mepo_lab.learners.ncm import NCMLearner

LEARNERS = {"linear": LinearLearner, "ncm": NCMLearner, "finetune": FinetuneLearner}


def make_learner(name: str, **kwargs) -> Learner:
    """Build a learner by name; unknown names raise ``ValueError`` listing the valid ones."""
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}: choose one of {', '.join(LEARNERS)}")
    return LEARNERS[name](**kwargs)


__all__ = ["LEARNERS", "MASKS", "Learner", "StepContext", "logit_mask", "make_learner",
           "LinearLearner", "NCMLearner", "FinetuneLearner"]
