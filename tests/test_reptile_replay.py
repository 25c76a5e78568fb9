"""An independent replay of MePo's meta-iterations (docs/reference/mepo.md#bi-level).

``MetaRefiner`` runs two Reptile updates on a tiny timm ViT while a callback records every batch it trains
on. A plain loop written here from the reference's description — its own head, ``torch.optim.SGD`` with the
two learning rates, the mask written out, the Reptile step as ``θ0 + η (θ_end − θ0)`` — replays those batches
and must end with the same weights. It uses none of the lab's ``MetaModel``, ``masked_logits`` or
``reptile_step_``, so a bug there (a swapped learning rate, a mask that blocks the wrong classes, momentum
reset where the reference keeps it, a Reptile step in the wrong direction) shows up as a mismatch.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from mepo_lab.config import MePoConfig, get_preset
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.mepo.refine import MetaRefiner

CFG = dict(group_size=4, tasks_per_group=2, samples_per_class=3, inner_epochs=2, batch_size=4,
           backbone_lr=0.05, head_lr=0.2, momentum=0.9, meta_lr=0.3, meta_epochs=1)


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_batch(self, entry: dict) -> None:
        self.batches.append((entry["x"].clone(), entry["y"].clone()))


def replay(vit, head, groups, cfg: MePoConfig) -> None:
    """The reference's inner loop and Reptile step, batch by batch, in place on ``vit`` and ``head``."""
    params = list(vit.parameters()) + list(head.parameters())

    def sgd():
        return torch.optim.SGD([{"params": list(vit.parameters()), "lr": cfg.backbone_lr},
                                {"params": list(head.parameters()), "lr": cfg.head_lr}],
                               momentum=cfg.momentum, foreach=False)

    opt = sgd()
    for classes, batches in groups:
        if cfg.optimizer_state == "reset":
            opt = sgd()
        theta0 = [p.detach().clone() for p in params]
        allowed = torch.zeros(head[-1].out_features, dtype=torch.bool)
        allowed[torch.as_tensor(classes)] = True
        for x, y in batches:
            z = head(vit.forward_features(x)[:, 0])
            if cfg.logit_mask == "multiply":  # blocked logits are exactly 0 and stay in the softmax
                z = z * allowed.float()
            else:  # neg_inf: blocked classes leave the softmax
                z = torch.where(allowed, z, torch.full_like(z, float("-inf")))
            loss = F.cross_entropy(z, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for p, p0 in zip(params, theta0):
                p.copy_(p0 + cfg.meta_lr * (p - p0))


@pytest.mark.parametrize("fidelity", ["official", "corrected"])
def test_two_meta_iterations_match_an_independent_replay(tmp_path, fidelity):
    world = SyntheticWorld(get_preset("smoke").world)
    data = world.dataset("pretrain", "train")
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0,
                            num_classes=0, global_pool="token")
    cfg = MePoConfig(fidelity=fidelity, **CFG)
    refiner = MetaRefiner(copy.deepcopy(vit), data.images, data.targets, cfg, tmp_path)
    mine_vit, mine_head = copy.deepcopy(vit), copy.deepcopy(refiner.model.head)  # the same starting point
    gen, groups = torch.Generator().manual_seed(5), []
    for g in range(2):
        group, record = refiner.sampler.group(0, g), Recorder()
        refiner.meta_iteration(group, gen, callbacks=[record])
        groups.append((group.classes, record.batches))
    steps = sum(len(b) for _, b in groups)
    assert steps == 2 * refiner.sampler.steps_per_group()
    replay(mine_vit, mine_head, groups, refiner.cfg)
    for name, p in mine_vit.named_parameters():
        torch.testing.assert_close(refiner.model.vit.get_parameter(name), p, atol=2e-6, rtol=1e-5, msg=name)
    for name, p in mine_head.named_parameters():
        torch.testing.assert_close(refiner.model.head.get_parameter(name), p, atol=2e-6, rtol=1e-5, msg=name)
    assert not torch.allclose(refiner.model.vit.pos_embed, vit.pos_embed)  # the refinement moved the weights
