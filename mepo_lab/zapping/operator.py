"""The zapping operator: re-draw output rows of the last layer from Kaiming-normal.

Frati et al., "Reset It and Forget It" (ECAI 2024, arXiv 2310.07996), §3; official code
``utils/__init__.py::lobotomize`` of uvm-neurobotics-lab/reset-it-and-forget-it. The bias and the optimiser
state (e.g. Adam's moments of those rows) are left as they are, as in the official code.

Fan-in: the lab draws every row with ``std = sqrt(2 / d)`` (``d`` = input width), which is Kaiming-normal for
one row. The official operator initialises the ``k`` selected rows as one tensor, so ``torch.nn.init``
computes the fan-in as ``k·d`` and the rows get ``std = sqrt(2 / (k·d))``: ``official_fan=True`` reproduces
that (identical to the per-row draw when one row is zapped, as in ASB and Meta-ASB episodes).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def zap_std(fan_in: int, n_rows: int, official_fan: bool = False) -> float:
    """Standard deviation of a zapped row: ``sqrt(2 / d)``, or ``sqrt(2 / (k·d))`` with ``official_fan``."""
    return math.sqrt(2.0 / (fan_in * (n_rows if official_fan else 1)))


def _rows(layer: nn.Linear, rows: int | Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    n_out = layer.out_features
    if rows is None:
        return torch.arange(n_out)
    index = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
    if index.numel() == 0:
        raise ValueError("rows is empty: pass at least one row index, or rows=None to zap every row")
    bad = index[(index < 0) | (index >= n_out)]
    if bad.numel():
        raise ValueError(f"rows must be in [0, {n_out - 1}] (the layer has {n_out} outputs), got {bad.tolist()}")
    return torch.unique(index)


def zap_(layer: nn.Linear, rows: int | Sequence[int] | torch.Tensor | None = None, official_fan: bool = False,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Zap ``layer`` in place: ``W[r] ~ N(0, 2/d)`` for every row ``r`` in ``rows`` (all rows when ``None``).

    Every other row and the bias stay bit-identical; optimiser state is not touched. With
    ``official_fan=True`` the ``k`` rows are drawn as one block with fan-in ``k·d`` (the official operator's
    std ``sqrt(2/(k·d))``). ``generator`` makes the draw reproducible. Returns the zapped row indices.
    Paper: Frati et al., ECAI 2024, §3 ("zapping").
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"zap_ needs an nn.Linear (the output layer), got {type(layer).__name__}: "
                         "pass the model's last layer, e.g. net.head")
    index = _rows(layer, rows)
    weight = layer.weight
    std = zap_std(layer.in_features, len(index), official_fan)
    draw = torch.randn((len(index), layer.in_features), generator=generator, dtype=torch.float32)
    with torch.no_grad():
        weight[index.to(weight.device)] = (draw * std).to(weight.device, weight.dtype)
    return index
