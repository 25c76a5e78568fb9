"""``mepo-lab bench``: the speed and quality targets, measured in one run, reported as ratios.

Targets live here, never as timed assertions in tests. Each benchmark returns a row with the
measured value, the target and ``ratio = measured / target`` for "at most" targets (≤ 1 is met)
or ``target / measured`` for "at least" targets (≤ 1 is met as well), so one column reads the same
way everywhere.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mepo_lab import paths
from mepo_lab.config import GCLConfig, Preset


def _row(name: str, measured: float, target: float, unit: str, at_most: bool, note: str = "") -> dict:
    ratio = measured / target if at_most else target / max(measured, 1e-12)
    return {"name": name, "measured": measured, "target": target, "unit": unit,
            "kind": "<=" if at_most else ">=", "ratio": ratio, "met": ratio <= 1.0, "note": note}


def _best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_stream(preset: Preset, **_) -> list[dict]:
    """Build a 1.28 M-sample, 1000-class stochastic Si-Blurry stream (ImageNet-1K scale)."""
    from mepo_lab.streams import si_blurry

    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(1000), 1280))
    seconds = _best_of(lambda: si_blurry(labels, n_tasks=5, n=50, m=10, seed=1))
    return [_row("stream build 1.28M samples / 1000 classes", seconds, 0.3, "s", True,
                 "the reference sampler takes ~6 s (reference notes; not re-timed here)")]


def bench_world(preset: Preset, **_) -> list[dict]:
    """Render 10,000 synthetic-world images (vectorised numpy)."""
    from mepo_lab.data.synthetic import SyntheticWorld

    world = SyntheticWorld(preset.world)
    n = 10_000
    ids = np.repeat(world.downstream_classes, n // len(world.downstream_classes) + 1)[:n]
    inst = np.arange(n) % 500
    seconds = _best_of(lambda: world.render_instances(ids, inst, "train"), repeat=2)
    return [_row("synthetic world generation", n / seconds, 5000, "img/s", False)]


def cifar_like_features(n_classes: int = 100, per_class: int = 500, test_per_class: int = 100,
                        dim: int = 768, seed: int = 0):
    """Random clustered float16 features shaped like CIFAR-100 under ViT-B/16 (for timing only)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    ytr = rng.permutation(np.repeat(np.arange(n_classes), per_class))
    yte = np.repeat(np.arange(n_classes), test_per_class)
    noise = lambda n: 2.0 * rng.standard_normal((n, dim), dtype=np.float32)  # noqa: E731
    xtr = torch.from_numpy((centres[ytr] + noise(len(ytr))).astype(np.float16))
    xte = torch.from_numpy((centres[yte] + noise(len(yte))).astype(np.float16))
    return xtr, ytr, xte, yte


def bench_gcl(preset: Preset, **_) -> list[dict]:
    """A feature-cached Si-Blurry run at CIFAR-100 scale: 50,000 × 768, online_iter 3, eval every 1000."""
    from mepo_lab.gcl import run_gcl
    from mepo_lab.learners import make_learner
    from mepo_lab.streams import si_blurry

    xtr, ytr, xte, yte = cifar_like_features()
    stream = si_blurry(ytr, n_tasks=5, n=50, m=10, seed=1)
    rows = []
    for name in ("linear", "ncm"):
        seconds = _best_of(lambda n=name: run_gcl(make_learner(n), xtr.float(), xte.float(), yte, stream,
                                                  GCLConfig(), progress=False), repeat=2)
        rows.append(_row(f"feature-cached GCL run ({name}), CIFAR-100 scale", seconds, 3.0, "s", True))
    return rows


def bench_backbone(preset: Preset, data_home=None, **_) -> list[dict]:
    """Micro-ViT pretraining time (as recorded when it was trained) and linear-probe accuracies."""
    from mepo_lab.pretrain import pretrained_backbone, random_backbone
    from mepo_lab.probe import linear_probe
    from mepo_lab.experiment import world_features

    pre = pretrained_backbone(preset, data_home, progress=False)
    rows = [_row(f"micro-ViT pretraining ({preset.name})", pre.info["seconds"], 180.0, "s", True,
                 "recorded at training time" + (" (cached)" if pre.info.get("cached") else ""))]
    acc = {}
    for bb in (pre, random_backbone(preset)):
        f = world_features(preset, bb, data_home, progress=False)
        acc[bb.kind] = 100 * linear_probe(f.train.features, f.train.targets, f.test.features, f.test.targets)
    rows.append(_row("linear probe, pretrained micro ViT", acc["pretrained"], float("nan"), "%", False,
                     "downstream classes"))
    rows.append(_row("linear probe, random-init micro ViT", acc["random"], float("nan"), "%", False))
    rows.append(_row("probe gain of pretraining", acc["pretrained"] - acc["random"], 20.0, "points", False))
    return rows


def bench_quickstart(preset: Preset, **_) -> list[dict]:
    """``quickstart`` cold (empty data home: pretraining, features, runs) then warm, in a temp folder."""
    from mepo_lab.quickstart import quickstart

    with tempfile.TemporaryDirectory() as tmp:
        cold = _best_of(lambda: quickstart(preset, Path(tmp) / "cold", data_home=Path(tmp) / "home",
                                           progress=False, log=lambda s: None), repeat=1)
        warm = _best_of(lambda: quickstart(preset, Path(tmp) / "warm", data_home=Path(tmp) / "home",
                                           progress=False, log=lambda s: None), repeat=1)
    return [_row(f"quickstart cold ({preset.name})", cold, 360.0, "s", True),
            _row(f"quickstart warm ({preset.name})", warm, 60.0, "s", True)]


def bench_refine(preset: Preset, data_home=None, **_) -> list[dict]:
    """One MePo meta-iteration (group) against bare forward+backward passes over the same batches.

    The refinement adds augmentation, masks, SGD steps, the anchor copy and the Reptile step; the
    target is at most 10 % over ``model(x) → CE → backward`` on the identical index batches.
    Memory: the anchor is the only extra copy of the parameters (besides SGD's momentum buffers).
    """
    import copy

    import torch.nn.functional as F

    from mepo_lab.data.synthetic import SyntheticWorld
    from mepo_lab.mepo.refine import MetaRefiner
    from mepo_lab.pretrain import pretrained_backbone

    data = SyntheticWorld(preset.world).dataset("pretrain", "train")
    source = pretrained_backbone(preset, data_home, progress=False)
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    recording = True

    class Recording(MetaRefiner):
        def _step(self, x, y, allowed):
            if recording:
                batches.append((x, y))
            return super()._step(x, y, allowed)

    import mepo_lab.mepo.refine as refine_module

    extra: list[int] = []
    original_step = refine_module.reptile_step_

    def measuring_step(params, anchor, eta, ends_mean=None):  # count live tensors right before Reptile
        extra.append(_extra_tensor_bytes(ref, before))
        return original_step(params, anchor, eta, ends_mean)

    def bare(model) -> float:  # forward + loss + backward only, on the same (prepared) batches
        start = time.perf_counter()
        for x, y in timed:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        ref = Recording(copy.deepcopy(source.model), data.images, data.targets, preset.mepo, tmp)
        bar, refine_s, bare_s = _NullBar(), [], []
        ref._group(ref.sampler.group(0, 1), torch.Generator().manual_seed(1), bar)  # warm-up
        for _ in range(2):  # interleaved, best of two each: the machine's noise hits both alike
            batches.clear()
            start = time.perf_counter()
            ref._group(ref.sampler.group(0, 0), torch.Generator().manual_seed(0), bar)
            refine_s.append(time.perf_counter() - start)
            timed = list(batches)
            bare_s.append(bare(ref.model))
        refine_s, bare_s = min(refine_s), min(bare_s)
        recording = False
        batches.clear()
        refine_module.reptile_step_ = measuring_step
        before = _live_storages()
        try:
            ref._group(ref.sampler.group(0, 2), torch.Generator().manual_seed(2), bar)
        finally:
            refine_module.reptile_step_ = original_step
    n_bytes = sum(p.numel() * p.element_size() for p in ref.params)
    return [_row("MePo refinement / bare forward+backward (one group)", refine_s / bare_s, 1.10, "x", True,
                 f"{len(timed)} steps: {refine_s:.2f} s vs {bare_s:.2f} s"),
            _row("tensor memory beyond model, grads, SGD state and data", extra[0] / n_bytes, 1.05, "copies", True,
                 f"at the Reptile step: the anchor (1 copy = {n_bytes / 2**20:.2f} MiB) + masks and index batches")]


def _storage(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def _live_storages() -> set[tuple[int, int]]:
    import gc

    return {_storage(o) for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.device.type == "cpu"}


def _extra_tensor_bytes(ref, before: set[tuple[int, int]]) -> int:
    """Bytes of tensor storages allocated during a meta-iteration and alive at its Reptile step,
    other than parameters, gradients and optimiser state (what the refinement itself holds)."""
    known = {_storage(p)[0] for p in ref.params} | {_storage(p.grad)[0] for p in ref.params if p.grad is not None}
    known |= {_storage(v)[0] for st in ref.opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)}
    old = {ptr for ptr, _ in before}
    return sum(n for ptr, n in _live_storages() if ptr not in known and ptr not in old)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass


from mepo_lab.bench_learners import bench_augment, bench_gpu, bench_learners  # noqa: E402  (kept apart: ~100 lines)

BENCHMARKS = {"stream": bench_stream, "world": bench_world, "gcl": bench_gcl, "backbone": bench_backbone,
              "refine": bench_refine, "learners": bench_learners, "augment": bench_augment, "gpu": bench_gpu,
              "quickstart": bench_quickstart}
DEFAULT = ("stream", "world", "gcl", "backbone", "refine", "learners", "augment", "gpu")


def run_benchmarks(preset: Preset, only: list[str] | None = None, data_home=None, out=None) -> list[dict]:
    """Run the selected benchmarks (default: all but the minutes-long ``quickstart``)."""
    names = list(only) if only else list(DEFAULT)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    report = []
    for name in names:
        report.extend(BENCHMARKS[name](preset, data_home=data_home))
        if out:
            paths.atomic_save_json(out, report)
    return report


def format_report(report: list[dict]) -> str:
    """Fixed-width table: benchmark, measured, target, ratio (≤ 1 means the target is met)."""
    lines = [f"{'benchmark':58s} {'measured':>12s} {'target':>14s} {'ratio':>7s}"]
    for r in report:
        target = "" if r["target"] != r["target"] else f"{r['kind']} {r['target']:g} {r['unit']}"
        ratio = "" if r["ratio"] != r["ratio"] else f"{r['ratio']:.2f}"
        lines.append(f"{r['name']:58s} {r['measured']:9.2f} {r['unit']:>4s} {target:>14s} {ratio:>7s}"
                     + (f"  ({r['note']})" if r["note"] else ""))
    return "\n".join(lines)
