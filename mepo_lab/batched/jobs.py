"""A preset's feature-cached run as a :class:`~mepo_lab.batched.runner.FeatureJob` (what ``run_on_features`` runs).

One place builds the stream, the learner with its alignment and the record template of a feature-cached run, so
:func:`mepo_lab.experiment.run_on_features` (one run, :func:`~mepo_lab.protocols.online.run_gcl`) and the batched
grids (:func:`~mepo_lab.batched.runner.run_batched`) run exactly the same thing.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mepo_lab.batched.runner import FeatureJob
from mepo_lab.config import Preset, as_dict
from mepo_lab.learners import make_learner
from mepo_lab.mepo.alignment import make_alignment
from mepo_lab.protocols.results import RunResult
from mepo_lab.protocols.streams import si_blurry


def feature_job(preset: Preset, learner: str, feats, seed: int, *, alignment: str = "none",
                alpha: float | None = None, stream_seed: int | None = None, out_path: str | Path | None = None,
                callbacks: Iterable[Any] = (), **learner_kwargs) -> FeatureJob:
    """The run of ``learner`` on ``feats`` (a :class:`~mepo_lab.experiment.WorldFeatures`) for ``seed``.

    The stream is Si-Blurry with the preset's knobs and ``stream_seed`` (default ``seed``); ``linear`` gets the
    preset's learning rate; ``alignment`` uses ``feats.covariance`` with α (default ``preset.align.alpha``).
    """
    s, alpha = preset.stream, preset.align.alpha if alpha is None else alpha
    stream = si_blurry(feats.train.targets, n_tasks=s.n_tasks, n=s.n, m=s.m,
                       seed=seed if stream_seed is None else stream_seed, stochastic=s.stochastic)
    if learner == "linear":
        learner_kwargs.setdefault("lr", preset.gcl.lr)
    transform = make_alignment(alignment, alpha, feats.covariance, preset.align.ridge,
                               preset.align.official_singleton)
    if transform is not None:
        learner_kwargs["transform"] = transform
    result = RunResult(method=learner, backbone=feats.backbone.kind, alignment=alignment, seed=seed,
                       config=as_dict(preset), meta={"backbone_hash": feats.backbone.weights_hash,
                                                     "features": feats.train.key, "alpha": alpha})
    return FeatureJob(make_learner(learner, **learner_kwargs), feats.train.tensor(), feats.test.tensor(),
                      feats.test.targets, stream, train_seed=seed, result=result, out_path=out_path,
                      callbacks=tuple(callbacks))
