"""Datasets: synthetic worlds (``synthetic``), in-memory arrays (``base``) and real data on disk (``real``).

``get_dataset``, ``DATASETS`` and ``STATISTICS`` come from :mod:`mepo_lab.data.real`; they are imported on
first use, so importing the synthetic parts does not pay for torchvision.
"""
from __future__ import annotations

_REAL = ("get_dataset", "DATASETS", "STATISTICS")
__all__ = list(_REAL)


def __getattr__(name: str):
    if name in _REAL:
        from mepo_lab.data import real

        return getattr(real, name)
    raise AttributeError(f"module 'mepo_lab.data' has no attribute {name!r}")
