"""PURER model inversion: DeepInversion prior, TV, jitter, the inversion loss, the LayerNorm prior, X̂."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mepo_lab.config import WorldConfig
from mepo_lab.data.normalization import WORLD_MEAN, WORLD_STD
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.purer.inversion import (
    DynamicDataset,
    InversionLoss,
    bn_prior_hooks,
    feature_prior,
    ln_prior_hooks,
    random_roll,
    total_variation,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny nets here are fastest on one thread (two threads thrash on a shared 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyBNTeacher(nn.Module):
    """A conv4-like BN teacher (3 blocks, 16 px input in [0, 1], world normalisation inside)."""

    def __init__(self, n_out: int = 5, width: int = 16):
        super().__init__()
        self.register_buffer("mean", torch.tensor(WORLD_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(WORLD_STD).view(1, 3, 1, 1))
        layers, c = [], 3
        for _ in range(3):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            c = width
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(width * 4, n_out)

    def forward(self, x):
        return self.head(self.body((x - self.mean) / self.std))


class TinyTokenModel(nn.Module):
    """A ViT-shaped model without BatchNorm: pixels as 3-d tokens → Linear → LayerNorm → mean pool → head."""

    def __init__(self, dim: int = 4, n_out: int = 3):
        super().__init__()
        self.embed, self.norm, self.head = nn.Linear(3, dim), nn.LayerNorm(dim), nn.Linear(dim, n_out)

    def forward(self, x):
        tokens = self.embed(x.flatten(2).transpose(1, 2))  # (B, H·W, dim)
        return self.head(self.norm(tokens).mean(1))


@pytest.fixture(scope="module")
def teacher():
    """A 5-way teacher trained for ~2 s on five synthetic-world pretraining classes at 16 px."""
    world = SyntheticWorld(WorldConfig(image_size=16))
    classes, n = world.pretrain_classes[:5], 60
    x = torch.from_numpy(world.render_instances(np.repeat(classes, n), np.tile(np.arange(n), 5), "train")) / 255
    y = torch.arange(5).repeat_interleave(n)
    torch.manual_seed(0)
    model = TinyBNTeacher()
    opt, gen = torch.optim.Adam(model.parameters(), 1e-2), torch.Generator().manual_seed(0)
    for _ in range(100):
        i = torch.randint(0, len(x), (64,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
    xt = torch.from_numpy(world.render_instances(np.repeat(classes, 20), np.tile(np.arange(20), 5), "test")) / 255
    model.eval()
    with torch.no_grad():
        assert (model(xt).argmax(1) == torch.arange(5).repeat_interleave(20)).float().mean() >= 0.8
    return model


# --- image priors and jitter ----------------------------------------------------------------------------------

def test_total_variation_hand_computed():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    # →: (−1, −1) ‖·‖=√2; ↓: (−2, −2) √8; ↘/↗ pairs: 2−1 = 1 and 0−3 = −3
    assert total_variation(x).item() == pytest.approx(math.sqrt(2) + math.sqrt(8) + 1 + 3)


@pytest.mark.parametrize("shape", [(1, 1, 3, 3), (4, 3, 8, 5)])
def test_total_variation_of_constant_image_is_zero(shape):
    assert total_variation(torch.full(shape, 0.7)).item() == 0.0
    assert total_variation(torch.randn(shape)).item() > 0


@pytest.mark.parametrize("jitter", [0, 1, 2])
def test_jitter_is_a_roll_within_range_and_a_permutation(jitter):
    x = torch.randn(2, 3, 6, 7)
    for seed in range(8):
        out = random_roll(x, jitter, torch.Generator().manual_seed(seed))
        assert out.shape == x.shape
        assert torch.equal(out.flatten().sort().values, x.flatten().sort().values)
        shifts = [(a, b) for a in range(-jitter, jitter + 1) for b in range(-jitter, jitter + 1)
                  if torch.equal(out, torch.roll(x, (a, b), dims=(2, 3)))]
        assert len(shifts) == 1
        again = random_roll(x, jitter, torch.Generator().manual_seed(seed))
        assert torch.equal(out, again)
    with pytest.raises(ValueError, match="max_shift"):
        random_roll(x, -1)


# --- the BatchNorm (DeepInversion) prior -----------------------------------------------------------------------

def _stats(t):
    return t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False)


def test_bn_prior_is_zero_when_batch_stats_equal_running_stats():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    x = torch.randn(6, 3, 5, 5) * 2 + 1
    for i, bn in ((0, model[0]), (2, model[2])):
        with torch.no_grad():
            inp = model[:i](x)  # the input of this BN, given the earlier BNs' (already set) running stats
        bn.running_mean.copy_(_stats(inp)[0])
        bn.running_var.copy_(_stats(inp)[1])
    with bn_prior_hooks(model) as hooks:
        model(x)
    assert hooks.loss().item() == pytest.approx(0.0, abs=1e-5)
    model[2].running_mean += 1.0  # shift the second BN's reference mean by 1 in each of its 4 channels
    with hooks:
        model(x)
    assert hooks.loss().item() == pytest.approx(2.0, abs=1e-4)  # ‖(1, 1, 1, 1)‖₂


@pytest.mark.parametrize("first_bn_mult", [1.0, 10.0])
def test_bn_prior_hand_computed_with_first_layer_multiplier(first_bn_mult):
    model = nn.Sequential(nn.BatchNorm2d(1), nn.BatchNorm2d(1)).eval()  # running stats: mean 0, var 1
    with torch.no_grad():
        model[0].weight.fill_(0.0)
        model[0].bias.fill_(5.0)  # the second BN always sees the constant 5: mean 5, var 0
    x = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)  # mean 2, biased var 1
    with bn_prior_hooks(model, first_bn_mult) as hooks:
        model(x)
    first = abs(1.0 - 1.0) + abs(2.0 - 0.0)
    second = abs(0.0 - 1.0) + abs(5.0 - 0.0)
    assert hooks.loss().item() == pytest.approx(first_bn_mult * first + second)
    assert set(hooks.stats) == {"0", "1"} and not model[0]._forward_hooks  # hooks removed on exit


def test_bn_prior_hooks_need_a_forward_pass():
    hooks = bn_prior_hooks(nn.Sequential(nn.BatchNorm2d(2)))
    with pytest.raises(RuntimeError, match="forward pass"):
        hooks.loss()


@pytest.mark.parametrize("model", [nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(8, 3)),
                                   nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2, track_running_stats=False),
                                                 nn.Flatten(), nn.Linear(8, 3)),
                                   TinyTokenModel()], ids=["no-bn", "bn-without-stats", "layernorm"])
def test_missing_prior_is_an_error(model):
    with pytest.raises(ValueError, match="a teacher without the statistics the prior needs"):
        InversionLoss(model)
    loss, parts = InversionLoss(model, bn=0.0)(torch.rand(2, 3, 4, 4), torch.tensor([0, 2]))  # no prior needed
    assert torch.isfinite(loss) and parts["bn"].item() == 0.0


# --- the inversion loss --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", [None, (WORLD_MEAN, WORLD_STD)], ids=["input-space", "normalised"])
def test_inversion_loss_is_the_sum_of_its_parts(norm):
    torch.manual_seed(0)
    model = TinyBNTeacher(n_out=3, width=4)
    model(torch.rand(16, 3, 16, 16))  # train-mode pass: non-trivial running statistics
    running = model.body[1].running_mean.clone()
    inv = InversionLoss(model, tv=0.1, bn=0.5, l2=0.01, jitter=0, first_bn_mult=3.0, norm=norm)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x, y = torch.rand(4, 3, 16, 16, requires_grad=True), torch.tensor([0, 1, 2, 0])
    loss, parts = inv(x, y)
    z = x if norm is None else (x - 0.5) / 0.25
    with bn_prior_hooks(model, 3.0) as hooks:
        logits = model(x)
    expected = (F.cross_entropy(logits, y) + 0.1 * total_variation(z) + 0.5 * hooks.loss()
                + 0.01 * torch.linalg.vector_norm(z))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["total"].item() == pytest.approx(loss.item())
    assert parts["acc"].item() == (logits.argmax(1) == y).float().mean().item()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model.body[1].running_mean, running)  # eval mode: running statistics untouched


def test_inversion_loss_rejects_bad_input():
    inv = InversionLoss(TinyBNTeacher(n_out=3, width=4))
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="local to the teacher"):
        inv(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="float"):
        inv((x * 255).to(torch.uint8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="y must be"):
        inv(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="jitter"):
        InversionLoss(TinyBNTeacher(), jitter=-1)
    with pytest.raises(TypeError, match="nn.Module"):
        InversionLoss("teacher")


def test_inversion_inverts_a_trained_teacher(teacher):
    """200 Adam(0.25) steps on X̂ (8 per class): the teacher recognises ≥ 90 % of X̂, L_inv falls ≥ 50 %,
    and the BN prior term falls too."""
    data, inv = DynamicDataset(5, 8, 16, seed=0), InversionLoss(teacher)
    gen, losses, bns = torch.Generator().manual_seed(0), [], []
    for _ in range(200):
        x, y = data.slice(range(5))
        loss, parts = inv(x, y, generator=gen)
        data.optimizer.zero_grad()
        loss.backward()
        data.optimizer.step()
        losses.append(loss.item())
        bns.append(parts["bn"].item())
    with torch.no_grad():
        acc = (teacher(data.images()).argmax(1) == data.labels).float().mean().item()
    assert acc >= 0.9
    assert np.mean(losses[-10:]) <= 0.5 * losses[0]
    assert np.mean(bns[-10:]) <= 0.5 * bns[0]
    assert data.to_uint8().dtype == np.uint8


# --- the LayerNorm prior (our extension) --------------------------------------------------------------------------

def test_feature_prior_hand_computed_and_batch_invariant():
    torch.manual_seed(0)
    model, images = TinyTokenModel(), torch.rand(5, 3, 4, 4)
    tokens = model.embed(images.flatten(2).transpose(1, 2)).reshape(-1, 4).detach()
    prior = feature_prior(model, images)
    assert list(prior) == ["norm"]
    torch.testing.assert_close(prior["norm"][0], tokens.mean(0))
    torch.testing.assert_close(prior["norm"][1], tokens.var(0, unbiased=False))
    small = feature_prior(model, images, batch_size=2)
    torch.testing.assert_close(small["norm"][0], prior["norm"][0])
    torch.testing.assert_close(small["norm"][1], prior["norm"][1])
    with ln_prior_hooks(model, prior) as hooks:
        model(images)
    assert hooks.loss().item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="no BatchNorm2d layer"):
        feature_prior(model, images, layer_type=nn.BatchNorm2d)
    with pytest.raises(ValueError, match="does not have"):
        ln_prior_hooks(model, {"blocks.0.norm1": prior["norm"]})


def test_inversion_loss_with_a_layernorm_prior():
    torch.manual_seed(0)
    model = TinyTokenModel()
    prior = feature_prior(model, torch.rand(8, 3, 4, 4))
    x = torch.randn(4, 3, 4, 4, requires_grad=True)
    loss, parts = InversionLoss(model, prior=prior)(x, torch.tensor([0, 1, 2, 0]))
    assert parts["bn"].item() > 0
    loss.backward()
    assert x.grad.abs().sum() > 0


# --- the dynamic dataset X̂ -----------------------------------------------------------------------------------

def test_dynamic_dataset_layout_and_spaces():
    data = DynamicDataset(3, 4, (5, 6), seed=1)
    assert data.latent.shape == (12, 3, 5, 6) and len(data) == 12
    assert data.labels.tolist() == [0, 1, 2] * 4  # interleaved per class
    torch.testing.assert_close(data.latent, torch.randn(12, 3, 5, 6, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(data.images(), 0.5 + 0.25 * data.latent)
    assert data.optimizer.param_groups[0]["lr"] == 0.25 and data.optimizer.param_groups[0]["params"][0] is data.latent
    x, y = data.slice([2, 0])
    assert y.tolist() == [0, 1] * 4
    torch.testing.assert_close(x, data.images()[[2, 0, 5, 3, 8, 6, 11, 9]])
    assert x.requires_grad and not data.slice([1], detach=True)[0].requires_grad


def test_to_uint8_hand_computed():
    data = DynamicDataset(1, 1, (1, 5), seed=0)
    with torch.no_grad():
        data.latent.copy_(torch.tensor([-3.0, -2.0, 0.0, 1.0, 10.0]).expand(1, 3, 1, 5))
    # x = 0.5 + 0.25 z = (−0.25, 0, 0.5, 0.75, 3) → clamp → ×255 → round
    assert data.to_uint8()[0, 0, 0].tolist() == [0, 0, 128, 191, 255]
    assert data.to_uint8().shape == (1, 3, 1, 5)


@pytest.mark.parametrize(("n_way", "k_shot", "q_query"), [(5, 1, 15), (3, 5, 3)])
def test_episode_from_the_dynamic_dataset(n_way, k_shot, q_query):
    data = DynamicDataset(7, 16, 4, seed=0)
    gen = torch.Generator().manual_seed(0)
    sx, sy, qx, qy = data.sample_episode(n_way, k_shot, q_query, gen)
    assert sx.shape == (n_way * k_shot, 3, 4, 4) and qx.shape == (n_way * q_query, 3, 4, 4)
    assert sy.tolist() == [c for c in range(n_way) for _ in range(k_shot)]
    assert qy.tolist() == [c for c in range(n_way) for _ in range(q_query)]
    assert not sx.requires_grad
    all_x = data.images(detach=True).flatten(1)

    def rows(x):
        return [int((all_x == r).all(1).nonzero()) for r in x.flatten(1)]

    s_rows, q_rows = rows(sx), rows(qx)
    assert len(set(s_rows) | set(q_rows)) == n_way * (k_shot + q_query)  # distinct, support ∩ query = ∅
    labels = data.labels.tolist()
    for local in range(n_way):  # every image of a local label comes from one global class
        classes = {labels[r] for r, lab in zip(s_rows + q_rows, sy.tolist() + qy.tolist()) if lab == local}
        assert len(classes) == 1
    sx2, *_ = data.sample_episode(n_way, k_shot, q_query, torch.Generator().manual_seed(0))
    assert torch.equal(sx, sx2)
    sx, _, qx, _ = data.sample_episode(n_way, k_shot, q_query, gen, detach=False, classes=[6, 0, 3][:n_way]
                                       if n_way == 3 else None)
    assert sx.requires_grad
    if n_way == 3:
        assert [labels[r] for r in rows(sx.detach())[::k_shot]] == [6, 0, 3]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_way": 9}, "only 7 classes"),
    ({"k_shot": 10, "q_query": 7}, "per_class = 16"),
    ({"n_way": 1}, "n_way >= 2"),
    ({"k_shot": 0}, "k_shot >= 1"),
    ({"classes": [0, 0, 1, 2, 3]}, "distinct"),
    ({"classes": [0, 1, 2]}, "n_way=5"),
])
def test_episode_errors(kwargs, match):
    args = {"n_way": 5, "k_shot": 1, "q_query": 15} | kwargs
    with pytest.raises(ValueError, match=match):
        DynamicDataset(7, 16, 4).sample_episode(**args)
