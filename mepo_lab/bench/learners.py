"""Benchmarks of the image learners: throughput against bare forward+backward, backbone passes, augmentation.

Part of ``mepo-lab bench`` (:mod:`mepo_lab.bench`); each function returns report rows
(:func:`mepo_lab.bench.report.row`).
"""
from __future__ import annotations

import time

import torch

from mepo_lab.bench.report import row, sync
from mepo_lab.config import Preset


def _learner_throughput(learner, vit, images: torch.Tensor, labels: torch.Tensor, device, steps: int,
                        batch: int = 32, online_iter: int = 3) -> tuple[float, float]:
    """(images/s of ``learner.observe``, images/s of bare forward+backward through ``vit`` + a head)."""
    from mepo_lab.protocols.learner import StepContext

    n_classes = int(labels.max()) + 1
    learner.setup(n_classes, 0, device)
    ctx = StepContext(n_classes, online_iter, "seen")
    idx = [torch.randint(0, len(images), (batch,), generator=torch.Generator().manual_seed(i)) for i in range(steps + 1)]
    learner.observe(images[idx[0]].to(device), labels[idx[0]].to(device), ctx)  # warm-up
    sync(device)
    start = time.perf_counter()
    for i in idx[1:]:
        learner.observe(images[i].to(device), labels[i].to(device), ctx)
    sync(device)
    observe_s = time.perf_counter() - start
    head = torch.nn.Linear(vit.num_features, n_classes).to(device)
    model, pre = vit.to(device).train(), learner.pre
    start = time.perf_counter()
    for i in idx[1:]:
        for _ in range(online_iter):
            model.zero_grad(set_to_none=True)
            with learner.amp.autocast():
                z = head(model.forward_features(pre(images[i].to(device)))[:, 0]).float()
            torch.nn.functional.cross_entropy(z, labels[i].to(device)).backward()
    sync(device)
    bare_s = time.perf_counter() - start
    n = steps * batch * online_iter
    return n / observe_s, n / bare_s


def _micro_setup(preset: Preset):
    """(device, 512 random uint8 images, 20-class labels, seeded micro ViT) shared by the learner benches."""
    from mepo_lab.backbones.micro_vit import create_micro_vit
    from mepo_lab.device import pick_device

    size = preset.world.image_size
    images = torch.randint(0, 256, (512, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 20, (512,), generator=torch.Generator().manual_seed(1))
    return pick_device(preset.device), images, labels, create_micro_vit(preset.vit, size, seed=0)


def bench_learners(preset: Preset, data_home=None, **_) -> list[dict]:
    """Training throughput of each image learner on the micro ViT (32 samples x 3 iterations per step).

    Prompt learners pay for a second forward pass (the frozen query) by design; the ratio to a bare
    forward+backward of the same batches is reported, not targeted.
    """
    import copy

    from mepo_lab.learners import make_learner

    device, images, labels, vit = _micro_setup(preset)
    rows = []
    for name in ("finetune", "l2p", "dualprompt"):
        learner = make_learner(name, backbone=copy.deepcopy(vit))
        observe, bare = _learner_throughput(learner, copy.deepcopy(vit), images, labels, device, steps=6)
        rows.append(row(f"{name} training throughput (micro ViT)", observe, float("nan"), "img/s", False,
                         f"bare forward+backward {bare:.0f} img/s: {bare / observe:.2f}x the time"))
    return rows


def bench_passes(preset: Preset, data_home=None, **_) -> list[dict]:
    """The GPU run's measurement (:mod:`mepo_lab.bench.real_run`), scaled down to the CPU: DualPrompt on the micro
    ViT over a 2,000-sample Si-Blurry stream, 500 test images, evaluation every 200 samples; once recomputing
    every evaluation query as the reference does, once with the test set's query bank."""
    from mepo_lab.config import GCLConfig
    from mepo_lab.data.normalization import WORLD_PREPROCESS
    from mepo_lab.bench.real_run import evaluation_passes, fake_dataset, real_run

    device, _, _, vit = _micro_setup(preset)
    data, cfg = fake_dataset(20, 100, 25, preset.world.image_size, seed=2), GCLConfig(eval_period=200)
    fresh = real_run("dualprompt", vit, data, cfg, device, preprocess=WORLD_PREPROCESS, bank=False)
    banked = real_run("dualprompt", vit, data, cfg, device, preprocess=WORLD_PREPROCESS, bank=True)
    ours, theirs, p = evaluation_passes(banked["passes"]), evaluation_passes(fresh["passes"]), banked["passes"]
    return [row("DualPrompt evaluation forwards per run: queries from the bank / recomputed (micro ViT, CPU)",
                ours / theirs, 0.5, "x", True,
                f"{ours:,} vs {theirs:,} image passes; training {p['train_forward']:,} prompted "
                f"+ {p['train_query']:,} query forwards, {p['train_backward']:,} backwards"),
            row("same runs: wall time with the bank / recomputed", banked["wall"] / fresh["wall"], float("nan"), "x",
                False, f"{banked['wall']:.1f} s vs {fresh['wall']:.1f} s; evaluation share "
                f"{banked['eval_seconds'] / banked['wall']:.0%} vs {fresh['eval_seconds'] / fresh['wall']:.0%}; "
                f"building the bank (once per backbone) {banked['bank_seconds']:.2f} s")]


def bench_augment(preset: Preset, data_home=None, **_) -> list[dict]:
    """Cost of the protocol's per-iteration augmentation: ``finetune`` throughput on the micro ViT with
    ``gcl.augment`` none / flip / protocol (batch-shared draws, official) / protocol (per-image draws)."""
    import copy

    from mepo_lab.data.online_augment import OnlineAugment
    from mepo_lab.learners import make_learner

    device, images, labels, vit = _micro_setup(preset)
    settings = {"none": OnlineAugment("none"), "flip": OnlineAugment("flip", "sample"),
                "protocol/batch": OnlineAugment("protocol", "batch"),
                "protocol/sample": OnlineAugment("protocol", "sample")}
    speed = {}
    for label, aug in settings.items():
        learner = make_learner("finetune", backbone=copy.deepcopy(vit), augment=aug)
        speed[label] = _learner_throughput(learner, copy.deepcopy(vit), images, labels, device, steps=6)[0]
    return [row(f"finetune throughput, augment {label} (micro ViT)", v, float("nan"), "img/s", False,
                 f"{speed['none'] / v:.2f}x the time of no augmentation") for label, v in speed.items()]
