"""The device: which one to use, mixed precision that degrades to plain fp32 on CPU, readable out-of-memory errors.

* :func:`pick_device` — ``"auto"`` means CUDA when available, else CPU.

* :class:`Amp` — ``torch.autocast`` in bfloat16 where the GPU supports it, else float16 with a
  ``GradScaler``; disabled on CPU (the lab's CPU runs stay exactly fp32 and reproducible).
* :func:`flush_denormal` — flushes subnormal floats to zero on the CPU while many tiny optimiser steps run
  (Adam's second moments of rarely used weights decay into the subnormal range, where x86 arithmetic is
  10–20x slower: 330 s instead of 19 s for 150 ASB episodes, measured).
* :func:`oom_guard` — turns ``torch.cuda.OutOfMemoryError`` into one error that names the preset to
  switch to (``colab`` on a T4, smaller ``gcl.eval_batch_size``), instead of a deep traceback.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Amp:
    """Autocast + (for float16) gradient scaling around one optimiser step."""

    def __init__(self, device: torch.device | str, enabled: bool = True) -> None:
        device = torch.device(device)
        self.enabled = bool(enabled) and device.type == "cuda"
        bf16 = self.enabled and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and not bf16)

    def autocast(self):
        """Context for the forward pass (a no-op when disabled)."""
        return torch.autocast("cuda", dtype=self.dtype) if self.enabled else nullcontext()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``zero_grad → backward → step`` with loss scaling when float16 needs it."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def describe(self) -> str:
        return str(self.dtype).replace("torch.", "") if self.enabled else "fp32"


class DeviceMemoryError(RuntimeError):
    """The GPU ran out of memory; the message names the preset or setting to change."""


@contextmanager
def flush_denormal() -> Iterator[None]:
    """Flush subnormal floats to zero inside the block, then restore torch's default (off).

    Changes only values below ~1.2e-38 in magnitude; a no-op where the CPU does not support it.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextmanager
def oom_guard(what: str, preset_name: str = "") -> Iterator[None]:
    """Re-raise a CUDA out-of-memory error as one :class:`DeviceMemoryError` that suggests the fix."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        smaller = {"paper": "colab", "colab": "cpu"}.get(preset_name, "a smaller preset")
        raise DeviceMemoryError(f"CUDA ran out of memory during {what}{f' (preset {preset_name})' if preset_name else ''}: "
                           f"try --preset {smaller}, or lower gcl.eval_batch_size / mepo.batch_size "
                           f"with --set; {str(err).splitlines()[0]}") from None
