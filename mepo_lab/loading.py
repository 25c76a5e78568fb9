"""Host → device batch loading for the online runner: gather ahead in a thread, copy through pinned memory.

A Si-Blurry run reads its stream in a fixed order (the stream's index arrays), so the next batches are
known in advance. On a GPU, :func:`prefetch` gathers them (a numpy fancy index into an in-memory or
memory-mapped uint8 array releases the GIL while it copies) and pins them in a background thread while
the device trains on the current batch; :func:`to_device` then copies with ``non_blocking=True``. On a
CPU both are plain calls: there is nothing to overlap.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

K = TypeVar("K")


def rows(x: torch.Tensor | np.ndarray, index: np.ndarray) -> torch.Tensor:
    """Rows ``index`` of a tensor or of a (memory-mapped) numpy array, as a CPU tensor."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x[index]))
    return x[torch.from_numpy(np.asarray(index))]


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Copy to ``device``; to a GPU through pinned memory with ``non_blocking=True``.

    PyTorch's caching host allocator keeps the pinned block alive until the copy has run, so the host
    can go on while the transfer overlaps with compute.
    """
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
    return x.to(device)


def prefetch(fetch: Callable[[K], torch.Tensor], keys: Iterable[K], device: torch.device | str,
             depth: int = 2, threaded: bool | None = None) -> Iterator[torch.Tensor]:
    """``fetch(k)`` on ``device`` for every key, in order.

    ``threaded`` (default: only when ``device`` is a GPU) runs up to ``depth`` fetches ahead in one
    background thread, pinning the batches for an asynchronous copy when the device is a GPU; without it
    every fetch runs inline. An exception raised by ``fetch`` surfaces at the batch it belongs to.
    """
    device = torch.device(device)
    if not (device.type == "cuda" if threaded is None else threaded):
        for key in keys:
            yield fetch(key).to(device)
        return
    keys, pin = iter(keys), device.type == "cuda"

    def load(key: K) -> torch.Tensor:
        batch = fetch(key)
        return batch.pin_memory() if pin else batch

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mepo-lab-prefetch") as pool:
        pending = deque(pool.submit(load, k) for k in _take(keys, max(1, depth)))
        while pending:
            batch = pending.popleft().result()
            pending.extend(pool.submit(load, k) for k in _take(keys, 1))
            yield batch.to(device, non_blocking=pin)


def _take(keys: Iterator[K], n: int) -> list[K]:
    out = []
    for key in keys:
        out.append(key)
        if len(out) == n:
            break
    return out
