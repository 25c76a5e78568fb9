"""The generated targets of the H-embedding experiment: LoRA on a ViT's qkv, the fully generated ResNet-32, and
the CIFAR-10 + CIFAR-100 task sequence (fake pickles in the real format, offline)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from mepo_lab.hembed.config import HEMBED_PRESETS
from mepo_lab.hembed.resnet import ResNet32
from mepo_lab.hembed.targets import LoRAQKV, LoRAViT, ModuleTarget

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}


def tiny_vit():
    from mepo_lab.backbones.zoo import create_backbone

    return create_backbone("sup21k", pretrained=False, **TINY).model


def test_lora_adds_b_a_to_the_frozen_qkv():
    torch.manual_seed(0)
    qkv = nn.Linear(6, 18)
    lora = LoRAQKV(qkv, rank=2, scale=0.5)
    x = torch.randn(4, 6)
    assert torch.equal(lora(x), qkv(x))  # zero factors: the frozen layer
    a, b = torch.randn(2, 6), torch.randn(18, 2)
    lora.lora_a.data, lora.lora_b.data = a, b
    torch.testing.assert_close(lora(x), x @ (qkv.weight + 0.5 * b @ a).T + qkv.bias)
    assert not qkv.weight.requires_grad


@pytest.mark.parametrize("blocks", [1, 2])
def test_lora_vit_generates_only_the_lora_factors_and_the_head(blocks):
    import copy

    from mepo_lab.backbones.base import cls_features

    vit = tiny_vit()
    frozen = copy.deepcopy(vit)
    target = ModuleTarget(LoRAViT(vit, n_out=3, rank=2, blocks=blocks))
    assert len(target.names) == 2 * blocks + 2 and target.names[-2:] == ["head.weight", "head.bias"]
    assert all(".attn.qkv.lora_" in n for n in target.names[:-2])
    weights = [torch.randn(s) for s in target.shapes]
    x = torch.rand(5, 3, 32, 32)
    assert target.logits(weights, x).shape == (5, 3) and target.hidden(weights, x).shape == (5, 32)
    zero_lora = [torch.zeros_like(w) for w in weights[:-2]] + weights[-2:]
    with torch.no_grad():
        plain = cls_features(frozen.eval(), (x - 0.5) / 0.5)
        torch.testing.assert_close(target.hidden(zero_lora, x), plain)  # zero factors: the frozen ViT
        assert not torch.allclose(target.hidden(weights, x), plain)
    assert target.hidden(weights, torch.rand(2, 3, 16, 16)).shape == (2, 32)  # resized to 32 px
    with pytest.raises(ValueError, match=r"lora blocks must be in \[1, 3\]"):
        LoRAViT(tiny_vit(), 3, 2, 4)


def test_resnet32_has_32_layers_and_the_target_scales_each_tensor():
    net = ResNet32(10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 32  # 31 3x3 convolutions + the linear head
    target = ModuleTarget(net)
    # the official count (mnets/resnet.py, n = 5, filters 16-16-32-64): 3x3 kernels, conv biases, the head, BN
    fs, n = [16, 16, 32, 64], 5
    official = (9 * (3 * fs[0] + sum(fs[i] * fs[i + 1] + (2 * n - 1) * fs[i + 1] ** 2 for i in range(3)))
                + fs[0] + 2 * n * sum(fs[1:]) + fs[-1] * 10 + 10 + 2 * (fs[0] + 2 * n * sum(fs[1:])))
    assert official == 465290 == sum(torch.Size(s).numel() for s in target.shapes)
    i = target.names.index("stem.0.weight")
    assert target.gains[i] == pytest.approx(1 / 27 ** 0.5) and target.offsets[i] == 0.0
    j = target.names.index("stem.1.weight")  # a BatchNorm scale: 1 + 0.1 w
    assert target.offsets[j] == 1.0 and target.gains[j] == 0.1
    weights = [torch.randn(s) for s in target.shapes]
    x = torch.rand(4, 3, 32, 32)
    assert target.logits(weights, x).shape == (4, 10) and target.hidden(weights, x).shape == (4, 64)


def test_cifar_sequence_and_resnet32_run_end_to_end(tmp_path):
    from mepo_lab.hembed import run
    from tests.fakes import write_cifar10, write_cifar100

    write_cifar10(tmp_path / "datasets" / "cifar10", train_per_class=3, test_per_class=2)
    write_cifar100(tmp_path / "datasets" / "cifar100", train_per_class=3, test_per_class=2)
    cfg = replace(HEMBED_PRESETS["colab"](), cifar100_tasks=2, epochs=1, emb_iters=10, emb_data_size=20,
                  seeds=(1,), methods=("hnet_hembedding",), device="cpu")
    tasks, groups = run.build_tasks(cfg, tmp_path, verify=False)
    assert groups == ["cifar10", "cifar100", "cifar100"] and [t.index for t in tasks] == [0, 1, 2]
    assert tasks[0].n_classes == 10 and tasks[2].classes == list(range(10, 20)) and len(tasks[1].train.targets) == 30
    result = run.run_hembed(cfg, tmp_path / "out", data_home=tmp_path, progress=False, verify=False)
    row = json.loads((tmp_path / "out" / "results.json").read_text())["rows"][0]
    assert row["scores"][2] is not None and len(row["scores"][2]) == 2 and len(row["matrix"]) == 3
    assert result["summary"]["hnet_hembedding"]["ACC"]["n"] == 1


def test_lora_target_on_the_micro_vit_keeps_the_backbone_untouched(smoke_home):
    from mepo_lab.hembed import run

    cfg = replace(HEMBED_PRESETS["smoke"](), target="lora", epochs=1, emb_iters=10, methods=("hnet",), device="cpu")
    tasks, _ = run.build_tasks(cfg)
    backbone = run.build_backbone(cfg, smoke_home)
    before = {n: p.clone() for n, p in backbone.model.state_dict().items()}
    row = run.run_one(tasks, backbone, cfg, "hnet_hembedding", 1)
    assert 0 <= row["ACC"] <= 1 and len(row["hscore_matrix"]) == len(tasks)
    after = backbone.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[n], v) for n, v in before.items())
