"""Checks of ``mepo_lab.protocols.task_incremental`` on hand-made matrices, splits and strategies.

The hand computation sits next to each case. Images carry their sample's code in pixel (0, 0, 0), so a
strategy can memorise "code -> local label" exactly and every accuracy is known in advance.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mepo_lab.data.base import ImageArrays
from mepo_lab.protocols import metrics
from mepo_lab.protocols import task_incremental as ti

NAN = float("nan")


def arrays(targets, n_classes, name="toy", first_code=0) -> ImageArrays:
    """One 2x2 image per label; pixel (0, 0, 0) holds a unique code ``first_code + i`` of sample i."""
    images = np.zeros((len(targets), 3, 2, 2), np.uint8)
    images[:, 0, 0, 0] = first_code + np.arange(len(targets))
    return ImageArrays(images, np.asarray(targets), [f"c{c}" for c in range(n_classes)], name)


def codes(x: torch.Tensor | np.ndarray) -> list[int]:
    """The pixel codes back from uint8 images or float images in [0, 1]."""
    if isinstance(x, torch.Tensor):
        return torch.round(x[:, 0, 0, 0] * 255).long().tolist()
    return x[:, 0, 0, 0].astype(int).tolist()


# ---------------------------------------------------------------- AccuracyMatrix: hand-made matrices
MATRIX_CASES = [
    # ACC = (.6 + .5 + .9) / 3 = 2/3; BWT = ((.6 - .9) + (.5 - .8)) / 2 = -.3
    ([[0.9], [0.7, 0.8], [0.6, 0.5, 0.9]], 2 / 3, -0.3),
    # one task: ACC = .7, no old task -> BWT NaN
    ([[0.7]], 0.7, NAN),
    # improvement (positive backward transfer): ACC = (.7 + 1) / 2 = .85; BWT = .7 - .5 = .2
    ([[0.5], [0.7, 1.0]], 0.85, 0.2),
    # peak in the middle: BWT reads R[j, j], not the max: ((.4 - .6) + (.8 - .8)) / 2 = -.1; ACC = 1.2 / 3 = .4
    ([[0.6], [0.9, 0.8], [0.4, 0.8, 0.0]], 0.4, -0.1),
    # no forgetting: ACC 1, BWT 0
    ([[1.0], [1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], 1.0, 0.0),
]


def filled(rows) -> ti.AccuracyMatrix:
    r = ti.AccuracyMatrix(len(rows))
    for t, row in enumerate(rows):
        r.record(t, row)
    return r


def assert_value(got: float, want: float) -> None:
    assert type(got) is float
    if math.isnan(want):
        assert math.isnan(got), f"expected NaN, got {got}"
    else:
        assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("rows, acc, bwt", MATRIX_CASES)
def test_accuracy_matrix_metrics(rows, acc, bwt):
    r = filled(rows)
    assert_value(r.acc(), acc)
    assert_value(r.bwt(), bwt)
    assert_value(r.bwt(), metrics.bwt(r.matrix))  # the metric of record, not a copy of it
    m = r.matrix
    assert np.isnan(m[np.triu_indices(len(rows), k=1)]).all()  # NaN above the diagonal
    for t, row in enumerate(rows):
        np.testing.assert_array_equal(m[t, :t + 1], row)


def test_accuracy_matrix_stage():
    r = ti.AccuracyMatrix(3)
    r.record(0, [0.9])
    r.record(1, [0.7, 0.8])
    assert_value(r.acc(0), 0.9)
    assert_value(r.bwt(0), NAN)
    assert_value(r.acc(1), 0.75)   # (.7 + .8) / 2
    assert_value(r.bwt(1), -0.2)   # .7 - .9
    with pytest.raises(ValueError, match="row 2 is not recorded"):
        r.acc()                    # the last row (2) is still missing
    assert np.isnan(r.matrix[2]).all()


def test_accuracy_matrix_is_a_copy():
    r = filled([[0.5], [0.25, 0.75]])
    r.matrix[1, 0] = 1.0
    assert_value(r.acc(), 0.5)


@pytest.mark.parametrize("action, match", [
    (lambda r: r.record(1, [0.5, 0.5]), "expected row 0"),                  # skipped row 0
    (lambda r: (r.record(0, [0.5]), r.record(0, [0.5])), "expected row 1"),  # row 0 twice
    (lambda r: r.record(0, [0.5, 0.5]), "needs 1 accuracies"),               # row 0 holds one entry
    (lambda r: r.record(0, [90.0]), "divide percentages by 100"),
    (lambda r: r.record(0, [NAN]), "no NaN"),
    (lambda r: r.record(0, [-0.1]), r"fractions in \[0, 1\]"),
    (lambda r: r.bwt(5), "row 5 is not recorded"),
])
def test_accuracy_matrix_errors(action, match):
    with pytest.raises(ValueError, match=match):
        action(ti.AccuracyMatrix(2))


def test_accuracy_matrix_full_and_bad_size():
    r = filled([[1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match=r"expected row 2 \(of 2\)"):
        r.record(2, [1.0, 1.0, 1.0])
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="n_tasks must be an integer >= 1"):
            ti.AccuracyMatrix(bad)


# ---------------------------------------------------------------- split_tasks
TRAIN_Y = [3, 0, 1, 2, 3, 1, 0, 2, 2]
TEST_Y = [1, 2, 0, 3]


def toy_split(**kw):
    return ti.split_tasks(arrays(TRAIN_Y, 4), arrays(TEST_Y, 4, "toy_test"), 2, **kw)


def test_split_explicit_classes_local_labels():
    tasks = toy_split(classes=[[3, 1], [0, 2]])
    t0, t1 = tasks
    assert (t0.index, t0.classes, t1.index, t1.classes) == (0, [3, 1], 1, [0, 2])
    # task 0: samples with labels 3 or 1, dataset order: i = 0 (3), 2 (1), 4 (3), 5 (1); 3 -> 0, 1 -> 1
    assert codes(t0.train.images) == [0, 2, 4, 5]
    assert t0.train.targets.tolist() == [0, 1, 0, 1]
    assert t0.train.class_names == ["c3", "c1"]
    # task 1: i = 1 (0), 3 (2), 6 (0), 7 (2), 8 (2); 0 -> 0, 2 -> 1
    assert codes(t1.train.images) == [1, 3, 6, 7, 8]
    assert t1.train.targets.tolist() == [0, 1, 0, 1, 1]
    # test: labels [1, 2, 0, 3] -> task 0 gets i = 0 (1 -> 1), 3 (3 -> 0); task 1 gets i = 1 (2 -> 1), 2 (0 -> 0)
    assert (codes(t0.test.images), t0.test.targets.tolist()) == ([0, 3], [1, 0])
    assert (codes(t1.test.images), t1.test.targets.tolist()) == ([1, 2], [1, 0])
    assert t0.n_classes == 2 and t0.train.n_classes == 2


def test_split_subset_of_classes_is_allowed():
    (task,) = ti.split_tasks(arrays(TRAIN_Y, 4), arrays(TEST_Y, 4), 1, classes=[[2]])
    assert codes(task.train.images) == [3, 7, 8] and task.train.targets.tolist() == [0, 0, 0]


def test_split_seed_none_is_id_order():
    tasks = toy_split(seed=None)
    assert [t.classes for t in tasks] == [[0, 1], [2, 3]]
    assert tasks[1].train.targets.tolist() == [1, 0, 1, 0, 0]  # labels 3, 2, 3, 2, 2 of i = 0, 3, 4, 7, 8


@pytest.mark.parametrize("n_classes, n_tasks, seed", [(12, 3, 0), (12, 4, 1), (10, 5, 7), (6, 1, 3)])
def test_split_seeded_permutation(n_classes, n_tasks, seed):
    y = np.repeat(np.arange(n_classes), 2)
    tasks = ti.split_tasks(arrays(y, n_classes), arrays(y, n_classes), n_tasks, seed=seed)
    # transcription of the documented rule: permutation of the ids, cut into equal groups, each sorted
    perm = np.random.default_rng(seed).permutation(n_classes).reshape(n_tasks, -1)
    assert [t.classes for t in tasks] == [sorted(g.tolist()) for g in perm]
    assert sorted(c for t in tasks for c in t.classes) == list(range(n_classes))  # disjoint, all covered
    for t in tasks:  # every image of the task's classes, with its local label
        assert len(t.train) == 2 * len(t.classes)
        np.testing.assert_array_equal(np.asarray(t.classes)[t.train.targets], y[codes(t.train.images)])
    again = ti.split_tasks(arrays(y, n_classes), arrays(y, n_classes), n_tasks, seed=seed)
    assert [t.classes for t in again] == [t.classes for t in tasks]


def test_split_seeds_differ():
    y = np.arange(12)
    a, b = (ti.split_tasks(arrays(y, 12), arrays(y, 12), 3, seed=s) for s in (0, 1))
    assert [t.classes for t in a] != [t.classes for t in b]


@pytest.mark.parametrize("kw, match", [
    ({"classes": [[0, 1], [1, 2]]}, "class 1 is in task 0 and task 1"),
    ({"classes": [[0, 0], [1]]}, "class 0 is in task 0 and task 0"),
    ({"classes": [[0, 4], [1]]}, r"unknown class ids \[4\]"),
    ({"classes": [[-1], [1]]}, r"unknown class ids \[-1\]"),
    ({"classes": [[0, 1], []]}, "task 1 has no classes"),
    ({"classes": [[0, 1.5], [2]]}, "integer class ids"),
    ({"classes": [[0, 1, 2, 3]]}, "classes has 1 lists but n_tasks=2"),
    ({"n_tasks": 3}, "n_tasks=3 does not divide the 4 classes"),
    ({"n_tasks": 0}, "n_tasks must be an integer >= 1"),
])
def test_split_errors(kw, match):
    kw = {"n_tasks": 2, **kw}
    with pytest.raises(ValueError, match=match):
        ti.split_tasks(arrays(TRAIN_Y, 4), arrays(TEST_Y, 4), **kw)


def test_split_data_errors():
    with pytest.raises(ValueError, match="different class lists"):
        ti.split_tasks(arrays(TRAIN_Y, 4), arrays([0, 1], 2), 2)
    with pytest.raises(ValueError, match="task 1 .* 0 test images"):  # no test image of class 2 or 3
        ti.split_tasks(arrays(TRAIN_Y, 4), arrays([0, 1], 4), 2, seed=None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        ti.split_tasks(arrays([0, 1, 2, -1], 4), arrays(TEST_Y, 4), 2)


# ---------------------------------------------------------------- strategies whose predictions we control
class Memoriser:
    """Learns the table ``code -> local label`` of each task's training images (the test images share the codes).

    ``keep_all=False`` forgets every table but the last task's: on older tasks it predicts local label 0.
    """

    def __init__(self, n_out: dict[int, int], keep_all: bool = False) -> None:
        self.n_out, self.keep_all, self.tables, self.seen = n_out, keep_all, {}, []

    def train_task(self, task: ti.Task) -> dict:
        table = dict(zip(codes(task.train.images), task.train.targets.tolist()))
        self.tables = {**self.tables, task.index: table} if self.keep_all else {task.index: table}
        self.seen.append(task.index)
        return {"n_train": len(task.train)}

    def predict(self, x: torch.Tensor, task_index: int) -> torch.Tensor:
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and not torch.is_grad_enabled()
        table = self.tables.get(task_index, {})
        labels = [table.get(c, 0) for c in codes(x)]
        return torch.nn.functional.one_hot(torch.tensor(labels), self.n_out[task_index]).float()


# 6 classes, tasks [[0, 1], [2, 3], [4, 5]]; test images per class [1, 3, 2, 2, 3, 1], so the share of local
# label 0 (the forgetful guess) is 1/4 on task 0, 2/4 on task 1, 3/4 on task 2.
TEST_COUNTS = [1, 3, 2, 2, 3, 1]


def memo_tasks(classes=([0, 1], [2, 3], [4, 5])):
    y = np.repeat(np.arange(6), TEST_COUNTS)
    # train and test share the codes, so the memoriser is perfect on the tasks it remembers
    return ti.split_tasks(arrays(y, 6), arrays(y, 6, "toy_test"), len(classes), classes=[list(c) for c in classes])


def memoriser(tasks, keep_all=False) -> Memoriser:
    return Memoriser({t.index: t.n_classes for t in tasks}, keep_all)


def test_run_forgetful_strategy_exact_matrix():
    tasks = memo_tasks()
    calls, strategy = [], memoriser(tasks)
    r = ti.run_task_incremental(strategy, tasks, on_task=lambda t, row, log: calls.append((t, row, log)))
    assert strategy.seen == [0, 1, 2]
    want = np.array([[1, NAN, NAN], [0.25, 1, NAN], [0.25, 0.5, 1]])
    np.testing.assert_array_equal(r.matrix, want)
    assert_value(r.acc(), 1.75 / 3)            # (.25 + .5 + 1) / 3
    assert_value(r.bwt(), -0.625)              # ((.25 - 1) + (.5 - 1)) / 2
    assert r.n_recorded == 3
    assert calls == [(0, [1.0], {"n_train": 4}), (1, [0.25, 1.0], {"n_train": 4}),
                     (2, [0.25, 0.5, 1.0], {"n_train": 4})]


def test_run_perfect_memory_and_batching():
    tasks = memo_tasks(([5, 0], [3], [1, 2, 4]))
    r = ti.run_task_incremental(memoriser(tasks, keep_all=True), tasks, progress=True, batch_size=1)
    np.testing.assert_array_equal(r.matrix[np.tril_indices(3)], 1.0)
    assert_value(r.acc(), 1.0)
    assert_value(r.bwt(), 0.0)


def test_evaluate_tasks_batch_size_does_not_matter():
    tasks = memo_tasks()
    s = memoriser(tasks)
    s.train_task(tasks[2])
    # last task remembered: [1/4, 2/4, 1] for any batch size
    for bs in (1, 2, 256):
        assert ti.evaluate_tasks(s.predict, tasks, 2, batch_size=bs) == [0.25, 0.5, 1.0]
    assert ti.evaluate_tasks(s.predict, tasks, 0) == [0.25]


def test_evaluate_errors():
    tasks = memo_tasks()
    s = memoriser(tasks)
    with pytest.raises(ValueError, match=r"upto must be a task index in \[0, 2\]"):
        ti.evaluate_tasks(s.predict, tasks, 3)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ti.evaluate_tasks(s.predict, tasks, 0, batch_size=0)
    with pytest.raises(ValueError, match=r"returned shape \(4, 6\), expected \(4, 2\)"):
        ti.evaluate_tasks(lambda x, i: torch.zeros(len(x), 6), tasks, 0)  # all 6 classes, not the task's head


def test_run_errors():
    tasks = memo_tasks()
    with pytest.raises(ValueError, match="tasks is empty"):
        ti.run_task_incremental(memoriser(tasks), [])
    with pytest.raises(ValueError, match=r"tasks\[i\].index must equal i"):
        ti.run_task_incremental(memoriser(tasks), tasks[1:])
    with pytest.raises(TypeError, match="not a task strategy"):
        ti.run_task_incremental(object(), tasks)
