"""Batch loading of the online runner: rows of arrays / memmaps / tensors, and the prefetching iterator."""
import threading

import numpy as np
import pytest
import torch

from mepo_lab.loading import prefetch, rows, to_device


def test_rows_of_tensor_array_and_memmap_agree(tmp_path):
    data = np.arange(60, dtype=np.uint8).reshape(10, 6)
    np.save(tmp_path / "a.npy", data)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    idx = np.array([7, 2, 2, 9])
    expected = torch.from_numpy(data[idx])
    for source in (data, mm, torch.from_numpy(data)):
        assert torch.equal(rows(source, idx), expected)


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_keeps_order_and_values(threaded, depth):
    fetched = []

    def fetch(k):
        fetched.append((k, threading.current_thread().name))
        return torch.full((2,), k)

    out = list(prefetch(fetch, range(7), "cpu", depth=depth, threaded=threaded))
    assert [int(x[0]) for x in out] == list(range(7))
    in_thread = all(name.startswith("mepo-lab-prefetch") for _, name in fetched)
    assert in_thread == threaded


def test_prefetch_runs_at_most_depth_ahead():
    fetched = []
    it = prefetch(lambda k: fetched.append(k) or torch.zeros(1), range(100), "cpu", depth=2, threaded=True)
    next(it)
    it.close()  # waits for the pending fetches, then stops
    assert len(fetched) <= 4


def test_prefetch_surfaces_errors_at_their_batch():
    def fetch(k):
        if k == 2:
            raise IndexError("row 2 is missing")
        return torch.zeros(1)

    it = prefetch(fetch, range(5), "cpu", threaded=True)
    next(it), next(it)
    with pytest.raises(IndexError, match="row 2"):
        next(it)


def test_to_device_on_cpu_is_a_plain_copy():
    x = torch.arange(3)
    assert torch.equal(to_device(x, "cpu"), x)
