"""What every seed method's Run panel shares: an exception in the run is shown in the panel, never raised."""
from __future__ import annotations

import importlib

import pytest


def _became():
    from mepo_lab.became.config import became_preset
    from mepo_lab.became.run import build_tasks

    cfg = became_preset("smoke")
    return cfg, build_tasks(cfg)


def _zapping():
    from mepo_lab.zapping.config import zapping_preset
    from mepo_lab.zapping.run import build_split

    cfg = zapping_preset("smoke")
    return cfg, build_split(cfg)


def _hembed():
    from mepo_lab.hembed.config import hembed_preset
    from mepo_lab.hembed.run import build_tasks

    cfg = hembed_preset("smoke")
    return cfg, build_tasks(cfg)[0], None  # the backbone is never used: run_one is replaced


@pytest.mark.parametrize("panel_name, run_module, inputs, message", [
    ("hembed_panel", "mepo_lab.hembed.run", _hembed, "H-score needs at least 2 classes"),
    ("became_panel", "mepo_lab.became.run", _became, "the model has no parameter with requires_grad=True"),
    ("zapping_panel", "mepo_lab.zapping.run", _zapping, "shots must be in [1, 5], got 9"),
])
def test_an_error_in_the_run_is_shown_not_raised(panel_name, run_module, inputs, message, monkeypatch):
    from mepo_lab import widgets

    def broken(*args):
        raise ValueError(message)

    monkeypatch.setattr(importlib.import_module(run_module), "run_one", broken)
    panel = getattr(widgets, panel_name)(*inputs())
    panel.run()
    assert message in panel.error and panel.status.value.startswith("error: ValueError")
