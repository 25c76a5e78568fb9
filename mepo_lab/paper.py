"""Results against the paper: the verified numbers of MePo (arXiv 2602.07940) next to our runs.

``resources/paper_numbers.csv`` holds only what was verified in a primary source — today the abstract's
three gains — and marks everything else ``unknown`` (``docs/reference/mepo.md#results``). Our runs carry the protocol
columns that explain most gaps between papers (normalisation, evaluation period, batch size, online
iterations, training augmentation), read from each run record.
"""
from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

PROTOCOL = ("normalization", "eval_period", "batch_size", "online_iter")


def paper_numbers() -> list[dict]:
    """The rows of ``paper_numbers.csv`` (strings; ``value`` is empty where unknown)."""
    with resources.files("mepo_lab.resources").joinpath("paper_numbers.csv").open() as handle:
        return list(csv.DictReader(handle))


def our_rows(runs_dir: str | Path) -> list[dict]:
    """One row per run record in ``runs_dir/*.json`` with its metrics (in %) and protocol columns."""
    rows = []
    for path in sorted(Path(runs_dir).glob("*.json")):
        run = json.loads(path.read_text())
        gcl, meta = run.get("meta", {}).get("gcl", {}), run.get("meta", {})
        rows.append({"method": run["method"], "backbone": run["backbone"], "alignment": run["alignment"],
                     "seed": run["seed"], "dataset": meta.get("dataset", "synthetic"),
                     **{k: None if v is None else round(100 * v, 2) for k, v in run["metrics"].items()},
                     "normalization": meta.get("normalization", "world (0.5, 0.25)"),
                     **{k: gcl.get(k) for k in PROTOCOL[1:]},
                     "augment": meta.get("learner", {}).get("augment", "none (cached features)")})
    return rows


def comparison(runs_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """(paper rows, our rows), ready to print or to turn into data frames."""
    return paper_numbers(), our_rows(runs_dir)
