"""A task family with designed similarity for H-embedding guided hypernetworks (task-incremental protocol).

Every task is binary and built from two classes of the synthetic world that differ in exactly ONE factor::

    class_id = (shape · P + pattern) · Q + palette           (mepo_lab.data.synthetic)
    group "shape":   (s1, p, q) vs (s2, p, q)     s1 != s2   - only the shape tells the classes apart
    group "pattern": (s, p1, q) vs (s, p2, q)     p1 != p2   - only the pattern does
    group "palette": (s, p, q1) vs (s, p, q2)     q1 != q2   - only the palette does

Tasks of one group need the same cue, tasks of different groups different cues, so the transferability between
tasks (the H-score of Wu et al.) is meant to be higher inside a group than across groups (the design; this module
does not measure it). Tasks alternate
groups (A1, B1, A2, B2, ...), so the nearest earlier task of a new task is never simply the previous one: an
embedding guided by transferability has something to find that "closest in time" would miss. The family is our
construction for checking the method, not a benchmark of the paper.

Which world classes: the world's DOWNSTREAM classes whenever they suffice (with the default 100 downstream classes
and groups ("shape", "pattern"), up to 15 tasks per group stay downstream-only for every world seed 0..199 we
checked); a task whose group has run out of downstream pairs takes pretraining-role classes, as few as the greedy
choice can (e.g. with ``n_downstream_classes=10``, the smoke preset's world). Reused pretraining classes matter: a
backbone pretrained on the world's pretraining classes has seen them, so its features of those tasks are not a
transfer. Each task records the role of its classes in ``task.train.meta["roles"]``; :func:`describe_tasks`
prints it.

References: Wu et al., "H-embedding guided hypernetworks for continual learning", NeurIPS 2025 (arXiv 2502.11609,
official code viki760/Hembedding_Guided_Hypernet); von Oswald et al., "Continual learning with hypernetworks",
ICLR 2020 (arXiv 1906.00695), whose task-incremental setting (task id known) this follows.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mepo_lab.config import WorldConfig
from mepo_lab.data.base import ImageArrays
from mepo_lab.data.render import PALETTES, PATTERNS, SHAPES
from mepo_lab.data.synthetic import (
    N_CLASSES,
    SPLITS,
    WORLD_VERSION,
    SyntheticWorld,
    describe,
    factors,
)
from mepo_lab.protocols.task_incremental import Task

FACTORS = ("shape", "pattern", "palette")
_SIZES = (len(SHAPES), len(PATTERNS), len(PALETTES))
_NAMES = (SHAPES, PATTERNS, tuple(p[0] for p in PALETTES))
_SALT = 13  # separates this module's random streams from the world's own
_MIN_SIZE = 9  # the renderer draws clutter radii from U[0.6, 0.07 · size) px, empty below 9 px


def similarity_tasks(world_seed: int = 0, n_per_group: int = 3, image_size: int = 32, train_per_class: int = 100,
                     test_per_class: int = 50, groups: Sequence[str] = ("shape", "pattern"), *,
                     n_downstream_classes: int = 100, contrast: str = "shared") -> tuple[list[Task], list[str]]:
    """``n_per_group · len(groups)`` binary tasks whose two classes differ in exactly one factor, and their groups.

    Task ``r · G + j`` (round r, G = len(groups)) belongs to ``groups[j]`` (A1, B1, A2, B2, ...). A task of group
    g has world classes ``a < b`` with ``factors(a)[k] != factors(b)[k]`` for k = g's factor and equal other two
    factors; within a group the shared pair of factors differs from task to task, and no class id is in two
    tasks. ``task.classes == [a, b]`` (world ids, local labels 0 and 1). Train images are instances
    ``0..train_per_class-1`` of the world's "train" split, test images ``0..test_per_class-1`` of its "test"
    split (``SyntheticWorld.render_instances``), in a seeded shuffle.

    Classes come from the world ``WorldConfig(seed=world_seed, image_size=image_size, n_downstream_classes=...)``
    (set ``n_downstream_classes`` to the world a pretrained backbone was trained in): for each task, in order, a
    seeded-random cell of shared factors with two free downstream classes, else the cell needing the fewest
    pretraining-role classes (see the module docstring for why that matters). Deterministic in the arguments.

    ``contrast="shared"`` (default): every task of a group contrasts the SAME two values of the group's factor
    (e.g. square vs bar, label 0 always the first), in different contexts of the other two factors: the tasks
    of a group share their discriminative direction. The value pair is the one with the most cells of two
    downstream classes. ``contrast="any"``: each task takes any two values of its cell.
    Our construction (designed similarity for Wu et al., NeurIPS 2025, arXiv 2502.11609), not the paper's.
    """
    groups = _checked(world_seed, n_per_group, image_size, train_per_class, test_per_class, groups)
    if contrast not in ("shared", "any"):
        raise ValueError(f"contrast must be 'shared' or 'any', got {contrast!r}")
    world = SyntheticWorld(WorldConfig(seed=world_seed, image_size=image_size,
                                       n_downstream_classes=n_downstream_classes))
    downstream = set(world.downstream_classes.tolist())
    tasks, labels = [], []
    pick = _pick_shared if contrast == "shared" else _pick_pairs
    for index, (group, pair) in enumerate(pick(downstream, groups, n_per_group, world_seed)):
        roles = ["downstream" if c in downstream else "pretrain" for c in pair]
        meta = {"group": group, "roles": roles, "world_ids": list(pair), "task": index, "task_classes": list(pair)}
        parts = [_render(world, pair, split, per_class, group, meta)
                 for split, per_class in (("train", train_per_class), ("test", test_per_class))]
        tasks.append(Task(index, list(pair), *parts))
        labels.append(group)
    return tasks, labels


def describe_tasks(tasks: Sequence[Task], groups: Sequence[str]) -> list[str]:
    """One readable line per task: its group, its classes (``synthetic.describe``), the factors that differ
    (read back with ``factors``, not taken from the label) and the shared ones, and the role of its classes.

    E.g. ``"task 0 [shape]: striped red/yellow disk vs striped red/yellow star | differ: shape (disk vs star) |
    shared: pattern stripes, palette red/yellow | downstream"``. A pretraining-role class is named, since a
    pretrained backbone has seen it.
    """
    if len(tasks) != len(groups):
        raise ValueError(f"tasks and groups must have the same length, got {len(tasks)} and {len(groups)}; pass "
                         "both outputs of similarity_tasks")
    lines = []
    for task, group in zip(tasks, groups):
        ids = [int(c) for c in task.classes]
        bad = [c for c in ids if not 0 <= c < N_CLASSES]
        if bad:
            raise ValueError(f"task {task.index}: classes {bad} are not world class ids in [0, {N_CLASSES - 1}]; "
                             "describe_tasks needs tasks from similarity_tasks")
        f = np.stack([np.asarray(x) for x in factors(np.asarray(ids))], 1)  # (classes, 3)
        differ = [k for k in range(3) if len(set(f[:, k])) > 1]
        diff = ", ".join(f"{FACTORS[k]} ({' vs '.join(_NAMES[k][v] for v in f[:, k])})" for k in differ) or "nothing"
        shared = ", ".join(f"{FACTORS[k]} {_NAMES[k][f[0, k]]}" for k in range(3) if k not in differ) or "nothing"
        roles = task.train.meta.get("roles")
        pre = [c for c, r in zip(ids, roles or []) if r == "pretrain"]
        role = "downstream" if roles and not pre else (
            f"pretraining-role classes {pre} (seen by a pretrained backbone)" if pre else "role unknown")
        lines.append(f"task {task.index} [{group}]: {' vs '.join(describe(c) for c in ids)} | differ: {diff} | "
                     f"shared: {shared} | {role}")
    return lines


# ---------------------------------------------------------------- internals
def _checked(world_seed, n_per_group, image_size, train_per_class, test_per_class, groups) -> tuple[str, ...]:
    """The argument checks of :func:`similarity_tasks`; returns ``groups`` as a tuple."""
    groups = (groups,) if isinstance(groups, str) else tuple(groups)
    unknown = [g for g in groups if g not in FACTORS]
    if not groups or unknown:
        raise ValueError(f"unknown or missing groups {unknown or list(groups)}: choose one or more of "
                         f"{', '.join(FACTORS)} (the factor the two classes of a task differ in)")
    if len(set(groups)) != len(groups):
        raise ValueError(f"groups must be distinct, got {list(groups)}; raise n_per_group for more tasks per group")
    for name, value, low in (("world_seed", world_seed, 0), ("n_per_group", n_per_group, 1),
                             ("image_size", image_size, _MIN_SIZE), ("train_per_class", train_per_class, 1),
                             ("test_per_class", test_per_class, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for g in groups:
        k = FACTORS.index(g)
        n_cells = N_CLASSES // _SIZES[k]
        if n_per_group > n_cells:
            raise ValueError(f"too many tasks: n_per_group={n_per_group} but {g!r} tasks need distinct shared "
                             f"({' and '.join(f for f in FACTORS if f != g)}) and the world has {n_cells}; "
                             f"lower n_per_group to at most {n_cells}")
    return groups


def _cells(k: int) -> list[list[int]]:
    """The world classes grouped by their two factors other than factor k: one list (ids by factor k) per cell."""
    grid = np.arange(N_CLASSES).reshape(_SIZES)
    return np.moveaxis(grid, k, -1).reshape(-1, _SIZES[k]).tolist()


def _pick_pairs(downstream: set[int], groups: tuple[str, ...], n_per_group: int,
                seed: int) -> list[tuple[str, tuple[int, int]]]:
    """Greedy choice of disjoint class pairs, round by round and group by group (A1, B1, A2, ...).

    Each group visits its cells in a seeded random order; a task takes the first cell with two free downstream
    classes, else the first cell needing the fewest pretraining-role classes; inside the cell, free downstream
    classes first, each role in a seeded random order. A used cell is not used again by the same group.
    """
    rng = np.random.default_rng([seed, _SALT])
    order = {}
    for g in groups:
        cells = _cells(FACTORS.index(g))
        order[g] = [[cells[c][i] for i in rng.permutation(len(cells[c]))] for c in rng.permutation(len(cells))]
    used: set[int] = set()
    picked = []
    for r in range(n_per_group):
        for g in groups:
            best = None
            for c, members in enumerate(order[g]):
                free = [i for i in members if i not in used]
                ranked = [i for i in free if i in downstream] + [i for i in free if i not in downstream]
                if len(ranked) < 2:
                    continue
                need = sum(i not in downstream for i in ranked[:2])
                if best is None or need < best[0]:
                    best = (need, c, ranked[:2])
                if need == 0:
                    break
            if best is None:
                raise ValueError(f"too many tasks for the available classes: after {len(picked)} tasks no two "
                                 f"unused world classes differ only in {g} (round {r + 1} of n_per_group="
                                 f"{n_per_group}); lower n_per_group or use fewer groups")
            _, c, pair = best
            del order[g][c]
            used.update(pair)
            picked.append((g, (min(pair), max(pair))))
    return picked


def _pick_shared(downstream: set[int], groups: tuple[str, ...], n_per_group: int,
                 seed: int) -> list[tuple[str, tuple[int, int]]]:
    """Per group, one value pair ``(v1, v2)`` of its factor (the pair with the most cells whose two classes are
    downstream; ties in a seeded order), then ``n_per_group`` cells of the other factors in a seeded order,
    fully downstream cells first, each task ``(class(v1, cell), class(v2, cell))``."""
    rng = np.random.default_rng([seed, _SALT, 1])
    picked: dict[str, list[tuple[int, int]]] = {}
    used: set[int] = set()
    for g in groups:
        k = FACTORS.index(g)
        cells = _cells(k)
        pairs = [(a, b) for a in range(_SIZES[k]) for b in range(a + 1, _SIZES[k])]
        pairs = [pairs[i] for i in rng.permutation(len(pairs))]
        score = [sum(c[a] in downstream and c[b] in downstream for c in cells) for a, b in pairs]
        a, b = pairs[int(np.argmax(score))]
        ranked = sorted((cells[i] for i in rng.permutation(len(cells)) if not {cells[i][a], cells[i][b]} & used),
                        key=lambda c: (c[a] not in downstream) + (c[b] not in downstream))
        if len(ranked) < n_per_group:
            raise ValueError(f"too many tasks: {g!r} tasks with one shared contrast can use {len(ranked)} contexts "
                             f"here, n_per_group={n_per_group}; lower n_per_group or use contrast='any'")
        picked[g] = [(c[a], c[b]) for c in ranked[:n_per_group]]
        used.update(c for pair in picked[g] for c in pair)
    return [(g, picked[g][r]) for r in range(n_per_group) for g in groups]


def _render(world: SyntheticWorld, pair: tuple[int, int], split: str, per_class: int, group: str,
            meta: dict) -> ImageArrays:
    """Instances ``0..per_class-1`` of both classes of ``pair`` in ``split``, local labels 0/1, seeded shuffle."""
    cfg = world.config
    order = np.random.default_rng([cfg.seed, SPLITS[split], _SALT, *pair, per_class]).permutation(2 * per_class)
    labels = np.repeat(np.arange(2), per_class)[order]
    instance = np.tile(np.arange(per_class), 2)[order]
    images = world.render_instances(np.asarray(pair)[labels], instance, split)
    name = (f"hembed-similarity-v{WORLD_VERSION}(seed={cfg.seed},size={cfg.image_size},"
            f"down={cfg.n_downstream_classes},{split},{per_class}/class,{group}:{pair[0]}+{pair[1]})")
    return ImageArrays(images, labels, [describe(c) for c in pair], name, dict(meta, split=split))
