"""world.shift: downstream renditions (sketch, invert, clutter) that leave pretraining and its cache keys alone."""
import hashlib
import json
from dataclasses import replace
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from mepo_lab.backbones.pretrain import cache_key
from mepo_lab.config import WorldConfig, get_preset, override
from mepo_lab.data import render as R
from mepo_lab.data.synthetic import (
    BLOCK,
    N_CLASSES,
    SPLITS,
    WORLD_VERSION,
    SyntheticWorld,
    _heavier_clutter,
    _nuisance,
    _take,
    factors,
)
from mepo_lab.mepo.pipeline import mepo_folder
from mepo_lab.viz.world import plot_shifts

SMALL = WorldConfig(n_downstream_classes=6, max_pretrain_classes=8, train_per_class=5, test_per_class=3,
                    pretrain_per_class=4)
SHIFTED = ("sketch", "invert", "clutter")


def _photo_reference(cfg: WorldConfig, class_id: int, block: int) -> np.ndarray:
    """Today's photo of one 64-instance block, composited here without ``render`` (its pre-shift body)."""
    size = cfg.image_size
    nz = _nuisance(np.random.default_rng([cfg.seed, SPLITS["train"], class_id, block]), BLOCK, size)
    s, p, q = (np.full(BLOCK, int(f)) for f in factors(class_id))
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx, dy = grid[None, None, :] - nz.cx[:, None, None], grid[None, :, None] - nz.cy[:, None, None]
    cos, sin, rad = np.cos(nz.angle)[:, None, None], np.sin(nz.angle)[:, None, None], nz.radius[:, None, None]
    u, v = (cos * dx + sin * dy) / rad, (-sin * dx + cos * dy) / rad
    alpha = np.clip(0.5 - R._grouped(R.shape_sdf, s, u, v) * rad, 0.0, 1.0)[:, None]
    mix = R._grouped(R.pattern_mask, p, u, v)[:, None]
    colors = R._COLORS[q] * nz.brightness[:, None, None] + nz.color_shift[:, None, :]
    c0, c1 = colors[:, 0, :, None, None], colors[:, 1, :, None, None]
    img = R._background(nz, dx, dy, size)
    img += alpha * (c0 + mix * (c1 - c0) - img)
    img += (nz.noise_sigma[:, None, None] * nz.noise)[:, None]
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("class_id, block", [(0, 0), (157, 1), (N_CLASSES - 1, 0)])
def test_photo_pixels_are_unchanged(class_id, block):
    world = SyntheticWorld(WorldConfig())
    instance = block * BLOCK + np.arange(BLOCK)
    expected = _photo_reference(world.config, class_id, block)
    ids = np.full(BLOCK, class_id)
    assert np.array_equal(world.render_instances(ids, instance, "train"), expected)
    assert np.array_equal(world.render_instances(ids, instance, "train", style="photo"), expected)


@pytest.mark.parametrize("shift", SHIFTED)
def test_shift_changes_only_the_downstream_images_and_names(shift):
    plain, shifted = SyntheticWorld(SMALL), SyntheticWorld(replace(SMALL, shift=shift))
    for split in SPLITS:
        a, b = plain.dataset("pretrain", split), shifted.dataset("pretrain", split)
        assert np.array_equal(a.images, b.images) and a.name == b.name
        a, b = plain.dataset("downstream", split), shifted.dataset("downstream", split)
        assert np.array_equal(a.targets, b.targets) and a.class_names == b.class_names
        assert not np.array_equal(a.images, b.images)
        assert b.name == a.name[:-1] + f",shift={shift})" == shifted.dataset_name("downstream", split)
        assert "shift" not in a.name


def test_invert_is_the_photo_negative_and_sketch_is_on_light_paper():
    ids, instance = np.repeat(SyntheticWorld(SMALL).downstream_classes, 4), np.tile(np.arange(4), 6)
    world = SyntheticWorld(SMALL)
    photo = world.render_instances(ids, instance, "test").astype(int)
    inverted = world.render_instances(ids, instance, "test", style="invert").astype(int)
    assert np.abs(inverted - (255 - photo)).max() <= 1
    sketch = world.render_instances(ids, instance, "test", style="sketch")
    assert np.median(sketch) > 200  # most pixels are paper


def test_clutter_adds_blobs_after_the_photo_draws():
    rng = np.random.default_rng(1)
    nz = _nuisance(rng, 8, 32)
    heavy = _heavier_clutter(rng, nz, 32)
    assert heavy.clutter_r.shape == (8, 4 * R.N_CLUTTER) and heavy.clutter_r.max() > nz.clutter_r.max()
    assert np.array_equal(heavy.clutter_xy[:, :R.N_CLUTTER], nz.clutter_xy)
    assert np.all(heavy.noise_sigma > nz.noise_sigma) and np.array_equal(heavy.cx, nz.cx)
    world = SyntheticWorld(SMALL)
    ids, instance = np.repeat(world.downstream_classes, 4), np.tile(np.arange(4), 6)
    photo, clutter = (world.render_instances(ids, instance, "train", style=s).astype(float) for s in ("photo", "clutter"))
    assert np.abs(np.diff(clutter, axis=-1)).mean() > 1.5 * np.abs(np.diff(photo, axis=-1)).mean()


@pytest.mark.parametrize("style", R.STYLES)
def test_every_style_keeps_the_384_classes_apart(style):
    """With one shared nuisance, the closest two classes are about as far apart in each style as in a photo."""
    rng = np.random.default_rng(3)
    nz = _nuisance(rng, 1, 32)
    nz = _heavier_clutter(rng, nz, 32) if style == "clutter" else nz
    ids = np.arange(N_CLASSES)

    def closest(st: str) -> float:
        img = R.render(*factors(ids), _take(nz, np.zeros(N_CLASSES, int)), 32, st).reshape(N_CLASSES, -1) / 255.0
        sq = (img * img).sum(1)
        dist = sq[:, None] + sq[None] - 2.0 * img @ img.T  # squared distances
        np.fill_diagonal(dist, np.inf)
        return float(dist.min())

    assert closest(style) > 0.5 * closest("photo") > 0


def _old_world_fields(cfg: WorldConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("seed", "image_size", "n_downstream_classes", "pretrain_per_class",
                                         "train_per_class", "test_per_class", "max_pretrain_classes")}


@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_pretraining_and_refinement_keys_ignore_the_shift(name, tmp_path):
    from dataclasses import asdict

    preset = get_preset(name)
    old = json.dumps([WORLD_VERSION, _old_world_fields(preset.world), asdict(preset.vit), asdict(preset.pretrain)],
                     sort_keys=True)
    assert cache_key(preset) == hashlib.sha256(old.encode()).hexdigest()[:12]
    source = SimpleNamespace(weights_hash="abc123")
    for shift in SHIFTED:
        shifted = override(preset, {"world.shift": shift})
        assert cache_key(shifted) == cache_key(preset)
        assert mepo_folder(shifted, source, tmp_path) == mepo_folder(preset, source, tmp_path)


def test_bad_shift_or_style_is_one_clear_error():
    message = "world.shift must be one of none, sketch, invert, clutter, got 'photo'"
    with pytest.raises(ValueError, match=message):
        SyntheticWorld(WorldConfig(shift="photo"))
    world = SyntheticWorld(SMALL)
    object.__setattr__(world, "config", replace(SMALL, shift="photo"))  # a config swapped after building
    with pytest.raises(ValueError, match=message):
        world.dataset("downstream", "test")
    with pytest.raises(ValueError, match="style must be one of photo, sketch, invert, clutter, got 'none'"):
        SyntheticWorld(SMALL).render_instances(np.zeros(1, int), np.zeros(1, int), "train", style="none")


@pytest.mark.parametrize("world", [SMALL, SyntheticWorld(SMALL)])
def test_plot_shifts_shows_every_shift(world):
    fig = plot_shifts(world, classes=[0, 200], per_class=3)
    assert len(fig.axes) == len(R.SHIFTS) * 2 * 3
    assert [ax.get_ylabel() for ax in fig.axes[::6]] == list(R.SHIFTS)
    plt.close(fig)
