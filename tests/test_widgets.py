"""The widgets driven from code: knob values changed, buttons pressed, what they show checked."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_viz_widgets import fake_run


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_keeps_drawing_under_its_share_of_the_run_time():
    from mepo_lab.widgets import Throttle

    clock = FakeClock()
    throttle = Throttle(max_overhead=0.2, clock=clock)
    drawn = 0
    for step in range(100):  # a run of 100 evaluations, 0.1 s apart; every draw costs 0.5 s
        clock.now += 0.1
        if throttle.ready():
            throttle.record(0.5)
            clock.now += 0.5
            drawn += 1
    run_time = 100 * 0.1
    assert 0 < drawn < 100 and throttle.drawn <= 0.2 * (run_time + throttle.drawn) + 0.5
    assert throttle.skipped == 100 - drawn
    with pytest.raises(ValueError, match="max_overhead must be positive"):
        Throttle(0)


def test_live_plot_throttles_redraws_and_always_draws_the_end(monkeypatch):
    import mepo_lab.widgets.live as live

    def show_takes_half_a_second(fig, out, dpi=72):
        live.plt.close(fig)
        return 0.5

    clock = FakeClock()
    monkeypatch.setattr(live, "show_figure", show_takes_half_a_second)
    plot = live.LivePlot(out=live.W.Output(), clock=clock)
    res = fake_run()
    plot.on_run_start(res)
    for _ in range(50):
        clock.now += 0.1
        plot.on_eval(res)
    plot.on_run_end(res)
    assert plot.n_evals == 50 and 1 < plot.n_draws < 12  # ~0.2 · 5 s / 0.5 s intermediate draws + the final one


def test_run_panel_passes_knob_values_keeps_a_history_and_clears_it():
    import ipywidgets as W

    from mepo_lab.widgets import run_panel

    calls = []

    def run(seed, alignment, callbacks):
        calls.append((seed, alignment))
        res = fake_run(seed=seed)
        for cb in callbacks:
            cb.on_run_start(res)
            cb.on_eval(res)
            cb.on_run_end(res)
        return res

    knobs = {"seed": W.IntSlider(value=1, min=1, max=5), "alignment": W.Dropdown(options=["none", "corrected"])}
    panel = run_panel(run, knobs, history=2)
    panel.run()
    knobs["seed"].value, knobs["alignment"].value = 3, "corrected"
    panel.run()
    panel.run()
    assert calls == [(1, "none"), (3, "corrected"), (3, "corrected")]
    assert [label for label, _ in panel.history.runs] == ["seed=3, alignment=corrected"] * 2  # the last k = 2
    assert panel.last.seed == 3 and "A_auc 73.0%" in panel.status.value and panel.error is None
    panel.clear()
    assert len(panel.history) == 0


@pytest.mark.parametrize("error", [ValueError("bad N"), RuntimeError("CUDA exploded"), KeyError("features")])
def test_panels_show_every_exception(error):
    import ipywidgets as W

    from mepo_lab.widgets import run_panel

    def run(seed, callbacks):
        raise error

    panel = run_panel(run, {"seed": W.IntSlider(value=1)})
    panel.run()
    assert panel.status.value.startswith(f"error: {type(error).__name__}")
    assert type(error).__name__ in panel.error and "raise error" in panel.error


def test_pseudo_task_explorer_follows_the_preset_and_its_sliders(capsys):
    from mepo_lab.config import PRESETS
    from mepo_lab.widgets import describe_sampler, pseudo_task_explorer

    cfg = PRESETS["cpu"]().mepo  # the sizes students run: groups of 40 of 284 classes, batch 48, 4 inner epochs
    labels = np.repeat(np.arange(284), cfg.samples_per_class)
    box = pseudo_task_explorer(labels, cfg)
    first = capsys.readouterr().out
    assert "7 Reptile updates per meta-epoch, 100 SGD steps each (batch 48, 4 epochs" in first
    assert "4 classes sit out each meta-epoch" in first
    assert {k: s.value for k, s in box.sliders.items()} == {"group_size": 40, "tasks_per_group": 20,
                                                            "samples_per_class": 24}
    box.sliders["group_size"].value = 60  # 3 classes per pseudo task: 72 images, 2 batches x 4 epochs x 20 + 30
    assert "4 Reptile updates per meta-epoch, 190 SGD steps each" in capsys.readouterr().out
    box.sliders["tasks_per_group"].value = 7  # 60 is not a multiple of 7
    assert "not a valid setting" in capsys.readouterr().out
    assert describe_sampler(labels, cfg).startswith("7 Reptile updates")


def test_refine_panel_toggles_zapping_and_replays_a_cached_refinement(smoke_preset, smoke_home):
    from dataclasses import replace

    from mepo_lab.mepo.pipeline import mepo_backbone
    from mepo_lab.widgets import LiveRefinePlot, refine_panel

    panel = refine_panel(smoke_preset, data_home=smoke_home)
    panel.knobs["head_reset"].value = "per_sequence"
    panel.run()
    assert panel.error is None, panel.error
    zapped = panel.last
    assert zapped.info["config"]["head_reset"] == "per_sequence" and "head_reset=per_sequence" in panel.status.value
    replay = LiveRefinePlot(out=None)
    cfg = replace(smoke_preset, mepo=replace(smoke_preset.mepo, head_reset="per_sequence"))
    again = mepo_backbone(cfg, smoke_home, meta_epoch=1, callbacks=[replay], progress=False)  # cached now
    assert again.weights_hash == zapped.weights_hash
    assert replay.note.startswith("loaded from cache: 1 meta-epochs") and replay.n_draws == 1
    assert replay.log == zapped.info["log"] and len(replay.log) > 0
    panel.knobs["head_reset"].value = "none"
    panel.run()
    assert panel.last.weights_hash != zapped.weights_hash


def test_stream_explorer_rebuilds_on_slider_moves_and_explains_impossible_streams(capsys, monkeypatch):
    import mepo_lab.widgets.explorers as explorers

    built = []
    real = explorers.si_blurry
    monkeypatch.setattr(explorers, "si_blurry", lambda *a, **k: built.append(k) or real(*a, **k))
    box = explorers.stream_explorer(np.repeat(np.arange(10), 20))
    box.sliders["m"].value = 40
    assert built[-1] == {"n_tasks": 5, "n": 50, "m": 40, "seed": 1, "stochastic": True}
    box.sliders["stochastic"].value, box.sliders["n_tasks"].value = False, 3  # 10 classes do not split in 3
    assert "cannot build this stream" in capsys.readouterr().out
