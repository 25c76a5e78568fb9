"""Measurements behind the covariance-alignment lessons (``docs/reference/mepo.md#q1`` to ``#q4``,
``docs/reference/checks.md#c8`` to ``#c12``).

* :func:`alignment_error` — does ``F̂ = whiten_color(F)`` have the target covariance?
  ``err = ‖cov(F̂) − Σ‖_F / ‖Σ‖_F`` for a random batch of size B.
* :func:`batch_dependence` — the cosine between the aligned features of one sample placed in two
  different random batches (1.0 means the prediction ignores its batch-mates).
* :func:`mode_agreement` — the cosine between the official and the corrected ``F_out`` of the same samples.
* :func:`covariance_difference` — how far two covariances are apart, as matrices and as spectra.
* :func:`gaussian_alignment_table` — the same error on Gaussian features whose covariance is known, for
  sources of growing anisotropy: the official formula's plateau depends on the source spectrum, so the
  numbers measured on one backbone's features do not carry over. ``python -m mepo_lab.mepo.analysis``
  prints it.
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


def mode_agreement(feats: np.ndarray, target_cov: np.ndarray, alpha: float, batch_size: int = 32,
                   trials: int = 20, seed: int = 0) -> float:
    """Mean cosine between the official and the corrected ``F_out`` of the same samples in random batches.

    The corrected mode uses the statistics of all of ``feats`` (a running estimate, as in the runner). Near 1
    the two formulas give the same features downstream, whatever their difference in ``cov(F̂)``.
    """
    rng, feats = np.random.default_rng(seed), np.asarray(feats, np.float64)
    running = {"source_mean": feats.mean(0), "source_cov": np.cov(feats, rowvar=False)}
    cosines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(trials):
            x = feats[rng.choice(len(feats), min(batch_size, len(feats)), replace=False)]
            a = align_features(x, target_cov, alpha, mode="official")
            b = align_features(x, target_cov, alpha, mode="corrected", **running)
            cosines.append(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    return float(np.mean(cosines))


def covariance_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """``{"frobenius": ‖b − a‖_F / ‖a‖_F, "spectrum": ‖λ(b) − λ(a)‖ / ‖λ(a)‖}`` (eigenvalues sorted): how much a
    refinement moved the prototype geometry, with and without its directions."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ev_a, ev_b = (np.sort(np.linalg.eigvalsh(m))[::-1] for m in (a, b))
    return {"frobenius": float(np.linalg.norm(b - a) / np.linalg.norm(a)),
            "spectrum": float(np.linalg.norm(ev_b - ev_a) / np.linalg.norm(ev_a))}


def random_covariance(eigenvalues: np.ndarray, seed: int = 0) -> np.ndarray:
    """``Q diag(λ) Qᵀ`` with ``Q`` a random rotation (QR of a Gaussian matrix): a covariance with spectrum ``λ``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return (q * np.asarray(eigenvalues, np.float64)) @ q.T


def gaussian_alignment_table(dim: int = 128, conditions: tuple[float, ...] = (1.0, 100.0, 10_000.0),
                             batch_sizes: tuple[int, ...] = (32, 128, 512, 4096), n: int = 20_000,
                             seed: int = 0) -> list[dict]:
    """:func:`alignment_error` on ``n`` samples of ``N(0, C_src)`` for each source condition number ``κ``.

    ``C_src`` has eigenvalues log-spaced over ``[κ^-1/2, κ^1/2]`` (``κ = 1``: isotropic) in a random basis; the
    target ``Σ`` has eigenvalues log-spaced over ``[1e-2, 1]`` (a decaying spectrum, like a prototype
    covariance). Rows: ``{"condition", "mode", "batch_size", "error"}``. Rescaling ``C_src`` changes nothing:
    the official ``cov(F̂) = Ltᵀ L⁻ᵀ C L⁻¹ Lt`` only sees ``C`` through ``L⁻ᵀ C L⁻¹``.
    """
    target = random_covariance(np.geomspace(1e-2, 1.0, dim), seed)
    rows = []
    for k, kappa in enumerate(conditions):
        source = random_covariance(np.geomspace(kappa ** -0.5, kappa ** 0.5, dim), seed + 1 + k)
        feats = np.random.default_rng(seed + 100 + k).standard_normal((n, dim)) @ np.linalg.cholesky(source).T
        for mode in ("official", "corrected"):
            for b in batch_sizes:
                rows.append({"condition": kappa, "mode": mode, "batch_size": b,
                             "error": alignment_error(feats, target, mode, b, seed=seed)})
    return rows


def format_alignment_table(rows: list[dict]) -> str:
    """:func:`gaussian_alignment_table` as text: one line per (condition, mode), one column per batch size."""
    sizes = sorted({r["batch_size"] for r in rows})
    lines = [f"{'source condition':>16} {'mode':>9} " + " ".join(f"{'B=' + str(b):>10}" for b in sizes)]
    for key in dict.fromkeys((r["condition"], r["mode"]) for r in rows):
        errs = {r["batch_size"]: r["error"] for r in rows if (r["condition"], r["mode"]) == key}
        lines.append(f"{key[0]:>16g} {key[1]:>9} " + " ".join(f"{errs[b]:>10.3g}" for b in sizes))
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_alignment_table(gaussian_alignment_table()))
