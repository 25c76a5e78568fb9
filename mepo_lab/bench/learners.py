"""Benchmarks of the image learners: throughput against bare forward+backward, and the GPU path.

Part of ``mepo-lab bench`` (:mod:`mepo_lab.bench`); each function returns report rows
(:func:`mepo_lab.bench.report.row`).
"""
from __future__ import annotations

import time

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
