"""Class prototypes of the pretraining classes under a (refined) backbone
(``docs/reference/mepo.md#meta-covariance``).

``μ_c = mean_{i : y_i = c} f(x_i)`` over ``per_class`` random images of class ``c``, with ``f`` the
post-LayerNorm CLS feature. The reference feeds *augmented* images (its train transform;
``augment=True``, official); clean images (``augment=False``: the test transform of a
:class:`~mepo_lab.mepo.sources.FileSource`, raw pixels of an array) are the corrected choice. The meta
covariance is then ``Σ_pre = cov(μ_1 … μ_C)`` (:func:`mepo_lab.covariance.meta_covariance`).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab.backbones.base import cls_features
from mepo_lab.device import pick_device
from mepo_lab.mepo.sources import ArraySource, BatchSource


def pick_per_class(labels: np.ndarray, per_class: int, seed: int, classes: list[str] | None = None) -> np.ndarray:
    """``per_class`` random indices of every class ``0 … C−1``, without replacement, class by class.

    Raises one ``ValueError`` naming the smallest class when it has fewer than ``per_class`` images.
    """
    labels = np.asarray(labels, np.int64)
    n_classes = len(classes) if classes is not None else int(labels.max()) + 1
    counts = np.bincount(labels, minlength=n_classes)
    if counts.min() < per_class:
        c = int(counts.argmin())
        name = f"{classes[c]!r} (id {c})" if classes is not None else f"{c}"
        raise ValueError(f"pretraining class {name} has only {counts[c]} images but {per_class} are asked for "
                         f"per class: lower it, e.g. --set mepo.cov_samples_per_class={counts[c]}")
    rng = np.random.default_rng([seed, 11])
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                           for c in range(n_classes)])


@torch.no_grad()
def class_prototypes(model: torch.nn.Module, data: np.ndarray | BatchSource, labels: np.ndarray | None = None, *,
                     per_class: int, augment: bool, seed: int = 0, batch_size: int = 512, device: str = "auto",
                     progress: bool = True) -> np.ndarray:
    """Prototype matrix ``P`` of shape ``(C, d)`` (float64), row ``c`` = mean feature of class ``c``.

    ``data``: a :class:`~mepo_lab.mepo.sources.BatchSource` (``labels`` unused), or uint8 images
    ``(N, 3, H, W)`` with their ``labels`` (an :class:`~mepo_lab.mepo.sources.ArraySource` with the
    synthetic world's preprocessing). ``augment`` picks the train transform (official) or clean
    images (corrected); the draws come from a generator seeded by ``seed``.
    """
    source = data if isinstance(data, BatchSource) else ArraySource(data, labels)
    pick = pick_per_class(source.labels, per_class, seed, source.classes)
    dev, gen = pick_device(device), torch.Generator().manual_seed(seed)
    model = model.eval().to(dev)
    batches = [pick[s:s + batch_size] for s in range(0, len(pick), batch_size)]
    feed = source.load([source.prepare(b, augment, gen) for b in batches], dev)
    sums = torch.zeros(source.n_classes, model.num_features, dtype=torch.float64)
    for b, (x, _) in tqdm(zip(batches, feed, strict=True), total=len(batches), desc="prototypes", disable=not progress,
                          mininterval=1.0):
        sums.index_add_(0, torch.from_numpy(source.labels[b]), cls_features(model, x).double().cpu())
    return (sums / per_class).numpy()
