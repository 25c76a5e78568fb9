"""Pretrained ViT-B/16 backbones by tagged timm name, and local weight files through timm's loader.

The papers' names map to timm ≥ 0.9 tagged names (``docs/reference/mepo.md#optimiser``; timm's
``timm/models/vision_transformer.py`` ``default_cfgs``): untagged names changed meaning across timm
versions (``vit_base_patch16_224`` is ``augreg2_in21k_ft_in1k`` since timm 0.9, ``augreg_in21k_ft_in1k``
before), so only tagged ones are used, and no ViT code is forked. Weights come from the Hugging Face Hub
into the HF cache.

Local files (``local:<path>``, e.g. a released MePo ``vit_*_meta_K.pth`` or an iBOT teacher converted
to a timm state dict) are loaded by ``timm.create_model(arch, pretrained=True,
pretrained_cfg_overlay=dict(file=path, ...), num_classes=0)``. In ``timm/models/_builder.py``
(``_resolve_pretrained_source``) a ``file`` entry outranks the Hub; ``load_pretrained`` then runs the
model's filter (``checkpoint_filter_fn``) and, when ``num_classes`` differs from the cfg's (1000 for
``vit_base_patch16_224``), drops ``head.weight``/``head.bias`` *and switches to strict=False*, so a
file missing keys would load silently. The overlay therefore also sets ``num_classes=0``: loading
stays strict and any missing, unexpected (``head.*`` included) or mis-shaped key is an error.
``custom_load=False`` keeps tags whose registry weights are ``.npz`` (``augreg_in21k_ft_in1k``) from
parsing the file as ``.npz`` (timm ≥ 1.0.x resets it itself in ``resolve_pretrained_cfg``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_data_config

from mepo_lab.backbones.base import Backbone, weights_hash
from mepo_lab.backbones.hf_cache import NOT_CACHED_ERRORS, WeightsUnavailableError, unavailable_message
from mepo_lab.data.normalization import IMAGENET_MEAN, IMAGENET_STD, backbone_mean_std

__all__ = ["ZOO", "DEFAULT_LOCAL_ARCH", "LOCAL_PREFIX", "WeightsUnavailableError", "create_backbone",
           "normalization_stats"]

LOCAL_PREFIX = "local:"
DEFAULT_LOCAL_ARCH = "vit_base_patch16_224"
_HALF = (0.5, 0.5, 0.5)


def _entry(timm_name: str, paper_name: str, description: str, mean: tuple, std: tuple) -> dict[str, Any]:
    return {"timm_name": timm_name, "paper_name": paper_name, "description": description,
            "mean": mean, "std": std}


# name → timm tagged model, what papers call it, and the input normalisation its timm cfg expects (a
# transcription that the tests compare with timm's own cfg).
ZOO: dict[str, dict[str, Any]] = {
    "sup21k": _entry("vit_base_patch16_224.orig_in21k", "Sup-21K",
                     "Google's original supervised ImageNet-21K ViT-B/16 (ViT-B_16.npz), head-less; "
                     "used by L2P/DualPrompt/MVP/MISA/MePo/FlyGCL", _HALF, _HALF),
    "sup21k_1k": _entry("vit_base_patch16_224.augreg2_in21k_ft_in1k", "Sup-21K/1K",
                        "AugReg ImageNet-21K pretrained, ImageNet-1K fine-tuned (augreg2); timm ≥ 0.9's "
                        "default for vit_base_patch16_224, i.e. MePo's 'sup1k' with timm 0.9.12", _HALF, _HALF),
    "sup21k_1k_augreg": _entry("vit_base_patch16_224.augreg_in21k_ft_in1k", "Sup-21K/1K (AugReg)",
                               "AugReg 21K→1K (first version); timm 0.6.x's default for "
                               "vit_base_patch16_224, the file FlyGCL mirrors", _HALF, _HALF),
    "dino": _entry("vit_base_patch16_224.dino", "DINO-1K",
                   "self-supervised DINO ViT-B/16 on ImageNet-1K, head-less", IMAGENET_MEAN, IMAGENET_STD),
}


def _valid_names() -> str:
    return ", ".join(list(ZOO) + [f"{LOCAL_PREFIX}<path>"])


def create_backbone(name: str, *, pretrained: bool = True, cache_dir: str | os.PathLike | None = None,
                    arch: str | None = None, freeze: bool = True, **timm_kwargs: Any) -> Backbone:
    """A head-less (``num_classes=0``) timm backbone in eval mode, frozen unless ``freeze=False``.

    ``name``: a key of :data:`ZOO` (``kind`` = that name) or ``local:<path>`` (``kind`` =
    ``"local"``) for a head-less state dict of ``arch`` (default ``vit_base_patch16_224``; pass the
    tagged name whose cfg fits, e.g. ``mepo_lab.mepo.releases.RELEASES["sup21k"].arch``). ``pretrained=False``
    gives timm's random initialisation (offline tests). ``cache_dir`` overrides the HF cache;
    ``timm_kwargs`` go to ``timm.create_model``. Raises ``ValueError`` for unknown names or a file
    that does not fit ``arch`` and :class:`WeightsUnavailableError` when weights cannot be fetched.
    """
    if "num_classes" in timm_kwargs:
        raise ValueError("create_backbone builds head-less backbones (num_classes=0); add a head yourself")
    if name.startswith(LOCAL_PREFIX):
        path = Path(name[len(LOCAL_PREFIX):]).expanduser()
        model = _create_local(path, arch or DEFAULT_LOCAL_ARCH, pretrained, timm_kwargs)
        kind, info = "local", {"path": str(path), "timm_name": arch or DEFAULT_LOCAL_ARCH}
    elif name in ZOO:
        if arch is not None:
            raise ValueError(f"arch= only applies to {LOCAL_PREFIX}<path> names, not to {name!r}")
        entry = ZOO[name]
        model = _create_registered(entry["timm_name"], pretrained, cache_dir, timm_kwargs)
        kind, info = name, {k: entry[k] for k in ("timm_name", "paper_name", "description")}
    else:
        raise ValueError(f"unknown backbone {name!r}; valid: {_valid_names()}")
    model.eval()
    if freeze:
        model.requires_grad_(False)
    info |= {"pretrained": pretrained, "timm_kwargs": dict(timm_kwargs)}
    return Backbone(model, kind, weights_hash(model), info)


def _create_registered(timm_name: str, pretrained: bool, cache_dir: str | os.PathLike | None,
                       timm_kwargs: dict) -> torch.nn.Module:
    try:
        return timm.create_model(timm_name, pretrained=pretrained, num_classes=0, cache_dir=cache_dir,
                                 **timm_kwargs)
    except NOT_CACHED_ERRORS:
        raise WeightsUnavailableError(_offline_message(timm_name, cache_dir)) from None


def _offline_message(timm_name: str, cache_dir: str | os.PathLike | None) -> str:
    cfg = timm.models.get_pretrained_cfg(timm_name)
    repo = cfg.hf_hub_id or f"timm/{timm_name}"
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors (or pytorch_model.bin)"]
    remedies = [(f"run once with network access (HF_HUB_OFFLINE unset): create_backbone(...) with "
                 f"pretrained=True downloads it (or: hf download {repo})"),
                (f"or load a local copy of the weights: create_backbone('{LOCAL_PREFIX}/path/to/weights.pth', "
                 f"arch='{timm_name}')")]
    return unavailable_message(f"Weights of {timm_name}", repo, files, None, cache_dir, remedies)


def _create_local(path: Path, arch: str, pretrained: bool, timm_kwargs: dict) -> torch.nn.Module:
    if not pretrained:
        raise ValueError(f"{LOCAL_PREFIX}<path> always loads the file; use pretrained=True "
                         f"(or create_backbone(..., pretrained=False) with a registry name for random weights)")
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path} (from {LOCAL_PREFIX}{path})")
    overlay = {"file": str(path), "num_classes": 0, "custom_load": False}
    try:
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=0,
                                 **timm_kwargs)
    except RuntimeError as err:  # torch's strict load_state_dict: missing / unexpected / mis-shaped keys
        if "Error(s) in loading state_dict" not in str(err):
            raise
        detail = " ".join(str(err).split()).rstrip(". ")
        detail = detail if len(detail) < 600 else detail[:600] + " ..."
        raise ValueError(f"{path} does not fit timm {arch!r}: {detail}. The file must be a head-less state "
                         "dict of that architecture (MePo's release format, see "
                         "mepo_lab.backbones.save_mepo_backbone); pass arch= and the timm kwargs it was "
                         "saved with") from None


def normalization_stats(name_or_model: str | torch.nn.Module | Backbone, mode: str = "dataset",
                        dataset: str | None = None) -> dict[str, tuple[float, ...]] | None:
    """Input normalisation: ``{"mean": (r, g, b), "std": (r, g, b)}`` or ``None``.

    ``mode="dataset"`` returns ``None``: the data module of ``dataset`` supplies that dataset's
    statistics (the Si-Blurry/MVP/MISA/MePo downstream convention; ``dataset`` is only passed
    through by callers). ``mode="backbone"`` returns what the weights expect, from timm's pretrained
    cfg (``timm.data.resolve_model_data_config``): mean = std = 0.5 for the two Sup checkpoints,
    ImageNet statistics for DINO. Names may be :data:`ZOO` keys or tagged timm names.
    """
    if mode == "dataset":
        return None
    if mode != "backbone":
        raise ValueError(f"mode must be 'dataset' or 'backbone', got {mode!r}")
    if isinstance(name_or_model, Backbone):
        name_or_model = name_or_model.model
    if isinstance(name_or_model, torch.nn.Module):
        return _as_dict(backbone_mean_std(name_or_model))
    if name_or_model.startswith(LOCAL_PREFIX):
        raise ValueError(f"a {LOCAL_PREFIX}<path> name carries no cfg: pass the loaded model or its arch")
    timm_name = ZOO.get(name_or_model, {}).get("timm_name", name_or_model)
    pretrained_cfg = timm.models.get_pretrained_cfg(timm_name)
    if pretrained_cfg is None:
        raise ValueError(f"unknown backbone {name_or_model!r}; valid: {', '.join(ZOO)} "
                         "or a tagged timm model name")
    return _as_dict(backbone_mean_std(resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict())))


def _as_dict(stats: tuple) -> dict[str, tuple[float, ...]]:
    return {"mean": stats[0], "std": stats[1]}
