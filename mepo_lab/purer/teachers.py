"""The teacher pool of data-free meta-learning: Conv4 classifiers on consecutive class groups, and their average.

PURER never sees the teachers' data: each teacher ``M_i`` is a classifier trained on its own class set ``C_i``
(consecutive groups of 5 of the meta-train classes; 64 CIFAR-FS classes give ⌈64/5⌉ = 13 teachers, the last with
4 classes), with *local* labels ``0..|C_i|−1``. Training (``pretrain.py``): Adam (lr 0.01), batch 128,
``MultiStepLR`` ×0.2 at epochs 30, 40, 50 of 60 (here at 1/2, 2/3, 5/6 of ``epochs``), gradient norm clipped at
50, and the checkpoint with the best accuracy on a held-out split is kept. The meta-learner may start from the
parameter average of same-architecture teachers (``main.py --average``, ``tool.py::FedAvg``):
``θ̄ = (1/T) Σ_i θ_i`` over parameters and BatchNorm buffers.

Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning" (PURER), CVPR 2023,
arXiv 2303.11183; official code Egg-Hu/PURER ``pretrain.py``, ``tool.py``, ``main.py``.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mepo_lab.data.base import ImageArrays
from mepo_lab.device import flush_denormal, pick_device
from mepo_lab.protocols.transfer import to_input
from mepo_lab.purer.models import conv4

CLIP_NORM = 50.0  # pretrain.py: clip_grad_norm_(teacher.parameters(), 50)
MILESTONE_FRACTIONS = (1 / 2, 2 / 3, 5 / 6)  # 30, 40, 50 of 60 epochs
_EVAL_BATCH = 512


@dataclass
class Teacher:
    """A trained classifier: ``model`` (eval mode, local labels ``0..len(classes)−1``), ``classes`` the global
    class ids behind its outputs (output ``i`` is class ``classes[i]``), ``accuracy`` on its held-out split."""

    model: nn.Module
    classes: list[int]
    accuracy: float


def lr_milestones(epochs: int) -> list[int]:
    """Epochs at which the learning rate is multiplied by 0.2: ``round(epochs · f)`` for f = 1/2, 2/3, 5/6
    (60 epochs → 30, 40, 50, the official ``pretrain.py`` schedule)."""
    return [round(epochs * f) for f in MILESTONE_FRACTIONS]


def _split(local: np.ndarray, n_classes: int, holdout: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    train, held = [], []
    for c in range(n_classes):
        pool = np.flatnonzero(local == c)
        if len(pool) < 2:
            raise ValueError(f"local class {c} has {len(pool)} image(s): a teacher needs at least 2 per class "
                             "(one to train on, one held out)")
        pool = pool[rng.permutation(len(pool))]
        n_held = min(len(pool) - 1, max(1, round(holdout * len(pool))))
        held.append(pool[:n_held])
        train.append(pool[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i:i + _EVAL_BATCH]).argmax(1) for i in range(0, len(x), _EVAL_BATCH)])
    return float((pred == y).float().mean())


def train_teacher(images: np.ndarray, targets: np.ndarray, classes: Sequence[int], *, width: int = 32,
                  epochs: int = 60, lr: float = 0.01, batch_size: int = 128, seed: int = 0,
                  device: str | torch.device = "cpu", holdout: float = 0.1) -> Teacher:
    """Train a Conv4 teacher on the images of ``classes`` (global ids in ``targets``; local label ``i`` for
    ``classes[i]``): ``holdout`` of every class (at least one image) is held out, the rest trains with
    ``CE(M(x), y)``, Adam(lr), batches of ``batch_size`` reshuffled every epoch, gradient norm clipped at 50,
    ``lr ← 0.2·lr`` at :func:`lr_milestones`. After every epoch the held-out accuracy is measured (eval mode,
    BatchNorm running statistics); the best epoch's weights and BatchNorm statistics are kept (first best on
    ties). The model comes back in eval mode on ``device``. Official: PURER ``pretrain.py`` (Hu et al., CVPR 2023).
    """
    images, targets = np.asarray(images), np.asarray(targets)
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(targets):
        raise ValueError(f"images must be uint8 (N, 3, H, W) aligned with targets, got {images.dtype} "
                         f"{images.shape} for {len(targets)} targets: pass ImageArrays.images and .targets")
    classes = [int(c) for c in classes]
    missing = [c for c in classes if not (targets == c).any()]
    if len(classes) < 2 or len(set(classes)) != len(classes) or missing:
        raise ValueError(f"classes must list at least 2 distinct class ids present in targets, got {classes}"
                         + (f" ({missing} have no images)" if missing else ""))
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    keep = np.isin(targets, classes)
    lookup = {c: i for i, c in enumerate(classes)}
    local = np.array([lookup[int(t)] for t in targets[keep]], dtype=np.int64)
    train_idx, held_idx = _split(local, len(classes), holdout, np.random.default_rng([seed, 1]))
    dev = pick_device(device)
    x, y = to_input(images[keep]).to(dev), torch.from_numpy(local).to(dev)
    model = conv4(len(classes), width, images.shape[1], images.shape[-1], seed=seed).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=lr_milestones(epochs), gamma=0.2)
    gen = torch.Generator().manual_seed(seed)
    train_t, held_t = torch.from_numpy(train_idx), torch.from_numpy(held_idx).to(dev)
    best, best_state = -1.0, None
    with flush_denormal():
        for _ in range(epochs):
            model.train()
            for batch in train_t[torch.randperm(len(train_t), generator=gen)].split(batch_size):
                batch = batch.to(dev)
                loss = F.cross_entropy(model(x[batch]), y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
                opt.step()
            sched.step()
            acc = _accuracy(model, x[held_t], y[held_t])
            if acc > best:
                best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return Teacher(model.eval(), classes, best)


def teacher_groups(classes: Sequence[int], classes_per_teacher: int = 5, n_teachers: int | None = None
                   ) -> list[list[int]]:
    """Consecutive groups ``classes[i·g:(i+1)·g]`` (g = ``classes_per_teacher``), ⌈|classes|/g⌉ of them, the last
    possibly shorter (64 classes, g = 5 → 13 groups, the last of 4); ``n_teachers`` keeps the first ones.
    Official: PURER ``pretrain.py`` (``node_classes``)."""
    if classes_per_teacher < 2:
        raise ValueError(f"classes_per_teacher must be at least 2, got {classes_per_teacher}")
    classes = [int(c) for c in classes]
    groups = [classes[i:i + classes_per_teacher] for i in range(0, len(classes), classes_per_teacher)]
    if groups and len(groups[-1]) < 2:
        raise ValueError(f"{len(classes)} classes in groups of {classes_per_teacher} leave a last teacher with one "
                         "class: change classes_per_teacher or the number of classes")
    if n_teachers is not None and not 1 <= n_teachers <= len(groups):
        raise ValueError(f"n_teachers must be in [1, {len(groups)}] for {len(classes)} classes in groups of "
                         f"{classes_per_teacher}, got {n_teachers}")
    return groups if n_teachers is None else groups[:n_teachers]


def teacher_pool(data: ImageArrays, classes_per_teacher: int = 5, n_teachers: int | None = None, *, width: int = 32,
                 epochs: int = 60, lr: float = 0.01, batch_size: int = 128, seed: int = 0,
                 device: str | torch.device = "cpu") -> list[Teacher]:
    """One :func:`train_teacher` per :func:`teacher_groups` group of ``data``'s classes ``0..n_classes−1``;
    teacher ``i`` uses the seed ``SeedSequence([seed, i])``. Official: PURER ``pretrain.py`` (Hu et al., CVPR 2023).
    """
    groups = teacher_groups(range(data.n_classes), classes_per_teacher, n_teachers)
    seeds = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(len(groups))]
    return [train_teacher(data.images, data.targets, g, width=width, epochs=epochs, lr=lr, batch_size=batch_size,
                          seed=s, device=device) for g, s in zip(groups, seeds)]


def _is_head(key: str) -> bool:
    return key.startswith("head.")


def teacher_average(teachers: Sequence[Teacher | nn.Module], n_way: int | None = None,
                    average_heads: bool = False) -> nn.Module:
    """The parameter average ("FedAvg") of same-architecture teachers: ``θ̄_k = (1/T) Σ_i θ_{i,k}`` for every
    entry ``k`` of the state dict (parameters and BatchNorm running statistics; integer buffers such as
    ``num_batches_tracked`` are truncated back to integers). Heads are excluded by default: the result gets a
    fresh zero-initialised ``n_way``-way head (default: the first teacher's head width), the meta-learner's
    N-way head (official ``--zero_ini`` zeroes exactly these). ``average_heads=True`` averages the heads too,
    as the official ``tool.py::FedAvg`` over whole state dicts does (needs equal head shapes). The returned
    model is a new module on the first teacher's device, in eval mode. Official: PURER ``tool.py::FedAvg``,
    ``main.py --average`` (Hu et al., CVPR 2023).
    """
    models = [t.model if isinstance(t, Teacher) else t for t in teachers]
    if not models:
        raise ValueError("teacher_average needs at least one teacher")
    states = [m.state_dict() for m in models]
    ref = states[0]
    for i, (model, state) in enumerate(zip(models, states)):
        if type(model) is not type(models[0]):
            raise ValueError(f"teacher {i} is a {type(model).__name__}, teacher 0 a {type(models[0]).__name__}: "
                             "teacher_average needs one architecture (start heterogeneous pools from a fresh net)")
        keys = [k for k in state if average_heads or not _is_head(k)]
        if set(keys) != {k for k in ref if average_heads or not _is_head(k)}:
            raise ValueError(f"teacher {i} has other layers than teacher 0: teacher_average needs one architecture")
        for k in keys:
            if state[k].shape != ref[k].shape:
                raise ValueError(f"teacher {i}'s {k!r} has shape {tuple(state[k].shape)}, teacher 0's "
                                 f"{tuple(ref[k].shape)}: teacher_average needs one architecture"
                                 + (" (different head widths: leave average_heads=False)" if _is_head(k) else ""))
    avg = copy.deepcopy(models[0])
    head = getattr(avg, "head", None)
    if not average_heads:
        if not isinstance(head, nn.Linear):
            raise ValueError("teacher_average without average_heads needs models with a Linear `head`")
        width = head.out_features if n_way is None else n_way
        if width < 1:
            raise ValueError(f"n_way must be at least 1, got {n_way}")
        avg.head = nn.Linear(head.in_features, width).to(head.weight.device)
        nn.init.zeros_(avg.head.weight)
        nn.init.zeros_(avg.head.bias)
    new = avg.state_dict()
    with torch.no_grad():
        for k in ref:
            if average_heads or not _is_head(k):
                mean = torch.stack([s[k].double() for s in states]).mean(0)
                new[k].copy_(mean.to(ref[k].dtype))
    return avg.eval().requires_grad_(True)  # trainable even when the teachers were frozen (e.g. by an inversion)


__all__ = ["Teacher", "lr_milestones", "teacher_average", "teacher_groups", "teacher_pool", "train_teacher"]
