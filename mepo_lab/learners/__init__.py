"""Learners for the online GCL runner: ``linear`` and ``ncm`` on cached features; ``finetune``, ``l2p``,
``dualprompt`` and ``misa`` on images (they need ``backbone=``)."""
from __future__ import annotations

from mepo_lab.learners.finetune import FinetuneLearner
from mepo_lab.learners.linear import LinearLearner
from mepo_lab.learners.ncm import NCMLearner
from mepo_lab.learners.prompt_learners import DualPromptLearner, L2PLearner, MISALearner
from mepo_lab.protocols.learner import MASKS, Learner, StepContext, logit_mask

LEARNERS = {"linear": LinearLearner, "ncm": NCMLearner, "finetune": FinetuneLearner, "l2p": L2PLearner,
            "dualprompt": DualPromptLearner, "misa": MISALearner}
IMAGE_LEARNERS = tuple(name for name, cls in LEARNERS.items() if cls.input_kind == "images")
#: The learners that pick prompts with the frozen backbone's query (they take ``query_bank=``).
PROMPT_LEARNERS = ("l2p", "dualprompt", "misa")


def make_learner(name: str, **kwargs) -> Learner:
    """Build a learner by name; unknown names raise ``ValueError`` listing the valid ones."""
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}: choose one of {', '.join(LEARNERS)}")
    return LEARNERS[name](**kwargs)


__all__ = ["LEARNERS", "IMAGE_LEARNERS", "PROMPT_LEARNERS", "MASKS", "Learner", "StepContext", "logit_mask", "make_learner",
           "LinearLearner", "NCMLearner", "FinetuneLearner", "L2PLearner", "DualPromptLearner", "MISALearner"]
