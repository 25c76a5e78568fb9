"""MePo on the embedded default, cached: pretrained micro ViT → refined backbone → meta covariance.

``<data home>/mepo/<key>/`` holds one refinement (``meta_0.pth`` … ``meta_E.pth``, ``state.pt``,
``info.json``) and its covariance ``cov_meta_E.npy``; ``key`` hashes the input backbone, the world and
the resolved MePo configuration (``meta_epochs`` excluded, so asking for more meta-epochs resumes).
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mepo_lab import paths, shipped
from mepo_lab.backbones.base import Backbone, load_mepo_backbone, weights_hash
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.backbones.pretrain import pretrained_backbone
from mepo_lab.config import Preset
from mepo_lab.data.synthetic import WORLD_VERSION, SyntheticWorld, pretraining_fields
from mepo_lab.device import pick_device
from mepo_lab.mepo import distributed
from mepo_lab.mepo.covariance import load_covariance, meta_covariance, save_covariance
from mepo_lab.mepo.prototypes import class_prototypes
from mepo_lab.mepo.refine import MetaRefiner, read_info
from mepo_lab.mepo.sources import ArraySource
from mepo_lab.mepo.switches import resolve


def mepo_folder(preset: Preset, source: Backbone, data_home: str | Path | None = None) -> Path:
    """Where the refinement of ``source`` under ``preset.mepo`` lives."""
    cfg = {k: v for k, v in asdict(resolve(preset.mepo)).items() if k not in ("meta_epochs", "cov_augment",
                                                                                 "cov_samples_per_class")
           and not (k == "schedule" and v == "sequential")}  # the default schedule keeps the old keys
    blob = json.dumps([source.weights_hash, WORLD_VERSION, pretraining_fields(preset.world), cfg], sort_keys=True)
    return paths.subdir("mepo", data_home) / hashlib.sha256(blob.encode()).hexdigest()[:12]


def mepo_backbone(preset: Preset, data_home: str | Path | None = None, *, source: Backbone | None = None,
                  meta_epoch: int | None = None, progress: bool = True,
                  callbacks: Iterable[Any] = (), folder: str | Path | None = None) -> Backbone:
    """The MePo-refined backbone after ``meta_epoch`` (default ``preset.mepo.meta_epochs``) meta-epochs.

    Loads ``meta_{E}.pth`` when present (callbacks with ``on_cached(info)`` then get the stored log, for live
    plots to replay); otherwise refines (resuming a killed run) and saves it.
    ``source`` defaults to the cached pretrained micro ViT of ``preset``; ``folder`` to
    :func:`mepo_folder`. Real pretraining data: :func:`mepo_lab.mepo.real.refine_real`.
    """
    with distributed.main_first():  # under torchrun, rank 0 fills the caches the others then read
        source = source or pretrained_backbone(preset, data_home, progress=progress)
        folder = Path(folder) if folder is not None else mepo_folder(preset, source, data_home)
        epochs = meta_epoch or preset.mepo.meta_epochs
        path = folder / f"meta_{epochs}.pth"
        if not path.exists() and folder.parent == paths.subdir("mepo", data_home):
            shipped.install(f"mepo/{folder.name}", data_home, what=f"MePo refinement of the {preset.name} preset",
                            log=shipped.notice(progress, "; delete the folder to refine here"))
        cached = path.exists()
    if not cached:
        world = SyntheticWorld(preset.world)
        data = world.dataset("pretrain", "train")
        refiner = MetaRefiner(copy.deepcopy(source.model), ArraySource(data.images, data.targets), preset.mepo,
                              folder, device=pick_device(preset.device))
        refiner.resume()
        refiner.run(epochs, callbacks=callbacks, progress=progress)
    model = load_mepo_backbone(path, create_micro_vit(preset.vit, preset.world.image_size))
    info = read_info(folder)  # the folder's log may go past meta-epoch E (a longer run): keep E's part
    info |= {"folder": str(folder), "meta_epoch": epochs, "source": source.weights_hash,
             "log": [e for e in info["log"] if e["meta_epoch"] < epochs]}
    if cached:  # nothing ran: let live plots replay the stored curves
        for cb in callbacks:
            if hasattr(cb, "on_cached"):
                cb.on_cached(info)
    return Backbone(model, "mepo", weights_hash(model), info)


def covariance_for(preset: Preset, backbone: Backbone, data_home: str | Path | None = None,
                   progress: bool = True) -> np.ndarray:
    """The meta covariance ``Σ_pre`` of ``backbone`` over the pretraining classes' prototypes, cached.

    Prototypes use ``mepo.cov_samples_per_class`` images per class, augmented or clean per
    ``mepo.cov_augment`` (official: augmented).
    """
    cfg = resolve(preset.mepo)
    tag = f"{backbone.weights_hash}-{cfg.cov_samples_per_class}-{'aug' if cfg.cov_augment else 'clean'}"
    path = paths.subdir("covariance", data_home) / f"cov_{tag}.npy"
    if not path.exists():
        shipped.install(f"covariance/{path.name}", data_home, what="meta covariance", log=shipped.notice(progress))
    if path.exists():
        return load_covariance(path, dim=backbone.feature_dim)
    data = SyntheticWorld(preset.world).dataset("pretrain", "train")
    protos = class_prototypes(backbone.model, ArraySource(data.images, data.targets),
                              per_class=cfg.cov_samples_per_class, augment=cfg.cov_augment, seed=cfg.seed,
                              device=preset.device, progress=progress)
    cov = meta_covariance(protos)
    save_covariance(path, cov)
    return cov
