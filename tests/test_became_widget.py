"""The BECAME panel (mepo_lab.widgets.became) driven from code at the smoke preset."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def smoke():
    from mepo_lab.became.config import became_preset
    from mepo_lab.became.run import build_tasks

    cfg = became_preset("smoke")
    return cfg, build_tasks(cfg)


def fake_row(tasks, method, seed):
    n = len(tasks)
    matrix = [[0.8] * (t + 1) + [None] * (n - t - 1) for t in range(n)]
    return {"method": method, "seed": seed, "ACC": 0.8, "BWT": -0.05, "matrix": matrix,
            "alpha": [None] + [0.5] * (n - 1), "memory": None, "seconds": 0.1}


def test_the_chosen_knobs_reach_run_one_and_runs_stay_in_the_history(smoke, monkeypatch):
    import mepo_lab.became.run as became_run
    from mepo_lab.widgets import became_panel

    cfg, tasks = smoke
    calls = []

    def run_one(tasks_, cfg_, method, seed):
        calls.append((tasks_, cfg_.eps0, method, seed))
        return fake_row(tasks_, method, seed)

    monkeypatch.setattr(became_run, "run_one", run_one)
    panel = became_panel(cfg, tasks, history=2)
    panel.knobs["method"].value, panel.knobs["eps0"].value, panel.knobs["seed"].value = "avg", 0.95, 3
    panel.run()
    panel.knobs["method"].value = "seqft"
    panel.run()
    panel.run()
    assert panel.error is None, panel.error
    assert calls[0] == (tasks, 0.95, "avg", 3) and [c[2] for c in calls] == ["avg", "seqft", "seqft"]
    assert len(panel.history) == 2 and panel.last["method"] == "seqft"
    assert panel.status.value.startswith("done in") and "ACC 80.0%" in panel.status.value
    assert "BWT -5.0%" in panel.status.value
    panel.clear()
    assert len(panel.history) == 0


def test_a_threshold_schedule_that_reaches_one_is_shown_as_an_error(smoke):
    from mepo_lab.widgets import became_panel

    cfg, tasks = smoke
    panel = became_panel(cfg, tasks)
    panel.knobs["eps0"].value = 0.995  # 0.995 + 2 * 0.003 >= 1 at the smoke preset's 3 tasks
    panel.run()
    assert panel.error is not None and "eps_inc" in panel.error and panel.last is None


def test_a_real_smoke_run(smoke):
    from mepo_lab.widgets import became_panel

    cfg, tasks = smoke
    panel = became_panel(cfg, tasks)
    panel.knobs["method"].value = "became"
    panel.run()
    assert panel.error is None, panel.error
    row = panel.last
    assert row["method"] == "became" and len(row["matrix"]) == len(tasks) and 0 <= row["ACC"] <= 1
    assert row["alpha"][0] is None and all(0 <= a <= 1 for a in row["alpha"][1:])
    assert "ACC" in panel.status.value and "BWT" in panel.status.value
