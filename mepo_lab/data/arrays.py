"""Real datasets as uint8 arrays for the GCL runner, cached on disk.

Their preprocessing: :mod:`~mepo_lab.data.normalization`.

The runner indexes training images by stream position, so a dataset becomes one ``(N, 3, H, W)`` uint8
array. CIFAR-100 stays at its native 32 × 32 (150 MB; the learner resizes each batch to the backbone's
input on the device, as the reference's GPU transform does). Other datasets are decoded once at the
reference's load resolution (``Resize((224, 224))``) into a memory-mapped ``.npy`` under
``<data home>/arrays/`` — written to a temporary file and renamed when complete, so an interrupted
decode is never mistaken for a finished one.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab import paths


def dataset_arrays(name: str, split: str, *, root: str | os.PathLike | None = None, size: int = 224,
                   download: bool = False, verify: bool = True, data_home: str | os.PathLike | None = None,
                   workers: int = 2, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 3, H, W), targets int64 (N,))`` of a real dataset (see ``get_dataset``)."""
    from mepo_lab.data.real import get_dataset
    from mepo_lab.data.transforms import load_transform

    if name in ("cifar100", "cifar10"):
        ds = get_dataset(name, split, root=root, download=download, verify=verify)
        return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets, np.int64)
    folder = paths.subdir("arrays", data_home)
    stem = f"{name.replace(':', '_').replace('/', '_')}-{split}-{size}"
    images_path, targets_path = folder / f"{stem}.npy", folder / f"{stem}-targets.npy"
    if images_path.exists() and targets_path.exists():
        return np.load(images_path, mmap_mode="r"), np.load(targets_path)
    ds = get_dataset(name, split, root=root, download=download, verify=verify, transform=load_transform(name, size))
    return _decode(ds, images_path, targets_path, size, workers, progress)


def _decode(ds, images_path: Path, targets_path: Path, size: int, workers: int,
            progress: bool) -> tuple[np.ndarray, np.ndarray]:
    tmp = images_path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(ds), 3, size, size))
    loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=workers, shuffle=False)
    start = 0
    for x, _ in tqdm(loader, desc=f"decoding {images_path.stem}", disable=not progress, mininterval=1.0):
        x = x if x.dtype == torch.uint8 else (x * 255).round().clamp(0, 255).to(torch.uint8)
        out[start:start + len(x)] = x.numpy()
        start += len(x)
    out.flush()
    del out
    os.replace(tmp, images_path)
    targets = np.asarray(ds.targets, np.int64)
    paths.atomic_write(targets_path, lambda h: np.save(h, targets))
    return np.load(images_path, mmap_mode="r"), targets
