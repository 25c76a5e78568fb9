"""Panels: knobs + a Run button around a run function, with live plots, a history of runs and visible errors.

* :func:`run_panel` / :func:`live_run_panel` — any knobs (or the Si-Blurry ones) and a Run button that
  calls ``run(**knobs, callbacks=[LivePlot])``; the last ``history`` runs stay on the plot as grey
  curves until "Clear history" is pressed.
* :func:`ablation_explorer` — M, N, tasks, α, backbone and alignment; every press runs all seeds and draws
  mean ± std bands.
* :func:`refine_panel` — MePo's refinement of the micro ViT with a zapping toggle (head reset none / per
  sequence / per task) and a meta-epoch slider, live curves, cached refinements replayed.

Widget events are not processed while a cell runs, so a run is started by a button and is bounded; there
is no stop button. Every panel has a ``run()`` method that presses its button from code (top-to-bottom
execution, tests). Any exception raised by a run is shown in the panel (the status line names it, the
output shows the traceback's last lines) instead of disappearing into the browser's log console.
"""
from __future__ import annotations

import time
import traceback
from typing import Callable, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from mepo_lab.mepo.alignment import ALIGNMENTS
from mepo_lab.protocols.results import RunResult
from mepo_lab.viz.runs import plot_anytime
from mepo_lab.widgets.live import LivePlot, LiveRefinePlot, RunHistory, show_figure

STYLE = {"description_width": "110px"}


def stream_sliders(n: int = 50, m: int = 10, n_tasks: int = 5, seed: int = 1, stochastic: bool = True) -> dict:
    """The Si-Blurry knobs as named core widgets (shared by the explorer and the run panel)."""
    def slider(value, lo, hi, step, text):
        return W.IntSlider(value=value, min=lo, max=hi, step=step, description=text, style=STYLE,
                           continuous_update=False)
    return {"n": slider(n, 0, 100, 5, "N (% disjoint)"), "m": slider(m, 0, 100, 5, "M (% blurred)"),
            "n_tasks": slider(n_tasks, 1, 10, 1, "tasks"), "seed": slider(seed, 1, 20, 1, "stream seed"),
            "stochastic": W.Checkbox(value=stochastic, description="stochastic (Si-Blurry)")}


def show_error(err: BaseException, status: W.Label, out: W.Output) -> str:
    """Name the error on the status line and print the end of its traceback into ``out``; returns that text."""
    status.value = f"error: {type(err).__name__}: {err}"
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=-4))
    with out:
        out.clear_output(wait=True)
        print(text)
    return text


def _button_panel(rows: list[W.Widget], press: Callable[[], str], out: W.Output,
                  extra_buttons: Sequence[W.Button] = ()) -> W.VBox:
    """A Run button under ``rows``; ``press()`` returns the status text; errors are shown, never swallowed."""
    button, status = W.Button(description="Run", button_style="primary", icon="play"), W.Label()

    def on_click(_=None) -> None:
        button.disabled, start = True, time.perf_counter()
        status.value = "running…"
        panel.error = None
        try:
            text = press()
            status.value = f"done in {time.perf_counter() - start:.1f} s: {text}"
        except Exception as err:  # noqa: BLE001  (shown to the student, whatever it is)
            panel.error = show_error(err, status, out)
        finally:
            button.disabled = False

    button.on_click(on_click)
    panel = W.VBox([*rows, W.HBox([button, *extra_buttons, status]), out])
    panel.run, panel.status, panel.out, panel.error = on_click, status, out, None
    return panel


def _metrics(res: RunResult) -> str:
    return ", ".join(f"{k} {100 * v:.1f}%" for k, v in res.metrics.items())


def run_panel(run: Callable[..., RunResult], sliders: dict[str, W.Widget], history: int = 5) -> W.Widget:
    """Any knobs + a Run button: the button calls ``run(**{name: value}, callbacks=[LivePlot])``.

    ``run`` is typically :func:`mepo_lab.experiment.feature_runner` (a feature-cached run, seconds). The last
    ``history`` runs are overlaid in grey, labelled with their knob values; "Clear history" forgets them.
    The returned box has ``run()`` (press Run), ``knobs`` (the widgets, to set from code), ``history``,
    ``last`` (the latest RunResult) and ``error`` (the last error's traceback, or ``None``).
    """
    out, past = W.Output(), RunHistory(history)
    clear = W.Button(description="Clear history", icon="trash")

    def press() -> str:
        res = run(**{k: w.value for k, w in sliders.items()}, callbacks=[LivePlot(out, history=past)])
        past.add(res, ", ".join(f"{k}={w.value}" for k, w in sliders.items()))
        panel.last = res
        return _metrics(res)

    rows = [W.HBox(list(sliders.values())[i:i + 3]) for i in range(0, len(sliders), 3)]
    panel = _button_panel(rows, press, out, [clear])
    clear.on_click(lambda _=None: past.clear())
    panel.history, panel.last, panel.clear, panel.knobs = past, None, lambda: past.clear(), sliders
    return panel


def live_run_panel(run: Callable[..., RunResult], history: int = 5, **defaults) -> W.Widget:
    """The Si-Blurry knobs (N, M, tasks, seed, stochastic) + Run button; see :func:`run_panel`."""
    return run_panel(run, stream_sliders(**defaults), history=history)


def ablation_explorer(run: Callable[..., RunResult], backbones: Sequence[str], seeds: Sequence[int] = (1, 2, 3),
                      alpha: float = 0.5) -> W.Widget:
    """Sliders for M, N, tasks and α, backbone and alignment toggles, a Run button; every run is repeated for
    ``seeds`` and drawn as mean ± std bands (``run(n=, m=, n_tasks=, stochastic=, alpha=, backbone=, alignment=,
    seed=)``, e.g. :func:`mepo_lab.experiment.feature_runner`, whose ``run.many`` runs all seeds as one batched
    program)."""
    knobs = stream_sliders()
    knobs.pop("seed")
    knobs["alpha"] = W.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="α (alignment)",
                                   style=STYLE, continuous_update=False)
    knobs["backbone"] = W.ToggleButtons(options=list(backbones), description="backbone", style=STYLE)
    knobs["alignment"] = W.ToggleButtons(options=list(ALIGNMENTS), description="alignment", style=STYLE)
    out = W.Output()

    def press() -> str:
        values = {k: w.value for k, w in knobs.items()}
        many = getattr(run, "many", None)  # a feature_runner runs the seeds as one batched program
        runs = many([{**values, "seed": s} for s in seeds]) if many else [run(**values, seed=s) for s in seeds]
        fig, ax = plt.subplots(figsize=(8, 3.4))
        plot_anytime(runs, ax=ax, boundaries=False)
        show_figure(fig, out)
        panel.last = runs
        means = {k: np.mean([r.metrics[k] for r in runs]) for k in runs[0].metrics}
        return f"{len(runs)} seeds: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in means.items())

    rows = [W.HBox([knobs["n"], knobs["m"]]), W.HBox([knobs["n_tasks"], knobs["stochastic"], knobs["alpha"]]),
            knobs["backbone"], knobs["alignment"]]
    panel = _button_panel(rows, press, out)
    panel.knobs, panel.last = knobs, None
    return panel


def refine_panel(preset, source=None, data_home=None, max_meta_epochs: int | None = None) -> W.Widget:
    """MePo's refinement of the micro ViT with a zapping toggle: ``head_reset`` none / per_sequence / per_task.

    Run refines ``source`` (default: the preset's pretrained micro ViT) for the chosen meta-epochs with
    :func:`mepo_lab.mepo.pipeline.mepo_backbone` (cached per setting: a second press with the same knobs
    replays the stored curves) and draws the inner loop live. The box's ``last`` is the refined Backbone.
    """
    from dataclasses import replace

    from mepo_lab.mepo.pipeline import mepo_backbone
    from mepo_lab.mepo.switches import HEAD_RESETS

    top = max_meta_epochs or preset.mepo.meta_epochs
    knobs = {"head_reset": W.ToggleButtons(options=list(HEAD_RESETS), value=preset.mepo.head_reset,
                                           description="head reset (zapping)", style=STYLE),
             "meta_epochs": W.IntSlider(value=min(1, top), min=1, max=top, description="meta-epochs", style=STYLE,
                                        continuous_update=False)}
    out = W.Output()

    def press() -> str:
        cfg = replace(preset, mepo=replace(preset.mepo, head_reset=knobs["head_reset"].value))
        live = LiveRefinePlot(out, group_size=preset.mepo.group_size)
        refined = mepo_backbone(cfg, data_home, source=source, meta_epoch=knobs["meta_epochs"].value,
                                callbacks=[live], progress=False)
        panel.last = refined
        last = refined.info["log"][-1]
        return (f"head_reset={knobs['head_reset'].value}: {refined.info['meta_epoch']} meta-epochs, last group: "
                f"sequential acc {100 * last['seq_acc']:.1f}%, joint acc {100 * last['joint_acc']:.1f}%")

    panel = _button_panel([knobs["head_reset"], knobs["meta_epochs"]], press, out)
    panel.knobs, panel.last = knobs, None
    return panel

