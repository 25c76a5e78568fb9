"""PURER's meta-learners: MAML, ANIL and ProtoNet on any model with ``features(x)`` and a linear ``head``.

Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning" (CVPR 2023,
arXiv 2303.11183); official code Egg-Hu/PURER, ``methods/maml.py`` (inner/outer loop) and ``main.py``
(meta-test, the ``--approx`` and ``--zero_*`` flags). Everything is functional: the parameters ``θ`` are a
dict ``name -> tensor`` (the model's ``named_parameters``) and a forward pass is
``logits = head_θ(features_θ(x)) = features_θ(x) · Wᵀ + b`` through :func:`torch.func.functional_call`, so that
fast weights are plain tensors and the outer loss is differentiable with respect to ``θ``.

* MAML: ``θ'_{t+1} = θ'_t − α ∇ CE(f_{θ'_t}(x_s), y_s)``, ``θ'_0 = θ``; outer loss ``CE(f_{θ'_T}(x_q), y_q)``.
  Second order keeps the graph of the inner gradients (``create_graph``); first order treats them as
  constants (the official ``--approx``).
* ANIL: the same inner loop on the head parameters only; the body is fixed within the episode.
* ProtoNet: ``logits_k(x) = −‖φ_θ(x) − c_k‖²`` with ``c_k`` the mean support feature of class ``k``.

The head (``head_init``): the official CloserLookFewShot MAML keeps an N-way head among the meta-parameters
(``"meta"``). The default ``"zero_test"`` meta-trains that head but starts every meta-test episode from a
zero head of width N (the official ``--zero_test``); ``"zero"`` also zeroes it in every training episode
(``--zero_train``, tool.py ``set_zero``: the "zeroing trick" of Kao et al., ICLR 2022). A zero head makes
the first inner step a prototype-like classifier and removes the arbitrary class order of a learned head.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

KINDS = ("maml", "anil", "protonet")
HEAD_INITS = ("zero_test", "meta", "zero")
HEAD = "head."
Params = dict[str, torch.Tensor]


class _FeatureView(nn.Module):
    """``model.features`` as a ``forward``, so that :func:`functional_call` can run it with other weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def check_model(model: nn.Module) -> None:
    """Raise a ValueError unless ``model`` has a ``features(x)`` method and a ``head`` that is an ``nn.Linear``."""
    if not callable(getattr(model, "features", None)) or not isinstance(getattr(model, "head", None), nn.Linear):
        raise ValueError(  # noqa: TRY004 (the package raises ValueError for every bad input)
            f"the meta-learner needs a model with a features(x) method and an nn.Linear `head` "
            f"(got {type(model).__name__}): wrap the backbone so that logits = head(features(x))")


def features(model: nn.Module, params: Params, x: torch.Tensor, buffers: Params | None = None) -> torch.Tensor:
    """``φ_θ(x)``: ``model.features`` run with the body entries of ``params`` (and ``buffers`` if given)."""
    weights = {f"model.{k}": v for k, v in params.items() if not k.startswith(HEAD)}
    weights.update({f"model.{k}": v for k, v in (buffers or {}).items()})
    return functional_call(_FeatureView(model), weights, (x,))


def logits(model: nn.Module, params: Params, x: torch.Tensor, buffers: Params | None = None) -> torch.Tensor:
    """``f_θ(x) = φ_θ(x) · Wᵀ + b`` with ``W, b = params["head.weight"], params["head.bias"]`` (any width)."""
    return _head(features(model, params, x, buffers), params)


def _head(feats: torch.Tensor, params: Params) -> torch.Tensor:
    return F.linear(feats, params[HEAD + "weight"], params.get(HEAD + "bias"))


def zero_head(model: nn.Module, params: Params, n_way: int) -> Params:
    """``params`` with the head replaced by ``W = 0 ∈ R^{N×d}``, ``b = 0 ∈ R^N`` (official tool.py ``set_zero``).

    The zeros are fresh leaves that require grad, so that an inner loop can adapt them.
    """
    check_model(model)
    w = params[HEAD + "weight"]
    new = dict(params)
    new[HEAD + "weight"] = w.new_zeros(n_way, w.shape[1]).requires_grad_()
    if model.head.bias is not None:
        new[HEAD + "bias"] = w.new_zeros(n_way).requires_grad_()
    return new


def _check_inner(inner_lr: float, steps: int) -> None:
    if not inner_lr > 0 or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"the inner loop needs inner_lr > 0 and an integer steps >= 1 (got inner_lr={inner_lr}, "
                         f"steps={steps}): the official values are inner_lr=0.01, steps=1")


def _sgd(params: Params, loss: torch.Tensor, names: list[str], inner_lr: float, first_order: bool) -> Params:
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not first_order, allow_unused=True)
    new = dict(params)
    new.update({n: params[n] - inner_lr * g for n, g in zip(names, grads) if g is not None})
    return new


def maml_adapt(model: nn.Module, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
               inner_lr: float = 0.01, steps: int = 1, first_order: bool = False,
               buffers: Params | None = None) -> Params:
    """MAML inner loop: ``θ'_{t+1} = θ'_t − α ∇_{θ'} CE(f_{θ'_t}(x_s), y_s)`` for ``t < steps``, ``θ'_0 = θ``.

    Every entry of ``params`` that requires grad is adapted (official methods/maml.py: all weights, plain
    SGD). ``first_order=False`` builds the graph of the inner gradients, so the outer gradient has the
    Hessian term ``(I − α∇²L_s)``; ``first_order=True`` drops it (official ``--approx``).
    """
    _check_inner(inner_lr, steps)
    names = [n for n, p in params.items() if p.requires_grad]
    for _ in range(steps):
        params = _sgd(params, F.cross_entropy(logits(model, params, support_x, buffers), support_y), names,
                      inner_lr, first_order)
    return params


def anil_adapt(model: nn.Module, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
               inner_lr: float = 0.01, steps: int = 1, first_order: bool = False,
               buffers: Params | None = None) -> Params:
    """ANIL inner loop: the MAML update on the head only, ``(W, b)_{t+1} = (W, b)_t − α ∇_{W,b} CE``.

    The body entries of the result are the very tensors of ``params`` (untouched); the support features
    ``φ_θ(x_s)`` are computed once. Raghu et al., ICLR 2020; the PURER-Plus code offers it as a meta-learner.
    """
    _check_inner(inner_lr, steps)
    feats = features(model, params, support_x, buffers)
    names = [n for n in params if n.startswith(HEAD)]
    for _ in range(steps):
        params = _sgd(params, F.cross_entropy(_head(feats, params), support_y), names, inner_lr, first_order)
    return params


def protonet_logits(model: nn.Module, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                    query_x: torch.Tensor, n_way: int, buffers: Params | None = None) -> torch.Tensor:
    """ProtoNet: ``logits[q, k] = −‖φ_θ(x_q) − c_k‖²₂`` with ``c_k = mean{φ_θ(x_s) : y_s = k}``.

    Snell et al., NeurIPS 2017 (a PURER-Plus meta-learner). Support and query go through the body in one
    batch (with BatchNorm in train mode they share the batch statistics); the head is not used.
    """
    _check_labels(support_y, n_way, "support_y")
    feats = features(model, params, torch.cat([support_x, query_x]), buffers)
    f_s, f_q = feats[:len(support_x)], feats[len(support_x):]
    onehot = F.one_hot(support_y, n_way).to(f_s.dtype)
    protos = onehot.T @ f_s / onehot.sum(0)[:, None]
    return -((f_q[:, None, :] - protos[None]) ** 2).sum(-1)


def _check_labels(y: torch.Tensor, n_way: int, name: str) -> None:
    if y.dtype != torch.long or y.dim() != 1 or (len(y) and (y.min() < 0 or y.max() >= n_way)):
        raise ValueError(f"{name} must be a 1-D long tensor of local labels 0..{n_way - 1} (got dtype {y.dtype}, "
                         f"shape {tuple(y.shape)}): relabel the episode's classes as 0..N-1")
    if name == "support_y" and len(torch.unique(y)) != n_way:
        raise ValueError(f"support_y must hold every class 0..{n_way - 1} at least once (it has "
                         f"{sorted(torch.unique(y).tolist())}): draw K >= 1 support images per class")


def unpack_episode(episode: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(support_x, support_y, query_x, query_y)`` of an object with those attributes or of a 4-tuple;
    the images must already be float tensors (the model's input space)."""
    if all(hasattr(episode, a) for a in ("support_x", "support_y", "query_x", "query_y")):
        parts = (episode.support_x, episode.support_y, episode.query_x, episode.query_y)
    elif isinstance(episode, (tuple, list)) and len(episode) == 4:
        parts = tuple(episode)
    else:
        raise ValueError(f"an episode must have support_x, support_y, query_x, query_y (got {type(episode).__name__})"
                         ": pass an Episode or the 4-tuple of DynamicDataset.sample_episode")
    for name, x in zip(("support_x", "query_x"), parts[::2]):
        if not (torch.is_tensor(x) and x.is_floating_point()):
            raise ValueError(f"{name} must be a float tensor (got {getattr(x, 'dtype', type(x).__name__)}): "
                             "convert uint8 images with protocols.transfer.to_input")
    return parts  # type: ignore[return-value]


def query_logits(model: nn.Module, params: Params, kind: str, support_x: torch.Tensor, support_y: torch.Tensor,
                 query_x: torch.Tensor, n_way: int, inner_lr: float = 0.01, steps: int = 1, first_order: bool = False,
                 buffers: Params | None = None) -> torch.Tensor:
    """Query logits after the inner loop of ``kind``: ``f_{θ'}(x_q)`` with ``θ'`` from :func:`maml_adapt` or
    :func:`anil_adapt` (the head must be ``n_way`` wide), or :func:`protonet_logits`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)} (got {kind!r})")
    if kind == "protonet":
        return protonet_logits(model, params, support_x, support_y, query_x, n_way, buffers)
    width = params[HEAD + "weight"].shape[0]
    if width != n_way:
        raise ValueError(f"the head has {width} outputs but the episode is {n_way}-way: build the model with a "
                         f"{n_way}-way head, or use head_init='zero' / 'zero_test' (a zero N-way head per episode)")
    adapt = maml_adapt if kind == "maml" else anil_adapt
    fast = adapt(model, params, support_x, support_y, inner_lr, steps, first_order, buffers)
    return logits(model, fast, query_x, buffers)


def episode_loss(model: nn.Module, params: Params, episode: Any, kind: str = "maml", inner_lr: float = 0.01,
                 steps: int = 1, first_order: bool = False,
                 buffers: Params | None = None) -> tuple[torch.Tensor, float]:
    """Outer loss ``CE(f_{θ'}(x_q), y_q)`` of one episode (``θ'`` from the inner loop of ``kind``) and the query
    accuracy in [0, 1]; for ProtoNet ``CE(−‖φ(x_q) − c‖², y_q)``. The head width must equal N."""
    sx, sy, qx, qy = unpack_episode(episode)
    n_way = int(sy.max()) + 1 if len(sy) else 0
    _check_labels(sy, n_way, "support_y")
    _check_labels(qy, n_way, "query_y")
    out = query_logits(model, params, kind, sx, sy, qx, n_way, inner_lr, steps, first_order, buffers)
    acc = (out.argmax(1) == qy).float().mean().item()
    return F.cross_entropy(out, qy), acc


def maml_outer_loss(model: nn.Module, params: Params, episode: Any, inner_lr: float = 0.01, steps: int = 1,
                    first_order: bool = False) -> tuple[torch.Tensor, float]:
    """MAML's outer loss ``CE(f_{θ'}(x_q), y_q)``, ``θ' = maml_adapt(θ; x_s, y_s)``, and the query accuracy in
    [0, 1] (official methods/maml.py ``run``, which reports it in percent)."""
    return episode_loss(model, params, episode, "maml", inner_lr, steps, first_order)


@dataclass
class MetaLearner:
    """One of MAML / ANIL / ProtoNet with its inner-loop settings (official: inner_lr 0.01, 1 step, second
    order); ``test_steps`` inner steps at meta-test (None: ``inner_steps``); ``head_init`` see the module doc."""

    kind: str = "maml"
    inner_lr: float = 0.01
    inner_steps: int = 1
    first_order: bool = False
    test_steps: int | None = None
    head_init: str = "zero_test"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {', '.join(HEAD_INITS)} (got {self.head_init!r})")
        _check_inner(self.inner_lr, self.inner_steps)
        _check_inner(self.inner_lr, self.inner_steps if self.test_steps is None else self.test_steps)

    def _params(self, model: nn.Module, n_way: int, test: bool) -> Params:
        check_model(model)
        params = dict(model.named_parameters())
        zero = self.kind != "protonet" and (self.head_init == "zero" or (test and self.head_init == "zero_test"))
        return zero_head(model, params, n_way) if zero else params

    def outer_loss(self, model: nn.Module, episode: Any) -> tuple[torch.Tensor, float]:
        """The episode's outer loss on the model's current parameters (differentiable w.r.t. them; BatchNorm
        buffers update as in any forward pass of the model's current mode) and the query accuracy in [0, 1]."""
        sy = unpack_episode(episode)[1]
        n_way = int(sy.max()) + 1 if len(sy) else 0
        return episode_loss(model, self._params(model, n_way, test=False), episode, self.kind, self.inner_lr,
                            self.inner_steps, self.first_order)

    def adapt_predict(self, model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
                      query_x: torch.Tensor, n_way: int) -> torch.Tensor:
        """Meta-test: adapt a copy of the weights on the support set and return the query logits (N·Q, N).

        Transductive like the official code: the model runs in train mode (BatchNorm on batch statistics) on
        a clone of its buffers, so neither its parameters, its buffers nor its mode change; no gradient
        reaches the meta-parameters (first-order inner loop on detached copies: the same fast weights as the
        second-order one); parameters with ``requires_grad=False`` stay fixed, as in training.
        """
        unpack_episode((support_x, support_y, query_x, support_y))
        device = next(model.parameters()).device
        sx, sy, qx = support_x.to(device), torch.as_tensor(support_y).to(device), query_x.to(device)
        _check_labels(sy, n_way, "support_y")
        was_training = model.training
        buffers = {k: b.clone() for k, b in model.named_buffers()}
        try:
            model.train()
            with torch.enable_grad():
                params = {k: p.detach().requires_grad_(p.requires_grad)
                          for k, p in self._params(model, n_way, test=True).items()}
                steps = self.inner_steps if self.test_steps is None else self.test_steps
                out = query_logits(model, params, self.kind, sx, sy, qx, n_way, self.inner_lr, steps, True, buffers)
        finally:
            model.train(was_training)
        return out.detach()

    def predictor(self, model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """``adapt_predict`` as ``(support_x, support_y, query_x) -> logits`` with ``N`` = number of support
        classes (the callback of protocols.episodes.evaluate_episodes)."""
        return lambda sx, sy, qx: self.adapt_predict(model, sx, sy, qx, len(torch.unique(torch.as_tensor(sy))))
