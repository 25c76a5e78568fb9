"""The prompt learners' backbone passes through ``torch.compile``, with a fallback (issue 10).

At the protocol's batch of 32 a ViT-B/16 step on a large GPU is launch-bound: hundreds of small kernels per
pass, each waiting on the CPU. ``torch.compile`` (TorchInductor) fuses the frozen backbone's passes into a few
kernels; ``compile_mode="reduce-overhead"`` also replays them as a CUDA graph. What is compiled here are the
pure tensor functions that carry almost all the work -- the query pass ``norm(ViT(x))[:, 0]`` and the prompted
passes of :mod:`mepo_lab.learners.prompting` -- never the prompt selection (its key window changes with the
task) nor the alignment (its running statistics are Python state).

* **Fixed shapes.** A batch smaller than the largest seen so far at its call site (a task's last training
  batch, the last evaluation chunk) is padded with zero rows up to it and the padded rows are cut from every
  output, so one graph serves the training calls and one the evaluation calls. ViT rows never mix (LayerNorm and attention are per image), so the real rows'
  values and gradients are those of the unpadded batch.
* **Fallback.** When compiling or running the compiled pass raises, the pass runs eagerly, one line says
  so (once per reason and process), and the learner stays eager for the rest of the run; an error of the eager pass itself is raised as is.
* **Fidelity.** ``compile="auto"`` compiles on CUDA only: CPU runs keep the eager fp32 numbers of the
  reference path. ``"on"`` forces it (the tests use it on the CPU), ``"off"`` never compiles.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils import _pytree as pytree

from mepo_lab.config import COMPILE, COMPILE_MODES

_SAID: set[str] = set()  # fallback reasons already printed in this process


def check_compile(setting: str, mode: str = "default") -> None:
    """Refuse an unknown ``compile`` setting or ``compile_mode`` with the valid choices."""
    if setting not in COMPILE:
        raise ValueError(f"compile must be one of {', '.join(COMPILE)}, got {setting!r}")
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")


def compile_wanted(setting: str, device: torch.device | str) -> bool:
    """Whether ``compile=setting`` compiles on ``device``: ``auto`` only on CUDA, ``on`` always, ``off`` never."""
    check_compile(setting)
    return setting == "on" or (setting == "auto" and torch.device(device).type == "cuda")


class CompiledPass:
    """``fn(vit, x, *rest)`` compiled, padded to fixed batch sizes, eager from the first failure on.

    ``fn`` takes the backbone, a batch ``x`` and further arguments whose tensors (at any depth of lists and
    dicts) share ``x``'s batch dimension when their first size equals ``len(x)``; it returns tensors with the
    batch first. ``failure`` holds the reason once the pass has fallen back to eager.
    """

    def __init__(self, fn: Callable[..., Any], *, enabled: bool, mode: str = "default",
                 backend: str | Callable = "inductor", name: str = "") -> None:
        check_compile("on", mode)
        self.fn, self.name = fn, name or getattr(fn, "__name__", "pass")
        mode_arg = mode if backend == "inductor" else None  # modes are TorchInductor's
        self.cudagraphs = mode_arg in ("reduce-overhead", "max-autotune")
        self.sizes: dict[tuple[str, bool], int] = {}  # largest batch seen per (slot, grad mode): the padded size
        self.compiled, self.failure = None, None
        if enabled:
            try:  # torch.compile itself refuses some platforms (e.g. a Python version Dynamo does not support)
                self.compiled = torch.compile(fn, mode=mode_arg, backend=backend, dynamic=False)
            except Exception as err:
                self._fall_back(err)

    def step_begin(self) -> None:
        """Tell CUDA-graph trees a new step starts (``reduce-overhead``): outputs of the last replay may be overwritten."""
        if self.compiled is not None and self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()

    @property
    def active(self) -> bool:
        """Whether calls go through the compiled pass."""
        return self.compiled is not None

    def __call__(self, vit: torch.nn.Module, x: torch.Tensor, *rest: Any, slot: str = "") -> Any:
        """``fn(vit, x, *rest)``; ``slot`` names the call site (``"train"``, ``"eval"``): batches are padded to the
        largest seen in the same slot and grad mode, so a training batch is never padded to an evaluation chunk."""
        if self.compiled is None:
            return self.fn(vit, x, *rest)
        try:
            return self._padded(vit, x, rest, (slot, torch.is_grad_enabled()))
        except Exception as err:  # a compiler or backend failure: the eager pass decides whether it is ours
            out = self.fn(vit, x, *rest)
            self._fall_back(err)
            return out

    def _fall_back(self, err: BaseException) -> None:
        """Stay eager from now on, and say why in one line (once per reason and process)."""
        self.compiled, self.failure = None, _reason(err)
        if self.failure not in _SAID:
            _SAID.add(self.failure)
            print(f"mepo-lab: torch.compile of the {self.name} pass failed ({self.failure}); running it eagerly")

    def _padded(self, vit: torch.nn.Module, x: torch.Tensor, rest: tuple, key: tuple[str, bool]) -> Any:
        n = len(x)
        size = max(n, self.sizes.get(key, 0))
        self.sizes[key] = size
        if size == n:
            return self.compiled(vit, x, *rest)

        def pad(t: Any) -> Any:
            if isinstance(t, torch.Tensor) and t.ndim and len(t) == n:
                return torch.cat([t, t.new_zeros((size - n, *t.shape[1:]))])
            return t

        out = self.compiled(vit, pad(x), *pytree.tree_map(pad, rest))
        return pytree.tree_map(lambda t: t[:n] if isinstance(t, torch.Tensor) and t.ndim else t, out)


def _reason(err: BaseException) -> str:
    """``Type: first line`` (at most 200 characters) of the innermost cause of a compile failure (dynamo wraps a
    backend's error in ``BackendCompilerFailed``)."""
    while (inner := getattr(err, "inner_exception", None) or err.__cause__) is not None and inner is not err:
        err = inner
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__
