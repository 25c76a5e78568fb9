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
import matplotlib.pyplot as plt
import numpy as np

from mepo_lab.became import run as became_run
from mepo_lab.became.config import METHODS, BecameConfig
from mepo_lab.protocols.task_incremental import Task
from mepo_lab.viz.became import METHOD_NAMES
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
    fig, (mat, bars) = plt.subplots(1, 2, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
    r = 100 * np.array([[np.nan if v is None else v for v in line] for line in row["matrix"]], float)
    mat.add_patch(plt.Rectangle((-0.5, -0.5), r.shape[1], r.shape[0], hatch="//", fill=False, color="0.8", lw=0))
    im = mat.imshow(np.ma.masked_invalid(r), vmin=0, vmax=100, cmap="viridis")
    fig.colorbar(im, ax=mat, shrink=0.85, label="accuracy (%)")
    mat.set(title=f"R[t, i]: {METHOD_NAMES.get(row['method'], row['method'])}", xlabel="evaluated task i",
            ylabel="after task t")
    runs = [*(history.runs if history else []), ("now", row)]
    x = np.arange(len(runs))
    for k, (key, colour) in enumerate((("ACC", "tab:blue"), ("BWT", "tab:red"))):
        values = [100 * old[key] for _, old in runs]
        colours = ["0.7"] * (len(runs) - 1) + [colour]
        bars.bar(x + (k - 0.5) * 0.4, values, 0.4, color=colours, edgecolor=colour, label=key)
    bars.axhline(0, color="k", lw=0.8)
    bars.set_xticks(x, [label for label, _ in runs], rotation=20, ha="right", fontsize=7)
    bars.set(ylabel="%", title="ACC (higher is better), BWT (negative = forgetting)")
    bars.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


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
