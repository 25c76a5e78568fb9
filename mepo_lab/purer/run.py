"""The PURER experiment behind ``mepo-lab purer``: data-free meta-learning, and MePo without pretraining data.

Part 1 (Hu et al., CVPR 2023, arXiv 2303.11183): a pool of Conv4 teachers, each trained on its own 5 of the
synthetic world's pretraining classes, is all the meta-learner gets. Methods, per seed and shot K:
``random_init`` (a fresh Conv4 adapted on each test support set), ``teacher_average`` (the teachers' parameter
average, no meta-training), ``ei`` (meta-training on the inverted dynamic dataset, no switch), ``eci`` (with the
adversarial switch) and ``eci_icfil`` (ECI + our reading of ICFIL at meta-test). Meta-test: N-way K-shot episodes
from held-out downstream classes with real images, accuracy ± 95 % interval.

Part 2 (the lab's question): MePo refined on pseudo tasks inverted from the backbone's own pretraining head
(``mepo_data_free``) against MePo refined on the real images of the same classes (``mepo_real``) and no refinement
(``pretrained``), downstream on the embedded default (Si-Blurry, linear learner: A_auc, A_last, A_avg, F_last).
``results.json`` is rewritten atomically after every run; a rerun skips what is in it.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.config import PRESETS, run_fingerprint
from mepo_lab.data.base import ImageArrays
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.device import pick_device
from mepo_lab.experiment import compare_backbones
from mepo_lab.protocols.episodes import evaluate_episodes
from mepo_lab.purer import mepo_link
from mepo_lab.purer.config import PurerConfig
from mepo_lab.purer.eci import meta_learner_of, meta_train
from mepo_lab.purer.icfil import icfil_predictor
from mepo_lab.purer.models import conv4
from mepo_lab.purer.teachers import Teacher, teacher_average, teacher_pool
from mepo_lab.registry import get_backbone


def _first_classes(data: ImageArrays, n: int) -> ImageArrays:
    if n > data.n_classes:
        raise ValueError(f"the world has {data.n_classes} classes of this role, the preset asks for {n}")
    return data.subset(np.flatnonzero(data.targets < n))


def build_data(cfg: PurerConfig) -> tuple[ImageArrays, ImageArrays]:
    """Meta-train images (the first ``meta_train_classes`` pretraining classes: the teachers' data, never seen by
    the meta-learner) and meta-test images (the first ``test_classes`` downstream classes, real images), rendered
    at ``cfg.image_size``."""
    world = SyntheticWorld(dataclasses.replace(PRESETS[cfg.world_preset]().world, image_size=cfg.image_size))
    train = _first_classes(world.dataset("pretrain", "train", cfg.train_per_class), cfg.meta_train_classes)
    test = _first_classes(world.dataset("downstream", "test", cfg.test_per_class), cfg.test_classes)
    return train, test


def build_teachers(cfg: PurerConfig, train: ImageArrays, device: torch.device) -> list[Teacher]:
    """The teacher pool: one Conv4 per consecutive group of ``classes_per_teacher`` meta-train classes."""
    n_teachers = -(-cfg.meta_train_classes // cfg.classes_per_teacher)
    return teacher_pool(train, cfg.classes_per_teacher, n_teachers, width=cfg.width, epochs=cfg.teacher_epochs,
                        lr=cfg.teacher_lr, seed=0, device=device)


def meta_rows(cfg: PurerConfig, teachers: list[Teacher], test: ImageArrays, seed: int, k_shot: int,
              done: set, device: torch.device, on_snapshot=None) -> list[dict]:
    """The rows of every not-yet-done method for one seed and shot (meta-training EI / ECI when needed)."""
    learner, rows = meta_learner_of(cfg), []

    def evaluate(method: str, predict, extra: dict) -> None:
        start = time.perf_counter()
        res = evaluate_episodes(predict, test.images, test.targets, cfg.n_way, k_shot, cfg.q_query,
                                cfg.test_episodes, seed=1000 + seed)
        rows.append({"kind": "meta", "method": method, "seed": seed, "n_way": cfg.n_way, "k_shot": k_shot,
                     "acc": res["mean"], "ci95": res["ci95"], "episodes": cfg.test_episodes,
                     "seconds": extra.pop("seconds", 0.0) + time.perf_counter() - start} | extra)

    def todo(method: str) -> bool:
        wanted = method in cfg.methods and (cfg.icfil or method != "eci_icfil")
        return wanted and (method, seed, k_shot) not in done

    if todo("random_init"):
        evaluate("random_init", learner.predictor(conv4(cfg.n_way, cfg.width, image_size=cfg.image_size, seed=seed)
                                                  .to(device)), {})
    if todo("teacher_average"):
        evaluate("teacher_average", learner.predictor(teacher_average(teachers, cfg.n_way).to(device)), {})
    for method, adversarial in (("ei", False), ("eci", True)):
        needed = todo(method) or (method == "eci" and todo("eci_icfil"))
        if not needed:
            continue
        model = (teacher_average(teachers, cfg.n_way) if cfg.init == "average"
                 else conv4(cfg.n_way, cfg.width, image_size=cfg.image_size, seed=seed)).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            log = meta_train(model, teachers, cfg, k_shot, adversarial=adversarial, seed=seed, device=device,
                             on_snapshot=on_snapshot if adversarial else None)
        extra = {"fired": log["fired"], "curve": [e["acc"] for e in log["log"]],
                 "teacher_acc": log["log"][-1]["teacher_acc"], "seconds": log["seconds"]}
        if todo(method):
            evaluate(method, learner.predictor(model), dict(extra))
        if method == "eci" and todo("eci_icfil"):
            evaluate("eci_icfil", icfil_predictor(model, learner, cfg.icfil_variant, cfg.icfil_per_class,
                                                  cfg.icfil_steps, seed), {"variant": cfg.icfil_variant})
    return rows


def mepo_rows(cfg: PurerConfig, data_home: str | Path | None, progress: bool) -> tuple[list[dict], dict]:
    """Downstream rows of ``pretrained``, ``mepo_real`` and ``mepo_data_free`` (same classes, real vs inverted
    images) on the embedded default, and the inversion's record."""
    preset = PRESETS[cfg.world_preset]()
    source = get_backbone("pretrained", preset, data_home, progress)
    classes = mepo_link.class_subset(preset, cfg.mepo_classes)
    images, labels, info = mepo_link.invert_pretraining(preset, source, cfg.mepo_per_class, cfg.mepo_steps,
                                                        classes=classes, data_home=data_home, progress=progress)
    free = mepo_link.refine_on(preset, source, images, labels, "mepo_data_free", data_home=data_home, progress=progress)
    real = mepo_link.refine_on(preset, source, *mepo_link.real_subset(preset, classes), "mepo_real",
                               data_home=data_home, progress=progress)
    rows = compare_backbones(preset, {"pretrained": source, "mepo_real": real, "mepo_data_free": free},
                             seeds=cfg.mepo_seeds, data_home=data_home, progress=False)
    keep = ("A_auc", "A_last", "A_avg", "F_last")
    out = [{"kind": "mepo", "backbone": r["backbone"], "seed": r["seed"]} | {k: r[k] for k in keep if k in r}
           for r in rows]
    return out, {k: info[k] for k in ("teacher_acc", "n_classes", "per_class", "steps")} | {
        "inversion_curve": info["curve"][:: max(1, len(info["curve"]) // 50)]}


def fingerprint(cfg: PurerConfig) -> str:
    """Every setting except the name, seeds, methods and device (:func:`mepo_lab.config.run_fingerprint`)."""
    return run_fingerprint(cfg)


def run_purer(cfg: PurerConfig, out: str | Path, data_home: str | Path | None = None, progress: bool = True) -> dict:
    """Part 1 for every (seed, shot) and part 2 once; ``out/results.json`` after each step; returns the result.
    Snapshots of ECI's dynamic dataset (first seed, every shot) go to ``out/snapshots_K.npz``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, fp, start = out / "results.json", fingerprint(cfg), time.perf_counter()
    result = paths.load_matching_json(path, fp) or {"command": "purer", "fingerprint": fp, "rows": []}
    result["config"] = dataclasses.asdict(cfg)
    device = pick_device(cfg.device)
    train, test = build_data(cfg)
    teachers = None
    for seed, k_shot in tqdm([(s, k) for s in cfg.seeds for k in cfg.shots], desc="PURER", disable=not progress):
        done = {(r["method"], r["seed"], r["k_shot"]) for r in result["rows"] if r["kind"] == "meta"}
        if all((m, seed, k_shot) in done for m in cfg.methods if cfg.icfil or m != "eci_icfil"):
            continue
        teachers = teachers or build_teachers(cfg, train, device)
        result["teachers"] = [{"classes": t.classes, "accuracy": t.accuracy} for t in teachers]
        frames: list[tuple[int, np.ndarray]] = []
        snap = (lambda k, x, f=frames: f.append((k, x[:: max(1, len(x) // 20)][:20]))) if seed == cfg.seeds[0] else None
        result["rows"] += meta_rows(cfg, teachers, test, seed, k_shot, done, device, snap)
        if frames:
            np.savez_compressed(out / f"snapshots_{k_shot}.npz", iterations=[k for k, _ in frames],
                                images=np.stack([x for _, x in frames]))
        paths.atomic_save_json(path, result | {"seconds": time.perf_counter() - start})
    if cfg.data_free_mepo and not any(r["kind"] == "mepo" for r in result["rows"]):
        rows, info = mepo_rows(cfg, data_home, progress)
        result["rows"] += rows
        result["inversion"] = info
    result["seconds"] = time.perf_counter() - start
    result["summary"] = summarise(result["rows"])
    paths.atomic_save_json(path, result)
    return result


def summarise(rows: list[dict]) -> dict:
    """Meta rows: per (method, K) the mean accuracy over seeds, its sample std and the mean 95 % episode interval;
    MePo rows: per backbone the mean and std of A_auc, A_last and F_last (fractions)."""
    meta: dict = {}
    for r in (r for r in rows if r["kind"] == "meta"):
        meta.setdefault(f"{r['method']}@{r['k_shot']}", []).append(r)
    out = {"meta": {k: {"acc": float(np.mean([r["acc"] for r in v])),
                        "std": float(np.std([r["acc"] for r in v], ddof=1)) if len(v) > 1 else 0.0,
                        "ci95": float(np.mean([r["ci95"] for r in v])), "n": len(v)} for k, v in meta.items()}}
    mepo: dict = {}
    for r in (r for r in rows if r["kind"] == "mepo"):
        mepo.setdefault(r["backbone"], []).append(r)
    out["mepo"] = {b: {m: {"mean": float(np.mean([r[m] for r in v])),
                           "std": float(np.std([r[m] for r in v], ddof=1)) if len(v) > 1 else 0.0}
                       for m in ("A_auc", "A_last", "F_last") if m in v[0]} for b, v in mepo.items()}
    return out


def format_table(summary: dict) -> str:
    """Markdown tables: meta-test accuracy per method and shot (mean over seeds ± mean 95 % episode interval),
    and the MePo rows (A_auc, A_last, F_last in percent, mean ± std over seeds)."""
    shots = sorted({int(k.split("@")[1]) for k in summary["meta"]})
    methods = list(dict.fromkeys(k.split("@")[0] for k in summary["meta"]))
    lines = ["| method | " + " | ".join(f"{k}-shot acc (%)" for k in shots) + " |", "|---" * (len(shots) + 1) + "|"]
    for m in methods:
        cells = [summary["meta"].get(f"{m}@{k}") for k in shots]
        lines.append(f"| {m} | " + " | ".join("—" if c is None else f"{100 * c['acc']:.2f} ± {100 * c['ci95']:.2f}"
                                              for c in cells) + " |")
    if summary.get("mepo"):
        lines += ["", "| backbone | A_auc (%) | A_last (%) | F_last (%) |", "|---|---|---|---|"]
        for b, s in summary["mepo"].items():
            lines.append(f"| {b} | " + " | ".join(f"{100 * s[m]['mean']:.2f} ± {100 * s[m]['std']:.2f}"
                                                  for m in ("A_auc", "A_last", "F_last") if m in s) + " |")
    return "\n".join(lines)
