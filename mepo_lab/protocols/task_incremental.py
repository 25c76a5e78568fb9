"""Task-incremental protocol: T tasks of disjoint classes, task ids known at train and test time.

A dataset with C classes is cut into tasks ``T_0, ..., T_{T-1}`` of disjoint class sets; inside a task the
labels are local, ``0..|T_i|-1`` (one head per task, "multi-head"). A strategy trains on the tasks one after
another (offline, as many epochs as it likes); after task t it is tested on every task seen so far, with the
task id given, which fills row t of the accuracy matrix::

    R[t, i] = (1/|D_i^test|) sum_{(x, y) in D_i^test} 1[argmax_k f(x, i)_k = y]     for i <= t (NaN for i > t)

    ACC = (1/T) sum_i R[T-1, i]                          (BECAME/GPM official ``get_results``)
    BWT = (1/(T-1)) sum_{i<T-1} (R[T-1, i] - R[i, i])    (GEM, Lopez-Paz & Ranzato, NeurIPS 2017)

Accuracies are fractions in [0, 1]. References: Li et al., "BECAME: BayEsian Continual Learning with Adaptive
Model MErging", ICML 2025 (arXiv 2504.02666), official code ``limei0818/BECAME`` (``GPM-based/main_cifar100.py``,
``get_results``); Saha, Garg, Roy, "Gradient Projection Memory for Continual Learning", ICLR 2021
(arXiv 2103.09762), whose 10-split CIFAR-100 is tasks of 10 consecutive class ids.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab.data.base import ImageArrays
from mepo_lab.protocols.metrics import bwt as _bwt
from mepo_lab.protocols.transfer import to_input

Predict = Callable[[torch.Tensor, int], torch.Tensor]
OnTask = Callable[[int, list[float], Any], None]


@dataclass
class Task:
    """One task: ``classes[k]`` is the original class id of local label ``k``; ``train``/``test`` hold only
    the images of those classes (dataset order) with local labels ``0..len(classes)-1``."""

    index: int
    classes: list[int]
    train: ImageArrays
    test: ImageArrays

    @property
    def n_classes(self) -> int:
        """Number of classes of the task (the width of its head)."""
        return len(self.classes)


@runtime_checkable
class TaskStrategy(Protocol):
    """What :func:`run_task_incremental` asks of a continual learner.

    ``train_task(task)`` learns ``task`` (its ``train`` part, local labels) and returns anything to log (a
    dict, or None); ``predict(x, task_index)`` maps float images ``(B, 3, H, W)`` in [0, 1] (CPU tensors; move
    them to your device) to logits ``(B, n_classes of that task)`` from the head of ``task_index``. Setting
    train/eval modes is the strategy's business; predictions run under ``torch.no_grad()``.
    """

    def train_task(self, task: Task) -> Any: ...

    def predict(self, x: torch.Tensor, task_index: int) -> torch.Tensor: ...


def split_tasks(train: ImageArrays, test: ImageArrays, n_tasks: int, *,
                classes: Sequence[Sequence[int]] | None = None, seed: int | None = 0) -> list[Task]:
    """Cut ``train``/``test`` into ``n_tasks`` tasks of disjoint classes with local labels.

    ``classes=None``: the class ids ``0..C-1`` in the order ``np.random.default_rng(seed).permutation(C)``
    (``seed=None``: id order, the grouping of GPM's 10-split CIFAR-100) cut into ``n_tasks`` consecutive groups
    of ``C / n_tasks``;
    each group is sorted, so local label k is the k-th smallest id of the task. Explicit ``classes``: one list
    per task, used as given (``classes[i][k]`` gets local label k; ``seed`` is ignored); classes left out of
    every list are dropped. Local label: ``y_local = classes.index(y)``. Every task needs at least one train
    and one test image.
    """
    if train.class_names != test.class_names:
        raise ValueError(f"train and test have different class lists ({train.n_classes} vs {test.n_classes} "
                         "classes); pass the two splits of one dataset")
    if not isinstance(n_tasks, (int, np.integer)) or n_tasks < 1:
        raise ValueError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
    for part in (train, test):
        if len(part) and (part.targets.min() < 0 or part.targets.max() >= part.n_classes):
            raise ValueError(f"{part.name}: labels must lie in [0, {part.n_classes}) (one per class name), got "
                             f"[{part.targets.min()}, {part.targets.max()}]")
    groups = _default_groups(train.n_classes, int(n_tasks), seed) if classes is None else \
        _checked_groups(classes, train.n_classes, int(n_tasks))
    tasks = [Task(i, g, _task_part(train, g, i), _task_part(test, g, i)) for i, g in enumerate(groups)]
    for task in tasks:
        if len(task.train) == 0 or len(task.test) == 0:
            raise ValueError(f"task {task.index} (classes {task.classes}) has {len(task.train)} train and "
                             f"{len(task.test)} test images; every task needs both: choose classes present "
                             "in both splits")
    return tasks


def evaluate_tasks(predict: Predict, tasks: Sequence[Task], upto: int, batch_size: int = 256) -> list[float]:
    """Row ``upto`` of the accuracy matrix: the accuracies of ``predict`` on the test sets of tasks ``0..upto``.

    ``R[t, i] = mean over the test images of task i of 1[argmax_k predict(x, i)_k = y_local]`` with
    ``x = images / 255`` (float32, CPU, batches of ``batch_size``); the task id is given (multi-head).
    """
    if not 0 <= upto < len(tasks):
        raise ValueError(f"upto must be a task index in [0, {len(tasks) - 1}], got {upto}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [_task_accuracy(predict, task, batch_size) for task in tasks[:upto + 1]]


class AccuracyMatrix:
    """``R[t, i]``: accuracy on task i after training task t; NaN above the diagonal and for rows not recorded.

    Rows are recorded in order (row t holds ``t + 1`` fractions). ``acc()`` and ``bwt()`` read the last row
    ``T - 1``, or row ``stage`` when given (the metrics of the run stopped after task ``stage``).
    """

    def __init__(self, n_tasks: int) -> None:
        if not isinstance(n_tasks, (int, np.integer)) or n_tasks < 1:
            raise ValueError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
        self.n_tasks = int(n_tasks)
        self._r = np.full((self.n_tasks, self.n_tasks), np.nan)
        self.n_recorded = 0

    @property
    def matrix(self) -> np.ndarray:
        """A copy of ``R`` (T, T), float64."""
        return self._r.copy()

    def record(self, t: int, accuracies: Sequence[float]) -> None:
        """Store row t: ``R[t, i] = accuracies[i]`` for ``i = 0..t`` (fractions in [0, 1])."""
        if t != self.n_recorded or t >= self.n_tasks:
            raise ValueError(f"rows are recorded in order: expected row {self.n_recorded} "
                             f"(of {self.n_tasks}), got t={t}")
        row = np.asarray(accuracies, dtype=float)
        if row.shape != (t + 1,):
            raise ValueError(f"row {t} needs {t + 1} accuracies (tasks 0..{t}), got shape {row.shape}")
        if not np.all((row >= 0) & (row <= 1)):
            raise ValueError(f"accuracies must be fractions in [0, 1] (no NaN), got {row.tolist()}; divide "
                             "percentages by 100")
        self._r[t, :t + 1] = row
        self.n_recorded += 1

    def acc(self, stage: int | None = None) -> float:
        """Average accuracy ``ACC = (1/(s+1)) sum_{i<=s} R[s, i]``, s = ``stage`` (default T-1).

        With s = T-1 this is the mean of the last row, BECAME's ACC (``get_results`` of the official
        GPM-based code, Li et al. 2025; Saha et al. 2021).
        """
        s = self._stage(stage)
        return float(self._r[s, :s + 1].mean())

    def bwt(self, stage: int | None = None) -> float:
        """Backward transfer ``BWT = (1/s) sum_{i<s} (R[s, i] - R[i, i])``, s = ``stage`` (default T-1).

        :func:`mepo_lab.protocols.metrics.bwt` on ``R[:s+1, :s+1]`` (GEM, Lopez-Paz & Ranzato, NeurIPS 2017);
        NaN for s = 0 (no old task). Negative means forgetting.
        """
        s = self._stage(stage)
        return _bwt(self._r[:s + 1, :s + 1])

    def _stage(self, stage: int | None) -> int:
        s = self.n_tasks - 1 if stage is None else stage
        if not 0 <= s < self.n_recorded:
            raise ValueError(f"row {s} is not recorded ({self.n_recorded} of {self.n_tasks} rows so far); "
                             f"record it first or pass stage in [0, {self.n_recorded - 1}]")
        return s


def run_task_incremental(strategy: TaskStrategy, tasks: Sequence[Task], *, progress: bool = False,
                         on_task: OnTask | None = None, batch_size: int = 256) -> AccuracyMatrix:
    """Train ``strategy`` on ``tasks`` in order; after each task t evaluate tasks ``0..t`` and record row t.

    For t = 0..T-1: ``log = strategy.train_task(tasks[t])``, ``row = evaluate_tasks(strategy.predict, tasks,
    t, batch_size)``, ``R.record(t, row)``, then ``on_task(t, row, log)`` if given (a place to write results
    atomically). Returns ``R``; ``R.acc()`` and ``R.bwt()`` give ACC and BWT (Li et al. 2025; GEM 2017).
    """
    if not isinstance(strategy, TaskStrategy):
        raise TypeError(f"{type(strategy).__name__} is not a task strategy: it needs train_task(task) and "
                        "predict(x, task_index) methods (see TaskStrategy)")
    if len(tasks) == 0:
        raise ValueError("tasks is empty; build them with split_tasks(train, test, n_tasks)")
    wrong = [(i, t.index) for i, t in enumerate(tasks) if t.index != i]
    if wrong:
        raise ValueError(f"tasks[i].index must equal i (the task id predict receives), got (i, index) "
                         f"{wrong[:3]}; pass the whole list returned by split_tasks")
    r = AccuracyMatrix(len(tasks))
    bar = tqdm(tasks, desc="tasks", disable=not progress)
    for t, task in enumerate(bar):
        log = strategy.train_task(task)
        row = evaluate_tasks(strategy.predict, tasks, t, batch_size)
        r.record(t, row)
        bar.set_postfix(acc=f"{r.acc(t):.3f}")
        if on_task is not None:
            on_task(t, row, log)
    return r


def summarise_runs(rows: Sequence[dict], keys: Sequence[str] = ("ACC", "BWT", "seconds")) -> dict:
    """Per ``row["method"]`` (in first-seen order): mean, sample std (ddof 1; 0 for one run) and count of each key."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        out[method] = {k: {"mean": float(np.mean([r[k] for r in mine])),
                           "std": float(np.std([r[k] for r in mine], ddof=1)) if len(mine) > 1 else 0.0,
                           "n": len(mine)} for k in keys}
    return out


def format_runs_table(summary: dict, names: dict[str, str] | None = None) -> str:
    """A markdown table of :func:`summarise_runs`: method (``names[method]`` if given) × (ACC, BWT) in percent,
    mean ± std, and s/run."""
    lines = ["| method | ACC (%) | BWT (%) | s/run |", "|---|---|---|---|"]
    for method, s in summary.items():
        lines.append(f"| {(names or {}).get(method, method)} | {100 * s['ACC']['mean']:.2f} ± {100 * s['ACC']['std']:.2f} | "
                     f"{100 * s['BWT']['mean']:.2f} ± {100 * s['BWT']['std']:.2f} | {s['seconds']['mean']:.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- internals
def _default_groups(n_classes: int, n_tasks: int, seed: int | None) -> list[list[int]]:
    """The seeded permutation of ``0..C-1`` (id order for ``seed=None``) cut into sorted equal groups."""
    if n_classes % n_tasks != 0:
        raise ValueError(f"n_tasks={n_tasks} does not divide the {n_classes} classes; pick a divisor of "
                         f"{n_classes} or pass explicit classes=[[...], ...]")
    order = np.arange(n_classes) if seed is None else np.random.default_rng(seed).permutation(n_classes)
    return [sorted(int(c) for c in g) for g in order.reshape(n_tasks, -1)]


def _checked_groups(classes: Sequence[Sequence[int]], n_classes: int, n_tasks: int) -> list[list[int]]:
    """Explicit class lists after the checks: one per task, non-empty, integer ids in range, disjoint."""
    if len(classes) != n_tasks:
        raise ValueError(f"classes has {len(classes)} lists but n_tasks={n_tasks}; pass one list per task")
    groups, owner = [], {}
    for i, group in enumerate(classes):
        ids = np.asarray(group)
        if ids.size == 0:
            raise ValueError(f"task {i} has no classes; every task needs at least one class")
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"task {i}: classes must be a flat list of integer class ids, got {list(group)!r}")
        bad = ids[(ids < 0) | (ids >= n_classes)]
        if bad.size:
            raise ValueError(f"task {i}: unknown class ids {bad.tolist()}; ids must lie in [0, {n_classes})")
        for c in ids.tolist():
            if c in owner:
                raise ValueError(f"class {c} is in task {owner[c]} and task {i}; tasks need disjoint classes")
            owner[c] = i
        groups.append(ids.tolist())
    return groups


def _task_part(data: ImageArrays, classes: list[int], index: int) -> ImageArrays:
    """The images of ``classes`` (dataset order), labels mapped to their position in ``classes``."""
    local = np.full(data.n_classes, -1, dtype=np.int64)
    local[classes] = np.arange(len(classes))
    keep = np.flatnonzero(local[data.targets] >= 0)
    return ImageArrays(data.images[keep], local[data.targets[keep]], [data.class_names[c] for c in classes],
                       f"{data.name}/task{index}", dict(data.meta, task=index, task_classes=list(classes)))


@torch.no_grad()
def _task_accuracy(predict: Predict, task: Task, batch_size: int) -> float:
    """Fraction of the test images of ``task`` whose argmax logit is the local label."""
    correct = 0
    for s in range(0, len(task.test), batch_size):
        x = to_input(task.test.images[s:s + batch_size])
        logits = predict(x, task.index)
        if logits.shape != (len(x), task.n_classes):
            raise ValueError(f"predict(x, {task.index}) returned shape {tuple(logits.shape)}, expected "
                             f"({len(x)}, {task.n_classes}): the logits of task {task.index}'s head only")
        pred = logits.argmax(1).cpu().numpy()
        correct += int((pred == task.test.targets[s:s + batch_size]).sum())
    return correct / len(task.test)
