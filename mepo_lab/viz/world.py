"""Pictures of the synthetic world: a class gallery, the factor grid and the distribution shifts."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from mepo_lab.config import WorldConfig
from mepo_lab.data.render import PALETTES, PATTERNS, SHAPES, SHIFTS, shift_style
from mepo_lab.data.synthetic import SyntheticWorld, describe


def plot_gallery(world: SyntheticWorld, classes: Sequence[int] | None = None, per_class: int = 6,
                 split: str = "train"):
    """A grid of ``per_class`` instances (columns) for each world class id (rows).

    Default classes: the first 8 downstream classes. Titles give the class' factor description.
    """
    classes = list(classes) if classes is not None else world.downstream_classes[:8].tolist()
    ids = np.repeat(classes, per_class)
    images = world.render_instances(ids, np.tile(np.arange(per_class), len(classes)), split)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(1.1 * per_class + 2.2, 1.1 * len(classes)),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.imshow(images[k].transpose(1, 2, 0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if k % per_class == 0:
            ax.set_ylabel(f"{ids[k]}: {describe(ids[k])}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("synthetic world: one class per row, nuisance varies along the row", fontsize=9)
    fig.tight_layout()
    return fig


def plot_factors(world: SyntheticWorld, split: str = "train"):
    """One instance of every shape (row 1), pattern (row 2) and palette (row 3), others held fixed."""
    n = max(len(SHAPES), len(PATTERNS), len(PALETTES))
    fig, axes = plt.subplots(3, n, figsize=(1.2 * n, 4.0), squeeze=False)
    rows = [
        ("shape", [(s * len(PATTERNS) + 1) * len(PALETTES) + 2 for s in range(len(SHAPES))], SHAPES),
        ("pattern", [(2 * len(PATTERNS) + p) * len(PALETTES) + 2 for p in range(len(PATTERNS))], PATTERNS),
        ("palette", [(2 * len(PATTERNS) + 1) * len(PALETTES) + q for q in range(len(PALETTES))],
         [p[0] for p in PALETTES]),
    ]
    for r, (title, ids, names) in enumerate(rows):
        images = world.render_instances(np.asarray(ids), np.zeros(len(ids), np.int64), split)
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(ids):
                ax.imshow(images[c].transpose(1, 2, 0), interpolation="nearest")
                ax.set_title(names[c], fontsize=7)
        axes[r, 0].text(-0.35, 0.5, title, transform=axes[r, 0].transAxes, rotation=90, va="center")
    fig.suptitle("the three factors of a class (8 shapes × 6 patterns × 8 palettes = 384 classes)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_shifts(world: WorldConfig | SyntheticWorld, classes: Sequence[int] | None = None, per_class: int = 4,
                split: str = "train"):
    """The same instances under every ``world.shift`` (rows: none, sketch, invert, clutter).

    Columns hold ``per_class`` instances (indices ``0..per_class-1``) of each world class id in ``classes``
    (default: 4 downstream classes evenly spaced in id), so a column shows one object with one nuisance in every
    rendition. Only the downstream classes are shifted in a dataset; this picture renders any class.
    """
    world = world if isinstance(world, SyntheticWorld) else SyntheticWorld(world)
    down = world.downstream_classes
    classes = list(classes) if classes is not None else down[::max(1, len(down) // 4)][:4].tolist()
    ids, instance = np.repeat(classes, per_class), np.tile(np.arange(per_class), len(classes))
    n = len(ids)
    width, height = 0.7 * n + 0.8, 0.7 * len(SHIFTS) + 0.7
    fig, axes = plt.subplots(len(SHIFTS), n, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.7 / width, right=0.99, bottom=0.1 / height, top=1 - 0.6 / height, wspace=0.08,
                        hspace=0.08)
    for r, shift in enumerate(SHIFTS):
        images = world.render_instances(ids, instance, split, shift_style(shift))
        for c, ax in enumerate(axes[r]):
            ax.imshow(images[c].transpose(1, 2, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c % per_class == 0:
                ax.set_title(f"{ids[c]}: {describe(ids[c])}", fontsize=7, loc="left")
        axes[r, 0].set_ylabel(shift, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("world.shift re-renders the downstream classes (pretraining images stay 'none')", fontsize=9)
    return fig


def plot_training_curve(log: Sequence[dict], ax=None):
    """Pretraining loss and batch accuracy against epochs, from a backbone's ``info["log"]``."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3))
    epochs = [e["epoch"] for e in log]
    (loss,) = ax.plot(epochs, [e["loss"] for e in log], color="C0", label="loss")
    ax.set(xlabel="epoch", ylabel="cross-entropy", title="micro-ViT pretraining")
    twin = ax.twinx()
    (acc,) = twin.plot(epochs, [100 * e["acc"] for e in log], color="C1", label="batch accuracy")
    twin.set_ylabel("batch accuracy (%)")
    ax.legend(handles=[loss, acc], loc="center right", fontsize=8)
    return ax.figure
