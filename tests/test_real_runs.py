"""Real-data GCL on fake on-disk data: CIFAR-100 pickles through the image learners (offline)."""
import json

import numpy as np
import pytest
import torch

from mepo_lab.backbones.base import Backbone, weights_hash
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import MicroViTConfig, override
from mepo_lab.data.arrays import dataset_arrays
from mepo_lab.data.normalization import preprocess_for
from mepo_lab.experiment import run_on_images
from mepo_lab.registry import get_backbone
from tests.fakes import write_cifar100


@pytest.fixture
def cifar_root(tmp_path):
    write_cifar100(tmp_path / "cifar100", train_per_class=3, test_per_class=1)  # root/<name>/cifar-100-python
    return tmp_path


def test_cifar_arrays_stay_32px_and_preprocess_resizes_to_the_backbone(cifar_root):
    images, targets = dataset_arrays("cifar100", "train", root=cifar_root, verify=False)
    assert images.shape == (300, 3, 32, 32) and images.dtype == np.uint8 and np.bincount(targets).tolist() == [3] * 100
    vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2), 64)
    pre = preprocess_for("cifar100", vit)
    assert pre.size == 64 and pre.mean == (0.5071, 0.4867, 0.4408)
    assert pre(torch.from_numpy(images[:2])).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("learner", ["dualprompt", "finetune"])
def test_image_learner_on_fake_cifar(cifar_root, smoke_preset, tmp_path, learner):
    vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2), 32, seed=0)
    bb = Backbone(vit, "local", weights_hash(vit))
    preset = override(smoke_preset, ["gcl.eval_period=100", "stream.n_tasks=2"])
    res = run_on_images(preset, learner, bb, 1, dataset="cifar100", progress=False,
                        data_kwargs={"root": cifar_root, "verify": False}, out_path=tmp_path / "r.json")
    assert res.finished and len(res.class_acc[-1]) == 100
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["meta"]["dataset"] == "cifar100" and "resize32" in record["meta"]["learner"]["preprocess"]


def test_missing_real_data_is_one_clear_error(tmp_path, smoke_preset):
    vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2), 32)
    with pytest.raises(FileNotFoundError, match="download=True"):
        run_on_images(smoke_preset, "dualprompt", Backbone(vit, "local", weights_hash(vit)), 1,
                      dataset="cifar100", data_kwargs={"root": tmp_path}, progress=False)


def test_unknown_backbone_lists_the_options(smoke_preset):
    with pytest.raises(ValueError, match="unknown backbone 'resnet'.*sup21k.*local:<path>.*mepo:sup21k"):
        get_backbone("resnet", smoke_preset)


def test_gcl_command_on_fake_cifar_with_features(cifar_root, tmp_path, monkeypatch):
    """`mepo-lab gcl --dataset cifar100` with a local backbone file: feature-cached linear learner."""
    from mepo_lab.backbones.base import save_mepo_backbone
    from mepo_lab.cli import main

    monkeypatch.setenv("MEPO_LAB_SMOKE", "1")
    vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2), 32, seed=0)
    ckpt = save_mepo_backbone(vit, tmp_path / "micro.pth")
    import mepo_lab.backbones.zoo as zoo

    monkeypatch.setattr(zoo, "_create_local", lambda path, arch, pretrained, kw: _load_micro(path))
    main(["gcl", "--learner", "linear", "--backbone", f"local:{ckpt}", "--dataset", "cifar100", "--root",
          str(cifar_root), "--no-verify", "--set", "gcl.eval_period=100", "--out", str(tmp_path / "out"),
          "--data-home", str(tmp_path / "home"), "--no-progress"])
    row = json.loads((tmp_path / "out" / "results.json").read_text())[0]
    assert row["backbone"] == "local" and 0 <= row["A_last"] <= 1


def _load_micro(path):
    from mepo_lab.backbones.base import load_mepo_backbone

    return load_mepo_backbone(path, create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1,
                                                                    num_heads=2), 32))


def test_meta_covariance_source_follows_the_backbone(smoke_preset):
    from mepo_lab.registry import meta_covariance_of

    vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2), 32)
    with pytest.raises(ValueError, match="no meta covariance for backbone 'dino'"):
        meta_covariance_of(smoke_preset, Backbone(vit, "dino", weights_hash(vit)))


def test_a_local_refinement_brings_its_covariance(tmp_path, smoke_preset):
    """`refine_real` writes cov_meta_E.npy next to meta_E.pth; `local:` backbones find it there."""
    from mepo_lab.backbones.base import save_mepo_backbone
    from mepo_lab.mepo.covariance import save_covariance
    from mepo_lab.registry import meta_covariance_of

    vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2), 32)
    save_mepo_backbone(vit, tmp_path / "meta_2.pth")
    bb = Backbone(vit, "local", weights_hash(vit), {"path": str(tmp_path / "meta_2.pth")})
    with pytest.raises(ValueError, match="no meta covariance.*cov_meta_E.npy"):
        meta_covariance_of(smoke_preset, bb)
    cov = np.cov(np.random.default_rng(0).normal(size=(16, 40)))
    save_covariance(tmp_path / "cov_meta_2.npy", cov)
    np.testing.assert_allclose(meta_covariance_of(smoke_preset, bb), cov)
