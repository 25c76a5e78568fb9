"""Zapping as an ablation of MePo's head handling: ``mepo.head_reset`` none / per_sequence / per_task.

MePo's refinement (``mepo_lab.mepo.refine``) is an alternating sequential-and-batch loop like ASB, with a
Reptile outer step; the reference script (SunGL001/MePo ``meta_post_training.py``) carries a commented-out
head re-initialisation, which is zapping of the whole head. Here the micro ViT of the embedded default is
refined with each ``head_reset`` and every refined backbone, and the pretrained one it started from, is
evaluated with the zapping paper's continual transfer on classes none of them was trained on (a subset of
the world's downstream classes), so the numbers sit next to the six regimes of :mod:`mepo_lab.zapping.run`.
The seeds vary the fresh head only (one refinement per mode, seeded by ``mepo.seed``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mepo_lab.backbones.base import Backbone, cls_features
from mepo_lab.backbones.pretrain import pretrained_backbone
from mepo_lab.config import Preset, override
from mepo_lab.data.few_shot import FewShotSplit, synthetic_few_shot
from mepo_lab.data.normalization import WORLD_PREPROCESS
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.mepo.pipeline import mepo_backbone
from mepo_lab.mepo.switches import HEAD_RESETS
from mepo_lab.protocols.transfer import best_continual_transfer, curve_auc
from mepo_lab.zapping.config import ZappingConfig
from mepo_lab.zapping.run import EARLY_STEPS


class FeatureBody(nn.Module):
    """A ViT backbone as a zapping body: ``[0, 1]`` images → normalised → CLS feature (MePo's feature)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(WORLD_PREPROCESS.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(WORLD_PREPROCESS.std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cls_features(self.model, (x - self.mean) / self.std)


def transfer_split(preset: Preset, cfg: ZappingConfig) -> FewShotSplit:
    """``cfg.n_transfer_classes`` classes of ``preset``'s downstream set at its image size (15 + 5 per class);
    checked disjoint from the classes the backbones were pretrained and refined on."""
    split = synthetic_few_shot(preset.world, 1, cfg.n_transfer_classes, cfg.train_per_class, cfg.test_per_class)
    seen = set(SyntheticWorld(preset.world).pretrain_classes.tolist())
    if seen & set(split.transfer.meta["world_ids"]):
        raise ValueError("transfer classes overlap the pretraining classes: lower n_transfer_classes to at most "
                         f"world.n_downstream_classes ({preset.world.n_downstream_classes})")
    return split


def _evaluate(backbone: Backbone, split: FewShotSplit, cfg: ZappingConfig, device: str) -> list[dict]:
    body = FeatureBody(backbone.model).eval()
    rows = []
    for seed in cfg.seeds:
        best, _ = best_continual_transfer(body, backbone.feature_dim, split.transfer, split.transfer_test,
                                          cfg.eval_lrs, mode="head", seed=seed, device=device)
        losses = np.asarray(best.losses)
        rows.append({"seed": seed, "lr": best.lr, "final_accuracy": best.final_accuracy, "curve_auc": curve_auc(best),
                     "continual": {"classes_learned": best.classes_learned, "accuracy": best.accuracy},
                     "adaptation_loss": losses.mean(0).tolist(), "early_loss": float(losses[:, :EARLY_STEPS].mean())})
    return rows


def head_reset_study(preset: Preset, cfg: ZappingConfig, data_home: str | Path | None = None,
                     progress: bool = True, device: str = "cpu") -> list[dict]:
    """Continual transfer of the pretrained micro ViT and of its MePo refinements with every ``head_reset``.

    One row per backbone and seed: ``{"backbone": "pretrained" | "mepo", "head_reset", "seed", "lr",
    "final_accuracy", "curve_auc", "continual", "adaptation_loss", "early_loss", "refine_seconds"}``.
    Refinements are cached like every MePo backbone (``mepo-lab refine``), so a rerun only evaluates.
    """
    split = transfer_split(preset, cfg)
    source = pretrained_backbone(preset, data_home, progress=progress)
    rows = [{"backbone": "pretrained", "head_reset": "-", "refine_seconds": 0.0, **r}
            for r in _evaluate(source, split, cfg, device)]
    for mode in HEAD_RESETS:
        start = time.perf_counter()
        refined = mepo_backbone(override(preset, {"mepo.head_reset": mode}), data_home, source=source,
                                progress=progress)
        seconds = time.perf_counter() - start
        rows += [{"backbone": "mepo", "head_reset": mode, "refine_seconds": seconds, **r}
                 for r in _evaluate(refined, split, cfg, device)]
    return rows
