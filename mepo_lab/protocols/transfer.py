"""Transfer protocols of zapping: continual (one image per step), i.i.d. few-shot, zero-shot (least squares).

Frati, Traft, Clune, Cheney, "Reset It and Forget It: Relearning Last-Layer Weights Improves Continual and
Transfer Learning", ECAI 2024 (arXiv 2310.07996); official code uvm-neurobotics-lab/reset-it-and-forget-it:
``anml.py::test_train`` (continual, ``eval_method: seq``), ``iid.py::test_train`` (i.i.d.), ``zero_shot.py``.

A pretrained ``body`` (float images ``(B, 3, H, W)`` in [0, 1] -> features ``(B, d)``) gets a fresh linear
head ``z = W f + b`` with K outputs: ``W_kj ~ N(0, 2/d)`` (Kaiming normal, drawn from
``torch.Generator().manual_seed(seed)`` as ``randn(K, d) * sqrt(2/d)``), ``b = 0``. ``mode="head"`` freezes
the body and computes its features once; ``mode="all"`` trains a deep copy of the body with the head. The
body passed in is never changed (weights, device, train/eval flags). The body always runs in eval mode (no
dropout, frozen normalisation statistics), also while the copy trains, as ``iid.py::test_train`` does
(``model.eval()`` once, never ``train()``).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mepo_lab.data.base import ImageArrays
from mepo_lab.device import flush_denormal, pick_device

MODES = ("head", "all")
_EVAL_BATCH = 256
Embed = Callable[[np.ndarray], torch.Tensor]


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 images ``(N, 3, H, W)`` -> float32 ``x = images / 255`` in [0, 1] (models normalise internally)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {images.shape}; "
                         "pass ImageArrays.images")
    return torch.from_numpy(images).float().div_(255)


@dataclass
class TransferResult:
    """One continual-transfer run (see :func:`continual_transfer`)."""

    mode: str                    # "head" (fresh head on a frozen body) | "all" (whole network)
    lr: float
    classes_learned: list[int]   # 1..K
    accuracy: list[float]        # after class k: accuracy on the test images of classes 0..k-1
    final_accuracy: float        # accuracy on all K classes' test images at the end (== accuracy[-1])
    losses: np.ndarray           # (K, n_per_class): loss of every training image before its update
    seconds: float


def continual_transfer(body: nn.Module, feature_dim: int, train: ImageArrays, test: ImageArrays, *,
                       lr: float, mode: str = "head", seed: int = 0, device: str | torch.device = "cpu",
                       batch_size: int = 256) -> TransferResult:
    """Continual transfer: K new classes one after the other, one Adam step per image, each image seen once.

    Classes in label order ``c = 0..K-1``, the training images of a class in dataset order; for each image
    ``l_i = CE(W f(x_i) + b, c)`` is recorded in ``losses[c, j]`` and then one Adam step (batch of 1, rate
    ``lr``) is taken on it. After class c::

        accuracy[c] = mean over test (x, y) with y <= c of 1[argmax_k (W f(x) + b)_k = y]

    (argmax over all K outputs, rows of unseen classes included); ``final_accuracy = accuracy[-1]``.
    ``batch_size`` only sets the size of the no-grad feature passes. Classes with fewer training images
    than the largest class leave NaN at the end of their ``losses`` row. Official: ``anml.py::test_train``
    with ``eval_method: seq`` (it evaluates every 50 classes; here after every class), Frati et al. 2024.
    """
    t0 = perf_counter()
    per_class = _check(train, test, lr, mode)
    dev = _device(device)
    with flush_denormal():
        embed = _embedders(body, train, test, mode, dev, batch_size, feature_dim)
        return _continual(embed, per_class, test.targets, feature_dim, lr, mode, seed, dev, t0)


def best_continual_transfer(body: nn.Module, feature_dim: int, train: ImageArrays, test: ImageArrays,
                            lrs: Sequence[float], mode: str = "head", seed: int = 0,
                            device: str | torch.device = "cpu") -> tuple[TransferResult, list[TransferResult]]:
    """Every ``lr`` of the grid -> ``(the run with the highest final_accuracy, all runs in grid order)``.

    Ties go to the earliest lr of the grid. Every run starts from the same head (same ``seed``); in head
    mode the features are computed once for the whole grid (each run's ``seconds`` includes that pass).
    Choosing the lr on the test images is what the paper does (a grid, e.g. 0.055 ... 4e-5 in
    ``learning-rates.yml``, the best reported), so the best accuracy is optimistic.
    """
    if len(lrs) == 0:
        raise ValueError("lrs is empty; pass a grid such as (1e-2, 1e-3, 1e-4)")
    t0 = perf_counter()
    per_class = _check(train, test, min(lrs), mode)  # the smallest lr is the one that can be <= 0
    if mode == "all":
        runs = [continual_transfer(body, feature_dim, train, test, lr=lr, mode=mode, seed=seed, device=device)
                for lr in lrs]
    else:
        dev = _device(device)
        embed = _embedders(body, train, test, mode, dev, _EVAL_BATCH, feature_dim)
        shared = perf_counter() - t0
        runs = [_continual(embed, per_class, test.targets, feature_dim, lr, mode, seed, dev, perf_counter() - shared)
                for lr in lrs]
    return max(runs, key=lambda r: r.final_accuracy), runs


def iid_transfer(body: nn.Module, feature_dim: int, train: ImageArrays, test: ImageArrays, *, shots: int,
                 epochs: int, lr: float, batch_size: int = 32, mode: str = "head", seed: int = 0,
                 device: str | torch.device = "cpu") -> float:
    """Standard (i.i.d.) transfer: a fresh head (and in mode "all" a copy of the body) trained with Adam.

    Support set: the first ``shots`` training images of every class (dataset order); ``epochs`` passes over
    it in shuffled minibatches of ``batch_size``, minimising ``mean CE(W f(x) + b, y)``; returns the test
    accuracy ``mean 1[argmax_k (W f(x) + b)_k = y]`` over all test images. The seeded generator draws the
    head, then one permutation per epoch. Official: ``iid.py::test_train`` (Frati et al. 2024).
    """
    per_class = _check(train, test, lr, mode)
    fewest = min(len(ix) for ix in per_class)
    if not 1 <= shots <= fewest:
        raise ValueError(f"shots must be in [1, {fewest}], got {shots}: {fewest} is the fewest training images "
                         "of a class; lower shots or use a split with more images per class")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    dev = _device(device)
    support = np.concatenate([ix[:shots] for ix in per_class])
    sub = train.subset(support)
    train_embed, test_embed, params = _embedders(body, sub, test, mode, dev, _EVAL_BATCH, feature_dim)
    gen = torch.Generator().manual_seed(seed)
    weight, bias = _fresh_head(feature_dim, train.n_classes, gen, dev)
    opt = torch.optim.Adam(params + [weight, bias], lr=lr)
    y = torch.as_tensor(sub.targets)
    with flush_denormal():
        _fit(opt, epochs, batch_size, len(support), gen, train_embed, weight, bias, y, dev)
    return _accuracy(test_embed(np.arange(len(test))), weight, bias, test.targets)


def _fit(opt, epochs, batch_size, n, gen, train_embed, weight, bias, y, dev) -> None:
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, len(perm), batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(F.linear(train_embed(idx.numpy()), weight, bias), y[idx].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()


def lstsq_head(features: torch.Tensor, targets: torch.Tensor, n_classes: int,
               ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares head ``(W (K, d), b (K,))`` minimising ``||X W^T + 1 b^T - Y||^2 + ridge ||W||^2``.

    ``Y`` is one-hot ``(N, K)``; the bias is not penalised, so with centred ``X~ = X - x_bar``,
    ``Y~ = Y - y_bar``::

        W^T = (X~^T X~ + ridge I)^-1 X~^T Y~,    b = y_bar - W x_bar

    solved in float64 as the least-squares problem ``[X~; sqrt(ridge) I] W^T = [Y~; 0]`` (minimum norm when
    singular); returned in the dtype and on the device of ``features``. ``ridge=0`` is the fit of the
    official ``zero_shot.py`` / ``reinit_method: lstsq`` (``np.linalg.lstsq`` on ``[X, 1]``; the same
    solution when X has full column rank). Frati et al. 2024.
    """
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty (N, d) tensor, got shape {tuple(features.shape)}")
    y = torch.as_tensor(targets).long().cpu()
    if y.shape != (len(features),) or (len(y) and (y.min() < 0 or y.max() >= n_classes)):
        raise ValueError(f"targets must be {len(features)} labels in [0, {n_classes}), got shape "
                         f"{tuple(y.shape)}; pass one integer label per feature row")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}; use 0 for the plain least-squares fit")
    x = features.detach().cpu().double()
    onehot = F.one_hot(y, n_classes).double()
    x_bar, y_bar = x.mean(0), onehot.mean(0)
    d = x.shape[1]
    a = torch.cat([x - x_bar, math.sqrt(ridge) * torch.eye(d, dtype=x.dtype)])
    rhs = torch.cat([onehot - y_bar, torch.zeros(d, n_classes, dtype=x.dtype)])
    w = torch.linalg.lstsq(a, rhs, driver="gelsd").solution.T
    b = y_bar - w @ x_bar
    return w.to(features), b.to(features)


def zero_shot_accuracy(body: nn.Module, train: ImageArrays, test: ImageArrays, ridge: float = 1e-3,
                       device: str | torch.device = "cpu") -> float:
    """Test accuracy of the :func:`lstsq_head` fitted on the frozen features of all training images.

    No gradient step: ``(W, b) = lstsq_head(f(train), y, K, ridge)``, accuracy
    ``mean 1[argmax_k (W f(x) + b)_k = y]`` over the test images. Official: ``zero_shot.py`` (Frati et al. 2024).
    """
    _check_data(train, test)
    dev = _device(device)
    with _placed(body, dev) as frozen:
        train_x = _features(frozen, train.images, dev, _EVAL_BATCH, None)
        test_x = _features(frozen, test.images, dev, _EVAL_BATCH, train_x.shape[1])
    weight, bias = lstsq_head(train_x, torch.as_tensor(train.targets), train.n_classes, ridge)
    return _accuracy(test_x, weight, bias, test.targets)


def curve_auc(result: TransferResult) -> float:
    """Area under the accuracy-vs-classes-learned curve, normalised: ``AUC = (1/K) sum_k accuracy[k]``."""
    if len(result.accuracy) == 0:
        raise ValueError("result.accuracy is empty; pass the result of continual_transfer")
    return float(np.mean(result.accuracy))


# ---------------------------------------------------------------- internals
def _check(train: ImageArrays, test: ImageArrays, lr: float, mode: str) -> list[np.ndarray]:
    """Validate lr, mode and the data; the training indices of each class, dataset order."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}; pick one from a grid such as 1e-2 ... 1e-4")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}: 'head' trains a fresh head on the "
                         "frozen body, 'all' trains a copy of the whole network")
    return _check_data(train, test)


def _check_data(train: ImageArrays, test: ImageArrays) -> list[np.ndarray]:
    """Non-empty train and test sets over the same K classes, each class present in both."""
    if len(train) == 0 or len(test) == 0 or train.n_classes == 0:
        raise ValueError(f"empty dataset: {len(train)} training and {len(test)} test images, "
                         f"{train.n_classes} classes; pass at least one image of every class to each")
    if train.n_classes != test.n_classes:
        raise ValueError(f"train has {train.n_classes} classes but test has {test.n_classes}; the head needs one "
                         "label set: pass matching splits (e.g. FewShotSplit.transfer and .transfer_test)")
    k = train.n_classes
    for part in (train, test):
        if part.targets.min() < 0 or part.targets.max() >= k or len(np.unique(part.targets)) != k:
            raise ValueError(f"{part.name}: every class 0..{k - 1} needs at least one image and labels must "
                             f"lie in [0, {k}); got labels {np.unique(part.targets)[:10]}...")
    return [np.flatnonzero(train.targets == c) for c in range(k)]


def _device(device: str | torch.device) -> torch.device:
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@contextmanager
def _placed(body: nn.Module, dev: torch.device) -> Iterator[nn.Module]:
    """The body in eval mode on ``dev``: itself when it already lives there (flags restored), else a copy."""
    tensors = [*body.parameters(), *body.buffers()]
    if any(t.device != dev for t in tensors):
        body = copy.deepcopy(body).to(dev)
    flags = [(m, m.training) for m in body.modules()]
    body.eval()
    try:
        yield body
    finally:
        for m, flag in flags:
            m.training = flag


@torch.no_grad()
def _features(body: nn.Module, images: np.ndarray, dev: torch.device, batch_size: int,
              feature_dim: int | None) -> torch.Tensor:
    """``f(x)`` for every image, float32 on ``dev``, in batches of ``batch_size`` (no gradient)."""
    feats = torch.cat([body(to_input(images[s:s + batch_size]).to(dev)).float()
                       for s in range(0, len(images), max(1, batch_size))])
    if feats.ndim != 2 or (feature_dim is not None and feats.shape[1] != feature_dim):
        raise ValueError(f"the body returns features of shape {tuple(feats.shape)}, expected (N, {feature_dim}); "
                         "pass the body's feature_dim")
    return feats


def _embedders(body: nn.Module, train: ImageArrays, test: ImageArrays, mode: str, dev: torch.device,
               batch_size: int, feature_dim: int) -> tuple[Embed, Embed, list[nn.Parameter]]:
    """``(train index -> features, test index -> features (no grad), body parameters to train)``."""
    if mode == "head":
        with _placed(body, dev) as frozen:
            train_x = _features(frozen, train.images, dev, batch_size, feature_dim)
            test_x = _features(frozen, test.images, dev, batch_size, feature_dim)
        return (lambda idx: train_x[torch.as_tensor(idx, device=dev)],
                lambda idx: test_x[torch.as_tensor(idx, device=dev)], [])
    net = copy.deepcopy(body).to(dev).eval().requires_grad_(True)
    _features(net, train.images[:1], dev, 1, feature_dim)
    return (lambda idx: net(to_input(train.images[idx]).to(dev)),
            lambda idx: _features(net, test.images[idx], dev, batch_size, feature_dim), list(net.parameters()))


def _fresh_head(d: int, k: int, gen: torch.Generator, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``W = randn(k, d) * sqrt(2/d)`` (Kaiming normal, drawn on the CPU from ``gen``), ``b = 0``."""
    weight = (torch.randn(k, d, generator=gen) * math.sqrt(2.0 / d)).to(dev).requires_grad_(True)
    return weight, torch.zeros(k, device=dev, requires_grad=True)


@torch.no_grad()
def _accuracy(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: np.ndarray) -> float:
    pred = F.linear(feats, weight, bias).argmax(1).cpu().numpy()
    return float(np.mean(pred == targets))


def _continual(embed: tuple[Embed, Embed, list[nn.Parameter]], per_class: list[np.ndarray],
               test_targets: np.ndarray, feature_dim: int, lr: float, mode: str, seed: int,
               dev: torch.device, t0: float) -> TransferResult:
    """The per-image loop of :func:`continual_transfer` on given embedders; ``t0``: start of the clock."""
    train_embed, test_embed, params = embed
    k = len(per_class)
    weight, bias = _fresh_head(feature_dim, k, torch.Generator().manual_seed(seed), dev)
    opt = torch.optim.Adam(params + [weight, bias], lr=lr)
    losses = np.full((k, max(len(ix) for ix in per_class)), np.nan)
    accuracy = []
    for c, index in enumerate(per_class):
        label = torch.tensor([c], device=dev)
        for j, i in enumerate(index):
            loss = F.cross_entropy(F.linear(train_embed(np.array([i])), weight, bias), label)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[c, j] = loss.item()
        seen = np.flatnonzero(test_targets <= c)
        accuracy.append(_accuracy(test_embed(seen), weight, bias, test_targets[seen]))
    return TransferResult(mode, float(lr), list(range(1, k + 1)), accuracy, accuracy[-1], losses,
                          perf_counter() - t0)
