"""Gradient Projection Memory (GPM): BECAME's stage 1, the "stability container".

Saha, Garg, Roy, "Gradient Projection Memory for Continual Learning", ICLR 2021 (arXiv 2103.09762), as run
inside BECAME (Li et al., ICML 2025, arXiv 2504.02666; official code ``GPM-based/gpm.py`` and
``GPM-based/main_cifar100.py`` of ``limei0818/BECAME``).

For each projected layer ``l`` (an ``nn.Linear`` or ``nn.Conv2d`` with weight ``W`` seen as ``out × d_in``)
the memory keeps an orthonormal basis ``M_l ∈ R^{d_in × k_l}`` of the inputs the layer saw on earlier tasks:

* representations: ``R_l ∈ R^{d_in × m}``, one column per input row (a token of a ViT, an im2col patch of a
  conv), taken after each task (:func:`layer_inputs`);
* memory update: an SVD of ``R`` (first task) or of the residual ``R̂ = R − M Mᵀ R`` (later tasks), keeping the
  leading directions up to an energy threshold ``ε`` with the official strict ``<`` (:class:`GPMMemory`);
* projection: after every backward pass of a later task, ``∇W ← ∇W − ∇W M Mᵀ`` (:func:`project_grads_`), so
  ``ΔW x = 0`` for every ``x`` in ``span(M)``: the layer's outputs on earlier-task inputs stay put.

With timm's ``VisionTransformer`` the projected layers are ``patch_embed.proj`` (a conv), ``blocks.i.attn.qkv``,
``blocks.i.attn.proj``, ``blocks.i.mlp.fc1`` and ``blocks.i.mlp.fc2``; the argument carries over token by
token because ``∇W = Σ_tokens δ xᵀ``. The classifier (``head``) is neither projected nor frozen.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HEAD = "head"
TOKEN_PARAMS = ("pos_embed", "cls_token", "reg_token")  # frozen with the 1-D parameters (timm ViT names)


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    if conv.groups != 1:
        raise ValueError(f"layer {name!r} is a grouped conv (groups={conv.groups}); GPM needs groups=1: "
                         "leave it out by passing the layer names explicitly")
    if conv.padding_mode != "zeros" or conv.padding == "same":
        raise ValueError(f"layer {name!r} uses padding={conv.padding!r}, padding_mode={conv.padding_mode!r}; "
                         "im2col rows need integer zero padding: leave it out by passing the layer names")


def linear_layers(model: nn.Module, names: Sequence[str] | None = None, *,
                  head: str = HEAD) -> dict[str, nn.Linear | nn.Conv2d]:
    """The projected layers of ``model`` by qualified name, in module order.

    ``names=None``: every ``nn.Linear``/``nn.Conv2d`` with a trainable weight whose name does not start with
    ``head`` (the task classifier, never projected; Saha et al. 2021 §4); frozen layers (the early blocks of a
    pretrained ViT) need no projection. Given ``names``: exactly those layers, checked.
    """
    modules = dict(model.named_modules())
    if names is None:
        names = [n for n, m in modules.items()
                 if isinstance(m, (nn.Linear, nn.Conv2d)) and not n.startswith(head) and m.weight.requires_grad]
    layers: dict[str, nn.Linear | nn.Conv2d] = {}
    for name in names:
        layer = modules.get(name)
        if layer is None:
            raise ValueError(f"layer {name!r}: no such module; pass names listed by model.named_modules()")
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"layer {name!r} is a {type(layer).__name__}; GPM projects nn.Linear/nn.Conv2d only")
        if isinstance(layer, nn.Conv2d):
            _check_conv(name, layer)
        layers[name] = layer
    if not layers:
        raise ValueError("no layer to project: the model has no trainable nn.Linear/nn.Conv2d outside the head")
    return layers


def conv_rows(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """im2col rows of a conv input ``x`` (B, C, H, W): shape ``(B·L, C·kh·kw)``, one row per output pixel.

    A row is the zero-padded patch ``x[b, :, s·i − p : s·i − p + kh, s·j − p : s·j − p + kw]`` flattened in the
    order of ``conv.weight.view(out, -1)`` (channel, then kernel row, then kernel column), so ``W_mat · row``
    is the conv output at that pixel (without bias). GPM's conv representation (Saha et al. 2021, §4).
    """
    x = x[None] if x.ndim == 3 else x                                   # unbatched (C, H, W)
    if x.ndim != 4:
        raise ValueError(f"conv input must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    padding = 0 if conv.padding == "valid" else conv.padding
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _input_rows(layer: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return conv_rows(layer, inp)
    return inp.reshape(-1, inp.shape[-1])


def _subsample(rows: torch.Tensor, max_rows: int, gen: torch.Generator) -> torch.Tensor:
    if rows.shape[0] <= max_rows:
        return rows
    keep = torch.randperm(rows.shape[0], generator=gen)[:max_rows].sort().values
    return rows[keep.to(rows.device)]


@torch.no_grad()
def layer_inputs(model: nn.Module, x: torch.Tensor, layers: Mapping[str, nn.Module], max_rows: int = 2048,
                 seed: int = 0, *, forward: Callable[[torch.Tensor], Any] | None = None) -> dict[str, torch.Tensor]:
    """Representation matrices ``R_l ∈ R^{d_in × m}`` (columns = input rows) of one forward pass over ``x``.

    Forward hooks record each layer's input: ``nn.Linear`` inputs ``(B, …, d)`` become ``B·…`` rows (ViT
    tokens are rows), ``nn.Conv2d`` inputs become im2col patches (:func:`conv_rows`). Each layer keeps at most
    ``max_rows`` rows, drawn without replacement by a generator seeded with ``seed`` (kept in input order).
    The model runs in eval mode (dropout off) and its train/eval flags are restored. ``forward`` replaces
    ``model(x)`` (e.g. ``model.forward_features`` or a per-task call). Saha et al. 2021, §4 and Algorithm 1.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    param = next(model.parameters(), None)
    x = x.to(param.device) if param is not None else x
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    gens = {name: torch.Generator().manual_seed(seed) for name in layers}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            inp = (args[0] if args else next(iter(kwargs.values()))).detach()
            inp = inp if inp.dtype in (torch.float32, torch.float64) else inp.float()   # AMP: half → float32
            rows[name].append(_subsample(_input_rows(module, inp), max_rows, gens[name]))
        return record

    handles = [layer.register_forward_hook(hook(name), with_kwargs=True) for name, layer in layers.items()]
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        (forward or model)(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    reps = {}
    for name, seen in rows.items():
        if not seen:
            raise ValueError(f"layer {name!r} saw no input in the forward pass; drop it from layers "
                             "(or pass forward= that runs it)")
        reps[name] = _subsample(torch.cat(seen), max_rows, gens[name]).T.contiguous()
    return reps


def _check_eps(eps: float) -> None:
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}: it is the share of input energy kept in memory")


def first_rank(sigma_sq: torch.Tensor, eps: float) -> int:
    """First-task rank: ``k = #{i : Σ_{j≤i} σ_j² / Σ_j σ_j² < ε}`` (σ sorted descending).

    The official strict ``<`` (``GPM-based/gpm.py``) keeps one direction fewer than "the smallest k whose
    energy reaches ε" (e.g. σ² ∝ [0.5, 0.3, 0.2], ε = 0.7 gives k = 1, which keeps only 50 %).
    """
    _check_eps(eps)
    sigma_sq = sigma_sq.double()
    total = sigma_sq.sum()
    if total <= 0:
        return 0
    return int((torch.cumsum(sigma_sq / total, 0) < eps).sum())


def residual_rank(sigma_hat_sq: torch.Tensor, total: float, eps: float) -> int:
    """Later-task rank: start at ``acc = (‖R‖² − ‖R̂‖²)/‖R‖²``; while ``acc < ε``, add ``σ̂_i²/‖R‖²`` and count i.

    ``total = ‖R‖_F²`` and ``Σ σ̂_i² = ‖R̂‖_F²``, so ``k = #{i : acc + Σ_{j<i} σ̂_j²/‖R‖² < ε}``: unlike
    :func:`first_rank`, the direction that crosses ``ε`` is kept (Saha et al. 2021, Eq. 9; official loop).
    """
    _check_eps(eps)
    sigma_hat_sq = sigma_hat_sq.double()
    if total <= 0:
        return 0
    acc = (total - float(sigma_hat_sq.sum())) / total
    k = 0
    for ratio in (sigma_hat_sq / total).tolist():   # the official loop, same order of float additions
        if acc >= eps:
            break
        acc += ratio
        k += 1
    return k


@dataclass
class GPMMemory:
    """Per-layer orthonormal bases ``M_l`` (``d_in × k_l``) of earlier-task inputs (Saha et al. 2021, §4).

    Bases live on the device of the representations, in float32 (float64 if the representations are).
    """

    bases: dict[str, torch.Tensor] = field(default_factory=dict)

    def update(self, reps: Mapping[str, torch.Tensor], eps: float) -> dict[str, int]:
        """Add each layer's new directions; return ``k_new`` per layer (0 = layer skipped).

        First update of a layer: SVD ``R = U Σ Vᵀ``, ``M = U[:, :k]`` with ``k`` from :func:`first_rank` (kept
        even when ``k = 0``, as the official code keeps ``U[:, 0:0]``). Later: ``R̂ = R − M Mᵀ R = Û Σ̂ V̂ᵀ``,
        ``k_new`` from :func:`residual_rank`, ``M ← [M, Û[:, :k_new]]`` truncated to ``d_in`` columns. Computed in
        float64. Saha et al. 2021, Eqs. 5-9; ``GPM-based/gpm.py``.
        """
        _check_eps(eps)
        added = {}
        for name, rep in reps.items():
            if rep.ndim != 2:
                raise ValueError(f"representation of {name!r} must be a (d_in, m) matrix, got {tuple(rep.shape)}")
            old = self.bases.get(name)
            if old is not None and old.shape[0] != rep.shape[0]:
                raise ValueError(f"representation of {name!r} has d_in={rep.shape[0]} but its basis has "
                                 f"{old.shape[0]} rows: use the same layer (and its inputs, not outputs)")
            dtype = torch.float64 if rep.dtype == torch.float64 else torch.float32
            new = self._directions(rep.double(), None if old is None else old.double(), eps)
            added[name] = new.shape[1]
            if old is None:              # stored even when empty: the layer's later updates use the residual rule
                self.bases[name] = new.to(dtype)
            elif new.shape[1]:
                self.bases[name] = torch.cat([old.double(), new], 1)[:, :rep.shape[0]].to(dtype)
        return added

    @staticmethod
    def _directions(rep: torch.Tensor, basis: torch.Tensor | None, eps: float) -> torch.Tensor:
        if basis is None:
            u, s, _ = torch.linalg.svd(rep, full_matrices=False)
            return u[:, :first_rank(s**2, eps)]
        residual = rep - basis @ (basis.T @ rep)
        u, s, _ = torch.linalg.svd(residual, full_matrices=False)
        return u[:, :residual_rank(s**2, float((rep**2).sum()), eps)]

    def ranks(self) -> dict[str, tuple[int, int]]:
        """``(k_l, d_in)`` per layer: how much of each input space is protected (GPM's constraint summary)."""
        return {name: (b.shape[1], b.shape[0]) for name, b in self.bases.items()}


def eps_schedule(task: int, eps0: float = 0.97, eps_inc: float = 0.003) -> float:
    """Threshold of task ``task`` (0-based): ``ε(t) = ε₀ + t·ε_inc``.

    Defaults are the official CIFAR-100 values (``main_cifar100.py``: 0.97, 0.003; MiniImageNet uses 0.985,
    0.0003). A threshold >= 1 is refused: the official loop would then keep every direction, including the
    null ones, and freeze the layer; lower ``eps_inc`` for long task sequences.
    """
    if task < 0:
        raise ValueError(f"task must be >= 0 (0-based index), got {task}")
    eps = eps0 + task * eps_inc
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps0 + task·eps_inc = {eps0} + {task}·{eps_inc} = {eps:.6g} is outside (0, 1): "
                         "lower eps0 or eps_inc for this many tasks")
    return eps


def project_grads_(model: nn.Module, memory: GPMMemory, layers: Mapping[str, nn.Module], freeze_1d: bool = True,
                   *, head: str = HEAD) -> None:
    """After ``backward``: ``∇W ← ∇W − (∇W M) Mᵀ`` for every layer in ``layers`` with a basis (W as out × d_in).

    With ``freeze_1d``, zero the gradient of every 1-D parameter (biases, norm affines) and of ``pos_embed``,
    ``cls_token``, ``reg_token`` outside the head, as the official code freezes 1-D parameters from the
    second task on. Parameters named ``head…`` are untouched. Use plain SGD without weight decay (as GPM
    does): decay and momentum from earlier tasks act after this projection. Saha et al. 2021, Eq. 10.
    """
    for name, layer in layers.items():
        basis, grad = memory.bases.get(name), layer.weight.grad
        if basis is None or grad is None:
            continue
        g = grad.reshape(grad.shape[0], -1)
        if basis.shape[0] != g.shape[1]:
            raise ValueError(f"basis of {name!r} has {basis.shape[0]} rows but the layer has d_in={g.shape[1]}: "
                             "the memory belongs to another model or layer")
        if basis.shape[1]:
            m = basis.to(g.device, g.dtype)
            grad.copy_((g - (g @ m) @ m.T).view_as(grad))
    if not freeze_1d:
        return
    for name, p in model.named_parameters():
        if p.grad is not None and not name.startswith(head) and (p.ndim <= 1 or name.split(".")[-1] in TOKEN_PARAMS):
            p.grad.zero_()
