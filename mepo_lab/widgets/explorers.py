"""Explorers: sliders that redraw a structure instantly (index arrays only, nothing is trained).

* :func:`stream_explorer` — N, M, tasks, seed and the stochastic toggle redraw the Si-Blurry raster, the
  per-task composition and shares (stream and statistics rebuild in milliseconds).
* :func:`pseudo_task_explorer` — MePo's group size, pseudo tasks per group and images per class redraw the
  meta-epoch timeline; batch size and inner epochs come from the preset's MePo configuration, so the step
  counts shown are those the refinement will take.
"""
from __future__ import annotations

from dataclasses import replace

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from mepo_lab.config import MePoConfig
from mepo_lab.protocols.stream_stats import stream_statistics
from mepo_lab.protocols.streams import si_blurry
from mepo_lab.viz.streams import plot_stream_overview
from mepo_lab.widgets.panels import STYLE, stream_sliders


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
    box = W.VBox([controls, out])
    box.sliders = sliders
    return box


def describe_sampler(labels: np.ndarray, cfg: MePoConfig) -> str:
    """One line: Reptile updates per meta-epoch, SGD steps per update, and the classes that sit out."""
    from mepo_lab.mepo.pseudo_tasks import PseudoTaskSampler

    sampler = PseudoTaskSampler(labels, cfg)
    resting = sampler.resting_classes(0)
    rest = f"; {len(resting)} classes sit out each meta-epoch (a different draw every epoch)" if len(resting) else ""
    return (f"{sampler.n_groups} Reptile updates per meta-epoch, {sampler.steps_per_group()} SGD steps each "
            f"(batch {cfg.batch_size}, {cfg.inner_epochs} epochs per pseudo task){rest}")


def pseudo_task_explorer(labels: np.ndarray, cfg: MePoConfig | None = None, max_groups: int = 4,
                         **initial: int) -> W.Widget:
    """Sliders for group size, pseudo tasks per group and images per class → the meta-epoch timeline.

    ``cfg`` (e.g. ``preset.mepo``) supplies every other setting, batch size and inner epochs included;
    ``initial`` overrides the sliders' starting values (``group_size=``, ``tasks_per_group=``,
    ``samples_per_class=``).
    """
    from mepo_lab.mepo.pseudo_tasks import PseudoTaskSampler
    from mepo_lab.viz.mepo import plot_pseudo_timeline

    cfg = replace(cfg or MePoConfig(), **initial)
    n_classes = int(np.max(labels)) + 1

    def slider(name, lo, hi, text):
        return W.IntSlider(value=getattr(cfg, name), min=lo, max=max(hi, getattr(cfg, name)), step=1,
                           description=text, style={"description_width": "130px"}, continuous_update=False)
    sliders = {"group_size": slider("group_size", 2, n_classes, "classes per group"),
               "tasks_per_group": slider("tasks_per_group", 1, 50, "pseudo tasks / group"),
               "samples_per_class": slider("samples_per_class", 1, 200, "images per class")}

    def show(group_size: int, tasks_per_group: int, samples_per_class: int) -> None:
        chosen = replace(cfg, group_size=group_size, tasks_per_group=tasks_per_group,
                         samples_per_class=samples_per_class)
        try:
            print(describe_sampler(labels, chosen))
            fig = plot_pseudo_timeline(PseudoTaskSampler(labels, chosen), max_groups=max_groups)
        except ValueError as err:
            print(f"not a valid setting: {err}")
            return
        plt.show()
        plt.close(fig)

    box = W.VBox([W.HBox(list(sliders.values())), W.interactive_output(show, sliders)])
    box.sliders = sliders
    return box
