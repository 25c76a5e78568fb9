"""MePo on real pretraining data streamed from image files (``docs/reference/mepo.md#pseudo-tasks`` to
``#meta-covariance``).

The reference refines every backbone on the ImageNet-1K train split: per meta-epoch a class
permutation cut into groups of 100 classes, 50 pseudo tasks of 2 classes, 200 fresh images per class
per draw, train transform ``RandomResizedCrop(224) + flip + ColorJitter(brightness=63/255)``, a joint
set drawn afresh with the test transform ``Resize(256) + CenterCrop(224)``, ImageNet mean/std, batch
256. :func:`refine_real` runs that loop (:class:`~mepo_lab.mepo.refine.MetaRefiner`) on any labelled
image folder — ``"imagefolder:<path>"`` (ImageNet's ``train/``), ``"tiny-imagenet"``, any
:func:`~mepo_lab.data.real.get_dataset` name — with images decoded in DataLoader workers
(:class:`~mepo_lab.mepo.sources.FileSource`), then computes the meta covariance (:func:`real_covariance`).

A refinement folder holds ``meta_0.pth … meta_E.pth`` (released format), ``state.pt`` and ``info.json``
(resume), ``data.json`` (backbone and data it belongs to) and ``cov_meta_E.npy`` (+ its ``.json``).
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from mepo_lab import paths
from mepo_lab.backbones.base import Backbone, load_mepo_backbone, weights_hash
from mepo_lab.config import MePoConfig
from mepo_lab.data.normalization import IMAGENET_PREPROCESS, Preprocess, preprocess_for
from mepo_lab.device import pick_device
from mepo_lab.mepo import distributed
from mepo_lab.mepo.covariance import load_covariance, meta_covariance, save_covariance
from mepo_lab.mepo.prototypes import class_prototypes
from mepo_lab.mepo.refine import MetaRefiner, read_info, refinement_fields
from mepo_lab.mepo.sources import BatchSource, FileSource
from mepo_lab.mepo.switches import resolve


def pretraining_source(pretrain_data: str, root: str | Path | None = None, *, size: int = 224, workers: int = 2,
                       seed: int = 0, preprocess: Preprocess = IMAGENET_PREPROCESS, download: bool = False,
                       verify: bool = True) -> FileSource:
    """The train split of ``pretrain_data`` (a ``get_dataset`` name or ``imagefolder:<path>``) as a FileSource."""
    from mepo_lab.data.real import get_dataset

    dataset = get_dataset(pretrain_data, "train", root=root, download=download, verify=verify)
    return FileSource(dataset, size=size, preprocess=preprocess, workers=workers, seed=seed)


def validate_pretraining(source: BatchSource, cfg: MePoConfig, covariance: bool = True) -> None:
    """One clear ``ValueError`` per problem of ``cfg`` on this pretraining set, before any work starts."""
    cfg = resolve(cfg)  # bad switches, sizes < 1, group_size not a multiple of tasks_per_group
    counts = np.bincount(source.labels, minlength=source.n_classes)
    n = len(counts)
    if cfg.group_size > n:
        fit = n - n % cfg.tasks_per_group
        raise ValueError(f"mepo.group_size ({cfg.group_size}) exceeds the {n} classes of the pretraining data: "
                         f"use --set mepo.group_size={fit} (a multiple of mepo.tasks_per_group="
                         f"{cfg.tasks_per_group}) or more classes")
    c = int(counts.argmin())
    for field, need in (("samples_per_class", cfg.samples_per_class),
                        ("cov_samples_per_class", cfg.cov_samples_per_class if covariance else 0)):
        if counts[c] < need:
            raise ValueError(f"pretraining class {source.classes[c]!r} (id {c}) has only {counts[c]} images but "
                             f"mepo.{field} is {need}: use --set mepo.{field}={counts[c]} or add images")


def check_input_size(model: torch.nn.Module, size: int) -> None:
    """A ViT with a fixed input size must get ``size × size`` images."""
    embed = getattr(model, "patch_embed", None)
    fixed = getattr(embed, "img_size", None)
    if fixed is not None and getattr(embed, "strict_img_size", True) and tuple(fixed) != (size, size):
        raise ValueError(f"the backbone takes {fixed[0]}x{fixed[1]} images but size={size}: "
                         f"pass size={fixed[0]} (--size {fixed[0]})")


def _record(source_bb: Backbone, data: FileSource, cfg: MePoConfig) -> dict:
    refinement = refinement_fields(asdict(cfg))
    return {"backbone": source_bb.weights_hash, "data": data.describe(), "config": refinement}


def _claim(folder: Path, record: dict) -> None:
    """Write ``data.json``, or check that the folder's refinement is of this backbone and data."""
    path = folder / "data.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != json.loads(json.dumps(record)):
            raise ValueError(f"{folder} holds a refinement of another backbone, pretraining set or configuration; "
                             "use another --out folder or delete it to start over")
    else:
        paths.atomic_save_json(path, record)


def refine_real(backbone: Backbone, pretrain_data: str, root: str | Path | None = None,
                cfg: MePoConfig | None = None, folder: str | Path | None = None, device: str = "auto",
                size: int = 224, workers: int = 2, progress: bool = True, callbacks: Iterable[Any] = (), *,
                data_home: str | Path | None = None, meta_epoch: int | None = None,
                covariance: bool = True, normalization: str = "imagenet", download: bool = False,
                verify: bool = True) -> Backbone:
    """MePo-refine ``backbone`` on the image files of ``pretrain_data``; the refined :class:`Backbone`.

    ``backbone`` is a :class:`~mepo_lab.backbones.base.Backbone` (by name: :func:`mepo_lab.registry.get_backbone`).

    Loads ``folder/meta_{E}.pth`` (``E = meta_epoch or cfg.meta_epochs``) when present, else refines
    (resuming a killed run) and saves one checkpoint per meta-epoch in the released format. With
    ``covariance`` also writes ``cov_meta_{E}.npy`` (:func:`real_covariance`; its path is in
    ``info["covariance"]``). ``folder`` defaults to ``<data home>/mepo/real-<hash>`` of the backbone,
    data and configuration. ``normalization``: ``imagenet`` (the reference, for every backbone) or
    ``backbone`` (timm's data config, e.g. 0.5/0.5 for Sup-21K; docs/reference/mepo.md#q13), or ``dataset``
    (the pretraining dataset's own statistics, where known).
    """
    cfg = resolve(cfg or MePoConfig())
    if not isinstance(backbone, Backbone):
        raise TypeError(f"refine_real takes a Backbone, got {type(backbone).__name__}: build it by name with "
                        "mepo_lab.registry.get_backbone(name, preset)")
    source_bb = backbone
    check_input_size(source_bb.model, size)
    preprocess = preprocess_for(pretrain_data, source_bb.model, normalization, resize=False)
    data = pretraining_source(pretrain_data, root, size=size, workers=workers, seed=cfg.seed, download=download,
                              verify=verify, preprocess=preprocess)
    try:
        validate_pretraining(data, cfg, covariance)
        record = _record(source_bb, data, cfg)
        key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
        folder = Path(folder) if folder is not None else paths.subdir("mepo", data_home) / f"real-{key}"
        with distributed.main_first():
            _claim(folder, record)
        epochs, dev = meta_epoch or cfg.meta_epochs, pick_device(device)
        path = folder / f"meta_{epochs}.pth"
        if not path.exists():
            refiner = MetaRefiner(copy.deepcopy(source_bb.model), data, cfg, folder, device=dev)
            refiner.resume()
            refiner.run(epochs, callbacks=callbacks, progress=progress)
            del refiner
        model = load_mepo_backbone(path, copy.deepcopy(source_bb.model))
        info = read_info(folder) | {"folder": str(folder), "meta_epoch": epochs, "source": source_bb.weights_hash,
                                    "pretrain_data": pretrain_data, "checkpoint": str(path)}
        refined = Backbone(model, "mepo-real", weights_hash(model), info)
        if covariance:
            cov_path = folder / f"cov_meta_{epochs}.npy"
            if distributed.is_main():  # under torchrun the other ranks are done once the weights are
                real_covariance(refined, data, cfg, cov_path, device=device, progress=progress)
            info["covariance"] = str(cov_path)
    finally:
        data.close()
    return refined


def real_covariance(backbone: Backbone, data: str | BatchSource, cfg: MePoConfig | None = None,
                    path: str | Path | None = None, *, root: str | Path | None = None, size: int = 224,
                    workers: int = 2, device: str = "auto", progress: bool = True) -> np.ndarray:
    """Meta covariance ``Σ_pre = cov(μ_1 … μ_C)`` of ``backbone``'s class prototypes (``docs/reference/mepo.md#meta-covariance``).

    ``μ_c`` = mean post-LayerNorm CLS feature of ``mepo.cov_samples_per_class`` random images of class
    ``c`` of ``data`` (a source, or a pretraining-data name read with ``root``/``size``/``workers``),
    through the train transform when ``mepo.cov_augment`` (official) or the test transform
    (corrected). Saved at ``path`` (validated float64 ``d × d``, ``np.save``) with a ``.json`` of its
    settings; an existing file with the same settings is loaded instead.
    """
    cfg = resolve(cfg or MePoConfig())
    settings = {"backbone": backbone.weights_hash, "per_class": cfg.cov_samples_per_class,
                "augment": cfg.cov_augment, "seed": cfg.seed}
    meta = Path(path).with_suffix(".json") if path is not None else None
    if meta is not None and Path(path).exists() and meta.exists() and json.loads(meta.read_text()) == settings:
        return load_covariance(path, dim=backbone.feature_dim)
    source = data if isinstance(data, BatchSource) else pretraining_source(data, root, size=size, workers=workers,
                                                                             seed=cfg.seed)
    try:
        protos = class_prototypes(backbone.model, source, per_class=cfg.cov_samples_per_class,
                                  augment=cfg.cov_augment, seed=cfg.seed, batch_size=cfg.batch_size,
                                  device=device, progress=progress)
    finally:
        if source is not data:
            source.close()
    cov = meta_covariance(protos)
    if path is not None:
        save_covariance(path, cov)
        paths.atomic_save_json(meta, settings)
    return cov
