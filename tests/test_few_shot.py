"""Few-shot class splits: the synthetic world's roles, and Omniglot on a tiny fake tree in torchvision's layout."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mepo_lab.config import WorldConfig
from mepo_lab.data.few_shot import omniglot_few_shot, synthetic_few_shot
from mepo_lab.data.synthetic import N_CLASSES, SyntheticWorld

WORLD = WorldConfig(seed=3, image_size=16)


# ---------------------------------------------------------------- synthetic world
@pytest.mark.parametrize("n_pre, n_transfer, n_train, n_test", [(5, 3, 4, 2), (2, 1, 1, 1)])
def test_synthetic_split_shapes_labels_and_disjoint_classes(n_pre, n_transfer, n_train, n_test):
    split = synthetic_few_shot(WORLD, n_pre, n_transfer, n_train, n_test)
    for part, k, per in ((split.pretrain, n_pre, n_train), (split.pretrain_test, n_pre, n_test),
                         (split.transfer, n_transfer, n_train), (split.transfer_test, n_transfer, n_test)):
        assert part.images.shape == (k * per, 3, 16, 16) and part.images.dtype == np.uint8
        assert part.n_classes == k and np.bincount(part.targets, minlength=k).tolist() == [per] * k
    pre_ids, transfer_ids = split.pretrain.meta["world_ids"], split.transfer.meta["world_ids"]
    assert split.pretrain_test.meta["world_ids"] == pre_ids and split.transfer_test.meta["world_ids"] == transfer_ids
    assert len(pre_ids) == n_pre and len(transfer_ids) == n_transfer and not set(pre_ids) & set(transfer_ids)


def test_synthetic_roles_are_the_worlds_first_classes():
    split = synthetic_few_shot(WORLD, 4, 3, 2, 1)
    full = SyntheticWorld(replace(WORLD, n_downstream_classes=3))  # every non-downstream class in pretrain
    assert split.transfer.meta["world_ids"] == full.downstream_classes.tolist()
    assert split.pretrain.meta["world_ids"] == full.pretrain_classes[:4].tolist()


def test_synthetic_transfer_is_ordered_class_by_class_and_keeps_the_worlds_images():
    split = synthetic_few_shot(WORLD, 3, 4, 5, 2)
    assert split.transfer.targets.tolist() == np.repeat(np.arange(4), 5).tolist()
    world = SyntheticWorld(replace(WORLD, n_downstream_classes=4, max_pretrain_classes=3))
    raw = world.dataset("downstream", "train", 5)
    order = np.argsort(raw.targets, kind="stable")
    assert np.array_equal(split.transfer.images, raw.images[order])
    assert np.array_equal(split.transfer_test.images, world.dataset("downstream", "test", 2).images)
    assert not np.array_equal(split.transfer.images[:2], split.transfer_test.images[:2])  # train vs test split


def test_synthetic_is_deterministic_and_named_by_its_content():
    a, b = synthetic_few_shot(WORLD, 3, 2, 2, 1), synthetic_few_shot(WORLD, 3, 2, 2, 1)
    assert a.name == b.name and np.array_equal(a.pretrain.images, b.pretrain.images)
    assert np.array_equal(a.transfer_test.images, b.transfer_test.images)
    other = synthetic_few_shot(replace(WORLD, seed=4), 3, 2, 2, 1)
    assert other.name != a.name and not np.array_equal(other.pretrain.images, a.pretrain.images)
    names = {a.name, synthetic_few_shot(replace(WORLD, image_size=12), 3, 2, 2, 1).name,
             synthetic_few_shot(WORLD, 4, 2, 2, 1).name, synthetic_few_shot(WORLD, 3, 1, 2, 1).name,
             synthetic_few_shot(WORLD, 3, 2, 3, 1).name, synthetic_few_shot(WORLD, 3, 2, 2, 2).name}
    assert len(names) == 6
    assert a.transfer.name == f"{a.name}/transfer" and a.pretrain.name != a.pretrain_test.name


@pytest.mark.parametrize("args, match", [
    ((N_CLASSES - 10, 11, 2, 1), f"at most {N_CLASSES}"),
    ((0, 2, 2, 1), "n_pretrain_classes must be at least 1"),
    ((3, 0, 2, 1), "n_transfer_classes must be at least 1"),
    ((3, 2, 0, 1), "train_per_class must be at least 1"),
    ((3, 2, 2, 0), "test_per_class must be at least 1"),
])
def test_synthetic_rejects_bad_counts(args, match):
    with pytest.raises(ValueError, match=match):
        synthetic_few_shot(WORLD, *args)


def test_importing_few_shot_does_not_import_torchvision():
    code = "import sys, mepo_lab.data.few_shot; assert 'torchvision' not in sys.modules, 'torchvision imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- Omniglot (fake tree, torchvision's layout)
BACKGROUND = {"Alpha": 2, "Beta": 1}  # alphabet -> characters
EVALUATION = {"Gamma": 2}


def _drawing(seed: int) -> np.ndarray:
    """A 105x105 Omniglot-like drawing: a few black strokes on white, as a bool array (True = white)."""
    rng = np.random.default_rng(seed)
    image = Image.new("1", (105, 105), 1)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        draw.line([tuple(int(v) for v in rng.integers(5, 100, 2)) for _ in range(3)], fill=0, width=4)
    return np.asarray(image)


def _write_split(folder, alphabets: dict[str, int], first_id: int, drawings: int = 20) -> dict[str, list]:
    """``folder/<alphabet>/characterNN/<id>_<NN>.png`` (1-bit PNGs like the originals); the pixels by character."""
    pixels, char_id = {}, first_id
    for alphabet in reversed(list(alphabets)):  # created out of order: loading must sort
        for c in range(alphabets[alphabet], 0, -1):
            char = f"{alphabet}/character{c:02d}"
            (folder / char).mkdir(parents=True)
            pixels[char] = []
            for k in range(1, drawings + 1):
                array = _drawing(char_id * 100 + k)
                Image.fromarray(array).save(folder / char / f"{char_id:04d}_{k:02d}.png")
                pixels[char].append(array)
            char_id += 1
    return pixels


@pytest.fixture
def omniglot(tmp_path):
    """``tmp_path/omniglot-py/images_{background,evaluation}`` and the written pixels of every character."""
    base = tmp_path / "omniglot-py"
    background = _write_split(base / "images_background", BACKGROUND, 1)
    evaluation = _write_split(base / "images_evaluation", EVALUATION, 101)
    return tmp_path, background, evaluation


def _as_uint8(drawing: np.ndarray) -> np.ndarray:
    return np.repeat((drawing.astype(np.uint8) * 255)[None], 3, axis=0)


def test_omniglot_shapes_counts_and_class_order(omniglot):
    root = omniglot[0]
    split = omniglot_few_shot(root)
    for part, k, per in ((split.pretrain, 3, 15), (split.pretrain_test, 3, 5),
                         (split.transfer, 2, 15), (split.transfer_test, 2, 5)):
        assert part.images.shape == (k * per, 3, 28, 28) and part.images.dtype == np.uint8
        assert part.targets.tolist() == np.repeat(np.arange(k), per).tolist()
        assert np.array_equal(part.images[:, 0], part.images[:, 2])  # grayscale replicated
    assert split.pretrain.class_names == ["Alpha/character01", "Alpha/character02", "Beta/character01"]
    assert split.transfer.class_names == ["Gamma/character01", "Gamma/character02"]
    assert split.pretrain.meta["split"] == "images_background" and split.transfer.meta["split"] == "images_evaluation"
    assert split.name == "fewshot-omniglot(size=28,3pre+2transfer,15+5/class)"
    assert split.transfer.name == f"{split.name}/transfer"


def test_omniglot_keeps_pixels_and_takes_drawings_in_file_order(omniglot):
    root, background, evaluation = omniglot
    split = omniglot_few_shot(root, image_size=105, n_pretrain_classes=2, n_transfer_classes=1,
                              train_per_class=3, test_per_class=2)
    assert split.pretrain.n_classes == 2 and split.transfer.n_classes == 1
    assert np.array_equal(split.pretrain.images[3], _as_uint8(background["Alpha/character02"][0]))
    assert np.array_equal(split.pretrain_test.images[1], _as_uint8(background["Alpha/character01"][4]))
    assert np.array_equal(split.transfer.images[2], _as_uint8(evaluation["Gamma/character01"][2]))
    assert split.transfer.images.min() == 0 and split.transfer.images.max() == 255  # black strokes on white


def test_omniglot_resizes_with_pil_bilinear(omniglot):
    root, background, _ = omniglot
    split = omniglot_few_shot(root, image_size=14, n_pretrain_classes=1, n_transfer_classes=1,
                              train_per_class=1, test_per_class=1)
    expected = Image.fromarray(background["Alpha/character01"][0]).convert("L").resize((14, 14), Image.BILINEAR)
    assert np.array_equal(split.pretrain.images[0, 1], np.asarray(expected))


def test_omniglot_reuses_its_cache_until_a_file_changes(omniglot, monkeypatch):
    root = omniglot[0]
    first = omniglot_few_shot(root, n_transfer_classes=1)
    caches = sorted(p.name for p in (root / "omniglot-py" / "decoded").iterdir())
    assert caches == ["images_background-v1-28px-3chars-20drawings.npz",
                      "images_evaluation-v1-28px-1chars-20drawings.npz"]

    def fail(*args, **kwargs):
        raise AssertionError("decoded a PNG although the cache holds it")

    monkeypatch.setattr(Image, "open", fail)
    second = omniglot_few_shot(root, n_transfer_classes=1)
    assert second.name == first.name
    for part in ("pretrain", "pretrain_test", "transfer", "transfer_test"):
        assert np.array_equal(getattr(first, part).images, getattr(second, part).images)
    drawing = root / "omniglot-py" / "images_background" / "Beta" / "character01" / "0001_20.png"
    Image.fromarray(_drawing(9999)).save(drawing)  # not through Image.open: saving still works
    with pytest.raises(AssertionError, match="decoded a PNG"):
        omniglot_few_shot(root, n_transfer_classes=1)


def test_omniglot_missing_folder_names_it_and_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="--download") as err:
        omniglot_few_shot(tmp_path)
    assert str(tmp_path / "omniglot-py" / "images_background") in str(err.value)


def _zip_split(root, split: str) -> str:
    """Replace ``omniglot-py/<split>/`` with ``<split>.zip`` (as published); its md5."""
    base = root / "omniglot-py"
    archive = shutil.make_archive(str(base / split), "zip", root_dir=base, base_dir=split)
    shutil.rmtree(base / split)
    return hashlib.md5(open(archive, "rb").read()).hexdigest()


def test_omniglot_download_extracts_a_valid_zip_already_there(omniglot, monkeypatch):
    from torchvision.datasets import Omniglot

    root = omniglot[0]
    expected = omniglot_few_shot(root, n_pretrain_classes=2)
    shutil.rmtree(root / "omniglot-py" / "decoded")
    monkeypatch.setitem(Omniglot.zips_md5, "images_background", _zip_split(root, "images_background"))
    with pytest.raises(FileNotFoundError, match="images_background.zip is there: download=True"):
        omniglot_few_shot(root, n_pretrain_classes=2)
    loaded = omniglot_few_shot(root, download=True, n_pretrain_classes=2)
    assert np.array_equal(loaded.pretrain.images, expected.pretrain.images)


def test_omniglot_download_hands_a_missing_split_to_torchvision(omniglot, monkeypatch):
    import torchvision.datasets

    root = omniglot[0]
    shutil.rmtree(root / "omniglot-py" / "images_evaluation")
    calls = []

    def fake_omniglot(root_arg, background, download):
        calls.append((root_arg, background, download))
        _write_split(root / "omniglot-py" / "images_evaluation", EVALUATION, 101)

    monkeypatch.setattr(torchvision.datasets, "Omniglot", fake_omniglot)
    split = omniglot_few_shot(root, download=True)
    assert calls == [(str(root), False, True)] and split.transfer.n_classes == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"train_per_class": 16, "test_per_class": 5}, "at most 20"),
    ({"n_pretrain_classes": 4}, "holds 3"),
    ({"n_transfer_classes": 0}, "n_transfer_classes must be at least 1"),
    ({"image_size": 0}, "image_size must be at least 1"),
])
def test_omniglot_rejects_bad_counts(omniglot, kwargs, match):
    with pytest.raises(ValueError, match=match):
        omniglot_few_shot(omniglot[0], **kwargs)


def test_omniglot_character_with_too_few_drawings(omniglot):
    root = omniglot[0]
    (root / "omniglot-py" / "images_background" / "Alpha" / "character02" / "0002_20.png").unlink()
    with pytest.raises(ValueError, match="holds 19 drawings"):
        omniglot_few_shot(root)
    assert omniglot_few_shot(root, train_per_class=15, test_per_class=4).pretrain_test.images.shape[0] == 12


def test_zapping_command_runs_on_omniglot_files(tmp_path, capsys):
    """End to end on a fake Omniglot in the real layout under <data home>/datasets (offline)."""
    from mepo_lab.cli import main

    base = tmp_path / "datasets" / "omniglot-py"
    _write_split(base / "images_background", {"Alpha": 4}, 1)
    _write_split(base / "images_evaluation", {"Beta": 3}, 101)
    out = tmp_path / "out"
    assert main(["zapping", "--preset", "smoke", "--data-home", str(tmp_path), "--out", str(out), "--no-progress",
                 "--set", "data=omniglot", "--set", "n_pretrain_classes=4", "--set", "n_transfer_classes=3",
                 "--set", "regimes=iid,asb_zap", "--set", "device=cpu"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["data"].startswith("fewshot-omniglot(size=28,4pre+3transfer")
    assert [r["regime"] for r in result["rows"]] == ["iid", "asb_zap"]
    assert len(result["rows"][1]["continual"]["accuracy"]) == 3
    with pytest.raises(SystemExit):
        main(["zapping", "--preset", "smoke", "--data-home", str(tmp_path / "empty"), "--out", str(out),
              "--set", "data=omniglot"])
    assert "--download" in capsys.readouterr().err
