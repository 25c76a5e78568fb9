"""In-memory image datasets as arrays: the common currency between data, features and the runner."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ImageArrays(torch.utils.data.Dataset):
    """Images ``(N, 3, H, W)`` uint8 with integer ``targets`` in ``0..len(class_names)-1``.

    Behaves as a torch ``Dataset`` (``ds[i] -> (uint8 tensor, int)``) and carries ``.targets`` like
    torchvision datasets. ``name`` identifies the content (it is part of feature-cache keys).
    """

    images: np.ndarray
    targets: np.ndarray
    class_names: list[str]
    name: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {self.images.shape}")
        if len(self.targets) != len(self.images):
            raise ValueError(f"{len(self.targets)} targets for {len(self.images)} images")
        self.targets = np.asarray(self.targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[i]), int(self.targets[i])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index: np.ndarray, name: str | None = None) -> "ImageArrays":
        """The samples at ``index`` (same class list)."""
        return ImageArrays(self.images[index], self.targets[index], self.class_names,
                           name or f"{self.name}[subset]", dict(self.meta))
