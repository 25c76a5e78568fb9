"""Hand-computed checks of ``mepo_lab.metrics`` (the hand computation sits next to each case)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from mepo_lab.protocols import metrics as m

NAN = float("nan")


def assert_value(got: float, want: float) -> None:
    assert type(got) is float, f"expected a Python float, got {type(got).__name__}"
    if math.isnan(want):
        assert math.isnan(got), f"expected NaN, got {got}"
    else:
        assert got == pytest.approx(want, abs=1e-12)


def no_warnings(fn, *args):
    """Call ``fn`` with every warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


# ---------------------------------------------------------------- A_auc / A_last / A_avg
SCALAR_CASES = [
    (m.a_auc, [0.5], 0.5),                       # single evaluation
    (m.a_auc, [0.2, 0.4, 0.9], 0.5),             # (0.2 + 0.4 + 0.9) / 3 = 1.5 / 3
    (m.a_auc, [NAN, 0.4, 0.8], 0.6),             # NaN skipped: (0.4 + 0.8) / 2
    (m.a_auc, [NAN, NAN], NAN),                  # nothing to average
    (m.a_last, [0.3, 0.5, 0.7], 0.7),            # last entry
    (m.a_last, [0.9], 0.9),                      # one task: last = only
    (m.a_last, [0.5, NAN], NAN),                 # last entry returned as is
    (m.a_avg, [0.3, 0.5, 0.7], 0.5),             # (0.3 + 0.5 + 0.7) / 3
    (m.a_avg, [0.4, NAN, 0.8], 0.6),             # NaN skipped: (0.4 + 0.8) / 2
    (m.a_avg, [1.0, 0.0], 0.5),                  # (1 + 0) / 2
    (m.a_avg, [NAN], NAN),                       # all NaN
]


@pytest.mark.parametrize("fn, accs, want", SCALAR_CASES)
def test_scalar_metrics(fn, accs, want):
    assert_value(no_warnings(fn, accs), want)


# ---------------------------------------------------------------- F_last
F_LAST_CASES = [
    # reference toy: class 0: max(.9,.7) - .6 = .3; class 1: max(0,.8) - .5 = .3;
    # class 2 is 0 before the last task -> excluded. mean(.3, .3) = .30
    ([[0.9, 0, 0], [0.7, 0.8, 0], [0.6, 0.5, 0.9]], 0.30),
    # class 0: max(.5,.9) - .3 = .6; class 1: max(0,.6) - .2 = .4 -> mean .5 (peak in the middle)
    ([[0.5, 0], [0.9, 0.6], [0.3, 0.2]], 0.5),
    # class 0 improves: .6 - .8 = -.2; class 1 never seen before last -> excluded
    ([[0.6, 0], [0.8, 0]], -0.2),
    # NaN = missing: class 0: .8 - .4 = .4; class 1 has no past value -> excluded
    ([[0.8, NAN], [0.4, 0.5]], 0.4),
    # NaN skipped inside the max: class 0: max(.7) - .4 = .3; class 1: max(.6,.5) - .5 = .1 -> .2
    ([[NAN, 0.6], [0.7, 0.5], [0.4, 0.5]], 0.2),
    # T = 1 -> reference sentinel
    ([[0.5, 0.5]], -999.0),
    # no class qualifies (all zero before the last task) -> NaN, no warning
    ([[0, 0], [0.4, 0.2]], NAN),
]


@pytest.mark.parametrize("class_acc, want", F_LAST_CASES)
def test_f_last(class_acc, want):
    assert_value(no_warnings(m.f_last, class_acc), want)


def test_f_last_sentinel_constant():
    assert m.F_LAST_UNDEFINED == -999.0
    assert m.f_last([[0.1, 0.2, 0.3]]) == m.F_LAST_UNDEFINED


# ---------------------------------------------------------------- forgetting_max / BWT
MATRIX_CASES = [
    # 2x2: forget = .9 - .6 = .3; bwt = .6 - .9 = -.3
    ([[0.9, 0], [0.6, 0.8]], 0.3, -0.3),
    # 3x3, task 0 rose (.5 -> .8) then fell (.4):
    # forget: j0 max(.5,.8) - .4 = .4; j1 .7 - .6 = .1 -> .25
    # bwt:    j0 .4 - .5 = -.1;       j1 .6 - .7 = -.1 -> -.1   (so forget != -bwt)
    ([[0.5, 0, 0], [0.8, 0.7, 0], [0.4, 0.6, 0.9]], 0.25, -0.1),
    # upper triangle ignored (placeholders .99 / -1 would change the max / fail the range check):
    # forget: j0 max(.5,.3) - .2 = .3; j1 .6 - .4 = .2 -> .25; bwt: (-.3 + -.2) / 2 = -.25
    ([[0.5, 0.99, -1], [0.3, 0.6, 0.99], [0.2, 0.4, 0.7]], 0.25, -0.25),
    # empty task 1 (NaN column) ignored: forget j0 max(.9,.7) - .5 = .4; bwt .5 - .9 = -.4
    ([[0.9, NAN, NAN], [0.7, NAN, NAN], [0.5, NAN, 0.8]], 0.4, -0.4),
    # task 0 improves at the last stage: forget .5 - .8 = -.3 (max excludes the last stage); bwt +.3
    ([[0.5, 0], [0.8, 0.7]], -0.3, 0.3),
    # NaN placeholders in the upper triangle are fine: same numbers as the .99 / -1 case above
    ([[0.5, NAN, NAN], [0.3, 0.6, NAN], [0.2, 0.4, 0.7]], 0.25, -0.25),
    # task 0 has a missing (NaN) entry in its lower part -> ignored; task 1: .7 - .5 = .2
    ([[NAN, 0, 0], [0.6, 0.7, 0], [0.3, 0.5, 0.9]], 0.2, -0.2),
    # T = 1 -> undefined -> NaN
    ([[0.7]], NAN, NAN),
    # the only old task is empty -> NaN
    ([[NAN, NAN], [NAN, 0.5]], NAN, NAN),
]


@pytest.mark.parametrize("acc_matrix, want_forget, want_bwt", MATRIX_CASES)
def test_forgetting_max_and_bwt(acc_matrix, want_forget, want_bwt):
    assert_value(no_warnings(m.forgetting_max, acc_matrix), want_forget)
    assert_value(no_warnings(m.bwt, acc_matrix), want_bwt)


# ---------------------------------------------------------------- accuracy_matrix
# 4 classes, 3 task ends; classes 0,1 -> task 0, task 1 empty, class 2 -> task 2, class 3 never.
CLASS_ACC = [[0.8, 0.6, 0.0, 0.0],
             [0.6, 0.4, 0.0, 0.0],
             [0.5, 0.3, 0.9, 0.2]]
CLASS_TASK = [0, 0, 2, -1]
ACC_MATRIX_CASES = [
    # unweighted: col 0 = mean(cls 0, 1) = [.7, .5, .4]; col 1 NaN; col 2 = cls 2 = [0, 0, .9]
    (None, [[0.7, NAN, 0.0], [0.5, NAN, 0.0], [0.4, NAN, 0.9]]),
    # counts (3, 1, 2, 5): col 0 = (3*.8+.6)/4=.75, (3*.6+.4)/4=.55, (3*.5+.3)/4=.45
    ([3, 1, 2, 5], [[0.75, NAN, 0.0], [0.55, NAN, 0.0], [0.45, NAN, 0.9]]),
    # zero test images for task 0's classes -> NaN column 0
    ([0, 0, 1, 1], [[NAN, NAN, 0.0], [NAN, NAN, 0.0], [NAN, NAN, 0.9]]),
]


@pytest.mark.parametrize("counts, want", ACC_MATRIX_CASES)
def test_accuracy_matrix(counts, want):
    got = no_warnings(m.accuracy_matrix, CLASS_ACC, CLASS_TASK, counts)
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, np.array(want), atol=1e-12)  # NaN positions must match too


def test_accuracy_matrix_feeds_forgetting():
    r = m.accuracy_matrix(CLASS_ACC, CLASS_TASK)
    # only task 0 counts: forget max(.7,.5) - .4 = .3; bwt .4 - .7 = -.3
    assert_value(m.forgetting_max(r), 0.3)
    assert_value(m.bwt(r), -0.3)


# ---------------------------------------------------------------- summarize
def test_summarize():
    out = m.summarize([0.2, 0.4, 0.9], [0.9, 0.7, 0.6],
                      [[0.9, 0, 0], [0.7, 0.8, 0], [0.6, 0.5, 0.9]])
    assert set(out) == {"A_auc", "A_last", "A_avg", "F_last"}
    # A_auc 1.5/3; A_last .6; A_avg (.9+.7+.6)/3 = 2.2/3; F_last reference toy .3
    for key, want in [("A_auc", 0.5), ("A_last", 0.6), ("A_avg", 2.2 / 3), ("F_last", 0.3)]:
        assert_value(out[key], want)


# ---------------------------------------------------------------- inputs are not mutated
def test_inputs_not_mutated():
    accs = np.array([NAN, 0.4, 0.8])
    class_acc = np.array([[0.9, 0, NAN], [0.7, 0.8, 0], [0.6, 0.5, 0.9]])
    matrix = np.array([[0.5, -1, -1], [0.8, 0.7, -1], [0.4, 0.6, 0.9]])
    class_task = np.array([0, 1, -1])
    counts = np.array([2.0, 0.0, 3.0])
    saved = [a.copy() for a in (accs, class_acc, matrix, class_task, counts)]
    m.a_auc(accs), m.a_last(accs), m.a_avg(accs), m.f_last(class_acc)
    m.forgetting_max(matrix), m.bwt(matrix)
    m.accuracy_matrix(class_acc, class_task, counts)
    m.summarize(accs, accs, class_acc)
    for before, after in zip(saved, (accs, class_acc, matrix, class_task, counts)):
        np.testing.assert_array_equal(after, before)


# ---------------------------------------------------------------- bad inputs
BAD_INPUTS = [
    (m.a_auc, ([[0.1, 0.2]],), r"anytime_accs must be 1-D .*got shape \(1, 2\)"),
    (m.a_auc, ([],), r"anytime_accs is empty"),
    (m.a_auc, ([50.0, 60.0],), r"outside \[0, 1\].*divide percentages by 100"),
    (m.a_last, ([-0.1],), r"task_end_accs has values outside \[0, 1\]"),
    (m.a_last, ([],), r"task_end_accs is empty"),
    (m.a_avg, (0.5,), r"task_end_accs must be 1-D .*got shape \(\)"),
    (m.a_avg, ([0.5, 1.2],), r"divide percentages by 100"),
    (m.f_last, ([0.1, 0.2, 0.3, 0.4, 0.5],),
     r"class_acc must be 2-D \(n_task_ends, n_classes\), got shape \(5,\)"),
    (m.f_last, (np.zeros((0, 3)),), r"class_acc is empty"),
    (m.f_last, (np.zeros((2, 0)),), r"class_acc is empty"),
    (m.f_last, ([[90.0, 0.0]],), r"divide percentages by 100"),
    (m.forgetting_max, ([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],), r"must be square.*got shape \(2, 3\)"),
    (m.bwt, ([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],), r"must be square"),
    (m.forgetting_max, ([0.1, 0.2],), r"acc_matrix must be 2-D"),
    (m.bwt, (np.zeros((0, 0)),), r"acc_matrix is empty"),
    (m.bwt, ([[0.5, 0.0], [1.5, 0.5]],), r"acc_matrix has values outside \[0, 1\]"),
    (m.accuracy_matrix, ([[0.5, 0.5]], [0]), r"class_task must be 1-D with one entry per class \(2,\)"),
    (m.accuracy_matrix, ([[0.5, 0.5]], [0, 1]), r"class_task must hold integer task ids in \[-1, 0\]"),
    (m.accuracy_matrix, ([[0.5, 0.5]], [0, -2]), r"integer task ids"),
    (m.accuracy_matrix, ([[0.5, 0.5]], [0, 0.5]), r"integer task ids"),
    (m.accuracy_matrix, ([[0.5, 0.5]], [0, 0], [1, -1]), r"class_counts must be .*non-negative"),
    (m.accuracy_matrix, ([[0.5, 0.5]], [0, 0], [1]), r"class_counts must be 1-D, shape \(2,\)"),
    (m.accuracy_matrix, ([0.5, 0.5], [0, 0]), r"class_acc must be 2-D"),
    (m.summarize, ([0.5], [0.5], [[50.0]]), r"class_acc has values outside"),
]


@pytest.mark.parametrize("fn, args, pattern", BAD_INPUTS)
def test_bad_inputs_raise(fn, args, pattern):
    with pytest.raises(ValueError, match=pattern):
        fn(*args)
