"""MePo's refinement on several processes: ``torch.distributed`` set up from ``torchrun``'s environment.

``torchrun --nproc-per-node N -m mepo_lab.cli refine ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and a rendezvous in the environment; :func:`init_from_env` joins them into one process group
(NCCL when CUDA is available, gloo on CPUs) and pins each process to its local GPU. The refinement then runs
:class:`~mepo_lab.mepo.refine.MetaRefiner` under ``DistributedDataParallel``: every rank plans the same pseudo
tasks and batches from the same seed, takes its share of each global batch (:func:`shard`), and DDP's
gradient all-reduce makes the ranks' SGD and Reptile steps identical. Only the main rank writes checkpoints,
logs and the covariance; :func:`main_first` lets it fill caches (pretrained backbone, shipped artefacts)
before the others read them.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world_size() -> int:
    """Processes in the job (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0)."""
    return rank() == 0


def init_from_env() -> int:
    """Join the process group ``torchrun`` describes in the environment; returns the world size (1: no-op).

    Backend: ``nccl`` when CUDA is available (each process on ``cuda:LOCAL_RANK``), else ``gloo``.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or dist.is_initialized():
        return world_size()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world_size()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if world_size() > 1:
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """The main rank runs the block first (filling caches); the others run it after, reading them."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def shard(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous share of a global batch (``torch.tensor_split``: sizes differ by at most one)."""
    size = world_size()
    if size == 1:
        return x, y
    r = rank()
    return torch.tensor_split(x, size)[r], torch.tensor_split(y, size)[r]


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (a copy; ``t`` itself in one process)."""
    if world_size() == 1:
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out


def ddp_step(refiner, x: torch.Tensor, y: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """One SGD step of a :class:`~mepo_lab.mepo.refine.MetaRefiner` under DDP; returns ``[Σ_local CE, correct, n]``.

    Each rank takes its share of the global batch of ``B`` samples and minimises ``(W / B) Σ_local CE``; DDP
    averages the gradients over the ``W`` ranks, which gives the gradient of the global mean ``(1 / B) Σ CE``
    even when the shares differ in size.
    """
    from mepo_lab.mepo.reptile import masked_logits

    n = len(y)
    x, y = shard(x, y)
    with refiner.amp.autocast():
        z = refiner.ddp(x)
    z = masked_logits(z.float(), refiner.cfg.logit_mask, allowed)
    total = F.cross_entropy(z, y, reduction="sum")
    refiner.amp.step(total * (world_size() / n), refiner.opt)
    return torch.stack([total.detach(), (z.argmax(1) == y).float().sum(), total.new_tensor(float(len(y)))])


def global_stats(stats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-step ``[loss, accuracy]`` of the global batches from every rank's ``[Σ CE, correct, n]`` (one all-reduce)."""
    summed = all_sum(torch.cat(stats))
    per_step = summed[:, :2] / summed[:, 2:].clamp_min(1)
    return list(torch.split(per_step, [len(s) for s in stats]))
