"""Real datasets as uint8 arrays for the GCL runner, cached on disk, plus their preprocessing.

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
from mepo_lab.backbones import Preprocess


def dataset_arrays(name: str, split: str, *, root: str | os.PathLike | None = None, size: int = 224,
                   download: bool = False, verify: bool = True, data_home: str | os.PathLike | None = None,
                   workers: int = 2, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 3, H, W), targets int64 (N,))`` of a real dataset (see ``get_dataset``)."""
    from mepo_lab.data.real import get_dataset
    from mepo_lab.data.transforms import load_transform

    if name == "cifar100":
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


def preprocess_for(dataset: str, model: torch.nn.Module, normalization: str = "dataset") -> Preprocess:
    """Resize to the backbone's input size and normalise with the dataset's or the backbone's statistics.

    ``dataset`` statistics are the Si-Blurry lineage's choice; ``backbone`` reads timm's data config
    (mean = std = 0.5 for the Sup-21K checkpoints).
    """
    from mepo_lab.data.transforms import mean_std

    cfg = None
    if normalization == "backbone":
        import timm

        cfg = timm.data.resolve_model_data_config(model)
    mean, std = mean_std(dataset, normalization, cfg)
    size = model.patch_embed.img_size[0] if hasattr(model, "patch_embed") else None
    return Preprocess(tuple(float(m) for m in mean), tuple(float(s) for s in std), int(size) if size else None)
