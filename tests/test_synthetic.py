import numpy as np
import pytest

from mepo_lab.config import WorldConfig
from mepo_lab.data.render import PALETTES, PATTERNS, SHAPES
from mepo_lab.data.synthetic import N_CLASSES, SyntheticWorld, describe, factors

SMALL = WorldConfig(n_downstream_classes=6, max_pretrain_classes=10, train_per_class=5, test_per_class=3,
                    pretrain_per_class=4)


def test_world_has_at_least_300_classes_split_disjointly():
    world = SyntheticWorld(WorldConfig())
    pre, down = world.pretrain_classes, world.downstream_classes
    assert N_CLASSES >= 300
    assert len(down) == 100 and len(pre) == N_CLASSES - 100
    assert not set(pre) & set(down)


def test_every_factor_value_is_seen_in_pretraining():
    shape, pattern, palette = factors(SyntheticWorld(WorldConfig()).pretrain_classes)
    assert set(shape) == set(range(len(SHAPES)))
    assert set(pattern) == set(range(len(PATTERNS)))
    assert set(palette) == set(range(len(PALETTES)))


@pytest.mark.parametrize("class_id, text", [
    (0, "solid red/yellow disk"),
    (1 * 8 + 2, "striped blue/orange disk"),
    (N_CLASSES - 1, "two-tone black/cyan crescent"),
])
def test_describe_names_the_factors(class_id, text):
    assert describe(class_id) == text


def test_describe_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"class_id must be in \[0, 383\], got 384"):
        describe(N_CLASSES)


def test_same_seed_same_pixels_and_prefix_stable():
    a = SyntheticWorld(SMALL).dataset("downstream", "train")
    b = SyntheticWorld(SMALL).dataset("downstream", "train")
    np.testing.assert_array_equal(a.images, b.images)
    ids = SyntheticWorld(SMALL).downstream_classes[:2]
    few = SyntheticWorld(SMALL).render_instances(np.repeat(ids, 3), np.tile(np.arange(3), 2), "train")
    many = SyntheticWorld(SMALL).render_instances(np.repeat(ids, 70), np.tile(np.arange(70), 2), "train")
    np.testing.assert_array_equal(few[:3], many[:3])
    np.testing.assert_array_equal(few[3:], many[70:73])


def test_seed_and_split_change_the_pixels():
    world = SyntheticWorld(SMALL)
    ids, inst = np.repeat(world.downstream_classes[:2], 3), np.tile(np.arange(3), 2)
    train = world.render_instances(ids, inst, "train")
    assert not np.array_equal(train, world.render_instances(ids, inst, "test"))
    reseeded = SyntheticWorld(WorldConfig(**{**SMALL.__dict__, "seed": 1}))
    assert not np.array_equal(train, reseeded.render_instances(ids, inst, "train"))


def test_dataset_shapes_labels_and_interleaved_order():
    world = SyntheticWorld(SMALL)
    ds = world.dataset("downstream", "train")
    assert ds.images.shape == (6 * 5, 3, 32, 32) and ds.images.dtype == np.uint8
    assert np.bincount(ds.targets).tolist() == [5] * 6
    assert not np.all(np.diff(ds.targets) >= 0), "dataset order should interleave classes like CIFAR"
    np.testing.assert_array_equal(world.targets("downstream", "train"), ds.targets)
    assert ds.name == world.dataset_name("downstream", "train")
    assert ds.class_names[0] == describe(world.downstream_classes[0])
    assert len(world.dataset("pretrain", "train")) == 10 * 4


def test_images_are_not_constant_and_classes_differ():
    ds = SyntheticWorld(SMALL).dataset("downstream", "train")
    assert ds.images.std() > 20
    means = np.stack([ds.images[ds.targets == c].mean(0) for c in range(6)])
    assert np.abs(means[0] - means[1]).mean() > 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(role="imagenet", split="train"), "unknown role 'imagenet'"),
    (dict(role="downstream", split="val"), "unknown split 'val'"),
    (dict(role="downstream", split="train", per_class=0), "per_class must be at least 1"),
])
def test_bad_dataset_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticWorld(SMALL).dataset(**kwargs)


def test_bad_world_size():
    with pytest.raises(ValueError, match="n_downstream_classes must be in"):
        SyntheticWorld(WorldConfig(n_downstream_classes=0)).downstream_classes
