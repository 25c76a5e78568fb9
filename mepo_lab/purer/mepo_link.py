"""Data-free MePo: MePo's Reptile refinement on pseudo tasks inverted from the backbone itself.

MePo (arXiv 2602.07940) cuts its pseudo task sequences from the pretraining data. PURER (Hu et al., CVPR 2023,
arXiv 2303.11183) shows how to meta-learn when only trained models are available: invert them. Here the
"teachers" are the micro ViT's own pretraining head restricted to class slices; a dynamic dataset of
``per_class`` images per pretraining class is optimised with PURER's inversion loss (cross-entropy, total
variation, L2, jitter), the result is quantised to uint8 images and handed to the same
:class:`mepo_lab.mepo.refine.MetaRefiner` as real pretraining images would be.

The prior is **our extension**: a ViT has no BatchNorm statistics, so per-channel means and variances of the
inputs of every LayerNorm (:func:`mepo_lab.purer.inversion.feature_prior`) stand in for them. They summarise the
pretraining data the way BatchNorm running statistics do, so they are computed once from a sample of it (20 images
per class) and stored with the refinement, as statistics a model provider would publish with the weights;
nothing else of the pretraining data is used.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.backbones.base import (
    Backbone,
    cls_features,
    load_mepo_backbone,
    weights_hash,
)
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.backbones.pretrain import pretraining_head
from mepo_lab.config import Preset
from mepo_lab.data.normalization import WORLD_MEAN, WORLD_STD
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.device import pick_device
from mepo_lab.mepo.refine import MetaRefiner
from mepo_lab.mepo.sources import ArraySource
from mepo_lab.protocols.transfer import to_input
from mepo_lab.purer.inversion import DynamicDataset, InversionLoss, feature_prior

PRIOR_PER_CLASS = 20


class HeadTeacher(nn.Module):
    """``logits = head(CLS(ViT((x − mean)/std)))`` for float images x in [0, 1]: the pretrained micro ViT with its
    pretraining head, the teacher that data-free MePo inverts."""

    def __init__(self, vit: nn.Module, head: dict[str, torch.Tensor], classes: list[int] | None = None):
        super().__init__()
        weight, bias = head["head.weight"], head["head.bias"]
        if classes is not None:  # the head restricted to a slice of the pretraining classes
            weight, bias = weight[classes], bias[classes]
        self.vit = vit
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        self.head.load_state_dict({"weight": weight, "bias": bias})
        self.register_buffer("mean", torch.tensor(WORLD_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(WORLD_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(cls_features(self.vit, (x - self.mean) / self.std))


def class_subset(preset: Preset, n: int | None, seed: int = 0) -> list[int]:
    """``n`` of the preset world's pretraining classes (head indices, seeded draw, sorted); all for ``None``."""
    total = len(SyntheticWorld(preset.world).pretrain_classes)
    if n is None or n >= total:
        return list(range(total))
    if n < 2:
        raise ValueError(f"the class subset needs at least 2 classes, got {n}")
    return sorted(np.random.default_rng([seed, 7]).choice(total, n, replace=False).tolist())


def invert_pretraining(preset: Preset, backbone: Backbone, per_class: int, steps: int, *,
                       classes: list[int] | None = None, seed: int = 0, data_home: str | Path | None = None,
                       tv: float = 1e-4, bn: float = 1e-2, l2: float = 1e-5, jitter: int = 2,
                       progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """``per_class`` uint8 images for each pretraining class in ``classes`` (head indices; all by default),
    inverted from ``backbone`` + its pretraining head restricted to those classes by ``steps`` Adam(0.25) steps on
    ``CE + tv·TV + bn·R_LN + l2·‖x‖`` (one loss over all of them per step), and local labels ``0..len-1``;
    cached by backbone hash and settings. Returns ``(images, labels, info)`` with the teacher's accuracy on the
    final images and the loss curve."""
    key = json.dumps([backbone.weights_hash, per_class, steps, seed, tv, bn, l2, jitter, classes], sort_keys=True)
    folder = paths.subdir("purer_inversion", data_home) / hashlib.sha256(key.encode()).hexdigest()[:12]
    if (folder / "images.npz").exists():
        saved = np.load(folder / "images.npz")
        return saved["images"], saved["labels"], json.loads((folder / "info.json").read_text())
    device = pick_device(preset.device)
    teacher = HeadTeacher(copy.deepcopy(backbone.model), pretraining_head(preset, data_home), classes).to(device).eval()
    world = SyntheticWorld(preset.world)
    sample = world.dataset("pretrain", "train", per_class=min(PRIOR_PER_CLASS, preset.world.pretrain_per_class))
    if classes is not None:  # the statistics of the classes the teacher knows
        sample = sample.subset(np.flatnonzero(np.isin(sample.targets, classes)))
    prior = feature_prior(teacher, to_input(sample.images).to(device))
    n_classes = teacher.head.out_features
    dyn = DynamicDataset(n_classes, per_class, preset.world.image_size, seed=seed, device=device)
    inv, gen = InversionLoss(teacher, tv=tv, bn=bn, l2=l2, jitter=jitter, prior=prior), torch.Generator().manual_seed(seed)
    curve = []
    for _ in tqdm(range(steps), desc="inverting the pretraining head", disable=not progress, mininterval=1):
        loss, parts = inv(dyn.images(), dyn.labels, generator=gen)
        dyn.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dyn.optimizer.step()
        curve.append({"loss": float(parts["total"]), "ce": float(parts["ce"]), "acc": float(parts["acc"])})
    with torch.no_grad():
        acc = float((teacher(dyn.images(detach=True)).argmax(1) == dyn.labels).float().mean())
    images, labels = dyn.to_uint8(), dyn.labels.cpu().numpy().astype(np.int64)
    info = {"teacher_acc": acc, "curve": curve, "n_classes": n_classes, "per_class": per_class, "steps": steps}
    paths.atomic_write(folder / "images.npz", lambda h: np.savez_compressed(h, images=images, labels=labels))
    paths.atomic_save_json(folder / "info.json", info)
    return images, labels, info


def real_subset(preset: Preset, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The real pretraining images of ``classes`` (head indices) with local labels: what real-data MePo refines
    on when it is compared with data-free MePo on the same classes."""
    data = SyntheticWorld(preset.world).dataset("pretrain", "train")
    keep = np.flatnonzero(np.isin(data.targets, classes))
    local = {c: i for i, c in enumerate(classes)}
    return data.images[keep], np.array([local[int(c)] for c in data.targets[keep]], np.int64)


def refine_on(preset: Preset, backbone: Backbone, images: np.ndarray, labels: np.ndarray, kind: str, *,
              data_home: str | Path | None = None, progress: bool = True) -> Backbone:
    """MePo's refinement of ``backbone`` (``preset.mepo``, all meta-epochs) on the given uint8 images (inverted or
    real); resumable and cached like :func:`mepo_lab.mepo.pipeline.mepo_backbone`; ``kind`` names the result."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()[:1 << 20] + labels.tobytes()).hexdigest()[:12]
    blob = json.dumps([backbone.weights_hash, digest, images.shape, asdict(preset.mepo)], sort_keys=True, default=str)
    folder = paths.subdir("purer_mepo", data_home) / hashlib.sha256(blob.encode()).hexdigest()[:12]
    epochs = preset.mepo.meta_epochs
    path = folder / f"meta_{epochs}.pth"
    if not path.exists():
        refiner = MetaRefiner(copy.deepcopy(backbone.model), ArraySource(images, labels), preset.mepo, folder,
                              device=pick_device(preset.device))
        refiner.resume()
        refiner.run(epochs, progress=progress)
    model = load_mepo_backbone(path, create_micro_vit(preset.vit, preset.world.image_size))
    return Backbone(model, kind, weights_hash(model), {"folder": str(folder), "source": backbone.weights_hash})
