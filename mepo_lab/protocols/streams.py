"""Si-Blurry stream builder (index bookkeeping only; images are never touched).

Si-Blurry (Moon et al., ICCV 2023, MVP) as implemented in the MISA/MePo ``utils/onlinesampler.py``
(class ``OnlineSampler``, non-distributed path) splits a labelled training set into ``n_tasks``
online tasks:

* ``N`` % of the classes are *disjoint* (each seen in exactly one task), the rest are *blurry*;
* ``M`` % of the blurry-class samples are pulled out of their task into a shared pool, shuffled and
  dealt back to the tasks, so blurry classes leak across task boundaries;
* every task's list is finally shuffled.

:func:`si_blurry` is a vectorised re-implementation that issues the *same* ``torch.Generator``
calls, in the same order and with the same sizes, as the reference, so the index arrays are
identical. ``varing_NM=True`` of the reference is ``stochastic=True`` here (the variant of every
paper script); ``varing_NM=False`` is ``stochastic=False``. The special values ``n > 100`` /
``m > 100`` of the reference are not supported.

Reference quirks kept on purpose (they change which samples are seen):

* fixed variant: ``len(pool) % n_tasks`` pooled samples are never dealt back; they are exposed as
  :attr:`Stream.dropped`;
* stochastic variant: a task whose blurry list is shorter than its pool quota moves fewer samples,
  so the last tasks may receive fewer pooled samples than their quota (nothing is dropped).

Where the reference would crash (fixed variant with no disjoint or no blurry class, i.e. ``n = 0``
or ``n = 100``, because ``torch`` cannot reshape an empty tensor with ``-1``) the tasks simply get
empty class lists; no random numbers are involved there, so nothing else changes.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Stream", "si_blurry"]

_SEED_MIN, _SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts


@dataclass(frozen=True, eq=False)
class Stream:
    """A built Si-Blurry stream: per-task sample indices in presentation order plus provenance.

    Si-Blurry (Moon et al., ICCV 2023, MVP) as implemented in the MISA/MePo
    ``utils/onlinesampler.py``. ``blurred`` flags the samples that went through the shared pool
    (including the ``dropped`` ones); ``task_of_sample`` is -1 for samples in no task.
    """

    task_indices: list[np.ndarray]
    disjoint_classes: list[list[int]]
    blurry_classes: list[list[int]]
    n_classes: int
    n_tasks: int
    n: int
    m: int
    seed: int
    stochastic: bool
    labels: np.ndarray
    dropped: np.ndarray
    blurred: np.ndarray

    def __len__(self) -> int:
        """Total number of samples presented over all tasks (``sum(task_sizes)``)."""
        return int(sum(len(idx) for idx in self.task_indices))

    @property
    def task_sizes(self) -> np.ndarray:
        """Samples per task, shape ``(n_tasks,)``."""
        return np.array([len(idx) for idx in self.task_indices], dtype=np.int64)

    @property
    def blurred_indices(self) -> np.ndarray:
        """Dataset indices moved through the pool (dataset order), dropped ones included."""
        return np.flatnonzero(self.blurred)

    @property
    def task_of_sample(self) -> np.ndarray:
        """Task of every dataset sample, shape ``(len(labels),)``; -1 where the sample is unused."""
        out = np.full(len(self.labels), -1, dtype=np.int64)
        for t, idx in enumerate(self.task_indices):
            out[idx] = t
        return out

    @property
    def class_task(self) -> np.ndarray:
        """Task each class is assigned to, shape ``(n_classes,)`` (-1 for none)."""
        out = np.full(self.n_classes, -1, dtype=np.int64)
        for t in range(self.n_tasks):
            out[self.disjoint_classes[t] + self.blurry_classes[t]] = t
        return out

    @property
    def class_is_disjoint(self) -> np.ndarray:
        """Boolean per class: True for disjoint classes, False for blurry ones."""
        out = np.zeros(self.n_classes, dtype=bool)
        for cls in self.disjoint_classes:
            out[cls] = True
        return out

    def task_labels(self, t: int) -> np.ndarray:
        """Labels of task ``t`` in presentation order (``labels[task_indices[t]]``)."""
        return self.labels[self.task_indices[t]]


# --------------------------------------------------------------------------- validation
def _check_int(name: str, value: object, *, lo: int | None = None, hi: int | None = None,
               hint: str = "") -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__}); "
                         f"pass a plain int{hint}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in {rng}, got {value}{hint}")
    return value


def _as_labels(labels: object, n_classes: int | None) -> tuple[np.ndarray, int]:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D (one class id per sample, dataset order), got shape "
                         f"{arr.shape}; pass a flat array such as dataset.targets")
    if arr.size == 0:
        raise ValueError("labels is empty; pass at least one class id per sample")
    if arr.dtype.kind == "b":
        raise ValueError("labels must be integer class ids, got booleans; convert with .astype(int)")
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.floor(arr)).all()):
            raise ValueError("labels must be integer class ids, got floats with a fractional part "
                             "(or NaN/inf); map them to 0..C-1 first")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class ids, got dtype {arr.dtype}; map them to "
                         "integers 0..C-1 first")
    arr = arr.astype(np.int64)  # always a copy we own
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"labels must be >= 0, got {lo}; remap class ids to 0..C-1")
    if n_classes is None:
        return arr, hi + 1
    n_classes = _check_int("n_classes", n_classes, lo=1)
    if hi >= n_classes:
        raise ValueError(f"labels must be < n_classes={n_classes}, got {hi}; raise n_classes to at "
                         f"least {hi + 1} or leave it None")
    return arr, n_classes


# --------------------------------------------------------------------------- building blocks
def _cuts(gen: torch.Generator, total: int, n_tasks: int) -> np.ndarray:
    """``[0] + sorted(randint(0, total, (T-1,))) + [total]``: the reference's random task cuts."""
    inner = torch.randint(0, total, (n_tasks - 1,), generator=gen).sort().values.numpy()
    return np.concatenate([[0], inner, [total]]).astype(np.int64)


def _split_classes(order: np.ndarray, n_dis: int, n_tasks: int, stochastic: bool,
                   gen: torch.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Disjoint classes = ``order[:n_dis]``, blurry = the rest, cut into ``n_tasks`` pieces."""
    parts = []
    for block in (order[:n_dis], order[n_dis:]):
        if len(block) == 0:
            parts.append([block[:0] for _ in range(n_tasks)])
        elif stochastic:  # random cut points; the generator is only called for non-empty blocks
            c = _cuts(gen, len(block), n_tasks)
            parts.append([block[c[t]:c[t + 1]] for t in range(n_tasks)])
        else:  # equal rows, as ``reshape(n_tasks, -1)``
            parts.append(list(block.reshape(n_tasks, -1)))
    return parts[0], parts[1]


def _group_by_task(labels: np.ndarray, n_classes: int, dis: list[np.ndarray],
                   blur: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per task, the dataset indices of its disjoint / blurry classes, each in dataset order."""
    n_tasks = len(dis)
    code = np.zeros(n_classes, dtype=np.int64)  # class -> 2*task (+1 if blurry)
    for t in range(n_tasks):
        code[dis[t]] = 2 * t
        code[blur[t]] = 2 * t + 1
    key = code[labels].astype(np.min_scalar_type(2 * n_tasks))  # small ints: radix sort
    order = np.argsort(key, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=2 * n_tasks))])
    groups = [order[bounds[g]:bounds[g + 1]] for g in range(2 * n_tasks)]
    return groups[0::2], groups[1::2]


def _pool_and_deal(blurry: list[np.ndarray], m: int, stochastic: bool, gen: torch.Generator
                   ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Move the first ``k_t`` blurry indices of each task to a pool, shuffle, deal back.

    Fixed: ``k_t = len(blurry_t) * m // 100``; each task gets ``len(pool) // T`` back, the rest is
    dropped. Stochastic: ``k_t`` from random cuts of ``num_blurred = sum_t len(blurry_t) * m // 100``
    (no generator call when it is 0); task ``t`` moves ``min(k_t, len(blurry_t))`` and receives the
    next ``k_t`` pooled indices while they last. Returns (kept, received, pool, dropped).
    """
    n_tasks = len(blurry)
    sizes = np.array([len(b) for b in blurry], dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    if stochastic:
        total = int(sizes.sum()) * m // 100
        if total == 0:
            return blurry, [empty] * n_tasks, empty, empty
        quota = np.diff(_cuts(gen, total, n_tasks))
    else:
        quota = sizes * m // 100
    moved = np.minimum(quota, sizes)
    kept = [b[k:] for b, k in zip(blurry, moved)]
    pool = np.concatenate([b[:k] for b, k in zip(blurry, moved)] + [empty])
    pool = pool[torch.randperm(len(pool), generator=gen).numpy()]
    if stochastic:
        ends = np.minimum(np.concatenate([[0], np.cumsum(quota)]), len(pool))
        dropped = empty
    else:
        ends = np.arange(n_tasks + 1) * (len(pool) // n_tasks)
        dropped = pool[ends[-1]:]
    received = [pool[ends[t]:ends[t + 1]] for t in range(n_tasks)]
    return kept, received, pool, dropped


# --------------------------------------------------------------------------- public API
def si_blurry(labels: object, *, n_tasks: int, n: int, m: int, seed: int,
              stochastic: bool = True, n_classes: int | None = None) -> Stream:
    """Build a Si-Blurry stream from dataset-order labels, index-identical to the reference.

    Si-Blurry (Moon et al., ICCV 2023, MVP) as implemented in the MISA/MePo
    ``utils/onlinesampler.py``. With ``C`` classes and ``T = n_tasks``:
    ``disjoint_num = (C * n // 100) // T * T`` and ``blurry_num = C - disjoint_num``;
    ``class_order = randperm(C)``; the first ``disjoint_num`` classes are disjoint, the rest blurry.
    Fixed variant (``stochastic=False``, needs ``C % T == 0``): both groups are reshaped into ``T``
    equal rows. Stochastic variant: each group is cut at ``sorted(randint(0, size, (T-1,)))``.
    Then ``m`` % of the blurry samples go through a shuffled pool (see :func:`_pool_and_deal`), and
    each task's list ``disjoint + blurry kept + pooled received`` is permuted with ``randperm``.
    All randomness comes from ``torch.Generator().manual_seed(seed)``.
    """
    y, n_cls = _as_labels(labels, n_classes)
    n = _check_int("n", n, lo=0, hi=100, hint=" (percentage of disjoint classes)")
    m = _check_int("m", m, lo=0, hi=100, hint=" (percentage of blurry samples that are pooled)")
    seed = _check_int("seed", seed, lo=_SEED_MIN, hi=_SEED_MAX)
    n_tasks = _check_int("n_tasks", n_tasks, lo=1, hint=" (use at least one task)")
    if n_tasks > n_cls:
        raise ValueError(f"n_tasks must be <= the number of classes ({n_cls}), got {n_tasks}; "
                         f"use fewer tasks")
    if not stochastic and n_cls % n_tasks:
        divisors = [d for d in range(1, n_cls + 1) if n_cls % d == 0]
        raise ValueError(
            f"the fixed variant (stochastic=False) reshapes the blurry classes into n_tasks equal "
            f"rows, so n_classes ({n_cls}) must be divisible by n_tasks ({n_tasks}); no n helps, "
            f"since blurry_num % n_tasks == n_classes % n_tasks for every n. Use n_tasks in "
            f"{divisors} or stochastic=True")

    gen = torch.Generator().manual_seed(seed)
    n_dis = (n_cls * n // 100) // n_tasks * n_tasks
    order = torch.randperm(n_cls, generator=gen).numpy()
    dis_cls, blur_cls = _split_classes(order, n_dis, n_tasks, bool(stochastic), gen)
    dis_idx, blur_idx = _group_by_task(y, n_cls, dis_cls, blur_cls)
    kept, received, pool, dropped = _pool_and_deal(blur_idx, m, bool(stochastic), gen)

    tasks = []
    for t in range(n_tasks):
        lst = np.concatenate([dis_idx[t], kept[t], received[t]]).astype(np.int64, copy=False)
        tasks.append(lst[torch.randperm(len(lst), generator=gen).numpy()])
    blurred = np.zeros(len(y), dtype=bool)
    blurred[pool] = True
    return Stream(
        task_indices=tasks,
        disjoint_classes=[c.tolist() for c in dis_cls],
        blurry_classes=[c.tolist() for c in blur_cls],
        n_classes=n_cls, n_tasks=n_tasks, n=n, m=m, seed=seed, stochastic=bool(stochastic),
        labels=y, dropped=dropped.astype(np.int64), blurred=blurred,
    )
