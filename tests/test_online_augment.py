"""The protocol's per-iteration augmentation: crop + flip + AutoAugment, batch-shared or per-image draws."""
import json

import pytest
import torch
import torch.nn.functional as F

from mepo_lab.backbones.base import weights_hash
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import MicroViTConfig, override
from mepo_lab.data.normalization import Preprocess
from mepo_lab.data.online_augment import OnlineAugment, online_augment_for, random_crop, random_flip
from mepo_lab.learners import StepContext, make_learner


def same_images(b=16, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (1, 3, size, size), dtype=torch.uint8, generator=g).expand(b, -1, -1, -1).clone()


def windows(image, padding):
    """Every crop (and its mirror) RandomCrop(H, padding) + flip can produce from ``image``."""
    h, w = image.shape[-2:]
    padded = F.pad(image, (padding,) * 4)
    crops = [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_random_crop_by_hand():
    image = torch.arange(1, 5, dtype=torch.uint8).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    torch.manual_seed(0)
    out = random_crop(image.expand(200, -1, -1, -1), padding=1)
    seen = {tuple(o[0].flatten().tolist()) for o in out}
    # 3 x 3 offsets of a 2 x 2 window in the zero-padded 4 x 4 image; (1, 1) is the image itself
    expected = {(0, 0, 0, 1), (0, 0, 1, 2), (0, 0, 2, 0), (0, 1, 0, 3), (1, 2, 3, 4), (2, 0, 4, 0),
                (0, 3, 0, 0), (3, 4, 0, 0), (4, 0, 0, 0)}
    assert seen == expected


@pytest.mark.parametrize("policy", [None, "cifar10"])
def test_per_image_draws_differ_and_batch_draws_are_shared(policy):
    x = same_images()
    torch.manual_seed(1)
    shared = OnlineAugment("protocol", "batch", policy)(x)
    assert all(torch.equal(shared[0], s) for s in shared)
    own = OnlineAugment("protocol", "sample", policy)(x)
    assert len({tuple(o.flatten().tolist()) for o in own}) > 4


@pytest.mark.parametrize("draws", ["batch", "sample"])
def test_without_autoaugment_every_output_is_a_padded_window_or_its_mirror(draws):
    x = torch.randint(1, 256, (12, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    out = OnlineAugment("protocol", draws, policy=None, padding=2)(x)
    for img, o in zip(x, out):
        assert any(torch.equal(o, c) for c in windows(img, 2))


def test_flip_only_and_none():
    x = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8)
    torch.manual_seed(0)
    out = OnlineAugment("flip", "sample")(x)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(torch.equal(o, i) or f for o, i, f in zip(out, x, flipped)) and 0 < sum(flipped) < 20
    assert OnlineAugment("none")(x) is x


def test_random_flip_probability_extremes():
    x = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(random_flip(x, 0.0), x) and torch.equal(random_flip(x, 1.0), x.flip(-1))


def test_draws_come_from_the_seeded_global_generator():
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    aug = OnlineAugment("protocol", "sample", "imagenet")
    torch.manual_seed(5)
    a = aug(x)
    torch.manual_seed(5)
    assert torch.equal(a, aug(x))


def test_policy_by_dataset_follows_misa():
    assert online_augment_for("cifar100").policy == "cifar10"
    assert online_augment_for("synthetic").policy is None  # colour is a class factor of the world
    assert online_augment_for("synthetic", policy="cifar10").policy == "cifar10"
    assert online_augment_for("cifar100", policy="none").policy is None
    assert online_augment_for("imagenet-r").policy == "imagenet"
    assert online_augment_for("tiny-imagenet").policy == "imagenet"
    assert online_augment_for("cub200").policy is None


@pytest.mark.parametrize("kwargs, match", [({"mode": "autoaug"}, "gcl.augment must be one of protocol, flip, none"),
                                           ({"draws": "each"}, "gcl.augment_draws must be one of batch, sample"),
                                           ({"policy": "svhn"}, "policy must be one of cifar10, imagenet"),
                                           ({"padding": -1}, "padding must be >= 0")])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OnlineAugment(**kwargs)


def test_unknown_policy_is_named():
    with pytest.raises(ValueError, match="gcl.augment_policy must be one of auto, cifar10, imagenet, none"):
        online_augment_for("cifar100", policy="svhn")


def test_float_input_is_refused():
    with pytest.raises(TypeError, match="uint8"):
        OnlineAugment()(torch.rand(2, 3, 4, 4))


def test_preprocess_resizes_uint8_before_augmenting():
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    pre = Preprocess(size=32)
    seen = []
    out = pre(x, lambda im: seen.append(tuple(im.shape)) or im)
    assert seen == [(3, 3, 32, 32)] and out.shape == (3, 3, 32, 32)
    assert (out - pre(x)).abs().max() * 0.25 < 2 / 255 + 1e-6  # uint8 resize = float resize up to rounding


@pytest.mark.parametrize("learner", ["finetune", "dualprompt"])
def test_learner_re_augments_every_iteration(learner, monkeypatch):
    vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2), 16, seed=0)
    calls = []
    aug = OnlineAugment("protocol", "batch", "cifar10")

    class Spy(OnlineAugment):
        def __call__(self, images):
            calls.append(images.clone())
            return aug(images)

    model = make_learner(learner, backbone=vit, augment=Spy("protocol", "batch", "cifar10"))
    model.setup(3, 0, torch.device("cpu"))
    model.observe(same_images(4, 16), torch.tensor([0, 1, 2, 0]), StepContext(3, 3, "seen"))
    assert len(calls) == 3 and model.describe()["augment"] == "crop(pad4)+flip+autoaugment(cifar10)/batch"


@pytest.mark.parametrize("draws", ["batch", "sample"])
def test_runner_wires_the_configured_augmentation(smoke_preset, smoke_home, tmp_path, draws):
    from mepo_lab.backbones.base import Backbone
    from mepo_lab.experiment import run_on_images

    vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2), 32, seed=0)
    preset = override(smoke_preset, ["stream.n_tasks=2", f"gcl.augment_draws={draws}"])
    run_on_images(preset, "finetune", Backbone(vit, "local", weights_hash(vit)), 1, progress=False,
                  data_home=smoke_home, out_path=tmp_path / "r.json")
    meta = json.loads((tmp_path / "r.json").read_text())["meta"]
    assert meta["learner"]["augment"] == f"crop(pad4)+flip/{draws}"
    assert meta["gcl"]["augment"] == "protocol"
