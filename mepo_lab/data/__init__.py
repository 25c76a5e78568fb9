"""Datasets: synthetic worlds (``synthetic``), in-memory arrays (``base``), real data on disk (``real``), their
normalisation (``normalization``), the protocol's transforms and augmentation (``transforms``, ``augment``,
``online_augment``) and cached uint8 arrays for the runner (``arrays``).
Few-shot class splits for the zapping experiment (synthetic world or Omniglot): ``few_shot``.

``get_dataset``, ``DATASETS`` and ``STATISTICS`` come from :mod:`mepo_lab.data.real`; they are imported on
first use, so importing the synthetic parts does not pay for torchvision. :func:`dataset_names` lists what a
GCL run accepts (the CLI derives its checks from it).
"""
from __future__ import annotations

SYNTHETIC = "synthetic"
IMAGEFOLDER_PREFIX = "imagefolder:"
_REAL = ("get_dataset", "DATASETS", "STATISTICS")
__all__ = [*_REAL, "SYNTHETIC", "check_dataset_name", "dataset_names"]


def __getattr__(name: str):
    if name in _REAL:
        from mepo_lab.data import real

        return getattr(real, name)
    raise AttributeError(f"module 'mepo_lab.data' has no attribute {name!r}")


def dataset_names() -> list[str]:
    """``synthetic`` (the embedded world), the real datasets of :data:`DATASETS` a GCL run can use,
    ``imagefolder:<path>``. CIFAR-10 is left out: it serves the task-incremental sequence of the H-embedding
    experiment, and the Si-Blurry protocol has no normalisation statistics for it."""
    from mepo_lab.data.real import DATASETS

    return [SYNTHETIC, *(n for n in DATASETS if n not in ("imagefolder", "cifar10")), f"{IMAGEFOLDER_PREFIX}<path>"]


def check_dataset_name(name: str) -> str:
    """``name`` if a GCL run accepts it, else one ``ValueError`` listing the valid names."""
    from mepo_lab.data.real import DATASETS

    if name == SYNTHETIC or (name in DATASETS and name != "imagefolder") or (
            name.startswith(IMAGEFOLDER_PREFIX) and len(name) > len(IMAGEFOLDER_PREFIX)):
        return name
    raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(dataset_names())}")
