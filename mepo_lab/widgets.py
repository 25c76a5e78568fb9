"""Notebook widgets built only from core ipywidgets (``>=7.7``, Colab-safe; no ipympl).

* :func:`stream_explorer` — sliders for N, M, tasks, seed and a stochastic toggle redraw the
  Si-Blurry raster, per-task histograms and shares (stream + statistics rebuild in milliseconds).
* :class:`LivePlot` — a GCL-runner callback that redraws anytime accuracy and per-class curves into
  an ``Output`` widget with ``clear_output(wait=True)`` as the run goes.
* :func:`run_panel` / :func:`live_run_panel` — a Run button that starts a feature-cached stream with
  the chosen knobs and feeds a :class:`LivePlot`.
* :func:`pseudo_task_explorer` — MePo's pseudo-task knobs redraw the meta-epoch timeline.
* :class:`LiveRefinePlot` — a refinement callback redrawing the inner-loop curves.
* :func:`ablation_explorer` — M, N, tasks, α, backbone and alignment on a feature-cached stream,
  repeated over seeds and drawn with seed bands.

Widget events are not processed while a cell runs, so a run is started by a button and is bounded
(feature-cached runs last seconds); there is no mid-run stop button.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from mepo_lab.mepo.alignment import ALIGNMENTS
from mepo_lab.protocols.results import RunResult
from mepo_lab.protocols.stream_stats import stream_statistics
from mepo_lab.protocols.streams import si_blurry
from mepo_lab.viz.runs import plot_anytime, plot_class_curves
from mepo_lab.viz.streams import plot_stream_overview


def stream_sliders(n: int = 50, m: int = 10, n_tasks: int = 5, seed: int = 1, stochastic: bool = True) -> dict:
    """The Si-Blurry knobs as named core widgets (shared by the explorer and the run panel)."""
    style = {"description_width": "110px"}
    return {
        "n": W.IntSlider(value=n, min=0, max=100, step=5, description="N (% disjoint)", style=style, continuous_update=False),
        "m": W.IntSlider(value=m, min=0, max=100, step=5, description="M (% blurred)", style=style, continuous_update=False),
        "n_tasks": W.IntSlider(value=n_tasks, min=1, max=10, step=1, description="tasks", style=style, continuous_update=False),
        "seed": W.IntSlider(value=seed, min=1, max=20, step=1, description="stream seed", style=style, continuous_update=False),
        "stochastic": W.Checkbox(value=stochastic, description="stochastic (Si-Blurry)"),
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


def run_panel(run: Callable[..., RunResult], sliders: dict[str, W.Widget]) -> W.Widget:
    """Any knobs + a Run button: the button calls ``run(**{name: value}, callbacks=[LivePlot])``.

    ``run`` is typically a closure over cached features, so one click is seconds. The returned box has
    a ``run()`` method that presses the button from code (for top-to-bottom execution and tests).
    """
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
    rows = [W.HBox(list(sliders.values())[i:i + 3]) for i in range(0, len(sliders), 3)]
    panel = W.VBox([*rows, W.HBox([button, status]), out])
    panel.run = on_click
    return panel


def live_run_panel(run: Callable[..., RunResult], **defaults) -> W.Widget:
    """The Si-Blurry knobs (N, M, tasks, seed, stochastic) + Run button; see :func:`run_panel`."""
    return run_panel(run, stream_sliders(**defaults))


def pseudo_task_explorer(labels: np.ndarray, group_size: int = 40, tasks_per_group: int = 20,
                         samples_per_class: int = 24, max_groups: int = 4) -> W.Widget:
    """Sliders for MePo's group size, pseudo tasks per group and images per class → the timeline."""
    from mepo_lab.config import MePoConfig
    from mepo_lab.mepo.pseudo_tasks import PseudoTaskSampler
    from mepo_lab.viz.mepo import plot_pseudo_timeline

    n_classes = int(np.max(labels)) + 1
    style = {"description_width": "130px"}
    sliders = {
        "group_size": W.IntSlider(value=group_size, min=2, max=n_classes, step=2, description="classes per group", style=style,
                                  continuous_update=False),
        "tasks_per_group": W.IntSlider(value=tasks_per_group, min=1, max=50, step=1, description="pseudo tasks / group",
                                       style=style, continuous_update=False),
        "samples_per_class": W.IntSlider(value=samples_per_class, min=1, max=200, step=1, description="images per class",
                                         style=style, continuous_update=False),
    }

    def show(group_size: int, tasks_per_group: int, samples_per_class: int) -> None:
        try:
            cfg = MePoConfig(group_size=group_size, tasks_per_group=tasks_per_group,
                             samples_per_class=samples_per_class, batch_size=48)
            sampler = PseudoTaskSampler(labels, cfg)
        except ValueError as err:
            print(f"not a valid setting: {err}")
            return
        print(f"{sampler.n_groups} Reptile updates per meta-epoch, {sampler.steps_per_group()} SGD steps each")
        fig = plot_pseudo_timeline(sampler, max_groups=max_groups)
        plt.show()
        plt.close(fig)

    return W.VBox([W.HBox(list(sliders.values())), W.interactive_output(show, sliders)])


class LiveRefinePlot:
    """Refinement callback: redraw the inner-loop curves after every ``every`` meta-iterations."""

    def __init__(self, out: W.Output | None = None, every: int = 1) -> None:
        self.out, self.every, self.log = out if out is not None else W.Output(), every, []
        if out is None:
            display(self.out)

    def on_group_end(self, entry: dict) -> None:
        from mepo_lab.viz.mepo import plot_refinement

        self.log.append(entry)
        if len(self.log) % self.every:
            return
        fig = plot_refinement(self.log)
        with self.out:
            self.out.clear_output(wait=True)
            plt.show()
        plt.close(fig)


def ablation_explorer(run: Callable[..., RunResult], backbones: Sequence[str], seeds: Sequence[int] = (1, 2, 3),
                      alpha: float = 0.5) -> W.Widget:
    """Sliders for M, N, tasks and α, backbone and alignment toggles, a Run button; every run is repeated
    for ``seeds`` and drawn as mean ± std bands (``run(n, m, n_tasks, alpha, backbone, alignment, seed)``)."""
    style = {"description_width": "110px"}
    knobs = stream_sliders()
    knobs.pop("seed")
    knobs["alpha"] = W.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="α (alignment)", style=style,
                                   continuous_update=False)
    knobs["backbone"] = W.ToggleButtons(options=list(backbones), description="backbone", style=style)
    knobs["alignment"] = W.ToggleButtons(options=list(ALIGNMENTS), description="alignment",
                                         style=style)
    button, status, out = W.Button(description="Run", button_style="primary", icon="play"), W.Label(), W.Output()

    def on_click(_=None) -> None:
        button.disabled, start = True, time.perf_counter()
        try:
            values = {k: w.value for k, w in knobs.items()}
            runs = [run(**values, seed=s) for s in seeds]
            fig, ax = plt.subplots(figsize=(8, 3.4))
            plot_anytime(runs, ax=ax, boundaries=False)
            with out:
                out.clear_output(wait=True)
                plt.show()
            plt.close(fig)
            means = {k: np.mean([r.metrics[k] for r in runs]) for k in runs[0].metrics}
            status.value = f"{len(runs)} seeds in {time.perf_counter() - start:.1f} s: " + \
                ", ".join(f"{k} {100 * v:.1f}%" for k, v in means.items())
        except ValueError as err:
            status.value = f"cannot run: {err}"
        finally:
            button.disabled = False

    button.on_click(on_click)
    rows = [W.HBox([knobs["n"], knobs["m"]]), W.HBox([knobs["n_tasks"], knobs["stochastic"], knobs["alpha"]]),
            knobs["backbone"], knobs["alignment"], W.HBox([button, status])]
    panel = W.VBox([*rows, out])
    panel.run = on_click
    return panel
