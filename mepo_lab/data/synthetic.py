"""The synthetic world: the offline, CPU-sized stand-in for ImageNet (pretraining) + CIFAR-100 (GCL).

Every class is a composition of three factors, ``class_id = (shape · P + pattern) · Q + palette``
with 8 shapes × 6 patterns × 8 palettes = 384 classes; every image adds its own nuisance (position,
scale, rotation, colour jitter, background, clutter, noise). A seeded split sends
``n_downstream_classes`` classes (100 by default) to the downstream GCL benchmark and the rest to
pretraining, so the two class sets are disjoint but share factors: a backbone that learned shapes,
patterns and palettes on the pretraining classes transfers to the downstream ones, a random one
does not. That is the property MePo and every other experiment of the lab needs.

Determinism: the pixels of instance ``i`` of class ``c`` in split ``s`` depend only on
``(seed, s, c, i)``; they are drawn in blocks of 64 instances, each block from its own
``numpy.random.default_rng([seed, split, class, block])``. Same seed → same pixels, and asking for
more instances per class keeps the first ones unchanged. Dataset order is a seeded shuffle (like
CIFAR, classes are interleaved), which matters to Si-Blurry: it moves the first samples of a task in
dataset order.

Distribution shift: ``world.shift`` (``none``, ``sketch``, ``invert``, ``clutter``) re-renders the
downstream classes in another style (:mod:`mepo_lab.data.render`), as ImageNet-R re-renders ImageNet's
classes; the pretraining images never change, so neither do the pretrained backbone, the MePo
refinements and their cache keys (:func:`pretraining_fields`). ``clutter``'s extra blobs are drawn
after the photo nuisance from the same generator, so every style shares the photo's object nuisance.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cached_property

import numpy as np

from mepo_lab.config import WorldConfig
from mepo_lab.data.base import ImageArrays
from mepo_lab.data.render import (
    N_CLUTTER,
    PALETTES,
    PATTERNS,
    SHAPES,
    STYLES,
    Nuisance,
    check_shift,
    render,
    shift_style,
)

N_CLASSES = len(SHAPES) * len(PATTERNS) * len(PALETTES)
# Bump whenever the renderer or the nuisance distribution changes: it is part of every cache key,
# so features and backbones computed from older pixels are never reused.
WORLD_VERSION = 2
SPLITS = {"train": 1, "test": 2}
ROLES = ("pretrain", "downstream")
BLOCK = 64
_CHUNK = 4096


def factors(class_id: int | np.ndarray) -> tuple:
    """``(shape, pattern, palette)`` indices of a world class id (vectorised)."""
    return np.unravel_index(class_id, (len(SHAPES), len(PATTERNS), len(PALETTES)))


def describe(class_id: int) -> str:
    """A readable name of a world class, e.g. ``"striped red/yellow star"``."""
    if not 0 <= int(class_id) < N_CLASSES:
        raise ValueError(f"class_id must be in [0, {N_CLASSES - 1}], got {class_id}")
    s, p, q = (int(i) for i in factors(int(class_id)))
    adjective = {"solid": "solid", "stripes": "striped", "checker": "checkered", "dots": "dotted",
                 "rings": "ringed", "split": "two-tone"}[PATTERNS[p]]
    return f"{adjective} {PALETTES[q][0]} {SHAPES[s]}"


def _nuisance(rng: np.random.Generator, n: int, size: int) -> Nuisance:
    f32 = np.float32
    radius = rng.uniform(0.27, 0.40, n).astype(f32) * size
    margin = radius * 0.75
    return Nuisance(
        cx=rng.uniform(margin, size - margin).astype(f32),
        cy=rng.uniform(margin, size - margin).astype(f32),
        radius=radius,
        angle=rng.uniform(0.0, 2 * np.pi, n).astype(f32),
        brightness=rng.uniform(0.72, 1.08, n).astype(f32),
        color_shift=rng.normal(0.0, 0.06, (n, 3)).astype(f32),
        bg_level=rng.uniform(0.15, 0.85, n).astype(f32),
        bg_tint=rng.normal(0.0, 0.07, (n, 3)).astype(f32),
        bg_grad=rng.normal(0.0, 0.25 / size, (n, 2)).astype(f32),
        clutter_xy=rng.uniform(0.0, size, (n, N_CLUTTER, 2)).astype(f32),
        clutter_r=rng.uniform(0.6, 0.07 * size, (n, N_CLUTTER)).astype(f32),
        clutter_rgb=rng.uniform(0.0, 1.0, (n, N_CLUTTER, 3)).astype(f32),
        noise_sigma=rng.uniform(0.02, 0.08, n).astype(f32),
        noise=rng.standard_normal((n, size, size), dtype=f32),
    )


def _heavier_clutter(rng: np.random.Generator, nz: Nuisance, size: int) -> Nuisance:
    """The ``clutter`` style's nuisance: ``nz`` plus 3·N_CLUTTER blobs of radius 1 to 0.15·size (about twice
    the photo's) and 2.5 × the noise. Drawn from ``rng`` after ``nz``, so ``nz``'s own draws are unchanged."""
    n, k, f32 = len(nz.radius), 3 * N_CLUTTER, np.float32
    xy = rng.uniform(0.0, size, (n, k, 2)).astype(f32)
    r = rng.uniform(1.0, 0.15 * size, (n, k)).astype(f32)
    rgb = rng.uniform(0.0, 1.0, (n, k, 3)).astype(f32)
    return replace(nz, clutter_xy=np.concatenate([nz.clutter_xy, xy], 1),
                   clutter_r=np.concatenate([nz.clutter_r, r], 1),
                   clutter_rgb=np.concatenate([nz.clutter_rgb, rgb], 1), noise_sigma=nz.noise_sigma * f32(2.5))


def _block_nuisance(seed: int, split: int, class_id: int, block: int, size: int, style: str) -> Nuisance:
    """The nuisance of one 64-instance block, from ``default_rng([seed, split, class, block])``."""
    rng = np.random.default_rng([seed, split, class_id, block])
    nz = _nuisance(rng, BLOCK, size)
    return _heavier_clutter(rng, nz, size) if style == "clutter" else nz


def pretraining_fields(cfg: WorldConfig) -> dict:
    """``asdict(cfg)`` without ``shift``: the fields that decide the pretraining images, hashed by the
    pretraining and refinement cache keys (so they are the same for every shift, and as before it existed)."""
    return {k: v for k, v in asdict(cfg).items() if k != "shift"}


def _concat(parts: list[Nuisance]) -> Nuisance:
    return Nuisance(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in Nuisance.__annotations__})


@dataclass(frozen=True)
class SyntheticWorld:
    """The world: its class split and an image sampler. Build it from a :class:`WorldConfig`."""

    config: WorldConfig = WorldConfig()

    def __post_init__(self) -> None:
        check_shift(self.config.shift)

    @property
    def style(self) -> str:
        """The render style of the downstream classes (``photo`` unless ``config.shift`` says otherwise)."""
        return shift_style(self.config.shift)

    @cached_property
    def _class_split(self) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        if not 1 <= cfg.n_downstream_classes < N_CLASSES:
            raise ValueError(f"n_downstream_classes must be in [1, {N_CLASSES - 1}], got {cfg.n_downstream_classes}")
        order = np.random.default_rng([cfg.seed, 0]).permutation(N_CLASSES)
        down = np.sort(order[: cfg.n_downstream_classes])
        pre = np.sort(order[cfg.n_downstream_classes:])[: cfg.max_pretrain_classes]
        return pre, down

    @property
    def pretrain_classes(self) -> np.ndarray:
        """World class ids of the pretraining classes (sorted)."""
        return self._class_split[0]

    @property
    def downstream_classes(self) -> np.ndarray:
        """World class ids of the downstream (GCL) classes (sorted)."""
        return self._class_split[1]

    def classes(self, role: str) -> np.ndarray:
        """World class ids for ``role`` in ``("pretrain", "downstream")``."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
        return self.pretrain_classes if role == "pretrain" else self.downstream_classes

    def render_instances(self, class_ids: np.ndarray, instance: np.ndarray, split: str,
                         style: str = "photo") -> np.ndarray:
        """Pixels of the given (class, instance index) pairs in ``style`` (one of ``render.STYLES``),
        uint8 ``(B, 3, H, W)``. The same pair has the same object nuisance in every style.

        Instances are grouped by their 64-instance block; each block's nuisance is drawn once from
        its own generator, then the images are rendered a chunk of blocks at a time.
        """
        check_shift(self.config.shift)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        class_ids, instance = np.asarray(class_ids, np.int64), np.asarray(instance, np.int64)
        size = self.config.image_size
        keys, inverse = np.unique(class_ids * (1 << 32) + instance // BLOCK, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(0, len(keys) + 1))
        out = np.empty((len(class_ids), 3, size, size), np.uint8)
        step = max(1, _CHUNK // BLOCK)
        for k0 in range(0, len(keys), step):
            group = keys[k0:k0 + step]
            nz = _concat([_block_nuisance(self.config.seed, SPLITS[split], int(key >> 32), int(key & 0xFFFFFFFF),
                                          size, style) for key in group])
            rows = order[bounds[k0]:bounds[min(k0 + step, len(keys))]]
            local = (inverse[rows] - k0) * BLOCK + instance[rows] % BLOCK
            s, p, q = factors(class_ids[rows])
            out[rows] = render(s, p, q, _take(nz, local), size, style)
        return out

    def dataset(self, role: str, split: str, per_class: int | None = None) -> ImageArrays:
        """``per_class`` images of every class of ``role`` in ``split``, labels ``0..K-1`` (sorted ids).

        Default counts come from the config (pretrain: ``pretrain_per_class``; downstream:
        ``train_per_class`` / ``test_per_class``). Dataset order is a seeded shuffle. Downstream images
        are rendered in :attr:`style` (``config.shift``), pretraining images always as photos.
        """
        world_ids = self.classes(role)
        per_class = self._per_class(role, split, per_class)
        order = self._order(role, split, per_class)
        labels = np.repeat(np.arange(len(world_ids)), per_class)[order]
        instance = np.tile(np.arange(per_class), len(world_ids))[order]
        style = self.style if role == "downstream" else "photo"
        images = self.render_instances(world_ids[labels], instance, split, style)
        name = self.dataset_name(role, split, per_class)
        return ImageArrays(images, labels, [describe(c) for c in world_ids], name,
                           {"world_ids": world_ids.tolist(), "role": role, "split": split})

    def targets(self, role: str, split: str, per_class: int | None = None) -> np.ndarray:
        """The labels :meth:`dataset` would return, in dataset order, without rendering any image."""
        per_class = self._per_class(role, split, per_class)
        n = len(self.classes(role))
        return np.repeat(np.arange(n), per_class)[self._order(role, split, per_class)]

    def _order(self, role: str, split: str, per_class: int) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
        n = len(self.classes(role)) * per_class
        return np.random.default_rng([self.config.seed, SPLITS[split], 7, per_class]).permutation(n)

    def _per_class(self, role: str, split: str, per_class: int | None) -> int:
        cfg = self.config
        if per_class is None:
            per_class = cfg.pretrain_per_class if role == "pretrain" else (
                cfg.train_per_class if split == "train" else cfg.test_per_class)
        if per_class < 1:
            raise ValueError(f"per_class must be at least 1, got {per_class}")
        return per_class

    def dataset_name(self, role: str, split: str, per_class: int | None = None) -> str:
        """The identity of :meth:`dataset`'s result without rendering it (used as a cache key); a shifted
        world's downstream names end in ``,shift=<shift>``."""
        cfg, n = self.config, len(self.classes(role))
        per_class = self._per_class(role, split, per_class)
        shift = f",shift={cfg.shift}" if role == "downstream" and check_shift(cfg.shift) != "none" else ""
        return (f"synthetic-v{WORLD_VERSION}(seed={cfg.seed},size={cfg.image_size},"
                f"down={cfg.n_downstream_classes},{role},{split},{per_class}/class,{n}cls{shift})")


def _take(nz: Nuisance, index: np.ndarray) -> Nuisance:
    return Nuisance(**{k: getattr(nz, k)[index] for k in Nuisance.__annotations__})
