"""Figures of ``mepo-lab study``, drawn from its ``results.json`` (a dict).

The grid as a forest plot (every cell's paired A_auc gain with its 95 % interval, one panel per learner and
shift, zero marked), the η sweep of the Reptile step, the linear-probe accuracy and H-score of every backbone,
and ``finetune``'s feature drift during the stream.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from mepo_lab.config import PRESETS
from mepo_lab.study.config import VARIANT_NAMES, VARIANTS
from mepo_lab.study.report import comparisons, find
from mepo_lab.viz import save_figure_set

_BASELINE_TITLES = {"pretrained": "gain over no refinement, no alignment",
                    "same_alignment": "gain over no refinement with the same alignment",
                    "joint_ft": "gain over joint fine-tuning with the same alignment"}


def _axes(n_rows: int, n_cols: int, width: float, height: float):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False,
                             sharex=True)
    return fig, axes


def plot_study_grid(result: dict, versus: str = "pretrained", metric: str = "A_auc") -> Figure:
    """Every cell's paired gain (points, 95 % interval) against ``versus`` (``pretrained``, ``same_alignment`` or
    ``joint_ft``): rows = learners, columns = shifts, one line per variant × alignment; green = the interval
    excludes 0 upwards, red = downwards, grey = no measurable effect."""
    comps = [c for c in comparisons(result["rows"], metric) if c["versus"] == versus]
    learners = list(dict.fromkeys(c["learner"] for c in comps)) or ["-"]
    shifts = list(dict.fromkeys(c["shift"] for c in comps)) or ["-"]
    per = {l: list(dict.fromkeys((c["variant"], c["alignment"]) for c in comps if c["learner"] == l)) for l in learners}
    heights = [max(2, len(per[l])) for l in learners]
    fig, axes = plt.subplots(len(learners), len(shifts), figsize=(4.2 * len(shifts) + 1.6, 0.3 * sum(heights) + 1.4),
                             squeeze=False, sharex=True, gridspec_kw={"height_ratios": heights})
    for i, learner in enumerate(learners):
        labels = per[learner]
        for j, shift in enumerate(shifts):
            ax = axes[i, j]
            for k, (variant, alignment) in enumerate(labels):
                c = find(comps, learner=learner, shift=shift, variant=variant, alignment=alignment)
                if c is None:
                    continue
                color = "grey" if c["n"] < 2 or c["low"] <= 0 <= c["high"] else ("tab:green" if c["mean"] > 0
                                                                                  else "tab:red")
                lo, hi = (c["low"], c["high"]) if c["n"] > 1 else (c["mean"], c["mean"])
                ax.plot([100 * lo, 100 * hi], [k, k], color=color, lw=2.5)
                ax.plot(100 * c["mean"], k, "o", color=color)
                ax.plot(100 * np.asarray(c["per_seed"]), [k] * len(c["per_seed"]), "|", color="black", ms=7, alpha=0.6)
            ax.axvline(0, color="black", lw=0.8)
            ax.set_yticks(range(len(labels)), [f"{VARIANT_NAMES[v]} + {a}" for v, a in labels] if j == 0 else [],
                          fontsize=8)
            ax.set_ylim(len(labels) - 0.5, -0.5)
            ax.set_title(f"{learner}, shift {shift}", fontsize=10)
            if i == len(learners) - 1:
                ax.set_xlabel(f"{metric} gain (points); | = one seed")
    fig.suptitle(_BASELINE_TITLES[versus] + " (paired by seed, 95 % t-interval)")
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    return fig


def plot_eta_sweep(result: dict, metric: str = "A_auc") -> Figure:
    """The Reptile step η (0 = no refinement … 1 = plain sequential training) against the paired gain over no
    refinement, no alignment, one line per learner × alignment, one panel per shift; bands = 95 % intervals."""
    comps = [c for c in comparisons(result["rows"], metric) if c["versus"] == "pretrained"]
    official = PRESETS[result["config"]["world_preset"]]().mepo.meta_lr  # the preset's own η (smoke: 0.5)
    etas = {v: (0.0 if o is None else o.get("meta_lr", official)) for v, o in VARIANTS.items()
            if o is None or set(o) <= {"meta_lr"}}
    shifts = list(dict.fromkeys(r["shift"] for r in result["rows"]))
    fig, axes = _axes(1, len(shifts), 5.0, 3.6)
    for j, shift in enumerate(shifts):
        ax = axes[0, j]
        for learner, alignment in dict.fromkeys((c["learner"], c["alignment"]) for c in comps):
            pts = []
            for variant, eta in sorted(etas.items(), key=lambda kv: kv[1]):
                c = find(comps, learner=learner, shift=shift, variant=variant, alignment=alignment)
                if c is not None:
                    pts.append((eta, c))
                elif variant == "none" and alignment == "none":
                    pts.append((eta, {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 2}))
            if len(pts) < 3:
                continue
            x = [max(e, 0.01) for e, _ in pts]
            line, = ax.plot(x, [100 * c["mean"] for _, c in pts], "o-", label=f"{learner} + {alignment}")
            if all(c["n"] > 1 for _, c in pts):
                ax.fill_between(x, [100 * c["low"] for _, c in pts], [100 * c["high"] for _, c in pts],
                                color=line.get_color(), alpha=0.15)
        if not ax.lines:
            ax.text(0.5, 0.5, "no η variants in this run", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.set_xscale("log")
        ax.axhline(0, color="black", lw=0.8)
        ax.axvline(official, color="grey", ls=":", lw=1)
        ax.set(xlabel="Reptile step η (log scale)", ylabel=f"{metric} gain (points)", title=f"shift {shift}")
        ax.legend(fontsize=7)
    fig.suptitle(f"gain over no refinement by η (no refinement drawn at η = 0.01; dotted: the preset's η = {official})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_probes(result: dict) -> Figure:
    """Linear-probe test accuracy and H-score of every backbone's frozen features, per shift."""
    probes = result["probes"]
    variants = list(dict.fromkeys(p["variant"] for p in probes))
    shifts = list(dict.fromkeys(p["shift"] for p in probes))
    fig, axes = _axes(1, 2, 5.4, 3.4)
    width = 0.8 / max(1, len(shifts))
    for key, ax, label in (("probe_acc", axes[0, 0], "linear-probe test accuracy (%)"),
                           ("H", axes[0, 1], "H-score (higher = more separable)")):
        for j, shift in enumerate(shifts):
            vals = [next((p[key] for p in probes if p["variant"] == v and p["shift"] == shift), np.nan)
                    for v in variants]
            scale = 100 if key == "probe_acc" else 1
            ax.bar(np.arange(len(variants)) + (j - (len(shifts) - 1) / 2) * width, scale * np.asarray(vals), width,
                   label=f"shift {shift}")
        ax.set_xticks(range(len(variants)), [VARIANT_NAMES[v] for v in variants], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("frozen features on the downstream classes")
    fig.tight_layout()
    return fig


def plot_drift(result: dict) -> Figure:
    """``finetune``'s mean cosine feature drift ``1 − cos(f_t, f_0)`` on fixed test images over the stream, per
    variant (mean over seeds, no alignment), one panel per shift."""
    rows = [r for r in result["rows"] if r.get("drift") and r["alignment"] == "none"]
    shifts = list(dict.fromkeys(r["shift"] for r in rows)) or ["-"]
    fig, axes = _axes(1, len(shifts), 5.0, 3.4)
    for j, shift in enumerate(shifts):
        ax = axes[0, j]
        for variant in dict.fromkeys(r["variant"] for r in rows if r["shift"] == shift):
            curves = [np.asarray(r["drift"], float) for r in rows if r["shift"] == shift and r["variant"] == variant]
            n = min(len(c) for c in curves)
            mean = np.mean([c[:n, 1] for c in curves], axis=0)
            ax.plot(curves[0][:n, 0], mean, "o-", ms=3, label=VARIANT_NAMES[variant])
        ax.set(xlabel="samples seen", ylabel="feature drift 1 − cos(f_t, f_0)", title=f"finetune, shift {shift}")
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no finetune run with drift points", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


STUDY_FIGURES = {"study_grid": plot_study_grid, "study_vs_joint_ft": lambda r: plot_study_grid(r, "joint_ft"),
                 "study_eta": plot_eta_sweep, "study_probes": plot_probes, "study_drift": plot_drift}


def save_study_figures(result: dict, out: str | Path) -> list[Path]:
    """Every study figure as ``out/<name>.png``."""
    return save_figure_set(result, out, STUDY_FIGURES)
