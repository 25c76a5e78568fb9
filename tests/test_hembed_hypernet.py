"""Chunked hypernetwork, embedding decoder, HyperCL regulariser with lookahead, generated MLP head (issue 13)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mepo_lab.hembed.hypernet import ChunkedHypernet, EmbDecoder, emb_loss
from mepo_lab.hembed.regularizer import delta_theta, hypercl_reg, store_targets
from mepo_lab.hembed.target import mlp_features, mlp_forward, mlp_shapes

SHAPES = [(3, 5), (3,)]  # P = 18, with a bias


def tiny_hnet() -> ChunkedHypernet:
    """temb = cemb = 1, chunk 2, one (3,) target: P = 3, two chunks, a hand-set linear generator.

    rows(e) = [[e, 0], [e, 1]];  out = rows W^T + b with W = [[1, 2], [3, -1]], b = [0.5, -0.5]
    h(1) = [1.5, 2.5, 3.5] (4th output cut),  h(2) = [2.5, 5.5, 4.5].
    """
    h = ChunkedHypernet([(3,)], n_tasks=2, temb=1, cemb=1, chunk=2)
    with torch.no_grad():
        h.task_embs[0].copy_(torch.tensor([1.0]))
        h.task_embs[1].copy_(torch.tensor([2.0]))
        h.chunk_embs.copy_(torch.tensor([[0.0], [1.0]]))
        h.head.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
        h.head.bias.copy_(torch.tensor([0.5, -0.5]))
    return h


def small_hnet(hidden: tuple[int, ...] = (8,), n_tasks: int = 3, seed: int = 0) -> ChunkedHypernet:
    return ChunkedHypernet(SHAPES, n_tasks=n_tasks, temb=4, cemb=3, chunk=7, hidden=hidden, seed=seed)


# ----------------------------------------------------------------------------------------------- hypernetwork
@pytest.mark.parametrize("chunk, n_chunks", [(1, 18), (4, 5), (7, 3), (18, 1), (100, 1)])
def test_shapes_and_flat_round_trip_when_p_is_not_a_multiple_of_chunk(chunk, n_chunks):
    h = ChunkedHypernet(SHAPES, n_tasks=2, temb=4, cemb=3, chunk=chunk)
    assert (h.n_params, h.n_chunks) == (18, n_chunks)
    ws = h(1)
    assert [tuple(w.shape) for w in ws] == SHAPES
    raw = h.head(torch.cat([h.task_embs[1].expand(n_chunks, 4), h.chunk_embs], 1)).reshape(-1)
    assert raw.numel() == n_chunks * chunk
    flat = ChunkedHypernet.flat(ws)
    torch.testing.assert_close(flat, raw[:18], rtol=0, atol=0)
    torch.testing.assert_close(ws[1], flat[15:], rtol=0, atol=0)  # the bias is the last 3 outputs
    n_theta = sum(p.numel() for p in h.theta())
    assert n_theta == n_chunks * 3 + (4 + 3) * chunk + chunk  # chunk embeddings + one Linear


def test_mlp_head_shapes_give_the_parameter_count():
    h = ChunkedHypernet(mlp_shapes(4, 3, 2), n_tasks=1, chunk=10)
    assert h.n_params == 3 * 4 + 3 + 2 * 3 + 2 and h.n_chunks == 3
    assert [tuple(w.shape) for w in h(0)] == [(3, 4), (3,), (2, 3), (2,)]


def test_hand_computed_outputs_and_hidden_z_of_a_linear_hypernet():
    h = tiny_hnet()
    torch.testing.assert_close(h.flat(h(0)), torch.tensor([1.5, 2.5, 3.5]))
    torch.testing.assert_close(h.flat(h(1)), torch.tensor([2.5, 5.5, 4.5]))
    torch.testing.assert_close(h.flat(h(torch.tensor([2.0]))), torch.tensor([2.5, 5.5, 4.5]))  # embedding input
    torch.testing.assert_close(h.hidden_z(0), torch.tensor([1.0, 0.0, 1.0, 1.0]))  # [e ⊕ c_1] ⊕ [e ⊕ c_2]
    assert h.z_dim == 4


@pytest.mark.parametrize("hidden, width", [((), 4 + 3), ((16,), 16), ((5, 16), 16)])
def test_z_dim_and_hidden_z(hidden, width):
    h = small_hnet(hidden)
    z = h.hidden_z(0)
    assert h.z_dim == 3 * width and z.shape == (h.z_dim,)
    if hidden:
        assert (z >= 0).all()  # ReLU activations
    else:
        torch.testing.assert_close(z[:7], torch.cat([h.task_embs[0], h.chunk_embs[0]]))


def test_theta_is_generator_and_chunk_embeddings_without_task_embeddings():
    h = small_hnet((8,))
    ids = {id(p) for p in h.theta()}
    assert id(h.chunk_embs) in ids and not ids & {id(e) for e in h.task_embs}
    assert ids | {id(e) for e in h.task_embs} == {id(p) for p in h.parameters()}
    assert h.theta_names() == ["chunk_embs", "body.0.weight", "body.0.bias", "head.weight", "head.bias"]


def test_determinism_by_seed_and_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = small_hnet(seed=5)
    after = torch.rand(3)
    b, c = small_hnet(seed=5), small_hnet(seed=6)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na
    assert not torch.equal(a.flat(a(0)), c.flat(c(0)))
    assert not torch.equal(a.task_embs[0], a.task_embs[1])


# --------------------------------------------------------------------------------------------- decoder, L_emb
@pytest.mark.parametrize("task, weight", [(0, 0.0), (1, 0.05), (10, 0.5), (20, 1.0), (100, 1.0)])
def test_emb_loss_ramps_with_the_task_index(task, weight):
    loss = emb_loss(nn.Identity(), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), task)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(weight * (1 - 1 / math.sqrt(2)), abs=1e-6)


@pytest.mark.parametrize("z, guide, cos", [([1.0, 0.0], [1.0, 1.0], 2 ** -0.5), ([1.0, 2.0], [2.0, 4.0], 1.0),
                                           ([1.0, 0.0], [-3.0, 0.0], -1.0), ([3.0, 4.0], [4.0, -3.0], 0.0)])
def test_emb_loss_is_one_minus_cosine(z, guide, cos):
    loss = emb_loss(nn.Identity(), torch.tensor(z), torch.tensor(guide), task=40, beta_emb=0.05)
    assert loss.item() == pytest.approx(1 - cos, abs=1e-6)


@pytest.mark.parametrize("hidden", [(), (8,)])
def test_emb_loss_gradients_reach_decoder_current_embedding_and_theta(hidden):
    h = small_hnet(hidden)
    dec = EmbDecoder(h.z_dim, emb_dim=4)
    guide = torch.randn(4, generator=torch.Generator().manual_seed(1))
    emb_loss(dec, h.hidden_z(2), guide, task=2).backward()
    assert h.task_embs[2].grad.abs().sum() > 0 and h.chunk_embs.grad.abs().sum() > 0
    assert h.task_embs[0].grad is None and all(p.grad.abs().sum() > 0 for p in dec.parameters())
    if hidden:
        assert h.body[0].weight.grad.abs().sum() > 0


def test_emb_decoder_layers_and_shapes():
    dec = EmbDecoder(10, emb_dim=6)
    assert [m.__class__ for m in dec.net] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (dec.net[0].in_features, dec.net[0].out_features, dec.net[2].out_features) == (10, 512, 6)
    assert dec(torch.zeros(10)).shape == (6,) and dec(torch.zeros(3, 10)).shape == (3, 6)
    assert isinstance(EmbDecoder(10, 6, mid=0).net, nn.Linear)


# ------------------------------------------------------------------------------------------------- ΔΘ lookahead
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "sgd_wd": lambda ps: torch.optim.SGD(ps, lr=0.05, weight_decay=0.1),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
    "adam_eps_betas": lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.9), eps=0.5),
    "adam_wd_max": lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.2, maximize=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.3),
}


def _task_loss(h: ChunkedHypernet) -> torch.Tensor:
    w = h.flat(h(0))
    return (w * torch.linspace(-1, 1, w.numel(), dtype=w.dtype)).sum() + w.pow(2).sum()


@pytest.mark.parametrize("n_before", [0, 3])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_delta_theta_equals_the_real_step_and_changes_nothing(name, n_before):
    h = small_hnet((8,)).double()
    params = [*h.theta(), h.task_embs[0], h.task_embs[1]]  # task 1 gets no gradient
    opt = OPTIMIZERS[name](params)
    for _ in range(n_before):
        opt.zero_grad()
        _task_loss(h).backward()
        opt.step()
    h2, opt2 = copy.deepcopy((h, opt))
    params2 = [*h2.theta(), h2.task_embs[0], h2.task_embs[1]]
    for model, o in ((h, opt), (h2, opt2)):
        o.zero_grad()
        _task_loss(model).backward()
    assert h.task_embs[1].grad is None
    before = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict())
    delta = delta_theta(opt, params)
    assert all(not d.requires_grad for d in delta)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert str(opt.state_dict()) == str(state)
    old = [p.detach().clone() for p in params2]
    opt2.step()
    for d, p, o in zip(delta, params2, old):
        torch.testing.assert_close(d, p.detach() - o, rtol=0, atol=1e-6)
    assert torch.all(delta[-1] == 0) and delta[0].abs().sum() > 0


def test_delta_theta_sgd_hand_value():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    p.grad = torch.tensor([0.5, 4.0])
    (d,) = delta_theta(torch.optim.SGD([p], lr=0.1, weight_decay=0.5), [p])
    torch.testing.assert_close(d, torch.tensor([-0.1, -0.3]))  # −lr (g + λ p)


# ------------------------------------------------------------------------------------------------------ L_reg
def test_hypercl_reg_hand_computed_with_and_without_lookahead():
    h = tiny_hnet()
    targets = {0: torch.tensor([1.0, 2.0, 3.0]), 1: torch.tensor([2.5, 5.5, 2.5])}
    assert hypercl_reg(h, targets).item() == pytest.approx((0.75 + 4.0) / 2)  # ‖(.5,.5,.5)‖², ‖(0,0,2)‖²
    delta = [torch.zeros(2, 1), torch.zeros(2, 2), torch.tensor([0.5, 0.5])]  # every output + 0.5
    assert hypercl_reg(h, targets, delta=delta).item() == pytest.approx((3.0 + 6.75) / 2)
    given = hypercl_reg(h, {0: targets[0]}, embs={0: torch.tensor([2.0])})  # h(2) − (1, 2, 3) = (1.5, 3.5, 1.5)
    assert given.item() == pytest.approx(1.5**2 + 3.5**2 + 1.5**2)


def test_hypercl_reg_is_zero_at_targets_and_positive_after_moving_theta():
    h = small_hnet((8,))
    targets = store_targets(h, [0, 1])
    assert set(targets) == {0, 1} and targets[0].shape == (18,) and not targets[0].requires_grad
    assert hypercl_reg(h, targets).item() == 0.0
    with torch.no_grad():
        h.task_embs[2].add_(1.0)  # the current task's embedding is not regularised
    assert hypercl_reg(h, targets).item() == 0.0
    with torch.no_grad():
        h.head.bias.add_(0.01)
    assert hypercl_reg(h, targets).item() == pytest.approx(18 * 0.01**2, rel=1e-3)  # every output + 0.01


def test_hypercl_reg_lookahead_equals_moving_theta_by_delta():
    h = small_hnet((8,))
    targets = store_targets(h, [0, 1])
    g = torch.Generator().manual_seed(3)
    delta = [0.05 * torch.randn(p.shape, generator=g) for p in h.theta()]
    moved = copy.deepcopy(h)
    with torch.no_grad():
        for p, d in zip(moved.theta(), delta):
            p.add_(d)
    torch.testing.assert_close(hypercl_reg(h, targets, delta=delta), hypercl_reg(moved, targets))
    assert all(torch.equal(p, q) for p, q in zip(h.theta(), small_hnet((8,)).theta()))  # h itself unmoved


@pytest.mark.parametrize("lookahead", [False, True])
def test_hypercl_reg_gradients_reach_theta_but_not_earlier_embeddings(lookahead):
    h = small_hnet((8,))
    targets = store_targets(h, [0, 1])
    with torch.no_grad():
        h.head.weight.mul_(1.1)
    delta = [torch.full_like(p, 0.01) for p in h.theta()] if lookahead else None
    hypercl_reg(h, targets, delta=delta).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in h.theta())
    assert all(e.grad is None for e in h.task_embs)
    assert delta is None or all(d.grad is None for d in delta)


def test_hypercl_reg_with_given_embeddings_trains_them_and_empty_targets_give_zero():
    h = small_hnet((8,))
    targets = store_targets(h, [0])
    e0 = h.task_embs[0].detach().clone().requires_grad_(True)
    with torch.no_grad():
        e0.add_(0.1)
    hypercl_reg(h, targets, embs={0: e0}).backward()
    assert e0.grad.abs().sum() > 0
    zero = hypercl_reg(h, {})
    assert zero.ndim == 0 and zero.item() == 0.0 and not zero.requires_grad


# ---------------------------------------------------------------------------------------------- target head
def test_mlp_head_hand_computed():
    w = [torch.tensor([[1.0, -1.0], [0.0, 2.0]]), torch.tensor([0.0, -1.0]), torch.tensor([[1.0, 1.0]]),
         torch.tensor([0.5])]
    x = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    torch.testing.assert_close(mlp_features(w, x), torch.tensor([[0.0, 3.0], [1.0, 1.0]]))  # relu([-1, 3]), [1, 1]
    torch.testing.assert_close(mlp_forward(w, x), torch.tensor([[3.5], [2.5]]))
    assert mlp_shapes(3, 4, 2) == [(4, 3), (4,), (2, 4), (2,)]


def test_generated_head_trains_the_hypernetwork():
    h = ChunkedHypernet(mlp_shapes(5, 6, 2), n_tasks=2, temb=4, cemb=4, chunk=16, hidden=(8,))
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    logits = mlp_forward(h(1), x)
    assert logits.shape == (7, 2) and mlp_features(h(1), x).shape == (7, 6)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1, 0, 1, 1])).backward()
    assert all(p.grad.abs().sum() > 0 for p in h.theta()) and h.task_embs[1].grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------- errors
def _hnet_error(**kw):
    args = {"target_shapes": SHAPES, "n_tasks": 2, "chunk": 7}
    ChunkedHypernet(**{**args, **kw})


@pytest.mark.parametrize("kw, match", [
    ({"target_shapes": []}, "target_shapes is empty"),
    ({"target_shapes": [(3, 0)]}, "positive integers"),
    ({"n_tasks": 0}, "n_tasks must be a positive integer"),
    ({"chunk": 0}, "chunk must be a positive integer"),
    ({"temb": 0}, "temb must be a positive integer"),
    ({"hidden": 16}, "hidden must be a tuple"),
    ({"hidden": (8, 0)}, "every hidden size"),
])
def test_hypernet_construction_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _hnet_error(**kw)


def test_call_errors():
    h = small_hnet()
    with pytest.raises(ValueError, match="out of range"):
        h(3)
    with pytest.raises(ValueError, match="1-D tensor of size temb=4"):
        h(torch.zeros(5))
    with pytest.raises(ValueError, match="task index"):
        h(1.0)
    with pytest.raises(ValueError, match="emb_dim=3"):
        emb_loss(EmbDecoder(h.z_dim, 4), h.hidden_z(0), torch.ones(3), task=2)
    with pytest.raises(ValueError, match="non-negative task index"):
        emb_loss(nn.Identity(), torch.ones(2), torch.ones(2), task=-1)
    with pytest.raises(ValueError, match="mlp_shapes"):
        mlp_forward([torch.zeros(2, 2)], torch.zeros(1, 2))
    with pytest.raises(ValueError, match="d_in=2"):
        mlp_forward([torch.zeros(3, 2), torch.zeros(3), torch.zeros(1, 3), torch.zeros(1)], torch.zeros(4, 5))
    with pytest.raises(ValueError, match="inconsistent"):
        mlp_features([torch.zeros(3, 2), torch.zeros(4), torch.zeros(1, 3), torch.zeros(1)], torch.zeros(4, 2))
    with pytest.raises(ValueError, match="n_out must be a positive integer"):
        mlp_shapes(3, 4, 0)


def test_regularizer_errors():
    h = small_hnet()
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="without momentum"):
        delta_theta(torch.optim.SGD([p], lr=0.1, momentum=0.9), [p])
    with pytest.raises(ValueError, match="amsgrad"):
        delta_theta(torch.optim.Adam([p], amsgrad=True), [p])
    with pytest.raises(ValueError, match="got RMSprop"):
        delta_theta(torch.optim.RMSprop([p]), [p])
    with pytest.raises(ValueError, match=r"params\[0\].*not optimised"):
        delta_theta(torch.optim.SGD([p], lr=0.1), [nn.Parameter(torch.zeros(2))])
    targets = store_targets(h, [0])
    with pytest.raises(ValueError, match="one tensor per entry"):
        hypercl_reg(h, targets, delta=[torch.zeros(1)])
    with pytest.raises(ValueError, match=r"delta\[0\] has shape"):
        hypercl_reg(h, targets, delta=[torch.zeros(1) for _ in h.theta()])
    with pytest.raises(ValueError, match="flat vector of the 18"):
        hypercl_reg(h, {0: torch.zeros(17)})
    with pytest.raises(ValueError, match=r"embs lacks the tasks \[0\]"):
        hypercl_reg(h, targets, embs={1: torch.zeros(4)})
    with pytest.raises(ValueError, match="out of range"):
        store_targets(h, [7])
