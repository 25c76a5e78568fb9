"""One GCL run, on cached features or on images, on any dataset (the pieces every grid is made of).

Backbones come by name from :mod:`mepo_lab.registry` (the micro ViT ``random | pretrained | mepo`` or real-scale
ones); datasets are the synthetic world or a real one. Alignment uses the meta covariance of the *same*
backbone (:func:`mepo_lab.registry.meta_covariance_of`), so ``pretrained + corrected`` is "MetaCov without
MetaRep" and ``mepo + corrected`` is the full method.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mepo_lab.backbones.base import Backbone
from mepo_lab.backbones.features import FeatureSet, cached_features
from mepo_lab.batched import run_batched
from mepo_lab.batched.jobs import feature_job
from mepo_lab.config import Preset, as_dict
from mepo_lab.data.base import ImageArrays
from mepo_lab.data.normalization import WORLD_PREPROCESS, preprocess_for
from mepo_lab.data.online_augment import online_augment_for
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.device import pick_device
from mepo_lab.learners import IMAGE_LEARNERS, PROMPT_LEARNERS, make_learner
from mepo_lab.mepo.alignment import make_alignment
from mepo_lab.protocols.online import run_gcl
from mepo_lab.protocols.results import RunResult
from mepo_lab.protocols.streams import si_blurry
from mepo_lab.registry import get_backbone, isa_prompts_for, meta_covariance_of


@dataclass
class WorldFeatures:
    """Downstream train/test features of one backbone (and its meta covariance, once computed)."""

    backbone: Backbone
    train: FeatureSet
    test: FeatureSet
    covariance: np.ndarray | None = None


def world_features(preset: Preset, backbone: Backbone, data_home: str | Path | None = None,
                   progress: bool = True, dataset: str = "synthetic", normalization: str = "dataset",
                   data_kwargs: dict | None = None) -> WorldFeatures:
    """Cached downstream train/test features of ``backbone`` on ``dataset`` (the world by default).

    Images are rendered or decoded only on a cache miss; real datasets use their preprocessing
    (:func:`mepo_lab.data.normalization.preprocess_for`), which is part of the cache key.
    """
    sets = {}
    for split in ("train", "test"):
        if dataset == "synthetic":
            world = SyntheticWorld(preset.world)
            name, make, pre = (world.dataset_name("downstream", split),
                               lambda w=world, sp=split: w.dataset("downstream", sp), WORLD_PREPROCESS)
        else:
            from mepo_lab.data.arrays import dataset_arrays

            name, pre = f"{dataset}-{split}", preprocess_for(dataset, backbone.model, normalization)

            def make(sp=split, nm=name):
                images, targets = dataset_arrays(dataset, sp, data_home=data_home, **(data_kwargs or {}))
                return ImageArrays(images, targets, [str(c) for c in range(int(targets.max()) + 1)], nm)
        sets[split] = cached_features(backbone, name, make, data_home=data_home, batch_size=preset.feature_batch_size,
                                      device=preset.device, progress=progress, preprocess=pre, amp=preset.gcl.amp)
    return WorldFeatures(backbone, sets["train"], sets["test"])


def with_covariance(preset: Preset, feats: WorldFeatures, data_home: str | Path | None = None,
                    progress: bool = True) -> WorldFeatures:
    """Attach the backbone's meta covariance (:func:`meta_covariance_of`)."""
    if feats.covariance is None:
        feats.covariance = meta_covariance_of(preset, feats.backbone, data_home, progress)
    return feats


def run_on_features(preset: Preset, learner: str, feats: WorldFeatures, seed: int, *, alignment: str = "none",
                    alpha: float | None = None, stream_seed: int | None = None,
                    out_path: str | Path | None = None, callbacks: Iterable[Any] = (), progress: bool = True,
                    resume: bool = False, **learner_kwargs) -> RunResult:
    """One feature-cached Si-Blurry run (``stream_seed`` defaults to ``seed``; α to ``preset.align.alpha``).

    Many such runs at once: :func:`run_many_on_features` (one batched program, the same records)."""
    job = feature_job(preset, learner, feats, seed, alignment=alignment, alpha=alpha, stream_seed=stream_seed,
                      **learner_kwargs)
    return run_gcl(job.learner, job.train_x, job.test_x, job.test_y, job.stream, preset.gcl, train_seed=seed,
                   result=job.result, callbacks=callbacks, out_path=out_path, progress=progress, resume=resume)


def run_many_on_features(preset: Preset, runs: Iterable[dict], progress: bool = False) -> list[RunResult]:
    """Feature-cached runs as one batched program (:func:`mepo_lab.batched.run_batched`): each dict holds the
    arguments of :func:`run_on_features` (``learner``, ``feats``, ``seed``, ``alignment``, ``alpha``, ...).
    Records equal those of separate :func:`run_on_features` calls; ``wall_seconds`` is the shared time."""
    jobs = [feature_job(preset, **run) for run in runs]
    return run_batched(jobs, preset.gcl, progress=progress)


@lru_cache(maxsize=2)
def _world_images(world_cfg) -> tuple:
    world = SyntheticWorld(world_cfg)
    train, test = world.dataset("downstream", "train"), world.dataset("downstream", "test")
    return train.images, train.targets, test.images, test.targets


def _images(dataset: str, preset: Preset, backbone: Backbone, data_home, normalization: str, **data_kwargs):
    """(train images, train labels, test images, test labels, preprocessing) of ``dataset``."""
    if dataset == "synthetic":
        return (*_world_images(preset.world), WORLD_PREPROCESS)
    from mepo_lab.data.arrays import dataset_arrays

    train = dataset_arrays(dataset, "train", data_home=data_home, **data_kwargs)
    test = dataset_arrays(dataset, "test", data_home=data_home, **data_kwargs)
    return (*train, *test, preprocess_for(dataset, backbone.model, normalization))


def run_on_images(preset: Preset, learner: str, backbone: Backbone, seed: int, *, alignment: str = "none",
                  alpha: float | None = None, dataset: str = "synthetic", normalization: str = "dataset",
                  covariance: np.ndarray | None = None, data_home: str | Path | None = None,
                  out_path: str | Path | None = None, callbacks: Iterable[Any] = (), progress: bool = True,
                  resume: bool = False, data_kwargs: dict | None = None, **learner_kwargs) -> RunResult:
    """One Si-Blurry run of an image learner (``finetune``, ``l2p``, ``dualprompt``, ``misa``).

    ``dataset``: ``synthetic`` (the world) or a real one (``cifar100``, ``imagenet-r``, ``cub200``, ...,
    see :func:`mepo_lab.data.get_dataset`; ``data_kwargs`` go there: ``root``, ``download``, ``verify``).
    MePo's alignment acts on the prompted CLS feature before the classifier, with ``covariance``
    (default: :func:`meta_covariance_of` the backbone). ``misa`` starts
    from the ISA prompts of the *pretrained* backbone, as MePo's MISA scripts do next to a refined one.
    """
    s, alpha = preset.stream, preset.align.alpha if alpha is None else alpha
    trx, try_, tex, tey, pre = _images(dataset, preset, backbone, data_home, normalization, **(data_kwargs or {}))
    stream = si_blurry(try_, n_tasks=s.n_tasks, n=s.n, m=s.m, seed=seed, stochastic=s.stochastic)
    if learner != "finetune":  # finetune has its own two learning rates
        learner_kwargs.setdefault("lr", preset.gcl.lr)
    if learner == "misa" and "prompts" not in learner_kwargs:
        learner_kwargs["prompts"] = isa_prompts_for(preset, backbone, data_home, progress)
    if learner in PROMPT_LEARNERS and "query_bank" not in learner_kwargs:  # evaluation queries, once per backbone
        learner_kwargs["query_bank"] = _query_bank(preset, backbone, dataset, tex, pre, data_home)
    if alignment != "none":
        if covariance is None:
            covariance = meta_covariance_of(preset, backbone, data_home, progress)
        learner_kwargs["transform"] = make_alignment(alignment, alpha, covariance, preset.align.ridge,
                                                     preset.align.official_singleton)
    result = RunResult(method=learner, backbone=backbone.kind, alignment=alignment, seed=seed,
                       config=as_dict(preset), meta={"backbone_hash": backbone.weights_hash, "alpha": alpha,
                                                     "dataset": dataset, "normalization": normalization})
    learner_kwargs.setdefault("amp", preset.gcl.amp)
    g = preset.gcl
    learner_kwargs.setdefault("augment", online_augment_for(dataset, g.augment, g.augment_draws, g.augment_policy))
    if learner in PROMPT_LEARNERS:  # torch.compile of the backbone passes (CUDA only under "auto")
        learner_kwargs.setdefault("compile", g.compile)
        learner_kwargs.setdefault("compile_mode", g.compile_mode)
    if learner == "finetune":
        learner_kwargs.setdefault("backbone_lr", preset.gcl.finetune_backbone_lr)
        learner_kwargs.setdefault("head_lr", preset.gcl.lr)
    model = make_learner(learner, backbone=copy.deepcopy(backbone.model), preprocess=pre, **learner_kwargs)
    return run_gcl(model, trx, tex, tey, stream, preset.gcl, train_seed=seed, result=result, callbacks=callbacks,
                   out_path=out_path, device=pick_device(preset.device), progress=progress, resume=resume)


def _query_bank(preset: Preset, backbone: Backbone, dataset: str, images, pre, data_home):
    """The prompt learners' test-set queries of ``backbone`` (:func:`mepo_lab.learners.queries.query_bank`)."""
    from mepo_lab.device import Amp
    from mepo_lab.learners.queries import bank_key, query_bank

    device = pick_device(preset.device)
    name = SyntheticWorld(preset.world).dataset_name("downstream", "test") if dataset == "synthetic" else f"{dataset}-test"
    key = bank_key(backbone.weights_hash, name, pre.id, Amp(device, preset.gcl.amp).describe(), len(images))
    return query_bank(backbone.model, images, pre, key, device=device, amp=preset.gcl.amp, data_home=data_home)


def run_one(preset: Preset, learner: str, backbone: Backbone, seed: int, *, alignment: str = "none",
            feats: WorldFeatures | None = None, dataset: str = "synthetic", normalization: str = "dataset",
            data_kwargs: dict | None = None, data_home: str | Path | None = None, progress: bool = True,
            **run_kwargs) -> RunResult:
    """One run of any learner: image learners on images (:func:`run_on_images`), the others on the backbone's
    cached features (``feats``, computed when not given) with its meta covariance when aligning."""
    if learner in IMAGE_LEARNERS:
        return run_on_images(preset, learner, backbone, seed, alignment=alignment, dataset=dataset,
                             normalization=normalization, data_kwargs=data_kwargs, data_home=data_home,
                             progress=progress, **run_kwargs)
    if feats is None:
        feats = world_features(preset, backbone, data_home, progress, dataset=dataset, normalization=normalization,
                               data_kwargs=data_kwargs)
    if alignment != "none":
        with_covariance(preset, feats, data_home, progress)
    return run_on_features(preset, learner, feats, seed, alignment=alignment, progress=False, **run_kwargs)


def backbone_features(preset: Preset, kinds: Iterable[str] = ("pretrained", "mepo"), *, covariance: bool = True,
                      data_home: str | Path | None = None, progress: bool = True) -> dict[str, WorldFeatures]:
    """``{name: WorldFeatures}`` of the named backbones on the synthetic world, each with its meta covariance."""
    feats = {}
    for kind in kinds:
        feats[kind] = world_features(preset, get_backbone(kind, preset, data_home, progress), data_home, progress)
        if covariance:
            with_covariance(preset, feats[kind], data_home, progress)
    return feats
