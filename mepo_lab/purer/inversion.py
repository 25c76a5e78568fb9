"""Model inversion for PURER: the DeepInversion feature prior, the inversion loss and the dynamic dataset X̂.

Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning", CVPR 2023 (arXiv 2303.11183);
official code Egg-Hu/PURER, ``tool.py`` (``DeepInversionFeatureHook``, ``get_images_loss``) and ``main.py`` (the
learnable ``allData`` tensor and its Adam). The BatchNorm prior is DeepInversion's (Yin et al., "Dreaming to
Distill", CVPR 2020).

Spaces. The lab's models take float images in [0, 1] and normalise inside. X̂ itself (``DynamicDataset.latent``) is
kept in the *normalised* space ``z = (x − mean) / std``, as in the official code: it starts as N(0, 1) there, and
Adam's lr 0.25 was tuned there. Models get the input-space images ``x = mean + std · z``. By default
:class:`InversionLoss` also measures its image priors (TV, L2) on ``z``, so the official weights keep their meaning.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mepo_lab.data.normalization import WORLD_MEAN, WORLD_STD

if TYPE_CHECKING:
    from typing_extensions import Self

Prior = dict[str, tuple[Tensor, Tensor]]
_NO_STATS = "a teacher without the statistics the prior needs"


def _by_channel(t: Tensor, module: nn.Module) -> Tensor:
    """A layer input as rows of channels: channels on dim −1 for LayerNorm (tokens flattened), on dim 1
    otherwise (BatchNorm: batch and space flattened)."""
    dim = -1 if isinstance(module, nn.LayerNorm) else 1
    return t.movedim(dim, -1).reshape(-1, t.shape[dim])


def _channel_stats(t: Tensor, module: nn.Module) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of a layer input (DeepInversionFeatureHook's ``mean``, ``var``)."""
    flat = _by_channel(t, module)
    return flat.mean(0), flat.var(0, unbiased=False)


class PriorHooks:
    """Forward hooks that record the per-channel input statistics ``(μ_l, σ²_l)`` of chosen layers and score
    them against reference statistics. Use as a context manager around one forward pass; the hooks are
    removed on exit (a second forward inside the block overwrites the first one's statistics)."""

    def __init__(self, layers: list[tuple[str, nn.Module, Tensor, Tensor]], first_mult: float = 1.0):
        self.layers, self.first_mult = layers, float(first_mult)
        self.stats: dict[str, tuple[Tensor, Tensor]] = {}
        self._handles: list = []

    def __enter__(self) -> Self:
        self.stats = {}
        for name, module, _, _ in self.layers:
            def hook(mod, inputs, output, name=name):
                self.stats[name] = _channel_stats(inputs[0], mod)
            self._handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def loss(self) -> Tensor:
        """``Σ_l m_l · (‖σ²_l(x) − σ̄²_l‖₂ + ‖μ_l(x) − μ̄_l‖₂)``, ``m_0 = first_mult`` and 1 after
        (DeepInversion; PURER tool.py ``DeepInversionFeatureHook`` and ``get_images_loss``)."""
        if not self.stats:
            raise RuntimeError("no statistics recorded: run the model's forward pass inside `with hooks:`")
        total = None
        for i, (name, _, ref_mean, ref_var) in enumerate(self.layers):
            if name not in self.stats:
                continue
            mean, var = self.stats[name]
            if mean.shape != ref_mean.shape:
                raise ValueError(f"layer {name!r} has {mean.numel()} channels but its reference statistics "
                                 f"{ref_mean.numel()}: compute the prior on this very architecture")
            term = torch.linalg.vector_norm(var - ref_var.detach()) + torch.linalg.vector_norm(mean - ref_mean.detach())
            term = term * (self.first_mult if i == 0 else 1.0)
            total = term if total is None else total + term
        return total


def bn_prior_hooks(model: nn.Module, first_bn_mult: float = 1.0) -> PriorHooks:
    """Hooks on every BatchNorm layer with running statistics (in module order) for the DeepInversion prior
    ``Σ_l (‖σ²_l(x) − running_var_l‖₂ + ‖μ_l(x) − running_mean_l‖₂)``, the first term × ``first_bn_mult``
    (official 1 in PURER main.py). ``μ_l, σ²_l``: batch mean and biased variance of the layer's input per
    channel. Yin et al. CVPR 2020; PURER tool.py ``DeepInversionFeatureHook``."""
    layers = [(name, m, m.running_mean, m.running_var) for name, m in model.named_modules()
              if isinstance(m, _BatchNorm) and m.running_mean is not None and m.running_var is not None]
    if not layers:
        raise ValueError(f"{_NO_STATS}: {type(model).__name__} has no BatchNorm layer with running statistics; "
                         "pass prior=feature_prior(model, real_images) (our LayerNorm prior) or bn=0")
    return PriorHooks(layers, first_bn_mult)


@torch.no_grad()
def feature_prior(model: nn.Module, images_float: Tensor, layer_type: type[nn.Module] = nn.LayerNorm,
                  batch_size: int = 256) -> Prior:
    """OUR EXTENSION (not in PURER, whose teachers are BN ConvNets): the per-channel mean and (biased) variance
    of the inputs of every ``layer_type`` layer over ``images_float``, ``μ = E[h]``, ``σ² = E[h²] − μ²``, tokens
    flattened for LayerNorm (channel = last dim), batch and space for other layers (channel = dim 1).
    It stands in for BatchNorm running statistics in :func:`ln_prior_hooks`; record it when the teacher is made.
    The model runs in eval mode (its mode is restored); statistics accumulate over batches in float64."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, layer_type)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no {layer_type.__name__} layer: choose a layer_type it has")
    if not torch.is_tensor(images_float) or not images_float.is_floating_point() or len(images_float) == 0:
        raise ValueError("images_float must be a non-empty float tensor (the model's input, e.g. images in [0, 1])")
    sums: dict[str, list] = {name: [0.0, 0.0, 0] for name, _ in layers}

    def hook(mod, inputs, output, name):
        flat = _by_channel(inputs[0], mod).double()
        acc = sums[name]
        acc[0], acc[1], acc[2] = acc[0] + flat.sum(0), acc[1] + flat.square().sum(0), acc[2] + len(flat)

    handles = [m.register_forward_hook(lambda mod, i, o, name=name: hook(mod, i, o, name)) for name, m in layers]
    was_training = model.training
    try:
        model.eval()
        for start in range(0, len(images_float), batch_size):
            model(images_float[start:start + batch_size])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    prior = {}
    for name, (s, sq, n) in sums.items():
        if n:
            mean = s / n
            prior[name] = (mean.float(), (sq / n - mean.square()).clamp_min(0).float())
    return prior


def ln_prior_hooks(model: nn.Module, prior: Prior, first_mult: float = 1.0) -> PriorHooks:
    """Hooks matching the stored statistics of :func:`feature_prior` (OUR EXTENSION for ViT teachers):
    ``Σ_l m_l (‖σ²_l(x) − σ̄²_l‖₂ + ‖μ_l(x) − μ̄_l‖₂)`` over the layers the prior names, the same form as
    DeepInversion's BatchNorm prior (:func:`bn_prior_hooks`); ``m_0 = first_mult``."""
    if not prior:
        raise ValueError(f"{_NO_STATS}: the prior is empty; compute it with feature_prior(model, real_images)")
    modules = dict(model.named_modules())
    missing = [name for name in prior if name not in modules]
    if missing:
        raise ValueError(f"the prior names layers {missing} that {type(model).__name__} does not have; "
                         "compute it with feature_prior(model, ...) on this very model")
    return PriorHooks([(name, modules[name], mean, var) for name, (mean, var) in prior.items()], first_mult)


def total_variation(x: Tensor) -> Tensor:
    """``Σ_{d ∈ {→, ↓, ↘, ↗}} ‖x − shift_d(x)‖₂`` over the whole batch: the 2-norms of the horizontal,
    vertical and both diagonal finite differences (PURER tool.py ``get_images_loss``, DeepInversion)."""
    d1 = x[..., :, :-1] - x[..., :, 1:]
    d2 = x[..., :-1, :] - x[..., 1:, :]
    d3 = x[..., 1:, :-1] - x[..., :-1, 1:]
    d4 = x[..., :-1, :-1] - x[..., 1:, 1:]
    return sum(torch.linalg.vector_norm(d) for d in (d1, d2, d3, d4))


def random_roll(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Jitter ``J``: a cyclic roll of the whole batch by ``(δh, δw)``, each uniform in ``[−max_shift, max_shift]``
    (``torch.roll``; PURER tool.py ``get_images_loss``, ``lim_0 = lim_1 = 2``). A permutation of the pixels."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return x
    dh, dw = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(x, shifts=(dh, dw), dims=(-2, -1))


class InversionLoss:
    """PURER's per-teacher inversion loss (main.py + tool.py ``get_images_loss`` with ``getLoss=True``):

    ``L_inv(x) = CE(M(J(x)), y) + tv · TV(J(x)) + bn · R_prior(J(x)) + l2 · ‖J(x)‖₂``

    with ``J`` a random roll by up to ±``jitter`` px (:func:`random_roll`), ``TV`` :func:`total_variation` and
    ``R_prior`` the BatchNorm prior (:func:`bn_prior_hooks`), or, given ``prior`` (:func:`feature_prior`), our
    LayerNorm prior (:func:`ln_prior_hooks`). Defaults are the official ``var_scale 1e-4, bn_reg_scale 0.01,
    l2_coeff 1e-5, first_bn_multiplier 1``. ``x`` lives in the teacher's input space (floats, the model
    normalises inside); with ``norm=(mean, std)`` TV and L2 are measured on ``(J(x) − mean) / std``, the
    official normalised space (``norm=None``: on ``J(x)``). ``teacher``: an ``nn.Module`` or an object with a
    ``.model`` (a ``Teacher``); it is put in eval mode and its parameters are frozen (``requires_grad=False``).
    With ``bn=0`` no prior is needed.
    """

    def __init__(self, teacher, tv: float = 1e-4, bn: float = 1e-2, l2: float = 1e-5, jitter: int = 2,
                 first_bn_mult: float = 1.0, prior: Prior | None = None,
                 norm: tuple[Sequence[float], Sequence[float]] | None = (WORLD_MEAN, WORLD_STD)):
        model = teacher if isinstance(teacher, nn.Module) else getattr(teacher, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError(f"teacher must be an nn.Module or have a .model module, got {type(teacher).__name__}")
        for name, value in (("tv", tv), ("bn", bn), ("l2", l2), ("first_bn_mult", first_bn_mult)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if int(jitter) != jitter or jitter < 0:
            raise ValueError(f"jitter must be a non-negative integer number of pixels, got {jitter}")
        self.tv, self.bn, self.l2, self.jitter = float(tv), float(bn), float(l2), int(jitter)
        self.hooks: PriorHooks | None = None
        if self.bn > 0:
            self.hooks = (ln_prior_hooks(model, prior, first_bn_mult) if prior is not None
                          else bn_prior_hooks(model, first_bn_mult))
        self.model = model.eval().requires_grad_(False)
        self.norm = None if norm is None else tuple(torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
                                                    for v in norm)

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(L_inv, parts)``; ``parts``: detached ``ce, tv, bn, l2, total`` and the teacher's accuracy ``acc``
        on ``J(x)``. ``generator`` draws the jitter (the global RNG when ``None``)."""
        if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim != 4:
            raise ValueError(f"x must be a float (B, C, H, W) tensor, got {getattr(x, 'dtype', type(x))} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        if not torch.is_tensor(y) or y.dtype != torch.long or y.shape != (len(x),):
            raise ValueError(f"y must be a long tensor of shape ({len(x)},) with the teacher's local labels")
        self.model.eval()
        xj = random_roll(x, self.jitter, generator)
        if self.hooks is not None:
            with self.hooks:
                logits = self.model(xj)
            prior_loss = self.hooks.loss()
        else:
            logits, prior_loss = self.model(xj), xj.new_zeros(())
        if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
            raise ValueError(f"labels must be local to the teacher, in 0..{logits.shape[1] - 1}; got "
                             f"{int(y.min())}..{int(y.max())}")
        z = xj
        if self.norm is not None:
            mean, std = (t.to(xj.device, xj.dtype) for t in self.norm)
            if mean.shape[1] not in (1, x.shape[1]):
                raise ValueError(f"norm has {mean.shape[1]} channels, x has {x.shape[1]}: fix norm or pass None")
            z = (xj - mean) / std
        ce, tv, l2 = F.cross_entropy(logits, y), total_variation(z), torch.linalg.vector_norm(z)
        total = ce + self.tv * tv + self.bn * prior_loss + self.l2 * l2
        parts = {"ce": ce, "tv": tv, "bn": prior_loss, "l2": l2, "total": total,
                 "acc": (logits.argmax(1) == y).float().mean()}
        return total, {k: v.detach() for k, v in parts.items()}


class DynamicDataset(nn.Module):
    """PURER's dynamic pseudo dataset (main.py ``allData``): one learnable tensor X̂ of ``n_classes · per_class``
    images, ``X̂ ~ N(0, 1)`` (seeded) in the normalised space, labels interleaved per class
    (``labels[i] = i mod n_classes``), its own ``Adam(lr=0.25)`` in ``.optimizer``. Models see
    ``x = mean + std · X̂`` (:meth:`images`); with ``mean=0, std=1`` X̂ is the input-space image itself.
    Give ``device`` here: the optimiser holds the parameter made at construction."""

    def __init__(self, n_classes: int, per_class: int, image_size: int | tuple[int, int], channels: int = 3,
                 mean: Sequence[float] = WORLD_MEAN, std: Sequence[float] = WORLD_STD, lr: float = 0.25,
                 seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if n_classes < 1 or per_class < 1 or h < 1 or w < 1:
            raise ValueError(f"n_classes, per_class and image_size must be positive, got {n_classes}, "
                             f"{per_class}, {image_size}")
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(f"mean and std need {channels} entries (std > 0), got {tuple(mean)}, {tuple(std)}")
        self.n_classes, self.per_class = int(n_classes), int(per_class)
        gen = torch.Generator().manual_seed(seed)
        self.latent = nn.Parameter(torch.randn(n_classes * per_class, channels, h, w, generator=gen).to(device))
        self.register_buffer("labels", torch.arange(n_classes, device=device).repeat(per_class))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1))
        self.optimizer = torch.optim.Adam([self.latent], lr=lr)

    def __len__(self) -> int:
        return len(self.labels)

    def _rows(self, index: Tensor, detach: bool) -> Tensor:
        z = self.latent.detach() if detach else self.latent
        return self.mean + self.std * z[index.to(z.device)]

    def images(self, detach: bool = False) -> Tensor:
        """All images in the input space, ``x = mean + std · X̂`` (differentiable unless ``detach``)."""
        return self._rows(torch.arange(len(self)), detach)

    def _check_classes(self, class_ids: Iterable[int]) -> Tensor:
        ids = torch.as_tensor(list(class_ids), dtype=torch.long)
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= self.n_classes or len(ids.unique()) != len(ids):
            raise ValueError(f"class ids must be distinct and in 0..{self.n_classes - 1}, got {ids.tolist()}")
        return ids

    def slice(self, class_ids: Iterable[int], detach: bool = False) -> tuple[Tensor, Tensor]:
        """``(x, y_local)``: the ``per_class`` images of each class in ``class_ids``, interleaved as the official
        per-teacher slice (``class_ids[0], class_ids[1], …`` repeated), ``y_local`` = position in ``class_ids``."""
        ids = self._check_classes(class_ids)
        rows = (ids[None, :] + self.n_classes * torch.arange(self.per_class)[:, None]).reshape(-1)
        return self._rows(rows, detach), torch.arange(len(ids), device=self.labels.device).repeat(self.per_class)

    def sample_episode(self, n_way: int, k_shot: int, q_query: int, gen: torch.Generator | None = None,
                       detach: bool = True, classes: Sequence[int] | None = None
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(support_x, support_y, query_x, query_y)``: ``n_way`` classes drawn without replacement (or
        ``classes``), per class a random ``k_shot`` + ``q_query`` split of its ``per_class`` images, class-major,
        local labels in class order (PURER tool.py ``generate_random_task_data_fromDI``). ``detach=False``
        keeps the graph to X̂ (the adversarial generator step)."""
        if n_way < 2 or k_shot < 1 or q_query < 1:
            raise ValueError(f"need n_way >= 2, k_shot >= 1, q_query >= 1; got {n_way}, {k_shot}, {q_query}")
        if n_way > self.n_classes:
            raise ValueError(f"n_way={n_way}, but the dynamic dataset has only {self.n_classes} classes")
        if k_shot + q_query > self.per_class:
            raise ValueError(f"k_shot + q_query = {k_shot + q_query} > per_class = {self.per_class}: "
                             "make the dataset with per_class >= k_shot + q_query")
        if classes is None:
            ids = torch.randperm(self.n_classes, generator=gen)[:n_way]
        else:
            ids = self._check_classes(classes)
            if len(ids) != n_way:
                raise ValueError(f"classes has {len(ids)} entries but n_way={n_way}")
        picks = torch.stack([torch.randperm(self.per_class, generator=gen)[:k_shot + q_query] for _ in range(n_way)])
        rows = ids[:, None] + self.n_classes * picks
        labels = torch.arange(n_way, device=self.labels.device)
        return (self._rows(rows[:, :k_shot].reshape(-1), detach), labels.repeat_interleave(k_shot),
                self._rows(rows[:, k_shot:].reshape(-1), detach), labels.repeat_interleave(q_query))

    @torch.no_grad()
    def to_uint8(self) -> np.ndarray:
        """Pixels ``round(255 · clamp(mean + std · X̂, 0, 1))`` as uint8 ``(N, C, H, W)`` (the lab's image format;
        the official code clamps the same way in tool.py ``save_image_batch``)."""
        return self.images(detach=True).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
