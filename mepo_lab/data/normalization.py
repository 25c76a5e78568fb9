"""Input normalisation, in one place: the statistics, the choice between them, and :class:`Preprocess`.

Three conventions meet in this lab (see ``docs/reference/mepo.md#optimiser`` and
``docs/reference/si_blurry.md#training``):

* ``"dataset"`` — the downstream GCL stage of the Si-Blurry lineage (MVP, MISA, MePo) normalises with
  the *dataset's* statistics, the table of ``kangzhiq/MISA@bcea2af utils/data_loader.py:get_statistics``
  (:data:`STATISTICS`; CUB-200 really gets the CIFAR-100 numbers there). The synthetic world has its own
  fixed statistics (mean 0.5, std 0.25).
* ``"imagenet"`` — MePo's meta-refinement normalises with ImageNet mean/std for *every* backbone.
* ``"backbone"`` — what the weights were trained with, from timm's pretrained config
  (``timm.data.resolve_model_data_config``): mean = std = 0.5 for the Sup-21K checkpoints.

:func:`preprocess_for` turns a choice into a :class:`Preprocess` (uint8 → resized, normalised float),
the object every feature extractor, learner and refinement source applies on the device.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch

RGB = tuple[float, float, float]
NORMALIZATIONS = ("dataset", "backbone", "imagenet")

WORLD_MEAN: RGB = (0.5, 0.5, 0.5)
WORLD_STD: RGB = (0.25, 0.25, 0.25)
IMAGENET_MEAN: RGB = (0.485, 0.456, 0.406)
IMAGENET_STD: RGB = (0.229, 0.224, 0.225)
CIFAR100_MEAN: RGB = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: RGB = (0.2675, 0.2565, 0.2761)
TRANSFORM_ID = "uint8/255-norm(0.5,0.25)"  # the synthetic world's preprocessing (part of feature-cache keys)


class Stats(NamedTuple):
    """Normalisation statistics, number of classes and native input size of one dataset."""

    mean: RGB
    std: RGB
    n_classes: int
    input_size: int


# kangzhiq/MISA utils/data_loader.py get_statistics: "cifar100", "imagenet-r", "cub200", "tinyimagenet".
STATISTICS: dict[str, Stats] = {
    "cifar100": Stats(CIFAR100_MEAN, CIFAR100_STD, 100, 32),
    "imagenet-r": Stats(IMAGENET_MEAN, IMAGENET_STD, 200, 224),
    "cub200": Stats(CIFAR100_MEAN, CIFAR100_STD, 200, 224),  # sic: CIFAR-100 statistics for CUB, as in MISA
    "tiny-imagenet": Stats((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), 200, 64),
}


@dataclass(frozen=True)
class Preprocess:
    """uint8 ``(B, 3, H, W)`` → float32: resize to ``size × size`` (if given), then ``(x / 255 − mean) / std``.

    The default is the synthetic world's (no resize, mean 0.5, std 0.25). Real datasets use their
    statistics or the backbone's, and ``size=224`` for ViT-B/16: images can stay small in memory and be
    resized on the device, batch by batch.
    """

    mean: RGB = WORLD_MEAN
    std: RGB = WORLD_STD
    size: int | None = None

    def __call__(self, images: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """Normalised float batch; with ``augment`` (uint8 → uint8, e.g. ``OnlineAugment``) the images are
        first resized *as uint8* (torchvision's antialiased resize, as the protocol's GPU transform does),
        then augmented, then normalised."""
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}; pass raw pixels, not normalised ones")
        if augment is not None:
            if self.size is not None and tuple(images.shape[-2:]) != (self.size, self.size):
                images = resize_uint8(images, self.size)
            images = augment(images)
        x = images.float()
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                antialias=True, align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x / 255.0 - mean) / std

    @property
    def id(self) -> str:
        """A string identifying the preprocessing (part of feature-cache keys)."""
        if self == Preprocess():
            return TRANSFORM_ID
        return f"uint8/255-resize{self.size}-norm({self.mean},{self.std})"


WORLD_PREPROCESS = Preprocess()
#: MePo's meta-training normalisation, used for every backbone (docs/reference/mepo.md#q13).
IMAGENET_PREPROCESS = Preprocess(mean=IMAGENET_MEAN, std=IMAGENET_STD)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` → uint8 ``(B, 3, size, size)`` with torchvision's antialiased bilinear resize."""
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, [size, size], antialias=True)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """The synthetic world's preprocessing: uint8 → ``(x / 255 − 0.5) / 0.25`` (:data:`WORLD_PREPROCESS`)."""
    return WORLD_PREPROCESS(images)


def dataset_statistics(dataset: str) -> Stats:
    """:data:`STATISTICS` entry of a dataset (``cifar100``, ``imagenet-r``, ``cub200``, ``tiny-imagenet``)."""
    if dataset not in STATISTICS:
        raise ValueError(f"no dataset statistics for {dataset!r} (known: synthetic, {', '.join(STATISTICS)}); "
                         f"use normalization='backbone' (the weights' timm config) or 'imagenet'")
    return STATISTICS[dataset]


def backbone_mean_std(model_or_cfg: torch.nn.Module | Mapping) -> tuple[RGB, RGB]:
    """``(mean, std)`` the weights expect: timm's data config of a model, or such a config (a mapping)."""
    if isinstance(model_or_cfg, torch.nn.Module):
        import timm

        model_or_cfg = timm.data.resolve_model_data_config(model_or_cfg)
    if not isinstance(model_or_cfg, Mapping) or "mean" not in model_or_cfg or "std" not in model_or_cfg:
        raise ValueError("normalization='backbone' needs the model (or timm.data.resolve_model_data_config(model), "
                         "a dict with 'mean' and 'std')")
    return _rgb(model_or_cfg["mean"]), _rgb(model_or_cfg["std"])


def mean_std(normalization: str, dataset: str | None = None,
             backbone: torch.nn.Module | Mapping | None = None) -> tuple[RGB, RGB]:
    """The ``(mean, std)`` pair of a normalisation choice (:data:`NORMALIZATIONS`).

    ``dataset``: the dataset's statistics (``synthetic``: the world's; real ones: :data:`STATISTICS`);
    ``backbone``: :func:`backbone_mean_std` of ``backbone``; ``imagenet``: ImageNet mean/std.
    """
    if normalization == "dataset":
        if dataset == "synthetic":
            return WORLD_MEAN, WORLD_STD
        stats = dataset_statistics(str(dataset))
        return stats.mean, stats.std
    if normalization == "backbone":
        if backbone is None:
            raise ValueError("normalization='backbone' needs the backbone's timm data config: pass the model, or "
                             "backbone_cfg=timm.data.resolve_model_data_config(model) to the transforms")
        return backbone_mean_std(backbone)
    if normalization == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")


def input_size(model: torch.nn.Module) -> int | None:
    """The square input side a ViT was built for (``patch_embed.img_size``), ``None`` when it has none."""
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return int(size[0]) if size else None


def preprocess_for(dataset: str | None, model: torch.nn.Module | None = None, normalization: str = "dataset", *,
                   resize: bool = True) -> Preprocess:
    """:class:`Preprocess` for ``dataset`` under ``model``: :func:`mean_std` of ``normalization`` and, with
    ``resize``, a resize to the model's input size (:func:`input_size`). The synthetic world is rendered
    at the micro ViT's input size and uses :data:`WORLD_PREPROCESS` (its statistics, no resize).
    """
    mean, std = mean_std(normalization, dataset, model)
    size = input_size(model) if resize and model is not None else None
    return Preprocess(_rgb(mean), _rgb(std), size)


def _rgb(values) -> RGB:
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"expected 3 channel statistics, got {values}")
    return values  # type: ignore[return-value]
