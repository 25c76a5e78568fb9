"""The pre-registered grid of ``mepo-lab study``: what makes MePo work on the embedded default?

Refinement variants (rows of the grid; every one refines the same pretrained micro ViT on the same pseudo-task
sequence, and differs from official MePo in one named setting, :data:`VARIANTS`):

* ``none`` — no refinement (the plain pretrained backbone): the baseline of every gain;
* ``mepo`` — MePo with the official switches (Reptile η = 0.1; Fang et al., arXiv 2602.07940);
* ``mepo_corrected`` — MePo with the corrected switches (``mepo.fidelity=corrected``, docs/fidelity.md);
* ``joint_ft`` — *joint fine-tuning*: the same pseudo-task images, the same number of SGD steps with the same
  batch sizes, mixed across the group's tasks, and no Reptile interpolation (``mepo.schedule=joint``,
  ``mepo.meta_lr=1``): is it meta-learning, or just more supervised training?
* ``eta_1`` — Reptile with η = 1: plain sequential training on the pseudo-task sequence;
* ``eta_0.03``, ``eta_0.3`` — the η sweep around the official 0.1 (with ``mepo`` and ``eta_1``: 0.03 … 1).

Columns: learner (``linear``, ``ncm`` on cached features of the full ``cpu`` stream; ``finetune``,
``dualprompt`` on images, on a course-sized stream of ``image_train_per_class`` images per class) × alignment
(``none``, ``corrected``) × shift (``none`` and ``sketch``, the world's rendition shift, the analogue of ImageNet →
ImageNet-R) × seeds. Image learners run the ``image_variants`` only. The grid is fixed here, before any run;
``--set`` may shrink it for a quick look, and the report always shows every cell that ran.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from mepo_lab.config import PRESETS, check_choices, check_subset
from mepo_lab.data.render import SHIFTS

#: variant -> the ``mepo.*`` overrides of its refinement (``None``: no refinement)
VARIANTS: dict[str, dict | None] = {
    "none": None,
    "mepo": {},
    "mepo_corrected": {"fidelity": "corrected"},
    "joint_ft": {"schedule": "joint", "meta_lr": 1.0},
    "eta_1": {"meta_lr": 1.0},
    "eta_0.03": {"meta_lr": 0.03},
    "eta_0.3": {"meta_lr": 0.3},
}
VARIANT_NAMES = {"none": "no refinement", "mepo": "MePo (official)", "mepo_corrected": "MePo (corrected switches)",
                 "joint_ft": "joint fine-tuning", "eta_1": "Reptile η = 1", "eta_0.03": "Reptile η = 0.03",
                 "eta_0.3": "Reptile η = 0.3"}
FEATURE_LEARNERS = ("linear", "ncm")
IMAGE_LEARNERS = ("finetune", "dualprompt")
LEARNERS = FEATURE_LEARNERS + IMAGE_LEARNERS
ALIGNMENTS = ("none", "corrected")


@dataclass(frozen=True)
class StudyConfig:
    """The grid (variants × learners × alignments × shifts × seeds) and the diagnostics' sizes."""

    name: str = "cpu"
    world_preset: str = "cpu"  # the lab preset whose world, micro ViT, MePo sizes and stream are used
    variants: tuple[str, ...] = tuple(VARIANTS)
    image_variants: tuple[str, ...] = ("none", "mepo", "mepo_corrected", "joint_ft")
    learners: tuple[str, ...] = LEARNERS
    alignments: tuple[str, ...] = ALIGNMENTS
    shifts: tuple[str, ...] = ("none", "sketch")
    image_train_per_class: int = 50  # the image learners' stream: 50 x 100 classes = 5000 samples
    image_test_per_class: int = 10
    probe_images: int = 400  # test images whose features the drift probe follows during finetune
    probe_samples: int = 10000  # training features the linear probe and the H-score use (the first ones)
    seeds: tuple[int, ...] = (1, 2, 3)
    device: str = "auto"

    def __post_init__(self) -> None:
        check_subset("variants", self.variants, tuple(VARIANTS))
        check_subset("image_variants", self.image_variants, tuple(VARIANTS))
        check_subset("learners", self.learners, LEARNERS)
        check_subset("alignments", self.alignments, ALIGNMENTS)
        check_subset("shifts", self.shifts, SHIFTS)
        if "none" not in self.variants:
            raise ValueError(f"variants must include 'none' (the baseline of every gain), got {list(self.variants)}")
        if set(self.learners) & set(IMAGE_LEARNERS) and not set(self.image_variants) <= set(self.variants):
            raise ValueError(f"image_variants {list(self.image_variants)} must be a subset of variants "
                             f"{list(self.variants)}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed, e.g. --set seeds=1,2,3")
        for key in ("image_train_per_class", "image_test_per_class", "probe_images", "probe_samples"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        check_choices(self, {"world_preset": tuple(PRESETS)})


def _smoke() -> StudyConfig:
    return StudyConfig(name="smoke", world_preset="smoke", variants=("none", "mepo", "joint_ft"),
                       image_variants=("none", "mepo"), learners=("linear", "ncm", "finetune"),
                       image_train_per_class=24, image_test_per_class=4, probe_images=16, probe_samples=200, seeds=(1,))


def _colab() -> StudyConfig:
    # a T4: the image learners on the full stream of the cpu world
    return StudyConfig(name="colab", image_train_per_class=500, image_test_per_class=100)


def _paper() -> StudyConfig:
    return replace(_colab(), name="paper", seeds=(1, 2, 3, 4, 5))


STUDY_PRESETS = {"smoke": _smoke, "cpu": StudyConfig, "colab": _colab, "paper": _paper}


def study_preset(name: str = "cpu") -> StudyConfig:
    """The named study preset; ``MEPO_LAB_SMOKE=1`` forces ``smoke``."""
    from mepo_lab.config import smoke_forced

    if name not in STUDY_PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(STUDY_PRESETS)}")
    return STUDY_PRESETS["smoke" if smoke_forced() else name]()
