"""Notebook widgets built only from core ipywidgets (``>=7.7``, Colab-safe; no ipympl).

``live`` (throttled live plots with a run history), ``panels`` (Run-button panels: streams, ablations, the
refinement with its zapping toggle), ``explorers`` (sliders that redraw streams and pseudo tasks),
``zapping`` (a zapping run: regime, zap frequency, evaluation lr and seed, transfer curves over earlier runs) and
``became`` (a BECAME-experiment run: method, GPM threshold and seed, the accuracy matrix and ACC / BWT) and
``hembed`` (an H-embedding run: method, embedding-loss weight, distance mode and seed) and ``purer`` (teacher
average, EI and ECI with one setting of λ_adv, the BN prior, the meta-learner, the order, the shot and the seed).
"""
from __future__ import annotations

from mepo_lab.widgets.became import became_panel
from mepo_lab.widgets.explorers import describe_sampler, pseudo_task_explorer, stream_explorer
from mepo_lab.widgets.hembed import hembed_panel
from mepo_lab.widgets.live import LivePlot, LiveRefinePlot, RunHistory, Throttle, show_figure
from mepo_lab.widgets.panels import (ablation_explorer, live_run_panel, refine_panel, run_panel, show_error,
                                     stream_sliders)
from mepo_lab.widgets.purer import purer_panel
from mepo_lab.widgets.zapping import zapping_panel

__all__ = ["LivePlot", "LiveRefinePlot", "RunHistory", "Throttle", "ablation_explorer", "became_panel",
           "describe_sampler", "hembed_panel", "live_run_panel", "pseudo_task_explorer", "purer_panel", "refine_panel", "run_panel", "show_error", "show_figure",
           "stream_explorer", "stream_sliders", "zapping_panel"]
