"""Shipped artefacts of the embedded default: they match the presets, install with their hashes checked, and a
corrupt, missing or mismatching one is refused with a one-line notice (the lab trains instead)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from mepo_lab import shipped
from mepo_lab.backbones.base import weights_hash
from mepo_lab.backbones.pretrain import cache_key
from mepo_lab.config import PRESETS, override


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """An empty shipped folder in place of the package's."""
    root = tmp_path / "shipped"
    root.mkdir()
    monkeypatch.setattr(shipped, "root", lambda: root)
    return root


def _ship(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    manifest = {"files": {rel: shipped.sha256(root / rel) for rel in files}}
    (root / shipped.MANIFEST).write_text(json.dumps(manifest))


def test_the_package_ships_the_cpu_presets_artefacts_with_matching_hashes():
    man, root = shipped.manifest(), shipped.root()
    assert man["preset"] == "cpu" and len(man["files"]) == 7
    for rel, digest in man["files"].items():
        assert shipped.sha256(root / rel) == digest, f"{rel}: rebuild with scripts/build_shipped.py"
    key = cache_key(PRESETS["cpu"]())
    assert f"micro_vit/{key}/backbone.pt" in man["files"], "the cpu preset changed: rebuild the shipped artefacts"
    state = torch.load(root / "micro_vit" / key / "backbone.pt", weights_only=True)
    assert weights_hash(state) == man["pretrained_hash"]
    assert f"covariance/cov_{man['pretrained_hash']}-50-aug.npy" in man["files"]
    assert f"covariance/cov_{man['mepo_hash']}-50-aug.npy" in man["files"]
    assert sum((root / rel).stat().st_size for rel in man["files"]) < 6e6  # the wheel stays small


def test_cpu_preset_uses_the_shipped_backbones_without_training(data_home, monkeypatch, capsys):
    from mepo_lab.backbones import pretrain
    from mepo_lab.mepo import pipeline

    monkeypatch.setattr(pretrain, "_pretrain", lambda *a: pytest.fail("pretrained although shipped"))
    monkeypatch.setattr(pipeline.MetaRefiner, "run", lambda *a, **k: pytest.fail("refined although shipped"))
    monkeypatch.setattr(pipeline, "class_prototypes", lambda *a, **k: pytest.fail("prototypes although shipped"))
    preset, man = PRESETS["cpu"](), shipped.manifest()
    pre = pretrain.pretrained_backbone(preset, data_home)
    assert pre.weights_hash == man["pretrained_hash"]
    assert "using the shipped pretrained micro ViT" in capsys.readouterr().out
    mepo = pipeline.mepo_backbone(preset, data_home, source=pre, progress=False)
    assert mepo.weights_hash == man["mepo_hash"]
    assert pipeline.covariance_for(preset, mepo, data_home, progress=False).shape == (128, 128)
    assert capsys.readouterr().out == ""  # quiet when progress=False / nothing to say


def test_install_checks_every_hash_and_refuses_a_corrupt_file(fake_root, data_home, capsys):
    _ship(fake_root, {"micro_vit/k/backbone.pt": b"weights", "micro_vit/k/info.json": b"{}"})
    (fake_root / "micro_vit/k/backbone.pt").write_bytes(b"weightz")  # corrupted after the manifest was written
    assert shipped.install("micro_vit/k", data_home) is False
    assert "does not match its hash: training it here instead" in capsys.readouterr().out
    assert not (data_home / "micro_vit" / "k").exists()


def test_install_copies_and_respects_the_switch(fake_root, data_home, monkeypatch):
    _ship(fake_root, {"micro_vit/k/backbone.pt": b"weights", "covariance/cov_x.npy": b"cov"})
    assert shipped.install("micro_vit/other", data_home, log=None) is False  # another key: nothing shipped
    monkeypatch.setenv(shipped.ENV, "0")
    assert shipped.install("micro_vit/k", data_home, log=None) is False
    monkeypatch.setenv(shipped.ENV, "1")
    assert shipped.install("micro_vit/k", data_home, log=None) is True
    assert (data_home / "micro_vit/k/backbone.pt").read_bytes() == b"weights"
    assert not (data_home / "covariance").exists()  # only what was asked for


def test_a_corrupt_shipped_backbone_is_retrained_with_a_notice(fake_root, smoke_home, tmp_path, capsys):
    from mepo_lab.backbones.pretrain import pretrained_backbone

    preset = PRESETS["smoke"]()
    trained = pretrained_backbone(preset, smoke_home, progress=False)
    key = cache_key(preset)
    shutil.copytree(smoke_home / "micro_vit" / key, fake_root / "micro_vit" / key)
    _ship(fake_root, {f"micro_vit/{key}/{p.name}": p.read_bytes() for p in (fake_root / "micro_vit" / key).iterdir()})
    home = tmp_path / "fresh"
    used = pretrained_backbone(preset, home, progress=False)
    assert used.weights_hash == trained.weights_hash and used.info["cached"] is True  # installed, not trained
    (fake_root / "micro_vit" / key / "backbone.pt").write_bytes(b"broken")
    again = pretrained_backbone(preset, tmp_path / "fresh2", progress=False)
    assert again.info["cached"] is False and again.weights_hash == trained.weights_hash  # trained, same seed
    assert "does not match its hash" in capsys.readouterr().out
    other = override(preset, {"world.seed": 1})
    assert cache_key(other) != key  # another preset never matches the shipped folder


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_linear_probe(tmp_path, monkeypatch):
    """Retrain the cpu micro ViT here (about 3 minutes) and compare linear-probe accuracy with the shipped one."""
    from mepo_lab.backbones.pretrain import pretrained_backbone
    from mepo_lab.backbones.probe import linear_probe
    from mepo_lab.experiment import world_features

    preset = PRESETS["cpu"]()
    shipped_bb = pretrained_backbone(preset, tmp_path / "shipped_home", progress=False)
    monkeypatch.setenv(shipped.ENV, "0")
    retrained = pretrained_backbone(preset, tmp_path / "retrain_home", progress=False)
    accs = []
    for bb, home in ((shipped_bb, "shipped_home"), (retrained, "retrain_home")):
        f = world_features(preset, bb, tmp_path / home, progress=False)
        accs.append(linear_probe(f.train.features[:10000], f.train.targets[:10000], f.test.features, f.test.targets))
    assert abs(accs[0] - accs[1]) <= 0.01, accs
