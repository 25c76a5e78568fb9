"""Checks of ``mepo_lab.hembed.tasks``: the designed-similarity task family, read back through ``factors``.

World classes: ``class_id = (shape · 6 + pattern) · 8 + palette``, so e.g. 0 = solid red/yellow disk,
8 = striped red/yellow disk (pattern 1), 240 = solid red/yellow star (shape 5), 2 = solid blue/orange disk,
250 = striped blue/orange star.
Small images and few instances keep the file fast; no model is trained.
"""
from __future__ import annotations

import numpy as np
import pytest

from mepo_lab.config import WorldConfig
from mepo_lab.data.base import ImageArrays
from mepo_lab.data.synthetic import SyntheticWorld, describe, factors
from mepo_lab.hembed.tasks import FACTORS, describe_tasks, similarity_tasks
from mepo_lab.protocols.task_incremental import Task

SMALL = {"image_size": 12, "train_per_class": 3, "test_per_class": 2}


def build(**kw):
    return similarity_tasks(**{**SMALL, **kw})


def factor_rows(task: Task) -> np.ndarray:
    """(2, 3) array: the (shape, pattern, palette) of the task's two classes."""
    return np.stack([np.asarray(x) for x in factors(np.asarray(task.classes))], 1)


# ---------------------------------------------------------------- structure
@pytest.mark.parametrize("groups, n_per_group, seed", [
    (("shape", "pattern"), 3, 0),
    (("pattern", "shape"), 2, 1),
    (("shape", "pattern", "palette"), 2, 2),
    (("palette",), 4, 3),
])
def test_groups_alternate_and_each_task_differs_in_exactly_its_factor(groups, n_per_group, seed):
    tasks, labels = build(world_seed=seed, n_per_group=n_per_group, groups=groups)
    assert len(tasks) == n_per_group * len(groups)
    assert labels == list(groups) * n_per_group  # A1, B1, A2, B2, ...
    assert [t.index for t in tasks] == list(range(len(tasks)))
    shared_seen = {g: set() for g in groups}
    for task, group in zip(tasks, labels):
        f = factor_rows(task)
        k = FACTORS.index(group)
        assert task.n_classes == 2 and task.classes[0] < task.classes[1]
        assert f[0, k] != f[1, k]  # the group's factor tells the classes apart ...
        others = [j for j in range(3) if j != k]
        assert (f[0, others] == f[1, others]).all()  # ... and nothing else does
        shared = tuple(f[0, others])
        assert shared not in shared_seen[group]  # a different shared cell for every task of a group
        shared_seen[group].add(shared)
        assert task.train.meta["group"] == task.test.meta["group"] == group


@pytest.mark.parametrize("groups, n_per_group", [(("shape", "pattern"), 15), (("shape", "pattern", "palette"), 8)])
def test_no_class_is_in_two_tasks(groups, n_per_group):
    tasks, _ = similarity_tasks(n_per_group=n_per_group, groups=groups, image_size=9, train_per_class=1,
                                test_per_class=1)
    ids = [c for t in tasks for c in t.classes]
    assert len(ids) == 2 * n_per_group * len(groups) == len(set(ids))


@pytest.mark.parametrize("per_train, per_test", [(3, 2), (1, 4)])
def test_sizes_labels_and_names(per_train, per_test):
    tasks, _ = build(train_per_class=per_train, test_per_class=per_test, n_per_group=1)
    for task in tasks:
        for part, per in ((task.train, per_train), (task.test, per_test)):
            assert part.images.shape == (2 * per, 3, 12, 12) and part.images.dtype == np.uint8
            assert np.bincount(part.targets, minlength=2).tolist() == [per, per]  # local labels 0/1 only
            assert part.class_names == [describe(c) for c in task.classes]
            assert part.meta["world_ids"] == task.classes
        assert task.train.name != task.test.name
        assert f"{task.classes[0]}+{task.classes[1]}" in task.train.name


def test_images_of_label_k_are_the_world_instances_of_class_k():
    tasks, _ = build(n_per_group=1, train_per_class=4)
    world = SyntheticWorld(WorldConfig(seed=0, image_size=12))
    for task in tasks:
        for k, cls in enumerate(task.classes):
            got = task.train.images[task.train.targets == k]
            want = world.render_instances(np.full(4, cls), np.arange(4), "train")
            key = lambda a: sorted(x.tobytes() for x in a)  # the order is a seeded shuffle
            assert key(got) == key(want)
        assert not np.array_equal(task.train.images[:2], task.test.images[:2])  # different world splits


def test_deterministic_in_world_seed():
    (a, la), (b, lb), (c, _) = build(world_seed=4), build(world_seed=4), build(world_seed=5)
    assert la == lb and [t.classes for t in a] == [t.classes for t in b]
    for ta, tb in zip(a, b):
        np.testing.assert_array_equal(ta.train.images, tb.train.images)
        np.testing.assert_array_equal(ta.test.targets, tb.test.targets)
    assert [t.classes for t in a] != [t.classes for t in c]
    assert any((np.diff(t.train.targets) < 0).any() for t in a)  # classes interleaved (seeded shuffle), not sorted


# ---------------------------------------------------------------- class roles
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_default_family_uses_only_downstream_classes(seed):
    tasks, _ = similarity_tasks(world_seed=seed, image_size=9, train_per_class=1, test_per_class=1)
    down = set(SyntheticWorld(WorldConfig(seed=seed)).downstream_classes.tolist())
    assert all(c in down for t in tasks for c in t.classes)
    assert all(t.train.meta["roles"] == ["downstream", "downstream"] for t in tasks)


def test_small_downstream_split_falls_back_to_pretraining_classes_and_says_so():
    tasks, labels = build(n_downstream_classes=10)
    down = set(SyntheticWorld(WorldConfig(seed=0, n_downstream_classes=10)).downstream_classes.tolist())
    roles = [r for t in tasks for r in t.train.meta["roles"]]
    assert roles == ["downstream" if c in down else "pretrain" for t in tasks for c in t.classes]
    assert "pretrain" in roles
    # 10 downstream classes cannot give 6 disjoint pairs differing in one factor, but the greedy still uses some
    assert sum(r == "downstream" for r in roles) >= 2
    lines = describe_tasks(tasks, labels)
    for task, line in zip(tasks, lines):
        pre = [c for c, r in zip(task.classes, task.train.meta["roles"]) if r == "pretrain"]
        assert (f"pretraining-role classes {pre}" in line) == bool(pre)


# ---------------------------------------------------------------- describe_tasks
def hand_task(classes, roles=None) -> Task:
    meta = {} if roles is None else {"roles": roles}
    part = ImageArrays(np.zeros((2, 3, 2, 2), np.uint8), np.array([0, 1]), [str(c) for c in classes], "hand", meta)
    return Task(0, list(classes), part, part)


@pytest.mark.parametrize("classes, roles, group, line", [
    ([0, 240], ["downstream"] * 2, "shape",
     ("task 0 [shape]: solid red/yellow disk vs solid red/yellow star | differ: shape (disk vs star) | "
      "shared: pattern solid, palette red/yellow | downstream")),
    ([0, 8], ["downstream", "pretrain"], "pattern",
     ("task 0 [pattern]: solid red/yellow disk vs striped red/yellow disk | differ: pattern (solid vs stripes) | "
      "shared: shape disk, palette red/yellow | pretraining-role classes [8] (seen by a pretrained backbone)")),
    ([0, 2], None, "palette",
     ("task 0 [palette]: solid red/yellow disk vs solid blue/orange disk | differ: palette (red/yellow vs "
      "blue/orange) | shared: shape disk, pattern solid | role unknown")),
    # 250 = (5 · 6 + 1) · 8 + 2: striped blue/orange star. The factors are read from the classes, not from
    # the label: a mislabelled task shows what really differs
    ([0, 250], ["downstream"] * 2, "shape",
     ("task 0 [shape]: solid red/yellow disk vs striped blue/orange star | differ: shape (disk vs star), pattern "
      "(solid vs stripes), palette (red/yellow vs blue/orange) | shared: nothing | downstream")),
])
def test_describe_tasks_hand_lines(classes, roles, group, line):
    assert describe_tasks([hand_task(classes, roles)], [group]) == [line]


def test_describe_tasks_one_line_per_generated_task():
    tasks, labels = build()
    lines = describe_tasks(tasks, labels)
    assert len(lines) == len(tasks)
    assert all(line.startswith(f"task {i} [{g}]: ") and f"differ: {g} (" in line
               for i, (line, g) in enumerate(zip(lines, labels)))


@pytest.mark.parametrize("seed", [0, 3])
def test_shared_contrast_is_one_value_pair_per_group_in_different_contexts(seed):
    tasks, labels = similarity_tasks(seed, 4, train_per_class=1, test_per_class=1)
    for g in set(labels):
        k = FACTORS.index(g)
        mine = [np.array(factors(np.array(t.classes))) for t, lab in zip(tasks, labels) if lab == g]
        assert len({(int(f[k, 0]), int(f[k, 1])) for f in mine}) == 1  # label 0 / 1 = the same two values
        assert len({tuple(np.delete(f[:, 0], k)) for f in mine}) == len(mine)  # every context differs
    any_tasks, _ = similarity_tasks(seed, 4, train_per_class=1, test_per_class=1, contrast="any")
    assert [t.classes for t in any_tasks] != [t.classes for t in tasks]


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, match", [
    ({"groups": ("shape", "colour")}, r"unknown or missing groups \['colour'\]: choose one or more of shape, "),
    ({"groups": ()}, r"unknown or missing groups \[\]"),
    ({"groups": ("shape", "shape")}, r"groups must be distinct"),
    ({"n_per_group": 0}, r"n_per_group must be an integer >= 1, got 0"),
    ({"train_per_class": 0}, r"train_per_class must be an integer >= 1, got 0"),
    ({"test_per_class": 1.5}, r"test_per_class must be an integer >= 1, got 1.5"),
    ({"world_seed": -1}, r"world_seed must be an integer >= 0, got -1"),
    ({"n_per_group": 49}, (r"too many tasks: n_per_group=49 but 'shape' tasks need distinct shared \(pattern and "
                           r"palette\) and the world has 48; lower n_per_group to at most 48")),
    ({"image_size": 8}, r"image_size must be an integer >= 9, got 8"),
    ({"n_per_group": 48, "groups": ("shape", "pattern", "palette"), "contrast": "any"},
     r"too many tasks for the available classes: after \d+ tasks no two unused world classes differ only in"),
    ({"n_per_group": 48, "groups": ("shape", "pattern", "palette")},
     r"too many tasks: '\w+' tasks with one shared contrast can use"),
    ({"contrast": "same"}, r"contrast must be 'shared' or 'any', got 'same'"),
])
def test_similarity_tasks_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        build(**kw)


@pytest.mark.parametrize("tasks, groups, match", [
    ([hand_task([0, 8])], [], r"tasks and groups must have the same length, got 1 and 0"),
    ([hand_task([0, 384])], ["shape"], r"classes \[384\] are not world class ids in \[0, 383\]"),
])
def test_describe_tasks_errors(tasks, groups, match):
    with pytest.raises(ValueError, match=match):
        describe_tasks(tasks, groups)
