"""Backbones by name, resolved in one place: ``experiment``, the CLI, the widgets and the notebooks read this.

Four families of names:

==================  =======================================================  ======================================
family              names                                                    meta covariance ``Σ_pre``
==================  =======================================================  ======================================
``micro``           ``random``, ``pretrained``, ``mepo`` (the micro ViT of    prototypes of the world's pretraining
                    the embedded default, its random twin, its refinement)   classes under that backbone (cached)
``zoo``             :data:`mepo_lab.backbones.zoo.ZOO` keys (``sup21k``,     none: its pretraining data is not here
                    ``sup21k_1k``, ``sup21k_1k_augreg``, ``dino``)
``local``           ``local:<path>``: a head-less state dict, e.g. a          ``cov_<stem>.npy`` next to the file
                    refinement's ``meta_E.pth``                              (written by ``mepo-lab refine``)
``release``         ``mepo:<release>``: a released MePo backbone             the released ``cov_*.npy``
                    (:data:`mepo_lab.mepo.releases.RELEASES`)
==================  =======================================================  ======================================

A built :class:`~mepo_lab.backbones.base.Backbone` keeps its name in ``kind`` (``local`` for files), so
:func:`meta_covariance_of` and :func:`isa_prompts_for` dispatch on the backbone itself. A backbone that
records its own covariance file (``info["covariance"]``, as :func:`mepo_lab.mepo.real.refine_real`
returns it) uses that file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mepo_lab.backbones.base import Backbone
from mepo_lab.backbones.zoo import LOCAL_PREFIX, ZOO
from mepo_lab.config import Preset
from mepo_lab.mepo.releases import RELEASES

__all__ = ["MICRO", "RELEASE_PREFIX", "backbone_family", "backbone_names", "check_backbone_name", "get_backbone",
           "is_micro", "isa_prompts_for", "meta_covariance_of"]

MICRO = ("random", "pretrained", "mepo")
RELEASE_PREFIX = "mepo:"


def backbone_names() -> list[str]:
    """Every valid name, parametrised ones as patterns (``local:<path>``), in the order of the table above."""
    return [*MICRO, *ZOO, f"{LOCAL_PREFIX}<path>", *(f"{RELEASE_PREFIX}{r}" for r in RELEASES)]


def backbone_family(name: str) -> str:
    """``"micro"``, ``"zoo"``, ``"local"`` or ``"release"``; one ``ValueError`` listing the valid names otherwise."""
    if name in MICRO:
        return "micro"
    if name in ZOO:
        return "zoo"
    if name.startswith(LOCAL_PREFIX) and len(name) > len(LOCAL_PREFIX):
        return "local"
    if name.startswith(RELEASE_PREFIX) and name[len(RELEASE_PREFIX):] in RELEASES:
        return "release"
    raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(backbone_names())}")


def check_backbone_name(name: str) -> str:
    """``name`` if valid (an ``argparse`` ``type=``: the CLI derives its checks from this registry)."""
    backbone_family(name)
    return name


def is_micro(backbone: Backbone | str) -> bool:
    """Whether a backbone (or name) is the micro ViT of the embedded default."""
    return (backbone.kind if isinstance(backbone, Backbone) else backbone) in MICRO


def get_backbone(name: str, preset: Preset, data_home: str | Path | None = None, progress: bool = True,
                 **kwargs) -> Backbone:
    """The backbone called ``name`` (see the module table); micro-ViT names use ``preset``'s configs.

    ``kwargs`` go to :func:`mepo_lab.backbones.zoo.create_backbone` for zoo and local names (e.g. ``arch=``
    for a ``local:`` file of another architecture). Weights that are neither cached nor downloadable raise
    one :class:`~mepo_lab.backbones.hf_cache.WeightsUnavailableError` saying how to provide them.
    """
    family = backbone_family(name)
    if family == "micro":
        from mepo_lab.backbones.pretrain import pretrained_backbone, random_backbone

        if name == "random":
            return random_backbone(preset)
        if name == "pretrained":
            return pretrained_backbone(preset, data_home, progress=progress)
        from mepo_lab.mepo.pipeline import mepo_backbone

        return mepo_backbone(preset, data_home, progress=progress)
    from mepo_lab.backbones.zoo import create_backbone

    if family == "release":
        from mepo_lab.mepo.releases import mepo_artifacts

        release = name[len(RELEASE_PREFIX):]
        path = mepo_artifacts(release, include=["meta"])["meta"]
        bb = create_backbone(f"{LOCAL_PREFIX}{path}", arch=RELEASES[release].arch, **kwargs)
        return Backbone(bb.model, name, bb.weights_hash, bb.info | {"release": release})
    return create_backbone(name, **kwargs)


def meta_covariance_of(preset: Preset, backbone: Backbone, data_home: str | Path | None = None,
                       progress: bool = True) -> np.ndarray:
    """The meta covariance ``Σ_pre`` that goes with ``backbone`` (the module table's last column).

    Raises one ``ValueError`` naming the options when the backbone has none (a zoo backbone: its
    prototypes would need its pretraining data; refine it first with ``mepo-lab refine --pretrain-data``).
    """
    from mepo_lab.mepo.covariance import load_covariance

    info = backbone.info or {}
    if "covariance" in info:
        return load_covariance(info["covariance"], dim=backbone.feature_dim)
    if is_micro(backbone):
        from mepo_lab.mepo.pipeline import covariance_for

        return covariance_for(preset, backbone, data_home, progress=progress)
    if backbone.kind.startswith(RELEASE_PREFIX):
        from mepo_lab.mepo.releases import load_mepo_covariance, mepo_artifacts

        path = mepo_artifacts(backbone.kind[len(RELEASE_PREFIX):], include=["covariance"])["covariance"]
        return load_mepo_covariance(path, dim=backbone.feature_dim)
    if backbone.kind == "local" and "path" in info:
        weights = Path(info["path"])
        sibling = weights.with_name(f"cov_{weights.stem}.npy")
        if sibling.exists():
            return load_covariance(sibling, dim=backbone.feature_dim)
    raise ValueError(f"no meta covariance for backbone {backbone.kind!r}: use a released MePo backbone "
                     f"({', '.join(RELEASE_PREFIX + r for r in RELEASES)}), a refinement folder of `mepo-lab refine "
                     "--pretrain-data ...` (local:<folder>/meta_E.pth next to cov_meta_E.npy), or pass "
                     "covariance=... explicitly")


def isa_prompts_for(preset: Preset, backbone: Backbone, data_home: str | Path | None = None,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MISA's starting prompts ``(e_prompt, g_prompt)`` for ``backbone``.

    The micro ViT: ISA-lite prompts warmed up on the *pretrained* micro ViT (:func:`mepo_lab.isa.isa_prompts`;
    MePo's MISA scripts pair the released ISA prompts with a refined backbone the same way). ViT-B/16
    backbones: the released ISA tensors (:func:`mepo_lab.mepo.releases.load_prompts`).
    """
    if is_micro(backbone):
        from mepo_lab.backbones.pretrain import pretrained_backbone
        from mepo_lab.isa import isa_prompts

        return isa_prompts(preset, pretrained_backbone(preset, data_home, progress=progress), data_home,
                           progress=progress)
    from mepo_lab.mepo.releases import load_prompts, mepo_artifacts

    files = mepo_artifacts(include=["e_prompt", "g_prompt"])
    return tuple(load_prompts(files["e_prompt"], files["g_prompt"]))

