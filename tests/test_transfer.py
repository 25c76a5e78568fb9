"""Checks of ``mepo_lab.protocols.transfer`` on tiny hand-made data (the hand computation sits next to each case)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mepo_lab.data.base import ImageArrays
from mepo_lab.protocols import transfer as tr


# ---------------------------------------------------------------- tiny bodies and data
class CornerBody(nn.Module):
    """``f(x) = scale * x[:, :2, 0, 0] + shift``: with scale 2, shift -1 the identity on the 2-D code
    written into pixel (0, 0) (uint8 0 / 128 / 255 -> -1 / ~0 / 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.shift = nn.Parameter(torch.tensor(-1.0))
        self.drop = nn.Dropout(0.5)  # would scramble features if the protocol ran the body in train mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(x[:, :2, 0, 0] * self.scale + self.shift)


class ZeroBody(nn.Module):
    """Constant zero features: ``W f + b = b``, so only the bias learns and every image gets one prediction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 2)


class ProjBody(nn.Module):
    """A fixed random linear map of the pixels to 3 features (generic, not separable)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, 3)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(3, 48, generator=torch.Generator().manual_seed(7)))
            self.proj.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1))


def circle_data(n_classes: int, per_class: int, seed: int = 0, codes: np.ndarray | None = None) -> ImageArrays:
    """Random 4x4 images whose pixel (0, 0) holds class k's point on the unit circle (angle 2 pi k / K),
    or ``codes[i]`` (uint8 pairs) per image; images ordered class by class."""
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(n_classes), per_class)
    images = rng.integers(0, 256, (len(targets), 3, 4, 4), dtype=np.uint8)
    if codes is None:
        angle = 2 * np.pi * np.arange(n_classes) / n_classes
        codes = np.stack([np.cos(angle), np.sin(angle)], 1)[targets]
        codes = np.round((codes + 1) / 2 * 255).astype(np.uint8)
    images[:, :2, 0, 0] = codes
    return ImageArrays(images, targets, [f"c{k}" for k in range(n_classes)], f"circle{seed}")


def body_features(body: nn.Module, data: ImageArrays) -> torch.Tensor:
    with torch.no_grad():
        return body.eval()(tr.to_input(data.images)).double()


def reference_continual(train_x, train_y, test_x, test_y, n_classes, lr, seed):
    """Plain-loop re-implementation: head init of the contract, hand-written softmax gradient and Adam."""
    d = train_x.shape[1]
    w = (torch.randn(n_classes, d, generator=torch.Generator().manual_seed(seed)) * math.sqrt(2 / d)).double()
    b = torch.zeros(n_classes, dtype=torch.float64)
    state = {"w": [torch.zeros_like(w), torch.zeros_like(w)], "b": [torch.zeros_like(b), torch.zeros_like(b)]}
    step, losses, accuracy = 0, [], []
    for c in range(n_classes):
        row = []
        for i in np.flatnonzero(train_y == c):
            p = torch.softmax(w @ train_x[i] + b, 0)
            row.append(-math.log(p[c]))
            grad_b = p - torch.nn.functional.one_hot(torch.tensor(c), n_classes).double()
            grads = {"w": torch.outer(grad_b, train_x[i]), "b": grad_b}
            step += 1
            for name, param in (("w", w), ("b", b)):
                m, v = state[name]
                m.mul_(0.9).add_(0.1 * grads[name])
                v.mul_(0.999).add_(0.001 * grads[name] ** 2)
                m_hat, v_hat = m / (1 - 0.9 ** step), v / (1 - 0.999 ** step)
                param.sub_(lr * m_hat / (v_hat.sqrt() + 1e-8))
        losses.append(row)
        correct = [int((w @ test_x[j] + b).argmax()) == test_y[j] for j in range(len(test_y)) if test_y[j] <= c]
        accuracy.append(sum(correct) / len(correct))
    return accuracy, np.array(losses)


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- to_input
def test_to_input_scales_uint8_to_unit_interval():
    images = np.array([0, 255, 51, 102], np.uint8).reshape(1, 1, 2, 2).repeat(3, axis=1)
    x = tr.to_input(images)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 2, 2)
    assert torch.allclose(x[0, 0].flatten(), torch.tensor([0.0, 1.0, 0.2, 0.4]))  # 51 / 255 = 0.2
    with pytest.raises(ValueError, match="uint8"):
        tr.to_input(images.astype(np.float32))


# ---------------------------------------------------------------- continual transfer
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separable_classes_are_all_learned(seed):
    # 4 classes at the corners of a square, 5 images each: linearly separable, every point a vertex
    train, test = circle_data(4, 5, seed), circle_data(4, 3, seed + 10)
    result = tr.continual_transfer(CornerBody(), 2, train, test, lr=0.5, seed=seed)
    assert result.final_accuracy == 1.0 and result.accuracy[-1] == 1.0
    assert result.mode == "head" and result.lr == 0.5 and result.classes_learned == [1, 2, 3, 4]
    assert result.losses.shape == (4, 5) and result.seconds > 0


@pytest.mark.parametrize("n_classes, per_class", [(3, 1), (4, 3)])
def test_constant_predictor_counts_only_seen_classes(n_classes, per_class):
    # zero features: every test image gets the same prediction argmax(b). After class 0 only class 0 has been
    # trained, b_0 is the largest and only class-0 test images count -> 1.0 (all classes would give 1/K).
    # A constant prediction over k equally sized seen classes is right on 1/k of them or on none; at the end
    # the predicted class is one of the K -> exactly 1/K. The first loss is CE of uniform logits = ln K.
    train, test = circle_data(n_classes, per_class), circle_data(n_classes, 2, 1)
    result = tr.continual_transfer(ZeroBody(), 2, train, test, lr=0.1)
    assert len(result.accuracy) == n_classes and result.accuracy[0] == 1.0
    for k, acc in enumerate(result.accuracy, start=1):
        assert acc in (0.0, pytest.approx(1 / k))
    assert result.final_accuracy == pytest.approx(1 / n_classes)
    assert result.losses[0, 0] == pytest.approx(math.log(n_classes))


@pytest.mark.parametrize("lr, seed", [(0.05, 0), (0.01, 3)])
def test_matches_plain_loop_reimplementation(lr, seed):
    body = ProjBody()
    train, test = circle_data(3, 4, 0), circle_data(3, 3, 1)
    result = tr.continual_transfer(body, 3, train, test, lr=lr, seed=seed)
    accuracy, losses = reference_continual(body_features(body, train), train.targets, body_features(body, test),
                                           test.targets, 3, lr, seed)
    assert result.accuracy == pytest.approx(accuracy, abs=1e-12)
    assert result.losses.shape == (3, 4)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-4, atol=1e-5)


def test_first_loss_is_fresh_head_cross_entropy():
    # before any step the head is W = randn(K, d, generator seeded) * sqrt(2 / d), b = 0: the first loss is
    # CE(W f(x_0), 0) whatever the lr
    body, train, test = ProjBody(), circle_data(3, 2, 0), circle_data(3, 1, 1)
    f0 = body_features(body, train)[0].float()
    w = torch.randn(3, 3, generator=torch.Generator().manual_seed(5)) * math.sqrt(2 / 3)
    want = float(-torch.log_softmax(w @ f0, 0)[0])
    for lr in (1e-3, 0.3):
        result = tr.continual_transfer(body, 3, train, test, lr=lr, seed=5)
        assert result.losses[0, 0] == pytest.approx(want, rel=1e-5)


def test_deterministic_given_seed():
    body, train, test = ProjBody(), circle_data(3, 3, 0), circle_data(3, 2, 1)
    a, b = (tr.continual_transfer(body, 3, train, test, lr=0.02, seed=4) for _ in range(2))
    assert a.accuracy == b.accuracy and np.array_equal(a.losses, b.losses)
    other = tr.continual_transfer(body, 3, train, test, lr=0.02, seed=5)
    assert other.losses[0, 0] != a.losses[0, 0]  # another head


def test_unequal_class_sizes_leave_nan_in_losses():
    train = circle_data(2, 3).subset(np.array([0, 1, 2, 3]))  # class 0: 3 images, class 1: 1
    result = tr.continual_transfer(CornerBody(), 2, train, circle_data(2, 1, 1), lr=0.1)
    assert result.losses.shape == (2, 3)
    assert np.isfinite(result.losses[0]).all() and np.isfinite(result.losses[1, 0])
    assert np.isnan(result.losses[1, 1:]).all()


@pytest.mark.parametrize("mode", ["head", "all"])
def test_body_left_untouched(mode):
    body = CornerBody()
    body.train()
    body.drop.eval()  # mixed flags must come back as they were
    before = state_copy(body)
    tr.continual_transfer(body, 2, circle_data(2, 3), circle_data(2, 2, 1), lr=0.1, mode=mode)
    after = body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert body.training and not body.drop.training
    assert all(p.requires_grad for p in body.parameters())


def test_all_mode_trains_a_copy_of_the_body():
    # even a body frozen by its owner: the copy is trained. Same head and same first image -> the same first
    # loss; after the first step the copy's scale/shift have moved, so later losses differ from head mode.
    body = CornerBody().requires_grad_(False)
    train, test = circle_data(2, 4), circle_data(2, 2, 1)
    head = tr.continual_transfer(body, 2, train, test, lr=0.05, mode="head")
    full = tr.continual_transfer(body, 2, train, test, lr=0.05, mode="all")
    assert full.mode == "all" and full.losses.shape == (2, 4)
    assert full.losses[0, 0] == pytest.approx(head.losses[0, 0], rel=1e-6)
    assert not np.allclose(full.losses[0, 1:], head.losses[0, 1:])
    assert body.scale.item() == 2.0 and body.shift.item() == -1.0


def test_feature_dim_mismatch_is_reported():
    with pytest.raises(ValueError, match="feature_dim"):
        tr.continual_transfer(CornerBody(), 5, circle_data(2, 2), circle_data(2, 1, 1), lr=0.1)


def _empty() -> ImageArrays:
    return ImageArrays(np.zeros((0, 3, 4, 4), np.uint8), np.zeros(0, np.int64), ["c0", "c1"], "empty")


ERROR_CASES = [
    ({"lr": 0.0}, "lr must be > 0"),
    ({"lr": -1e-3}, "lr must be > 0"),
    ({"lr": 0.1, "mode": "body"}, "mode must be one of"),
    ({"lr": 0.1, "train": _empty()}, "empty dataset"),
    ({"lr": 0.1, "test": _empty()}, "empty dataset"),
    ({"lr": 0.1, "test": circle_data(3, 1, 1)}, "train has 2 classes but test has 3"),
    ({"lr": 0.1, "test": circle_data(2, 1, 1).subset(np.array([0]))}, "every class"),
]


@pytest.mark.parametrize("kwargs, match", ERROR_CASES)
def test_continual_errors(kwargs, match):
    args = {"train": circle_data(2, 2), "test": circle_data(2, 1, 1)} | kwargs
    with pytest.raises(ValueError, match=match):
        tr.continual_transfer(CornerBody(), 2, **args)


# ---------------------------------------------------------------- best over a grid
def test_best_continual_transfer_is_max_over_grid():
    body, train, test = CornerBody(), circle_data(4, 5), circle_data(4, 3, 10)
    lrs = [1e-3, 0.5, 0.01]
    best, runs = tr.best_continual_transfer(body, 2, train, test, lrs)
    assert [r.lr for r in runs] == lrs
    assert best.final_accuracy == max(r.final_accuracy for r in runs) == 1.0
    assert best is runs[1]
    single = tr.continual_transfer(body, 2, train, test, lr=0.01)  # the shared-feature path gives the same run
    assert runs[2].accuracy == single.accuracy and np.array_equal(runs[2].losses, single.losses)


def test_best_ties_go_to_first_lr_and_grid_is_checked():
    best, runs = tr.best_continual_transfer(ZeroBody(), 2, circle_data(2, 1), circle_data(2, 1, 1), [0.1, 0.2])
    assert runs[0].final_accuracy == runs[1].final_accuracy == 0.5 and best is runs[0]
    with pytest.raises(ValueError, match="lrs is empty"):
        tr.best_continual_transfer(ZeroBody(), 2, circle_data(2, 1), circle_data(2, 1, 1), [])
    with pytest.raises(ValueError, match="lr must be > 0"):
        tr.best_continual_transfer(ZeroBody(), 2, circle_data(2, 1), circle_data(2, 1, 1), [0.1, 0.0])


# ---------------------------------------------------------------- i.i.d. transfer
def flipped_after_two() -> ImageArrays:
    # class 0: 2 images at (1, 0), then 3 at (-1, 0); class 1 the other way round
    right, left = [255, 128], [0, 128]
    codes = np.array([right] * 2 + [left] * 3 + [left] * 2 + [right] * 3, np.uint8)
    return circle_data(2, 5, codes=codes)


@pytest.mark.parametrize("shots, want", [(2, 1.0), (5, 0.0)])
def test_iid_uses_the_first_shots_images(shots, want):
    # test: class 0 at (1, 0), class 1 at (-1, 0). The first 2 shots agree with it (-> 1.0); all 5 shots hold
    # 3 of 5 images per class on the wrong side, so the fitted head flips both classes (-> 0.0)
    test = circle_data(2, 3, 1, codes=np.array([[255, 128]] * 3 + [[0, 128]] * 3, np.uint8))
    acc = tr.iid_transfer(CornerBody(), 2, flipped_after_two(), test, shots=shots, epochs=60, lr=0.1, batch_size=4)
    assert acc == want


@pytest.mark.parametrize("mode", ["head", "all"])
def test_iid_learns_separable_classes_and_is_deterministic(mode):
    body, train, test = CornerBody(), circle_data(3, 4), circle_data(3, 2, 1)
    before = state_copy(body)
    runs = [tr.iid_transfer(body, 2, train, test, shots=3, epochs=40, lr=0.05, mode=mode, seed=1) for _ in range(2)]
    assert runs[0] == runs[1] == 1.0
    assert all(torch.equal(before[k], v) for k, v in body.state_dict().items())


@pytest.mark.parametrize("kwargs, match", [
    ({"shots": 0}, r"shots must be in \[1, 4\]"),
    ({"shots": 5}, r"shots must be in \[1, 4\], got 5"),
    ({"shots": 2, "epochs": 0}, "epochs and batch_size must be >= 1"),
    ({"shots": 2, "batch_size": 0}, "epochs and batch_size must be >= 1"),
    ({"shots": 2, "lr": 0.0}, "lr must be > 0"),
    ({"shots": 2, "mode": "x"}, "mode must be one of"),
])
def test_iid_errors(kwargs, match):
    args = {"epochs": 1, "lr": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        tr.iid_transfer(CornerBody(), 2, circle_data(2, 4), circle_data(2, 1, 1), **args)


# ---------------------------------------------------------------- least squares and zero shot
def test_lstsq_head_recovers_exact_linear_map():
    # classes at (0,0), (1,0), (0,1): one-hot = [1 - x1 - x2, x1, x2] = W x + b exactly with
    # W = [[-1, -1], [1, 0], [0, 1]], b = [1, 0, 0]
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    w, b = tr.lstsq_head(x, torch.tensor([0, 1, 2, 0, 1]), 3, ridge=0.0)
    assert w.shape == (3, 2) and b.shape == (3,) and w.dtype == torch.float32
    assert torch.allclose(w, torch.tensor([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]]), atol=1e-6)
    assert torch.allclose(b, torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


@pytest.mark.parametrize("ridge, slope", [(0.0, 0.5), (2.0, 0.25), (6.0, 0.125)])
def test_lstsq_head_ridge_by_hand(ridge, slope):
    # x = [-1, 1], classes [0, 1]: x_bar = 0, y_bar = [.5, .5], X~^T X~ = 2, X~^T Y~ = [-1, 1]
    # -> W = [-1, 1]^T / (2 + ridge), b = [.5, .5] (the bias is not shrunk)
    w, b = tr.lstsq_head(torch.tensor([[-1.0], [1.0]]), torch.tensor([0, 1]), 2, ridge=ridge)
    assert torch.allclose(w, torch.tensor([[-slope], [slope]]), atol=1e-6)
    assert torch.allclose(b, torch.tensor([0.5, 0.5]), atol=1e-6)


@pytest.mark.parametrize("args, match", [
    ((torch.zeros(3), torch.tensor([0, 1, 0]), 2), "features must be"),
    ((torch.zeros(3, 2), torch.tensor([0, 1]), 2), "targets must be 3 labels"),
    ((torch.zeros(2, 2), torch.tensor([0, 2]), 2), r"in \[0, 2\)"),
    ((torch.zeros(2, 2), torch.tensor([0, 1]), 2, -1.0), "ridge must be >= 0"),
])
def test_lstsq_head_errors(args, match):
    with pytest.raises(ValueError, match=match):
        tr.lstsq_head(*args)


def test_zero_shot_accuracy():
    body = CornerBody()
    assert tr.zero_shot_accuracy(body, circle_data(4, 3), circle_data(4, 2, 1), ridge=1e-3) == 1.0
    # constant features: the least-squares head is the class frequency, equal for both classes -> argmax
    # picks class 0 for every image -> 1/2
    assert tr.zero_shot_accuracy(ZeroBody(), circle_data(2, 3), circle_data(2, 2, 1)) == 0.5
    with pytest.raises(ValueError, match="train has 4 classes but test has 2"):
        tr.zero_shot_accuracy(body, circle_data(4, 3), circle_data(2, 2, 1))


# ---------------------------------------------------------------- curve_auc
def test_curve_auc_by_hand():
    result = tr.TransferResult("head", 0.1, [1, 2, 3], [1.0, 0.5, 0.75], 0.75, np.zeros((3, 1)), 0.0)
    assert tr.curve_auc(result) == pytest.approx(0.75)  # (1 + .5 + .75) / 3
    result.accuracy = []
    with pytest.raises(ValueError, match="empty"):
        tr.curve_auc(result)
