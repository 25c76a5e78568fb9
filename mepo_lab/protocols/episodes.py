"""Few-shot episodes: N-way K-shot sampling, per-episode accuracy and the 95 % interval of the meta-test report.

An N-way K-shot episode with Q queries per class draws N distinct classes ``c_0 … c_{N−1}`` and, for every
class ``c_i``, K + Q distinct images: the first K form the support set, the other Q the query set, both labelled
with the *local* label ``i``. The meta-test score is the mean over episodes of the query accuracy, reported as
``mean ± 1.96 · std / √n`` (population std over the n episodes).

Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning" (PURER), CVPR 2023,
arXiv 2303.11183; official code Egg-Hu/PURER: ``tool.py`` (``generate_random_task_data_fromDI``: classes
drawn without replacement, K + Q images per class without replacement, support and query grouped class by
class; ``compute_confidence_interval``), ``main.py`` (600 test episodes, 15 queries per class).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mepo_lab.protocols.transfer import to_input

Indices = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]
AdaptPredict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]


@dataclass
class Episode:
    """One episode: ``support_x`` (N·K, …), ``support_y`` (N·K,) local labels in ``0..N−1`` grouped class by
    class (``[0]*K + [1]*K + …``), ``query_x`` (N·Q, …) and ``query_y`` likewise, ``classes`` the N original
    class ids (local label ``i`` is class ``classes[i]``). ``x`` is whatever was indexed: uint8 numpy arrays or
    float tensors."""

    support_x: Any
    support_y: np.ndarray
    query_x: Any
    query_y: np.ndarray
    classes: list[int]

    @property
    def n_way(self) -> int:
        return len(self.classes)


def _check_targets(targets: np.ndarray) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be a 1-D integer array of class ids, got {targets.dtype} {targets.shape}")
    return targets


def _check_sizes(targets: np.ndarray, n_way: int, k_shot: int, q_query: int) -> tuple[np.ndarray, np.ndarray]:
    if n_way < 2:
        raise ValueError(f"n_way must be at least 2 (an episode needs two classes), got {n_way}")
    if k_shot < 1:
        raise ValueError(f"k_shot must be at least 1, got {k_shot}")
    if q_query < 1:
        raise ValueError(f"q_query must be at least 1, got {q_query}")
    present, counts = np.unique(targets, return_counts=True)
    if n_way > len(present):
        raise ValueError(f"n_way={n_way}, but only {len(present)} classes are present in targets: lower n_way")
    short = counts < k_shot + q_query
    if short.any():
        c, n = int(present[short][0]), int(counts[short][0])
        raise ValueError(f"class {c} has only {n} images, but k_shot + q_query = {k_shot} + {q_query} = "
                         f"{k_shot + q_query} are needed per class: lower k_shot or q_query, or drop the class")
    return present, counts


def sample_episode(targets: np.ndarray, n_way: int, k_shot: int, q_query: int,
                   rng: np.random.Generator) -> Indices:
    """Indices of one N-way K-shot episode: ``(support_idx, support_y, query_idx, query_y, classes)``.

    ``classes = rng.choice(unique(targets), N, replace=False)``; for class ``classes[i]`` a random
    permutation of its images gives K support and Q query indices (``K + Q`` distinct images, so support ∩ query
    = ∅); ``support_y = [i]*K`` and ``query_y = [i]*Q`` for ``i = 0..N−1``, concatenated in the order of
    ``classes``. Every class present must have at least K + Q images (checked up front, so the error does not
    depend on the draw). Official: PURER ``tool.py::generate_random_task_data_fromDI`` (Hu et al., CVPR 2023).
    """
    targets = _check_targets(targets)
    present, _ = _check_sizes(targets, n_way, k_shot, q_query)
    classes = [int(c) for c in rng.choice(present, size=n_way, replace=False)]
    support, query = [], []
    for c in classes:
        pool = np.flatnonzero(targets == c)
        pick = pool[rng.permutation(len(pool))[:k_shot + q_query]]
        support.append(pick[:k_shot])
        query.append(pick[k_shot:])
    local = np.arange(n_way, dtype=np.int64)
    return (np.concatenate(support), np.repeat(local, k_shot), np.concatenate(query), np.repeat(local, q_query),
            classes)


def _take(x: Any, index: np.ndarray) -> Any:
    return x[torch.as_tensor(index, device=x.device)] if isinstance(x, torch.Tensor) else x[index]


def episode_from(images: Any, targets: np.ndarray, n_way: int, k_shot: int, q_query: int,
                 rng: np.random.Generator) -> Episode:
    """:func:`sample_episode` applied to ``images`` (numpy array or tensor, first axis aligned with
    ``targets``): ``support_x = images[support_idx]``, ``query_x = images[query_idx]``."""
    if len(images) != len(np.asarray(targets)):
        raise ValueError(f"{len(images)} images for {len(np.asarray(targets))} targets: pass aligned arrays")
    s_idx, s_y, q_idx, q_y, classes = sample_episode(targets, n_way, k_shot, q_query, rng)
    return Episode(_take(images, s_idx), s_y, _take(images, q_idx), q_y, classes)


def confidence_interval(accs) -> tuple[float, float]:
    """``(mean, half_width)`` of the 95 % interval ``ā ± 1.96 · σ / √n`` with σ the population std
    (``np.std``, ddof 0) of the n per-episode accuracies. Official: PURER ``tool.py::compute_confidence_interval``.
    """
    a = np.asarray(accs, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("confidence_interval needs at least one accuracy, got none")
    return float(a.mean()), float(1.96 * a.std() / np.sqrt(a.size))


def _predicted_labels(out: Any, n_query: int, n_way: int) -> np.ndarray:
    out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    if out.shape == (n_query, n_way):
        return out.argmax(1)
    if out.shape == (n_query,):
        return out.astype(np.int64)
    raise ValueError(f"adapt_predict must return logits ({n_query}, {n_way}) or labels ({n_query},), got shape "
                     f"{out.shape}")


def evaluate_episodes(adapt_predict: AdaptPredict, images: np.ndarray, targets: np.ndarray, n_way: int,
                      k_shot: int, q_query: int = 15, n_episodes: int = 600, seed: int = 0) -> dict:
    """Meta-test: ``n_episodes`` episodes from ``np.random.default_rng(seed)``; per episode
    ``out = adapt_predict(support_x, support_y, query_x)`` with ``x = images / 255`` float32 in [0, 1]
    (:func:`~mepo_lab.protocols.transfer.to_input`) and ``support_y`` an int64 tensor, ``out`` logits
    (N·Q, N) or predicted labels (N·Q,), and ``acc = mean_j 1[pred_j = query_y_j]``.

    Returns ``{"mean", "ci95", "accs"}`` (fractions; :func:`confidence_interval`). No gradient mode is set:
    MAML-style ``adapt_predict`` differentiate inside. Official: PURER ``main.py`` (600 episodes, 15 queries).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be at least 1, got {n_episodes}")
    targets = _check_targets(targets)
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images for {len(targets)} targets: pass aligned arrays")
    _check_sizes(targets, n_way, k_shot, q_query)
    rng, accs = np.random.default_rng(seed), []
    for _ in range(n_episodes):
        s_idx, s_y, q_idx, q_y, _classes = sample_episode(targets, n_way, k_shot, q_query, rng)
        out = adapt_predict(to_input(images[s_idx]), torch.from_numpy(s_y), to_input(images[q_idx]))
        accs.append(float((_predicted_labels(out, len(q_y), n_way) == q_y).mean()))
    mean, half = confidence_interval(accs)
    return {"mean": mean, "ci95": half, "accs": accs}
