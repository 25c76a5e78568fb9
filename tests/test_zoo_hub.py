"""Backbone zoo (tagged timm names, local files) and released MePo artefacts, all offline.

The fake Hugging Face cache has the layout hf_hub_download resolves offline:
``models--long2333--MePo/refs/main`` (a commit hash, no newline) and
``models--long2333--MePo/snapshots/<commit>/mepo_ckps/...``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants

from mepo_lab.backbones import zoo
from mepo_lab.mepo import releases as hub
from mepo_lab.backbones.base import cls_features, load_mepo_backbone, save_mepo_backbone, weights_hash

COMMIT = "0123456789abcdef0123456789abcdef01234567"
MICRO = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}  # timm kwargs, tiny ViT


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Offline mode and an empty HF home, whatever the environment was at import time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_home" / "hub"))
    return tmp_path / "empty_hf_home" / "hub"


def micro_vit(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **MICRO)


def random_spd(dim: int = 768, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(dim, dim))
    return a @ a.T / dim + 1e-3 * np.eye(dim)


def snapshot(cache: Path) -> Path:
    repo = cache / "models--long2333--MePo"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return repo / "snapshots" / COMMIT


def fake_release(cache: Path, backbone: str = "sup21k", model: torch.nn.Module | None = None) -> dict:
    """Write every artefact of ``backbone`` into a fake HF cache; return what was written."""
    root, files = snapshot(cache), hub.artifact_files(backbone)
    for key in files:
        (root / files[key]).parent.mkdir(parents=True, exist_ok=True)
    model = model or micro_vit()
    save_mepo_backbone(model, root / files["meta"])
    save_mepo_backbone(micro_vit(seed=1), root / files["meta_0"])
    cov = random_spd()
    np.save(root / files["covariance"], cov)
    e = torch.randn(10, 60, 768, requires_grad=True)  # as MISA saved them (on cuda:0 there)
    g = torch.randn(1, 20, 768, requires_grad=True)
    torch.save(e, root / files["e_prompt"])
    torch.save(g, root / files["g_prompt"])
    return {"model": model, "cov": cov, "e": e.detach(), "g": g.detach(), "root": root}


# ----------------------------------------------------------------------------- zoo
def test_registry_uses_tagged_names_that_match_timm_cfg():
    assert set(zoo.ZOO) >= {"sup21k", "sup21k_1k", "sup21k_1k_augreg", "dino"}
    assert zoo.ZOO["sup21k"]["timm_name"] == "vit_base_patch16_224.orig_in21k"
    assert zoo.ZOO["sup21k_1k"]["timm_name"] == "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    assert zoo.ZOO["sup21k_1k_augreg"]["timm_name"] == "vit_base_patch16_224.augreg_in21k_ft_in1k"
    assert zoo.ZOO["dino"]["timm_name"] == "vit_base_patch16_224.dino"
    for name, entry in zoo.ZOO.items():
        assert "." in entry["timm_name"], name
        assert timm.models.get_pretrained_cfg(entry["timm_name"]) is not None, name
        stats = zoo.normalization_stats(name, mode="backbone")
        assert stats == {"mean": entry["mean"], "std": entry["std"]}, name
    # what MePo's `sup1k` (timm.create_model('vit_base_patch16_224')) resolves to in this timm
    assert timm.models.get_pretrained_cfg("vit_base_patch16_224").hf_hub_id.endswith("augreg2_in21k_ft_in1k")


def test_create_backbone_random_is_headless_eval_frozen():
    bb = zoo.create_backbone("sup21k", pretrained=False, depth=1)
    assert bb.kind == "sup21k" and bb.info["timm_name"] == "vit_base_patch16_224.orig_in21k"
    assert bb.feature_dim == 768 and bb.model.num_classes == 0 and not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())
    assert bb.weights_hash == weights_hash(bb.model)
    with torch.no_grad():
        assert cls_features(bb.model, torch.zeros(2, 3, 224, 224)).shape == (2, 768)
    trainable = zoo.create_backbone("dino", pretrained=False, freeze=False, depth=1)
    assert all(p.requires_grad for p in trainable.model.parameters())


def test_create_backbone_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="valid: sup21k, sup21k_1k.*local:<path>"):
        zoo.create_backbone("vit_base_patch16_224")
    with pytest.raises(ValueError, match="head-less"):
        zoo.create_backbone("sup21k", pretrained=False, num_classes=10)
    with pytest.raises(ValueError, match="arch="):
        zoo.create_backbone("sup21k", pretrained=False, arch="vit_small_patch16_224")
    with pytest.raises(FileNotFoundError, match="no weight file"):
        zoo.create_backbone(f"local:{tmp_path / 'nope.pth'}")


def test_offline_empty_cache_gives_one_clear_error(offline, tmp_path):
    for cache_dir in (None, tmp_path / "empty_cache"):  # the HF_HOME cache, then an explicit one
        with pytest.raises(zoo.WeightsUnavailableError) as info:
            zoo.create_backbone("sup21k", pretrained=True, cache_dir=cache_dir, depth=1)
        msg = str(info.value)
        assert "offline" in msg and "HF_HUB_OFFLINE" in msg
        assert "timm/vit_base_patch16_224.orig_in21k" in msg and "model.safetensors" in msg
        assert "local:" in msg and "HF_HOME" in msg
        assert str(cache_dir if cache_dir is not None else offline) in msg
        assert info.value.__cause__ is None and info.value.__suppress_context__


def test_local_file_full_vit_b16_round_trip(tmp_path):
    """A random ViT-B/16 in the released MePo format loads bit-exactly through local:<path>."""
    src = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    path = save_mepo_backbone(src, tmp_path / "vit_sup21k_meta_5.pth")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert len(saved) == 150 and sum(v.numel() for v in saved.values()) == 85_798_656
    bb = zoo.create_backbone(f"local:{path}", arch=hub.RELEASES["sup21k"].arch)
    assert bb.kind == "local" and bb.info["path"] == str(path)
    loaded = bb.model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert bb.weights_hash == weights_hash(src)
    assert not any(p.requires_grad for p in bb.model.parameters())
    assert zoo.normalization_stats(bb, mode="backbone") == {"mean": (0.5,) * 3, "std": (0.5,) * 3}


def test_local_file_is_loaded_strictly(tmp_path):
    model = micro_vit()
    good = save_mepo_backbone(model, tmp_path / "good.pth")
    bb = zoo.create_backbone(f"local:{good}", **MICRO)
    assert bb.weights_hash == weights_hash(model)
    for arch in ("vit_base_patch16_224.augreg_in21k_ft_in1k", "vit_base_patch16_224.dino"):  # npz / 0-class cfgs
        assert zoo.create_backbone(f"local:{good}", arch=arch, **MICRO).weights_hash == weights_hash(model)
    state = dict(model.state_dict())
    missing = {k: v for k, v in state.items() if k != "norm.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="norm.bias"):
        zoo.create_backbone(f"local:{tmp_path / 'missing.pth'}", **MICRO)
    torch.save(state | {"head.weight": torch.zeros(5, 32), "head.bias": torch.zeros(5)}, tmp_path / "head.pth")
    with pytest.raises(ValueError, match="head.weight.*head-less"):
        zoo.create_backbone(f"local:{tmp_path / 'head.pth'}", **MICRO)
    with pytest.raises(ValueError, match="does not fit"):
        zoo.create_backbone(f"local:{good}", **(MICRO | {"embed_dim": 64}))
    with pytest.raises(ValueError, match="always loads"):
        zoo.create_backbone(f"local:{good}", pretrained=False, **MICRO)


def test_normalization_stats_modes():
    assert zoo.normalization_stats("sup21k") is None
    assert zoo.normalization_stats("sup21k", mode="dataset", dataset="cifar100") is None
    half = {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert zoo.normalization_stats("sup21k", mode="backbone") == half
    assert zoo.normalization_stats("sup21k_1k", mode="backbone") == half
    assert zoo.normalization_stats("vit_base_patch16_224.dino", mode="backbone")["mean"] == (0.485, 0.456, 0.406)
    model = zoo.create_backbone("dino", pretrained=False, depth=1)
    assert zoo.normalization_stats(model.model, mode="backbone")["std"] == (0.229, 0.224, 0.225)
    with pytest.raises(ValueError, match="mode"):
        zoo.normalization_stats("sup21k", mode="imagenet")
    with pytest.raises(ValueError, match="unknown backbone"):
        zoo.normalization_stats("not_a_model", mode="backbone")
    with pytest.raises(ValueError, match="no cfg"):
        zoo.normalization_stats("local:/x.pth", mode="backbone")


# ----------------------------------------------------------------------------- hub
def test_artifact_file_table():
    assert hub.artifact_files("sup21k") == {
        "meta": "mepo_ckps/sup21k/vit_sup21k_meta_5.pth", "meta_0": "mepo_ckps/sup21k/vit_sup21k_meta_0.pth",
        "covariance": "mepo_ckps/sup21k/cov_sup21k_meta_5.npy",
        "e_prompt": "mepo_ckps/e_prompt.pt", "g_prompt": "mepo_ckps/g_prompt.pt"}
    assert hub.artifact_files("sup1k")["meta"] == "mepo_ckps/sup1k/vit_sup1k_meta_2.pth"
    assert hub.artifact_files("ibot21k")["covariance"] == "mepo_ckps/ibot21k/cov_ibot21k_meta_30.npy"
    assert hub.artifact_files("sup21k_1k") == hub.artifact_files("sup1k")
    assert hub.RELEASES["sup21k"].verified and not hub.RELEASES["sup1k"].verified
    with pytest.raises(ValueError, match="valid: sup21k, sup1k, ibot21k"):
        hub.artifact_files("vit_b16")
    with pytest.raises(ValueError, match="unknown artefact keys"):
        hub.mepo_artifacts("sup21k", include=["weights"])


def test_mepo_artifacts_resolve_offline_and_load(offline, tmp_path):
    cache = tmp_path / "hf_cache"
    fake = fake_release(cache)
    paths = hub.mepo_artifacts("sup21k", cache_dir=cache)
    assert set(paths) == set(hub.ARTIFACT_KEYS)
    for key, path in paths.items():
        assert path.is_file() and path == fake["root"] / hub.artifact_files("sup21k")[key]
    assert hub.mepo_artifacts("sup21k", revision=COMMIT, cache_dir=cache) == paths
    assert hub.mepo_artifacts("sup21k", cache_dir=cache, include=["covariance"]) == {"covariance": paths["covariance"]}
    model = load_mepo_backbone(paths["meta"], "vit_base_patch16_224", **MICRO)
    assert weights_hash(model) == weights_hash(fake["model"])
    cov = hub.load_mepo_covariance(paths["covariance"])
    assert cov.dtype == np.float64 and cov.shape == (768, 768) and np.array_equal(cov, fake["cov"])
    prompts = hub.load_prompts(paths["e_prompt"], paths["g_prompt"])
    assert prompts.e.shape == (10, 3, 20, 768) and prompts.g.shape == (1, 2, 10, 768)
    assert not prompts.e.requires_grad and not prompts.g.requires_grad
    assert prompts.e.device.type == "cpu"
    assert torch.equal(prompts.e.reshape(10, 60, 768), fake["e"]) and torch.equal(prompts.g[0, 1], fake["g"][0, 10:])


def test_mepo_artifacts_respect_hf_home(tmp_path):
    """HF_HOME set before Python starts decides the cache (huggingface_hub reads it at import)."""
    fake_release(tmp_path / "home" / "hub")
    env = os.environ | {"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    code = "from mepo_lab.mepo import releases as hub; print(hub.mepo_artifacts('sup21k')['meta'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == str(snapshot(tmp_path / "home" / "hub") / "mepo_ckps/sup21k/vit_sup21k_meta_5.pth")


def test_mepo_artifacts_offline_missing_files(offline, tmp_path):
    cache = tmp_path / "hf_cache"
    fake = fake_release(cache)
    (fake["root"] / "mepo_ckps/sup21k/cov_sup21k_meta_5.npy").unlink()
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.mepo_artifacts("sup21k", cache_dir=cache)
    msg = str(info.value)
    assert "offline" in msg and "cov_sup21k_meta_5.npy" in msg and "vit_sup21k_meta_5.pth" not in msg
    assert "long2333/MePo" in msg and "--include 'mepo_ckps/sup21k/*'" in msg and "HF_HOME" in msg
    assert isinstance(info.value, FileNotFoundError) and info.value.__suppress_context__
    with pytest.raises(hub.WeightsUnavailableError) as info:  # default (empty) HF_HOME cache: all five
        hub.mepo_artifacts("ibot21k")
    msg = str(info.value)
    assert str(offline) in msg
    assert all(name in msg for name in hub.artifact_files("ibot21k").values())


def test_load_prompts_checks_shapes_and_type(tmp_path):
    torch.save(torch.randn(10, 60, 768), tmp_path / "e.pt")
    torch.save(torch.randn(1, 20, 768), tmp_path / "g.pt")
    torch.save(torch.randn(10, 40, 768), tmp_path / "e_bad.pt")
    torch.save({"prompt": torch.randn(1, 20, 768)}, tmp_path / "g_dict.pt")
    with pytest.raises(ValueError, match=r"expected shape \(10, 60, 768\), got \(10, 40, 768\)"):
        hub.load_prompts(tmp_path / "e_bad.pt", tmp_path / "g.pt")
    with pytest.raises(ValueError, match=r"g-prompt.*expected shape \(1, 20, 768\), got \(10, 60, 768\)"):
        hub.load_prompts(tmp_path / "e.pt", tmp_path / "e.pt")
    with pytest.raises(ValueError, match="not a tensor"):
        hub.load_prompts(tmp_path / "e.pt", tmp_path / "g_dict.pt")
