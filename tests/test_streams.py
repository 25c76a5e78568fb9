"""Tests of mepo_lab.protocols.streams.si_blurry: exactness against a slow transcription, the paper table, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mepo_lab.protocols.streams import Stream, si_blurry

CIFAR_LIKE = np.repeat(np.arange(100), 500)


# --------------------------------------------------------------------------------------------
# Slow reference transcription for testing.
# A deliberately plain, loop-based re-statement of OnlineSampler.__init__ (non-distributed path)
# of the MISA/MePo utils/onlinesampler.py, step by step, with the same torch.Generator calls.
# Only deviation: where the reference crashes (fixed variant with 0 disjoint or 0 blurry classes,
# torch cannot reshape an empty tensor with -1) we use empty per-task class lists.
# --------------------------------------------------------------------------------------------
def slow_reference(labels, n_tasks, n, m, seed, varying, n_classes=None):
    gen = torch.Generator().manual_seed(seed)
    labels = [int(v) for v in labels]
    C = n_classes if n_classes is not None else max(labels) + 1
    T = n_tasks
    disjoint_num = (C * n // 100) // T * T
    blurry_num = C - disjoint_num
    class_order = torch.randperm(C, generator=gen)

    if not varying:
        dwidth, bwidth = disjoint_num // T, blurry_num // T
        dis_part = class_order[:disjoint_num].tolist()
        blur_part = class_order[disjoint_num:].tolist()
        disjoint = [dis_part[t * dwidth:(t + 1) * dwidth] for t in range(T)]
        blurry = [blur_part[t * bwidth:(t + 1) * bwidth] for t in range(T)]
    else:
        dis_part = class_order[:disjoint_num].tolist()
        if disjoint_num > 0:
            r = torch.randint(0, disjoint_num, (T - 1,), generator=gen).sort().values.tolist()
            cut = [0] + r + [disjoint_num]
            disjoint = [dis_part[cut[t]:cut[t + 1]] for t in range(T)]
        else:
            disjoint = [[] for _ in range(T)]
        if blurry_num > 0:
            r = torch.randint(0, blurry_num, (T - 1,), generator=gen).sort().values.tolist()
            cut = [0] + r + [blurry_num]
            blurry = [class_order[disjoint_num + cut[t]:disjoint_num + cut[t + 1]].tolist()
                      for t in range(T)]
        else:
            blurry = [[] for _ in range(T)]

    dis_idx = [[] for _ in range(T)]
    blur_idx = [[] for _ in range(T)]
    n_blurry_samples = 0
    for i, y in enumerate(labels):
        for t in range(T):
            if y in disjoint[t]:
                dis_idx[t].append(i)
                break
            if y in blurry[t]:
                blur_idx[t].append(i)
                n_blurry_samples += 1
                break

    pool, dropped = [], []
    if not varying:
        for t in range(T):
            k = len(blur_idx[t]) * m // 100
            pool += blur_idx[t][:k]
            blur_idx[t] = blur_idx[t][k:]
        perm = torch.randperm(len(pool), generator=gen).tolist()
        pool = [pool[j] for j in perm]
        share = len(pool) // T
        for t in range(T):
            blur_idx[t] += pool[:share]
            pool = pool[share:]
        dropped = pool
    else:
        total = n_blurry_samples * m // 100
        if total > 0:
            r = torch.randint(0, total, (T - 1,), generator=gen).sort().values.tolist()
            cut = [0] + r + [total]
            for t in range(T):
                k = cut[t + 1] - cut[t]
                pool += blur_idx[t][:k]
                blur_idx[t] = blur_idx[t][k:]
            perm = torch.randperm(len(pool), generator=gen).tolist()
            pool = [pool[j] for j in perm]
            for t in range(T):
                k = cut[t + 1] - cut[t]
                blur_idx[t] += pool[:k]
                pool = pool[k:]

    tasks = []
    for t in range(T):
        lst = dis_idx[t] + blur_idx[t]
        perm = torch.randperm(len(lst), generator=gen).tolist()
        tasks.append([lst[j] for j in perm])
    return tasks, disjoint, blurry, dropped


# (C, T, N samples, n, m, n_classes_extra); fixed-variant cases are those with C % T == 0
SMALL_CASES = [
    (10, 2, 200, 50, 10, 0), (10, 5, 300, 50, 10, 0), (12, 3, 250, 0, 50, 0),
    (12, 4, 250, 100, 30, 0), (20, 5, 400, 50, 100, 0), (20, 4, 400, 30, 0, 0),
    (9, 3, 150, 67, 25, 0), (15, 5, 350, 40, 90, 0), (8, 1, 100, 50, 50, 0),
    (6, 6, 120, 50, 50, 0), (7, 3, 180, 50, 10, 0), (11, 4, 220, 33, 77, 2),
    (13, 5, 90, 80, 60, 0), (5, 5, 40, 100, 100, 0), (30, 7, 500, 25, 15, 0),
    (100, 5, 2000, 50, 10, 0), (50, 10, 1500, 60, 40, 0),  # paper-like shapes
]


def _random_labels(C, N, seed, extra=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C - extra, size=N)  # shuffled order, unequal class sizes
    return labels


EXACTNESS_CASES = [
    pytest.param(case, stochastic, seed,
                 id="{}-C{}-T{}-N{}-n{}-m{}-s{}".format("stoch" if stochastic else "fixed", *case[:5], seed))
    for case in SMALL_CASES for stochastic in (True, False) for seed in (0, 1, 7)
    if stochastic or case[0] % case[1] == 0  # the fixed variant needs C % T == 0
]


@pytest.mark.parametrize("case,stochastic,seed", EXACTNESS_CASES)
def test_identical_to_slow_reference(case, stochastic, seed):
    C, T, N, n, m, extra = case
    labels = _random_labels(C, N, seed=seed + 100 * C, extra=extra)
    n_classes = C if extra else None
    ref_tasks, ref_dis, ref_blur, ref_dropped = slow_reference(labels, T, n, m, seed, stochastic, n_classes)
    stream = si_blurry(labels, n_tasks=T, n=n, m=m, seed=seed, stochastic=stochastic, n_classes=n_classes)
    assert len(stream.task_indices) == T
    for got, want in zip(stream.task_indices, ref_tasks):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, np.array(want, dtype=np.int64))
        assert got.tolist() == want
    assert stream.disjoint_classes == ref_dis
    assert stream.blurry_classes == ref_blur
    assert sorted(stream.dropped.tolist()) == sorted(ref_dropped)
    assert stream.dropped.tolist() == ref_dropped


@pytest.mark.parametrize("seed", [2, 3, 7])
def test_fixed_variant_drops_the_pool_remainder(seed):
    # one blurry class per task; for these seeds class 5 (30 samples) is blurry, so the pool
    # holds 2 + 2 + 6 = 10 samples: 3 go back to each task and 10 % 3 = 1 is dropped
    labels = np.repeat(np.arange(6), [10, 10, 10, 10, 10, 30])
    stream = si_blurry(labels, n_tasks=3, n=50, m=20, seed=seed, stochastic=False)
    _, _, _, ref_dropped = slow_reference(labels, 3, 50, 20, seed, False)
    assert int(stream.blurred.sum()) == 10
    assert stream.dropped.tolist() == ref_dropped and len(ref_dropped) == 1
    assert [int(stream.blurred[idx].sum()) for idx in stream.task_indices] == [3, 3, 3]
    assert stream.blurred[stream.dropped].all()
    assert (stream.task_of_sample[stream.dropped] == -1).all()
    assert len(stream) == len(labels) - len(stream.dropped)


# --------------------------------------------------------------------------------------------
# The CIFAR-100-like protocol (N=50, M=10, T=5) of the paper scripts
# --------------------------------------------------------------------------------------------
TABLE = {  # seed: (#disjoint classes, #blurry classes, task sizes)
    1: ([3, 0, 20, 14, 13], [10, 6, 0, 30, 4], [6500, 3000, 10264, 22000, 8236]),
    2: ([0, 16, 9, 5, 20], [9, 3, 18, 16, 4], [4500, 9500, 13500, 10500, 12000]),
    3: ([29, 13, 0, 1, 7], [13, 13, 5, 14, 5], [21000, 13000, 2500, 7500, 6000]),
    4: ([1, 2, 34, 9, 4], [7, 0, 2, 25, 16], [4000, 1300, 18000, 17000, 9700]),
    5: ([12, 14, 15, 0, 9], [1, 41, 0, 7, 1], [6500, 27500, 8061, 3389, 4550]),
}
# Samples actually moved through the pool. The pool *quota* is always 25000 * 10 // 100 = 2500,
# but a task whose blurry list is shorter than its quota moves fewer (seeds 1, 4, 5).
POOL_SIZE = {1: 2236, 2: 2500, 3: 2500, 4: 2200, 5: 1939}


@pytest.mark.parametrize("seed", sorted(TABLE))
def test_cifar_like_stochastic_table(seed):
    n_dis, n_blur, sizes = TABLE[seed]
    stream = si_blurry(CIFAR_LIKE, n_tasks=5, n=50, m=10, seed=seed)
    assert [len(c) for c in stream.disjoint_classes] == n_dis
    assert [len(c) for c in stream.blurry_classes] == n_blur
    assert stream.task_sizes.tolist() == sizes
    assert int(stream.blurred.sum()) == POOL_SIZE[seed] <= 2500
    assert len(stream.dropped) == 0
    assert len(stream) == 50_000
    assert np.array_equal(np.sort(np.concatenate(stream.task_indices)), np.arange(50_000))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cifar_like_fixed(seed):
    stream = si_blurry(CIFAR_LIKE, n_tasks=5, n=50, m=10, seed=seed, stochastic=False)
    assert [len(c) for c in stream.disjoint_classes] == [10] * 5
    assert [len(c) for c in stream.blurry_classes] == [10] * 5
    assert stream.task_sizes.tolist() == [10_000] * 5
    assert int(stream.blurred.sum()) == 2500 and len(stream.dropped) == 0
    received = [int(stream.blurred[idx].sum()) for idx in stream.task_indices]
    assert received == [500] * 5
    assert np.array_equal(np.sort(np.concatenate(stream.task_indices)), np.arange(50_000))


def test_seed1_task0_classes():
    fixed = si_blurry(CIFAR_LIKE, n_tasks=5, n=50, m=10, seed=1, stochastic=False)
    stoch = si_blurry(CIFAR_LIKE, n_tasks=5, n=50, m=10, seed=1)
    blurry0 = {0, 4, 9, 39, 44, 46, 49, 61, 92, 98}
    assert set(fixed.disjoint_classes[0]) == {15, 17, 32, 35, 45, 63, 72, 79, 90, 96}
    assert set(fixed.blurry_classes[0]) == blurry0
    assert set(stoch.disjoint_classes[0]) == {15, 45, 90}
    assert set(stoch.blurry_classes[0]) == blurry0


def test_seed1_task2_receives_pooled_without_blurry_classes():
    stream = si_blurry(CIFAR_LIKE, n_tasks=5, n=50, m=10, seed=1)
    assert stream.blurry_classes[2] == []
    idx = stream.task_indices[2]
    assert int(stream.blurred[idx].sum()) == 264
    assert not np.isin(stream.labels[idx][stream.blurred[idx]], stream.disjoint_classes[2]).any()


# --------------------------------------------------------------------------------------------
# Properties and conveniences
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stochastic", [True, False])
@pytest.mark.parametrize("n,m", [(0, 0), (50, 10), (100, 100), (30, 70)])
def test_properties(stochastic, n, m):
    labels = _random_labels(20, 600, seed=n + m)
    stream = si_blurry(labels, n_tasks=4, n=n, m=m, seed=3, stochastic=stochastic, n_classes=20)
    allidx = np.concatenate(stream.task_indices)
    assert len(np.unique(allidx)) == len(allidx) == len(stream)  # each index at most once
    expected = np.setdiff1d(np.arange(len(labels)), stream.dropped)
    assert np.array_equal(np.sort(allidx), expected)  # union = all minus dropped
    for t, classes in enumerate(stream.disjoint_classes):  # disjoint classes live in one task
        for c in classes:
            tasks_with_c = {u for u in range(4) if c in set(stream.task_labels(u).tolist())}
            assert tasks_with_c <= {t}
    assigned = sum(stream.disjoint_classes + stream.blurry_classes, [])
    assert sorted(assigned) == list(range(20))
    tos = stream.task_of_sample
    for t, idx in enumerate(stream.task_indices):
        assert (tos[idx] == t).all()
    assert (tos == -1).sum() == len(stream.dropped)
    assert stream.labels.dtype == np.int64 and stream.dropped.dtype == np.int64
    assert stream.task_sizes.sum() == len(stream)
    np.testing.assert_array_equal(stream.blurred_indices, np.flatnonzero(stream.blurred))


def test_empty_tasks_are_legal():
    labels = np.repeat(np.arange(6), 5)
    streams = [si_blurry(labels, n_tasks=6, n=0, m=0, seed=s) for s in range(10)]
    empties = [idx for s in streams for idx in s.task_indices if len(idx) == 0]
    assert empties, "expected at least one empty task among these seeds"
    assert all(e.dtype == np.int64 for e in empties)


def test_stream_is_frozen_and_labels_are_a_copy():
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    stream = si_blurry(labels, n_tasks=3, n=0, m=50, seed=0)
    assert isinstance(stream, Stream)
    with pytest.raises(AttributeError):
        stream.n = 3  # type: ignore[misc]
    labels[0] = 2
    assert stream.labels[0] == 0 and stream.labels.dtype == np.int64


@pytest.mark.parametrize("labels", [
    [0, 1, 2, 3, 0, 1, 2, 3], np.array([0, 1, 2, 3] * 2, dtype=np.uint8),
    np.array([0., 1., 2., 3.] * 2), torch.tensor([0, 1, 2, 3] * 2),
])
def test_label_containers(labels):
    ref = si_blurry(np.array([0, 1, 2, 3] * 2), n_tasks=2, n=50, m=50, seed=4)
    got = si_blurry(labels, n_tasks=2, n=50, m=50, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(ref.task_indices, got.task_indices))


def test_n_classes_larger_than_labels():
    stream = si_blurry([0, 1, 1, 0], n_tasks=2, n=50, m=0, seed=0, n_classes=6)
    assert stream.n_classes == 6
    assert sorted(sum(stream.disjoint_classes + stream.blurry_classes, [])) == list(range(6))


# --------------------------------------------------------------------------------------------
# Bad input: one clear ValueError each
# --------------------------------------------------------------------------------------------
GOOD = dict(n_tasks=2, n=50, m=10, seed=0)
LABELS = np.repeat(np.arange(4), 3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=140), r"n must be in \[0, 100\], got 140"),
    (dict(n=-1), r"n must be in \[0, 100\]"),
    (dict(m=101), r"m must be in \[0, 100\], got 101"),
    (dict(m=-5), r"m must be in \[0, 100\]"),
    (dict(n=50.5), r"n must be an integer"),
    (dict(m=10.0), r"m must be an integer"),
    (dict(n=True), r"n must be an integer"),
    (dict(n_tasks=0), r"n_tasks must be in >= 1"),
    (dict(n_tasks=5), r"n_tasks must be <= the number of classes \(4\)"),
    (dict(n_tasks=2.0), r"n_tasks must be an integer"),
    (dict(seed=1.5), r"seed must be an integer"),
    (dict(seed="1"), r"seed must be an integer"),
    (dict(seed=2**64), r"seed must be in"),
    (dict(n_tasks=3, stochastic=False), r"divisible by n_tasks"),
    (dict(n_classes=3), r"labels must be < n_classes=3"),
    (dict(n_classes=0), r"n_classes must be in >= 1"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        si_blurry(LABELS, **{**GOOD, **kwargs})


@pytest.mark.parametrize("labels,match", [
    (np.zeros((3, 4), dtype=int), r"labels must be 1-D"),
    ([], r"labels is empty"),
    ([0.5, 1.0, 2.0], r"fractional part"),
    ([0.0, np.nan, 1.0], r"fractional part"),
    (["a", "b"], r"dtype <U1"),
    ([True, False], r"booleans"),
    ([0, -1, 2], r"labels must be >= 0, got -1"),
    ([0, None, 1], r"dtype object"),
])
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        si_blurry(labels, **GOOD)
