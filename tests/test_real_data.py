"""Real-data loaders and protocol transforms, on tiny fakes written in the real on-disk formats (offline)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets import utils as tv_utils
from torchvision.transforms import v2

from mepo_lab.data import real, transforms
from mepo_lab.data.real import ChecksumError, get_dataset, split_per_class
from mepo_lab.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from mepo_lab.data.transforms import autoaugment_policy, load_transform, train_transform
from tests import fakes


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def imagenet_r(tmp_path, monkeypatch):
    """A fake imagenet-r.tar in ``root/imagenet-r`` whose md5 is registered as the published one."""
    root = tmp_path / "datasets"
    archive, files = fakes.write_imagenet_r_tar(root / "imagenet-r")
    shutil.rmtree(root / "imagenet-r" / "staging")
    spec = real.ARCHIVES["imagenet-r"]
    monkeypatch.setitem(real.ARCHIVES, "imagenet-r", real.Archive(spec.filename, spec.url, _md5(archive), spec.folder))
    return root, archive, files


# ---------------------------------------------------------------- CIFAR-100
def test_fake_cifar_pickles_have_the_documented_keys(tmp_path):
    folder = fakes.write_cifar100(tmp_path)
    with open(folder / "train", "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    assert {b"data", b"fine_labels", b"coarse_labels", b"filenames"} <= set(entry)
    with open(folder / "meta", "rb") as f:
        assert len(pickle.load(f, encoding="bytes")[b"fine_label_names"]) == 100


def test_cifar100_verify_false_accepts_fake_pickles(tmp_path):
    folder = fakes.write_cifar100(tmp_path / "cifar100", train_per_class=2, test_per_class=1)
    train = get_dataset("cifar100", "train", root=tmp_path, verify=False)
    test = get_dataset("cifar100", "test", root=tmp_path, verify=False)
    with open(folder / "train", "rb") as f:
        labels = pickle.load(f, encoding="bytes")[b"fine_labels"]
    assert list(train.targets) == labels and len(test) == 100
    assert len(train.classes) == 100 and train.classes[7] == "fine07"
    image, label = train[3]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and label == labels[3]


def test_cifar100_verify_true_rejects_fake_pickles(tmp_path):
    fakes.write_cifar100(tmp_path / "cifar100")
    with pytest.raises(ChecksumError, match="verify=False"):
        get_dataset("cifar100", "train", root=tmp_path)


def test_cifar10_reads_the_five_training_batches_and_checks_md5(tmp_path):
    folder = fakes.write_cifar10(tmp_path / "cifar10", train_per_class=3, test_per_class=2)
    train = get_dataset("cifar10", "train", root=tmp_path, verify=False)
    test = get_dataset("cifar10", "test", root=tmp_path, verify=False)
    labels = []
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "rb") as f:
            labels += pickle.load(f, encoding="bytes")[b"labels"]
    assert list(train.targets) == labels and len(train) == 30 and len(test) == 20
    assert train.classes[2] == "class2" and train.name == "cifar10"
    with pytest.raises(ChecksumError, match="verify=False"):
        get_dataset("cifar10", "train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        get_dataset("cifar10", "train", root=tmp_path / "empty")


# ---------------------------------------------------------------- ImageNet-R
def test_imagenet_r_extracts_and_splits_80_20_per_class(imagenet_r):
    root, _, files = imagenet_r
    train, test = get_dataset("imagenet-r", "train", root=root), get_dataset("imagenet-r", "test", root=root)
    assert train.classes == sorted(fakes.IMAGENET_R_COUNTS) and len(train) + len(test) == len(files)
    for c, (wnid, n) in enumerate(sorted(fakes.IMAGENET_R_COUNTS.items())):
        assert test.targets.count(c) == n // 5 and train.targets.count(c) == n - n // 5
    rel = lambda ds: {p.split("imagenet-r/imagenet-r/")[1] for p, _ in ds.samples}
    assert rel(train).isdisjoint(rel(test)) and rel(train) | rel(test) == set(files)
    assert all(train.classes[y] == p.split("/")[-2] for p, y in train.samples)
    assert (root / "imagenet-r" / "split_seed0.json").is_file()
    image, _ = test[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 10)


def test_split_is_deterministic_order_free_and_seeded():
    files = [f"n{c:08d}/img_{k:03d}.jpg" for c in range(5) for k in range(20 + c)]
    shuffled = random.Random(1).sample(files, len(files))
    first = split_per_class(files, seed=0)
    assert split_per_class(shuffled, seed=0) == first
    assert split_per_class(files, seed=1) != first
    for c in range(5):
        assert sum(f.startswith(f"n{c:08d}/") for f in first["test"]) == (20 + c) // 5


def test_imagenet_r_split_file_is_reused_and_checked(imagenet_r):
    root, _, _ = imagenet_r
    get_dataset("imagenet-r", "train", root=root)
    path = root / "imagenet-r" / "split_seed0.json"
    saved = json.loads(path.read_text())
    moved = saved["train"].pop(0)
    saved["test"].append(moved)
    path.write_text(json.dumps(saved))
    test = get_dataset("imagenet-r", "test", root=root)
    assert any(p.endswith(moved) for p, _ in test.samples)  # the saved split wins over a recomputation
    fakes.write_image(root / "imagenet-r" / "imagenet-r" / "n01443537" / "extra.jpg", seed=7)
    with pytest.raises(RuntimeError, match="another file list"):
        get_dataset("imagenet-r", "test", root=root)


def test_checksum_mismatch_is_detected_then_refetched(imagenet_r, tmp_path, monkeypatch):
    root, archive, _ = imagenet_r
    good = tmp_path / "server" / archive.name
    good.parent.mkdir()
    shutil.copy(archive, good)
    with tarfile.open(archive) as tar:  # flip a byte inside an image, so the tar itself stays readable
        offset = [m for m in tar.getmembers() if m.isfile()][-1].offset_data
    data = bytearray(archive.read_bytes())
    data[offset + 5] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="md5"):
        get_dataset("imagenet-r", "train", root=root)
    assert not (root / "imagenet-r" / "imagenet-r").exists()
    assert len(get_dataset("imagenet-r", "train", root=root, verify=False)) > 0  # verify=False accepts it
    calls = []

    def fake_download_url(url, root_dir, filename=None, md5=None, **kwargs):
        calls.append(url)
        shutil.copy(good, f"{root_dir}/{filename}")

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    ds = get_dataset("imagenet-r", "train", root=root, download=True)
    assert calls == [real.ARCHIVES["imagenet-r"].url] and _md5(archive) == _md5(good) and len(ds) > 0


def test_verified_archive_is_not_hashed_again_until_it_changes(imagenet_r, monkeypatch):
    root, archive, _ = imagenet_r
    get_dataset("imagenet-r", "train", root=root)
    calls = []
    monkeypatch.setattr(tv_utils, "calculate_md5", lambda path, **kw: calls.append(path) or _md5(path))
    get_dataset("imagenet-r", "test", root=root)
    assert calls == []  # remembered by size + mtime
    os.utime(archive, ns=(1, 1))
    get_dataset("imagenet-r", "test", root=root)
    assert calls == [archive]


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("name, expected", [("imagenet-r", "imagenet-r.tar"), ("cub200", "CUB_200_2011.tgz"),
                                            ("tiny-imagenet", "tiny-imagenet-200.zip"),
                                            ("cifar100", "cifar-100-python.tar.gz")])
def test_missing_data_says_where_and_how(tmp_path, name, expected):
    with pytest.raises(FileNotFoundError) as info:
        get_dataset(name, "train", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / name) in message and expected in message
    assert "download=True" in message and "MEPO_LAB_DATA" in message


def test_root_defaults_to_the_data_home(data_home):
    with pytest.raises(FileNotFoundError, match=str(data_home / "datasets" / "cub200")):
        get_dataset("cub200", "train")


def test_unknown_name_and_split_are_rejected(tmp_path):
    with pytest.raises(ValueError) as info:
        get_dataset("imagenet-x", "train", root=tmp_path)
    assert all(name in str(info.value) for name in ("cifar100", "imagenet-r", "cub200", "tiny-imagenet"))
    with pytest.raises(ValueError, match="split"):
        get_dataset("cub200", "validation", root=tmp_path)


# ---------------------------------------------------------------- CUB-200
def test_cub_reference_split_equals_random_split_seed_42(tmp_path):
    folder = fakes.write_cub(tmp_path / "cub200", per_class=(6, 5, 5))  # 16 images: 12.8 / 3.2
    full = ImageFolder(str(folder / "images"))
    parts = torch.utils.data.random_split(full, [0.8, 0.2], generator=torch.Generator().manual_seed(42))
    for part, split in zip(parts, ("train", "test")):
        ds = get_dataset("cub200", split, root=tmp_path)
        assert ds.samples == [full.samples[i] for i in part.indices] and ds.classes == fakes.CUB_CLASSES
    assert [len(p) for p in parts] == [13, 3]  # floor(12.8), floor(3.2), remainder 1 -> first split


def test_cub_official_split_follows_train_test_split_txt(tmp_path):
    folder = fakes.write_cub(tmp_path / "cub200")
    rows = [line.split() for line in (folder / "train_test_split.txt").read_text().splitlines()]
    labels = dict(line.split() for line in (folder / "image_class_labels.txt").read_text().splitlines())
    for split, flag in (("train", "1"), ("test", "0")):
        ds = get_dataset("cub200", split, root=tmp_path, split_kind="official")
        assert ds.targets == [int(labels[i]) - 1 for i, s in rows if s == flag] and ds.classes == fakes.CUB_CLASSES
    with pytest.raises(ValueError, match="split_kind"):
        get_dataset("cub200", "train", root=tmp_path, split_kind="random")


# ---------------------------------------------------------------- Tiny-ImageNet and ImageFolder
def test_tiny_imagenet_train_and_val(tmp_path):
    fakes.write_tiny_imagenet(tmp_path / "tiny-imagenet", train_per_class=3, val_per_class=2)
    train = get_dataset("tiny-imagenet", "train", root=tmp_path)
    test = get_dataset("tiny-imagenet", "test", root=tmp_path)
    assert train.classes == sorted(fakes.TINY_WNIDS) and len(train) == 9 and len(test) == 6
    assert all(train.classes[y] in p for p, y in train.samples)
    assert [test.classes[y] for y in test.targets] == [w for w in fakes.TINY_WNIDS for _ in range(2)]


def test_imagefolder_uses_split_subfolders(tmp_path):
    fakes.write_class_tree(tmp_path / "pre" / "train", {"a": 3, "b": 2, "c": 1})
    fakes.write_class_tree(tmp_path / "pre" / "val", {"a": 1, "b": 1, "c": 1})
    train = get_dataset(f"imagefolder:{tmp_path / 'pre'}", "train")
    assert len(train) == 6 and train.classes == ["a", "b", "c"] and sorted(train.targets) == [0, 0, 0, 1, 1, 2]
    assert len(get_dataset("imagefolder", "test", root=tmp_path / "pre")) == 3  # test falls back to val/
    assert len(get_dataset("imagefolder:" + str(tmp_path / "pre" / "train"), "test")) == 6  # no subfolder
    with pytest.raises(FileNotFoundError, match="nowhere"):
        get_dataset(f"imagefolder:{tmp_path / 'nowhere'}", "train")
    with pytest.raises(ValueError, match="root"):
        get_dataset("imagefolder", "train")


def test_custom_transform_is_applied(tmp_path):
    fakes.write_class_tree(tmp_path / "f", {"a": 2})
    ds = get_dataset(f"imagefolder:{tmp_path / 'f'}", "train", transform=lambda im: im.size)
    assert ds[0] == ((10, 8), 0)


# ---------------------------------------------------------------- transforms
def _uint8(h=20, w=24, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_transforms_shapes_and_dtypes():
    for make in (train_transform, transforms.test_transform):
        out = make("cifar100", size=32)(_uint8())
        assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 32, 32)
    batch = train_transform("imagenet-r", size=16)(torch.stack([_uint8(seed=s) for s in range(4)]))
    assert batch.shape == (4, 3, 16, 16)
    pil = Image.fromarray(_uint8().permute(1, 2, 0).numpy())
    assert transforms.test_transform("cub200", size=24)(pil).shape == (3, 24, 24)
    assert load_transform("cub200", size=12)(pil).shape == (3, 12, 12)
    assert load_transform("cifar100")(pil).dtype == torch.uint8 and load_transform("cifar100")(pil).shape == (3, 20, 24)


@pytest.mark.parametrize("name, policy", [("cifar100", v2.AutoAugmentPolicy.CIFAR10),
                                          ("imagenet-r", v2.AutoAugmentPolicy.IMAGENET),
                                          ("tiny-imagenet", v2.AutoAugmentPolicy.IMAGENET), ("cub200", None)])
def test_autoaugment_policy_follows_the_name(name, policy):
    assert autoaugment_policy(name) == policy
    found = [t.policy for t in train_transform(name, size=32).transforms if isinstance(t, v2.AutoAugment)]
    assert found == ([] if policy is None else [policy])


def test_normalization_switch():
    import timm

    white = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    cub = transforms.test_transform("cub200", size=8)(white)[:, 0, 0]
    mean, std = real.STATISTICS["cub200"].mean, real.STATISTICS["cub200"].std
    assert real.STATISTICS["cub200"][:2] == real.STATISTICS["cifar100"][:2]  # MISA's table, sic
    assert torch.allclose(cub, (1 - torch.tensor(mean)) / torch.tensor(std))
    cfg = timm.data.resolve_model_data_config(timm.create_model("test_vit", pretrained=False))
    backbone = transforms.test_transform("cub200", size=8, normalization="backbone", backbone_cfg=cfg)(white)
    assert torch.allclose(backbone, torch.ones_like(backbone))  # mean = std = 0.5
    with pytest.raises(ValueError, match="backbone_cfg"):
        transforms.test_transform("cub200", normalization="backbone")
    imagenet = transforms.test_transform("cub200", size=8, normalization="imagenet")(white)[:, 0, 0]
    assert torch.allclose(imagenet, (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    with pytest.raises(ValueError, match="normalization must be one of dataset, backbone, imagenet"):
        train_transform("cub200", normalization="bogus")


# ---------------------------------------------------------------- both on-disk layouts under root
def _flat_copy(tmp_path, name):
    """A dataset extracted straight into ``root`` (torchvision's / the MISA code's layout)."""
    root = tmp_path / "flat"
    if name == "cifar100":
        fakes.write_cifar100(root, train_per_class=2, test_per_class=1)
    elif name == "imagenet-r":
        fakes.write_class_tree(root / "imagenet-r", fakes.IMAGENET_R_COUNTS)
    elif name == "cub200":
        fakes.write_cub(root)
    else:
        fakes.write_tiny_imagenet(root)
    return root


@pytest.mark.parametrize("name, flat, n_train", [("cifar100", "cifar-100-python", 200), ("imagenet-r", "imagenet-r", 18),
                                                 ("cub200", "CUB_200_2011", 12), ("tiny-imagenet", "tiny-imagenet-200", 9)])
def test_dataset_found_directly_under_root(tmp_path, name, flat, n_train):
    root = _flat_copy(tmp_path, name)
    train = get_dataset(name, "train", root=root, verify=False)
    test = get_dataset(name, "test", root=root, verify=False)
    assert len(train) == n_train and len(test) > 0
    if name == "cifar100":
        assert Path(train.root) == root
    else:
        assert all(Path(path).is_relative_to(root / flat) for path, _ in train.samples)
    assert name == flat or not (root / name).exists()  # nothing extracted or downloaded into our layout
    if name == "imagenet-r":  # the split lives beside the flat copy, not inside its class folders
        assert (root / "imagenet-r_split_seed0.json").is_file()
        assert not list((root / "imagenet-r").glob("*.json"))


@pytest.mark.parametrize("name, flat", [("cifar100", "cifar-100-python"), ("imagenet-r", "imagenet-r"),
                                        ("cub200", "CUB_200_2011"), ("tiny-imagenet", "tiny-imagenet-200")])
def test_missing_dataset_error_names_both_layouts(tmp_path, name, flat):
    with pytest.raises(FileNotFoundError) as info:
        get_dataset(name, "train", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / name) in message and str(tmp_path / flat) in message
    assert "download=True" in message


def test_our_layout_wins_over_a_flat_copy(tmp_path):
    fakes.write_cub(tmp_path / "cub200", per_class=(2, 2, 2))  # ours: root/cub200/CUB_200_2011
    fakes.write_cub(tmp_path)  # flat: root/CUB_200_2011, more images
    assert len(get_dataset("cub200", "train", root=tmp_path, split_kind="official")) == 3


def test_imagenet_r_archive_folder_is_not_taken_for_the_data(tmp_path):
    """``root/imagenet-r`` holding only the archive is our layout before extraction, not a flat copy."""
    archive, files = fakes.write_imagenet_r_tar(tmp_path / "imagenet-r")
    shutil.rmtree(tmp_path / "imagenet-r" / "staging")
    ds = get_dataset("imagenet-r", "train", root=tmp_path, verify=False)
    assert (tmp_path / "imagenet-r" / "imagenet-r").is_dir() and len(ds) == len(split_per_class(files)["train"])
