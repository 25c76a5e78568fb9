"""The H-embedding panel (mepo_lab.widgets.hembed) driven from code at the smoke preset."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def smoke(smoke_home):
    from mepo_lab.hembed.config import hembed_preset
    from mepo_lab.hembed.run import build_backbone, build_tasks

    cfg = hembed_preset("smoke")
    return cfg, build_tasks(cfg)[0], build_backbone(cfg, smoke_home)


def test_the_chosen_knobs_reach_run_one_and_runs_stay_in_the_history(smoke, monkeypatch):
    import mepo_lab.hembed.run as hembed_run
    from mepo_lab.widgets import hembed_panel

    cfg, tasks, backbone = smoke
    calls = []

    def run_one(tasks_, backbone_, cfg_, method, seed):
        calls.append((cfg_.emb_beta, cfg_.emb_mode, method, seed))
        n = len(tasks_)
        return {"method": method, "seed": seed, "ACC": 0.7, "BWT": -0.01, "seconds": 0.1,
                "matrix": [[0.7] * (t + 1) + [None] * (n - t - 1) for t in range(n)],
                "scores": [None, None] + [[0.5] * t for t in range(2, n)]}

    monkeypatch.setattr(hembed_run, "run_one", run_one)
    panel = hembed_panel(cfg, tasks, backbone, history=2)
    panel.knobs["emb_beta"].value, panel.knobs["emb_mode"].value, panel.knobs["seed"].value = 0.5, "reciprocal", 4
    panel.run()
    panel.knobs["method"].value = "hnet"
    panel.run()
    panel.run()
    assert panel.error is None, panel.error
    assert calls[0] == (0.5, "reciprocal", "hnet_hembedding", 4) and [c[2] for c in calls][1:] == ["hnet", "hnet"]
    assert len(panel.history) == 2 and panel.last["method"] == "hnet"
    assert "ACC 70.0%" in panel.status.value and "last H-scores 0.50" in panel.status.value
    panel.clear()
    assert len(panel.history) == 0


def test_a_real_smoke_run(smoke):
    from mepo_lab.widgets import hembed_panel

    cfg, tasks, backbone = smoke
    panel = hembed_panel(cfg, tasks, backbone)
    panel.run()
    assert panel.error is None, panel.error
    row = panel.last
    assert row["method"] == "hnet_hembedding" and len(row["matrix"]) == len(tasks) and 0 <= row["ACC"] <= 1
    assert row["scores"][2] is not None and "BWT" in panel.status.value
