"""The core benchmarks of ``mepo-lab bench``: streams, the synthetic world, feature-cached GCL runs,
pretraining and probing, MePo refinement, and the quickstart. Each returns report rows
(:func:`mepo_lab.bench.report.row`).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mepo_lab.bench.report import best_of, row
from mepo_lab.config import GCLConfig, Preset


def bench_stream(preset: Preset, **_) -> list[dict]:
    """Build a 1.28 M-sample, 1000-class stochastic Si-Blurry stream (ImageNet-1K scale)."""
    from mepo_lab.protocols.streams import si_blurry

    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(1000), 1280))
    seconds = best_of(lambda: si_blurry(labels, n_tasks=5, n=50, m=10, seed=1))
    return [row("stream build 1.28M samples / 1000 classes", seconds, 0.3, "s", True,
                 "vectorised; the reference's per-class Python loop is far slower (not re-timed here)")]


def bench_world(preset: Preset, **_) -> list[dict]:
    """Render 10,000 synthetic-world images (vectorised numpy)."""
    from mepo_lab.data.synthetic import SyntheticWorld

    world = SyntheticWorld(preset.world)
    n = 10_000
    ids = np.repeat(world.downstream_classes, n // len(world.downstream_classes) + 1)[:n]
    inst = np.arange(n) % 500
    seconds = best_of(lambda: world.render_instances(ids, inst, "train"), repeat=2)
    return [row("synthetic world generation", n / seconds, 5000, "img/s", False)]


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
    from mepo_lab.learners import make_learner
    from mepo_lab.protocols.online import run_gcl
    from mepo_lab.protocols.streams import si_blurry

    xtr, ytr, xte, yte = cifar_like_features()
    stream = si_blurry(ytr, n_tasks=5, n=50, m=10, seed=1)
    rows = []
    for name in ("linear", "ncm"):
        seconds = best_of(lambda n=name: run_gcl(make_learner(n), xtr.float(), xte.float(), yte, stream,
                                                  GCLConfig(), progress=False), repeat=2)
        rows.append(row(f"feature-cached GCL run ({name}), CIFAR-100 scale", seconds, 3.0, "s", True))
    return rows


def bench_widgets(preset: Preset, **_) -> list[dict]:
    """A Run press of a live panel against the bare run: the CIFAR-100-scale feature-cached ``linear`` run with a
    :class:`~mepo_lab.widgets.LivePlot` (throttled redraws rendered to PNG, as in a notebook) attached."""
    import ipywidgets as W

    from mepo_lab.learners import make_learner
    from mepo_lab.protocols.online import run_gcl
    from mepo_lab.protocols.streams import si_blurry
    from mepo_lab.widgets import LivePlot

    xtr, ytr, xte, yte = cifar_like_features()
    stream = si_blurry(ytr, n_tasks=5, n=50, m=10, seed=1)
    live: list = []

    def once(watch: bool) -> None:
        callbacks = [LivePlot(W.Output())] if watch else []
        live.extend(callbacks)
        run_gcl(make_learner("linear"), xtr.float(), xte.float(), yte, stream, GCLConfig(), callbacks=callbacks,
                progress=False)

    bare, watched = best_of(lambda: once(False), repeat=2), best_of(lambda: once(True), repeat=2)
    plot = live[-1]
    return [row("live panel Run press / bare run (feature-cached, CIFAR-100 scale)", watched / bare, 1.5, "x", True,
                f"{watched:.2f} s vs {bare:.2f} s; {plot.n_draws} redraws of {plot.n_evals} evaluations")]


def bench_backbone(preset: Preset, data_home=None, **_) -> list[dict]:
    """Micro-ViT pretraining time (as recorded when it was trained) and linear-probe accuracies."""
    from mepo_lab.backbones.pretrain import pretrained_backbone, random_backbone
    from mepo_lab.backbones.probe import linear_probe
    from mepo_lab.experiment import world_features

    pre = pretrained_backbone(preset, data_home, progress=False)
    rows = [row(f"micro-ViT pretraining ({preset.name})", pre.info["seconds"], 180.0, "s", True,
                 "recorded at training time" + (" (cached)" if pre.info.get("cached") else ""))]
    acc = {}
    for bb in (pre, random_backbone(preset)):
        f = world_features(preset, bb, data_home, progress=False)
        acc[bb.kind] = 100 * linear_probe(f.train.features, f.train.targets, f.test.features, f.test.targets)
    rows.append(row("linear probe, pretrained micro ViT", acc["pretrained"], float("nan"), "%", False,
                     "downstream classes"))
    rows.append(row("linear probe, random-init micro ViT", acc["random"], float("nan"), "%", False))
    rows.append(row("probe gain of pretraining", acc["pretrained"] - acc["random"], 20.0, "points", False))
    return rows


def bench_quickstart(preset: Preset, **_) -> list[dict]:
    """``quickstart`` cold with the shipped artefacts (empty data home: world, features, covariances' install, the
    runs), then warm (same data home), then cold with ``MEPO_LAB_SHIPPED=0`` (pretraining and refinement here too),
    each in a temp folder. Targets (issue 9): 90 s, 20 s and 6 min on 2 cores."""
    import os
    from unittest import mock

    from mepo_lab import shipped
    from mepo_lab.quickstart import quickstart

    def run(tmp: str, name: str, home: str) -> float:
        return best_of(lambda: quickstart(preset, Path(tmp) / name, data_home=Path(tmp) / home, progress=False,
                                          log=lambda s: None), repeat=1)

    with tempfile.TemporaryDirectory() as tmp:
        cold, warm = run(tmp, "cold", "home"), run(tmp, "warm", "home")
        with mock.patch.dict(os.environ, {shipped.ENV: "0"}):
            retrain = run(tmp, "retrain", "retrain_home")
    return [row(f"quickstart cold, shipped artefacts ({preset.name})", cold, 90.0, "s", True),
            row(f"quickstart warm ({preset.name})", warm, 20.0, "s", True),
            row(f"quickstart cold, everything trained here ({preset.name})", retrain, 360.0, "s", True)]


def bench_grid(preset: Preset, data_home=None, **_) -> list[dict]:
    """The quickstart's 27 feature-cached runs: the sequential loop of run_grid before batching (``run_gcl`` per run,
    records saved after every evaluation) against one :func:`~mepo_lab.batched.run_batched` call, same process; then
    notebook 06's explorer: 3 seeds of one ``linear`` setting (each alignment) as one batched call."""
    from mepo_lab.batched import run_batched
    from mepo_lab.batched.jobs import feature_job
    from mepo_lab.experiment import backbone_features, run_on_features
    from mepo_lab.quickstart import QUICKSTART_GRID

    feats = backbone_features(preset, ("random", "pretrained", "mepo"), data_home=data_home, progress=False)
    cells = [(seed, cell) for seed in preset.seeds for cell in QUICKSTART_GRID]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        one_by_one = [run_on_features(preset, learner, feats[kind], seed, alignment=alignment, progress=False,
                                      resume=True, out_path=Path(tmp) / f"{learner}_{kind}_{alignment}_{seed}.json")
                      for seed, (learner, kind, alignment) in cells]
        sequential = time.perf_counter() - start
    jobs = [feature_job(preset, lr, feats[k], s, alignment=a) for s, (lr, k, a) in cells]
    start = time.perf_counter()
    together = run_batched(jobs, preset.gcl, progress=False)
    batched = time.perf_counter() - start
    gap = max(float(np.max(np.abs(np.subtract(a.anytime_acc + a.task_end_acc, b.anytime_acc + b.task_end_acc))))
              for a, b in zip(one_by_one, together))
    rows = [row(f"quickstart grid ({len(cells)} feature-cached runs): sequential loop / one batched call",
                sequential / batched, 5.0, "x", False,
                f"{sequential:.1f} s vs {batched:.1f} s; largest accuracy difference between the two {gap:.1g}")]
    for alignment in ("none", "official", "corrected"):
        three = [feature_job(preset, "linear", feats["mepo"], s, alignment=alignment) for s in (1, 2, 3)]
        start = time.perf_counter()
        run_batched(three, preset.gcl, progress=False)
        seconds = time.perf_counter() - start
        rows.append(row(f"notebook 06: 3 seeds after a slider change (linear, {alignment})", seconds, 3.0, "s", True))
    return rows


def bench_refine(preset: Preset, data_home=None, **_) -> list[dict]:
    """One MePo meta-iteration (group) against bare forward+backward passes over the same batches.

    The refinement adds augmentation, masks, SGD steps, the anchor copy and the Reptile step; the
    target is at most 10 % over ``model(x) → CE → backward`` on the identical index batches, recorded
    through the refiner's ``on_batch`` callback. Memory: at ``on_reptile`` (right before the Reptile step)
    the anchor should be the only extra copy of the parameters (besides SGD's momentum buffers).
    """
    import copy

    import torch.nn.functional as F

    from mepo_lab.backbones.pretrain import pretrained_backbone
    from mepo_lab.data.synthetic import SyntheticWorld
    from mepo_lab.mepo.refine import MetaRefiner

    data = SyntheticWorld(preset.world).dataset("pretrain", "train")
    source = pretrained_backbone(preset, data_home, progress=False)

    class Record:
        def __init__(self) -> None:
            self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

        def on_batch(self, entry: dict) -> None:
            self.batches.append((entry["x"], entry["y"]))

    class MeasureMemory:
        def __init__(self, before: set) -> None:
            self.before, self.extra = before, float("nan")

        def on_reptile(self, entry: dict) -> None:  # count live tensors right before the Reptile step
            self.extra = _extra_tensor_bytes(ref, self.before)

    def bare(model, batches) -> float:  # forward + loss + backward only, on the same (prepared) batches
        start = time.perf_counter()
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        ref = MetaRefiner(copy.deepcopy(source.model), data.images, data.targets, preset.mepo, tmp)
        ref.meta_iteration(ref.sampler.group(0, 1), torch.Generator().manual_seed(1))  # warm-up
        refine_s, bare_s = [], []
        for _ in range(2):  # interleaved, best of two each: the machine's noise hits both alike
            record = Record()
            start = time.perf_counter()
            ref.meta_iteration(ref.sampler.group(0, 0), torch.Generator().manual_seed(0), callbacks=[record])
            refine_s.append(time.perf_counter() - start)
            bare_s.append(bare(ref.model, record.batches))
        n_steps = len(record.batches)
        del record
        refine_s, bare_s = min(refine_s), min(bare_s)
        memory = MeasureMemory(_live_storages())
        ref.meta_iteration(ref.sampler.group(0, 2), torch.Generator().manual_seed(2), callbacks=[memory])
    n_bytes = sum(p.numel() * p.element_size() for p in ref.params)
    return [row("MePo refinement / bare forward+backward (one group)", refine_s / bare_s, 1.10, "x", True,
                f"{n_steps} steps: {refine_s:.2f} s vs {bare_s:.2f} s"),
            row("tensor memory beyond model, grads, SGD state and data", memory.extra / n_bytes, 1.05, "copies",
                True, f"at the Reptile step: the anchor (1 copy = {n_bytes / 2**20:.2f} MiB) + masks and index "
                "batches")]


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
