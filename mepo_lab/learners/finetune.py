"""``finetune``: the whole backbone and a linear head trained online on images (full forward path).

The naive rehearsal-free baseline: every batch updates every weight, so earlier classes are
overwritten (catastrophic forgetting). Adam with two learning rates — ``backbone_lr`` for the ViT
(small: the protocol's 5e-3 would wreck a pretrained backbone) and ``head_lr`` for the head. Every
update re-augments the batch (``augment``, :class:`~mepo_lab.data.online_augment.OnlineAugment`; the
runner passes the protocol's crop + flip + AutoAugment, a bare learner flips per image).
Loss per update: ``CE(h(g(norm(ViT(aug(x)))_CLS)) + mask, y)``, with ``g`` MePo's output alignment when one is
given (identity otherwise), applied to the CLS feature right before the head as for the prompt learners.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from mepo_lab.backbones.base import cls_features
from mepo_lab.data.normalization import WORLD_PREPROCESS, Preprocess
from mepo_lab.data.online_augment import OnlineAugment
from mepo_lab.device import Amp
from mepo_lab.learners.queries import PASSES
from mepo_lab.protocols.learner import FeatureTransform, Learner, StepContext, logit_mask


class FinetuneLearner(Learner):
    """Full online finetuning of a copy of ``backbone`` plus a linear head."""

    name = "finetune"
    input_kind = "images"

    def __init__(self, backbone: torch.nn.Module, head_lr: float = 5e-3, backbone_lr: float = 1e-4,
                 preprocess: Preprocess = WORLD_PREPROCESS, amp: bool = True,
                 augment: OnlineAugment | None = None, transform: FeatureTransform | None = None) -> None:
        self.source, self.head_lr, self.backbone_lr, self.transform = backbone, head_lr, backbone_lr, transform
        self.pre, self.use_amp = preprocess, amp
        self.augment = OnlineAugment("flip", "sample") if augment is None else augment
        self.passes = dict.fromkeys(PASSES, 0)  # backbone passes by purpose, in images (no query pass here)

    @property
    def eval_backbone(self) -> torch.nn.Module | None:
        return getattr(self, "backbone", None)

    def setup(self, n_classes: int, in_dim: int, device: torch.device) -> None:
        self.n_classes, self.device = n_classes, device
        self.backbone = copy.deepcopy(self.source).to(device).train()
        self.head = torch.nn.Linear(self.backbone.num_features, n_classes).to(device)
        self.opt = torch.optim.Adam([
            {"params": self.backbone.parameters(), "lr": self.backbone_lr},
            {"params": self.head.parameters(), "lr": self.head_lr},
        ])
        self.amp = Amp(device, self.use_amp)

    def observe(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        x = x.to(self.device)
        mask = logit_mask(ctx.train_mask, self.n_classes, ctx.n_seen, y, self.device)
        self.backbone.train()
        for i in range(ctx.online_iter):
            with self.amp.autocast():
                feat = cls_features(self.backbone, self.pre(x, self.augment)).float()
            z = self.head(self.train_features(feat, update=i == 0))  # each sample enters running statistics once
            loss = F.cross_entropy(z if mask is None else z + mask, y)
            self.amp.step(loss, self.opt)
            self.passes["train_forward"] += len(x)
            self.passes["train_backward"] += len(x)
        return {"loss": loss.detach()}

    def state_dict(self) -> dict:
        return {"backbone": self.backbone.state_dict(), "head": self.head.state_dict(), "opt": self.opt.state_dict(),
                "transform": self._transform_state(), "passes": dict(self.passes)}

    def load_state_dict(self, state: dict) -> None:
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])
        self._load_transform_state(state.get("transform", {}))
        self.passes = dict.fromkeys(PASSES, 0) | state.get("passes", {})

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.backbone.eval()
        self.passes["eval_forward"] += len(x)
        with self.amp.autocast():
            feat = cls_features(self.backbone, self.pre(x.to(self.device))).float()
        return self.head(self.eval_features(feat))

    def describe(self) -> dict:
        return {"name": self.name, "head_lr": self.head_lr, "backbone_lr": self.backbone_lr, "optimizer": "Adam",
                "preprocess": self.pre.id, "augment": self.augment.id,
                "precision": self.amp.describe() if hasattr(self, "amp") else None,
                "transform": getattr(self.transform, "name", None)}
