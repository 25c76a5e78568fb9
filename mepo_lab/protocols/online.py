"""The online GCL runner: one pass over a Si-Blurry stream with anytime evaluation.

Protocol (``docs/reference/si_blurry.md#training``, ``#evaluation``, ``docs/reference/metrics.md``; the MISA/MePo trainer):

* tasks in order; each task's samples in stream order, in batches of ``batch_size`` new samples
  (a task's last batch may be smaller; batches never straddle tasks);
* labels are remapped to exposure order (unit ``k`` = ``k``-th class seen) as each batch arrives;
  the learner then makes ``online_iter`` updates on that batch;
* after a batch, if ``samples_seen + len(batch) > next_eval`` the model is evaluated on every test
  sample of the exposed classes and ``next_eval += eval_period`` (with 32-sample batches and a period
  of 1000: evaluations at 992, 1984, 2976, … samples);
* after each task, one more evaluation gives ``task_end_acc[t]`` and the per-class accuracies
  ``class_acc[t, j]`` (``j`` in exposure order, 0 for classes not exposed yet);
* A_auc, A_last, A_avg and F_last follow from those (:mod:`mepo_lab.protocols.metrics`).

Callbacks are objects with any of ``on_run_start(result)``, ``on_batch(result, info)``,
``on_eval(result)``, ``on_task_end(result, task)``, ``on_run_end(result)``; they drive live plots.
``on_learner(learner)`` comes once, right after the learner is set up (probes such as feature drift keep it).
The run record is written atomically after every evaluation when ``out_path`` is given.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.config import GCLConfig
from mepo_lab.loading import prefetch, rows
from mepo_lab.protocols import metrics
from mepo_lab.protocols.eval_batch import EvalBatch
from mepo_lab.protocols.learner import MASKS, Learner, StepContext, logit_mask
from mepo_lab.protocols.results import RunResult


class _Exposure:
    """Maps original labels to exposure order as classes first appear (vectorised per batch)."""

    def __init__(self, n_classes: int) -> None:
        self.index = np.full(n_classes, -1, np.int64)
        self.order: list[int] = []

    def update(self, y: np.ndarray) -> np.ndarray:
        uniq, first = np.unique(y, return_index=True)
        new = uniq[self.index[uniq] < 0]
        if len(new):
            new = new[np.argsort(first[self.index[uniq] < 0], kind="stable")]
            self.index[new] = np.arange(len(self.order), len(self.order) + len(new))
            self.order.extend(new.tolist())
        return self.index[y]


def _is_uint8(x) -> bool:
    return x.dtype in (torch.uint8, np.uint8)


def _check(cfg: GCLConfig, learner: Learner, train_x, test_x, test_y, stream) -> None:
    for name in ("batch_size", "online_iter", "eval_period", "eval_batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"gcl.{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.train_mask not in MASKS:
        raise ValueError(f"unknown train_mask {cfg.train_mask!r}: choose one of {', '.join(MASKS)}")
    if cfg.eval_mask not in ("none", "seen"):
        raise ValueError(f"unknown eval_mask {cfg.eval_mask!r}: choose 'none' or 'seen'")
    if learner.eval_mask not in (None, "none", "seen"):
        raise ValueError(f"learner {learner.name!r} has eval_mask {learner.eval_mask!r}: use 'none' or 'seen'")
    if len(stream.labels) != len(train_x):
        raise ValueError(f"the stream was built on {len(stream.labels)} labels but train_x has {len(train_x)} "
                         "rows: build the stream from the same training set")
    if tuple(test_x.shape[1:]) != tuple(train_x.shape[1:]) or len(test_x) != len(test_y):
        raise ValueError(f"test_x {tuple(test_x.shape)} / test_y ({len(test_y)}) do not match train_x "
                         f"{tuple(train_x.shape)}: use the same backbone and one label per test sample")
    if learner.input_kind == "features" and _is_uint8(train_x):
        raise ValueError(f"learner {learner.name!r} expects features but got uint8 images: extract features first")
    if learner.input_kind == "images" and not _is_uint8(train_x):
        raise ValueError(f"learner {learner.name!r} trains on uint8 images, got {train_x.dtype} features")


@torch.no_grad()
def evaluate(learner: Learner, test_x: torch.Tensor, test_y: np.ndarray, exposure: _Exposure,
             n_classes: int, cfg: GCLConfig, device: torch.device, batch: EvalBatch | None = None
             ) -> tuple[float, np.ndarray]:
    """Accuracy on the test samples of exposed classes, and per-class accuracy in exposure order.

    ``class_acc[j] = correct_j / (count_j + 1e-5)`` as the reference computes it (0 with no samples);
    the overall accuracy is NaN when no class is exposed yet. ``batch`` sizes the passes
    (:class:`mepo_lab.protocols.eval_batch.EvalBatch`; built for this call when not given).
    """
    mapped = exposure.index[test_y]
    keep = np.flatnonzero(mapped >= 0)
    if len(keep) == 0:
        return float("nan"), np.zeros(n_classes)
    n_seen, y = len(exposure.order), mapped[keep]
    mask = logit_mask("seen", n_classes, n_seen, device=device) if cfg.eval_mask == "seen" else None
    batch = EvalBatch(learner, cfg, device) if batch is None else batch
    while True:
        try:
            pred = _predict(learner, test_x, keep, batch.size, mask, device)
            break
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if not batch.halve():  # a configured size: the caller's oom_guard names the fix
                raise
    return accuracies(pred, y, n_classes)


def _predict(learner: Learner, test_x: torch.Tensor, keep: np.ndarray, chunk: int, mask: torch.Tensor | None,
             device: torch.device) -> np.ndarray:
    """Predicted units of the test rows ``keep``, ``chunk`` rows per pass (prefetched on a GPU)."""
    preds = []
    starts = range(0, len(keep), chunk)
    chunks = prefetch(lambda s: rows(test_x, keep[s:s + chunk]), starts, device)
    for s, x in zip(starts, chunks):
        z = learner.eval_logits(x, keep[s:s + chunk])
        preds.append((z if mask is None else z + mask).argmax(1).cpu())
    return torch.cat(preds).numpy()


def accuracies(pred: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[float, np.ndarray]:
    """Overall accuracy and ``class_acc[j] = correct_j / (count_j + 1e-5)`` of predictions ``pred`` for units ``y``."""
    correct = pred == y
    counts = np.bincount(y, minlength=n_classes)
    hits = np.bincount(y[correct], minlength=n_classes)
    return float(correct.mean()), hits / (counts + 1e-5)


def _emit(callbacks: Iterable[Any], event: str, *args) -> None:
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(*args)


def checkpoint_path(out_path: str | Path) -> Path:
    """Where a run recorded at ``out_path`` keeps its resume state (``<name>.ckpt.pt``)."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".ckpt.pt")


class _RunState:
    """The runner's position in the stream and everything needed to continue from it."""

    def __init__(self, n_classes: int, eval_period: int) -> None:
        self.exposure, self.samples, self.next_eval = _Exposure(n_classes), 0, eval_period
        self.task, self.b0 = 0, 0

    def save(self, path: Path, learner: Learner, res: RunResult, fingerprint: str) -> None:
        state = {"fingerprint": fingerprint, "task": self.task, "b0": self.b0, "samples": self.samples, "next_eval": self.next_eval,
                 "exposure": (self.exposure.index.copy(), list(self.exposure.order)),
                 "learner": learner.state_dict(), "rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                 # JSON text (numpy scalars as numbers): pickling the nested float lists is slow
                 "result_json": json.dumps(res.as_dict(), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))}
        paths.atomic_write(path, lambda h: torch.save(state, h))

    def load(self, path: Path, learner: Learner, fingerprint: str) -> RunResult | None:
        """Restore the state saved at ``path``; ``None`` (and a warning) if it belongs to another run."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != fingerprint:
            warnings.warn(f"{path} was saved by a run with other settings: starting this run from scratch",
                          stacklevel=3)
            return None
        self.task, self.b0, self.samples, self.next_eval = state["task"], state["b0"], state["samples"], state["next_eval"]
        self.exposure.index, self.exposure.order = state["exposure"][0].copy(), list(state["exposure"][1])
        learner.load_state_dict(state["learner"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return RunResult(**(json.loads(state["result_json"]) if "result_json" in state else state["result"]))


def run_gcl(learner: Learner, train_x: torch.Tensor, test_x: torch.Tensor, test_y: np.ndarray, stream,
            cfg: GCLConfig | None = None, *, train_seed: int = 1, result: RunResult | None = None,
            callbacks: Iterable[Any] = (), out_path: str | Path | None = None, device: str | torch.device = "cpu",
            progress: bool = True, resume: bool = False) -> RunResult:
    """Run ``learner`` online over ``stream`` (built on the training labels) and return the record.

    ``train_x``/``test_x`` are feature tensors (float) or uint8 images, matching ``learner.input_kind``;
    ``test_y`` holds the original test labels. ``train_seed`` seeds the learner's initialisation and
    any randomness in its updates, separately from the stream's seed; the caller's global torch RNG is
    left untouched. With ``out_path``, the record is rewritten after every evaluation and a resume state
    (:func:`checkpoint_path`) is kept until the run finishes; ``resume=True`` continues a killed run from
    its last evaluation and gives the results of an uninterrupted one.
    """
    cfg = GCLConfig() if cfg is None else cfg
    _check(cfg, learner, train_x, test_x, test_y, stream)
    # a method's own masks (MISA: batch mask, no eval mask; L2P: batch / seen) win over the config's
    cfg = replace(cfg, train_mask=learner.train_mask or cfg.train_mask, eval_mask=learner.eval_mask or cfg.eval_mask)
    device, callbacks = torch.device(device), list(callbacks)
    n_classes, test_y = stream.n_classes, np.asarray(test_y, np.int64)
    ckpt = checkpoint_path(out_path) if out_path is not None else None
    fingerprint = json.dumps([learner.describe(), asdict(cfg), stream.seed, train_seed, len(stream), n_classes,
                              len(test_y)], sort_keys=True, default=str)
    st, start = _RunState(n_classes, cfg.eval_period), time.perf_counter()
    res = result or RunResult(method=learner.name)
    res.stream_seed, res.train_seed = stream.seed, train_seed
    res.meta = res.meta | {"learner": learner.describe(), "gcl": asdict(cfg)}
    bar = tqdm(total=len(stream), desc=f"GCL {learner.name}", disable=not progress, mininterval=0.5)

    def record_eval(task: int | None = None) -> None:
        acc, cls_acc = evaluate(learner, test_x, test_y, st.exposure, n_classes, cfg, device, eval_batch)
        if task is None:
            res.anytime_samples.append(st.samples)
            res.anytime_points.append(st.next_eval)
            res.anytime_acc.append(acc)
            res.anytime_class_acc.append(cls_acc.tolist())
            res.anytime_n_seen.append(len(st.exposure.order))
        else:
            res.task_end_samples.append(st.samples)
            res.task_end_acc.append(acc)
            res.task_end_n_seen.append(len(st.exposure.order))
            res.class_acc.append(cls_acc.tolist())
        res.exposed_classes = list(st.exposure.order)
        res.wall_seconds = elapsed + time.perf_counter() - start

    def persist() -> None:
        if out_path is not None:
            res.save(out_path)
            st.save(ckpt, learner, res, fingerprint)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(train_seed)
        learner.setup(n_classes, int(train_x.shape[1]) if train_x.ndim == 2 else 0, device)
        eval_batch = EvalBatch(learner, cfg, device)  # after setup: the free memory once the model is placed
        _emit(callbacks, "on_learner", learner)
        elapsed = 0.0
        restored = st.load(ckpt, learner, fingerprint) if resume and ckpt is not None and ckpt.exists() else None
        if restored is not None:
            res, elapsed = restored, restored.wall_seconds
            bar.update(st.samples)
        else:
            st = _RunState(n_classes, cfg.eval_period)
        _emit(callbacks, "on_run_start", res)
        for task in range(st.task, len(stream.task_indices)):
            indices = stream.task_indices[task]
            learner.begin_task(task)
            starts = range(st.b0 if task == st.task else 0, len(indices), cfg.batch_size)
            inputs = prefetch(lambda b, ix=indices: rows(train_x, ix[b:b + cfg.batch_size]), starts, device)
            for b0, x in zip(starts, inputs):
                batch = indices[b0:b0 + cfg.batch_size]
                y = torch.from_numpy(st.exposure.update(stream.labels[batch])).to(device)
                ctx = StepContext(len(st.exposure.order), cfg.online_iter, cfg.train_mask)
                info = learner.observe(x, y, ctx)
                st.samples += len(batch)
                bar.update(len(batch))
                _emit(callbacks, "on_batch", res, info)
                if st.samples + len(batch) > st.next_eval:
                    record_eval()
                    st.next_eval += cfg.eval_period
                    st.task, st.b0 = task, b0 + cfg.batch_size
                    persist()
                    _emit(callbacks, "on_eval", res)
            record_eval(task)
            st.task, st.b0 = task + 1, 0
            persist()
            _emit(callbacks, "on_task_end", res, task)
    bar.close()
    # A stream shorter than one eval period has no anytime point: A_auc is then undefined (NaN).
    res.metrics = metrics.summarize(res.anytime_acc or [float("nan")], res.task_end_acc, np.asarray(res.class_acc))
    res.finished, res.wall_seconds = True, elapsed + time.perf_counter() - start
    if getattr(learner, "passes", None) is not None:  # backbone passes by purpose (image learners)
        res.meta = res.meta | {"passes": dict(learner.passes)}
    if out_path is not None:
        res.save(out_path)
        ckpt.unlink(missing_ok=True)
    _emit(callbacks, "on_run_end", res)
    return res
