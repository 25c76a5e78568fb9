"""Running the study's grid (``mepo-lab study``): refinement variants × learners × alignments × shifts × seeds.

Every variant's backbone is a cached refinement of the same pretrained micro ViT (:func:`variant_backbone`); its
meta covariance comes from its own configuration. Feature learners (``linear``, ``ncm``) run on the cached
features of the full stream; image learners (``finetune``, ``dualprompt``) on a course-sized stream of the same
world (``image_train_per_class`` images per class). ``finetune`` runs carry a feature-drift probe. ``results.json``
is rewritten atomically after every run; a rerun skips the cells it holds (same configuration).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.backbones.base import Backbone
from mepo_lab.backbones.probe import linear_probe
from mepo_lab.config import PRESETS, Preset, override, run_fingerprint
from mepo_lab.data.synthetic import WORLD_VERSION, SyntheticWorld
from mepo_lab.experiment import WorldFeatures, run_one, with_covariance, world_features
from mepo_lab.hembed.hscore import h_score
from mepo_lab.mepo.pipeline import mepo_backbone
from mepo_lab.registry import get_backbone
from mepo_lab.study.config import FEATURE_LEARNERS, VARIANTS, StudyConfig
from mepo_lab.study.diagnostics import DriftProbe

_GRID_FIELDS = ("name", "seeds", "variants", "image_variants", "learners", "alignments", "shifts", "device")


def lab_preset(cfg: StudyConfig, variant: str = "none", shift: str = "none", images: bool = False) -> Preset:
    """The lab preset of one cell: the study's world preset with ``world.shift``, the variant's ``mepo.*``
    overrides and, for image learners, the course-sized stream (``image_train_per_class``/``image_test_per_class``)."""
    p = override(PRESETS[cfg.world_preset](), {"world.shift": shift, "device": cfg.device, "seeds": cfg.seeds})
    if VARIANTS[variant]:
        p = dataclasses.replace(p, mepo=dataclasses.replace(p.mepo, **VARIANTS[variant]))
    if images:
        p = override(p, {"world.train_per_class": cfg.image_train_per_class,
                         "world.test_per_class": cfg.image_test_per_class})
    return p


def variant_backbone(cfg: StudyConfig, variant: str, data_home: str | Path | None = None,
                     progress: bool = True) -> Backbone:
    """The backbone of ``variant``: the pretrained micro ViT (``none``) or its cached refinement (``kind`` stays
    ``pretrained``/``mepo``, the registry's micro-ViT names; ``info["variant"]`` names the variant)."""
    preset = lab_preset(cfg, variant)
    if VARIANTS[variant] is None:
        bb = get_backbone("pretrained", preset, data_home, progress)
    else:
        bb = mepo_backbone(preset, data_home, progress=progress)
    return Backbone(bb.model, bb.kind, bb.weights_hash, (bb.info or {}) | {"variant": variant})


def fingerprint(cfg: StudyConfig) -> str:
    """What makes two studies' rows comparable: every size of ``cfg`` (not the grid's lists) and the world."""
    return run_fingerprint(cfg, skip=_GRID_FIELDS, world_version=WORLD_VERSION)


def cells(cfg: StudyConfig) -> list[tuple[str, str, str, str]]:
    """Every ``(variant, learner, alignment, shift)`` of the grid, variants outermost (each refinement runs once)."""
    out = []
    for variant in cfg.variants:
        for shift in cfg.shifts:
            for learner in cfg.learners:
                if learner in FEATURE_LEARNERS or variant in cfg.image_variants:
                    out += [(variant, learner, alignment, shift) for alignment in cfg.alignments]
    return out


def _probe_row(cfg: StudyConfig, variant: str, shift: str, feats: WorldFeatures) -> dict:
    n = min(cfg.probe_samples, len(feats.train.targets))
    x, y = feats.train.features[:n], feats.train.targets[:n]
    start = time.perf_counter()
    acc = linear_probe(x, y, feats.test.features, feats.test.targets)
    return {"variant": variant, "shift": shift, "probe_acc": acc, "H": h_score(x.astype(np.float64), y),
            "H_max": min(x.shape[1], int(y.max())), "n": n, "seconds": time.perf_counter() - start}


def _run_cell(cfg: StudyConfig, cell: tuple, seed: int, backbone: Backbone, feats: WorldFeatures | None,
              out: Path, data_home, progress: bool) -> dict:
    variant, learner, alignment, shift = cell
    image = learner not in FEATURE_LEARNERS
    preset = lab_preset(cfg, variant, shift, images=image)
    probe = None
    if learner == "finetune":
        probe = DriftProbe(SyntheticWorld(preset.world).dataset("downstream", "test").images[:cfg.probe_images])
    run = run_one(preset, learner, backbone, seed, alignment=alignment, feats=feats, data_home=data_home,
                  progress=False, out_path=out / "runs" / f"{variant}_{learner}_{alignment}_{shift}_seed{seed}.json",
                  resume=True, callbacks=[probe] if probe else [])
    row = {"variant": variant, "learner": learner, "alignment": alignment, "shift": shift, "seed": seed,
           "stream": "course" if image else "full", **run.metrics, "seconds": run.wall_seconds}
    return row | ({"drift": probe.points} if probe else {})


def run_study(cfg: StudyConfig, out: str | Path, data_home: str | Path | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """Every cell and seed of ``cfg`` (resumable), the probes of every (variant, shift); returns ``results.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, fp, start = out / "results.json", fingerprint(cfg), time.perf_counter()
    old = paths.load_matching_json(path, fp)
    if path.exists() and not old:  # another configuration's results: keep them beside, never overwrite
        kept = path.with_name(f"results.{time.strftime('%Y%m%d-%H%M%S')}.json")
        path.replace(kept)
        log(f"{path} held a study with other sizes: moved to {kept.name}, starting afresh")
    rows, probes, earlier = old.get("rows", []), old.get("probes", []), old.get("seconds", 0.0)
    done = {(r["variant"], r["learner"], r["alignment"], r["shift"], r["seed"]) for r in rows}
    probed = {(p["variant"], p["shift"]) for p in probes}
    todo = [(c, s) for c in cells(cfg) for s in cfg.seeds if (*c, s) not in done]
    backbones: dict[str, Backbone] = {}
    feats: dict[tuple[str, str], WorldFeatures] = {}
    bar = tqdm(todo, desc="study runs", disable=not progress)
    for cell, seed in bar:
        variant, learner, alignment, shift = cell
        if variant not in backbones:
            t0 = time.perf_counter()
            backbones[variant] = variant_backbone(cfg, variant, data_home, progress)
            log(f"backbone {variant}: {time.perf_counter() - t0:.0f} s")
        if learner in FEATURE_LEARNERS and (variant, shift) not in feats:
            preset = lab_preset(cfg, variant, shift)
            feats[variant, shift] = world_features(preset, backbones[variant], data_home, progress=False)
            with_covariance(preset, feats[variant, shift], data_home, progress=False)
        row = _run_cell(cfg, cell, seed, backbones[variant], feats.get((variant, shift)), out, data_home, progress)
        rows.append(row)
        bar.set_postfix_str(f"{variant}/{learner}/{alignment}/{shift} s{seed}: A_auc {100 * row['A_auc']:.1f}")
        paths.atomic_save_json(path, _result(cfg, fp, rows, probes, earlier + time.perf_counter() - start))
    for variant, shift in [(v, s) for v in cfg.variants for s in cfg.shifts if (v, s) not in probed]:
        backbone = backbones.get(variant) or variant_backbone(cfg, variant, data_home, progress)
        probes.append(_probe_row(cfg, variant, shift, world_features(lab_preset(cfg, variant, shift), backbone,
                                                                     data_home, progress=False)))
    result = _result(cfg, fp, rows, probes, earlier + time.perf_counter() - start)
    paths.atomic_save_json(path, result)
    return result


def _result(cfg: StudyConfig, fp: str, rows: list[dict], probes: list[dict], seconds: float) -> dict:
    return {"fingerprint": fp, "config": dataclasses.asdict(cfg), "rows": rows, "probes": probes,
            "seconds": seconds}
