"""Diagnostics that explain the study's gains: how far ``finetune`` moves the backbone's features during the stream
(feature drift) and which part of a gain comes from the alignment and which from the refined backbone. How good
each backbone's frozen features are on the downstream classes comes from :func:`mepo_lab.backbones.probe.linear_probe`
and :func:`mepo_lab.hembed.hscore.h_score`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mepo_lab.backbones.base import cls_features


class DriftProbe:
    """A run callback: mean cosine drift ``1 − cos(f_t(x), f_0(x))`` of the CLS feature on fixed probe images at
    every evaluation of an image learner whose backbone trains (``finetune``), ``f_0`` = the starting backbone.

    ``points`` holds ``(samples seen, drift)``; a resumed run starts its curve at the resume point.
    """

    def __init__(self, images: np.ndarray) -> None:
        self.images, self.points = torch.as_tensor(images), []
        self.learner: Any = None
        self.start: torch.Tensor | None = None

    def _features(self, model: torch.nn.Module) -> torch.Tensor:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            out = torch.cat([cls_features(model, self.learner.pre(x.to(device))).float().cpu()
                             for x in self.images.split(256)])
        model.train(was_training)
        return out

    def on_learner(self, learner: Any) -> None:
        if not hasattr(learner, "backbone") or not hasattr(learner, "source"):
            raise TypeError(f"DriftProbe follows a learner with a trained backbone (finetune), got {learner.name}")
        self.learner = learner
        source = learner.source.to(next(learner.backbone.parameters()).device)
        self.start = self._features(source)

    def on_eval(self, result: Any) -> None:
        now = self._features(self.learner.backbone)
        drift = 1.0 - F.cosine_similarity(now, self.start, dim=1).mean()
        self.points.append((int(result.anytime_samples[-1]), float(drift)))


def gain_shares(rows: list[dict], variant: str = "mepo", alignment: str = "corrected", metric: str = "A_auc"
                ) -> list[dict]:
    """Split the gain of ``variant`` + ``alignment`` over (``none``, no alignment) per learner and shift:
    ``G = B + A`` with ``B = m(variant, none) − m(none, none)`` (the refined backbone) and
    ``A = m(variant, alignment) − m(variant, none)`` (the alignment on top), means over the paired seeds."""
    out = []
    for learner, shift in dict.fromkeys((r["learner"], r["shift"]) for r in rows):
        cells = [seed_values(rows, metric, learner=learner, shift=shift, variant=v, alignment=a)
                 for v, a in (("none", "none"), (variant, "none"), (variant, alignment))]
        seeds = sorted(set.intersection(*(set(c) for c in cells)))
        if not seeds:
            continue
        base, back, full = (float(np.mean([c[s] for s in seeds])) for c in cells)
        out.append({"learner": learner, "shift": shift, "variant": variant, "alignment": alignment,
                    "gain": full - base, "backbone": back - base, "alignment_part": full - back, "n": len(seeds)})
    return out


def seed_values(rows: list[dict], metric: str, **match: Any) -> dict[int, float]:
    """``{seed: metric}`` of the rows matching every field of ``match``."""
    return {r["seed"]: r[metric] for r in rows if all(r.get(k) == v for k, v in match.items())}
