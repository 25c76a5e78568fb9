"""The schedule of one online run, computed before any training: batches, exposure order, evaluations.

Everything :func:`mepo_lab.protocols.online.run_gcl` decides while it runs depends only on the stream and
the protocol (``docs/reference/si_blurry.md#training``, ``#evaluation``), never on the learner:

* task ``t``'s samples in stream order, in batches of ``batch_size`` (a task's last batch may be smaller;
  batches never straddle tasks), labels remapped to exposure order as each batch arrives;
* after a batch, an anytime evaluation when ``samples + len(batch) > next_eval`` (then
  ``next_eval += eval_period``), and after a task's last batch one end-of-task evaluation.

A :class:`RunPlan` writes that schedule down once, so many runs can step through their streams in lockstep
(:mod:`mepo_lab.batched.runner`) and still see exactly the batches, labels and evaluation points of their
sequential runs. Plans of equal streams are equal; :func:`plan_for` caches them by content.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from mepo_lab.config import GCLConfig
from mepo_lab.protocols.online import _Exposure


@dataclass
class Event:
    """An evaluation after a step: ``kind`` ``anytime`` (at ``samples``, scheduled ``point``) or ``task`` ``t``."""

    kind: str
    samples: int
    n_seen: int
    point: int = 0
    task: int = -1


@dataclass
class RunPlan:
    """Per step ``k``: the dataset rows of the batch, their labels in exposure order, classes exposed so far.

    ``events[k]`` lists the evaluations after step ``k`` in the runner's order (``events[-1]``: before any
    step, for leading empty tasks). ``index``/``order`` are the final exposure map (class → unit) and order;
    the exposure at an event with ``n_seen`` classes is the prefix ``order[:n_seen]``.
    """

    rows: list[np.ndarray]
    labels: list[np.ndarray]
    n_seen: np.ndarray
    events: dict[int, list[Event]]
    index: np.ndarray
    order: list[int]
    n_classes: int
    batch_sizes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.batch_sizes = np.array([len(r) for r in self.rows], np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def exposed(self, n_seen: int) -> np.ndarray:
        """Unit of each class when ``n_seen`` classes were exposed (-1 for classes not seen yet)."""
        return np.where(self.index < n_seen, self.index, -1)


def build_plan(stream, cfg: GCLConfig) -> RunPlan:
    """The schedule :func:`~mepo_lab.protocols.online.run_gcl` follows on ``stream`` under ``cfg``."""
    exposure, bs = _Exposure(stream.n_classes), cfg.batch_size
    rows, labels, n_seen, events = [], [], [], {}
    samples, next_eval = 0, cfg.eval_period
    for task, indices in enumerate(stream.task_indices):
        for b0 in range(0, len(indices), bs):
            batch = np.asarray(indices[b0:b0 + bs], np.int64)
            labels.append(exposure.update(stream.labels[batch]))
            rows.append(batch)
            n_seen.append(len(exposure.order))
            samples += len(batch)
            if samples + len(batch) > next_eval:
                events.setdefault(len(rows) - 1, []).append(Event("anytime", samples, len(exposure.order), next_eval))
                next_eval += cfg.eval_period
        events.setdefault(len(rows) - 1, []).append(Event("task", samples, len(exposure.order), task=task))
    return RunPlan(rows, labels, np.array(n_seen, np.int64), events, exposure.index.copy(), list(exposure.order),
                   stream.n_classes)


_PLANS: dict[str, RunPlan] = {}


def stream_key(stream) -> str:
    """Content hash of a stream's labels and task index arrays (equal streams, equal keys)."""
    h = hashlib.sha1(np.ascontiguousarray(stream.labels, np.int64).tobytes())
    for idx in stream.task_indices:
        h.update(np.int64(len(idx)).tobytes())
        h.update(np.ascontiguousarray(idx, np.int64).tobytes())
    h.update(np.int64(stream.n_classes).tobytes())
    return h.hexdigest()


def plan_for(stream, cfg: GCLConfig) -> RunPlan:
    """:func:`build_plan`, cached by stream content and the protocol fields it reads (batch size, eval period)."""
    key = f"{stream_key(stream)}-{cfg.batch_size}-{cfg.eval_period}"
    if key not in _PLANS:
        if len(_PLANS) > 64:
            _PLANS.clear()
        _PLANS[key] = build_plan(stream, cfg)
    return _PLANS[key]
