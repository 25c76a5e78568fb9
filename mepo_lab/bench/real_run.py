"""A real Si-Blurry run of a prompt learner, measured: wall time, evaluation share, backbone passes, memory, FLOP rate.

The same code measures the GPU run of issue 10 (``mepo-lab bench --only gpu``: fake CIFAR-100 of the real size,
ViT-B/16 at 224 px, the protocol's augmentation) and its scaled-down CPU version (``--only passes``: the micro
ViT on 2,000 samples), so what the GPU bench reports is tested here on the CPU. The images are random uint8
(the speed of a run does not depend on what the pixels show); the backbone-pass counters come from the run's
record (``meta["passes"]``).
"""
from __future__ import annotations

import copy
import math
import tempfile
import time

import numpy as np
import torch

from mepo_lab.bench.report import sync

#: Dense bf16 peak of the GPUs the lab meets (FLOP/s; NVIDIA data sheets, without sparsity).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "T4": 65e12}


def fake_dataset(n_classes: int, train_per_class: int, test_per_class: int, size: int = 32, seed: int = 0):
    """Random uint8 images with balanced labels: ``(train, train labels, test, test labels)``."""
    gen = torch.Generator().manual_seed(seed)
    train = torch.randint(0, 256, (n_classes * train_per_class, 3, size, size), dtype=torch.uint8, generator=gen)
    test = torch.randint(0, 256, (n_classes * test_per_class, 3, size, size), dtype=torch.uint8, generator=gen)
    return (train, np.repeat(np.arange(n_classes), train_per_class), test,
            np.repeat(np.arange(n_classes), test_per_class))


def forward_flops(vit: torch.nn.Module, preprocess, size: int) -> float:
    """FLOPs of one backbone forward (``forward_features``) of one preprocessed image (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = preprocess(torch.zeros(1, 3, size, size, dtype=torch.uint8)).to(next(vit.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        vit.forward_features(x)
    return float(counter.get_total_flops())


def real_run(learner: str, vit: torch.nn.Module, data, cfg, device: torch.device | str, *, preprocess, augment=None,
             bank: bool = True, amp: bool = True, **learner_kwargs) -> dict:
    """One run of ``learner`` over a Si-Blurry stream (5 tasks, N 50, M 10, seed 1) of ``data``; its measurements.

    ``bank``: evaluation queries from a test-set bank (built first, timed apart) instead of recomputed at every
    evaluation; ``learner_kwargs`` go to the learner (``compile``, ``prompts``). Returns ``wall``, ``eval_seconds``,
    ``bank_seconds``, ``passes``, ``peak_gib`` (NaN on a CPU), ``metrics`` and ``compile_failure`` (``None`` unless
    a compiled pass fell back to eager).
    """
    from mepo_lab.learners import make_learner
    from mepo_lab.learners.queries import query_bank
    from mepo_lab.protocols.online import run_gcl
    from mepo_lab.protocols.streams import si_blurry

    device = torch.device(device)
    train, ytr, test, yte = data
    stream = si_blurry(ytr, n_tasks=5, n=50, m=10, seed=1)
    kwargs, bank_s = {"preprocess": preprocess, "amp": amp, "query_cache": bank, **learner_kwargs}, 0.0
    if augment is not None:
        kwargs["augment"] = augment
    if bank:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            kwargs["query_bank"] = query_bank(vit, test, preprocess, "bench", device=device, amp=amp, data_home=tmp)
            sync(device)
            bank_s = time.perf_counter() - start
    model = make_learner(learner, backbone=copy.deepcopy(vit), **kwargs)
    spent = [0.0]
    evaluate = model.eval_logits

    def timed(x, rows):
        sync(device)
        start = time.perf_counter()
        z = evaluate(x, rows)
        sync(device)
        spent[0] += time.perf_counter() - start
        return z

    model.eval_logits = timed
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    res = run_gcl(model, train, test, yte, stream, cfg, device=device, progress=False)
    sync(device)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else math.nan
    failure = next((p.failure for p in (getattr(model, "prompted_pass", None), getattr(model, "query_pass", None))
                    if p is not None and p.failure), None)
    return {"wall": wall, "eval_seconds": spent[0], "bank_seconds": bank_s, "passes": res.meta["passes"],
            "peak_gib": peak, "metrics": res.metrics, "compile_failure": failure}


def peak_fraction(run: dict, flops_per_forward: float, device: torch.device | str) -> float:
    """Share of the device's bf16 peak the run reached: backbone passes × FLOPs (a backward ≈ 2 forwards) / time.

    NaN on a CPU or an unknown GPU. The prompted passes carry a few more tokens than the counted forward, so this
    slightly understates the work done.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return math.nan
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), math.nan)
    p = run["passes"]
    passes = p["train_forward"] + p["train_query"] + p["eval_query"] + p["eval_forward"] + 2 * p["train_backward"]
    return passes * flops_per_forward / run["wall"] / peak


def evaluation_passes(passes: dict) -> int:
    """Backbone passes of the evaluations: the computed queries and the prompted forwards."""
    return passes["eval_query"] + passes["eval_forward"]
