import numpy as np
import pytest
import torch

from mepo_lab.backbones.base import cls_features, weights_hash
from mepo_lab.backbones.features import cached_features, feature_key
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.backbones.pretrain import cache_key, pretrained_backbone, random_backbone
from mepo_lab.config import MicroViTConfig
from mepo_lab.data.normalization import normalize
from mepo_lab.data.synthetic import SyntheticWorld

TINY = MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2)


def test_micro_vit_is_a_timm_vit_with_post_norm_cls_feature():
    from timm.models.vision_transformer import VisionTransformer

    from mepo_lab.backbones.base import count_parameters

    vit = create_micro_vit(TINY, 32, seed=0).eval()
    assert isinstance(vit, VisionTransformer) and vit.num_features == 16
    assert count_parameters(vit) == sum(p.numel() for p in vit.parameters()) > 0
    x = torch.randn(3, 3, 32, 32)
    f = cls_features(vit, x)
    # timm's own pre-logits path with CLS pooling is the same vector: norm(tokens)[CLS]
    torch.testing.assert_close(f, vit.forward_head(vit.forward_features(x), pre_logits=True))


def test_seeded_init_is_reproducible_and_leaves_global_rng():
    state = torch.get_rng_state()
    a, b = create_micro_vit(TINY, 32, seed=3), create_micro_vit(TINY, 32, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert weights_hash(a) == weights_hash(b) != weights_hash(create_micro_vit(TINY, 32, seed=4))


@pytest.mark.parametrize("kwargs, message", [
    (dict(cfg=MicroViTConfig(patch_size=5), image_size=32), "multiple of patch_size"),
    (dict(cfg=MicroViTConfig(embed_dim=30, num_heads=4), image_size=32), "divisible by num_heads"),
])
def test_bad_vit_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_micro_vit(**kwargs)


def test_normalize_rejects_float_input():
    with pytest.raises(TypeError, match="expected uint8 images"):
        normalize(torch.zeros(1, 3, 4, 4))
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(x), torch.full((1, 3, 2, 2), 2.0))


def test_feature_cache_hits_without_rendering(smoke_preset, data_home):
    world = SyntheticWorld(smoke_preset.world)
    bb = random_backbone(smoke_preset, seed=0)
    name = world.dataset_name("downstream", "test")
    first = cached_features(bb, name, lambda: world.dataset("downstream", "test"), progress=False)
    assert not first.cached and first.features.dtype == np.float16
    assert first.features.shape == (len(world.targets("downstream", "test")), bb.feature_dim)

    def must_not_render():
        raise AssertionError("cache miss")

    again = cached_features(bb, name, must_not_render, progress=False)
    assert again.cached
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_array_equal(again.targets, world.targets("downstream", "test"))
    other = random_backbone(smoke_preset, seed=1)
    assert feature_key(other.weights_hash, name) != first.key


def test_feature_key_records_mixed_precision_only():
    """fp32 features keep the key of earlier versions; autocast features (gcl.amp on a GPU) get their own."""
    fp32 = feature_key("w", "d")
    assert fp32 == feature_key("w", "d", precision="fp32")
    assert len({fp32, feature_key("w", "d", precision="bfloat16"), feature_key("w", "d", precision="float16")}) == 3


def test_feature_cache_refuses_mismatched_dataset(smoke_preset, data_home):
    world = SyntheticWorld(smoke_preset.world)
    with pytest.raises(ValueError, match="expected 'wrong-name'"):
        cached_features(random_backbone(smoke_preset), "wrong-name",
                        lambda: world.dataset("downstream", "test"), progress=False)


def test_pretraining_is_cached_and_beats_random_init(smoke_preset, smoke_home):
    seen = []
    trained = pretrained_backbone(smoke_preset, smoke_home, progress=False, callback=seen.append)
    assert not trained.info["cached"] and seen and seen[-1]["step"] >= seen[0]["step"]
    cached = pretrained_backbone(smoke_preset, smoke_home, progress=False)
    assert cached.info["cached"] and cached.weights_hash == trained.weights_hash
    assert trained.weights_hash != random_backbone(smoke_preset).weights_hash
    assert set(cached.model.state_dict()) == {k for k in cached.model.state_dict() if not k.startswith("head.")}
    # the training loss went down: the first logged loss is above the last one
    assert trained.info["log"][0]["loss"] > trained.info["log"][-1]["loss"]


def test_cache_key_changes_with_any_config(smoke_preset):
    from dataclasses import replace

    base = cache_key(smoke_preset)
    assert cache_key(replace(smoke_preset, vit=replace(smoke_preset.vit, depth=2))) != base
    assert cache_key(replace(smoke_preset, world=replace(smoke_preset.world, seed=5))) != base
    assert cache_key(replace(smoke_preset, pretrain=replace(smoke_preset.pretrain, lr=1.0))) != base
    assert cache_key(replace(smoke_preset, gcl=replace(smoke_preset.gcl, lr=1.0))) == base


def test_weight_distance_is_relative_and_ignores_the_head(smoke_preset):
    import copy

    import torch

    from mepo_lab.backbones.base import weight_distance
    from mepo_lab.backbones.micro_vit import create_micro_vit

    a = create_micro_vit(smoke_preset.vit, 32, num_classes=3, seed=0)
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.head.weight.add_(100.0)  # a head is not part of a backbone
    assert weight_distance(b, a) == 0.0
    with torch.no_grad():
        for p in b.parameters():
            p.mul_(1.5)
    assert weight_distance(b, a) == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(ValueError, match="different architectures"):
        weight_distance(torch.nn.Linear(2, 2), a)


def test_the_pretraining_head_is_kept_and_its_absence_named(smoke_preset, smoke_home, data_home):
    from mepo_lab.backbones.pretrain import pretraining_head

    backbone = pretrained_backbone(smoke_preset, smoke_home, progress=False)
    head = pretraining_head(smoke_preset, smoke_home)
    n_classes = len(SyntheticWorld(smoke_preset.world).pretrain_classes)
    assert head["head.weight"].shape == (n_classes, backbone.feature_dim) and head["head.bias"].shape == (n_classes,)
    with pytest.raises(FileNotFoundError, match="mepo-lab pretrain --force"):
        pretraining_head(smoke_preset, data_home)  # an empty data home: nothing cached
