"""The PURER panel: one meta-training run of EI and ECI with the knobs of the inversion and the switch.

Knobs: λ_adv (``adv_scale``; 0 turns ECI into EI), the BatchNorm-prior weight ``bn`` of the inversion loss
(0 leaves only cross-entropy, total variation and L2), the meta-learner (MAML, ANIL, ProtoNet), first- or
second-order MAML, the shot and the seed (Hu et al., CVPR 2023, arXiv 2303.11183). Run calls
:func:`mepo_lab.purer.run.meta_rows` for ``teacher_average``, ``ei`` and ``eci`` on the given teachers and test
images and draws the meta-test accuracies and ECI's switch timeline.
"""
from __future__ import annotations

from dataclasses import replace

import ipywidgets as W
import torch

from mepo_lab.data.base import ImageArrays
from mepo_lab.purer import run as purer_run
from mepo_lab.purer.config import PurerConfig
from mepo_lab.purer.teachers import Teacher
from mepo_lab.viz.purer import plot_meta_test, plot_switch
from mepo_lab.widgets.live import show_figure
from mepo_lab.widgets.panels import STYLE, _button_panel

METHODS = ("teacher_average", "ei", "eci")


def _knobs(cfg: PurerConfig) -> dict[str, W.Widget]:
    return {"adv_scale": W.FloatSlider(value=cfg.adv_scale, min=0.0, max=20.0, step=1.0, description="λ_adv",
                                       style=STYLE, continuous_update=False),
            "bn": W.Dropdown(options=[0.0, 1e-3, 1e-2, 1e-1], value=cfg.bn, description="BN prior", style=STYLE),
            "meta_learner": W.Dropdown(options=["maml", "anil", "protonet"], value=cfg.meta_learner,
                                       description="meta-learner", style=STYLE),
            "first_order": W.Checkbox(value=cfg.first_order, description="first order"),
            "k_shot": W.Dropdown(options=list(cfg.shots), value=cfg.shots[0], description="shot", style=STYLE),
            "seed": W.IntSlider(value=cfg.seeds[0], min=1, max=max(20, cfg.seeds[0]), description="seed",
                                style=STYLE, continuous_update=False)}


def purer_panel(cfg: PurerConfig, teachers: list[Teacher], test: ImageArrays, device: str = "cpu") -> W.Widget:
    """Knobs + a Run button for teacher average, EI and ECI with one setting (seconds at the smoke preset,
    about a minute at the ``cpu`` preset). The returned box has ``run()``, ``knobs``, ``last`` (the rows, in the
    form of ``results.json``) and ``error`` (the last traceback, or ``None``)."""
    knobs, out, timeline = _knobs(cfg), W.Output(), W.Output()

    def press() -> str:
        k = {name: w.value for name, w in knobs.items()}
        setting = replace(cfg, adv_scale=float(k["adv_scale"]), bn=float(k["bn"]), meta_learner=k["meta_learner"],
                          first_order=bool(k["first_order"]), methods=METHODS, icfil=False)
        rows = purer_run.meta_rows(setting, teachers, test, int(k["seed"]), int(k["k_shot"]), set(),
                                   torch.device(device))
        show_figure(plot_meta_test({"rows": rows}), out)
        show_figure(plot_switch({"rows": rows}), timeline)
        panel.last = rows
        acc = {r["method"]: r["acc"] for r in rows}
        fired = next((len(r["fired"]) for r in rows if r["method"] == "eci"), 0)
        return (f"{setting.meta_learner}{' (1st order)' if setting.first_order else ''}, λ_adv {setting.adv_scale:g}, "
                f"bn {setting.bn:g}, {k['k_shot']}-shot, seed {k['seed']}: teacher average "
                f"{100 * acc['teacher_average']:.1f}%, EI {100 * acc['ei']:.1f}%, ECI {100 * acc['eci']:.1f}% "
                f"(switch fired {fired}×)")

    panel = _button_panel([W.HBox([knobs["adv_scale"], knobs["bn"], knobs["meta_learner"]]),
                           W.HBox([knobs["first_order"], knobs["k_shot"], knobs["seed"]])], press, out, [])
    panel.children = (*panel.children, timeline)  # the switch timeline under the accuracies
    panel.knobs, panel.last = knobs, None
    return panel
