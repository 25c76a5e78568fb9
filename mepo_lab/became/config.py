"""Presets of the BECAME experiment (``mepo-lab became --preset smoke|cpu|colab|paper``).

Official values (BECAME ``GPM-based/main_cifar100.py`` and ``scripts/run.sh``; Li et al., ICML 2025): 10-split
CIFAR-100 with the AlexNet, SGD lr 0.05 in both stages, batch 64, up to 200 epochs per stage with a
validation-driven schedule, GPM thresholds ε(t) = 0.97 + 0.003·t, 125 samples for the representation
matrices, Fisher from predicted labels, γ = 1. The lab runs a fixed number of epochs per stage (no
validation split); the ``cpu`` preset scales everything to the synthetic world and a 5-minute budget: 10 tasks
of 2 classes, the AlexNet at a quarter of its width, 5 + 5 epochs (the micro ViT trained from scratch stays
at chance with this budget: ``model="vit"`` is there to show GPM on token inputs). ``colab_vit`` is the GPU
variant on a pretrained ViT-B/16 (Sup-21K) with its last 3 blocks adapted at 224 px (not in the paper, which
trains from scratch: our choice of blocks, epochs and learning rate).
``MEPO_LAB_SMOKE=1`` forces ``smoke``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from mepo_lab.config import check_choices, check_subset, smoke_forced

METHODS = ("seqft", "gpm", "gpm_stage2", "avg", "half", "became")


@dataclass(frozen=True)
class BecameConfig:
    """Data, model, the two training stages, GPM and the merge of the BECAME experiment."""

    name: str = "cpu"
    data: str = "synthetic"  # synthetic | cifar100
    world_seed: int = 0
    image_size: int = 32
    n_tasks: int = 10
    classes_per_task: int = 2
    train_per_class: int = 100
    test_per_class: int = 50
    model: str = "alexnet"  # alexnet (official, scaled by width) | vit (micro ViT, scratch) | pretrained_vit
    width: float = 0.25  # alexnet only
    backbone: str = "sup21k"  # pretrained_vit only: a backbone zoo name or local:<path>
    adapt_blocks: int = 3  # pretrained_vit only: the last blocks that train (GPM + merge act on them)
    pretrained: bool = True  # pretrained_vit only: False = timm's random init (offline timing)
    precision: str = "fp32"  # fp32 | bf16 (autocast on CUDA; pretrained_vit only)
    epochs: int = 5  # stage 1 (and the only stage of seqft / gpm)
    epochs2: int = 5  # stage 2
    lr: float = 0.05
    lr2: float = 0.05
    batch_size: int = 64
    eps0: float = 0.97
    eps_inc: float = 0.003
    rep_samples: int = 125  # images whose layer inputs build the representation matrices
    max_rows: int = 2048  # rows (tokens / patches) per layer and task
    fisher_labels: str = "pred"  # pred (official) | true
    fisher_estimator: str = "batch"  # batch (official) | sample (exact per-sample)
    gamma: float = 1.0
    seeds: tuple[int, ...] = (1, 2, 3)
    methods: tuple[str, ...] = METHODS
    device: str = "auto"

    def __post_init__(self) -> None:
        check_subset("methods", self.methods, METHODS)
        if not 0 < self.eps0 < 1 or not 0 <= self.eps_inc < 1:
            raise ValueError(f"eps0 must be in (0, 1) and eps_inc in [0, 1), got {self.eps0} and {self.eps_inc}")
        if self.eps0 + (self.n_tasks - 1) * self.eps_inc >= 1:
            raise ValueError(f"the GPM threshold eps0 + (n_tasks - 1) * eps_inc must stay below 1, got "
                             f"{self.eps0} + {self.n_tasks - 1} * {self.eps_inc}: lower eps_inc (e.g. 0.0003) or eps0")
        if self.adapt_blocks < 1:
            raise ValueError(f"adapt_blocks must be >= 1, got {self.adapt_blocks}")
        if self.fisher_estimator == "sample" and self.model == "alexnet":
            raise ValueError("fisher_estimator='sample' needs per-sample gradients, which the AlexNet's BatchNorm "
                             "(batch statistics) does not have: use fisher_estimator='batch' or model='vit'")
        if self.n_tasks < 2 or self.classes_per_task < 1:
            raise ValueError(f"n_tasks must be >= 2 and classes_per_task >= 1, got {self.n_tasks} and "
                             f"{self.classes_per_task}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed, e.g. --set seeds=1,2,3")
        check_choices(self, _CHOICES)


_CHOICES = {"data": ("synthetic", "cifar100"), "model": ("vit", "alexnet", "pretrained_vit"),
            "fisher_labels": ("pred", "true"), "fisher_estimator": ("batch", "sample"), "precision": ("fp32", "bf16")}


def _smoke() -> BecameConfig:
    return BecameConfig(name="smoke", n_tasks=3, train_per_class=20, test_per_class=10, epochs=1, epochs2=1, width=0.1,
                        rep_samples=16, max_rows=256, seeds=(1,))


def _colab() -> BecameConfig:
    return BecameConfig(name="colab", data="cifar100", n_tasks=10, classes_per_task=10, model="alexnet", width=1.0,
                        epochs=50, epochs2=50, train_per_class=500, test_per_class=100)


def _colab_vit() -> BecameConfig:
    return BecameConfig(name="colab_vit", data="cifar100", n_tasks=10, classes_per_task=10, model="pretrained_vit",
                        backbone="sup21k", adapt_blocks=3, precision="bf16", epochs=2, epochs2=2, lr=0.01, lr2=0.01,
                        train_per_class=500, test_per_class=100, rep_samples=125, max_rows=4096)


def _paper() -> BecameConfig:
    return replace(_colab(), name="paper", epochs=200, epochs2=200, seeds=(1, 2, 3, 4, 5))


BECAME_PRESETS = {"smoke": _smoke, "cpu": BecameConfig, "colab": _colab, "colab_vit": _colab_vit, "paper": _paper}


def became_preset(name: str = "cpu") -> BecameConfig:
    """The named BECAME preset (``MEPO_LAB_SMOKE=1`` forces ``smoke``); ValueError for unknown names."""
    if name not in BECAME_PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(BECAME_PRESETS)}")
    return BECAME_PRESETS["smoke" if smoke_forced() else name]()
