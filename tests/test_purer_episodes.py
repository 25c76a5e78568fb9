"""Checks of ``mepo_lab.protocols.episodes``: N-way K-shot sampling, the meta-test loop and the 95 % interval."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mepo_lab.protocols import episodes as ep


def class_targets(counts: list[int], ids: list[int] | None = None, seed: int = 0) -> np.ndarray:
    """Shuffled targets with ``counts[i]`` images of class ``ids[i]`` (default ids 10, 20, 30, …)."""
    ids = ids or [10 * (i + 1) for i in range(len(counts))]
    return np.random.default_rng(seed).permutation(np.repeat(ids, counts))


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize("n_way,k_shot,q_query", [(2, 1, 1), (5, 1, 15), (5, 5, 15), (7, 3, 2)])
def test_counts_layout_and_disjointness(n_way, k_shot, q_query):
    targets = class_targets([25] * 8)
    s_idx, s_y, q_idx, q_y, classes = ep.sample_episode(targets, n_way, k_shot, q_query, np.random.default_rng(3))
    assert len(s_idx) == len(s_y) == n_way * k_shot and len(q_idx) == len(q_y) == n_way * q_query
    assert len(set(classes)) == n_way and set(classes) <= set(np.unique(targets).tolist())
    # support ∩ query = ∅, no image twice
    assert len(set(s_idx.tolist()) | set(q_idx.tolist())) == n_way * (k_shot + q_query)
    # local labels grouped class by class, in the order of `classes`
    np.testing.assert_array_equal(s_y, np.repeat(np.arange(n_way), k_shot))
    np.testing.assert_array_equal(q_y, np.repeat(np.arange(n_way), q_query))
    # local label i is the original class classes[i]
    np.testing.assert_array_equal(targets[s_idx], np.asarray(classes)[s_y])
    np.testing.assert_array_equal(targets[q_idx], np.asarray(classes)[q_y])


def test_uses_every_image_when_k_plus_q_equals_the_class_size():
    # 3 classes of exactly 4 images, 3-way 1-shot 3-query: the episode is a permutation of the whole set
    targets = class_targets([4, 4, 4])
    s_idx, _, q_idx, _, _ = ep.sample_episode(targets, 3, 1, 3, np.random.default_rng(0))
    assert sorted(np.concatenate([s_idx, q_idx]).tolist()) == list(range(12))


def test_determinism_by_seed():
    targets = class_targets([20] * 10)
    a = ep.sample_episode(targets, 5, 2, 3, np.random.default_rng(7))
    b = ep.sample_episode(targets, 5, 2, 3, np.random.default_rng(7))
    c = ep.sample_episode(targets, 5, 2, 3, np.random.default_rng(8))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[2], c[2]))


def test_classes_are_drawn_evenly():
    # 4 classes, 2-way: every class should appear in about half of 400 episodes
    targets, rng = class_targets([3] * 4), np.random.default_rng(0)
    seen = np.zeros(4)
    for _ in range(400):
        for c in ep.sample_episode(targets, 2, 1, 1, rng)[4]:
            seen[c // 10 - 1] += 1
    assert np.all(np.abs(seen / 400 - 0.5) < 0.1)


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
def test_episode_from_indexes_images(kind):
    targets = class_targets([6] * 4)
    images = np.arange(len(targets))[:, None] * np.ones((1, 2), np.int64)  # row i holds i: the index itself
    if kind == "tensor":
        images = torch.as_tensor(images, dtype=torch.float32)
    e = ep.episode_from(images, targets, 3, 2, 2, np.random.default_rng(1))
    s_idx, s_y, q_idx, q_y, classes = ep.sample_episode(targets, 3, 2, 2, np.random.default_rng(1))
    assert type(e.support_x) is type(images) and e.n_way == 3 and e.classes == classes
    np.testing.assert_array_equal(np.asarray(e.support_x)[:, 0], s_idx)
    np.testing.assert_array_equal(np.asarray(e.query_x)[:, 0], q_idx)
    np.testing.assert_array_equal(e.support_y, s_y)
    np.testing.assert_array_equal(e.query_y, q_y)


@pytest.mark.parametrize("kwargs,match", [
    ({"n_way": 4, "k_shot": 1, "q_query": 1}, r"n_way=4, but only 3 classes"),
    ({"n_way": 2, "k_shot": 3, "q_query": 4}, r"class 20 has only 5 images.*3 \+ 4 = 7"),
    ({"n_way": 1, "k_shot": 1, "q_query": 1}, r"n_way must be at least 2"),
    ({"n_way": 2, "k_shot": 0, "q_query": 1}, r"k_shot must be at least 1"),
    ({"n_way": 2, "k_shot": 1, "q_query": 0}, r"q_query must be at least 1"),
])
def test_errors(kwargs, match):
    targets = class_targets([9, 5, 9])
    with pytest.raises(ValueError, match=match):
        ep.sample_episode(targets, rng=np.random.default_rng(0), **kwargs)


def test_bad_targets_and_misaligned_images():
    with pytest.raises(ValueError, match="1-D integer"):
        ep.sample_episode(np.zeros(10), 2, 1, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="3 images for 12 targets"):
        ep.episode_from(np.zeros((3, 2)), class_targets([4, 4, 4]), 2, 1, 1, np.random.default_rng(0))


# ---------------------------------------------------------------- confidence interval
def test_confidence_interval_hand_computed():
    # mean 0.7; population std sqrt((0.04 + 0 + 0.04) / 3); half width 1.96 * std / sqrt(3) = 1.96 * sqrt(0.08) / 3
    mean, half = ep.confidence_interval([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert half == pytest.approx(1.96 * math.sqrt(0.08) / 3)
    assert ep.confidence_interval([0.4]) == (pytest.approx(0.4), 0.0)
    with pytest.raises(ValueError, match="at least one"):
        ep.confidence_interval([])


# ---------------------------------------------------------------- meta-test loop
def colour_data(n_classes: int = 6, per_class: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """uint8 4x4 images whose red channel is 40·(class+1) plus noise < 10: classes separate by the mean colour."""
    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(n_classes), per_class)
    images = rng.integers(0, 10, (len(targets), 3, 4, 4)).astype(np.uint8)
    images[:, 0] += (40 * (targets + 1)).astype(np.uint8)[:, None, None]
    return images, targets


def nearest_mean(support_x, support_y, query_x):
    """Nearest class mean of the red channel: logits = −|r_query − r̄_class|."""
    assert support_x.dtype == torch.float32 and 0 <= support_x.min() and support_x.max() <= 1
    r_s, r_q = support_x[:, 0].mean((1, 2)), query_x[:, 0].mean((1, 2))
    n = int(support_y.max()) + 1
    means = torch.stack([r_s[support_y == i].mean() for i in range(n)])
    return -(r_q[:, None] - means[None]).abs()


def test_evaluate_episodes_oracle_and_constant():
    images, targets = colour_data()
    perfect = ep.evaluate_episodes(nearest_mean, images, targets, n_way=3, k_shot=2, q_query=4, n_episodes=20)
    assert perfect["mean"] == 1.0 and perfect["ci95"] == 0.0 and len(perfect["accs"]) == 20
    # always predicting local label 0 is right on exactly the Q queries of class 0: accuracy 1/N
    zero = ep.evaluate_episodes(lambda s, y, q: torch.zeros(len(q), dtype=torch.long), images, targets, 3, 2, 4,
                                n_episodes=5)
    assert zero["accs"] == [pytest.approx(1 / 3)] * 5


def test_evaluate_episodes_passes_shapes_and_is_seeded():
    images, targets = colour_data()
    calls = []

    def record(support_x, support_y, query_x):
        calls.append((tuple(support_x.shape), support_y.tolist(), tuple(query_x.shape), float(query_x.sum())))
        return np.zeros((len(query_x), 4))  # numpy logits are accepted

    ep.evaluate_episodes(record, images, targets, n_way=4, k_shot=1, q_query=2, n_episodes=3, seed=5)
    assert calls[0][:3] == ((4, 3, 4, 4), [0, 1, 2, 3], (8, 3, 4, 4))
    first = list(calls)
    calls.clear()
    ep.evaluate_episodes(record, images, targets, n_way=4, k_shot=1, q_query=2, n_episodes=3, seed=5)
    assert calls == first


def test_evaluate_episodes_rejects_bad_output_and_input():
    images, targets = colour_data()
    with pytest.raises(ValueError, match=r"logits \(6, 3\) or labels \(6,\)"):
        ep.evaluate_episodes(lambda s, y, q: torch.zeros(6, 5), images, targets, 3, 1, 2, n_episodes=1)
    with pytest.raises(ValueError, match="n_episodes"):
        ep.evaluate_episodes(nearest_mean, images, targets, 3, 1, 2, n_episodes=0)
    with pytest.raises(ValueError, match="uint8"):
        ep.evaluate_episodes(nearest_mean, images.astype(np.float32), targets, 3, 1, 2, n_episodes=1)
