"""Run records: everything a GCL run measured, as plain data, saved atomically as JSON.

Every metric is a pure function of what is stored (anytime accuracies with their sample counts,
end-of-task and per-class accuracies, task boundaries), so students can recompute any metric
without re-training (the practice of Avalanche's and continuum's loggers: keep the raw accuracies,
derive the metrics).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mepo_lab import paths

METRIC_KEYS = ("A_auc", "A_last", "A_avg", "F_last")


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

    def save(self, path: str | Path) -> Path:
        """Write the whole record atomically (a killed run leaves the previous complete file)."""
        return paths.atomic_save_json(path, asdict(self))

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


def format_table(table: list[dict], by: tuple[str, ...] = ("method", "backbone", "alignment")) -> str:
    """A plain-text table of :func:`aggregate` in percent, ``mean ± std``."""
    head = [*by, "seeds", *METRIC_KEYS]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for e in table:
        cells = [str(e[k]) for k in by] + [str(e["n_seeds"])]
        cells += [f"{100 * e[m]:.2f} ± {100 * e[m + '_std']:.2f}" for m in METRIC_KEYS]
        lines.append(" | ".join(cells))
    return "\n".join(lines)
