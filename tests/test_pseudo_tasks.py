import numpy as np
import pytest

from mepo_lab.config import MePoConfig
from mepo_lab.mepo.pseudo_tasks import PseudoTaskSampler
from mepo_lab.mepo.switches import differences, resolve

OFFICIAL = MePoConfig()  # 100-class groups, 50 pseudo tasks of 2 classes, 200 images per class


@pytest.fixture(scope="module")
def imagenet_like():
    """ImageNet-1K-shaped labels: 1000 classes with 220 images each (indices only)."""
    return np.random.default_rng(0).permutation(np.repeat(np.arange(1000), 220))


def test_official_structure(imagenet_like):
    sampler = PseudoTaskSampler(imagenet_like, OFFICIAL)
    groups = sampler.epoch(0)
    assert len(groups) == 10 and all(len(g.tasks) == 50 for g in groups)
    all_classes = np.concatenate([g.classes for g in groups])
    assert sorted(all_classes.tolist()) == list(range(1000))  # groups partition the classes
    for g in groups:
        task_classes = np.concatenate([t.classes for t in g.tasks])
        assert sorted(task_classes.tolist()) == sorted(g.classes.tolist())
        assert all(len(t.classes) == 2 and len(t.indices) == 400 for t in g.tasks)
        assert len(g.joint) == 20_000 and set(imagenet_like[g.joint]) == set(g.classes)
        for t in g.tasks:
            assert len(set(t.indices)) == 400  # without replacement inside one draw
            assert np.bincount(imagenet_like[t.indices], minlength=1000)[t.classes].tolist() == [200, 200]


def test_official_step_count():
    assert PseudoTaskSampler(np.repeat(np.arange(1000), 200), OFFICIAL).steps_per_group() == 479


def test_draws_are_fresh_and_the_joint_set_is_independent(imagenet_like):
    g = PseudoTaskSampler(imagenet_like, OFFICIAL).group(0, 0)
    first = g.tasks[0]
    joint_of_first = g.joint[np.isin(imagenet_like[g.joint], first.classes)]
    assert set(joint_of_first) != set(first.indices)  # an independent draw, not the union


def test_union_joint_set(imagenet_like):
    g = PseudoTaskSampler(imagenet_like, MePoConfig(joint_set="union")).group(0, 0)
    np.testing.assert_array_equal(np.sort(g.joint), np.sort(np.concatenate([t.indices for t in g.tasks])))


def test_every_meta_epoch_reshuffles_and_draws_are_reproducible(imagenet_like):
    a, b = PseudoTaskSampler(imagenet_like, OFFICIAL), PseudoTaskSampler(imagenet_like, OFFICIAL)
    assert not np.array_equal(a.class_order(0), a.class_order(1))
    np.testing.assert_array_equal(a.group(3, 2).tasks[7].indices, b.group(3, 2).tasks[7].indices)


@pytest.mark.parametrize("index, expect_double", [("double", True), ("direct", False)])
def test_class_index_switch(imagenet_like, index, expect_double):
    sampler = PseudoTaskSampler(imagenet_like, MePoConfig(class_index=index))
    plain = np.random.default_rng([0, 0]).permutation(1000)
    expected = plain[plain] if expect_double else plain
    np.testing.assert_array_equal(sampler.class_order(0), expected)


def test_fidelity_resolution():
    assert differences(MePoConfig()) == {}
    corrected = resolve(MePoConfig(fidelity="corrected"))
    assert (corrected.logit_mask, corrected.optimizer_state, corrected.cov_augment) == ("neg_inf", "reset", False)
    one = resolve(MePoConfig(fidelity="official", logit_mask="neg_inf"))
    assert one.logit_mask == "neg_inf" and one.optimizer_state == "persist"


@pytest.mark.parametrize("kwargs, message", [
    (dict(fidelity="exact"), "mepo.fidelity must be one of official, corrected"),
    (dict(logit_mask="zero"), "mepo.logit_mask must be one of multiply, neg_inf, current_task"),
    (dict(head_reset="always"), "mepo.head_reset must be one of none, per_sequence, per_task"),
    (dict(group_size=100, tasks_per_group=30), "must be a multiple of mepo.tasks_per_group"),
    (dict(meta_lr=1.5), r"must be in \[0, 1\]"),
    (dict(inner_epochs=0), "mepo.inner_epochs must be at least 1"),
    (dict(repeat_draws="never"), "mepo.repeat_draws must be one of fresh, same"),
])
def test_bad_mepo_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve(MePoConfig(**kwargs))


def test_sampler_rejects_impossible_requests():
    labels = np.repeat(np.arange(10), 5)
    with pytest.raises(ValueError, match="exceeds the 10 pretraining classes"):
        PseudoTaskSampler(labels, MePoConfig(group_size=20, tasks_per_group=10))
    with pytest.raises(ValueError, match="only 5 images but mepo.samples_per_class is 200"):
        PseudoTaskSampler(labels, MePoConfig(group_size=10, tasks_per_group=5))


def test_a_later_repeat_draws_fresh_images_of_the_same_classes(imagenet_like):
    sampler = PseudoTaskSampler(imagenet_like, OFFICIAL)
    first, again, second = sampler.group(0, 3), sampler.group(0, 3, repeat=0), sampler.group(0, 3, repeat=1)
    for a, b, c in zip(first.tasks, again.tasks, second.tasks):
        np.testing.assert_array_equal(a.indices, b.indices)  # repeat 0 is the draw a group always had
        np.testing.assert_array_equal(a.classes, c.classes)
        assert set(a.indices) != set(c.indices)
        assert np.bincount(imagenet_like[c.indices], minlength=1000)[c.classes].tolist() == [200, 200]
    assert set(first.joint) != set(second.joint) and set(imagenet_like[second.joint]) == set(first.classes)


@pytest.mark.parametrize("index", ["double", "direct"])
def test_groups_at_the_cpu_preset_sizes_students_run(index):
    """284 pretraining classes in groups of 40 (notebook 02 at the cpu preset): 7 disjoint groups, 4 sit out."""
    from dataclasses import replace

    from mepo_lab.config import PRESETS
    from mepo_lab.data.synthetic import SyntheticWorld

    preset = PRESETS["cpu"]()
    labels = SyntheticWorld(preset.world).targets("pretrain", "train")  # indices only, no image rendered
    sampler = PseudoTaskSampler(labels, replace(preset.mepo, class_index=index))
    for epoch in (0, 1):
        groups = np.concatenate([sampler.group(epoch, g).classes for g in range(sampler.n_groups)])
        resting = sampler.resting_classes(epoch)
        assert sampler.n_groups == 7 and len(resting) == 4 and len(set(groups)) == 280
        assert sorted([*groups, *resting]) == list(range(284))
    other = PseudoTaskSampler(labels, replace(preset.mepo, class_index="direct" if index == "double" else "double"))
    assert set(sampler.resting_classes(0)) != set(other.resting_classes(0))
