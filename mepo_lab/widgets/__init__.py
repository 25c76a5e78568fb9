"""Notebook widgets built only from core ipywidgets (``>=7.7``, Colab-safe; no ipympl).

``live`` (throttled live plots with a run history), ``panels`` (Run-button panels: streams, ablations, the
refinement with its zapping toggle), ``explorers`` (sliders that redraw streams and pseudo tasks) and
``zapping`` (a zapping run: regime, zap frequency, evaluation lr and seed, transfer curves over earlier runs).
"""
from __future__ import annotations

from mepo_lab.widgets.explorers import describe_sampler, pseudo_task_explorer, stream_explorer
from mepo_lab.widgets.live import LivePlot, LiveRefinePlot, RunHistory, Throttle, show_figure
from mepo_lab.widgets.panels import (ablation_explorer, live_run_panel, refine_panel, run_panel, show_error,
                                     stream_sliders)
from mepo_lab.widgets.zapping import zapping_panel

__all__ = ["LivePlot", "LiveRefinePlot", "RunHistory", "Throttle", "ablation_explorer", "describe_sampler",
           "live_run_panel", "pseudo_task_explorer", "refine_panel", "run_panel", "show_error", "show_figure",
           "stream_explorer", "stream_sliders", "zapping_panel"]
