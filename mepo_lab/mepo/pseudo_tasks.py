"""Pseudo task sequences cut from a labelled pretraining set (MePo, ``docs/reference/mepo.md#pseudo-tasks``).

One **meta-epoch** = a fresh random permutation of the C pretraining classes, cut into
``C // group_size`` **groups** (one Reptile update each); the ``C mod group_size`` classes left over sit out
that epoch (:meth:`PseudoTaskSampler.resting_classes`), a different draw every epoch. Each
group's classes are cut into ``tasks_per_group`` **pseudo tasks** of ``group_size // tasks_per_group``
classes, trained in sequence — a simulated class-incremental stream. For every pseudo task,
``samples_per_class`` images per class are drawn afresh (without replacement inside the draw,
independently across draws); the **joint set** of the group is drawn the same way, independently
(official) or is the union of the pseudo tasks' images (``joint_set="union"``).

Official quirk kept behind ``class_index="double"``: the reference passes original class ids where the
data manager expects positions, so group ``g`` really holds ``order[order[g·G:(g+1)·G]]`` — groups
still disjoint, just another permutation; when ``G`` does not divide ``C`` the two rules leave *different*
classes out of the epoch.

Randomness: every draw has its own ``numpy`` generator keyed by ``(seed, meta_epoch, group, task)``,
so a resumed refinement sees exactly the pseudo tasks an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mepo_lab.config import MePoConfig
from mepo_lab.mepo.switches import resolve

JOINT = 1_000_000  # task index used in the joint draw's generator key (after every pseudo task)


@dataclass(frozen=True)
class PseudoTask:
    """One pseudo task: its classes (original ids) and the dataset indices drawn for it."""

    classes: np.ndarray
    indices: np.ndarray


@dataclass(frozen=True)
class PseudoGroup:
    """One meta-iteration: the group's classes, its pseudo tasks in order, and its joint set."""

    meta_epoch: int
    group: int
    classes: np.ndarray
    tasks: list[PseudoTask]
    joint: np.ndarray

    @property
    def n_images(self) -> int:
        """Images in the sequential phase plus the joint set (one pass each)."""
        return sum(len(t.indices) for t in self.tasks) + len(self.joint)


class PseudoTaskSampler:
    """Builds the pseudo task sequences of every meta-epoch from dataset labels (indices only)."""

    def __init__(self, labels: np.ndarray, cfg: MePoConfig) -> None:
        self.cfg = resolve(cfg)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n_classes = int(self.labels.max()) + 1
        if self.cfg.group_size > self.n_classes:
            raise ValueError(f"mepo.group_size ({self.cfg.group_size}) exceeds the {self.n_classes} pretraining "
                             f"classes: use a group size of at most {self.n_classes}")
        order = np.argsort(self.labels, kind="stable")
        self.by_class = np.split(order, np.cumsum(np.bincount(self.labels, minlength=self.n_classes))[:-1])
        short = min(len(ix) for ix in self.by_class)
        if short < self.cfg.samples_per_class:
            raise ValueError(f"a pretraining class has only {short} images but mepo.samples_per_class is "
                             f"{self.cfg.samples_per_class}: lower it or provide more images per class")

    @property
    def n_groups(self) -> int:
        """Groups (Reptile updates) per meta-epoch."""
        return self.n_classes // self.cfg.group_size

    def class_order(self, meta_epoch: int) -> np.ndarray:
        """The meta-epoch's class order (with the official double indexing when selected)."""
        order = np.random.default_rng([self.cfg.seed, meta_epoch]).permutation(self.n_classes)
        return order[order] if self.cfg.class_index == "double" else order

    def draw(self, classes: np.ndarray, key: tuple[int, ...]) -> np.ndarray:
        """``samples_per_class`` random images of each class, without replacement (dataset indices)."""
        rng = np.random.default_rng([self.cfg.seed, *key])
        k = self.cfg.samples_per_class
        return np.concatenate([rng.choice(self.by_class[c], size=k, replace=False) for c in classes])

    def group(self, meta_epoch: int, g: int, repeat: int = 0) -> PseudoGroup:
        """Pseudo tasks and joint set of group ``g`` of ``meta_epoch``.

        ``repeat > 0`` draws the images of a later repeat of the same group (same classes, fresh images, as the
        reference's ``-num_inner_steps`` loop calls ``get_dataset`` again); repeat 0 keeps the keys it always had.
        """
        cfg, tag = self.cfg, (() if repeat == 0 else (repeat,))
        classes = self.class_order(meta_epoch)[g * cfg.group_size:(g + 1) * cfg.group_size]
        tasks = [PseudoTask(c, self.draw(c, (meta_epoch, g, t, *tag)))
                 for t, c in enumerate(np.split(classes, cfg.tasks_per_group))]
        if cfg.joint_set == "union":
            joint = np.concatenate([t.indices for t in tasks])
        else:
            joint = self.draw(classes, (meta_epoch, g, JOINT, *tag))
        return PseudoGroup(meta_epoch, g, classes, tasks, joint)

    def resting_classes(self, meta_epoch: int) -> np.ndarray:
        """Classes that sit out ``meta_epoch``: the last ``C mod group_size`` of its class order (sorted).

        The groups of a meta-epoch are disjoint and cover every other class; with ``class_index="double"``
        and ``"direct"`` different classes sit out, since their orders differ.
        """
        used = self.n_groups * self.cfg.group_size
        return np.sort(self.class_order(meta_epoch)[used:])

    def epoch(self, meta_epoch: int) -> list[PseudoGroup]:
        """All groups of one meta-epoch, in training order."""
        return [self.group(meta_epoch, g) for g in range(self.n_groups)]

    def steps_per_group(self) -> int:
        """SGD steps of one Reptile update: ``tasks · inner_epochs · ⌈task images / batch⌉ + ⌈joint / batch⌉``.

        Official numbers (``docs/reference/checks.md#c2``): 50 · 4 · 2 + 79 = 479.
        """
        cfg = self.cfg
        task_images = (cfg.group_size // cfg.tasks_per_group) * cfg.samples_per_class
        joint = cfg.group_size * cfg.samples_per_class
        ceil = lambda a, b: -(-a // b)  # noqa: E731
        return cfg.n_repeats * (cfg.tasks_per_group * cfg.inner_epochs * ceil(task_images, cfg.batch_size)
                                + ceil(joint, cfg.batch_size))
