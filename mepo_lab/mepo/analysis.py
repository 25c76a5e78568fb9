"""Measurements behind the covariance-alignment lessons (``docs/reference/mepo.md#q1`` to ``#q4``,
``docs/reference/checks.md#c8`` to ``#c12``).

* :func:`alignment_error` — does ``F̂ = whiten_color(F)`` have the target covariance?
  ``err = ‖cov(F̂) − Σ‖_F / ‖Σ‖_F`` for a random batch of size B.
* :func:`batch_dependence` — the cosine between the aligned features of one sample placed in two
  different random batches (1.0 means the prediction ignores its batch-mates).
"""
from __future__ import annotations

import warnings

import numpy as np

from mepo_lab.mepo.whitening import align_features, whiten_color


def alignment_error(feats: np.ndarray, target_cov: np.ndarray, mode: str, batch_size: int,
                    n_batches: int = 3, seed: int = 0) -> float:
    """Mean relative Frobenius error of ``cov(whiten_color(batch))`` against ``target_cov``.

    Both modes estimate the source statistics from the batch itself here, so the curve against B
    shows the formula (official misses Σ at any B) and the estimation (rank ≤ B − 1) separately.
    """
    rng, feats = np.random.default_rng(seed), np.asarray(feats, np.float64)
    target = np.asarray(target_cov, np.float64)
    errs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_batches):
            batch = feats[rng.choice(len(feats), size=min(batch_size, len(feats)), replace=False)]
            out = whiten_color(batch, target, mode=mode)
            errs.append(np.linalg.norm(np.cov(out, rowvar=False) - target) / np.linalg.norm(target))
    return float(np.mean(errs))


def batch_dependence(feats: np.ndarray, target_cov: np.ndarray, mode: str, batch_size: int = 32,
                     alpha: float = 1.0, trials: int = 20, seed: int = 0) -> float:
    """Mean cosine between the aligned feature of a sample in two random batches of ``batch_size``.

    ``corrected`` uses the statistics of all of ``feats`` (a running estimate, as in the GCL runner),
    so its answer is 1.0 by construction; ``official`` uses each batch's own statistics.
    """
    rng, feats = np.random.default_rng(seed), np.asarray(feats, np.float64)
    stats = {}
    if mode == "corrected":
        stats = {"source_mean": feats.mean(0), "source_cov": np.cov(feats, rowvar=False)}
    cosines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(trials):
            i = rng.integers(len(feats))
            outs = []
            for _ in range(2):
                others = rng.choice(np.delete(np.arange(len(feats)), i), size=batch_size - 1, replace=False)
                batch = feats[np.concatenate([[i], others])]
                outs.append(align_features(batch, target_cov, alpha, mode=mode, **stats)[0])
            a, b = outs
            cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return float(np.mean(cosines))
