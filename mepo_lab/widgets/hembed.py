"""The H-embedding panel: one method from one seed through every task of designed similarity.

Knobs: the method (plain HNET, HNET + random guide, HNET + H-embedding; Wu et al., NeurIPS 2025,
arXiv 2502.11609), the weight ramp ``emb_beta`` of the embedding loss ``min(emb_beta·t, 1)·(1 − cos(Dec(z_t), ê_t))``,
the distance mode that turns H-scores into target distances (``direct``, ``reciprocal``, or ``ahp``, our
unverified reading of the final paper) and the seed. Run calls :func:`mepo_lab.hembed.run.run_one` and draws
``R[t, i]`` of that run next to the ACC and BWT of the last runs (grey; "Clear history" forgets them).
"""
from __future__ import annotations

from dataclasses import replace

import ipywidgets as W

from mepo_lab.backbones.base import Backbone
from mepo_lab.hembed import run as hembed_run
from mepo_lab.hembed.config import METHODS, HembedConfig
from mepo_lab.hembed.embedding import MODES
from mepo_lab.protocols.task_incremental import Task
from mepo_lab.viz.hembed import METHOD_NAMES
from mepo_lab.viz.task_incremental import plot_task_run
from mepo_lab.widgets.live import RunHistory, show_figure
from mepo_lab.widgets.panels import STYLE, _button_panel


def _knobs(cfg: HembedConfig) -> dict[str, W.Widget]:
    return {"method": W.Dropdown(options=[(METHOD_NAMES.get(m, m), m) for m in METHODS], value="hnet_hembedding",
                                 description="method", style=STYLE),
            "emb_beta": W.FloatSlider(value=min(cfg.emb_beta, 1.0), min=0.0, max=1.0, step=0.05,
                                      description="emb_beta", style=STYLE, continuous_update=False),
            "emb_mode": W.Dropdown(options=list(MODES), value=cfg.emb_mode, description="distance", style=STYLE),
            "seed": W.IntSlider(value=cfg.seeds[0], min=1, max=max(20, cfg.seeds[0]), description="seed",
                                style=STYLE, continuous_update=False)}


def _label(row: dict, emb_beta: float, mode: str) -> str:
    guide = "" if row["method"] == "hnet" else f", β_emb {emb_beta:.2f}, {mode}"
    return f"{METHOD_NAMES.get(row['method'], row['method'])}{guide}, seed {row['seed']}"


def hembed_panel(cfg: HembedConfig, tasks: list[Task], backbone: Backbone, history: int = 4) -> W.Widget:
    """Method, ``emb_beta``, distance mode and seed + a Run button for one H-embedding-experiment run.

    Run calls ``run_one(tasks, backbone, replace(cfg, emb_beta=…, emb_mode=…), method, seed)`` (every task,
    seconds at the smoke preset) and draws the run's accuracy matrix and its ACC / BWT next to the last
    ``history`` runs. The returned box has ``run()`` (press Run), ``knobs``, ``history``, ``clear()``, ``last``
    (the latest row, in the form of ``results.json``) and ``error`` (the last traceback, or ``None``).
    """
    knobs, out, past = _knobs(cfg), W.Output(), RunHistory(history)
    clear = W.Button(description="Clear history", icon="trash")

    def press() -> str:
        method, seed = knobs["method"].value, knobs["seed"].value
        emb_beta, mode = round(knobs["emb_beta"].value, 4), knobs["emb_mode"].value
        row = hembed_run.run_one(tasks, backbone, replace(cfg, emb_beta=emb_beta, emb_mode=mode), method, seed)
        show_figure(plot_task_run(row, list(past.runs), METHOD_NAMES), out)
        past.add(row, _label(row, emb_beta, mode))
        panel.last = row
        guided = [s for s in row["scores"] if s]
        scores = f", last H-scores {', '.join(f'{h:.2f}' for h in guided[-1])}" if guided else ""
        return (f"{_label(row, emb_beta, mode)}: ACC {100 * row['ACC']:.1f}%, BWT {100 * row['BWT']:+.1f}%"
                f"{scores}, {row['seconds']:.1f} s")

    panel = _button_panel([W.HBox([knobs["method"], knobs["emb_beta"]]), W.HBox([knobs["emb_mode"], knobs["seed"]])],
                          press, out, [clear])
    clear.on_click(lambda _=None: past.clear())
    panel.knobs, panel.history, panel.last, panel.clear = knobs, past, None, past.clear
    return panel
