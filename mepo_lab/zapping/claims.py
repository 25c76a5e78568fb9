"""Summaries and the paper's claims as measured: mean ± std per regime, paired zap-vs-no-zap differences.

The two claims of Frati et al. (ECAI 2024, arXiv 2310.07996, abstract) checked here:

1. *zapping improves transfer accuracy and/or speed of adaptation*: for every regime (i.i.d., ASB,
   Meta-ASB), the paired difference over seeds, zap minus no zap, of the final continual-transfer accuracy,
   the i.i.d.-transfer accuracy and the early loss on fresh classes (negated: lower loss is faster);
2. *ASB + zap matches meta-learning without higher-order gradients*: ASB+zap's final continual-transfer
   accuracy against Meta-ASB+zap's, within 1 point.

A paired difference is *better* (or *worse*) when its 95 % interval ``d̄ ± t_{n−1,0.975} · s / √n``
(Student's t, as everywhere in the lab) lies above (below) zero, and *no measurable difference* otherwise.
"Matches" is *reproduced* when the interval of ASB+zap − Meta-ASB+zap lies above −1 point, *not
reproduced* when it lies below, *inconclusive* in between. With one seed no claim gets a verdict.
"""
from __future__ import annotations

import numpy as np

from mepo_lab.protocols.results import t_quantile_975

METRICS = {"final_accuracy": "continual transfer, final acc", "curve_auc": "continual transfer, mean acc",
           "iid_transfer_accuracy": "i.i.d. transfer acc", "zero_shot_accuracy": "zero-shot (least squares) acc",
           "early_loss": "early loss on a fresh class"}
MATCH_TOLERANCE = 0.01  # "matches": within 1 point of accuracy


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def _paired(rows: list[dict], a: str, b: str, metric: str, sign: float = 1.0) -> dict | None:
    """``sign · (metric(a) − metric(b))`` paired by seed: mean, standard error, seeds."""
    by = {(r["regime"], r["seed"]): r for r in rows}
    seeds = sorted(s for (reg, s) in by if reg == a and (b, s) in by)
    if not seeds:
        return None
    d = np.array([sign * (by[(a, s)][metric] - by[(b, s)][metric]) for s in seeds])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    half = t_quantile_975(len(d) - 1) * se if len(d) > 1 else float("nan")
    return {"difference": float(d.mean()), "se": se, "n": len(d), "low": float(d.mean()) - half,
            "high": float(d.mean()) + half}


def verdict(diff: dict) -> str:
    """``better`` / ``worse`` when the 95 % interval of the paired difference excludes zero, else ``no
    measurable difference``; with one seed, the sign only (``better (1 seed)``)."""
    m, n = diff["difference"], diff["n"]
    if n == 1:
        return ("better" if m > 0 else "worse" if m < 0 else "no measurable difference") + " (1 seed)"
    if diff["low"] > 0:
        return "better"
    return "worse" if diff["high"] < 0 else "no measurable difference"


def _zap_claims(rows: list[dict]) -> list[dict]:
    out = []
    for kind in ("iid", "asb", "meta"):
        parts = []
        for metric, sign in (("final_accuracy", 1.0), ("iid_transfer_accuracy", 1.0), ("early_loss", -1.0)):
            diff = _paired(rows, f"{kind}_zap", kind, metric, sign)
            if diff is not None:
                parts.append({"metric": metric if sign > 0 else f"{metric}_reduction", **diff, "verdict": verdict(diff)})
        if not parts:
            continue
        verdicts = [p["verdict"] for p in parts]
        overall = "needs 2+ seeds" if parts[0]["n"] < 2 else ("reproduced" if "better" in verdicts and "worse" not in verdicts else
                   "contradicted" if "worse" in verdicts and "better" not in verdicts else "not reproduced")
        out.append({"claim": "zapping improves transfer and/or speed of adaptation", "regime": kind,
                    "comparison": f"{kind}_zap − {kind}", "metrics": parts, "verdict": overall})
    return out


def _match_claim(rows: list[dict]) -> list[dict]:
    diff = _paired(rows, "asb_zap", "meta_zap", "final_accuracy")
    if diff is None:
        return []
    if diff["n"] < 2:
        outcome = "needs 2+ seeds"
    else:
        outcome = ("reproduced" if diff["low"] >= -MATCH_TOLERANCE else
                   "not reproduced" if diff["high"] < -MATCH_TOLERANCE else "inconclusive")
    return [{"claim": "ASB + zap matches meta-learning (Meta-ASB + zap) without higher-order gradients",
             "regime": "asb_zap", "comparison": "asb_zap − meta_zap",
             "metrics": [{"metric": "final_accuracy", **diff}], "verdict": outcome}]


def summarise(rows: list[dict]) -> tuple[dict, list[dict]]:
    """Per regime: mean ± std over seeds of every :data:`METRICS` entry and the wall time; and the claims."""
    summary: dict[str, dict] = {}
    for regime in dict.fromkeys(r["regime"] for r in rows):
        mine = [r for r in rows if r["regime"] == regime]
        summary[regime] = {m: _stats([r[m] for r in mine]) for m in METRICS}
        summary[regime]["seconds"] = _stats([r["seconds"]["total"] for r in mine])
    return summary, _zap_claims(rows) + _match_claim(rows)


def format_table(summary: dict) -> str:
    """A markdown table: regime × (final acc, mean acc, i.i.d. acc, zero-shot acc, early loss, seconds)."""
    head = "| regime | final acc (%) | mean acc (%) | i.i.d. transfer (%) | zero-shot (%) | early loss | s/run |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for regime, s in summary.items():
        pct = [f"{100 * s[m]['mean']:.1f} ± {100 * s[m]['std']:.1f}" for m in
               ("final_accuracy", "curve_auc", "iid_transfer_accuracy", "zero_shot_accuracy")]
        lines.append(f"| {regime} | " + " | ".join(pct) +
                     f" | {s['early_loss']['mean']:.2f} ± {s['early_loss']['std']:.2f} | {s['seconds']['mean']:.0f} |")
    return "\n".join(lines)


def format_claims(claims: list[dict]) -> str:
    """One line per claim and regime: the verdict and the paired differences behind it."""
    lines = []
    for c in claims:
        parts = ", ".join(f"{p['metric']} {_fmt(p)}" for p in c["metrics"])
        lines.append(f"- {c['claim']} [{c['comparison']}]: **{c['verdict']}** ({parts})")
    return "\n".join(lines)


def _fmt(p: dict) -> str:
    loss = p["metric"].startswith("early_loss")
    scale, unit = (1.0, "") if loss else (100.0, " pt")
    if p["n"] < 2:
        return f"{scale * p['difference']:+.2f}{unit} (1 seed)"
    return f"{scale * p['difference']:+.2f}{unit} [{scale * p['low']:+.2f}, {scale * p['high']:+.2f}] (n={p['n']})"
