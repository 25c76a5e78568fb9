"""PURER meta-learners and gradient switch: MAML steps against hand formulas, second order against the explicit
Hessian, ProtoNet logits by hand, ANIL's frozen body, meta-test isolation, and the switch on scripted accuracies."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mepo_lab.purer.meta import (
    MetaLearner,
    anil_adapt,
    episode_loss,
    maml_adapt,
    maml_outer_loss,
    protonet_logits,
)
from mepo_lab.purer.switch import AdversarialSwitch

D = torch.float64


class LinNet(nn.Module):
    """``features(x) = act(A x)`` (``A`` absent: identity), ``head = Linear(d, n_out)``; optional BatchNorm1d."""

    def __init__(self, d_in=3, d=2, n_out=2, body=True, act=None, bn=False, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.body = nn.Linear(d_in, d, bias=False) if body else None
        self.bn = nn.BatchNorm1d(d) if bn else None
        self.act = act
        self.head = nn.Linear(d if body else d_in, n_out)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        self.to(D)

    def features(self, x):
        h = self.body(x) if self.body is not None else x
        h = self.bn(h) if self.bn is not None else h
        return self.act(h) if self.act is not None else h

    def forward(self, x):
        return self.head(self.features(x))


def _episode(n_way=3, k=2, q=3, d_in=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    sy, qy = torch.arange(n_way).repeat_interleave(k), torch.arange(n_way).repeat_interleave(q)
    return (torch.randn(n_way * k, d_in, generator=gen, dtype=D), sy,
            torch.randn(n_way * q, d_in, generator=gen, dtype=D), qy)


# ---------------------------------------------------------------- MAML inner loop = hand SGD
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_inner_step_is_a_hand_sgd_step(steps, first_order):
    model, lr = LinNet(), 0.3
    x, y = torch.tensor([[1.0, 0, 2], [0, 1, -1], [2, 1, 0], [-1, 0, 1]], dtype=D), torch.tensor([0, 1, 0, 1])
    A, W, b = (t.detach().clone() for t in (model.body.weight, model.head.weight, model.head.bias))
    for _ in range(steps):  # CE gradients of z = (xAᵀ)Wᵀ + b by hand: G = (softmax(z) − onehot)/n
        h = x @ A.T
        G = (torch.softmax(h @ W.T + b, 1) - F.one_hot(y, 2).to(D)) / len(y)
        A, W, b = A - lr * (G @ W).T @ x, W - lr * G.T @ h, b - lr * G.sum(0)
    fast = maml_adapt(model, dict(model.named_parameters()), x, y, lr, steps, first_order)
    for name, want in (("body.weight", A), ("head.weight", W), ("head.bias", b)):
        torch.testing.assert_close(fast[name], want, msg=name)


# ---------------------------------------------------------------- second order = (I − αH) ∇L_q(θ')
def test_second_order_has_the_hessian_term_and_first_order_drops_it():
    model, lr = LinNet(d_in=3, d=2, n_out=3, act=torch.tanh), 0.5
    sx, sy, qx, qy = _episode()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(flat, x, y):
        params = dict(zip(names, (t.view(s) for t, s in zip(flat.split([s.numel() for s in shapes]), shapes))))
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    g_s = torch.autograd.functional.jacobian(lambda t: loss(t, sx, sy), theta)
    g_q = torch.autograd.functional.jacobian(lambda t: loss(t, qx, qy), theta - lr * g_s)
    hess = torch.autograd.functional.hessian(lambda t: loss(t, sx, sy), theta)
    want = {False: (torch.eye(len(theta), dtype=D) - lr * hess) @ g_q, True: g_q}
    got = {}
    for first_order in (False, True):
        params = dict(model.named_parameters())
        out, _ = maml_outer_loss(model, params, (sx, sy, qx, qy), lr, 1, first_order)
        got[first_order] = torch.cat([g.flatten() for g in torch.autograd.grad(out, list(params.values()))])
        torch.testing.assert_close(got[first_order], want[first_order])
    assert (got[False] - got[True]).norm() > 1e-3


# ---------------------------------------------------------------- ProtoNet by hand
def test_protonet_logits_hand_computed():
    model = LinNet(d_in=2, body=False)
    sx = torch.tensor([[0.0, 0], [2, 0], [0, 2]], dtype=D)  # prototypes (1, 0) and (0, 2)
    sy = torch.tensor([0, 0, 1])
    qx = torch.tensor([[1.0, 1], [3, 0]], dtype=D)
    want = torch.tensor([[-1.0, -2.0], [-4.0, -13.0]], dtype=D)
    torch.testing.assert_close(protonet_logits(model, dict(model.named_parameters()), sx, sy, qx, 2), want)
    torch.testing.assert_close(MetaLearner("protonet").adapt_predict(model, sx, sy, qx, 2), want)


# ---------------------------------------------------------------- ANIL
def test_anil_leaves_the_body_untouched_and_matches_maml_on_the_head():
    model = LinNet(d=4, n_out=3)
    sx, sy, _, _ = _episode()
    params = dict(model.named_parameters())
    anil, maml = anil_adapt(model, params, sx, sy, 0.5), maml_adapt(model, params, sx, sy, 0.5)
    assert anil["body.weight"] is params["body.weight"]
    assert not torch.equal(maml["body.weight"], params["body.weight"])
    for name in ("head.weight", "head.bias"):
        assert not torch.equal(anil[name], params[name])
        torch.testing.assert_close(anil[name], maml[name])  # one step: same gradient w.r.t. the head


def test_frozen_parameters_are_not_adapted_in_training_nor_at_meta_test():
    model = LinNet(d=4, n_out=3, act=torch.tanh)
    model.body.weight.requires_grad_(False)
    sx, sy, qx, _ = _episode()
    fast = maml_adapt(model, dict(model.named_parameters()), sx, sy, 0.5)
    assert fast["body.weight"] is model.body.weight and not torch.equal(fast["head.weight"], model.head.weight)
    out = MetaLearner(inner_lr=0.5, head_init="meta").adapt_predict(model, sx, sy, qx, 3)
    torch.testing.assert_close(out, functional_call(model, fast, (qx,)).detach())


# ---------------------------------------------------------------- outer loss reaches the meta-parameters
@pytest.mark.parametrize("kind, first_order, head_init", [
    ("maml", False, "zero_test"), ("maml", True, "zero_test"), ("maml", False, "zero"), ("anil", False, "meta"),
    ("anil", True, "zero_test"), ("protonet", False, "zero_test")])
def test_outer_loss_gradients_reach_the_meta_params(kind, first_order, head_init):
    model = LinNet(d=4, n_out=3, act=torch.relu, bn=True)
    learner = MetaLearner(kind, inner_lr=0.1, first_order=first_order, head_init=head_init)
    loss, acc = learner.outer_loss(model, _episode())
    assert 0.0 <= acc <= 1.0
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("head.") and (kind == "protonet" or head_init == "zero"):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_small_outer_step_lowers_the_outer_loss():
    model = LinNet(d=4, n_out=3, act=torch.tanh)
    episode = _episode()
    loss, _ = episode_loss(model, dict(model.named_parameters()), episode, "maml", 0.5)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-2 * p.grad
    assert episode_loss(model, dict(model.named_parameters()), episode, "maml", 0.5)[0] < loss


# ---------------------------------------------------------------- meta-test
@pytest.mark.parametrize("kind", ["maml", "anil", "protonet"])
def test_adapt_predict_changes_nothing_in_the_model(kind):
    model = LinNet(d=4, n_out=5, act=torch.relu, bn=True).eval()  # 5-way head, 3-way task
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sx, sy, qx, _ = _episode()
    with torch.no_grad():
        out = MetaLearner(kind, inner_lr=0.1, test_steps=3).adapt_predict(model, sx, sy, qx, 3)
    assert out.shape == (len(qx), 3) and not out.requires_grad
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_adapt_predict_is_transductive_batchnorm_uses_the_query_batch():
    model = LinNet(d=4, n_out=3, act=torch.relu, bn=True).eval()
    sx, sy, qx, _ = _episode()
    learner = MetaLearner("maml", inner_lr=0.5)
    a = learner.adapt_predict(model, sx, sy, qx[[0, 1, 2]], 3)
    b = learner.adapt_predict(model, sx, sy, qx[[0, 3, 4]], 3)
    assert not torch.allclose(a[0], b[0])


@pytest.mark.parametrize("kind", ["maml", "anil"])
def test_zero_head_one_step_is_the_hand_formula(kind):
    model, lr, n = LinNet(d_in=2, n_out=7, body=False), 0.5, 3  # the 7-way head is replaced by a zero 3-way one
    sx = torch.tensor([[1.0, 0], [0, 1], [1, 1], [2, 0]], dtype=D)
    sy = torch.tensor([0, 1, 2, 0])
    qx = torch.tensor([[1.0, 2], [-1, 0]], dtype=D)
    # from W = 0, b = 0 (uniform softmax 1/N): W_c = α/n Σ_i (y_ic − 1/N) x_i, b_c = α/n Σ_i (y_ic − 1/N)
    R = F.one_hot(sy, n).to(D) - 1 / n
    W, b = lr / len(sy) * R.T @ sx, lr / len(sy) * R.sum(0)
    out = MetaLearner(kind, inner_lr=lr).adapt_predict(model, sx, sy, qx, n)
    torch.testing.assert_close(out, qx @ W.T + b)
    assert MetaLearner(kind).predictor(model)(sx, sy, qx).shape == (2, 3)


def test_meta_head_is_the_models_head():
    model = LinNet(d=4, n_out=3, act=torch.tanh)
    sx, sy, qx, _ = _episode()
    out = MetaLearner("maml", inner_lr=0.2, head_init="meta").adapt_predict(model, sx, sy, qx, 3)
    fast = maml_adapt(model, dict(model.named_parameters()), sx, sy, 0.2)
    torch.testing.assert_close(out, functional_call(model, fast, (qx,)).detach())


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("make, match", [
    (lambda: MetaLearner("reptile"), "kind"),
    (lambda: MetaLearner(head_init="random"), "head_init"),
    (lambda: MetaLearner(inner_lr=0.0), "inner_lr"),
    (lambda: MetaLearner(inner_steps=0), "steps"),
    (lambda: MetaLearner(test_steps=0), "steps"),
    (lambda: MetaLearner().outer_loss(nn.Linear(3, 3), _episode()), "features"),
    (lambda: MetaLearner().outer_loss(LinNet(n_out=3), ("a", "b")), "support_x"),
    (lambda: MetaLearner().outer_loss(LinNet(n_out=3), (torch.zeros(6, 3, dtype=torch.uint8),) + _episode()[1:]),
     "to_input"),
    (lambda: MetaLearner().outer_loss(LinNet(n_out=5), _episode()), "5 outputs but the episode is 3-way"),
    (lambda: MetaLearner(head_init="meta").adapt_predict(LinNet(n_out=5), *_episode()[:3], 3), "5 outputs"),
    (lambda: MetaLearner().adapt_predict(LinNet(n_out=3), *_episode()[:3], 4), "every class"),
    (lambda: MetaLearner().outer_loss(LinNet(n_out=3), _episode()[:3] + (torch.tensor([0, 1, 5]),)), "query_y"),
    (lambda: MetaLearner().adapt_predict(LinNet(n_out=3), torch.zeros(6, 3, dtype=torch.uint8), *_episode()[1:3], 3),
     "support_x"),
    (lambda: AdversarialSwitch(-1), "adv_start"),
    (lambda: AdversarialSwitch(5, patience=0), "patience"),
])
def test_bad_input_raises_one_clear_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------- adversarial switch
# adv_start 3, patience 6: k=1,2 ignored; fire at 3; best set at 4, improved at 5; 6..11 never beat 0.6 (a tie
# is no improvement) -> fire at 11; best restarts at 12; 13 and 19 improve; 14..18 only 5 misses; 20..25 -> fire.
SCRIPT = [0.9, 0.1, 0.0, 0.5, 0.6, 0.6, 0.5, 0.55, 0.6, 0.3, 0.59, 0.1, 0.2, 0.2, 0.1, 0.2, 0.0, 0.15, 0.25,
          0.2, 0.2, 0.1, 0.25, 0.0, 0.24, 0.9]


@pytest.mark.parametrize("adv_start, patience, accs, fired", [
    (3, 6, SCRIPT, [3, 11, 25]),
    (3, 2, [0.5, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.9, 0.9, 0.9], [3, 6, 10]),
    (10, 6, [0.9 - 0.01 * k for k in range(9)], []),  # decreasing accuracy before adv_start: never fires
    (0, 1, [0.1, 0.2, 0.2, 0.3], [0, 2]),
])
def test_switch_fires_at_adv_start_then_after_patience_misses(adv_start, patience, accs, fired):
    switch = AdversarialSwitch(adv_start, patience)
    first = 0 if adv_start == 0 else 1
    returned = [k for k, acc in enumerate(accs, start=first) if switch.update(k, acc)]
    assert returned == fired == switch.fired


def test_switch_iterations_must_increase():
    switch = AdversarialSwitch(3)
    switch.update(4, 0.5)
    with pytest.raises(ValueError, match="increase"):
        switch.update(4, 0.6)
