"""The PURER panel (mepo_lab.widgets.purer) driven from code at the smoke preset."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def smoke():
    from mepo_lab.purer.config import purer_preset
    from mepo_lab.purer.run import build_data, build_teachers

    cfg = purer_preset("smoke")
    train, test = build_data(cfg)
    return cfg, build_teachers(cfg, train, torch.device("cpu")), test


def test_the_knobs_reach_the_run_and_a_real_smoke_run_reports(smoke, monkeypatch):
    from mepo_lab.purer import run
    from mepo_lab.widgets import purer_panel

    cfg, teachers, test = smoke
    seen = []
    real = run.meta_rows

    def spy(setting, *args):
        seen.append((setting.adv_scale, setting.bn, setting.meta_learner, setting.first_order, args[2], args[3]))
        return real(setting, *args)

    monkeypatch.setattr(run, "meta_rows", spy)
    panel = purer_panel(cfg, teachers, test)
    panel.knobs["adv_scale"].value, panel.knobs["bn"].value = 0.0, 0.0
    panel.knobs["meta_learner"].value, panel.knobs["first_order"].value = "anil", True
    panel.run()
    assert panel.error is None, panel.error
    assert seen == [(0.0, 0.0, "anil", True, cfg.seeds[0], cfg.shots[0])]
    assert [r["method"] for r in panel.last] == ["teacher_average", "ei", "eci"]
    assert "EI" in panel.status.value and "switch fired" in panel.status.value


def test_an_error_is_shown_not_raised(smoke, monkeypatch):
    from mepo_lab.purer import run
    from mepo_lab.widgets import purer_panel

    monkeypatch.setattr(run, "meta_rows", lambda *a: (_ for _ in ()).throw(ValueError("K + Q = 30 is larger")))
    panel = purer_panel(*smoke)
    panel.run()
    assert "K + Q = 30" in panel.error and panel.status.value.startswith("error: ValueError")
