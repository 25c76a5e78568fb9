"""Chunked hypernetwork ``h(e, Θ)``, its hidden code ``z`` and the embedding decoder of the H-embedding guide.

A chunked hypernetwork (von Oswald et al., "Continual learning with hypernetworks", ICLR 2020, arXiv 1906.00695)
generates the P weights of a target network in ``K = ceil(P / chunk)`` pieces with one shared generator::

    row_k   = [e ⊕ c_k]                      (task embedding e, learned chunk embedding c_k, k = 1..K)
    out_k   = MLP(row_k) ∈ R^chunk           (Linear, ReLU between hidden layers; hidden=() is one Linear)
    weights = split(cut_P(out_1 ⊕ … ⊕ out_K), target_shapes)

``Θ`` (what the HyperCL regulariser protects) is the generator MLP plus the chunk embeddings; the task embeddings
are separate. Wu et al., "H-embedding guided hypernetworks for continual learning", NeurIPS 2025 (arXiv
2502.11609), steer the embedding of task t with a decoder on the last hidden activations ``z_t`` (official code
viki760/Hembedding_Guided_Hypernet: ``utils/chunked_hyper_model.py`` with ``emb_reg=True``,
``cifar/train/fc_decoder.py`` and the embedding loss in ``cifar/train/train_Hemb.py``)::

    L_emb = min(β_emb · t, 1) · (1 − cos(Dec(z_t), ê_t))
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChunkedHypernet", "EmbDecoder", "emb_loss"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_shapes(target_shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    shapes = [tuple(s) for s in target_shapes] if target_shapes is not None else []
    if not shapes:
        raise ValueError("target_shapes is empty: pass the shapes of the generated weights, e.g. [(64, 32), (64,)]")
    for s in shapes:
        if len(s) == 0 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in s):
            raise ValueError(f"every target shape must be a non-empty tuple of positive integers, got {s}")
    return [tuple(int(d) for d in s) for s in shapes]


class ChunkedHypernet(nn.Module):
    """HyperCL's chunked hypernetwork ``h(e, Θ)`` (official ``utils/chunked_hyper_model.py``; review default
    ``hnet_arch=''``, i.e. a linear generator).

    ``P = Σ prod(shape)``, ``n_chunks = ceil(P / chunk)``. Parameters: ``task_embs`` (``n_tasks`` vectors of size
    ``temb``, N(0, 1)), ``chunk_embs`` (``n_chunks × cemb``, N(0, 1)) and the generator MLP
    ``[temb + cemb] → hidden… → chunk`` (PyTorch's default Linear init). Everything is drawn from
    ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``, so building leaves the global RNG untouched.
    Attributes: ``target_shapes``, ``n_params`` (P), ``n_chunks``, ``z_dim`` (size of :meth:`hidden_z`).
    """

    def __init__(self, target_shapes: list[tuple[int, ...]], n_tasks: int, temb: int = 32, cemb: int = 32,
                 chunk: int = 512, hidden: tuple[int, ...] = (), seed: int = 0) -> None:
        super().__init__()
        self.target_shapes = _check_shapes(target_shapes)
        self.n_tasks = _positive_int(n_tasks, "n_tasks")
        self.temb = _positive_int(temb, "temb")
        self.cemb = _positive_int(cemb, "cemb")
        self.chunk = _positive_int(chunk, "chunk")
        if not isinstance(hidden, (tuple, list)):
            raise ValueError(  # noqa: TRY004 (the package raises ValueError for every bad input)
                f"hidden must be a tuple of layer sizes (() = linear generator), got {hidden!r}")
        self.hidden = tuple(_positive_int(h, "every hidden size") for h in hidden)
        self.n_params = sum(math.prod(s) for s in self.target_shapes)
        self.n_chunks = math.ceil(self.n_params / self.chunk)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.task_embs = nn.ParameterList([nn.Parameter(torch.randn(self.temb)) for _ in range(self.n_tasks)])
            self.chunk_embs = nn.Parameter(torch.randn(self.n_chunks, self.cemb))
            layers: list[nn.Module] = []
            width = self.temb + self.cemb
            for h in self.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(width, self.chunk)
        self.z_dim = self.n_chunks * width

    def theta(self) -> list[nn.Parameter]:
        """``Θ``: the chunk embeddings, then the generator MLP's parameters (no task embedding), in a fixed order.

        This is the list the HyperCL regulariser protects and the one ``delta`` in ``hypercl_reg`` aligns with
        (official ``ChunkedHyperNetworkHandler.theta``: chunk embeddings first, then the generator weights).
        """
        return [self.chunk_embs, *self.body.parameters(), *self.head.parameters()]

    def theta_names(self) -> list[str]:
        """Parameter names of :meth:`theta` (same order), as ``torch.func.functional_call`` expects them."""
        by_id = {id(p): name for name, p in self.named_parameters()}
        return [by_id[id(p)] for p in self.theta()]

    def embedding(self, task_or_emb: int | torch.Tensor) -> torch.Tensor:
        """The task embedding ``e``: ``task_embs[t]`` for an int ``t``, else the given 1-D tensor of size temb."""
        if isinstance(task_or_emb, torch.Tensor):
            if task_or_emb.ndim != 1 or task_or_emb.numel() != self.temb:
                raise ValueError(f"a task embedding must be a 1-D tensor of size temb={self.temb}, "
                                 f"got shape {tuple(task_or_emb.shape)}")
            return task_or_emb.to(self.chunk_embs.dtype)
        if isinstance(task_or_emb, bool) or not isinstance(task_or_emb, (int, np.integer)):
            raise ValueError(  # noqa: TRY004 (the package raises ValueError for every bad input)
                f"pass a task index (int) or a task embedding (1-D tensor), got {type(task_or_emb).__name__}")
        if not 0 <= task_or_emb < self.n_tasks:
            raise ValueError(f"task index {task_or_emb} is out of range: the hypernetwork has n_tasks={self.n_tasks}")
        return self.task_embs[int(task_or_emb)]

    def _rows(self, task_or_emb: int | torch.Tensor) -> torch.Tensor:
        e = self.embedding(task_or_emb)
        return torch.cat([e.expand(self.n_chunks, self.temb), self.chunk_embs], dim=1)

    def hidden_z(self, task_or_emb: int | torch.Tensor) -> torch.Tensor:
        """``z = flatten_k(body([e ⊕ c_k]))`` ∈ R^z_dim: the last hidden activations over all chunks, row-major.

        For ``hidden=()`` the body is empty and ``z`` is the concatenation of ``[e ⊕ c_k]`` over k, as in the
        official ``forward(..., emb_reg=True)`` of the linear chunked hypernetwork (Wu et al. 2025).
        """
        return self.body(self._rows(task_or_emb)).reshape(-1)

    def forward(self, task_or_emb: int | torch.Tensor) -> list[torch.Tensor]:
        """``h(e, Θ)``: ``head(body([e ⊕ c_k]))`` for every chunk k, flattened, cut to P, split into target_shapes.

        ``task_or_emb`` is a task index (``task_embs[t]`` is used) or an embedding tensor of size temb
        (von Oswald et al. 2020, Sec. 3; official ``utils/chunked_hyper_model.py``).
        """
        flat = self.head(self.body(self._rows(task_or_emb))).reshape(-1)[: self.n_params]
        sizes = [math.prod(s) for s in self.target_shapes]
        return [w.reshape(s) for w, s in zip(torch.split(flat, sizes), self.target_shapes)]

    @staticmethod
    def flat(weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """``vec(W_1) ⊕ … ⊕ vec(W_n)``: the generated weights as one flat vector (the HyperCL targets' layout)."""
        if len(weights) == 0:
            raise ValueError("flat() needs at least one weight tensor, got an empty list")
        return torch.cat([w.reshape(-1) for w in weights])


class EmbDecoder(nn.Module):
    """``Dec(z) = W_2 relu(W_1 z + b_1) + b_2``: Linear(z_dim → mid) → ReLU → Linear(mid → emb_dim).

    Maps the hypernetwork's hidden code ``z_t`` to the space of the guide embedding ``ê_t`` (Wu et al. 2025;
    official ``cifar/train/fc_decoder.py``). ``mid=0`` gives a single Linear(z_dim → emb_dim).
    """

    def __init__(self, z_dim: int, emb_dim: int = 32, mid: int = 512) -> None:
        super().__init__()
        self.z_dim = _positive_int(z_dim, "z_dim")
        self.emb_dim = _positive_int(emb_dim, "emb_dim")
        if isinstance(mid, bool) or not isinstance(mid, (int, np.integer)) or mid < 0:
            raise ValueError(f"mid must be a non-negative integer (0 = no hidden layer), got {mid!r}")
        if mid == 0:
            self.net: nn.Module = nn.Linear(self.z_dim, self.emb_dim)
        else:
            self.net = nn.Sequential(nn.Linear(self.z_dim, mid), nn.ReLU(), nn.Linear(mid, self.emb_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``Dec(z)`` for ``z`` of shape (z_dim,) or (batch, z_dim)."""
        if z.ndim not in (1, 2) or z.shape[-1] != self.z_dim:
            raise ValueError(f"z must have shape (z_dim,) or (batch, z_dim) with z_dim={self.z_dim}, "
                             f"got {tuple(z.shape)}")
        return self.net(z)


def emb_loss(decoder: nn.Module, z: torch.Tensor, guide: torch.Tensor, task: int,
             beta_emb: float = 0.05) -> torch.Tensor:
    """``L_emb = min(β_emb · t, 1) · (1 − cos(Dec(z), ê))``, a 0-dim tensor.

    ``z`` is the hidden code of task ``t`` (1-D), ``guide`` the H-embedding ``ê`` (1-D); the weight ramps up with
    the task index (Wu et al. 2025, official ``cifar/train/train_Hemb.py``, ``emb_beta = 0.05``). Gradients reach
    the decoder and ``z`` (hence the current task embedding and Θ); the guide is a fixed target.
    """
    if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or task < 0:
        raise ValueError(f"task must be a non-negative task index, got {task!r}")
    if not (math.isfinite(beta_emb) and beta_emb >= 0):
        raise ValueError(f"beta_emb must be a finite number >= 0, got {beta_emb}")
    if z.ndim != 1 or guide.ndim != 1:
        raise ValueError(f"z and guide must be 1-D vectors, got shapes {tuple(z.shape)} and {tuple(guide.shape)}")
    out = decoder(z)
    if out.shape != guide.shape:
        raise ValueError(f"the decoder output and the guide must have the same shape, got {tuple(out.shape)} "
                         f"and {tuple(guide.shape)}: build the decoder with emb_dim={guide.numel()}")
    weight = min(beta_emb * int(task), 1.0)
    return weight * (1.0 - F.cosine_similarity(out, guide.detach().to(out.dtype), dim=0))
