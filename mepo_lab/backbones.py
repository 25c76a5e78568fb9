"""Backbones: the micro ViT of the synthetic world (a plain timm ``VisionTransformer``), image
normalisation, the feature every method uses, and weight fingerprints.

The feature is MePo's: the CLS token after the final LayerNorm, ``forward_features(x)[:, 0]``
(reference notes §1.5), for the micro ViT exactly as for ViT-B/16. No ViT code is forked here.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from mepo_lab import paths
from mepo_lab.config import MicroViTConfig

# Input normalisation of the synthetic world ("dataset statistics", the Si-Blurry convention).
WORLD_MEAN = (0.5, 0.5, 0.5)
WORLD_STD = (0.25, 0.25, 0.25)
TRANSFORM_ID = "uint8/255-norm(0.5,0.25)"


def create_micro_vit(cfg: MicroViTConfig, image_size: int, num_classes: int = 0,
                     seed: int | None = None) -> VisionTransformer:
    """A timm ``VisionTransformer`` sized by ``cfg`` (CLS pooling, post-norm features).

    ``num_classes=0`` gives the head-less backbone (the released MePo checkpoint format);
    ``seed`` makes timm's initialisation reproducible without touching the global RNG.
    """
    if image_size % cfg.patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {cfg.patch_size}")
    if cfg.embed_dim % cfg.num_heads:
        raise ValueError(f"embed_dim {cfg.embed_dim} must be divisible by num_heads {cfg.num_heads}")
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(seed)
        return VisionTransformer(img_size=image_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                 depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                                 num_classes=num_classes, global_pool="token", class_token=True)


@dataclass(frozen=True)
class Preprocess:
    """uint8 ``(B, 3, H, W)`` → float32: resize to ``size × size`` (if given), then ``(x / 255 − mean) / std``.

    The default is the synthetic world's (no resize, mean 0.5, std 0.25). Real datasets use their
    statistics (the Si-Blurry convention) or the backbone's, and ``size=224`` for ViT-B/16: images can
    stay small in memory and be resized on the device, batch by batch.
    """

    mean: tuple[float, float, float] = WORLD_MEAN
    std: tuple[float, float, float] = WORLD_STD
    size: int | None = None

    def __call__(self, images: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """Normalised float batch; with ``augment`` (uint8 → uint8, e.g. :class:`OnlineAugment`) the images
        are first resized *as uint8* (torchvision's antialiased resize, as the protocol's GPU transform
        does), then augmented, then normalised."""
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


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` → uint8 ``(B, 3, size, size)`` with torchvision's antialiased bilinear resize."""
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, [size, size], antialias=True)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """The synthetic world's preprocessing: uint8 → ``(x / 255 − 0.5) / 0.25`` (:data:`WORLD_PREPROCESS`)."""
    return WORLD_PREPROCESS(images)


def cls_features(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Post-LayerNorm CLS token ``f = norm(ViT(x))[:, 0]`` of a normalised batch (MePo's feature)."""
    return model.forward_features(x)[:, 0]


def weights_hash(model_or_state: torch.nn.Module | dict, n: int = 16) -> str:
    """SHA-256 fingerprint of a state dict (names, dtypes, shapes and bytes), first ``n`` hex digits."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:n]


def backbone_state(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """The head-less state dict (keys starting with ``head.`` dropped), as MePo releases them."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("head.")}


def save_mepo_backbone(model: torch.nn.Module, path: str | Path) -> Path:
    """Save ``model``'s head-less state dict, the format of the released MePo checkpoints (§4).

    A plain ``OrderedDict`` of tensors (no wrapper, no ``module.`` prefix, keys starting with
    ``head.`` dropped), written atomically with ``torch.save``.
    """
    state = OrderedDict(backbone_state(model))
    return paths.atomic_write(path, lambda h: torch.save(state, h))


def load_mepo_backbone(path: str | Path, arch: str | torch.nn.Module = "vit_base_patch16_224",
                       **timm_kwargs) -> torch.nn.Module:
    """Load a MePo checkpoint into a head-less timm ViT (``arch`` name) or into a given module.

    Keys starting with ``head.`` are dropped, as the reference does; any other missing or unexpected
    key raises one ``ValueError`` that lists them all. With a name, the model is built by
    ``timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no MePo checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    if isinstance(arch, str):
        import timm

        arch = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)
    expected = {k for k in arch.state_dict() if not k.startswith("head.")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit {type(arch).__name__}: missing keys {missing or 'none'}; "
                         f"unexpected keys {unexpected or 'none'}. Pass the architecture the checkpoint "
                         "was saved from (arch=... and its timm kwargs)")
    try:
        arch.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches: same keys, another architecture
        raise ValueError(f"{path} does not fit {type(arch).__name__}: {err}".split("\n\t")[0]) from None
    return arch.eval()


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; any other string is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (all tensors of ``model.parameters()``)."""
    return int(sum(np.prod(p.shape) for p in model.parameters()))
