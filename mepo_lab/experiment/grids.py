"""Grids of GCL runs: the quickstart's combos over seeds, backbone comparisons, sweeps, explorers' run functions.

A *combo* is ``(learner, backbone, alignment)``. Feature-cached combos run together as one batched program
(:mod:`mepo_lab.batched`); image learners one by one (:mod:`mepo_lab.experiment.runs`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mepo_lab import paths
from mepo_lab.backbones.base import Backbone
from mepo_lab.batched import run_batched
from mepo_lab.batched.jobs import feature_job
from mepo_lab.config import Preset
from mepo_lab.experiment.runs import WorldFeatures, run_one, world_features, with_covariance
from mepo_lab.learners import IMAGE_LEARNERS
from mepo_lab.protocols.online import run_gcl
from mepo_lab.protocols.results import RunResult, paired_difference
from mepo_lab.protocols.streams import si_blurry
from mepo_lab.registry import get_backbone


def first_task_hscores(preset: Preset, kinds: Iterable[str] = ("pretrained", "mepo"), seeds: Iterable[int] = (1,),
                       samples: int | None = None, *, data_home: str | Path | None = None,
                       progress: bool = True) -> list[dict]:
    """H-score ``tr(Cov(f)⁺ Cov(E[f|y]))`` of each backbone's frozen features on the first task of the Si-Blurry
    stream of every seed (its first ``samples`` samples in presentation order, or all of them).

    A transferability check of MePo's "rapid adaptation" claim with the H-score of Wu et al. (NeurIPS 2025,
    arXiv 2502.11609): the higher, the more linearly separable the first classes the learner meets. Rows:
    ``backbone``, ``seed``, ``n`` samples, ``classes`` seen, ``H`` and its ceiling ``min(d, classes − 1)``.
    """
    from mepo_lab.hembed.hscore import h_score

    s, rows = preset.stream, []
    for kind in kinds:
        feats = world_features(preset, get_backbone(kind, preset, data_home, progress), data_home, progress)
        for seed in seeds:
            stream = si_blurry(feats.train.targets, n_tasks=s.n_tasks, n=s.n, m=s.m, seed=seed, stochastic=s.stochastic)
            index = stream.task_indices[0][:samples]
            y = feats.train.targets[index]
            classes = len(np.unique(y))
            rows.append({"backbone": kind, "seed": seed, "n": len(index), "classes": classes,
                         "H": h_score(feats.train.features[index].astype(np.float64), y),
                         "H_max": min(feats.train.features.shape[1], classes - 1)})
    return rows


def feature_runner(preset: Preset, feats: WorldFeatures | dict[str, WorldFeatures], learner: str = "linear"
                   ) -> Callable[..., RunResult]:
    """``run(seed=1, backbone=None, alignment="none", alpha=None, callbacks=(), **stream)`` for the widgets.

    ``stream`` overrides fields of :class:`~mepo_lab.config.StreamConfig` (``n``, ``m``, ``n_tasks``,
    ``stochastic``); ``backbone`` picks one of ``feats`` when it is a dict. Each call is one feature-cached
    run (seconds). ``run.many([dict(seed=1, ...), dict(seed=2, ...)])`` runs several settings as one batched
    program (:func:`run_many_on_features`: the same records, several times faster than one call each).
    """
    from dataclasses import fields

    from mepo_lab.config import StreamConfig, override

    knobs = {f.name for f in fields(StreamConfig)}

    def job(seed: int = 1, backbone: str | None = None, alignment: str = "none", alpha: float | None = None,
            callbacks: Iterable[Any] = (), **stream):
        unknown = sorted(set(stream) - knobs)
        if unknown:
            raise ValueError(f"unknown stream setting(s) {unknown}: choose from {sorted(knobs)}")
        chosen = feats if isinstance(feats, WorldFeatures) else feats[backbone or next(iter(feats))]
        p = override(preset, {f"stream.{k}": v for k, v in stream.items()}) if stream else preset
        return feature_job(p, learner, chosen, seed, alignment=alignment, alpha=alpha, callbacks=callbacks)

    def run(**settings) -> RunResult:
        j = job(**settings)
        return run_gcl(j.learner, j.train_x, j.test_x, j.test_y, j.stream, preset.gcl, train_seed=j.train_seed,
                       result=j.result, callbacks=j.callbacks, progress=False)

    run.many = lambda settings: run_batched([job(**s) for s in settings], preset.gcl, progress=False)
    return run


def compare_backbones(preset: Preset, backbones: dict[str, Backbone], learner: str = "linear", *,
                      alignment: str = "none", seeds: Iterable[int] | None = None,
                      data_home: str | Path | None = None, progress: bool = False) -> list[dict]:
    """One flat result row per backbone and seed (``backbone`` = the dict's key), for tables and paired gains."""
    rows = []
    for name, backbone in backbones.items():
        feats = world_features(preset, backbone, data_home, progress)
        for seed in preset.seeds if seeds is None else seeds:
            run = run_one(preset, learner, backbone, seed, alignment=alignment, feats=feats, data_home=data_home,
                          progress=progress)
            rows.append(run.summary() | {"backbone": name})
    return rows


MEPO_VARIANTS = {"alignment only (official)": ("pretrained", "official"),
                 "alignment only (corrected)": ("pretrained", "corrected"),
                 "refined backbone only": ("mepo", "none"), "MePo + official alignment": ("mepo", "official"),
                 "MePo + corrected alignment": ("mepo", "corrected")}


def mepo_gains(rows: list[dict], metric: str = "A_auc") -> dict[str, dict]:
    """Paired differences (:func:`~mepo_lab.protocols.results.paired_difference`) of each MePo ingredient over
    ``linear`` on the plain pretrained backbone, for the variants present in ``rows``."""
    base = {"method": "linear", "backbone": "pretrained", "alignment": "none"}
    present = {(r["method"], r["backbone"], r["alignment"]) for r in rows}
    if ("linear", "pretrained", "none") not in present:
        return {}
    return {label: paired_difference(rows, {"method": "linear", "backbone": b, "alignment": a}, base, metric)
            for label, (b, a) in MEPO_VARIANTS.items() if ("linear", b, a) in present}


def sweep(run: Callable[..., RunResult], knob: str, values: Iterable[Any], seeds: Iterable[int],
          **fixed: Any) -> list[dict]:
    """One run per value of ``knob`` and seed (``run`` as :func:`feature_runner` makes it); each flat row records
    the value under ``knob``, ready for :func:`~mepo_lab.protocols.results.paired_difference` against another."""
    seeds, values = list(seeds), list(values)
    settings = [{"seed": seed, **fixed, knob: value} for value in values for seed in seeds]
    many = getattr(run, "many", None)  # a feature_runner batches the whole sweep
    results = many(settings) if many is not None else [run(**s) for s in settings]
    return [res.summary() | {knob: s[knob]} for res, s in zip(results, settings)]


def run_grid(preset: Preset, combos: list[tuple[str, str, str]], out: str | Path, *,
             data_home: str | Path | None = None, progress: bool = True, dataset: str = "synthetic",
             normalization: str = "dataset", data_kwargs: dict | None = None,
             log: Callable[[str], None] = print) -> tuple[list[RunResult], list[dict]]:
    """Every combo for every seed of ``preset`` on ``dataset``; ``out/results.json`` is rewritten after each run.

    The feature-cached cells (``linear``, ``ncm``) run first, all together as one batched program
    (:func:`mepo_lab.batched.run_batched`, seconds; records equal to one run at a time); image learners then run
    one by one, and a killed image run resumes from its last evaluation when the grid is started again.
    """
    if not preset.seeds:
        raise ValueError("preset.seeds is empty: run at least one seed, e.g. --set seeds=1,2,3")
    data = {"dataset": dataset, "normalization": normalization, "data_kwargs": data_kwargs}
    out = Path(out)
    kinds = dict.fromkeys(b for _, b, _ in combos)
    backbones = {kind: get_backbone(kind, preset, data_home, progress) for kind in kinds}
    feats: dict[str, WorldFeatures] = {}
    for learner, kind, alignment in combos:
        if learner not in IMAGE_LEARNERS and kind not in feats:
            feats[kind] = world_features(preset, backbones[kind], data_home, progress, **data)
        if learner not in IMAGE_LEARNERS and alignment != "none":
            with_covariance(preset, feats[kind], data_home, progress)
    cells = [(seed, combo) for seed in preset.seeds for combo in combos]
    path = {cell: out / "runs" / "{}_{}_{}_seed{}.json".format(*cell[1], cell[0]) for cell in cells}
    batched = [cell for cell in cells if cell[1][0] not in IMAGE_LEARNERS]
    done = dict(zip(batched, run_batched(
        [feature_job(preset, learner, feats[kind], seed, alignment=alignment, out_path=path[(seed, (learner, kind, alignment))])
         for seed, (learner, kind, alignment) in batched], preset.gcl, progress=progress)))
    if batched:
        log(f"      {len(batched)} feature-cached runs as one batched program: "
            f"{next(iter(done.values())).meta['batched']['seconds']:.1f} s")
    runs, rows = [], []
    for seed, (learner, kind, alignment) in cells:
        run = done.get((seed, (learner, kind, alignment)))
        if run is None:
            run = run_one(preset, learner, backbones[kind], seed, alignment=alignment, data_home=data_home,
                          progress=progress, out_path=path[(seed, (learner, kind, alignment))], resume=True, **data)
        runs.append(run)
        rows.append(run.summary())
        paths.atomic_save_json(out / "results.json", rows)
        seconds = "batched" if "batched" in run.meta else f"{run.wall_seconds:.1f} s"
        log(f"      {learner:7s} {kind:10s} {alignment:9s} seed {seed}: A_auc {100 * run.metrics['A_auc']:6.2f}"
            f"  A_last {100 * run.metrics['A_last']:6.2f}  ({seconds})")
    return runs, rows
