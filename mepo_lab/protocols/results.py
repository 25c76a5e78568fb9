"""Run records: everything a GCL run measured, as plain data, saved atomically as JSON.

Every metric is a pure function of what is stored (anytime accuracies with their sample counts,
end-of-task and per-class accuracies, task boundaries), so students can recompute any metric
without re-training (the practice of Avalanche's and continuum's loggers: keep the raw accuracies,
derive the metrics).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mepo_lab import paths

METRIC_KEYS = ("A_auc", "A_last", "A_avg", "F_last")
LOWER_IS_BETTER = ("F_last",)  # forgetting: a smaller value is the better one


@dataclass
class RunResult:
    """One GCL run. Accuracies are fractions in [0, 1]; NaN means "no test sample to evaluate"."""

    method: str
    backbone: str = "pretrained"
    alignment: str = "none"
    seed: int = 1
    stream_seed: int = 1
    train_seed: int = 1
    anytime_samples: list[int] = field(default_factory=list)  # samples seen at each evaluation
    anytime_points: list[int] = field(default_factory=list)  # the scheduled point (1000, 2000, ...)
    anytime_acc: list[float] = field(default_factory=list)
    anytime_class_acc: list[list[float]] = field(default_factory=list)
    anytime_n_seen: list[int] = field(default_factory=list)
    task_end_samples: list[int] = field(default_factory=list)
    task_end_acc: list[float] = field(default_factory=list)
    task_end_n_seen: list[int] = field(default_factory=list)  # classes exposed at each task end
    class_acc: list[list[float]] = field(default_factory=list)
    exposed_classes: list[int] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    finished: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The flat record of ``results.json``: method, backbone, alignment, seed, metrics, seconds."""
        return {"method": self.method, "backbone": self.backbone, "alignment": self.alignment,
                "seed": self.seed, **{k: self.metrics.get(k, float("nan")) for k in METRIC_KEYS},
                "wall_seconds": self.wall_seconds}

    def as_dict(self) -> dict[str, Any]:
        """Every field by name, shallow: the lists are the record's own (``dataclasses.asdict`` deep-copies every
        float of every evaluation, which cost a third of a warm quickstart when records are saved after every
        evaluation). Serialise it right away; do not mutate it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def save(self, path: str | Path) -> Path:
        """Write the whole record atomically (a killed run leaves the previous complete file)."""
        return paths.atomic_save_json(path, self.as_dict())

    @classmethod
    def load(cls, path: str | Path) -> "RunResult":
        data = json.loads(Path(path).read_text())
        return cls(**{k: _nan(v) if k == "metrics" else v for k, v in data.items()})


def _nan(metrics: dict) -> dict:
    return {k: float("nan") if v is None else v for k, v in metrics.items()}


def aggregate(rows: Iterable[dict], by: tuple[str, ...] = ("method", "backbone", "alignment")) -> list[dict]:
    """Mean and sample std (ddof 1, as the papers' ±) of each metric over seeds, per group."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    table = []
    for key, members in groups.items():
        entry = dict(zip(by, key)) | {"n_seeds": len(members)}
        for metric in METRIC_KEYS:
            vals = np.array([np.nan if m.get(metric) is None else m[metric] for m in members], float)
            vals = vals[~np.isnan(vals)]
            entry[metric] = float(vals.mean()) if len(vals) else math.nan
            entry[metric + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        table.append(entry)
    return table


# Two-sided 95 % quantiles t_{df, 0.975} of Student's t for df = 1 … 30 (any statistics table).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """``t_{df, 0.975}``: exact to 3 decimals for df ≤ 30, then the normal 1.96 plus a 1/df correction."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def paired_difference(rows: Iterable[dict], variant: dict, baseline: dict, metric: str = "A_auc") -> dict:
    """Gain of ``variant`` over ``baseline`` on ``metric``, paired by seed: mean, std and a t-interval.

    ``variant`` and ``baseline`` select rows by field values, e.g. ``{"backbone": "mepo", "alignment":
    "corrected"}``; rows with the same ``seed`` are paired, so the stream and initialisation noise that both
    runs share cancels out (the ± over seeds of each metric is much wider than the paired effect). With ``n``
    paired seeds, the 95 % interval is ``d̄ ± t_{n−1, 0.975} · s_d / √n`` (Student's t; none with one seed).
    Values are in the rows' units (fractions for the lab's metrics); ``per_seed`` lists the differences.
    """
    rows = list(rows)

    def pick(match: dict) -> dict:
        chosen = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
        seeds = [r["seed"] for r in chosen]
        if len(seeds) != len(set(seeds)):
            raise ValueError(f"{match} matches several rows of one seed: add the field that tells them apart "
                             "(e.g. method) so each seed has one value to pair")
        return {r["seed"]: r[metric] for r in chosen}

    a, b = pick(variant), pick(baseline)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed has both {variant} and {baseline} rows: run both on the same seeds")
    diff = np.array([a[s] - b[s] for s in seeds], float)
    mean, n = float(diff.mean()), len(diff)
    std = float(diff.std(ddof=1)) if n > 1 else 0.0
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"metric": metric, "mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half,
            "confidence": 0.95, "seeds": seeds, "per_seed": diff.tolist()}


def format_difference(diff: dict, percent: bool = True) -> str:
    """``+1.40 [+0.41, +2.39] (95 % t-interval, 3 paired seeds)`` from :func:`paired_difference`."""
    k = 100 if percent else 1
    if diff["n"] < 2:
        return f"{k * diff['mean']:+.2f} (one seed: no interval)"
    return (f"{k * diff['mean']:+.2f} [{k * diff['low']:+.2f}, {k * diff['high']:+.2f}] "
            f"({100 * diff['confidence']:.0f} % t-interval, {diff['n']} paired seeds)")


def describe_difference(diff: dict) -> str:
    """What a paired difference says: an improvement or a worsening the seeds agree on, no measurable effect, or
    too few seeds. Which sign is the improvement follows the metric (:data:`LOWER_IS_BETTER`)."""
    if diff["n"] < 2:
        return "one seed: no interval, so no verdict"
    if diff["low"] <= 0 <= diff["high"]:
        return "no measurable effect at this scale (the interval includes 0)"
    better = (diff["mean"] < 0) == (diff.get("metric") in LOWER_IS_BETTER)
    return f"{'an improvement' if better else 'a worsening'} the seeds agree on (the interval excludes 0)"


def format_table(table: list[dict], by: tuple[str, ...] = ("method", "backbone", "alignment")) -> str:
    """A plain-text table of :func:`aggregate` in percent, ``mean ± std``."""
    head = [*by, "seeds", *METRIC_KEYS]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for e in table:
        cells = [str(e[k]) for k in by] + [str(e["n_seeds"])]
        cells += [f"{100 * e[m]:.2f} ± {100 * e[m + '_std']:.2f}" for m in METRIC_KEYS]
        lines.append(" | ".join(cells))
    return "\n".join(lines)
