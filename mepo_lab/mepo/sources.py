"""Where the refinement's images come from: batch sources for MePo's pretraining data
(``docs/reference/mepo.md#pseudo-tasks``, ``#meta-covariance``).

The refiner decides *which* images form every batch (it plans a whole group up front from a seeded
generator, :mod:`mepo_lab.mepo.refine`); a source turns those index batches into batches
``(x, y)`` — ``x`` float, normalised, on the device — in two calls::

    tokens = [source.prepare(idx, augment, gen) for idx in batches]   # in plan order, draws from gen
    for x, y in source.load(tokens, device): ...                      # the same batches, in order

``prepare`` takes every random number of a batch's augmentation from ``gen`` up front, so a resumed
run (which replays the same generator) sees the same augmentations; ``load`` does the work.

* :class:`ArraySource` — uint8 arrays ``(N, 3, H, W)`` in memory or memory-mapped (the synthetic
  world, decoded real datasets). Augmentation: :func:`~mepo_lab.data.augment.train_augment`, batched,
  on the device after the uint8 transfer. ``prepare`` records the generator state and advances it by
  exactly the draws ``train_augment`` makes, so the numbers equal drawing inline (the old code path).
* :class:`FileSource` — image files (ImageNet-style class folders) decoded in ``DataLoader`` workers
  with the reference's PIL transforms (train: ``RandomResizedCrop(size)`` + ``RandomHorizontalFlip`` +
  ``ColorJitter(brightness=63/255)``; joint set and clean prototypes: ``Resize(size·256/224)`` +
  ``CenterCrop(size)``). Every image's augmentation is seeded by its own number drawn in ``prepare``,
  so the result depends neither on the number of workers nor on which worker decodes it.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.datasets.folder import default_loader
from torchvision.transforms.functional import to_pil_image

from mepo_lab.data.augment import train_augment
from mepo_lab.data.normalization import IMAGENET_PREPROCESS, WORLD_PREPROCESS, Preprocess
from mepo_lab.loading import to_device

TEST_SEED = -1  # the per-image seed that selects the test transform


def _replay(state: torch.Tensor) -> torch.Generator:
    gen = torch.Generator()
    gen.set_state(state)
    return gen


class BatchSource:
    """A labelled pretraining set the refiner can draw batches from (see the module docstring).

    Attributes: ``labels`` (int64, one per image), ``n_classes`` (head width), ``classes`` (names).
    """

    labels: np.ndarray
    n_classes: int
    classes: list[str]

    def prepare(self, idx: np.ndarray, augment: bool, gen: torch.Generator) -> Any:
        """Everything ``load`` needs for batch ``idx``; draws the batch's random numbers from ``gen``."""
        raise NotImplementedError

    def load(self, tokens: Sequence[Any], device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The prepared batches as ``(x float normalised, y int64)`` on ``device``, in order."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What identifies the data (part of a refinement folder's record)."""
        return {"kind": type(self).__name__, "n_images": len(self.labels), "n_classes": self.n_classes}

    def close(self) -> None:
        """Release workers or files (a no-op by default)."""


class ArraySource(BatchSource):
    """uint8 images ``(N, 3, H, W)`` (ndarray or ``np.memmap``) and their labels.

    Train batches are augmented by ``train_augment(x, gen, crop_scale)`` on the device (crop scale
    (0.35, 1): the reference's (0.08, 1) would cut most objects out of 32-pixel images), then
    normalised by ``preprocess`` (default: the synthetic world's).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, preprocess: Preprocess = WORLD_PREPROCESS,
                 crop_scale: tuple[float, float] = (0.35, 1.0)) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"ArraySource needs uint8 images of shape (N, 3, H, W), got {images.dtype} "
                             f"{images.shape}: pass raw pixels in channel-first order")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels: pass one label per image")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.n_classes = int(self.labels.max()) + 1
        self.classes = [str(c) for c in range(self.n_classes)]
        self.preprocess, self.crop_scale = preprocess, crop_scale

    def prepare(self, idx: np.ndarray, augment: bool, gen: torch.Generator) -> tuple[np.ndarray, Any]:
        """``(idx, generator state or None)``; ``gen`` advances as ``train_augment`` would advance it."""
        if not augment:
            return idx, None
        state = gen.get_state()
        train_augment(torch.zeros(len(idx), 3, 1, 1, dtype=torch.uint8), gen, self.crop_scale)  # same draws
        return idx, state

    def load(self, tokens: Sequence[Any], device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Gather rows (numpy fancy indexing, also on memmaps), copy uint8, augment and normalise there."""
        for idx, state in tokens:
            x = to_device(torch.from_numpy(np.ascontiguousarray(self.images[idx])), device)
            if state is not None:
                x = train_augment(x, _replay(state), self.crop_scale)
            yield self.preprocess(x), to_device(torch.from_numpy(self.labels[idx]), device)

    def describe(self) -> dict:
        return super().describe() | {"shape": list(self.images.shape[1:]), "preprocess": self.preprocess.id}


def reference_train_transform(size: int = 224) -> T.Compose:
    """The reference's ImageNet train transform (PyCIL ``iImageNet1000``), ending in a uint8 tensor."""
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(brightness=63 / 255),
                      T.PILToTensor()])


def reference_test_transform(size: int = 224) -> T.Compose:
    """The reference's test transform ``Resize(256) + CenterCrop(224)``, scaled to ``size``; uint8 out."""
    return T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.PILToTensor()])


class _Decode(torch.utils.data.Dataset):
    """Items ``(i, seed)``: image ``i`` decoded, then the train transform seeded by ``seed`` (test if < 0)."""

    def __init__(self, dataset, size: int) -> None:
        self.dataset, self.train, self.test = dataset, reference_train_transform(size), reference_test_transform(size)

    def __len__(self) -> int:
        return len(self.dataset)

    def _image(self, i: int):
        samples = getattr(self.dataset, "samples", None)
        if samples is not None:  # FileImageDataset, ImageFolder: decode the file, skip their transform
            path, label = samples[i]
            return default_loader(path), int(label)
        image, label = self.dataset[i]
        return (to_pil_image(image) if torch.is_tensor(image) else image).convert("RGB"), int(label)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, seed = key
        image, label = self._image(i)
        if seed < 0:
            return self.test(image), label
        cpu = torch.default_generator  # the transforms draw from torch's global CPU generator: seed it for
        saved = cpu.get_state()        # this image only (torch.manual_seed would also seed every GPU: slow)
        try:
            cpu.manual_seed(seed)
            return self.train(image), label
        finally:
            cpu.set_state(saved)


class _PlannedBatches(torch.utils.data.Sampler):
    """Yields the batches it was last given; a persistent ``DataLoader`` re-reads it at every ``iter``."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class FileSource(BatchSource):
    """Image files streamed from disk (``FileImageDataset``, ``ImageFolder`` or any labelled dataset).

    ``size``: output side (the backbone's input). ``preprocess``: normalisation on the device —
    ImageNet mean/std by default, as the reference's meta-training uses for every backbone (although
    the Sup checkpoints expect 0.5/0.5, ``docs/reference/mepo.md#q13``). ``workers``: decoding processes
    (0 = in the main process); workers persist across ``load`` calls and batches come pinned when the
    device is CUDA. The DataLoader gets a generator seeded by ``seed``, but determinism comes from the
    per-image seeds drawn in ``prepare``: any worker count gives the same batches.
    """

    def __init__(self, dataset, size: int = 224, preprocess: Preprocess = IMAGENET_PREPROCESS, workers: int = 2,
                 seed: int = 0, prefetch_factor: int = 4) -> None:
        if not hasattr(dataset, "targets"):
            raise ValueError(f"{type(dataset).__name__} has no .targets: FileSource needs a labelled dataset "
                             "(mepo_lab.data.real.get_dataset, torchvision ImageFolder)")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.dataset, self.size, self.preprocess, self.workers = dataset, size, preprocess, workers
        self.labels = np.asarray(dataset.targets, dtype=np.int64)
        names = list(getattr(dataset, "classes", []))
        self.n_classes = max(len(names), int(self.labels.max()) + 1 if len(self.labels) else 0)
        self.classes = names if len(names) == self.n_classes else [str(c) for c in range(self.n_classes)]
        self.seed, self.prefetch_factor = seed, prefetch_factor
        self._decode, self._sampler = _Decode(dataset, size), _PlannedBatches()
        self._loader: torch.utils.data.DataLoader | None = None
        self._pin = False

    def prepare(self, idx: np.ndarray, augment: bool, gen: torch.Generator) -> list[tuple[int, int]]:
        """``[(image index, seed)]``: one seed per image from ``gen`` (train), or the test marker."""
        if not augment:
            return [(int(i), TEST_SEED) for i in idx]
        seeds = torch.randint(0, 2**62, (len(idx),), generator=gen).tolist()
        return list(zip((int(i) for i in idx), seeds, strict=True))

    def _get_loader(self, device: torch.device) -> torch.utils.data.DataLoader:
        pin = device.type == "cuda"
        if self._loader is None or pin != self._pin:
            extra = {"persistent_workers": True, "prefetch_factor": self.prefetch_factor} if self.workers else {}
            self._loader = torch.utils.data.DataLoader(
                self._decode, batch_sampler=self._sampler, num_workers=self.workers, pin_memory=pin,
                generator=torch.Generator().manual_seed(self.seed), **extra)
            self._pin = pin
        return self._loader

    def load(self, tokens: Sequence[Any], device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Decode and transform in the workers (uint8), copy, normalise on the device."""
        device = torch.device(device)
        loader = self._get_loader(device)
        self._sampler.batches = [list(t) for t in tokens]
        for x, y in loader:
            yield self.preprocess(to_device(x, device)), to_device(y, device)

    def describe(self) -> dict:
        return super().describe() | {"dataset": repr(self.dataset), "size": self.size,
                                     "preprocess": self.preprocess.id}

    def close(self) -> None:
        """Stop the persistent workers (they also stop when the source is garbage-collected)."""
        self._loader = None
