"""Configuration presets: plain frozen dataclasses, one per concern, grouped into a :class:`Preset`.

Four presets exist (``smoke``, ``cpu``, ``colab``, ``paper``). ``MEPO_LAB_SMOKE=1`` forces ``smoke``
whatever was asked, which is how CI and nbmake run every notebook in seconds. The CLI is derived from
these dataclasses (:func:`override`), so a field added here is a flag there.

The protocol values of the Si-Blurry lineage (MISA/MePo ``GCL/`` scripts; ``docs/reference/si_blurry.md#training``) are
the defaults of :class:`StreamConfig` and :class:`GCLConfig`: 5 tasks, N = 50, M = 10, stochastic,
32 new samples per step, 3 online iterations, Adam 5e-3, evaluation every 1000 samples.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

SMOKE_ENV = "MEPO_LAB_SMOKE"


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic world (offline stand-in for ImageNet + CIFAR-100).

    ``n_downstream_classes`` of the world's classes form the GCL "CIFAR-100"; the rest are the
    pretraining classes (the "ImageNet"). Per-class image counts are per split. ``shift`` re-renders only
    the downstream classes (``sketch``, ``invert``, ``clutter``: the lab's ImageNet → ImageNet-R).
    """

    seed: int = 0
    image_size: int = 32
    n_downstream_classes: int = 100
    pretrain_per_class: int = 200
    train_per_class: int = 500
    test_per_class: int = 100
    max_pretrain_classes: int | None = None  # None: every non-downstream class
    shift: str = "none"  # downstream rendering: none | sketch | invert | clutter (pretraining unchanged)


@dataclass(frozen=True)
class MicroViTConfig:
    """A small timm ``VisionTransformer`` for the synthetic world (CLS token, post-norm features)."""

    patch_size: int = 8
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0


@dataclass(frozen=True)
class PretrainConfig:
    """Supervised pretraining of the micro ViT on the pretraining classes (AdamW, cosine schedule)."""

    epochs: float = 4.5
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    label_smoothing: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class StreamConfig:
    """Si-Blurry stream knobs: T tasks, N % disjoint classes, M % blurred samples.

    ``docs/reference/si_blurry.md#sampler``.
    """

    n_tasks: int = 5
    n: int = 50
    m: int = 10
    stochastic: bool = True


#: ``GCLConfig.compile`` / ``compile_mode`` choices (:mod:`mepo_lab.learners.compiled`).
COMPILE = ("auto", "on", "off")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class GCLConfig:
    """Online GCL protocol (``docs/reference/si_blurry.md#training``, ``#evaluation``, ``#masks``)."""

    batch_size: int = 32
    online_iter: int = 3
    eval_period: int = 1000
    eval_batch_size: int = 128
    lr: float = 5e-3
    train_mask: str = "seen"  # seen | batch | none
    eval_mask: str = "none"  # none | seen
    finetune_backbone_lr: float = 1e-4
    amp: bool = True  # bf16/fp16 autocast on a GPU (the reference scripts run fp32); no effect on CPU
    augment: str = "protocol"  # image learners: protocol (crop pad 4 + flip + AutoAugment) | flip | none
    augment_draws: str = "batch"  # batch (official: one draw shared by the batch) | sample (corrected)
    augment_policy: str = "auto"  # AutoAugment: auto (by dataset; none on the synthetic world) | cifar10 | imagenet | none
    # speed only (issue 10; mepo_lab.learners.compiled, mepo_lab.protocols.eval_batch):
    compile: str = "auto"  # prompt learners' backbone passes: auto (torch.compile on CUDA only) | on | off
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune | ...
    eval_batch_auto: bool = True  # on a GPU, batch-independent image learners size evaluation batches from free memory

    def __post_init__(self) -> None:
        check_choices(self, {"compile": COMPILE, "compile_mode": COMPILE_MODES})


@dataclass(frozen=True)
class MePoConfig:
    """MePo meta post-refinement; defaults are the official values.

    ``docs/reference/mepo.md#pseudo-tasks`` to ``#meta-covariance``.

    ``fidelity`` chooses the value of every switch left at ``None``: ``"official"`` reproduces the
    reference code, ``"corrected"`` fixes its documented discrepancies (see docs/fidelity.md and
    :func:`mepo_lab.mepo.switches.resolve`). ``head_reset`` (zapping) is an ablation, not a fix.
    """

    fidelity: str = "official"
    group_size: int = 100  # classes per meta-iteration
    tasks_per_group: int = 50  # pseudo tasks per group (2 classes each)
    samples_per_class: int = 200  # images per class, drawn afresh for every pseudo task
    inner_epochs: int = 4  # epochs per pseudo task (hard-coded 4 in the reference)
    batch_size: int = 256
    backbone_lr: float = 1e-4
    head_lr: float = 1e-2
    momentum: float = 0.9
    meta_lr: float = 0.1  # eta of the Reptile step (the reference's `-inner_lr` flag)
    meta_epochs: int = 5  # the Sup-21K checkpoint used downstream is meta-epoch 5
    n_repeats: int = 1  # the reference's `-num_inner_steps`
    repeat_draws: str = "fresh"  # fresh (the reference: new images in every repeat) | same (reuse the first draw)
    head_reset: str = "none"  # none | per_sequence | per_task  (zapping)
    schedule: str = "sequential"  # sequential (MePo) | joint (control: each group's pseudo tasks mixed, same steps)
    logit_mask: str | None = None  # multiply (official) | neg_inf | current_task
    optimizer_state: str | None = None  # persist (official) | reset
    class_index: str | None = None  # double (official: permutation applied twice) | direct
    joint_set: str | None = None  # independent (official: fresh draw) | union (the pseudo tasks' images)
    joint_augment: bool | None = None  # False (official: test transform) | True
    repeats: str | None = None  # nested (official) | restart (each repeat restarts from theta_0)
    cov_samples_per_class: int = 200
    cov_augment: bool | None = None  # True (official: train transform) | False (clean images)
    amp: bool = False  # bf16/fp16 autocast on a GPU; the reference refines in fp32 (no effect on CPU)
    seed: int = 0


@dataclass(frozen=True)
class AlignConfig:
    """Output alignment in downstream GCL: ``mode`` none | official | corrected.

    ``docs/reference/mepo.md#alignment``.
    """

    mode: str = "none"
    alpha: float = 0.5
    ridge: float = 1e-4
    official_singleton: str = "raise"  # raise (the reference's crash) | skip (FlyGCL's guard)


@dataclass(frozen=True)
class Preset:
    """Everything one run of the lab needs, by concern."""

    name: str
    world: WorldConfig = field(default_factory=WorldConfig)
    vit: MicroViTConfig = field(default_factory=MicroViTConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    gcl: GCLConfig = field(default_factory=GCLConfig)
    mepo: MePoConfig = field(default_factory=MePoConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    seeds: tuple[int, ...] = (1, 2, 3)
    device: str = "auto"
    feature_batch_size: int = 512
    dataset: str = "synthetic"  # the GCL benchmark: synthetic | cifar100 | imagenet-r | cub200 | ...
    backbone: str = "pretrained"  # micro ViT: random | pretrained | mepo; real: sup21k | sup21k_1k | dino


def _smoke() -> Preset:
    return Preset(
        name="smoke",
        world=WorldConfig(n_downstream_classes=10, pretrain_per_class=24, train_per_class=40,
                          test_per_class=10, max_pretrain_classes=40),
        vit=MicroViTConfig(patch_size=8, embed_dim=32, depth=1, num_heads=2),
        pretrain=PretrainConfig(epochs=1.0, batch_size=128, lr=3e-3),
        stream=StreamConfig(n_tasks=3),
        gcl=GCLConfig(eval_period=100, online_iter=1),
        mepo=MePoConfig(group_size=8, tasks_per_group=4, samples_per_class=6, inner_epochs=1, batch_size=12,
                        backbone_lr=1e-3, meta_lr=0.5, meta_epochs=2, cov_samples_per_class=6),
        seeds=(1,),
        feature_batch_size=256,
    )


def _cpu() -> Preset:
    # MePo with the official rates (SGD 1e-4 / 1e-2, eta 0.1, 5 meta-epochs) and sizes scaled to the
    # synthetic world: 40-class groups cut into 20 pseudo tasks of 2 classes, 24 images per class.
    return Preset(name="cpu", mepo=MePoConfig(group_size=40, tasks_per_group=20, samples_per_class=24,
                                              batch_size=48, cov_samples_per_class=50))


def _colab() -> Preset:
    # A T4 in a lab session: CIFAR-100 with the original ViT-B/16 (Sup-21K), the protocol's stream and
    # optimiser, 3 seeds, evaluation batches of 64 to stay well inside 16 GB with prompts and AMP; a MePo
    # refinement there runs under AMP too (the reference's fp32 is the default everywhere else).
    return Preset(name="colab", dataset="cifar100", backbone="sup21k", gcl=GCLConfig(eval_batch_size=64),
                  mepo=MePoConfig(batch_size=128, amp=True), feature_batch_size=256)


def _paper() -> Preset:
    # The protocol of the MISA/MePo scripts (docs/reference/si_blurry.md#training): CIFAR-100, Sup-21K ViT-B/16,
    # 32 new samples x 3 online iterations, Adam 5e-3, evaluation every 1000 samples in batches of 128,
    # seeds 1..5 (GCL/main.py always runs five), the official MePo sizes.
    return Preset(name="paper", dataset="cifar100", backbone="sup21k", seeds=(1, 2, 3, 4, 5))


PRESETS = {"smoke": _smoke, "cpu": _cpu, "colab": _colab, "paper": _paper}


def check_choices(cfg: Any, choices: dict[str, tuple[str, ...]]) -> None:
    """One ``ValueError`` naming the field and its valid values for the first field of ``cfg`` outside ``choices``."""
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")


def check_subset(name: str, values: tuple, allowed: tuple) -> None:
    """One ``ValueError`` unless ``values`` is a non-empty subset of ``allowed`` (a method list, a regime list)."""
    if not values or any(v not in allowed for v in values):
        raise ValueError(f"{name} must be a non-empty subset of {', '.join(allowed)}, got {list(values)}")


def run_fingerprint(cfg: Any, skip: tuple[str, ...] = ("name", "seeds", "methods", "device"), **extra: Any) -> str:
    """What makes two experiment runs comparable (their ``results.json`` rows reusable): every field of the
    dataclass ``cfg`` except ``skip``, plus ``extra``, as sorted JSON."""
    keep = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
    return json.dumps({**keep, **extra}, sort_keys=True, default=str)


def smoke_forced() -> bool:
    """True when ``MEPO_LAB_SMOKE`` is set to a true value (1/true/yes)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def get_preset(name: str = "cpu") -> Preset:
    """Return the named preset; ``MEPO_LAB_SMOKE=1`` forces ``smoke``.

    Raises ``ValueError`` naming the valid presets for an unknown name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS["smoke" if smoke_forced() else name]()


def _convert(value: str, annotation: str, key: str) -> Any:
    """Parse a CLI string by the field's annotation (``"int"``, ``"str | None"``, ``"tuple[int, ...]"``)."""
    kinds = [k.strip() for k in str(annotation).split("|")]
    if "None" in kinds and value.strip().lower() == "none":
        return None
    kind = next(k for k in kinds if k != "None")
    if kind.startswith("tuple") and not value.replace(",", "").strip():
        raise ValueError(f"{key}= is empty: give at least one value, e.g. {key}=1,2,3")
    try:
        if kind == "bool":
            low = value.strip().lower()
            if low not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(value)
            return low in {"1", "true", "yes", "on"}
        if kind.startswith("tuple"):
            item = {"float": float, "str": str}.get(kind[6:].split(",")[0].strip(), int)
            return tuple(item(v.strip()) for v in value.split(",") if v.strip())
        return {"int": int, "float": float, "str": str}[kind](value)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not a valid {kind}") from None


def override(preset: Preset, assignments: list[str] | dict[str, Any]) -> Preset:
    """Return ``preset`` with dotted-key overrides applied, e.g. ``["gcl.lr=1e-3", "seeds=1,2"]``.

    Keys are the dataclass field paths (``world.seed``, ``stream.m``, ``gcl.online_iter``, ``seeds``).
    Unknown keys raise ``ValueError`` listing the valid keys of that section.
    """
    items = assignments.items() if isinstance(assignments, dict) else (_split(a) for a in assignments)
    for key, value in items:
        preset = _set(preset, key.split("."), value, key)
    return preset


def _split(assignment: str) -> tuple[str, str]:
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} must look like section.field=value, e.g. gcl.lr=1e-3")
    key, value = assignment.split("=", 1)
    return key.strip(), value.strip()


def _set(obj: Any, path: list[str], value: Any, key: str) -> Any:
    names = [f.name for f in fields(obj)]
    if path[0] not in names:
        raise ValueError(f"unknown setting {key!r}: valid keys here are {', '.join(names)}")
    current, annotation = getattr(obj, path[0]), next(f.type for f in fields(obj) if f.name == path[0])
    if len(path) > 1:
        if not is_dataclass(current):
            raise ValueError(f"{key!r}: {path[0]} has no sub-fields")
        return replace(obj, **{path[0]: _set(current, path[1:], value, key)})
    if is_dataclass(current):
        raise ValueError(f"{key!r} is a section: set one of its fields, e.g. {key}.{fields(current)[0].name}=...")
    new = _convert(value, annotation, key) if isinstance(value, str) else value
    return replace(obj, **{path[0]: new})


def as_dict(preset: Preset) -> dict[str, Any]:
    """The preset as a JSON-ready dict (recorded in every run's results)."""
    return dataclasses.asdict(preset)
