"""The zapping panel: pretrain with one regime from one seed, then watch its transfer over earlier runs.

Knobs: the regime (i.i.d., ASB, Meta-ASB, each with and without zapping; Frati et al., "Reset It and Forget
It", ECAI 2024, arXiv 2310.07996), how often i.i.d. pretraining zaps (``zap_every``, used by ``iid_zap``
only: the regime itself says whether zapping is on), the learning rate of the continual-transfer evaluation
and the seed. Run calls :func:`mepo_lab.zapping.run.run_one` and draws the continual-transfer curve and
the adaptation curve of that run in colour, the last runs in grey ("Clear history" forgets them).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from mepo_lab.data.few_shot import FewShotSplit
from mepo_lab.viz.zapping import KIND_COLOURS, regime_label
from mepo_lab.widgets.live import RunHistory, show_figure
from mepo_lab.widgets.panels import STYLE, _button_panel
from mepo_lab.zapping import run as zapping_run
from mepo_lab.zapping.config import REGIMES, ZappingConfig

EVAL_LRS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)  # a small part of the official grid's range (0.055 … 4e-5)


def _knobs(cfg: ZappingConfig, lrs: Sequence[float]) -> dict[str, W.Widget]:
    lrs = sorted(set(lrs) | {cfg.eval_lrs[0]}, reverse=True)
    return {"regime": W.Dropdown(options=[(regime_label(r), r) for r in REGIMES], value="asb_zap",
                                 description="regime", style=STYLE),
            "zap_every": W.IntSlider(value=max(1, cfg.zap_every), min=1, max=max(1, cfg.iid_epochs),
                                     description="zap every (ep.)", style=STYLE, continuous_update=False),
            "lr": W.Dropdown(options=[(f"{lr:g}", lr) for lr in lrs], value=cfg.eval_lrs[0],
                             description="eval. lr (Adam)", style=STYLE),
            "seed": W.IntSlider(value=cfg.seeds[0], min=1, max=max(20, cfg.seeds[0]), description="seed",
                                style=STYLE, continuous_update=False)}


def _label(row: dict) -> str:
    return f"{regime_label(row['regime'])}, lr {row['continual']['lr']:g}, seed {row['seed']}"


def _draw(ax_acc, ax_loss, row: dict, colour: str, style: str, label: str, width: float) -> None:
    ax_acc.plot(row["continual"]["classes_learned"], 100 * np.asarray(row["continual"]["accuracy"]), color=colour,
                ls=style, lw=width, label=label)
    loss = row["adaptation_loss"]
    ax_loss.plot(np.arange(1, len(loss) + 1), loss, color=colour, ls=style, lw=width, label=label)


def plot_zapping_run(row: dict, history: RunHistory | None = None):
    """Continual transfer (accuracy on the classes seen so far against classes learned) and adaptation (loss
    on the k-th image of a fresh class before its step) of one ``run_one`` row, over ``history`` in grey."""
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 3.6))
    runs = list(history.runs) if history else []
    for i, (label, old) in enumerate(runs):
        shade = str(0.45 + 0.4 * (len(runs) - 1 - i) / max(len(runs), 1))
        _draw(acc, loss, old, shade, "-", f"{label}: {100 * old['final_accuracy']:.1f}%", 1.0)
    kind, zap = row["regime"].partition("_")[0], row["regime"].endswith("_zap")
    _draw(acc, loss, row, KIND_COLOURS.get(kind, "C0"), "-" if zap else "--",
          f"now: {_label(row)}: {100 * row['final_accuracy']:.1f}%", 2.0)
    acc.set(xlabel="classes learned", ylabel="accuracy on classes seen (%)", ylim=(0, 100),
            title="continual transfer (grey: earlier runs)")
    loss.set(xlabel="image of the new class (step)", ylabel="loss before the step",
             title="adaptation to a fresh class (mean over classes)")
    acc.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def zapping_panel(cfg: ZappingConfig, split: FewShotSplit, lrs: Sequence[float] = EVAL_LRS,
                  history: int = 5) -> W.Widget:
    """Regime, zap frequency (i.i.d. + zap), evaluation lr and seed + a Run button for one zapping run.

    Run calls ``run_one(split, replace(cfg, zap_every=…, eval_lrs=(lr,)), regime, seed)`` (pretraining and
    transfer evaluation: one run of ``run_zapping``, seconds at the smoke preset) and draws the run's
    continual-transfer and adaptation curves over the last ``history`` runs in grey. The returned box has
    ``run()`` (press Run), ``knobs``, ``history``, ``clear()``, ``last`` (the latest row, in the form of
    ``results.json``) and ``error`` (the last error's traceback, or ``None``).
    """
    knobs, out, past = _knobs(cfg, lrs), W.Output(), RunHistory(history)
    clear = W.Button(description="Clear history", icon="trash")

    def sync(_=None) -> None:  # the zap frequency only means something for i.i.d. + zap
        knobs["zap_every"].disabled = knobs["regime"].value != "iid_zap"

    def press() -> str:
        regime, seed = knobs["regime"].value, knobs["seed"].value
        run_cfg = replace(cfg, zap_every=knobs["zap_every"].value, eval_lrs=(knobs["lr"].value,))
        row = zapping_run.run_one(split, run_cfg, regime, seed)
        show_figure(plot_zapping_run(row, past), out)
        past.add(row, _label(row))
        panel.last = row
        return (f"{_label(row)}: final continual acc {100 * row['final_accuracy']:.1f}%, i.i.d. transfer "
                f"{100 * row['iid_transfer_accuracy']:.1f}%, early loss {row['early_loss']:.2f}, "
                f"pretraining {row['seconds']['pretrain']:.1f} s")

    knobs["regime"].observe(sync, names="value")
    sync()
    rows = [W.HBox([knobs["regime"], knobs["zap_every"]]), W.HBox([knobs["lr"], knobs["seed"]])]
    panel = _button_panel(rows, press, out, [clear])
    clear.on_click(lambda _=None: past.clear())
    panel.knobs, panel.history, panel.last, panel.clear = knobs, past, None, past.clear
    return panel
