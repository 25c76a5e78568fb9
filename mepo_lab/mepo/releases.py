"""The released MePo artefacts (Hugging Face repo ``long2333/MePo``), fetched into the HF cache.

Sources: the MePo README (github ``SunGL001/MePo``) and ``docs/reference/releases.md``. Per backbone the
repo holds, under ``mepo_ckps/<folder>/``, the untouched pretrained ViT-B/16 (``vit_<folder>_meta_0.pth``),
the meta-refined one (``vit_<folder>_meta_<K>.pth``; both head-less timm state dicts, 150 tensors) and
the meta covariance ``Σ_pre`` (``cov_<folder>_meta_<K>.npy``, 768×768 float64), plus MISA's
pretrained prompts ``mepo_ckps/{e,g}_prompt.pt``.

Only ``sup21k``'s names (epoch 5) are stated in the README. The epochs of ``sup1k`` (2) and
``ibot21k`` (30) are INFERRED from the checkpoints the downstream scripts use, not verified
against the repository listing: they live in :data:`RELEASES` only, so a wrong one is a one-line fix.

Files are downloaded with ``huggingface_hub.hf_hub_download`` into the Hugging Face cache; offline, a
missing file is one :class:`~mepo_lab.backbones.hf_cache.WeightsUnavailableError` naming every missing
file and how to provide it (:mod:`mepo_lab.backbones.hf_cache`).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError

from mepo_lab.backbones.hf_cache import NOT_CACHED_ERRORS, WeightsUnavailableError, unavailable_message
from mepo_lab.mepo.covariance import load_covariance

__all__ = ["ARTIFACT_KEYS", "RELEASES", "REPO_ID", "Prompts", "Release", "WeightsUnavailableError",
           "artifact_files", "load_mepo_covariance", "load_prompts", "mepo_artifacts"]

REPO_ID = "long2333/MePo"
ROOT = "mepo_ckps"
ARTIFACT_KEYS = ("meta", "meta_0", "covariance", "e_prompt", "g_prompt")


@dataclass(frozen=True)
class Release:
    """One backbone's released files: ``folder`` under ``mepo_ckps/``, the refined ``meta_epoch``,
    whether the file names are stated by the README (``verified``) and the tagged timm ``arch``
    whose architecture and pretrained cfg (input normalisation) fit the checkpoint."""

    folder: str
    meta_epoch: int
    verified: bool
    arch: str


RELEASES: dict[str, Release] = {
    "sup21k": Release("sup21k", 5, True, "vit_base_patch16_224.orig_in21k"),
    # INFERRED epochs (the downstream scripts' checkpoints): fix here if the Hub listing differs.
    "sup1k": Release("sup1k", 2, False, "vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    # iBOT is not in timm; the .dino tag is the same ViT-B/16 with ImageNet mean/std in its cfg.
    "ibot21k": Release("ibot21k", 30, False, "vit_base_patch16_224.dino"),
}
_ALIASES = {"sup21k_1k": "sup1k", "ibot": "ibot21k"}

E_PROMPT_SHAPE, E_PROMPT_VIEW = (10, 60, 768), (10, 3, 20, 768)  # pool 10 × layers 2–4 × 20 tokens
G_PROMPT_SHAPE, G_PROMPT_VIEW = (1, 20, 768), (1, 2, 10, 768)  # layers 0–1 × 10 tokens


class Prompts(NamedTuple):
    """MISA's pretrained prompts: ``e`` (10, 3, 20, 768) and ``g`` (1, 2, 10, 768), CPU, detached."""

    e: torch.Tensor
    g: torch.Tensor


def _release(backbone: str) -> Release:
    key = _ALIASES.get(backbone, backbone)
    if key not in RELEASES:
        raise ValueError(f"unknown MePo backbone {backbone!r}; valid: {', '.join(RELEASES)} "
                         f"(aliases: {', '.join(f'{a}→{b}' for a, b in _ALIASES.items())})")
    return RELEASES[key]


def artifact_files(backbone: str = "sup21k") -> dict[str, str]:
    """Repository-relative file names of ``backbone``'s artefacts, keyed like :data:`ARTIFACT_KEYS`."""
    rel = _release(backbone)
    stem, tag = f"{ROOT}/{rel.folder}", f"{rel.folder}_meta"
    return {"meta": f"{stem}/vit_{tag}_{rel.meta_epoch}.pth", "meta_0": f"{stem}/vit_{tag}_0.pth",
            "covariance": f"{stem}/cov_{tag}_{rel.meta_epoch}.npy",
            "e_prompt": f"{ROOT}/e_prompt.pt", "g_prompt": f"{ROOT}/g_prompt.pt"}


def mepo_artifacts(backbone: str = "sup21k", revision: str | None = None,
                   cache_dir: str | os.PathLike | None = None, *,
                   include: Iterable[str] | None = None) -> dict[str, Path]:
    """Local paths of the released MePo artefacts, downloaded into the HF cache when needed.

    Keys: ``meta`` (refined backbone ``.pth``), ``meta_0`` (untouched PTM, same format),
    ``covariance`` (``.npy``), ``e_prompt``, ``g_prompt`` (MISA prompts); ``include`` restricts them
    (``meta_0`` alone is 343 MB). ``revision`` pins a branch, tag or commit (default ``main``).
    Load them with :func:`mepo_lab.backbones.zoo.create_backbone` (``f"local:{path}"``, ``arch=RELEASES[b].arch``)
    or :func:`mepo_lab.backbones.load_mepo_backbone`, :func:`load_mepo_covariance`, :func:`load_prompts`.
    Raises :class:`WeightsUnavailableError` listing every missing file when offline.
    """
    files = artifact_files(backbone)
    keys = _check_keys(include)
    found: dict[str, Path] = {}
    for i, key in enumerate(keys):
        try:
            found[key] = Path(hf_hub_download(REPO_ID, files[key], revision=revision, cache_dir=cache_dir))
        except NOT_CACHED_ERRORS:
            missing = [files[key]] + [files[k] for k in keys[i + 1:] if not _cached(files[k], revision, cache_dir)]
            raise WeightsUnavailableError(_artifacts_message(backbone, missing, revision, cache_dir)) from None
        except EntryNotFoundError as err:  # online, but the Hub has no such file
            raise FileNotFoundError(f"{REPO_ID} has no file {files[key]!r} ({err.__class__.__name__}). "
                                    f"File names of {_release(backbone).folder!r} may be inferred, not verified: "
                                    "fix its entry in mepo_lab.mepo.releases.RELEASES") from None
    return found


def _check_keys(include: Iterable[str] | None) -> tuple[str, ...]:
    if include is None:
        return ARTIFACT_KEYS
    keys = tuple(include)
    unknown = sorted(set(keys) - set(ARTIFACT_KEYS))
    if unknown:
        raise ValueError(f"unknown artefact keys {unknown}; valid: {', '.join(ARTIFACT_KEYS)}")
    return keys


def _cached(filename: str, revision: str | None, cache_dir: str | os.PathLike | None) -> bool:
    hit = try_to_load_from_cache(REPO_ID, filename, cache_dir=cache_dir, revision=revision)
    return isinstance(hit, str)


def _artifacts_message(backbone: str, missing: list[str], revision: str | None,
                       cache_dir: str | os.PathLike | None) -> str:
    folder = _release(backbone).folder
    remedies = [f"run once with network access (HF_HUB_OFFLINE unset): mepo_artifacts({backbone!r})",
                (f"or download them elsewhere: hf download {REPO_ID} --include '{ROOT}/{folder}/*' "
                 f"--include '{ROOT}/*_prompt.pt' (huggingface_hub < 1.0: huggingface-cli download "
                 f"{REPO_ID} --include '{ROOT}/{folder}/*' '{ROOT}/*_prompt.pt'), then copy the folder "
                 f"models--{REPO_ID.replace('/', '--')} into this cache")]
    return unavailable_message(f"MePo artefacts for {backbone!r}", REPO_ID, missing, revision, cache_dir,
                               remedies)


def _load_prompt(path: str | os.PathLike, shape: tuple, view: tuple, name: str) -> torch.Tensor:
    prompt = torch.load(path, map_location="cpu", weights_only=True)  # MISA saved them on cuda:0
    if not isinstance(prompt, torch.Tensor):
        raise ValueError(f"{name} file {os.fspath(path)!r} holds a {type(prompt).__name__}, not a tensor")
    if tuple(prompt.shape) != shape:
        raise ValueError(f"{name} in {os.fspath(path)!r}: expected shape {shape}, got {tuple(prompt.shape)}")
    return prompt.detach().reshape(view)


def load_prompts(path_e: str | os.PathLike, path_g: str | os.PathLike) -> Prompts:
    """Load MISA's prompts on CPU, detached (they were saved with ``requires_grad=True``).

    e-prompt (10, 60, 768) → (10, 3, 20, 768): pool 10, layers 2–4, 20 tokens each;
    g-prompt (1, 20, 768) → (1, 2, 10, 768): layers 0–1, 10 tokens each. A wrong shape raises
    ``ValueError`` naming expected and actual shapes.
    """
    return Prompts(_load_prompt(path_e, E_PROMPT_SHAPE, E_PROMPT_VIEW, "e-prompt"),
                   _load_prompt(path_g, G_PROMPT_SHAPE, G_PROMPT_VIEW, "g-prompt"))


def load_mepo_covariance(path: str | os.PathLike, dim: int = 768) -> np.ndarray:
    """The released meta covariance: ``dim``×``dim``, validated (symmetric, PSD), float64."""
    return load_covariance(path, dim)
