"""The zapping panel (mepo_lab.widgets.zapping) driven from code at the smoke preset."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def smoke():
    from mepo_lab.zapping.config import zapping_preset
    from mepo_lab.zapping.run import build_split

    cfg = zapping_preset("smoke")
    return cfg, build_split(cfg)


def fake_row(split, cfg, regime, seed):
    k = split.transfer.n_classes
    return {"regime": regime, "seed": seed, "final_accuracy": 0.5, "iid_transfer_accuracy": 0.6, "early_loss": 1.5,
            "continual": {"lr": cfg.eval_lrs[0], "classes_learned": list(range(1, k + 1)), "accuracy": [0.5] * k},
            "adaptation_loss": [2.0, 1.5, 1.0], "seconds": {"pretrain": 0.1}}


def test_the_chosen_knobs_reach_run_one_and_runs_stay_in_the_history(smoke, monkeypatch):
    import mepo_lab.zapping.run as zapping_run
    from mepo_lab.widgets import zapping_panel

    cfg, split = smoke
    calls = []

    def run_one(split_, cfg_, regime, seed):
        calls.append((split_, cfg_.zap_every, cfg_.eval_lrs, regime, seed))
        return fake_row(split_, cfg_, regime, seed)

    monkeypatch.setattr(zapping_run, "run_one", run_one)
    panel = zapping_panel(cfg, split, lrs=(1e-2, 1e-3), history=2)
    assert panel.knobs["zap_every"].disabled  # asb_zap: the zap frequency is an i.i.d. knob
    panel.knobs["regime"].value, panel.knobs["zap_every"].value = "iid_zap", 2
    panel.knobs["lr"].value, panel.knobs["seed"].value = 1e-3, 3
    assert not panel.knobs["zap_every"].disabled
    panel.run()
    panel.knobs["regime"].value = "meta"
    panel.run()
    panel.run()
    assert panel.error is None, panel.error
    assert calls[0] == (split, 2, (1e-3,), "iid_zap", 3) and [c[3] for c in calls] == ["iid_zap", "meta", "meta"]
    assert len(panel.history) == 2 and panel.last["regime"] == "meta"
    assert panel.status.value.startswith("done in") and "final continual acc 50.0%" in panel.status.value
    panel.clear()
    assert len(panel.history) == 0


def test_a_real_smoke_run(smoke):
    from mepo_lab.widgets import zapping_panel

    cfg, split = smoke
    panel = zapping_panel(cfg, split)
    panel.knobs["regime"].value = "iid_zap"
    panel.run()
    assert panel.error is None, panel.error
    row = panel.last
    assert row["regime"] == "iid_zap" and row["continual"]["lr"] == cfg.eval_lrs[0]
    assert len(row["continual"]["accuracy"]) == split.transfer.n_classes and 0 <= row["final_accuracy"] <= 1
