import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mepo_lab.backbones.base import load_mepo_backbone, save_mepo_backbone
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import MePoConfig, MicroViTConfig, get_preset
from mepo_lab.mepo.refine import MetaRefiner
from mepo_lab.mepo.reptile import masked_logits, reptile_step_, reset_head_

SMOKE = get_preset("smoke")
TINY = MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2)


@pytest.mark.parametrize("eta", [0.0, 0.1, 0.5, 1.0])
def test_reptile_step_is_theta0_plus_eta_times_mean_displacement(eta):
    torch.manual_seed(0)
    theta0 = [torch.randn(3, 4), torch.randn(5)]
    ends = [[t + torch.randn_like(t) for t in theta0] for _ in range(3)]
    mean_end = [torch.stack([e[i] for e in ends]).mean(0) for i in range(2)]
    params = [t.clone() for t in ends[-1]]
    reptile_step_(params, theta0, eta, mean_end)
    for p, t0, m in zip(params, theta0, mean_end):
        torch.testing.assert_close(p, t0 + eta * (m - t0))
    single = [t.clone() for t in ends[0]]
    reptile_step_(single, theta0, eta)  # one trajectory: lerp(theta0, end, eta)
    for p, t0, e in zip(single, theta0, ends[0]):
        torch.testing.assert_close(p, torch.lerp(t0, e, eta))
    if eta == 0.0:
        assert all(torch.equal(p, t0) for p, t0 in zip(params, theta0))


def test_reptile_step_is_in_place_and_linear_in_eta():
    theta0, end = [torch.zeros(4)], [torch.arange(4.0)]
    out = {}
    for eta in (0.2, 0.4):
        p = [end[0].clone()]
        ptr = p[0].data_ptr()
        reptile_step_(p, theta0, eta)
        assert p[0].data_ptr() == ptr
        out[eta] = p[0]
    torch.testing.assert_close(out[0.4], 2 * out[0.2])


def test_multiplicative_mask_zeroes_logits_and_their_gradient():
    z = torch.randn(2, 5, requires_grad=True)
    allowed = torch.tensor([True, True, False, False, True])
    masked = masked_logits(z, "multiply", allowed)
    assert torch.equal(masked[:, 2:4], torch.zeros(2, 2))
    torch.nn.functional.cross_entropy(masked, torch.tensor([0, 4])).backward()
    assert torch.equal(z.grad[:, 2:4], torch.zeros(2, 2)) and z.grad[:, [0, 1, 4]].abs().sum() > 0
    inf = masked_logits(z.detach(), "neg_inf", allowed)
    assert torch.isinf(inf[:, 2:4]).all() and torch.softmax(inf, 1)[:, 2:4].sum() == 0


def test_head_reset_redraws_weights_and_zeroes_biases():
    head = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 300))
    before = head[2].weight.clone()
    reset_head_(head, torch.Generator().manual_seed(0))
    assert not torch.equal(before, head[2].weight)
    assert head[0].bias.abs().sum() == 0 and head[2].bias.abs().sum() == 0
    assert head[2].weight.std().item() == pytest.approx((2 / 556) ** 0.5, rel=0.05)


def test_checkpoint_round_trip_and_key_errors(tmp_path):
    vit = create_micro_vit(TINY, 32, num_classes=7, seed=0)
    path = save_mepo_backbone(vit, tmp_path / "meta_0.pth")
    state = torch.load(path, weights_only=True)
    assert not any(k.startswith("head.") for k in state) and type(state).__name__ == "OrderedDict"
    loaded = load_mepo_backbone(path, create_micro_vit(TINY, 32, seed=1))
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in loaded.state_dict().items())
    del state["cls_token"]
    state["prompt.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing keys \['cls_token'\]; unexpected keys \['prompt.extra'\]"):
        load_mepo_backbone(tmp_path / "bad.pth", create_micro_vit(TINY, 32))
    with pytest.raises(ValueError, match="does not fit"):
        load_mepo_backbone(path, create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=32, depth=1,
                                                                 num_heads=2), 32))
    with pytest.raises(FileNotFoundError, match="no MePo checkpoint"):
        load_mepo_backbone(tmp_path / "nope.pth")


def test_released_vit_b16_format(tmp_path):
    """A random-weight ViT-B/16 in the released format: 150 tensors, 85,798,656 parameters."""
    import timm

    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    path = save_mepo_backbone(vit, tmp_path / "vit_sup21k_meta_0.pth")
    state = torch.load(path, weights_only=True)
    assert len(state) == 150 and sum(v.numel() for v in state.values()) == 85_798_656
    state["head.weight"] = torch.zeros(10, 768)  # head keys are dropped, as the reference does
    torch.save(state, path)
    loaded = load_mepo_backbone(path)
    assert torch.equal(loaded.pos_embed, vit.pos_embed)


def _data():
    from mepo_lab.data.synthetic import SyntheticWorld

    return SyntheticWorld(SMOKE.world).dataset("pretrain", "train")


CFG = MePoConfig(group_size=8, tasks_per_group=4, samples_per_class=6, inner_epochs=1, batch_size=12,
                 backbone_lr=1e-3, meta_lr=0.5, meta_epochs=2)


@pytest.mark.parametrize("fidelity, head_reset", [("official", "none"), ("corrected", "per_task"),
                                                  ("official", "per_sequence")])
def test_refinement_runs_and_writes_released_checkpoints(tmp_path, fidelity, head_reset):
    data, source = _data(), create_micro_vit(TINY, 32, seed=0)
    cfg = MePoConfig(**{**CFG.__dict__, "fidelity": fidelity, "head_reset": head_reset})
    ref = MetaRefiner(copy.deepcopy(source), data.images, data.targets, cfg, tmp_path)
    ref.run(progress=False)
    assert [p.name for p in sorted(tmp_path.glob("meta_*.pth"))] == ["meta_0.pth", "meta_1.pth", "meta_2.pth"]
    meta0 = torch.load(tmp_path / "meta_0.pth", weights_only=True)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in meta0.items())  # the untouched input
    assert len(ref.log) == 2 * ref.sampler.n_groups and all(e["inner_distance"] > 0 for e in ref.log)
    assert not torch.equal(ref.model.vit.pos_embed, source.pos_embed)


def test_eta_zero_leaves_the_backbone_unchanged(tmp_path):
    data, source = _data(), create_micro_vit(TINY, 32, seed=0)
    cfg = MePoConfig(**{**CFG.__dict__, "meta_lr": 0.0, "meta_epochs": 1})
    ref = MetaRefiner(copy.deepcopy(source), data.images, data.targets, cfg, tmp_path)
    ref.run(progress=False)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in ref.model.vit.state_dict().items())


KILLED_RUN = textwrap.dedent("""
    import copy, os, signal, sys
    sys.path.insert(0, {root!r})
    from tests.test_refine import CFG, TINY, _data
    from mepo_lab.backbones.micro_vit import create_micro_vit
    from mepo_lab.mepo.refine import MetaRefiner

    class Kill:
        def on_group_end(self, entry):
            if entry["meta_epoch"] == 1 and entry["group"] == 1:
                os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no flush: a real crash

    data = _data()
    ref = MetaRefiner(create_micro_vit(TINY, 32, seed=0), data.images, data.targets, CFG, {folder!r})
    ref.run(progress=False, callbacks=[Kill()])
""")


def test_killed_refinement_resumes_to_the_uninterrupted_result(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN.format(root=root, folder=str(killed))],
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert (killed / "meta_1.pth").exists() and not (killed / "meta_2.pth").exists()
    data = _data()
    resumed = MetaRefiner(create_micro_vit(TINY, 32, seed=0), data.images, data.targets, CFG, killed)
    assert resumed.resume() and resumed.done == 1
    resumed.run(progress=False)
    straight = MetaRefiner(create_micro_vit(TINY, 32, seed=0), data.images, data.targets, CFG, tmp_path / "s")
    straight.run(progress=False)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [e["seq_loss"] for e in resumed.log] == [e["seq_loss"] for e in straight.log]


def test_resume_refuses_another_configuration(tmp_path):
    data = _data()
    MetaRefiner(create_micro_vit(TINY, 32, seed=0), data.images, data.targets,
                MePoConfig(**{**CFG.__dict__, "meta_epochs": 1}), tmp_path).run(progress=False)
    other = MetaRefiner(create_micro_vit(TINY, 32, seed=0), data.images, data.targets,
                        MePoConfig(**{**CFG.__dict__, "meta_lr": 0.9}), tmp_path)
    with pytest.raises(ValueError, match="another configuration"):
        other.resume()


def _task_indices(phases, repeat):
    """Image indices of every pseudo-task phase of one repeat (ArraySource tokens are ``(idx, state)``)."""
    return [np.sort(np.concatenate([tok[0] for tok in ph.tokens])) for ph in phases
            if ph.repeat == repeat and ph.task is not None]


@pytest.mark.parametrize("draws", ["fresh", "same"])
def test_repeats_draw_fresh_images_unless_told_otherwise(tmp_path, draws):
    data = _data()
    cfg = MePoConfig(**{**CFG.__dict__, "n_repeats": 2, "repeat_draws": draws, "samples_per_class": 3})
    ref = MetaRefiner(create_micro_vit(TINY, 32, seed=0), data.images, data.targets, cfg, tmp_path)
    group = ref.sampler.group(0, 0)
    phases = ref._plan(group, torch.Generator().manual_seed(0))
    first, second = _task_indices(phases, 0), _task_indices(phases, 1)
    for t, task in enumerate(group.tasks):  # each epoch of a phase passes over the task's images once
        np.testing.assert_array_equal(first[t], np.sort(task.indices))
    same = [np.array_equal(a, b) for a, b in zip(first, second)]
    assert all(same) if draws == "same" else not any(same)


def test_refinement_precision_follows_mepo_amp(tmp_path, monkeypatch):
    import mepo_lab.mepo.refine as refine_module
    from mepo_lab.config import PRESETS

    asked, real_amp = [], refine_module.Amp

    def recording(device, enabled=True):
        asked.append(enabled)
        return real_amp(device, enabled)

    monkeypatch.setattr(refine_module, "Amp", recording)
    data = _data()
    for amp in (False, True):
        ref = MetaRefiner(create_micro_vit(TINY, 32, seed=0), data.images, data.targets,
                          MePoConfig(**{**CFG.__dict__, "amp": amp}), tmp_path / str(amp))
        assert ref.amp.describe() == "fp32"  # on a CPU autocast stays off either way
    assert asked == [False, True]
    assert MePoConfig().amp is False and PRESETS["paper"]().mepo.amp is False  # the reference: fp32
    assert PRESETS["colab"]().mepo.amp is True
