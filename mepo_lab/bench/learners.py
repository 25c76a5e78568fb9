"""Benchmarks of the image learners: throughput against bare forward+backward, and the GPU path.

Part of ``mepo-lab bench`` (:mod:`mepo_lab.bench`); each function returns report rows
(:func:`mepo_lab.bench.report.row`).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from mepo_lab.bench.report import row
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
    _sync(device)
    start = time.perf_counter()
    for i in idx[1:]:
        learner.observe(images[i].to(device), labels[i].to(device), ctx)
    _sync(device)
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
    _sync(device)
    bare_s = time.perf_counter() - start
    n = steps * batch * online_iter
    return n / observe_s, n / bare_s


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


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
    """A real, scaled-down DualPrompt run on the micro ViT (2,000-sample Si-Blurry stream, 500 test images,
    evaluation every 200 samples), once recomputing every evaluation query as the reference does and once with
    the test set's queries from a bank: the backbone passes of each (``meta["passes"]``) and their wall times."""
    import copy
    import tempfile

    from mepo_lab.config import GCLConfig
    from mepo_lab.data.normalization import WORLD_PREPROCESS
    from mepo_lab.learners import make_learner
    from mepo_lab.learners.queries import query_bank
    from mepo_lab.protocols.online import run_gcl
    from mepo_lab.protocols.streams import si_blurry

    device, _, _, vit = _micro_setup(preset)
    size, gen = preset.world.image_size, torch.Generator().manual_seed(2)
    train = torch.randint(0, 256, (2000, 3, size, size), dtype=torch.uint8, generator=gen)
    test = torch.randint(0, 256, (500, 3, size, size), dtype=torch.uint8, generator=gen)
    ytr, yte = np.repeat(np.arange(20), 100), np.repeat(np.arange(20), 25)
    stream, cfg = si_blurry(ytr, n_tasks=5, n=50, m=10, seed=1), GCLConfig(eval_period=200)

    def one(**kwargs) -> tuple[dict, float]:
        learner = make_learner("dualprompt", backbone=copy.deepcopy(vit), **kwargs)
        start = time.perf_counter()
        res = run_gcl(learner, train, test, yte, stream, cfg, device=device, progress=False)
        return res.meta["passes"], time.perf_counter() - start

    fresh, fresh_s = one(query_cache=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        bank = query_bank(vit, test, WORLD_PREPROCESS, "bench", device=device, data_home=tmp)
        bank_s = time.perf_counter() - start
        banked, banked_s = one(query_bank=bank)
    def evals(p: dict) -> int:
        return p["eval_query"] + p["eval_forward"]

    return [row("DualPrompt evaluation forwards per run: queries from the bank / recomputed (micro ViT, CPU)",
                evals(banked) / evals(fresh), 0.5, "x", True,
                f"{evals(banked):,} vs {evals(fresh):,} image passes; training {banked['train_forward']:,} prompted "
                f"+ {banked['train_query']:,} query forwards, {banked['train_backward']:,} backwards"),
            row("same runs: wall time with the bank / recomputed", banked_s / fresh_s, float("nan"), "x", False,
                f"{banked_s:.1f} s vs {fresh_s:.1f} s; building the bank (once per backbone) {bank_s:.2f} s")]


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


def bench_gpu(preset: Preset, data_home=None, **_) -> list[dict]:
    """ViT-B/16 at 224 px on a GPU (random weights, synthetic images): DualPrompt throughput, peak memory,
    and the projected time of a full CIFAR-100 run (50,000 samples x 3 iterations + 50 evaluations)."""
    import copy

    import timm

    from mepo_lab.data.normalization import Preprocess
    from mepo_lab.data.online_augment import OnlineAugment
    from mepo_lab.learners import make_learner

    if not torch.cuda.is_available():
        return [row("GPU benchmark (ViT-B/16, 224 px)", float("nan"), float("nan"), "", False,
                     "skipped: no CUDA device on this machine")]
    device = torch.device("cuda")
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 100, (256,))
    torch.cuda.reset_peak_memory_stats()
    learner = make_learner("dualprompt", backbone=copy.deepcopy(vit), preprocess=Preprocess(size=224),
                           augment=OnlineAugment("protocol", "batch", "cifar10"))
    observe, bare = _learner_throughput(learner, copy.deepcopy(vit), images, labels, device, steps=10)
    peak = torch.cuda.max_memory_allocated() / 2**30
    eval_s = 50 * 5000 * 2 / (3 * observe)  # ~5k exposed test images on average, two forwards, no backward
    projected = 50_000 * 3 / observe + eval_s
    return [row("DualPrompt training throughput, ViT-B/16 224 px", observe, float("nan"), "img/s", False,
                 f"bare forward+backward {bare:.0f} img/s; precision {learner.amp.describe()}; "
                 f"augment {learner.augment.id}"),
            row("peak GPU memory", peak, float("nan"), "GiB", False),
            row("projected full CIFAR-100 run (one seed)", projected / 60, float("nan"), "min", False,
                 "training 50,000 x 3 iterations + ~50 anytime evaluations")]
