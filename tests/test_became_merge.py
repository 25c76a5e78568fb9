"""BECAME's merge and Fisher: α* on hand-made tensors, its range, its 0/0 rule and its optimality on a
quadratic; the batch Fisher against an independent transcription of the official formula (and, for a linear
softmax model, against the analytic gradient); the per-sample Fisher against a plain loop; errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mepo_lab.became.fisher import accumulate, diag_fisher
from mepo_lab.became.merge import merge, merge_alpha

T = torch.tensor


# ---------------------------------------------------------------- merge_alpha

@pytest.mark.parametrize("f_new, f_old, delta, expected", [
    ([2.0], [1.0], [3.0], 2 / 3),                                # 18 / (18 + 9)
    ([1.0, 0.0], [0.0, 1.0], [1.0, 2.0], 0.2),                   # 1 / (1 + 4)
    ([1.0, 1.0, 1.0], [3.0, 0.0, 0.0], [1.0, -1.0, 0.0], 0.4),   # 2 / (2 + 3)
    ([0.0, 5.0], [7.0, 0.0], [0.0, 1.0], 1.0),                   # F_old only where Δ = 0
])
def test_merge_alpha_hand_made_tensors(f_new, f_old, delta, expected):
    assert merge_alpha(T(f_new), T(f_old), T(delta)) == pytest.approx(expected, abs=1e-12)


def test_merge_alpha_sums_over_every_entry_of_a_dict():
    f_new = {"w": T([[1.0, 2.0], [0.0, 0.0]]), "b": T([8.0])}
    f_old = {"w": T([[0.0, 0.0], [1.0, 1.0]]), "b": T([0.0])}
    delta = {"w": T([[1.0, 1.0], [2.0, 0.0]]), "b": T([0.5])}
    # Σ F_new Δ² = 1 + 2 + 8·0.25 = 5; Σ F_old Δ² = 4 → 5 / 9
    assert merge_alpha(f_new, f_old, delta) == pytest.approx(5 / 9, abs=1e-12)
    flat = [torch.cat([d["w"].flatten(), d["b"]]) for d in (f_new, f_old, delta)]
    assert merge_alpha(*flat) == pytest.approx(5 / 9, abs=1e-12)


def _draw(seed: int) -> tuple[dict, dict, dict]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"a": (3, 4), "b": (5,), "c": (2, 2, 2)}

    def fisher():  # many orders of magnitude, some exact zeros
        return {k: torch.exp(3 * torch.randn(s, generator=g)) * (torch.rand(s, generator=g) > 0.2) for k, s in shapes.items()}

    scale = 10 ** (6 * torch.rand(1, generator=g).item() - 3)
    return fisher(), fisher(), {k: scale * torch.randn(s, generator=g) for k, s in shapes.items()}


@pytest.mark.parametrize("seed", range(20))
def test_merge_alpha_is_in_unit_interval_and_matches_numpy(seed):
    f_new, f_old, delta = _draw(seed)
    alpha = merge_alpha(f_new, f_old, delta)
    b = sum(float((f_new[k].numpy().astype(np.float64) * delta[k].numpy().astype(np.float64) ** 2).sum()) for k in delta)
    a = sum(float((f_old[k].numpy().astype(np.float64) * delta[k].numpy().astype(np.float64) ** 2).sum()) for k in delta)
    assert 0.0 <= alpha <= 1.0
    assert alpha == pytest.approx(b / (a + b), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_merge_alpha_limits(seed):
    f_new, f_old, delta = _draw(seed)
    zero = {k: torch.zeros_like(v) for k, v in f_old.items()}
    assert merge_alpha(f_new, zero, delta) == 1.0
    assert merge_alpha(zero, f_old, delta) == 0.0
    assert merge_alpha(f_new, f_new, delta) == 0.5
    huge, tiny = T([1e30, 1e30]), T([1e-30, 0.0])
    assert 0.0 <= merge_alpha(huge, tiny, T([1e10, 1.0])) <= 1.0


def test_merge_alpha_zero_over_zero_keeps_theta_gp():
    f = T([1.0, 2.0, 3.0])
    assert merge_alpha(f, f, torch.zeros(3)) == 0.0                               # Δ = 0: nothing to merge
    assert merge_alpha(T([0.0, 2.0, 0.0]), T([0.0, 0.0, 4.0]), T([1.0, 0.0, 0.0])) == 0.0  # no curvature along Δ
    assert merge_alpha(T([1e-30]), T([0.0]), T([1e-10])) == 1.0                   # tiny is not zero


@pytest.mark.parametrize("seed", range(5))
def test_alpha_minimises_the_quadratic_along_the_line(seed):
    g = torch.Generator().manual_seed(seed)
    n = 20
    a, b = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    f_old = torch.diag(torch.exp(2 * torch.randn(n, generator=g, dtype=torch.float64)))
    f_new = torch.diag(torch.exp(2 * torch.randn(n, generator=g, dtype=torch.float64)))

    def loss(alpha: float) -> float:
        theta = a + alpha * (b - a)
        return float(0.5 * (theta - a) @ f_old @ (theta - a) + 0.5 * (theta - b) @ f_new @ (theta - b))

    best = merge_alpha(torch.diagonal(f_new), torch.diagonal(f_old), b - a)
    grid = [loss(float(v)) for v in np.linspace(0.0, 1.0, 1001)]
    assert loss(best) <= min(grid) + 1e-6
    assert abs(best - np.linspace(0.0, 1.0, 1001)[int(np.argmin(grid))]) <= 1e-3


@pytest.mark.parametrize("change, message", [
    (lambda n, o, d: (n, {"w": o["w"]}, d), "same keys"),
    (lambda n, o, d: (n, o, {**d, "extra": T([1.0])}), "same keys"),
    (lambda n, o, d: (n, {**o, "b": T([1.0, 2.0])}, d), "shape mismatch"),
    (lambda n, o, d: ({**n, "w": T([[1.0, -1e-3]])}, o, d), "negative"),
    (lambda n, o, d: (n, {**o, "b": T([-2.0])}, d), "negative"),
    (lambda n, o, d: (n, {**o, "b": T([float("inf")])}, d), "NaN or infinite"),
    (lambda n, o, d: (n, o, {**d, "w": T([[float("nan"), 0.0]])}), "NaN or infinite"),
    (lambda n, o, d: (n["w"], o, d), "all be dicts"),
    (lambda n, o, d: ({}, {}, {}), "empty"),
])
def test_merge_alpha_errors(change, message):
    params = ({"w": T([[1.0, 2.0]]), "b": T([3.0])}, {"w": T([[0.5, 0.0]]), "b": T([1.0])},
              {"w": T([[1.0, 1.0]]), "b": T([1.0])})
    with pytest.raises(ValueError, match=message):
        merge_alpha(*change(*params))


# ---------------------------------------------------------------- merge

def test_merge_is_the_point_on_the_line():
    gp, ft = {"w": T([0.0, 2.0]), "b": T([1.0])}, {"w": T([4.0, -2.0]), "b": T([1.0])}
    out = merge(gp, ft, 0.25)
    assert torch.equal(out["w"], T([1.0, 1.0])) and torch.equal(out["b"], T([1.0]))
    assert all(torch.equal(merge(gp, ft, 0.0)[k], gp[k]) and torch.equal(merge(gp, ft, 1.0)[k], ft[k]) for k in gp)
    assert torch.allclose(merge(gp, ft, 1.5)["w"], T([6.0, -4.0]))        # drawing beyond the end is allowed
    assert torch.equal(gp["w"], T([0.0, 2.0])) and out["w"].data_ptr() != gp["w"].data_ptr()


@pytest.mark.parametrize("gp, ft, alpha, message", [
    ({"w": T([0.0])}, {"v": T([0.0])}, 0.5, "same keys"),
    ({"w": T([0.0])}, {"w": T([0.0, 1.0])}, 0.5, "shape mismatch"),
    ({"w": T([0.0])}, {"w": T([1.0])}, float("nan"), "finite"),
    ({"n": T([1])}, {"n": T([2])}, 0.5, "floating point"),
])
def test_merge_errors(gp, ft, alpha, message):
    with pytest.raises(ValueError, match=message):
        merge(gp, ft, alpha)


# ---------------------------------------------------------------- diag_fisher

class Tiny(nn.Module):
    """A body and two heads; the body's bias is frozen (no Fisher) and head 1 is unused by task 0 (zeros)."""

    def __init__(self, dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(5, 6)
        self.body.bias.requires_grad_(False)
        self.norm = nn.BatchNorm1d(6) if batchnorm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.head = nn.ModuleList([nn.Linear(6, 3), nn.Linear(6, 4)])

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.head[task](self.drop(torch.tanh(self.norm(self.body(x)))))


def _data(n: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def official_batch_fisher(model, x, y, task, batch_size, use_pred):
    """The official compute_fisher_matrix_diag, written out independently: consecutive batches, mean CE,
    ``backward``, ``fisher[n] += grad² · len(batch)`` for every parameter with a gradient, divided by N."""
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    for i in range(0, len(x), batch_size):
        data, target = x[i:i + batch_size], y[i:i + batch_size]
        out = model(data, task)
        pred = out.argmax(1).flatten() if use_pred else target
        loss = F.cross_entropy(out, pred)
        model.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.pow(2) * len(data)
    model.zero_grad(set_to_none=True)
    return {n: f / len(x) for n, f in fisher.items()}


@pytest.mark.parametrize("labels", ["pred", "true"])
@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_batch_fisher_matches_the_official_formula(labels, batch_size):
    model, (x, y) = Tiny(), _data()
    got = diag_fisher(model, x, y, lambda xb: model(xb, 0), labels=labels, batch_size=batch_size)
    want = official_batch_fisher(model, x, y, 0, batch_size, use_pred=labels == "pred")
    assert set(got) == set(want) == {"body.weight", "head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias"}
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-8)
    assert not got["head.1.weight"].any() and got["head.0.weight"].any()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("labels", ["pred", "true"])
def test_batch_fisher_of_a_softmax_regression_matches_the_analytic_gradient(labels):
    torch.manual_seed(0)
    model, (x, y), bs = nn.Linear(5, 3), _data(n=11), 4
    got = diag_fisher(model, x, y, model, labels=labels, batch_size=bs)
    w, b = model.weight.detach().double().numpy(), model.bias.detach().double().numpy()
    xs, ys = x.double().numpy(), y.numpy()
    fw, fb = np.zeros_like(w), np.zeros_like(b)
    for i in range(0, len(xs), bs):  # ∇_W mean CE = (1/|B|) Σ (softmax − onehot) xᵀ, ∇_b = mean(softmax − onehot)
        xb = xs[i:i + bs]
        z = xb @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        target = z.argmax(1) if labels == "pred" else ys[i:i + bs]
        r = p - np.eye(3)[target]
        fw += len(xb) * (r.T @ xb / len(xb)) ** 2
        fb += len(xb) * r.mean(0) ** 2
    np.testing.assert_allclose(got["weight"].numpy(), fw / len(xs), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(got["bias"].numpy(), fb / len(xs), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("labels", ["pred", "true"])
def test_sample_fisher_matches_a_per_sample_loop(labels):
    model, (x, y) = Tiny(), _data(n=9)
    got = diag_fisher(model, x, y, lambda xb: model(xb, 0), labels=labels, estimator="sample", batch_size=4)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(x)):
        out = model(x[i:i + 1], 0)
        target = out.argmax(1) if labels == "pred" else y[i:i + 1]
        grads = torch.autograd.grad(F.cross_entropy(out, target), list(params.values()), allow_unused=True)
        for n, g in zip(params, grads):
            if g is not None:
                want[n] += g.square() / len(x)
    for n, value in want.items():
        torch.testing.assert_close(got[n], value, rtol=1e-5, atol=1e-8)
    one = diag_fisher(model, x, y, lambda xb: model(xb, 0), labels=labels, batch_size=1)
    for n in want:  # the batch estimator with batches of one is the per-sample one
        torch.testing.assert_close(one[n], got[n], rtol=1e-5, atol=1e-8)
    batch = diag_fisher(model, x, y, lambda xb: model(xb, 0), labels=labels, batch_size=9)
    assert not torch.allclose(batch["head.0.weight"], got["head.0.weight"])  # square of a mean ≠ mean of squares


def test_fisher_leaves_mode_and_buffers_as_they_were():
    model, (x, y) = Tiny(dropout=0.5, batchnorm=True), _data(n=16)
    model.eval()
    before = {n: b.clone() for n, b in model.named_buffers()}
    torch.manual_seed(0)
    official = diag_fisher(model, x, y, lambda xb: model(xb, 0), train=True)  # official: model.train(), dropout on
    assert not model.training and not any(m.training for m in model.modules())
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())
    kept = diag_fisher(model, x, y, lambda xb: model(xb, 0))  # train=None: the caller's eval mode
    assert not torch.allclose(official["head.0.weight"], kept["head.0.weight"])
    sample = diag_fisher(model, x, y, lambda xb: model(xb, 0), estimator="sample", batch_size=1)
    torch.testing.assert_close(sample["body.weight"], diag_fisher(model, x, y, lambda xb: model(xb, 0),
                                                                   batch_size=1)["body.weight"])
    with pytest.raises(ValueError, match="BatchNorm"):
        diag_fisher(model, x, y, lambda xb: model(xb, 0), estimator="sample", train=True)


def test_sample_fisher_runs_with_dropout_in_train_mode():
    model, (x, y) = Tiny(dropout=0.5), _data()
    got = diag_fisher(model, x, y, lambda xb: model(xb, 0), estimator="sample", train=True)
    assert all(torch.isfinite(f).all() and (f >= 0).all() for f in got.values())


@pytest.mark.parametrize("kwargs, message", [
    ({"labels": "empirical"}, "labels must be"),
    ({"estimator": "exact"}, "estimator must be"),
    ({"batch_size": 0}, "batch_size"),
    ({"x": torch.zeros(0, 5)}, "empty"),
    ({"labels": "true", "y": None}, "needs the labels"),
    ({"labels": "true", "y": torch.zeros(3, dtype=torch.long)}, "same length"),
    ({"predict": "no_grad"}, "without a graph"),
])
def test_diag_fisher_errors(kwargs, message):
    model, (x, y) = Tiny(), _data()

    @torch.no_grad()
    def frozen(xb):
        return model(xb, 0)

    args = {"x": x, "y": y, "predict": lambda xb: model(xb, 0)} | kwargs
    if args["predict"] == "no_grad":
        args["predict"] = frozen
    with pytest.raises(ValueError, match=message):
        diag_fisher(model, args.pop("x"), args.pop("y"), args.pop("predict"), **args)


def test_diag_fisher_needs_a_trainable_parameter():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        diag_fisher(model, torch.zeros(2, 2), None, model)


# ---------------------------------------------------------------- accumulate

def test_accumulate():
    new, old = {"w": T([1.0, 2.0])}, {"w": T([4.0, 0.5])}
    first = accumulate(None, new)
    assert torch.equal(first["w"], new["w"]) and first["w"].data_ptr() != new["w"].data_ptr()
    assert torch.equal(accumulate(old, new)["w"], T([5.0, 2.5]))
    assert torch.equal(accumulate(old, new, gamma=0.5)["w"], T([3.0, 2.25]))
    with pytest.raises(ValueError, match="gamma"):
        accumulate(old, new, gamma=-1.0)
    with pytest.raises(ValueError, match="same keys"):
        accumulate({"v": T([1.0, 2.0])}, new)
    with pytest.raises(ValueError, match="shape mismatch"):
        accumulate({"w": T([1.0])}, new)
