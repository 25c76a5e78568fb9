"""Image transforms of the downstream GCL protocol, on uint8 tensors (so they can run batched on a GPU).

Source: ``kangzhiq/MISA`` ``methods/_trainer.py`` ``setup_distributed_dataset`` (the MePo GCL code ships
the same logic compiled; docs/reference/si_blurry.md#training):

* train: to uint8 -> ``Resize((224, 224))`` -> ``RandomCrop(224, padding=4)`` -> ``RandomHorizontalFlip``
  -> ``AutoAugment`` (CIFAR10 policy if ``'cifar'`` is in the dataset name, IMAGENET policy if
  ``'imagenet'`` is, which includes ImageNet-R and Tiny-ImageNet; none for CUB) -> ``/255`` -> ``Normalize``;
* test: ``Resize((224, 224))`` -> to float in [0, 1] -> ``Normalize``.

Normalisation. The Si-Blurry lineage (MVP, MISA, MePo's GCL stage) normalises with *dataset* statistics
(:data:`mepo_lab.data.normalization.STATISTICS`: CIFAR-100 numbers for CIFAR-100 and CUB-200, ImageNet
numbers for ImageNet-R) -- ``normalization="dataset"``, the default; ``"backbone"`` takes the weights' own
statistics from ``backbone_cfg = timm.data.resolve_model_data_config(model)`` (mean = std = 0.5 for the
Sup-21K checkpoints). All choices are resolved by :func:`mepo_lab.data.normalization.mean_std`.

Differences from the reference: MISA loads float images and turns them back into uint8 with
``(x * 255).to(torch.uint8)`` (exact for float32 ``k / 255``), and its test resize works on PIL images;
here images stay uint8 throughout and every resize is torchvision's antialiased tensor resize, so pixel
values can differ slightly from PIL's. On a batch ``(B, 3, H, W)`` one call draws *one* crop/flip/
AutoAugment op for the whole batch; call per sample for per-sample randomness.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchvision.transforms import v2

from mepo_lab.data.normalization import mean_std as _mean_std


def autoaugment_policy(dataset_name: str) -> v2.AutoAugmentPolicy | None:
    """MISA's rule: CIFAR10 policy for names with 'cifar', IMAGENET for 'imagenet', else none."""
    name = dataset_name.lower()
    if "cifar" in name:
        return v2.AutoAugmentPolicy.CIFAR10
    if "imagenet" in name:
        return v2.AutoAugmentPolicy.IMAGENET
    return None


def _to_uint8() -> list:
    return [v2.ToImage(), v2.ToDtype(torch.uint8, scale=True)]


def _to_normalized(mean: Sequence[float], std: Sequence[float]) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]


def train_transform(dataset_name: str, size: int = 224, normalization: str = "dataset",
                    backbone_cfg: Mapping | None = None) -> v2.Compose:
    """Training augmentation of the protocol; accepts PIL images or uint8 tensors ``(..., 3, H, W)``."""
    mean, std = _mean_std(normalization, dataset_name, backbone_cfg)
    policy = autoaugment_policy(dataset_name)
    augment = [v2.AutoAugment(policy)] if policy is not None else []
    return v2.Compose([*_to_uint8(), v2.Resize((size, size), antialias=True), v2.RandomCrop(size, padding=4),
                       v2.RandomHorizontalFlip(), *augment, *_to_normalized(mean, std)])


def test_transform(dataset_name: str, size: int = 224, normalization: str = "dataset",
                   backbone_cfg: Mapping | None = None) -> v2.Compose:
    """Evaluation transform of the protocol: resize to ``(size, size)``, scale to [0, 1], normalise."""
    mean, std = _mean_std(normalization, dataset_name, backbone_cfg)
    return v2.Compose([*_to_uint8(), v2.Resize((size, size), antialias=True), *_to_normalized(mean, std)])


def load_transform(dataset_name: str, size: int = 224) -> v2.Compose:
    """What MISA applies when it *loads* images (before the GPU transforms): ImageNet/CUB-style datasets
    are resized to ``(size, size)`` so they can be batched; CIFAR stays at 32 x 32. Output is uint8."""
    name = dataset_name.lower()
    resize = [] if "cifar" in name else [v2.Resize((size, size), antialias=True)]
    return v2.Compose([*_to_uint8(), *resize, v2.ToPureTensor()])
