"""The BECAME panel: one method from one seed through every task, with the accuracy matrix of that run.

Knobs: the method (the six of :data:`mepo_lab.became.config.METHODS`: SeqFT, GPM, GPM + stage 2, the fixed
merges α = 1/(t+1) and α = 0.5, and BECAME's closed-form α; Li et al., ICML 2025, arXiv 2504.02666), the
GPM threshold ``eps0`` of the schedule ``ε(t) = eps0 + t·eps_inc`` (Saha et al., ICLR 2021, arXiv 2103.09762)
and the seed. Run calls :func:`mepo_lab.became.run.run_one` and draws ``R[t, i]`` of that run next to the
ACC and BWT of the last runs (grey; "Clear history" forgets them).
"""
from __future__ import annotations

from dataclasses import replace

import ipywidgets as W

from mepo_lab.became import run as became_run
from mepo_lab.became.config import METHODS, BecameConfig
from mepo_lab.protocols.task_incremental import Task
from mepo_lab.viz.became import METHOD_NAMES
from mepo_lab.viz.task_incremental import plot_task_run
from mepo_lab.widgets.live import RunHistory, show_figure
from mepo_lab.widgets.panels import STYLE, _button_panel


def _knobs(cfg: BecameConfig) -> dict[str, W.Widget]:
    return {"method": W.Dropdown(options=[(METHOD_NAMES.get(m, m), m) for m in METHODS], value="became",
                                 description="method", style=STYLE),
            "eps0": W.FloatSlider(value=min(max(cfg.eps0, 0.90), 0.995), min=0.90, max=0.995, step=0.005,
                                  readout_format=".3f", description="GPM ε₀", style=STYLE, continuous_update=False),
            "seed": W.IntSlider(value=cfg.seeds[0], min=1, max=max(20, cfg.seeds[0]), description="seed",
                                style=STYLE, continuous_update=False)}


def _label(row: dict, eps0: float) -> str:
    return f"{METHOD_NAMES.get(row['method'], row['method'])}, ε₀ {eps0:.3f}, seed {row['seed']}"


def plot_became_run(row: dict, history: RunHistory | None = None):
    """``R[t, i]`` of one ``run_one`` row (tasks not trained yet hatched) and the ACC / BWT of ``history``
    (grey, oldest first) and of this run (colour)."""
    return plot_task_run(row, history.runs if history else [], METHOD_NAMES)


def became_panel(cfg: BecameConfig, tasks: list[Task], history: int = 4) -> W.Widget:
    """Method, GPM threshold ``eps0`` and seed + a Run button for one BECAME-experiment run.

    Run calls ``run_one(tasks, replace(cfg, eps0=…), method, seed)`` (every task, seconds at the smoke
    preset) and draws the run's accuracy matrix and its ACC / BWT next to the last ``history`` runs. A
    threshold schedule that reaches 1 (``eps0 + (n_tasks − 1)·eps_inc ≥ 1``) is refused by the configuration
    and shown as an error. The returned box has ``run()`` (press Run), ``knobs``, ``history``, ``clear()``,
    ``last`` (the latest row, in the form of ``results.json``) and ``error`` (the last traceback, or ``None``).
    """
    knobs, out, past = _knobs(cfg), W.Output(), RunHistory(history)
    clear = W.Button(description="Clear history", icon="trash")

    def press() -> str:
        method, seed, eps0 = knobs["method"].value, knobs["seed"].value, round(knobs["eps0"].value, 4)
        row = became_run.run_one(tasks, replace(cfg, eps0=eps0), method, seed)  # looked up now: tests patch it
        show_figure(plot_became_run(row, past), out)
        past.add(row, _label(row, eps0))
        panel.last = row
        alphas = [a for a in row["alpha"] if a is not None]
        merged = f", α_t {', '.join(f'{a:.2f}' for a in alphas)}" if alphas else ""
        return (f"{_label(row, eps0)}: ACC {100 * row['ACC']:.1f}%, BWT {100 * row['BWT']:+.1f}%{merged}, "
                f"{row['seconds']:.1f} s")

    panel = _button_panel([W.HBox([knobs["method"], knobs["eps0"], knobs["seed"]])], press, out, [clear])
    clear.on_click(lambda _=None: past.clear())
    panel.knobs, panel.history, panel.last, panel.clear = knobs, past, None, past.clear
    return panel
