"""BECAME on a pretrained timm ViT with its last blocks adapted, tested on a tiny random-weight timm ViT
(offline): only the adapted blocks train, GPM projects only them, and the strategy runs end to end."""
from __future__ import annotations

import pytest
import torch

from mepo_lab.became.config import became_preset
from mepo_lab.became.gpm import linear_layers
from mepo_lab.became.models import pretrained_vit
from mepo_lab.config import override

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}


def tiny(adapt_blocks: int = 1, **kw):
    return pretrained_vit([2, 2], "sup21k", adapt_blocks, pretrained=False, **TINY, **kw)


@pytest.mark.parametrize("adapt", [1, 2])
def test_only_the_last_blocks_train_and_get_projected(adapt):
    net = tiny(adapt)
    first = 3 - adapt
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("head.", "body.vit.norm.")) or
                             int(n.split(".")[3]) >= first for n in trainable if not n.startswith("head."))
    assert not any(n.startswith(("body.vit.patch_embed", "body.vit.pos_embed", "body.vit.cls_token")) for n in trainable)
    layers = linear_layers(net)
    assert len(layers) == 4 * adapt  # qkv, proj, fc1, fc2 of each adapted block
    assert all(int(n.split(".")[3]) >= first for n in layers)
    assert net(torch.rand(3, 3, 16, 16), 1).shape == (3, 2)  # resized to the ViT's 32 px


def test_bad_adapt_blocks_and_precision():
    with pytest.raises(ValueError, match=r"adapt_blocks must be in \[1, 3\]"):
        tiny(4)
    with pytest.raises(ValueError, match="precision must be"):
        tiny(1, precision="fp16")


def test_became_on_the_tiny_vit_keeps_frozen_blocks_and_merges(monkeypatch):
    from mepo_lab.became import run

    cfg = override(became_preset("smoke"), {"device": "cpu", "model": "pretrained_vit", "n_tasks": 2,
                                            "methods": ("became",), "image_size": 16})
    tasks = run.build_tasks(cfg)
    built = {}

    def build(cfg, seed):
        built["net"] = tiny(1, seed=seed)
        built["frozen"] = {n: p.detach().clone() for n, p in built["net"].named_parameters() if not p.requires_grad}
        return built["net"]

    monkeypatch.setattr(run, "build_model", build)
    row = run.run_one(tasks, cfg, "became", seed=1)
    assert 0.0 <= row["alpha"][1] <= 1.0 and set(row["memory"]) == set(linear_layers(built["net"]))
    after = dict(built["net"].named_parameters())
    assert all(torch.equal(after[n], v) for n, v in built["frozen"].items())


def test_colab_vit_preset_is_the_gpu_variant():
    from mepo_lab.became.config import BECAME_PRESETS

    cfg = BECAME_PRESETS["colab_vit"]()  # became_preset() would give smoke under MEPO_LAB_SMOKE=1 (make test)
    assert (cfg.model, cfg.backbone, cfg.adapt_blocks, cfg.data) == ("pretrained_vit", "sup21k", 3, "cifar100")
