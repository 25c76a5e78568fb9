"""``mepo-lab bench --only gpu``: issue 10's measurements on one GPU, and the same code at a small scale on the CPU.

* :func:`step_rows` -- the prompt learner's training step at the protocol's batch of 32 (3 updates per batch, the
  protocol's augmentation on the device): eager against the compiled backbone passes
  (:mod:`mepo_lab.learners.compiled`), in one run, so the speed-up is a ratio of two measurements.
* :func:`gpu_rows` -- a whole Si-Blurry run over fake CIFAR-100 of the real size (:mod:`mepo_lab.bench.real_run`):
  wall time against the 90 s target, training rate, evaluation share, passes, peak memory, share of the bf16 peak.
* MISA runs the same stream with ISA prompts: the released tensors when they can be had (Hugging Face cache or
  download), else random tensors of the released shapes (the speed does not depend on the values; the row says which).
"""
from __future__ import annotations

import copy
import time

import torch

from mepo_lab.bench.report import row, sync
from mepo_lab.config import Preset

#: (compile, compile_mode) settings compared by :func:`step_rows`; the first is the reference's eager step.
STEP_SETTINGS = (("off", "default"), ("on", "default"), ("on", "reduce-overhead"))


def bench_gpu(preset: Preset, data_home=None, **_) -> list[dict]:
    """Issue 10 on a GPU: ViT-B/16 (random weights) at 224 px; the step comparison, then the full DualPrompt and
    MISA runs with the default settings (``compile="auto"``: compiled on CUDA)."""
    import timm

    if not torch.cuda.is_available():
        return [row("GPU benchmark (ViT-B/16, 224 px)", float("nan"), float("nan"), "", False,
                    "skipped: no CUDA device on this machine")]
    vit, device = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0), torch.device("cuda")
    rows = step_rows(vit, device, size=224)
    rows += gpu_rows(vit, device, (100, 500, 100), size=224)
    prompts, which = misa_prompts(vit)
    return rows + gpu_rows(vit, device, (100, 500, 100), size=224, learner="misa", prompts=prompts, note=which)


def misa_prompts(vit: torch.nn.Module) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
    """``((e, g), what they are)``: the released ISA prompts (Hugging Face cache, or downloaded when online) when
    ``vit`` is 768 wide and they can be had, else U(−1, 1) tensors of the shapes the learner needs (the released ones on ViT-B/16)."""
    from mepo_lab.learners.prompt_learners import prompt_layers

    if int(vit.num_features) == 768:
        try:
            from mepo_lab.mepo.releases import load_prompts, mepo_artifacts

            files = mepo_artifacts("sup21k", include=("e_prompt", "g_prompt"))
            released = load_prompts(files["e_prompt"], files["g_prompt"])
            return (released.e, released.g), "the released ISA prompts"
        except Exception:  # offline without the files, or no hub client: the shapes are what the speed needs
            pass
    g_layers, e_layers = prompt_layers(len(vit.blocks))
    dim, gen = int(vit.num_features), torch.Generator().manual_seed(0)
    e = torch.empty(10, len(e_layers) * 20, dim).uniform_(-1, 1, generator=gen)
    g = torch.empty(1, len(g_layers) * 10, dim).uniform_(-1, 1, generator=gen)
    return (e, g), "random prompts of the released shapes"


def step_rows(vit: torch.nn.Module, device: torch.device, size: int, settings=STEP_SETTINGS, steps: int = 30,
              backend: str = "inductor") -> list[dict]:
    """DualPrompt's ``observe`` (32 new images x 3 updates, protocol augmentation) in img/s for each
    ``(compile, compile_mode)`` of ``settings``; the best compiled rate is held to 3x the eager one."""
    from mepo_lab.data.normalization import Preprocess
    from mepo_lab.data.online_augment import OnlineAugment
    from mepo_lab.learners import make_learner

    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (32 * 8, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 100, (len(images),), generator=gen)
    rates, notes = {}, {}
    for setting, mode in settings:
        learner = make_learner("dualprompt", backbone=copy.deepcopy(vit), preprocess=Preprocess(size=size),
                               augment=OnlineAugment("protocol", "batch", "cifar10"), compile=setting, compile_mode=mode)
        learner.compile_backend = backend
        key = "eager" if setting == "off" else f"compiled ({mode})"
        try:
            rates[key], notes[key] = observe_rate(learner, images, labels, device, steps)
        except Exception as err:  # e.g. CUDA graphs refusing the step: report it, measure the others
            rates[key], notes[key] = float("nan"), f"failed: {type(err).__name__}: {str(err)[:160]}"
    eager, rows = rates.pop("eager"), []
    rows.append(row(f"DualPrompt training step, eager, batch 32 x 3 updates ({device.type}, {size} px)", eager,
                    float("nan"), "img/s", False, "the reference's step: the baseline of the rows below"))
    for key, rate in rates.items():
        rows.append(row(f"DualPrompt training step, {key}", rate, 3 * eager, "img/s", False,
                        f"{rate / eager:.2f}x eager{'; ' + notes[key] if notes[key] else ''}"))
    return rows


def observe_rate(learner, images: torch.Tensor, labels: torch.Tensor, device: torch.device, steps: int,
                 warmup: int = 3) -> tuple[float, str]:
    """(images/s of ``learner.observe`` on 32-image batches after ``warmup`` steps -- where compiling happens --,
    why a compiled pass fell back to eager or ``""``)."""
    from mepo_lab.protocols.learner import StepContext

    learner.setup(100, 0, device)
    ctx = StepContext(100, 3, "seen")
    batches = [(images[i:i + 32], labels[i:i + 32]) for i in range(0, len(images), 32)]
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        x, y = batches[i % len(batches)]
        learner.observe(x.to(device), y.to(device), ctx)
    sync(device)
    failure = getattr(learner.prompted_pass, "failure", None) or getattr(learner.query_pass, "failure", None)
    return steps * 32 * 3 / (time.perf_counter() - start), f"fell back to eager: {failure}" if failure else ""


def gpu_rows(vit: torch.nn.Module, device: torch.device, sizes: tuple[int, int, int], size: int,
             learner: str = "dualprompt", note: str = "", **learner_kwargs) -> list[dict]:
    """The full-run rows for ``learner`` on ``vit`` and a fake dataset of ``sizes`` (classes, train and test images
    per class) at ``size`` px; tests call it on the CPU with the micro ViT. ``learner_kwargs`` go to the learner."""
    from mepo_lab.bench.real_run import evaluation_passes, fake_dataset, forward_flops, peak_fraction, real_run
    from mepo_lab.config import GCLConfig
    from mepo_lab.data.normalization import Preprocess
    from mepo_lab.data.online_augment import OnlineAugment
    from mepo_lab.learners.compiled import compile_wanted

    pre, name = Preprocess(size=size), {"dualprompt": "DualPrompt", "misa": "MISA", "l2p": "L2P"}.get(learner, learner)
    data = fake_dataset(*sizes, seed=3)
    torch._dynamo.reset()  # compiled graphs of earlier rows are not reused: the wall time includes compiling
    run = real_run(learner, vit.to(device), data, GCLConfig(), device, preprocess=pre,
                   augment=OnlineAugment("protocol", "batch", "cifar10"), **learner_kwargs)
    p, train_s = run["passes"], run["wall"] - run["eval_seconds"]
    fraction = peak_fraction(run, forward_flops(vit, pre, 32), device)
    extra = "".join(f"; {s}" for s in (note, run["compile_failure"] and f"fell back to eager: {run['compile_failure']}")
                    if s)
    compiled = compile_wanted(learner_kwargs.get("compile", "auto"), device)
    return [row(f"{name} full fake CIFAR-100 run, ViT {size} px ({device.type}, "
                f"{'compiled' if compiled else 'eager'})", run["wall"], 90.0, "s",
                True, f"{'compiling included; ' if compiled else ''}evaluation {run['eval_seconds'] / run['wall']:.0%} of it; query bank "
                f"{run['bank_seconds']:.1f} s once per backbone{extra}"),
            row(f"{name}: training rate of that run (prompted forward + backward + query)",
                p["train_forward"] / train_s, float("nan"), "img/s", False,
                f"{p['train_forward']:,} images x passes in {train_s:.1f} s"),
            row(f"{name}: evaluation passes of that run / recomputing every query",
                evaluation_passes(p) / (2 * p["eval_forward"]), 0.5, "x", True, f"{evaluation_passes(p):,} image passes"),
            row(f"{name}: peak GPU memory", run["peak_gib"], float("nan"), "GiB", False),
            row(f"{name}: share of the bf16 peak reached", fraction, float("nan"), "", False,
                "backbone passes x FLOPs per forward (backward = 2 forwards) / wall time / data-sheet peak")]
