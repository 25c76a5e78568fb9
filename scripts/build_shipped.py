"""Rebuild ``mepo_lab/resources/shipped/`` from the data home: the ``cpu`` preset's pretrained micro ViT (with its
pretraining head), its official MePo refinement and both meta covariances, with a manifest of SHA-256 hashes.

Run after a change that alters the embedded default's weights (``tests/test_shipped.py`` fails when the shipped
keys no longer match the presets): ``MEPO_LAB_SHIPPED=0 python scripts/build_shipped.py``.
"""
from __future__ import annotations

import json
import shutil
import sys
import time

import torch

from mepo_lab import paths, shipped
from mepo_lab.backbones.pretrain import cache_key, pretrained_backbone
from mepo_lab.config import PRESETS
from mepo_lab.mepo.pipeline import covariance_for, mepo_backbone, mepo_folder


def build(preset_name: str = "cpu") -> dict:
    preset = PRESETS[preset_name]()
    home = paths.data_home()
    pre = pretrained_backbone(preset)
    mepo = mepo_backbone(preset, source=pre)
    for bb in (pre, mepo):
        covariance_for(preset, bb)
    folder = mepo_folder(preset, pre)
    epochs = preset.mepo.meta_epochs
    rels = [f"micro_vit/{cache_key(preset)}/{f}" for f in ("backbone.pt", "head.pt", "info.json")]
    rels += [f"mepo/{folder.name}/{f}" for f in (f"meta_{epochs}.pth", "info.json")]
    rels += [f"covariance/cov_{bb.weights_hash}-{preset.mepo.cov_samples_per_class}-aug.npy" for bb in (pre, mepo)]
    out = shipped.root()
    shutil.rmtree(out, ignore_errors=True)
    files = {}
    for rel in rels:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(home / rel, out / rel)
        files[rel] = shipped.sha256(out / rel)
    manifest = {"preset": preset_name, "files": files, "pretrained_hash": pre.weights_hash,
                "mepo_hash": mepo.weights_hash, "built": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    (out / shipped.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


if __name__ == "__main__":
    print(json.dumps(build(*sys.argv[1:]), indent=1))
