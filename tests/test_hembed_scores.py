"""H-score and H-embedding placement (mepo_lab.hembed.hscore / .embedding; Wu et al., arXiv 2502.11609)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mepo_lab.hembed.embedding import (
    MODES,
    h_embedding,
    place_embedding,
    target_distances,
)
from mepo_lab.hembed.hscore import h_score


def clustered(n: int, d: int, k: int, seed: int, spread: float = 3.0, noise: float = 1.0):
    """Features = random class mean (scale ``spread``) + Gaussian noise; labels cycle through all k classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    f = spread * rng.standard_normal((k, d))[y] + noise * rng.standard_normal((n, d))
    return f, y


# ---------------------------------------------------------------------------------------------- H-score

@pytest.mark.parametrize(("f", "y", "expected"), [
    # mean 3, deviations -3 -1 1 3 -> Cov(f) = 20/3; g = 1 1 5 5 -> Cov(g) = 16/3; H = 16/20
    ([[0.0], [2.0], [4.0], [6.0]], [0, 0, 1, 1], 0.8),
    # arbitrary label values, same partition
    ([[0.0], [2.0], [4.0], [6.0]], [7, 7, 3, 3], 0.8),
    # mean 2, deviations -2 -1 3 -> Cov(f) = 14/2; g = .5 .5 5 -> deviations -1.5 -1.5 3 -> Cov(g) = 13.5/2
    ([[0.0], [1.0], [5.0]], [0, 0, 1], 27 / 28),
    # a constant second column makes Cov(f) singular: the pseudo-inverse ignores it, H is unchanged
    ([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [6.0, 0.0]], [0, 0, 1, 1], 0.8),
    # every sample its own class: g = f, H = rank Cov(f) = 1
    ([[0.0], [1.0], [5.0]], [0, 1, 2], 1.0),
])
def test_h_score_hand_computed(f, y, expected):
    assert h_score(np.array(f), np.array(y)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("n", "d", "k", "seed"), [(200, 4, 3, 0), (60, 10, 5, 1), (500, 2, 2, 2), (100, 6, 7, 3)])
def test_h_score_invariant_to_invertible_affine_maps(n, d, k, seed):
    f, y = clustered(n, d, k, seed)
    rng = np.random.default_rng(seed + 100)
    a = rng.standard_normal((d, d)) + 2.0 * np.eye(d)
    assert abs(np.linalg.det(a)) > 1e-3
    base = h_score(f, y)
    assert base > 0.1  # a non-trivial value, so the relative check means something
    assert h_score(f @ a, y) == pytest.approx(base, rel=1e-4)
    assert h_score(f @ a + rng.standard_normal(d) * 5.0, y) == pytest.approx(base, rel=1e-4)


@pytest.mark.parametrize(("d", "k"), [(4, 2), (8, 5), (16, 3)])
def test_h_score_near_zero_for_label_independent_features(d, k):
    rng = np.random.default_rng(d + k)
    f = rng.standard_normal((4000, d))
    y = rng.integers(0, k, 4000)
    assert 0.0 <= h_score(f, y) < 0.05


@pytest.mark.parametrize(("k", "d"), [(2, 1), (3, 2), (6, 5), (6, 12)])
def test_h_score_near_max_for_separated_classes(k, d):
    f, y = clustered(30 * k, d, k, seed=k * 10 + d, spread=10.0, noise=1e-2)
    h = h_score(f, y)
    assert 0.95 * (k - 1) < h <= min(d, k - 1) + 1e-6


def test_h_score_never_above_min_d_classes_minus_one():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n, d = int(rng.integers(3, 50)), int(rng.integers(1, 15))
        k = int(rng.integers(2, min(n, 8) + 1))
        y = rng.integers(0, k, n)
        y[:2] = [0, 1]
        f = rng.uniform(0.01, 50.0) * rng.standard_normal((n, d)) + rng.uniform(0, 5) * rng.standard_normal((k, d))[y]
        if seed % 3 == 0:  # low-rank features (and d > n for some seeds): Cov(f) singular
            r = max(1, d // 2)
            f = f @ rng.standard_normal((d, r)) @ rng.standard_normal((r, d))
        bound = min(d, len(np.unique(y)) - 1)
        assert -1e-9 <= h_score(f, y) <= bound + 1e-6, (seed, n, d, k)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_h_score_numpy_and_torch_inputs_agree(dtype):
    f, y = clustered(50, 3, 3, seed=5)
    f_np = f.astype(dtype)
    f_t = torch.from_numpy(f_np.copy()).requires_grad_(dtype != "float16")
    expected = h_score(f_np, y)
    assert h_score(f_t, torch.from_numpy(y)) == pytest.approx(expected, rel=1e-12)
    assert h_score(f_np, torch.from_numpy(y).to(torch.int32)) == pytest.approx(expected, rel=1e-12)
    assert isinstance(expected, float)


@pytest.mark.parametrize(("f", "y", "match"), [
    (np.zeros(4), [0, 0, 1, 1], "2-D"),
    (np.zeros((4, 2, 2)), [0, 0, 1, 1], "2-D"),
    (np.zeros((4, 0)), [0, 0, 1, 1], "at least one column"),
    (np.ones((4, 2)), [[1, 0], [1, 0], [0, 1], [0, 1]], "argmax"),
    (np.ones((4, 2)), [0.0, 0.0, 1.0, 1.0], "must be integers"),
    (np.ones((10, 2)), np.arange(12) % 2, "same length, got 10 and 12"),
    (np.ones((1, 2)), [0], "at least 2 samples"),
    (np.array([[0.0], [np.nan], [1.0], [2.0]]), [0, 0, 1, 1], "NaN or inf"),
    (np.array([[0.0], [np.inf], [1.0], [2.0]]), [0, 0, 1, 1], "NaN or inf"),
    (np.arange(8.0).reshape(4, 2), [3, 3, 3, 3], "at least 2 classes"),
])
def test_h_score_errors(f, y, match):
    with pytest.raises(ValueError, match=match):
        h_score(f, np.array(y))


# ---------------------------------------------------------------------------------------------- distances

@pytest.mark.parametrize(("mode", "expected"), [
    ("direct", [4.1, 3.1, 1.1]),                                   # (4 − H) + 0.1 + 1
    ("reciprocal", [10.0, 1 / 1.1, 1 / 3.1]),                      # 1 / (H − 1 + 0.1)
    ("ahp", [4.3 / 3 / 0.1, 4.3 / 3 / 1.1, 4.3 / 3 / 3.1]),        # shifted h = .1 1.1 3.1, d = mean(h) / h
])
@pytest.mark.parametrize("container", [list, np.array, torch.tensor])
def test_target_distances_hand_computed(mode, expected, container):
    d = target_distances(container([1.0, 2.0, 4.0]), mode=mode, eps=0.1)
    assert isinstance(d, np.ndarray) and d.dtype == np.float64
    np.testing.assert_allclose(d, expected, rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_target_distances_higher_score_is_closer(mode, seed):
    scores = np.random.default_rng(seed).uniform(0.0, 3.0, 6)
    d = target_distances(scores, mode=mode)
    order = np.argsort(scores)
    assert np.all(np.diff(d[order]) < 0)
    assert np.all(d > 0)


def test_ahp_priority_vector_is_the_normalised_shifted_scores():
    scores = np.array([0.3, 1.7, 0.9, 2.2])
    h = scores - scores.min() + 0.1
    w = 1.0 / (scores.size * target_distances(scores, mode="ahp"))
    np.testing.assert_allclose(w, h / h.sum(), rtol=1e-10)
    np.testing.assert_allclose(target_distances([2.0, 2.0, 2.0], mode="ahp"), [1.0, 1.0, 1.0], rtol=1e-12)


@pytest.mark.parametrize(("scores", "kwargs", "match"), [
    ([1.0, 2.0], {"mode": "mds"}, "direct, reciprocal, ahp"),
    ([1.0, np.nan], {}, "NaN or inf"),
    ([1.0, np.inf], {"mode": "reciprocal"}, "NaN or inf"),
    ([], {}, "empty"),
    ([[1.0, 2.0]], {}, "1-D"),
    ([1.0, 2.0], {"eps": 0.0}, "eps must be a positive"),
])
def test_target_distances_errors(scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        target_distances(scores, **kwargs)


# ---------------------------------------------------------------------------------------------- placement

POINTS = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [2.0, 5.0]])


@pytest.mark.parametrize(("target", "scale", "k"), [((1.0, 1.5), 2.0, 4), ((2.5, 2.5), 1.0, 4), ((-1.0, 2.0), 0.5, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_place_embedding_fits_consistent_distances(target, scale, k, seed):
    prev = POINTS[:k]
    dist = torch.linalg.vector_norm(prev - torch.tensor(target), dim=1) / scale
    e_hat, s, loss = place_embedding(prev, dist, iters=1000, lr=0.02, seed=seed)
    assert loss < 1e-2 * float(dist.sum())
    if k == 4:  # 4 distances in 2-D fix the point and the scale
        assert torch.linalg.vector_norm(e_hat - torch.tensor(target)) < 0.05
        assert s == pytest.approx(scale, rel=0.02)


def test_place_embedding_single_embedding_keeps_scale_one():
    e_hat, s, loss = place_embedding(POINTS[:1], [2.0], iters=500, lr=0.02)
    assert s == 1.0
    assert float(torch.linalg.vector_norm(e_hat - POINTS[0])) == pytest.approx(2.0, abs=0.02)
    assert loss < 0.02


def test_place_embedding_zero_iterations_returns_seeded_uniform_init():
    prev = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    e_hat, s, loss = place_embedding(prev, [0.5, 1.0], iters=0, seed=7)
    init = torch.rand(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(e_hat, init) and s == 1.0
    expected = abs(0.5 - float(init.norm())) + abs(1.0 - float((init - 1.0).norm()))
    assert loss == pytest.approx(expected, rel=1e-6)


def test_place_embedding_output_is_detached_float32_and_deterministic():
    prev = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(5, dtype=torch.float64)) for _ in range(3)])
    before = [p.detach().clone() for p in prev]
    a = place_embedding(prev, [1.0, 2.0, 1.5], iters=50, seed=3)
    b = place_embedding(torch.stack([p.detach() for p in prev]), [1.0, 2.0, 1.5], iters=50, seed=3)
    c = place_embedding(prev, [1.0, 2.0, 1.5], iters=50, seed=4)
    assert a[0].shape == (5,) and a[0].dtype == torch.float32 and not a[0].requires_grad
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    assert not torch.equal(a[0], c[0])
    assert all(torch.equal(p.detach(), q) and p.grad is None for p, q in zip(prev, before))


def test_h_embedding_is_target_distances_then_placement():
    prev = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    scores = [0.2, 0.9, 0.4]
    for mode in MODES:
        expected = place_embedding(prev, target_distances(scores, mode=mode), iters=100, seed=1)[0]
        assert torch.equal(h_embedding(prev, scores, mode=mode, iters=100, seed=1), expected)


def test_h_embedding_puts_the_guide_near_the_more_transferable_task():
    prev = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    guide = h_embedding(prev, [0.1, 0.9], iters=1000, lr=0.02)  # direct: distances 1.0 and 0.2
    assert torch.linalg.vector_norm(guide - prev[1]) < torch.linalg.vector_norm(guide - prev[0])


@pytest.mark.parametrize(("prev", "dist", "kwargs", "match"), [
    (torch.zeros(0, 2), [], {}, "at least one earlier task embedding"),
    ([], [], {}, "at least one earlier task embedding"),
    (torch.zeros(2), [1.0, 1.0], {}, r"\(k tasks × m\)"),
    (torch.zeros(2, 2), [1.0], {}, "same length, got 1 and 2"),
    (torch.zeros(2, 2), [1.0, -0.5], {}, "non-negative"),
    (torch.zeros(2, 2), [1.0, np.nan], {}, "NaN or inf"),
    (torch.tensor([[0.0, np.inf], [1.0, 1.0]]), [1.0, 1.0], {}, "finite"),
    (torch.zeros(2, 2), [1.0, 1.0], {"iters": -1}, "iters"),
    (torch.zeros(2, 2), [1.0, 1.0], {"lr": 0.0}, "lr must be a positive"),
])
def test_place_embedding_errors(prev, dist, kwargs, match):
    with pytest.raises(ValueError, match=match):
        place_embedding(prev, dist, **kwargs)


@pytest.mark.parametrize(("prev", "scores", "kwargs", "match"), [
    (torch.zeros(3, 2), [1.0, 2.0], {}, "scores and prev_embs must have the same length, got 2 and 3"),
    (torch.zeros(2, 2), [1.0, 2.0], {"mode": "AHP"}, "unknown mode"),
    (torch.zeros(0, 2), [1.0], {}, "at least one earlier task embedding"),
])
def test_h_embedding_errors(prev, scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        h_embedding(prev, scores, **kwargs)


# ---------------------------------------------------------------- chance level and block contrast
def test_chance_level_matches_random_labels():
    from mepo_lab.hembed.hscore import chance_level

    rng = np.random.default_rng(0)
    n, d, k = 200, 20, 4
    values = [h_score(rng.normal(size=(n, d)), rng.integers(0, k, n)) for _ in range(200)]
    assert np.mean(values) == pytest.approx(chance_level(d, n, k), rel=0.05)
    with pytest.raises(ValueError, match="need n >= 2"):
        chance_level(3, 1, 2)


def test_block_contrast_hand_matrix():
    from mepo_lab.hembed.hscore import block_contrast

    h = np.array([[0.9, 0.5, 0.1], [0.4, 0.8, 0.2], [0.0, 0.3, 0.7]])
    out = block_contrast(h, ["a", "a", "b"])
    assert out["diagonal"] == pytest.approx(0.8) and out["within"] == pytest.approx(0.45)
    assert out["across"] == pytest.approx((0.1 + 0.2 + 0.0 + 0.3) / 4)
    assert np.isnan(block_contrast(h, ["a", "b", "c"])["within"])
    with pytest.raises(ValueError, match="one row per group label"):
        block_contrast(h, ["a", "b"])
