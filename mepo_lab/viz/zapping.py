"""Plots of the zapping experiment, drawn from its ``results.json`` (a dict), so notebooks can replot saved runs.

Colour = pretraining regime (i.i.d., ASB, Meta-ASB), solid = with zapping, dashed = without; bands are
± one standard deviation over seeds.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from mepo_lab.viz import save_figure_set

KIND_COLOURS = {"iid": "tab:blue", "asb": "tab:orange", "meta": "tab:green", "mepo": "tab:purple"}
KIND_NAMES = {"iid": "i.i.d.", "asb": "ASB", "meta": "Meta-ASB"}


def regime_label(regime: str) -> str:
    """``"asb_zap"`` → ``"ASB + zap"``."""
    kind, _, zap = regime.partition("_")
    return KIND_NAMES.get(kind, kind) + (" + zap" if zap == "zap" else "")


def _style(regime: str) -> dict:
    kind, _, zap = regime.partition("_")
    return {"color": KIND_COLOURS.get(kind, "gray"), "linestyle": "-" if zap == "zap" else "--"}


def _band(ax, x: np.ndarray, ys: np.ndarray, regime: str) -> None:
    mean, std = ys.mean(0), ys.std(0)
    ax.plot(x, mean, label=regime_label(regime), **_style(regime))
    if len(ys) > 1:
        ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=_style(regime)["color"])


def _by_regime(result: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in result["rows"]:
        out.setdefault(row["regime"], []).append(row)
    return out


def plot_continual_transfer(result: dict, ax=None) -> Figure:
    """Accuracy on the classes seen so far against the number of classes learned (one Adam step per image)."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    for regime, rows in _by_regime(result).items():
        x = np.asarray(rows[0]["continual"]["classes_learned"])
        _band(ax, x, 100 * np.array([r["continual"]["accuracy"] for r in rows]), regime)
    ax.set(xlabel="classes learned", ylabel="accuracy on classes seen (%)", title="Continual transfer")
    ax.legend(fontsize=8)
    return fig


def plot_learning_curves(result: dict) -> Figure:
    """Held-out accuracy on the pretraining classes and training loss along pretraining (fraction done)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for regime, rows in _by_regime(result).items():
        hist = rows[0]["pretrain"]["history"]
        x = np.array([h["step"] for h in hist], float) / hist[-1]["step"]
        for ax, key in zip(axes, ("held_out_acc", "loss")):
            if key in hist[0]:
                ys = np.array([[h[key] for h in r["pretrain"]["history"]] for r in rows])
                _band(ax, x, 100 * ys if key == "held_out_acc" else ys, regime)
    axes[0].set(xlabel="fraction of pretraining", ylabel="held-out accuracy (%)", title="Pretraining classes")
    axes[1].set(xlabel="fraction of pretraining", ylabel="training loss", title="Training loss (batch steps)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_adaptation(result: dict, ax=None) -> Figure:
    """Rapid adaptation: the loss on the k-th image of a fresh class, before its update, averaged over classes."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    for regime, rows in _by_regime(result).items():
        ys = np.array([r["adaptation_loss"] for r in rows])
        _band(ax, np.arange(1, ys.shape[1] + 1), ys, regime)
    ax.set(xlabel="image of the new class (step)", ylabel="loss before the step", title="Adaptation to a fresh class")
    ax.legend(fontsize=8)
    return fig


def plot_regime_bars(result: dict) -> Figure:
    """Final continual-transfer and i.i.d.-transfer accuracy per regime: bars (mean) and dots (seeds)."""
    df = pd.DataFrame([{"regime": regime_label(r["regime"]), "continual transfer": 100 * r["final_accuracy"],
                        "i.i.d. transfer": 100 * r["iid_transfer_accuracy"],
                        "zero-shot": 100 * r["zero_shot_accuracy"]} for r in result["rows"]])
    long = df.melt(id_vars="regime", var_name="evaluation", value_name="accuracy (%)")
    fig, ax = plt.subplots(figsize=(9, 4))
    sns.barplot(long, x="regime", y="accuracy (%)", hue="evaluation", errorbar=None, ax=ax, palette="Greys")
    sns.stripplot(long, x="regime", y="accuracy (%)", hue="evaluation", dodge=True, ax=ax, legend=False,
                  palette="dark:black", size=3)
    ax.set_title("Transfer accuracy by pretraining regime (bars: mean, dots: seeds)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def plot_zap(before: np.ndarray, after: np.ndarray, rows) -> Figure:
    """A weight matrix before and after ``zap_`` and their difference (only the zapped rows change)."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    lim = float(np.abs(before).max())
    for ax, mat, title in zip(axes, (before, after, after - before), ("before", "after", "after − before")):
        im = ax.imshow(mat, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        ax.set(title=title, xlabel="input feature", ylabel="output row (class)")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(f"zap_ on rows {np.atleast_1d(rows).tolist()}", y=1.04)
    return fig


FIGURES = {"continual_transfer": plot_continual_transfer, "learning_curves": plot_learning_curves,
           "adaptation": plot_adaptation, "regimes": plot_regime_bars}


def save_zapping_figures(result: dict, out: Path) -> list[Path]:
    """Every figure of :data:`FIGURES` as ``out/<name>.png``; returns the paths."""
    return save_figure_set(result, out, FIGURES)


def _vit_name(row: dict) -> str:
    return "ViT pretrained" if row["backbone"] == "pretrained" else f"ViT MePo, {row['head_reset']}"


_ZAPPED = ("zap", "per_sequence", "per_task")
_RESET_STYLE = {"ViT pretrained": ("0.5", ":"), "ViT MePo, none": ("tab:purple", "--"),
                "ViT MePo, per_sequence": ("tab:purple", "-"), "ViT MePo, per_task": ("indigo", "-.")}


def plot_head_reset(result: dict, link_rows: list[dict]) -> Figure:
    """Left: final continual-transfer accuracy of the six conv-net regimes and of the micro ViTs of
    :func:`mepo_lab.zapping.mepo_link.head_reset_study` (hatched: zapped / head reset; dots: seeds; dashed:
    chance). Right: the ViTs' adaptation curves (loss on the k-th image of a fresh class)."""
    regimes = list(dict.fromkeys(r["regime"] for r in result["rows"]))
    groups = {regime_label(g): [r["final_accuracy"] for r in result["rows"] if r["regime"] == g] for g in regimes}
    colours = [KIND_COLOURS.get(g.partition("_")[0], "gray") for g in regimes]
    for r in link_rows:
        groups.setdefault(_vit_name(r), []).append(r["final_accuracy"])
    colours += ["0.6"] + [KIND_COLOURS["mepo"]] * (len(groups) - len(colours) - 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    for i, (name, values) in enumerate(groups.items()):
        left.bar(i, 100 * np.mean(values), color=colours[i], alpha=0.55, hatch="//" if name.endswith(_ZAPPED) else None)
        left.scatter(np.full(len(values), i), 100 * np.asarray(values), color="k", s=14, zorder=3)
    left.axvline(len(regimes) - 0.5, color="0.3", ls=":")
    k = len(result["rows"][0]["continual"]["accuracy"])
    left.axhline(100 / k, color="0.5", ls="--", label="chance (1/K)")
    left.set_xticks(range(len(groups)), list(groups), rotation=35, ha="right", fontsize=8)
    left.set(ylabel="final continual-transfer accuracy (%)",
             title="conv net: six regimes | micro ViT: MePo head_reset (bars: mean, dots: seeds)")
    left.legend(fontsize=8)
    for name in dict.fromkeys(_vit_name(r) for r in link_rows):
        curves = np.array([r["adaptation_loss"] for r in link_rows if _vit_name(r) == name])
        colour, style = _RESET_STYLE.get(name, ("k", "-"))
        right.plot(np.arange(1, curves.shape[1] + 1), curves.mean(0), marker=".", label=name, color=colour, ls=style)
    right.set(xlabel="image of the new class (step)", ylabel="loss before the step (mean over classes, seeds)",
              title="micro ViT: adaptation to a fresh class")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig
