"""Many feature-cached GCL runs as one batched program: lockstep over the streams, one update for all runs.

A grid of feature-cached runs (seeds × backbones × alignments × ``linear``/``ncm``) spends its time in small
per-batch operations, each run alone. :func:`run_batched` stacks the runs along a leading axis and steps them
together: at step ``k`` every run that still has a batch takes its ``k``-th batch (its own stream, its own
exposure order, :mod:`mepo_lab.batched.plan`), the alignments and heads update all runs with batched
operations (:mod:`~mepo_lab.batched.transforms`, :mod:`~mepo_lab.batched.heads`), and the runs whose schedule
has an evaluation after step ``k`` are evaluated together. Runs whose batch at step ``k`` is shorter (a task's
last batch) are stepped in their own group, so no batch is ever padded.

Each run's record equals the record of :func:`mepo_lab.protocols.online.run_gcl` with the same learner, stream
and ``train_seed`` (accuracies, curves, metrics; ``tests/test_batched.py``). What differs:
``wall_seconds`` is the program's time shared equally among its runs (``meta["batched"]`` has the total), a
record is written when the program ends (no mid-run checkpoint: a batched grid takes seconds), and callbacks get
``on_run_start``, ``on_eval``, ``on_task_end`` and ``on_run_end`` but not the per-batch ``on_batch`` or
``on_learner`` (the learner's state is handed back only at the end).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab.batched.heads import head_key, make_heads
from mepo_lab.batched.plan import Event, RunPlan, plan_for
from mepo_lab.batched.transforms import BatchedAlignment
from mepo_lab.config import GCLConfig
from mepo_lab.protocols import metrics
from mepo_lab.protocols.learner import Learner, logit_mask
from mepo_lab.protocols.online import _check, _emit, accuracies, checkpoint_path
from mepo_lab.protocols.results import RunResult

UNSUPPORTED_EVENTS = ("on_batch", "on_learner")


@dataclass
class FeatureJob:
    """One run for :func:`run_batched`: the arguments of :func:`~mepo_lab.protocols.online.run_gcl`."""

    learner: Learner
    train_x: torch.Tensor
    test_x: torch.Tensor
    test_y: np.ndarray
    stream: Any
    train_seed: int = 1
    result: RunResult | None = None
    out_path: str | Path | None = None
    callbacks: Sequence[Any] = ()


def _validate(job: FeatureJob, cfg: GCLConfig) -> GCLConfig:
    _check(cfg, job.learner, job.train_x, job.test_x, job.test_y, job.stream)
    if job.train_x.ndim != 2:
        raise ValueError(f"batched runs need 2-D feature tensors, got train_x of shape {tuple(job.train_x.shape)}")
    head_key(job.learner)
    for cb in job.callbacks:
        for event in UNSUPPORTED_EVENTS:
            if getattr(cb, event, None) is not None:
                raise ValueError(f"callback {type(cb).__name__} listens to {event}, which a batched program does "
                                 "not emit: run this job with run_gcl")
    return replace(cfg, train_mask=job.learner.train_mask or cfg.train_mask,
                   eval_mask=job.learner.eval_mask or cfg.eval_mask)


def _start(job: FeatureJob, cfg: GCLConfig, device: torch.device) -> RunResult:
    """Seed and set up the learner exactly as ``run_gcl`` does; the record with its metadata."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(job.train_seed)
        job.learner.setup(job.stream.n_classes, int(job.train_x.shape[1]), device)
    res = job.result or RunResult(method=job.learner.name)
    res.stream_seed, res.train_seed = job.stream.seed, job.train_seed
    res.meta = res.meta | {"learner": job.learner.describe(), "gcl": asdict(cfg)}
    return res


def _record(res: RunResult, event: Event, acc: float, cls_acc: np.ndarray, plan: RunPlan) -> None:
    """Append one evaluation to the record, as ``run_gcl``'s ``record_eval`` does."""
    if event.kind == "anytime":
        res.anytime_samples.append(event.samples)
        res.anytime_points.append(event.point)
        res.anytime_acc.append(acc)
        res.anytime_class_acc.append(cls_acc.tolist())
        res.anytime_n_seen.append(event.n_seen)
    else:
        res.task_end_samples.append(event.samples)
        res.task_end_acc.append(acc)
        res.task_end_n_seen.append(event.n_seen)
        res.class_acc.append(cls_acc.tolist())
    res.exposed_classes = list(plan.order[:event.n_seen])


def _set_key(job: FeatureJob) -> tuple:
    """Jobs with the same train/test features and test labels share gathers and cached evaluations."""
    labels = hashlib.sha1(np.ascontiguousarray(job.test_y, np.int64).tobytes()).hexdigest()
    return tuple((x.data_ptr(), tuple(x.shape), tuple(x.stride()), x.dtype, x.device) for x in (job.train_x, job.test_x)) \
        + (labels,)


class _Program:
    """Runs that share a head type, hyper-parameters, classes, feature width and protocol, stepped together."""

    def __init__(self, jobs: list[FeatureJob], results: list[RunResult], cfg: GCLConfig, device: torch.device,
                 max_eval_elements: int) -> None:
        self.jobs, self.results, self.cfg, self.device = jobs, results, cfg, device
        self.plans = [plan_for(j.stream, cfg) for j in jobs]
        self.due: dict[int, list[tuple[int, Event]]] = {}  # step -> every run's evaluations after it
        for r, plan in enumerate(self.plans):
            for k, events in plan.events.items():
                self.due.setdefault(k, []).extend((r, e) for e in events)
        self.n_classes, self.max_eval = jobs[0].stream.n_classes, max_eval_elements
        self.heads = make_heads([j.learner for j in jobs])
        self.align = BatchedAlignment([getattr(j.learner, "transform", None) for j in jobs],
                                      int(jobs[0].train_x.shape[1]), device)
        sets: dict[int, int] = {}
        self.set_of = np.array([sets.setdefault(_set_key(j), len(sets)) for j in jobs])
        self.train_sets = [None] * len(sets)
        self.test_sets = [None] * len(sets)
        for j, s in zip(jobs, self.set_of):
            self.train_sets[s] = j.train_x.to(device)
            self.test_sets[s] = j.test_x.to(device)
        self.test_y = [np.asarray(j.test_y, np.int64) for j in jobs]
        self._rows_cache: dict[tuple, tuple[tuple, torch.Tensor]] = {}
        self._stack()

    def _stack(self) -> None:
        """Per step ``k``: rows ``(K, R, bs)``, labels, batch sizes (0 = run finished) and exposed classes."""
        bs, r_n = self.cfg.batch_size, len(self.jobs)
        self.n_steps = max(len(p) for p in self.plans)
        self.sizes = np.zeros((self.n_steps, r_n), np.int64)
        rows = np.zeros((self.n_steps, r_n, bs), np.int64)
        labels = np.zeros((self.n_steps, r_n, bs), np.int64)
        self.n_seen = np.zeros((self.n_steps, r_n), np.int64)
        for r, plan in enumerate(self.plans):
            k = len(plan)
            self.sizes[:k, r] = plan.batch_sizes
            self.n_seen[:k, r] = plan.n_seen
            for step, (rw, lb) in enumerate(zip(plan.rows, plan.labels)):
                rows[step, r, :len(rw)], labels[step, r, :len(lb)] = rw, lb
        # one table of every feature set's training rows, so a step's batches are a single index_select
        offsets = np.cumsum([0] + [len(t) for t in self.train_sets[:-1]])
        self.train_flat = self.train_sets[0] if len(self.train_sets) == 1 else torch.cat(self.train_sets)
        rows += offsets[self.set_of][None, :, None]
        self.rows, self.labels = torch.from_numpy(rows).to(self.device), torch.from_numpy(labels).to(self.device)
        self.n_seen_t = torch.from_numpy(self.n_seen).to(self.device)

    def step(self, k: int) -> None:
        """Every run with a batch at step ``k`` learns from it (one group per batch size)."""
        sizes = self.sizes[k]
        for b in np.unique(sizes[sizes > 0]):
            pos = np.flatnonzero(sizes == b)
            sel = slice(None) if len(pos) == len(sizes) else torch.from_numpy(pos)
            index = self.rows[k, sel, :b]
            x = self.train_flat.index_select(0, index.reshape(-1)).view(*index.shape, -1)
            g = self.align.train(pos, x)
            self.heads.observe(pos, g, self.labels[k, sel, :b], self.n_seen_t[k, sel], self.cfg.train_mask,
                               self.cfg.online_iter)

    def events(self, k: int) -> None:
        """Evaluate the runs whose schedule has evaluations after step ``k``, anytime ones first."""
        due = self.due.get(k, ())
        for kind in ("anytime", "task"):
            todo = [(r, e) for r, e in due if e.kind == kind]
            if todo:
                self._evaluate(todo)

    def _evaluate(self, todo: list[tuple[int, Event]]) -> None:
        """Accuracy of each run on the test samples of its exposed classes (``online.evaluate``), runs batched."""
        d = self.train_sets[0].shape[1]
        keeps, empty = [], []
        for r, e in todo:
            mapped = self.plans[r].exposed(e.n_seen)[self.test_y[r]]
            keep = np.flatnonzero(mapped >= 0)
            (keeps if len(keep) else empty).append((r, e, keep, mapped[keep]))
        for r, e, _, _ in empty:
            self._finish_eval(r, e, float("nan"), np.zeros(self.n_classes))
        per_block = max(1, self.max_eval // max(1, max((len(k) for _, _, k, _ in keeps), default=1) * d))
        for i in range(0, len(keeps), per_block):
            self._evaluate_block(keeps[i:i + per_block])

    def _evaluate_block(self, block: list) -> None:
        """Runs sharing features and exposure score one cached block of test rows (a broadcast view, no copy);
        official runs align it chunk by chunk (cached in :class:`BatchedAlignment`)."""
        chunked = self.align.chunk_dependent(np.array([r for r, _, _, _ in block]))
        shared: dict[tuple, list] = {}
        for item, c in zip(block, chunked):
            r, e = item[0], item[1]
            shared.setdefault((int(self.set_of[r]), id(self.plans[r]), e.n_seen, bool(c)), []).append(item)
        for (s, plan, n_seen, c), items in shared.items():
            keep = items[0][2]
            x = self._test_rows(s, plan, n_seen, keep)
            if c:
                for r, e, _, y in items:
                    g = self.align.evaluate_chunked(r, s, keep, x, self.cfg.eval_batch_size)
                    self._score(r, e, self.heads.logits(np.array([r]), g[None])[0], y)
                continue
            pos = np.array([r for r, _, _, _ in items])
            z = self.heads.logits(pos, self.align.evaluate(pos, x.expand(len(pos), *x.shape)))
            for i, (r, e, _, y) in enumerate(items):
                self._score(r, e, z[i], y)

    def _test_rows(self, s: int, plan: int, n_seen: int, keep: np.ndarray) -> torch.Tensor:
        """Test features of the exposed classes, gathered once per feature set and exposure (the latest kept)."""
        key = (s, plan, n_seen)
        cached = self._rows_cache.get((s, plan))
        if cached is None or cached[0] != key:
            cached = (key, self.test_sets[s][torch.from_numpy(keep).to(self.device)])
            self._rows_cache[(s, plan)] = cached
        return cached[1]

    def _score(self, r: int, e: Event, z: torch.Tensor, y: np.ndarray) -> None:
        if self.cfg.eval_mask == "seen":
            z = z + logit_mask("seen", self.n_classes, e.n_seen, device=self.device)
        acc, cls_acc = accuracies(z.argmax(1).cpu().numpy(), y, self.n_classes)
        self._finish_eval(r, e, acc, cls_acc)

    def _finish_eval(self, r: int, e: Event, acc: float, cls_acc: np.ndarray) -> None:
        res = self.results[r]
        _record(res, e, acc, cls_acc, self.plans[r])
        if e.kind == "anytime":
            _emit(self.jobs[r].callbacks, "on_eval", res)
        else:
            _emit(self.jobs[r].callbacks, "on_task_end", res, e.task)

    def run(self, bar) -> None:
        self.events(-1)
        for k in range(self.n_steps):
            self.step(k)
            self.events(k)
            bar.update(int(self.sizes[k].sum()))
        self.heads.write_back()
        self.align.write_back()


def _groups(jobs: list[FeatureJob], cfgs: list[GCLConfig]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, (job, cfg) in enumerate(zip(jobs, cfgs)):
        key = (head_key(job.learner), job.stream.n_classes, int(job.train_x.shape[1]), job.train_x.dtype,
               tuple(sorted(asdict(cfg).items())))
        groups.setdefault(key, []).append(i)
    return groups


def run_batched(jobs: Sequence[FeatureJob], cfg: GCLConfig | None = None, *, device: str | torch.device = "cpu",
                progress: bool = True, max_eval_elements: int = 1 << 26) -> list[RunResult]:
    """Run every job (a ``linear`` or ``ncm`` learner on cached features) and return their records, in order.

    Jobs are grouped into programs by head type and hyper-parameters, class count and feature width; each program
    steps its runs in lockstep (module docstring). ``max_eval_elements`` bounds the padded test features gathered
    for one batched evaluation (runs × rows × width). Raises ``ValueError`` for a job ``run_gcl`` would refuse, a
    learner or transform that is not batched, or a callback that needs per-batch events.
    """
    cfg = GCLConfig() if cfg is None else cfg
    jobs, device, start = list(jobs), torch.device(device), time.perf_counter()
    if not jobs:
        return []
    cfgs = [_validate(job, cfg) for job in jobs]
    results = [_start(job, c, device) for job, c in zip(jobs, cfgs)]
    for job, res in zip(jobs, results):
        _emit(job.callbacks, "on_run_start", res)
    total = sum(len(job.stream) for job in jobs)
    with tqdm(total=total, desc=f"GCL, {len(jobs)} runs batched", disable=not progress, mininterval=0.5) as bar:
        for members in _groups(jobs, cfgs).values():
            program = _Program([jobs[i] for i in members], [results[i] for i in members], cfgs[members[0]],
                               device, max_eval_elements)
            program.run(bar)
    seconds = time.perf_counter() - start
    for job, res in zip(jobs, results):
        res.metrics = metrics.summarize(res.anytime_acc or [float("nan")], res.task_end_acc, np.asarray(res.class_acc))
        res.finished, res.wall_seconds = True, seconds / len(jobs)
        res.meta = res.meta | {"batched": {"runs": len(jobs), "seconds": seconds}}
        if job.out_path is not None:
            res.save(job.out_path)
            checkpoint_path(job.out_path).unlink(missing_ok=True)
        _emit(job.callbacks, "on_run_end", res)
    return results
