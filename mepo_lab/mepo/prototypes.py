"""Class prototypes of the pretraining classes under a (refined) backbone (reference notes §1.5).

``μ_c = mean_{i : y_i = c} f(x_i)`` over ``per_class`` random images of class ``c``, with ``f`` the
post-LayerNorm CLS feature. The reference feeds *augmented* images (its train transform;
``augment=True``, official); clean images (``augment=False``) are the corrected choice. The meta
covariance is then ``Σ_pre = cov(μ_1 … μ_C)`` (:func:`mepo_lab.covariance.meta_covariance`).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab.backbones import cls_features, normalize, pick_device
from mepo_lab.data.augment import train_augment


@torch.no_grad()
def class_prototypes(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, *, per_class: int,
                     augment: bool, seed: int = 0, batch_size: int = 512, device: str = "auto",
                     progress: bool = True) -> np.ndarray:
    """Prototype matrix ``P`` of shape ``(C, d)`` (float64), row ``c`` = mean feature of class ``c``."""
    labels = np.asarray(labels, np.int64)
    n_classes = int(labels.max()) + 1
    rng = np.random.default_rng([seed, 11])
    counts = np.bincount(labels, minlength=n_classes)
    if counts.min() < per_class:
        raise ValueError(f"a class has only {counts.min()} images but {per_class} are asked for per class; "
                         "lower mepo.cov_samples_per_class")
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                           for c in range(n_classes)])
    dev, gen = pick_device(device), torch.Generator().manual_seed(seed)
    model = model.eval().to(dev)
    sums = torch.zeros(n_classes, model.num_features, dtype=torch.float64)
    for start in tqdm(range(0, len(pick), batch_size), desc="prototypes", disable=not progress, mininterval=1.0):
        idx = pick[start:start + batch_size]
        x = torch.from_numpy(images[idx])
        x = train_augment(x, gen) if augment else x
        f = cls_features(model, normalize(x.to(dev))).double().cpu()
        sums.index_add_(0, torch.from_numpy(labels[idx]), f)
    return (sums / per_class).numpy()
