"""Presets of the PURER experiment (``mepo-lab purer --preset smoke|cpu|colab|paper``).

Official values (Hu et al., CVPR 2023, arXiv 2303.11183; code Egg-Hu/PURER ``main.py``, ``pretrain.py``,
``scripts/cifar_51_conv4.sh``): teachers are Conv4 nets (32 filters, ``network.py``) on consecutive 5-class groups of the
meta-train classes, trained with Adam 0.01 for 60 epochs; the dynamic dataset holds ``K + 15`` images per class
and takes one Adam step (lr 0.25) per meta-iteration; the inversion loss weighs total variation 1e-4, the
BatchNorm prior 0.01 and L2 1e-5 with a jitter of 2 px; the meta-learner is second-order MAML (one inner step at
0.01, outer Adam 1e-3, 4 episodes per meta-batch) for 60 000 meta-iterations; the adversarial switch fires at
iteration 4000, then after 6 non-improvements, with λ_adv = 10; 600 test episodes with 15 queries per class.
The ``cpu`` preset scales this to the synthetic world and about 10 minutes on 2 cores (3 seeds): 20 pretraining
classes behind 4 teachers, held-out downstream classes for the meta-test, the official Conv4 (width 32), 150
meta-iterations with the switch from iteration 45, 200 test episodes, 16-pixel images; data-free MePo
inverts 40 pretraining classes (one MePo group). ``MEPO_LAB_SMOKE=1`` forces ``smoke``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from mepo_lab.config import PRESETS, check_choices, check_subset, smoke_forced

METHODS = ("random_init", "teacher_average", "ei", "eci", "eci_icfil")
MEPO_ROWS = ("pretrained", "mepo_real", "mepo_data_free")


@dataclass(frozen=True)
class PurerConfig:
    """Teachers, dynamic dataset, inversion loss, meta-learner, switch, meta-test and data-free MePo."""

    name: str = "cpu"
    world_preset: str = "cpu"  # the lab preset whose world (and micro ViT, for data-free MePo) is used
    image_size: int = 16  # the world's images re-rendered at this size for the Conv4 part (official CIFAR-FS: 32)
    meta_train_classes: int = 20  # pretraining-role classes behind the teachers
    classes_per_teacher: int = 5
    train_per_class: int = 100  # teacher training images per class
    test_classes: int = 20  # downstream-role classes for the meta-test episodes
    test_per_class: int = 40
    width: int = 32  # Conv4 filters (official network.py: 32)
    teacher_epochs: int = 15
    teacher_lr: float = 0.01
    n_way: int = 5
    shots: tuple[int, ...] = (1, 5)
    q_query: int = 15
    meta_learner: str = "maml"  # maml | anil | protonet
    first_order: bool = False
    inner_lr: float = 0.01
    inner_steps: int = 1
    outer_lr: float = 1e-3
    meta_batch: int = 4
    iterations: int = 150
    init: str = "average"  # average (FedAvg of the teachers, official --average) | random
    generator_lr: float = 0.25
    tv: float = 1e-4
    bn: float = 1e-2
    l2: float = 1e-5
    jitter: int = 2
    adv_start: int = 45
    patience: int = 6
    adv_scale: float = 10.0
    snapshot_every: int = 50
    test_episodes: int = 200
    icfil: bool = True  # evaluate eci_icfil when it is in methods (our interpretation of ICFIL; variant below)
    icfil_variant: str = "A"  # A (re-adapt on S ∪ Ŝ) | B (continue on Ŝ)
    icfil_per_class: int = 5
    icfil_steps: int = 8
    data_free_mepo: bool = True
    mepo_classes: int | None = 40  # pretraining classes inverted (None = all); real-data MePo uses the same ones
    mepo_per_class: int = 24  # inverted images per class (the cpu preset's MePo draws 24 per pseudo task)
    mepo_steps: int = 50
    mepo_seeds: tuple[int, ...] = (1, 2, 3)
    seeds: tuple[int, ...] = (1, 2, 3)
    methods: tuple[str, ...] = METHODS
    device: str = "auto"

    def __post_init__(self) -> None:
        check_subset("methods", self.methods, METHODS)
        if self.n_way < 2 or self.n_way > self.test_classes:
            raise ValueError(f"n_way must be in [2, test_classes={self.test_classes}], got {self.n_way}")
        if self.n_way > self.meta_train_classes:
            raise ValueError(f"n_way={self.n_way} is larger than the {self.meta_train_classes} meta-train classes")
        if not self.shots or min(self.shots) < 1 or self.q_query < 1:
            raise ValueError(f"shots must list values >= 1 and q_query must be >= 1, got {self.shots}, {self.q_query}")
        if max(self.shots) + self.q_query > self.test_per_class:
            raise ValueError(f"K + Q = {max(self.shots)} + {self.q_query} is larger than test_per_class="
                             f"{self.test_per_class}: lower q_query or raise test_per_class")
        for key in ("iterations", "meta_batch", "teacher_epochs", "test_episodes", "classes_per_teacher", "width"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed, e.g. --set seeds=1,2,3")
        if self.icfil and "eci_icfil" in self.methods and self.meta_learner == "protonet":
            raise ValueError("ICFIL inverts an adapted classifier head, which ProtoNet does not have: drop eci_icfil "
                             "from methods (--set methods=random_init,teacher_average,ei,eci) or set icfil=false")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 (four 2x2 poolings in the Conv4), got {self.image_size}")
        check_choices(self, _CHOICES)


_CHOICES = {"world_preset": tuple(PRESETS), "meta_learner": ("maml", "anil", "protonet"), "init": ("average", "random"),
            "icfil_variant": ("A", "B")}


def _smoke() -> PurerConfig:
    return PurerConfig(name="smoke", world_preset="smoke", meta_train_classes=10, train_per_class=20, test_classes=5,
                       test_per_class=20, width=8, teacher_epochs=2, shots=(1,), q_query=3, iterations=6,
                       adv_start=2, snapshot_every=3, test_episodes=4, icfil_steps=2, icfil_per_class=2,
                       mepo_classes=8, mepo_per_class=6, mepo_steps=2, mepo_seeds=(1,), seeds=(1,))


def _colab() -> PurerConfig:
    return PurerConfig(name="colab", image_size=32, meta_train_classes=60, teacher_epochs=60, iterations=6000,
                       adv_start=1000, test_episodes=600, snapshot_every=500, mepo_classes=None, mepo_steps=500)


def _paper() -> PurerConfig:
    return replace(_colab(), name="paper", iterations=60000, adv_start=4000, seeds=(1, 2, 3, 4, 5))


PURER_PRESETS = {"smoke": _smoke, "cpu": PurerConfig, "colab": _colab, "paper": _paper}


def purer_preset(name: str = "cpu") -> PurerConfig:
    """The named PURER preset (``MEPO_LAB_SMOKE=1`` forces ``smoke``); ValueError for unknown names."""
    if name not in PURER_PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PURER_PRESETS)}")
    return PURER_PRESETS["smoke" if smoke_forced() else name]()
