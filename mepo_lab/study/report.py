"""The study's numbers in words: paired gains per cell, the controls, the alignment's share, the target check.

Every gain is a paired difference over seeds (:func:`~mepo_lab.protocols.results.paired_difference`: the same
stream and initialisation on both sides, 95 % Student-t interval), in A_auc points unless told otherwise. Three
baselines: ``pretrained`` (no refinement, no alignment: what the quickstart's gains are measured against),
``same_alignment`` (no refinement, the cell's own alignment: the refined backbone's own effect) and ``joint_ft``
(the joint fine-tuning control, the cell's alignment: meta-learning against plain training on the same images).
"""
from __future__ import annotations

import numpy as np

from mepo_lab.protocols.results import (
    describe_difference,
    format_difference,
    paired_difference,
)
from mepo_lab.study.config import FEATURE_LEARNERS, VARIANT_NAMES
from mepo_lab.study.diagnostics import gain_shares, seed_values

BASELINES = ("pretrained", "same_alignment", "joint_ft")
TARGET = 0.03  # the target: MePo + corrected alignment >= +3 A_auc over the plain pretrained backbone


def _baseline(versus: str, alignment: str) -> tuple[str, str]:
    return {"pretrained": ("none", "none"), "same_alignment": ("none", alignment),
            "joint_ft": ("joint_ft", alignment)}[versus]


def comparisons(rows: list[dict], metric: str = "A_auc") -> list[dict]:
    """Every (learner, shift, variant, alignment) cell against each baseline that ran (not itself): rows with
    ``versus``, ``mean``, ``low``, ``high``, ``n``, ``per_seed`` and a plain ``verdict``."""
    present = {(r["learner"], r["shift"], r["variant"], r["alignment"]) for r in rows}
    out = []
    for learner, shift, variant, alignment in dict.fromkeys(sorted(present, key=_order(rows))):
        for versus in BASELINES:
            base = _baseline(versus, alignment)
            if base == (variant, alignment) or (learner, shift, *base) not in present:
                continue
            cell = {"learner": learner, "shift": shift}
            diff = paired_difference(rows, cell | {"variant": variant, "alignment": alignment},
                                     cell | {"variant": base[0], "alignment": base[1]}, metric)
            out.append(cell | {"variant": variant, "alignment": alignment, "versus": versus}
                       | {k: diff[k] for k in ("mean", "low", "high", "n", "per_seed", "metric", "confidence")}
                       | {"verdict": describe_difference(diff)})
    return out


def _order(rows: list[dict]):
    ranks = {key: {v: i for i, v in enumerate(dict.fromkeys(r[key] for r in rows))}
             for key in ("learner", "shift", "variant", "alignment")}
    return lambda c: tuple(ranks[k][v] for k, v in zip(("learner", "shift", "variant", "alignment"), c, strict=True))


def find(comps: list[dict], **match) -> dict | None:
    """The one comparison matching every field of ``match`` (or None)."""
    hits = [c for c in comps if all(c.get(k) == v for k, v in match.items())]
    return hits[0] if hits else None


def shift_interaction(rows: list[dict], learner: str, shift: str, variant: str = "mepo", alignment: str = "corrected",
                      metric: str = "A_auc") -> dict | None:
    """H2: does the gain of ``variant`` + ``alignment`` over (``none``, no alignment) grow under ``shift``?
    ``Δ = [m(v, a | shift) − m(none, none | shift)] − [m(v, a | none) − m(none, none | none)]``, paired by seed
    (a :func:`~mepo_lab.protocols.results.paired_difference` of per-seed gains), or None when a cell is missing."""
    gains = []
    for sh in ("none", shift):
        base = seed_values(rows, metric, learner=learner, shift=sh, variant="none", alignment="none")
        mine = seed_values(rows, metric, learner=learner, shift=sh, variant=variant, alignment=alignment)
        gains += [{"shift": sh, "seed": seed, "gain": mine[seed] - base[seed]} for seed in sorted(set(base) & set(mine))]
    if {g["shift"] for g in gains} != {"none", shift} or shift == "none":
        return None
    return paired_difference(gains, {"shift": shift}, {"shift": "none"}, "gain") | {"metric": metric}


def in_words(diff: dict | None) -> str:
    """``+1.40 [+0.41, +2.39] (95 % t-interval, 3 paired seeds) -> an improvement the seeds agree on ...``."""
    if diff is None:
        return "not in this grid"
    text = format_difference({"confidence": 0.95, **diff})
    return text if diff["n"] < 2 else f"{text} -> {describe_difference(diff)}"


def target_check(comps: list[dict], variant: str = "mepo") -> dict:
    """The issue's target on the quickstart's setting: ``variant`` + corrected alignment against the plain
    pretrained backbone, shift ``none``, per feature learner; met when some learner's mean gain ≥ :data:`TARGET`."""
    per = {c["learner"]: c["mean"] for c in comps if c["versus"] == "pretrained" and c["variant"] == variant
           and c["alignment"] == "corrected" and c["shift"] == "none" and c["learner"] in FEATURE_LEARNERS}
    best = max(per, key=per.get) if per else None
    return {"per_learner": per, "best": best, "met": bool(per) and per[best] >= TARGET, "target": TARGET}


def format_comparisons(comps: list[dict], versus: str = "pretrained") -> str:
    """A plain-text table of one baseline's comparisons (gains in points with their intervals)."""
    lines = [f"gain in {comps[0]['metric'] if comps else 'A_auc'} over {versus} (paired by seed, 95 % interval)",
             "learner | shift | variant | alignment | gain | verdict", "--- | --- | --- | --- | --- | ---"]
    for c in comps:
        if c["versus"] == versus:
            diff = {**c, "confidence": 0.95}
            lines.append(f"{c['learner']} | {c['shift']} | {VARIANT_NAMES[c['variant']]} | {c['alignment']} | "
                         f"{format_difference(diff).split(' (')[0]} | {c['verdict'].split(' (')[0]}")
    return "\n".join(lines)


def conclusions(result: dict) -> list[str]:
    """Plain-language lines that follow the numbers: per learner and shift, does MePo (+ corrected alignment) beat
    no refinement and joint fine-tuning, and how much of the gain is the alignment's; then the target."""
    rows, lines = result["rows"], []
    comps = comparisons(rows)
    shares = {(s["learner"], s["shift"]): s for s in gain_shares(rows)}
    for learner, shift in dict.fromkeys((c["learner"], c["shift"]) for c in comps):
        full = find(comps, learner=learner, shift=shift, variant="mepo", alignment="corrected", versus="pretrained")
        ctrl = find(comps, learner=learner, shift=shift, variant="mepo", alignment="corrected", versus="joint_ft")
        own = find(comps, learner=learner, shift=shift, variant="mepo", alignment="none", versus="pretrained")
        parts = [f"{learner}, shift {shift}:"]
        if full:
            parts.append(f"MePo + corrected alignment {_pts(full)} over no refinement ({_word(full)})")
        if own:
            parts.append(f"the refined backbone alone {_pts(own)} ({_word(own)})")
        if ctrl:
            parts.append(f"against joint fine-tuning with the same alignment {_pts(ctrl)} ({_word(ctrl)})")
        if (learner, shift) in shares:
            s = shares[learner, shift]
            parts.append(f"of the mean gain {100 * s['gain']:+.2f}, the alignment gives {100 * s['alignment_part']:+.2f} "
                         f"and the backbone {100 * s['backbone']:+.2f}")
        lines.append("; ".join(parts[:1] + [", ".join(parts[1:])]).replace(":;", ":"))
    t = target_check(comps)
    if t["best"] is not None:
        lines.append(f"target (MePo + corrected alignment >= +{100 * TARGET:.0f} A_auc over the plain pretrained "
                     f"backbone for a quickstart learner, no shift): best {t['best']} "
                     f"{100 * t['per_learner'][t['best']]:+.2f}: {'met' if t['met'] else 'not met'}")
    return lines


def _pts(c: dict) -> str:
    return f"{100 * c['mean']:+.2f} [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]" if c["n"] > 1 else \
        f"{100 * c['mean']:+.2f} (one seed)"


def _word(c: dict) -> str:
    if c["n"] < 2:
        return "no interval"
    if c["low"] <= 0 <= c["high"]:
        return "no measurable effect"
    return "better" if c["mean"] > 0 else "worse"


SUMMARY_COLUMNS = (("alignment only", "none", "corrected", "pretrained"),
                   ("refined backbone only", "mepo", "none", "pretrained"),
                   ("MePo + corrected", "mepo", "corrected", "pretrained"),
                   ("joint FT + corrected", "joint_ft", "corrected", "pretrained"),
                   ("MePo − joint FT (both corrected)", "mepo", "corrected", "joint_ft"),
                   ("MePo corrected switches + corrected", "mepo_corrected", "corrected", "pretrained"))


def summary_table(result: dict, metric: str = "A_auc") -> str:
    """The README's table: per learner and shift, the baseline's mean ± std over seeds and the paired gains
    (points, 95 % interval) of MePo's ingredients and of the joint fine-tuning control."""
    rows, comps = result["rows"], comparisons(result["rows"], metric)
    head = ["learner", "shift", "no refinement", *(c[0] for c in SUMMARY_COLUMNS)]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for learner, shift in dict.fromkeys((r["learner"], r["shift"]) for r in rows):
        base = [r[metric] for r in rows if (r["learner"], r["shift"], r["variant"], r["alignment"])
                == (learner, shift, "none", "none")]
        cells = [learner, shift, f"{100 * np.mean(base):.2f} ± {100 * np.std(base, ddof=1) if len(base) > 1 else 0:.2f}"]
        for _, variant, alignment, versus in SUMMARY_COLUMNS:
            c = find(comps, learner=learner, shift=shift, variant=variant, alignment=alignment, versus=versus)
            cells.append("—" if c is None else _pts(c))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def eta_table(result: dict, metric: str = "A_auc") -> str:
    """Gain over no refinement, no alignment of each Reptile step η (feature learners; points, 95 % interval)."""
    comps = comparisons(result["rows"], metric)
    variants = [v for v in ("eta_0.03", "mepo", "eta_0.3", "eta_1", "joint_ft") if any(c["variant"] == v for c in comps)]
    lines = [" | ".join(["learner", "shift", "alignment", *(VARIANT_NAMES[v] for v in variants)]),
             " | ".join("---" for _ in range(3 + len(variants)))]
    for learner, shift, alignment in dict.fromkeys((c["learner"], c["shift"], c["alignment"]) for c in comps
                                                   if c["learner"] in FEATURE_LEARNERS):
        cells = [find(comps, learner=learner, shift=shift, variant=v, alignment=alignment, versus="pretrained")
                 for v in variants]
        lines.append(" | ".join([learner, shift, alignment, *("—" if c is None else _pts(c) for c in cells)]))
    return "\n".join(lines)


def probe_table(result: dict) -> str:
    """Linear-probe accuracy (%) and H-score of every backbone's frozen features, per shift."""
    lines = ["backbone | shift | linear probe (%) | H-score", "--- | --- | --- | ---"]
    for p in result["probes"]:
        lines.append(f"{VARIANT_NAMES[p['variant']]} | {p['shift']} | {100 * p['probe_acc']:.2f} | {p['H']:.2f}")
    return "\n".join(lines)


def drift_table(result: dict) -> str:
    """``finetune``'s feature drift ``1 − cos(f_t, f_0)`` at its last evaluation, mean ± std over seeds, per
    variant and shift (no alignment)."""
    rows = [r for r in result["rows"] if r.get("drift") and r["alignment"] == "none"]
    lines = ["backbone | shift | drift at the end of the stream | seeds", "--- | --- | --- | ---"]
    for variant, shift in dict.fromkeys((r["variant"], r["shift"]) for r in rows):
        last = [r["drift"][-1][1] for r in rows if (r["variant"], r["shift"]) == (variant, shift)]
        std = np.std(last, ddof=1) if len(last) > 1 else 0.0
        lines.append(f"{VARIANT_NAMES[variant]} | {shift} | {np.mean(last):.4f} ± {std:.4f} | {len(last)}")
    return "\n".join(lines)
