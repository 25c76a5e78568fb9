"""Notebook widgets built only from core ipywidgets (``>=7.7``, Colab-safe; no ipympl).

* :func:`stream_explorer` — sliders for N, M, tasks, seed and a stochastic toggle redraw the
  Si-Blurry raster, per-task histograms and shares (stream + statistics rebuild in milliseconds).
* :class:`LivePlot` — a GCL-runner callback that redraws anytime accuracy and per-class curves into
  an ``Output`` widget with ``clear_output(wait=True)`` as the run goes.
* :func:`live_run_panel` — a Run button that starts a feature-cached stream with the chosen knobs
  and feeds a :class:`LivePlot`.

Widget events are not processed while a cell runs, so a run is started by a button and is bounded
(feature-cached runs last seconds); there is no mid-run stop button.
"""
from __future__ import annotations

import time
from typing import Callable

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from mepo_lab.results import RunResult
from mepo_lab.stream_stats import stream_statistics
from mepo_lab.streams import si_blurry
from mepo_lab.viz.runs import plot_anytime, plot_class_curves
from mepo_lab.viz.streams import plot_stream_overview


def stream_sliders(n: int = 50, m: int = 10, n_tasks: int = 5, seed: int = 1, stochastic: bool = True) -> dict:
    """The Si-Blurry knobs as named core widgets (shared by the explorer and the run panel)."""
    style = {"description_width": "110px"}
    return {
        "n": W.IntSlider(n, 0, 100, 5, description="N (% disjoint)", style=style, continuous_update=False),
        "m": W.IntSlider(m, 0, 100, 5, description="M (% blurred)", style=style, continuous_update=False),
        "n_tasks": W.IntSlider(n_tasks, 1, 10, 1, description="tasks", style=style, continuous_update=False),
        "seed": W.IntSlider(seed, 1, 20, 1, description="stream seed", style=style, continuous_update=False),
        "stochastic": W.Checkbox(stochastic, description="stochastic (Si-Blurry)"),
    }


def _show_stream(labels: np.ndarray, n: int, m: int, n_tasks: int, seed: int, stochastic: bool) -> None:
    try:
        stream = si_blurry(labels, n_tasks=n_tasks, n=n, m=m, seed=seed, stochastic=stochastic)
    except ValueError as err:  # e.g. a fixed variant whose blurry classes do not split evenly
        print(f"cannot build this stream: {err}")
        return
    fig = plot_stream_overview(stream, stream_statistics(stream))
    plt.show()
    plt.close(fig)


def stream_explorer(labels: np.ndarray, **defaults) -> W.Widget:
    """Sliders + a live figure of the Si-Blurry stream built on ``labels`` (indices only)."""
    sliders = stream_sliders(**defaults)
    out = W.interactive_output(lambda **kw: _show_stream(np.asarray(labels), **kw), sliders)
    controls = W.VBox([W.HBox([sliders["n"], sliders["m"]]),
                       W.HBox([sliders["n_tasks"], sliders["seed"], sliders["stochastic"]])])
    return W.VBox([controls, out])


class LivePlot:
    """Runner callback: redraw anytime accuracy (left) and per-class curves (right) on each evaluation.

    ``every`` skips redraws (draw on every ``every``-th evaluation and at task ends) to keep long runs
    fast; ``out`` is the ``Output`` widget to draw into (a new one is displayed when omitted).
    """

    def __init__(self, out: W.Output | None = None, every: int = 1, classes: int = 8) -> None:
        self.out = out if out is not None else W.Output()
        self.every, self.classes, self.n_evals, self.last = every, classes, 0, 0.0
        if out is None:
            display(self.out)

    def _draw(self, res: RunResult, final: bool = False) -> None:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
        plot_anytime(res, ax=left)
        plot_class_curves(res, ax=right, classes=range(min(self.classes, len(res.exposed_classes))))
        status = f"{res.anytime_samples[-1] if res.anytime_samples else 0} samples, " \
                 f"{len(res.exposed_classes)} classes seen"
        if final:
            status += " — " + ", ".join(f"{k} {100 * v:.1f}" for k, v in res.metrics.items())
        fig.suptitle(f"{res.method} / {res.backbone}: {status}", fontsize=9)
        fig.tight_layout()
        with self.out:
            self.out.clear_output(wait=True)
            plt.show()
        plt.close(fig)

    def on_eval(self, res: RunResult) -> None:
        self.n_evals += 1
        if self.n_evals % self.every == 0:
            self._draw(res)

    def on_task_end(self, res: RunResult, task: int) -> None:
        if res.anytime_samples:
            self._draw(res)

    def on_run_end(self, res: RunResult) -> None:
        self._draw(res, final=True)


def live_run_panel(run: Callable[..., RunResult], **defaults) -> W.Widget:
    """Sliders + Run button; the button calls ``run(n=..., m=..., n_tasks=..., seed=..., stochastic=...,
    callbacks=[LivePlot])`` and the plot redraws as the stream is processed.

    ``run`` is typically a closure over cached features (see notebook 01), so one click is seconds.
    """
    sliders = stream_sliders(**defaults)
    button, status, out = W.Button(description="Run", button_style="primary", icon="play"), W.Label(), W.Output()

    def on_click(_=None) -> None:
        button.disabled = True
        start = time.perf_counter()
        try:
            res = run(**{k: w.value for k, w in sliders.items()}, callbacks=[LivePlot(out)])
            status.value = f"done in {time.perf_counter() - start:.1f} s: " + \
                ", ".join(f"{k} {100 * v:.1f}%" for k, v in res.metrics.items())
        except ValueError as err:
            status.value = f"cannot run: {err}"
        finally:
            button.disabled = False

    button.on_click(on_click)
    controls = W.VBox([W.HBox([sliders["n"], sliders["m"]]),
                       W.HBox([sliders["n_tasks"], sliders["seed"], sliders["stochastic"]]),
                       W.HBox([button, status])])
    panel = W.VBox([controls, out])
    panel.run = on_click  # lets a notebook cell (or a test) press the button programmatically
    return panel
