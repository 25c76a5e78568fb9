"""Feature extraction with an on-disk cache: a frozen backbone is run over a dataset once.

Head-level learners (``linear``, ``ncm``), covariance estimates and output alignment only need the
backbone's features, so a whole Si-Blurry stream then runs in seconds on a CPU. Features are stored
as float16 under ``<data home>/features/<key>/`` with ``key = sha256(weights hash, transform id,
dataset name)``: a different backbone, preprocessing or dataset never reuses a stale file. What it
cannot know is that a frozen backbone is frozen — methods that change the forward pass (finetuning,
prompts, MePo refinement itself) must run on images.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.backbones.base import Backbone, cls_features
from mepo_lab.data.base import ImageArrays
from mepo_lab.data.normalization import WORLD_PREPROCESS, Preprocess
from mepo_lab.device import Amp, pick_device


@dataclass
class FeatureSet:
    """Features ``(N, d)`` float16 and integer targets of one dataset split under one backbone."""

    features: np.ndarray
    targets: np.ndarray
    key: str
    dataset: str
    backbone: str
    seconds: float = 0.0
    cached: bool = False

    def __len__(self) -> int:
        return len(self.targets)

    def tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The features as a torch tensor of ``dtype`` (float32 by default)."""
        return torch.from_numpy(np.ascontiguousarray(self.features)).to(dtype)


def feature_key(weights_hash: str, dataset_name: str, transform_id: str = WORLD_PREPROCESS.id,
                precision: str = "fp32") -> str:
    """Cache key: ``sha256(weights | transform | dataset)`` (first 16 hex digits), ``| precision`` appended when
    the features come from a mixed-precision forward pass (fp32 keys stay those of earlier versions)."""
    blob = f"{weights_hash}|{transform_id}|{dataset_name}" + ("" if precision == "fp32" else f"|{precision}")
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: np.ndarray, *, batch_size: int = 512,
                     device: str = "auto", progress: bool = True, desc: str = "features",
                     preprocess: Preprocess = WORLD_PREPROCESS, amp: bool = True) -> np.ndarray:
    """``f_i = norm(ViT(preprocess(x_i)))[CLS]`` for every uint8 image, stored as float16 ``(N, d)``.

    ``amp``: autocast (bf16/fp16) on a GPU, as ``gcl.amp`` asks; the CPU always computes in fp32.
    """
    dev = pick_device(device)
    model, amp = model.eval().to(dev), Amp(dev, amp)
    out = np.empty((len(images), model.num_features), np.float16)
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, mininterval=1.0):
        x = preprocess(torch.from_numpy(np.asarray(images[start:start + batch_size])).to(dev))
        with amp.autocast():
            out[start:start + batch_size] = cls_features(model, x).float().cpu().numpy()
    return out


def cached_features(backbone: Backbone, dataset_name: str, make_data: Callable[[], ImageArrays], *,
                    data_home: str | Path | None = None, batch_size: int = 512, device: str = "auto",
                    progress: bool = True, preprocess: Preprocess = WORLD_PREPROCESS, amp: bool = True) -> FeatureSet:
    """Features of ``make_data()`` under ``backbone``, cached (the precision of the pass is part of the key).

    ``make_data`` is only called on a cache miss, so a warm cache never renders or loads images.
    """
    precision = Amp(pick_device(device), amp).describe()
    key = feature_key(backbone.weights_hash, dataset_name, preprocess.id, precision)
    folder = paths.subdir("features", data_home) / key
    feats_path, targets_path, meta_path = folder / "features.npy", folder / "targets.npy", folder / "meta.json"
    if feats_path.exists() and targets_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return FeatureSet(np.load(feats_path), np.load(targets_path), key, dataset_name,
                          backbone.weights_hash, meta.get("seconds", 0.0), cached=True)
    start = time.perf_counter()
    data = make_data()
    if data.name != dataset_name:
        raise ValueError(f"make_data() returned dataset {data.name!r}, expected {dataset_name!r}")
    feats = extract_features(backbone.model, data.images, batch_size=batch_size, device=device,
                             progress=progress, desc=f"features ({backbone.kind})", preprocess=preprocess, amp=amp)
    seconds = time.perf_counter() - start
    paths.atomic_write(feats_path, lambda h: np.save(h, feats))
    paths.atomic_write(targets_path, lambda h: np.save(h, data.targets))
    paths.atomic_save_json(meta_path, {"dataset": dataset_name, "backbone": backbone.weights_hash,
                                       "kind": backbone.kind, "transform": preprocess.id, "precision": precision,
                                       "shape": list(feats.shape), "seconds": seconds})
    return FeatureSet(feats, data.targets, key, dataset_name, backbone.weights_hash, seconds)
