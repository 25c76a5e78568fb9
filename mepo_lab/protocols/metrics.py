"""Continual-learning metrics: the definitions of record for ``mepo_lab``.

All accuracies are fractions in [0, 1] (multiply by 100 for the papers' percentages). Every
function takes array-likes, never mutates them, and returns a Python ``float``.

========  ==========================================================  ===============================
name      formula                                                     also called
========  ==========================================================  ===============================
A_auc     mean_k a_k  (a_k: anytime accuracy, every eval_period)      anytime accuracy (CLIB, MVP)
A_last    a_{T-1}  (accuracy on exposed classes after last task)      final accuracy
A_avg     mean_t a_t  (end-of-task accuracies)                        average incremental accuracy
F_last    mean_c [max_{t<T-1} acc[t,c] - acc[T-1,c]]  (seen classes)  class-level forgetting
forget.   mean_{j<T-1} [max_{j<=l<T-1} R[l,j] - R[T-1,j]]             forgetting (RWalk, continuum)
BWT       mean_{j<T-1} [R[T-1,j] - R[j,j]]                            backward transfer (GEM)
========  ==========================================================  ===============================

``R`` is the task accuracy matrix (``R[t, j]``: accuracy on task j's classes after training stage
t); build it from per-class accuracies with :func:`accuracy_matrix`.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

F_LAST_UNDEFINED = -999.0
"""Sentinel returned by :func:`f_last` for a single task end (the reference code's value)."""

_PERCENT_HINT = "accuracies must be fractions in [0, 1]; divide percentages by 100"


def _as_array(x: ArrayLike, name: str, ndim: int, shape_doc: str) -> np.ndarray:
    """Float view of ``x`` after the checks shared by every metric (dimensionality, empty, range)."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {shape_doc}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one evaluation")
    _check_range(arr, name)
    return arr


def _check_range(arr: np.ndarray, name: str) -> None:
    bad = ~np.isnan(arr) & ((arr < 0) | (arr > 1))
    if bad.any():
        raise ValueError(f"{name} has values outside [0, 1] (e.g. {arr[bad][0]!r}); {_PERCENT_HINT}")


def _nanmean(x: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN (without a RuntimeWarning) if there are none."""
    kept = x[~np.isnan(x)]
    return float(kept.mean()) if kept.size else float("nan")


def a_auc(anytime_accs: ArrayLike) -> float:
    """Area under the anytime-accuracy curve: ``A_auc = (1/K) * sum_k a_k``.

    ``a_k`` is the accuracy on the test images of the classes exposed so far, measured every
    ``eval_period`` training samples (Koh et al., ICLR 2022). For equally spaced evaluations the plain
    mean equals the area under the accuracy-vs-samples curve divided by its length. The value depends
    on ``eval_period`` and on the batch size (how many samples arrive between evaluations), so always
    report it together with them. NaN entries (an evaluation before any class was exposed has no test
    samples) are ignored; all NaN gives NaN.

    Also called: "anytime accuracy" / ``A_auc`` in CLIB (Koh et al., ICLR 2022, i-Blurry),
    Si-Blurry/MVP (Moon et al., ICCV 2023), MISA, MePo; FlyGCL ``A_auc``.
    """
    return _nanmean(_as_array(anytime_accs, "anytime_accs", 1, "(n_evaluations,)"))


def a_last(task_end_accs: ArrayLike) -> float:
    """Accuracy after the last task: ``A_last = a_{T-1}`` (returned as is, even if NaN).

    ``a_t`` is the class-weighted accuracy on all test images of exposed classes after task t.
    Caution: some papers instead average ``R[T-1, :]`` over tasks (task-weighted); with unequal task
    sizes the two differ (LAMDA-PILOT issue #9 is exactly this confusion).

    Also called: FlyGCL/MISA ``A_last``; "final accuracy".
    """
    return float(_as_array(task_end_accs, "task_end_accs", 1, "(n_task_ends,)")[-1])


def a_avg(task_end_accs: ArrayLike) -> float:
    """Average of the end-of-task accuracies: ``A_avg = (1/T) * sum_t a_t`` (NaN entries ignored).

    Reference: Rebuffi et al., iCaRL, CVPR 2017.

    Also called: "average incremental accuracy" (iCaRL); LAMDA-PILOT prints it as "Average Accuracy";
    continuum ``average_incremental_accuracy``; FlyGCL/MISA ``A_avg``.
    """
    return _nanmean(_as_array(task_end_accs, "task_end_accs", 1, "(n_task_ends,)"))


def f_last(class_acc: ArrayLike) -> float:
    """Class-level forgetting after the last task.

    ``class_acc[t, c]`` is the accuracy on class c after task t (columns in exposure order, 0 for
    classes not seen yet). With ``best_c = max_{t<T-1} class_acc[t, c]``::

        F_last = mean over classes c with best_c > 0 of ( best_c - class_acc[T-1, c] )

    Returns :data:`F_LAST_UNDEFINED` (-999.0, the reference code's sentinel) when T = 1. Returns NaN,
    without a warning, when no class qualifies (all zero before the last task; the reference's
    ``np.mean([])`` gives NaN with a RuntimeWarning). NaN entries are treated as missing.
    Class-level rather than task-level because Si-Blurry tasks are blurry (classes span tasks).

    Also called: ``F_last`` in the Si-Blurry lineage (MVP, MISA, MePo, FlyGCL).
    """
    acc = _as_array(class_acc, "class_acc", 2, "(n_task_ends, n_classes)")
    if acc.shape[0] == 1:
        return F_LAST_UNDEFINED
    best = np.where(np.isnan(acc[:-1]), -np.inf, acc[:-1]).max(axis=0)
    drop = best - acc[-1]
    return _nanmean(drop[best > 0])


def _check_square(acc_matrix: ArrayLike) -> np.ndarray:
    r = np.asarray(acc_matrix, dtype=float)
    if r.ndim != 2:
        raise ValueError(f"acc_matrix must be 2-D (n_tasks, n_tasks), got shape {r.shape}")
    if r.size == 0:
        raise ValueError(f"acc_matrix is empty (shape {r.shape}); pass at least one training stage")
    if r.shape[0] != r.shape[1]:
        raise ValueError(f"acc_matrix must be square (T, T): R[t, j] = accuracy on task j after "
                         f"stage t, got shape {r.shape}; build it with accuracy_matrix()")
    _check_range(np.tril(r), "acc_matrix")  # only the lower triangle is meaningful
    return r


def _task_columns(r: np.ndarray) -> list[int]:
    """Old tasks j < T-1 whose meaningful entries R[j:, j] hold no NaN (empty tasks are skipped)."""
    return [j for j in range(r.shape[0] - 1) if not np.isnan(r[j:, j]).any()]


def forgetting_max(acc_matrix: ArrayLike) -> float:
    """Average forgetting (Chaudhry et al., RWalk, ECCV 2018, eq. 3).

    ``F = mean over j < T-1 of ( max_{j <= l < T-1} R[l, j] - R[T-1, j] )``

    Only the lower triangle (incl. the diagonal) of ``R`` is read. Tasks whose column holds NaN
    (tasks with no classes, legal in Si-Blurry) are ignored. Undefined for T = 1: returns NaN; also NaN
    if no old task has classes.

    Also called: continuum ``forgetting`` (after the off-by-one fixed in continuum#281; #291 notes the
    1.2.7 release still ships the old range), Mammoth ``forgetting`` (its max also spans the last
    stage, so each term is >= 0), LAMDA-PILOT ``print_forget``.
    Avalanche's ``ExperienceForgetting`` instead uses first accuracy minus last.
    """
    r = _check_square(acc_matrix)
    t = r.shape[0] - 1
    drops = [r[j:t, j].max() - r[t, j] for j in _task_columns(r)]
    return float(np.mean(drops)) if drops else float("nan")


def bwt(acc_matrix: ArrayLike) -> float:
    """Backward transfer (Lopez-Paz & Ranzato, GEM, NeurIPS 2017).

    ``BWT = mean over j < T-1 of ( R[T-1, j] - R[j, j] )``; negative means forgetting. It differs from
    ``-forgetting_max`` when a task's accuracy peaks after the stage that learned it. Same NaN/T = 1
    rules as :func:`forgetting_max`.

    Also called: Mammoth ``backward_transfer``, continuum BWT; Avalanche reports
    ``BWT = -forgetting`` measured from the first accuracy.
    """
    r = _check_square(acc_matrix)
    t = r.shape[0] - 1
    diffs = [r[t, j] - r[j, j] for j in _task_columns(r)]
    return float(np.mean(diffs)) if diffs else float("nan")


def accuracy_matrix(class_acc: ArrayLike, class_task: ArrayLike,
                    class_counts: ArrayLike | None = None) -> np.ndarray:
    """Task accuracy matrix ``R`` (T x T) from per-class accuracies after each task.

    ``class_task[c]`` is the task in which class c first appears (-1: never). ``R[t, j]`` is the mean
    of ``class_acc[t, c]`` over classes with ``class_task[c] == j``, weighted by ``class_counts[c]``
    (number of test images) when given. NaN where task j has no class (or zero total weight); NaN
    entries of ``class_acc`` are treated as missing.
    """
    acc = _as_array(class_acc, "class_acc", 2, "(n_task_ends, n_classes)")
    n_t, n_c = acc.shape
    task = np.asarray(class_task)
    if task.shape != (n_c,):
        raise ValueError(f"class_task must be 1-D with one entry per class ({n_c},), got shape "
                         f"{task.shape}")
    if not np.all(np.mod(task, 1) == 0) or task.min() < -1 or task.max() >= n_t:
        raise ValueError(f"class_task must hold integer task ids in [-1, {n_t - 1}] (-1: never "
                         f"appears), got {task.tolist()}")
    w = np.ones(n_c) if class_counts is None else np.asarray(class_counts, dtype=float)
    if w.shape != (n_c,) or np.isnan(w).any() or (w < 0).any():
        raise ValueError(f"class_counts must be 1-D, shape ({n_c},), non-negative test-image counts, "
                         f"got {w.tolist()}")
    valid = ~np.isnan(acc)
    num, den = np.where(valid, acc, 0.0) * w, valid * w
    r = np.full((n_t, n_t), np.nan)
    for j in range(n_t):
        cols = task == j
        total = den[:, cols].sum(axis=1)
        np.divide(num[:, cols].sum(axis=1), total, out=r[:, j], where=total > 0)
    return r


def summarize(anytime_accs: ArrayLike, task_end_accs: ArrayLike, class_acc: ArrayLike) -> dict[str, float]:
    """The four headline numbers of a run: ``{"A_auc", "A_last", "A_avg", "F_last"}`` as floats."""
    return {"A_auc": a_auc(anytime_accs), "A_last": a_last(task_end_accs),
            "A_avg": a_avg(task_end_accs), "F_last": f_last(class_acc)}
