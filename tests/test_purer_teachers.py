"""Checks of ``mepo_lab.purer.models`` (Conv4) and ``mepo_lab.purer.teachers`` (teacher pool, FedAvg)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mepo_lab.config import WorldConfig
from mepo_lab.data.base import ImageArrays
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.purer import teachers as tc
from mepo_lab.purer.models import conv4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run fastest on one thread, and much faster than two when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world16() -> ImageArrays:
    """7 pretraining classes of the synthetic world at 16 px, 30 images each."""
    world = SyntheticWorld(WorldConfig(image_size=16, max_pretrain_classes=7, pretrain_per_class=30))
    return world.dataset("pretrain", "train")


@pytest.fixture(scope="module")
def trained(world16) -> tc.Teacher:
    return tc.train_teacher(world16.images, world16.targets, [4, 0, 6, 2, 1], width=16, epochs=6, batch_size=32,
                            seed=0)


# ---------------------------------------------------------------- Conv4
@pytest.mark.parametrize("size,width,dim", [(16, 8, 8), (31, 8, 8), (32, 32, 128), (84, 32, 800)])
def test_conv4_shapes(size, width, dim):
    # feature_dim = width * floor(size / 16)^2 (official 32 * (img_size >> 4)^2; 84 px -> 5 x 5 x 32 = 800)
    model = conv4(5, width=width, image_size=size, seed=0)
    x = torch.rand(2, 3, size, size)
    assert model.feature_dim == dim and model.features(x).shape == (2, dim)
    assert model(x).shape == (2, 5) and isinstance(model.head, nn.Linear) and model.head.in_features == dim
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4


def test_conv4_normalises_inside_and_initialises_as_official():
    model = conv4(3, width=64, image_size=16, seed=1).eval()
    x = torch.rand(4, 3, 16, 16)
    # the trunk on (x - 0.5) / 0.25 is what features(x) computes
    torch.testing.assert_close(model.features(x), model.trunk((x - 0.5) / 0.25).flatten(1))
    bn = model.trunk.block0.bn
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))
    # conv weights ~ N(0, 2 / (3 * 3 * 64)): the empirical std of the 64*64*9 weights of block 1 is within 3 %
    w = model.trunk.block1.conv.weight
    assert float(w.detach().std()) == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.03)
    custom = conv4(3, image_size=16, mean=(0.1, 0.2, 0.3), std=0.5)
    assert custom.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3]) and custom.std.flatten().tolist() == [0.5] * 3


def test_conv4_seed_is_reproducible_and_leaves_global_rng():
    state = torch.get_rng_state()
    a, b = conv4(5, image_size=16, seed=3), conv4(5, image_size=16, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    assert not torch.equal(a.head.weight, conv4(5, image_size=16, seed=4).head.weight)


@pytest.mark.parametrize("kwargs,match", [
    ({"n_out": 5, "image_size": 15}, "image_size must be at least 16"),
    ({"n_out": 0, "image_size": 16}, "n_out must be at least 1"),
    ({"n_out": 5, "image_size": 16, "in_channels": 1, "mean": (0.5, 0.5)}, "mean has 2 values for in_channels=1"),
])
def test_conv4_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv4(**kwargs)


def test_conv4_wrong_input_size():
    with pytest.raises(ValueError, match=r"expects float images \(B, 3, 16, 16\), got \(1, 3, 32, 32\)"):
        conv4(5, image_size=16)(torch.rand(1, 3, 32, 32))


# ---------------------------------------------------------------- training
def test_lr_milestones():
    assert tc.lr_milestones(60) == [30, 40, 50]  # pretrain.py
    assert tc.lr_milestones(12) == [6, 8, 10]


def test_teacher_beats_chance_on_held_out(trained, world16):
    assert trained.classes == [4, 0, 6, 2, 1]
    assert trained.accuracy >= 0.6  # chance: 0.2
    assert not trained.model.training
    assert trained.model.head.out_features == 5
    # BatchNorm running statistics were learned (initial values: mean 0, var 1)
    assert float(trained.model.trunk.block0.bn.running_mean.abs().sum()) > 0
    # local label i is class classes[i]: training-set accuracy with that mapping is far above chance
    keep = np.isin(world16.targets, trained.classes)
    local = torch.as_tensor([trained.classes.index(int(t)) for t in world16.targets[keep]])
    with torch.no_grad():
        pred = trained.model(torch.from_numpy(world16.images[keep]).float() / 255).argmax(1)
    assert float((pred == local).float().mean()) >= 0.6


def test_train_teacher_is_deterministic(world16):
    kw = {"width": 4, "epochs": 1, "batch_size": 64, "seed": 5}
    a = tc.train_teacher(world16.images, world16.targets, [0, 1], **kw)
    b = tc.train_teacher(world16.images, world16.targets, [0, 1], **kw)
    assert a.accuracy == b.accuracy
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


@pytest.mark.parametrize("classes,kwargs,match", [
    ([0, 99], {}, r"\[99\] have no images"),
    ([3], {}, "at least 2 distinct"),
    ([1, 1], {}, "at least 2 distinct"),
    ([0, 1], {"holdout": 1.0}, "holdout must be a fraction"),
    ([0, 1], {"epochs": 0}, "epochs and batch_size"),
])
def test_train_teacher_errors(world16, classes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tc.train_teacher(world16.images, world16.targets, classes, **kwargs)


def test_train_teacher_needs_two_images_per_class(world16):
    keep = np.concatenate([np.flatnonzero(world16.targets == 0), np.flatnonzero(world16.targets == 1)[:1]])
    with pytest.raises(ValueError, match="local class 1 has 1 image"):
        tc.train_teacher(world16.images[keep], world16.targets[keep], [0, 1], epochs=1)


# ---------------------------------------------------------------- pool grouping
@pytest.mark.parametrize("n,g,n_teachers,expected", [
    (64, 5, None, [list(range(i, min(i + 5, 64))) for i in range(0, 64, 5)]),  # official: 13, the last of 4
    (12, 5, None, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]),
    (12, 5, 2, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]),
    (10, 5, None, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]),
])
def test_teacher_groups(n, g, n_teachers, expected):
    groups = tc.teacher_groups(range(n), g, n_teachers)
    assert groups == expected
    if n == 64:
        assert len(groups) == 13 and len(groups[-1]) == 4


@pytest.mark.parametrize("n,g,n_teachers,match", [
    (11, 5, None, "last teacher with one class"),
    (12, 5, 4, r"n_teachers must be in \[1, 3\]"),
    (12, 1, None, "classes_per_teacher must be at least 2"),
])
def test_teacher_groups_errors(n, g, n_teachers, match):
    with pytest.raises(ValueError, match=match):
        tc.teacher_groups(range(n), g, n_teachers)


def test_teacher_pool_groups_with_short_last(world16):
    # 7 classes in groups of 4: [0, 1, 2, 3] and the short [4, 5, 6]
    pool = tc.teacher_pool(world16, classes_per_teacher=4, width=4, epochs=1, batch_size=64, seed=0)
    assert [t.classes for t in pool] == [[0, 1, 2, 3], [4, 5, 6]]
    assert [t.model.head.out_features for t in pool] == [4, 3]
    assert all(0.0 <= t.accuracy <= 1.0 and not t.model.training for t in pool)
    assert not torch.equal(pool[0].model.trunk.block0.conv.weight, pool[1].model.trunk.block0.conv.weight)
    one = tc.teacher_pool(world16, classes_per_teacher=4, n_teachers=1, width=4, epochs=1, batch_size=64, seed=0)
    assert [t.classes for t in one] == [[0, 1, 2, 3]]


# ---------------------------------------------------------------- FedAvg
def three_nets(width: int = 4, heads: tuple[int, ...] = (5, 5, 4)) -> list[tc.Teacher]:
    teachers = []
    for i, n_out in enumerate(heads):
        model = conv4(n_out, width=width, image_size=16, seed=i)
        with torch.no_grad():  # distinct BN buffers per teacher
            model.trunk.block0.bn.running_mean.fill_(float(i))
            model.trunk.block0.bn.running_var.fill_(1.0 + i)
            model.trunk.block0.bn.num_batches_tracked.fill_(10 * i + 1)
        teachers.append(tc.Teacher(model.eval(), list(range(5 * i, 5 * i + n_out)), 1.0))
    return teachers


def test_average_equals_mean_of_params_heads_excluded():
    teachers = three_nets()
    avg = tc.teacher_average(teachers, n_way=5)
    states = [t.model.state_dict() for t in teachers]
    for k, v in avg.state_dict().items():
        if k.startswith("head."):
            continue
        if v.is_floating_point():
            torch.testing.assert_close(v, (states[0][k] + states[1][k] + states[2][k]) / 3)
    bn = avg.trunk.block0.bn
    assert torch.allclose(bn.running_mean, torch.ones(4)) and torch.allclose(bn.running_var, torch.full((4,), 2.0))
    assert int(bn.num_batches_tracked) == 11  # (1 + 11 + 21) / 3
    # a fresh zero head of the requested width; the teachers are untouched
    assert avg.head.out_features == 5 and not avg.head.weight.any() and not avg.head.bias.any()
    assert teachers[0].model.head.weight.any() and avg is not teachers[0].model
    assert not avg.training
    assert tc.teacher_average(teachers, n_way=3).head.out_features == 3


def test_average_with_heads_is_fedavg():
    teachers = three_nets(heads=(5, 5, 5))
    avg = tc.teacher_average(teachers, average_heads=True)
    heads = torch.stack([t.model.head.weight for t in teachers])
    torch.testing.assert_close(avg.head.weight, heads.mean(0))


@pytest.mark.parametrize("case,match", [
    ("width", r"'trunk.block0.conv.weight' has shape \(8, 3, 3, 3\), teacher 0's \(4, 3, 3, 3\)"),
    ("heads", "different head widths"),
    ("type", "is a Linear, teacher 0 a Conv4"),
    ("empty", "at least one teacher"),
])
def test_average_errors(case, match):
    teachers = three_nets()
    if case == "width":
        teachers[1] = tc.Teacher(conv4(5, width=8, image_size=16), [0], 1.0)
    if case == "type":
        teachers[2] = tc.Teacher(nn.Linear(3, 3), [0], 1.0)
    with pytest.raises(ValueError, match=match):
        tc.teacher_average([] if case == "empty" else teachers, average_heads=case == "heads")


def test_the_average_of_frozen_teachers_is_trainable():
    from mepo_lab.purer.models import conv4
    from mepo_lab.purer.teachers import teacher_average

    frozen = [conv4(5, width=4, image_size=16, seed=s).requires_grad_(False) for s in (1, 2)]
    assert all(p.requires_grad for p in teacher_average(frozen, n_way=5).parameters())
