"""Zapping: the operator's exact-row semantics, episode step counts, second-order Meta-ASB, the i.i.d. zap
schedule, the claims' verdicts on hand-made rows, and the experiment/CLI on the smoke preset."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from mepo_lab.config import override
from mepo_lab.zapping import pretrain as zpretrain
from mepo_lab.zapping.claims import summarise, verdict
from mepo_lab.zapping.config import ZappingConfig, zapping_preset
from mepo_lab.zapping.episodes import (
    EpisodeData,
    asb_episode,
    inner_names,
    meta_asb_episode,
    meta_gradient,
)
from mepo_lab.zapping.models import conv_net, vit_net
from mepo_lab.zapping.operator import zap_


@pytest.mark.parametrize("rows", [[3], [0, 5, 9], None])
def test_zap_changes_exactly_the_requested_rows(rows):
    layer = nn.Linear(16, 10)
    opt = torch.optim.Adam(layer.parameters())
    F.mse_loss(layer(torch.randn(4, 16)), torch.zeros(4, 10)).backward()
    opt.step()
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    state0 = {k: v.clone() for k, v in opt.state[layer.weight].items()}
    zap_(layer, rows, generator=torch.Generator().manual_seed(0))
    changed = set(range(10)) if rows is None else set(rows)
    for r in range(10):
        same = torch.equal(layer.weight[r], w0[r])
        assert same == (r not in changed), r
    assert torch.equal(layer.bias, b0)
    for k, v in opt.state[layer.weight].items():
        assert torch.equal(v, state0[k]), f"optimizer state {k} changed"


@pytest.mark.parametrize("official_fan, k", [(False, 1), (False, 64), (True, 1), (True, 64)])
def test_zap_std_per_row_and_official_fan(official_fan, k):
    d = 512
    layer = nn.Linear(d, 128)
    zap_(layer, list(range(k)), official_fan=official_fan, generator=torch.Generator().manual_seed(1))
    expected = math.sqrt(2 / d) / (math.sqrt(k) if official_fan else 1.0)
    std = layer.weight[:k].std().item()
    assert abs(std - expected) / expected < 0.2 if k == 1 else abs(std - expected) / expected < 0.05


@pytest.mark.parametrize("rows, error", [([10], ValueError), ([-1], ValueError), ([], ValueError)])
def test_zap_bad_rows(rows, error):
    with pytest.raises(error, match="rows"):
        zap_(nn.Linear(4, 10), rows)


def test_zap_needs_a_linear_layer():
    with pytest.raises(TypeError, match="nn.Linear"):
        zap_(nn.Conv2d(3, 4, 3))


def _data(n_classes=4, per_class=5, size=28):
    g = torch.Generator().manual_seed(0)
    return EpisodeData(torch.rand(n_classes * per_class, 3, size, size, generator=g),
                       torch.arange(n_classes).repeat_interleave(per_class))


@pytest.fixture
def step_counter():
    counts: dict[str, int] = {}

    def hook(opt, args, kwargs):
        counts[type(opt).__name__] = counts.get(type(opt).__name__, 0) + 1
    handle = register_optimizer_step_post_hook(hook)
    yield counts
    handle.remove()


@pytest.mark.parametrize("inner", ["all", "head"])
def test_asb_episode_makes_20_sgd_updates_and_one_adam_update(step_counter, inner):
    net, data = conv_net(4, filters=4), _data()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    asb_episode(net, data, 2, opt, torch.Generator().manual_seed(0), n_seq=20, remember=8, inner_params=inner)
    assert step_counter == {"SGD": 20, "Adam": 1}


def test_asb_head_only_inner_loop_leaves_the_body_to_the_batch_step():
    net = conv_net(4, filters=4)
    assert inner_names(net, "head") == ["head.weight", "head.bias"]
    assert len(inner_names(net, "all")) == len(list(net.parameters()))
    with pytest.raises(ValueError, match="inner_params"):
        inner_names(net, "body")


@pytest.mark.parametrize("make", [lambda: conv_net(4, filters=4), lambda: vit_net(4)])
def test_meta_gradient_has_second_order_terms(make):
    net, data = make(), _data()
    x_seq, y_seq = data.x[:3], torch.full((3,), 1)
    xb, yb = data.x[5:12], data.y[5:12]
    names = inner_names(net, "all")
    second, _ = meta_gradient(net, x_seq, y_seq, xb, yb, names, 0.1)
    first, _ = meta_gradient(net, x_seq, y_seq, xb, yb, names, 0.1, first_order=True)
    diff = sum((second[n] - first[n]).norm() ** 2 for n in second) ** 0.5
    assert diff > 1e-6


def test_first_order_meta_gradient_is_the_gradient_at_the_adapted_weights():
    """Independent check: plain SGD steps on a copy, then the batch-loss gradient there."""
    net, data = conv_net(4, filters=4), _data()
    x_seq, y_seq, xb, yb = data.x[:3], torch.full((3,), 1), data.x[5:12], data.y[5:12]
    first, loss = meta_gradient(net, x_seq, y_seq, xb, yb, inner_names(net, "all"), 0.1, first_order=True)
    twin = copy.deepcopy(net)
    sgd = torch.optim.SGD(twin.parameters(), lr=0.1)
    for t in range(3):
        sgd.zero_grad()
        F.cross_entropy(twin(x_seq[t:t + 1]), y_seq[t:t + 1]).backward()
        sgd.step()
    twin.zero_grad()
    ref = F.cross_entropy(twin(xb), yb)
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-5)
    for n, p in twin.named_parameters():
        torch.testing.assert_close(first[n], p.grad, rtol=1e-4, atol=1e-6)


def test_meta_asb_episode_moves_the_pre_episode_weights_with_one_adam_step(step_counter):
    net, data = conv_net(4, filters=4), _data()
    before = copy.deepcopy(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    meta_asb_episode(net, data, 0, opt, torch.Generator().manual_seed(0), n_seq=3, remember=4)
    assert step_counter == {"Adam": 1}
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items() if not k.startswith("head"))


def test_iid_zaps_before_every_zap_every_th_epoch(monkeypatch):
    calls = []
    real = zpretrain.zap_
    monkeypatch.setattr(zpretrain, "zap_", lambda layer, rows=None, **kw: calls.append(rows) or real(layer, rows, **kw))
    cfg = ZappingConfig(iid_epochs=5, zap_every=2, zap_size=3, iid_batch_size=8, curve_points=5)
    history = zpretrain.pretrain_iid(conv_net(4, filters=4), _data(), cfg, torch.Generator().manual_seed(0), True)
    assert len(calls) == 2 and all(len(r) == 3 for r in calls)  # before epochs 2 and 4 (0-based)
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5]
    calls.clear()
    zpretrain.pretrain_iid(conv_net(4, filters=4), _data(), cfg, torch.Generator().manual_seed(0), False)
    assert calls == []


@pytest.mark.parametrize("change, match", [({"asb_episodes": 0}, "zero episodes"), ({"iid_shots": 20}, "iid_shots"),
                                           ({"regimes": ("iid", "mepo")}, "regimes"), ({"model": "mlp"}, "model")])
def test_bad_configuration_is_one_clear_error(change, match):
    with pytest.raises(ValueError, match=match):
        override(zapping_preset("cpu"), change)


def _row(regime, seed, acc, iid=0.5, early=1.0):
    return {"regime": regime, "seed": seed, "final_accuracy": acc, "curve_auc": acc, "iid_transfer_accuracy": iid,
            "zero_shot_accuracy": 0.3, "early_loss": early, "seconds": {"total": 1.0}}


def test_claims_on_hand_made_rows():
    rows = [_row("asb", s, 0.50 + 0.01 * s) for s in (1, 2, 3)]
    rows += [_row("asb_zap", s, 0.60 + 0.01 * s, early=0.5) for s in (1, 2, 3)]   # +10 pt, lower loss
    rows += [_row("meta_zap", s, 0.605 + 0.01 * s) for s in (1, 2, 3)]            # asb_zap 0.5 pt below
    summary, claims = summarise(rows)
    assert summary["asb_zap"]["final_accuracy"]["mean"] == pytest.approx(0.62)
    assert summary["asb"]["final_accuracy"]["std"] == pytest.approx(0.01)
    asb = next(c for c in claims if c["regime"] == "asb")
    parts = {p["metric"]: p for p in asb["metrics"]}
    assert parts["final_accuracy"]["difference"] == pytest.approx(0.10)
    assert parts["final_accuracy"]["verdict"] == "better"
    assert parts["iid_transfer_accuracy"]["verdict"] == "no measurable difference"
    assert parts["early_loss_reduction"]["difference"] == pytest.approx(0.5)
    assert asb["verdict"] == "reproduced"
    match = next(c for c in claims if c["comparison"] == "asb_zap − meta_zap")
    assert match["verdict"] == "reproduced"  # within 1 point


def test_claims_need_two_seeds_and_use_t_intervals():
    d = [0.03, -0.01, 0.04]  # mean +0.02, s = 0.0265, t(2) = 4.303: interval [-0.046, +0.086]
    rows = [_row("iid", s, 0.5) for s in (1, 2, 3)] + [_row("iid_zap", s, 0.5 + d[s - 1]) for s in (1, 2, 3)]
    iid = next(c for c in summarise(rows)[1] if c["regime"] == "iid")
    part = next(p for p in iid["metrics"] if p["metric"] == "final_accuracy")
    assert part["low"] == pytest.approx(0.02 - 4.303 * 0.026458 / 3 ** 0.5, abs=1e-4)
    assert part["verdict"] == "no measurable difference" and iid["verdict"] == "not reproduced"
    one = [_row("asb_zap", 1, 0.5), _row("meta_zap", 1, 0.9)]
    assert summarise(one)[1][0]["verdict"] == "needs 2+ seeds"


@pytest.mark.parametrize("diff, expected", [
    ({"difference": 0.02, "se": 0.004, "n": 3, "low": 0.003, "high": 0.037}, "better"),
    ({"difference": -0.02, "se": 0.004, "n": 3, "low": -0.037, "high": -0.003}, "worse"),
    ({"difference": 0.02, "se": 0.01, "n": 3, "low": -0.023, "high": 0.063}, "no measurable difference"),
    ({"difference": -0.1, "se": 0.0, "n": 1, "low": float("nan"), "high": float("nan")}, "worse (1 seed)")])
def test_verdict(diff, expected):
    assert verdict(diff) == expected


def test_smoke_experiment_writes_results_and_resumes(tmp_path, monkeypatch):
    from mepo_lab.zapping import run

    cfg = override(zapping_preset("smoke"), {"regimes": ("iid", "asb_zap"), "device": "cpu"})
    result = run.run_zapping(cfg, tmp_path, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [(r["regime"], r["seed"]) for r in saved["rows"]] == [("iid", 1), ("asb_zap", 1)]
    row = saved["rows"][1]
    assert row["kind"] == "asb" and row["zap"] is True
    assert len(row["continual"]["accuracy"]) == cfg.n_transfer_classes
    assert 0.0 <= row["final_accuracy"] <= 1.0 and row["final_accuracy"] == row["continual"]["accuracy"][-1]
    assert len(row["pretrain"]["history"]) == cfg.curve_points
    assert set(result["summary"]) == {"iid", "asb_zap"}
    monkeypatch.setattr(run, "run_one", lambda *a, **k: pytest.fail("a finished run was recomputed"))
    again = run.run_zapping(cfg, tmp_path, progress=False)
    assert again["rows"] == result["rows"]


def test_cli_zapping_smoke_and_bad_input(tmp_path, capsys):
    from mepo_lab.cli import main

    assert main(["zapping", "--preset", "smoke", "--out", str(tmp_path), "--no-progress",
                 "--set", "regimes=iid,iid_zap", "--set", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "| iid |" in out and "| iid_zap |" in out and "results.json" in out
    assert (tmp_path / "continual_transfer.png").exists()
    with pytest.raises(SystemExit) as err:
        main(["zapping", "--preset", "smoke", "--out", str(tmp_path), "--set", "asb_episodes=0"])
    assert err.value.code == 2
    assert "zero episodes" in capsys.readouterr().err


def test_head_reset_study_measures_every_mode_on_unseen_classes(monkeypatch):
    from mepo_lab.backbones.pretrain import random_backbone
    from mepo_lab.config import get_preset
    from mepo_lab.zapping import mepo_link

    preset, modes = get_preset("smoke"), []
    monkeypatch.setattr(mepo_link, "pretrained_backbone", lambda p, dh, progress: random_backbone(p, seed=0))

    def refined(p, dh, source, progress):  # stands in for a cached refinement with that head_reset
        modes.append(p.mepo.head_reset)
        return random_backbone(p, seed=len(modes))
    monkeypatch.setattr(mepo_link, "mepo_backbone", refined)
    cfg = override(zapping_preset("smoke"), {"seeds": (1, 2), "n_transfer_classes": 4})
    rows = mepo_link.head_reset_study(preset, cfg, progress=False)
    assert modes == ["none", "per_sequence", "per_task"]
    assert [(r["backbone"], r["head_reset"], r["seed"]) for r in rows[:3]] == [
        ("pretrained", "-", 1), ("pretrained", "-", 2), ("mepo", "none", 1)]
    assert len(rows) == 8 and all(len(r["continual"]["accuracy"]) == 4 for r in rows)
    assert rows[2]["final_accuracy"] != rows[4]["final_accuracy"] or rows[2]["early_loss"] != rows[4]["early_loss"]
    with pytest.raises(ValueError, match="overlap"):
        mepo_link.transfer_split(preset, override(cfg, {"n_transfer_classes": 300}))
