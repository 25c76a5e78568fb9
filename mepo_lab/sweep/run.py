"""Run a sweep's cells on an engine: ``local`` (this process) or ``ray`` (a Ray cluster), results gathered as they end.

Every cell is one task (:func:`run_cell`: build the preset, the backbone by name, one :func:`~mepo_lab.experiment.run_one`
run, its record written to ``out/runs/<cell>.json``). The driver keeps ``out/results.json`` (one flat row per
finished cell, in grid order, the rows of ``mepo-lab gcl`` plus ``cell`` and the swept fields) and
``out/failures.json`` (cell, error, traceback), both rewritten atomically whenever a cell ends. A cell whose
record is already finished is not run again; a failing cell is reported and the others go on.

``ray`` uses Ray's own scheduling (``ray.remote`` tasks with ``num_cpus``/``num_gpus`` requests, ``ray.wait``); it
joins the cluster at ``address`` or starts a local one. The workers get ``HF_HUB_OFFLINE``, ``MEPO_LAB_SMOKE`` and
``MEPO_LAB_DATA`` from the driver's environment. Cells that share a backbone fill its caches in the data home
(atomic writes: a race costs time, never a torn file).
"""
from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.protocols.results import RunResult
from mepo_lab.sweep.grid import Cell

ENGINES = ("local", "ray")
FORWARDED_ENV = ("HF_HUB_OFFLINE", "MEPO_LAB_SMOKE", "MEPO_LAB_DATA", "TQDM_DISABLE")


def record_path(out: str | Path, cell: Cell) -> Path:
    """Where the run record of ``cell`` is kept."""
    return Path(out) / "runs" / f"{cell.name}.json"


def _row(run: RunResult, cell: Cell) -> dict:
    return run.summary() | {"dataset": cell.dataset, "cell": cell.name, **cell.swept}


def run_cell(cell: dict, out: str, data_home: str | None = None) -> dict:
    """Run one cell (a :meth:`Cell.as_dict`) and return its flat result row; the record goes to ``out/runs``."""
    from mepo_lab.config import get_preset, override
    from mepo_lab.experiment import run_one
    from mepo_lab.registry import get_backbone

    c = Cell(**cell)
    preset = override(get_preset(c.preset), c.set)
    backbone = get_backbone(c.backbone, preset, data_home, progress=False)
    run = run_one(preset, c.learner, backbone, c.seed, alignment=c.alignment, dataset=c.dataset,
                  data_home=data_home, progress=False, out_path=record_path(out, c), resume=True)
    return _row(run, c)


def _finished(out: Path, cell: Cell) -> dict | None:
    path = record_path(out, cell)
    if not path.exists():
        return None
    try:
        run = RunResult.load(path)
    except (ValueError, TypeError):  # a torn or foreign file: run the cell again
        return None
    return _row(run, cell) if run.finished else None


def run_sweep(cells: list[Cell], out: str | Path, *, engine: str = "local", address: str | None = None,
              cpus_per_run: float = 1.0, gpus_per_run: float = 0.0, data_home: str | Path | None = None,
              progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run every cell not finished yet on ``engine``; returns ``{"rows", "failures", "skipped", "seconds"}``."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ValueError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, got {cpus_per_run} and {gpus_per_run}")
    out, start = Path(out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    for cell in cells:
        done = _finished(out, cell)
        if done is not None:
            rows[cell.name] = done
    todo = [c for c in cells if c.name not in rows]
    failures: dict[str, dict] = {}
    log(f"sweep: {len(cells)} cells, {len(rows)} finished before, {len(todo)} to run on {engine}")

    def gather(cell: Cell, row: dict | None, error: BaseException | str | None = None) -> None:
        if row is not None:
            rows[cell.name] = row
        else:
            text = error if isinstance(error, str) else "".join(traceback.format_exception(error))
            failures[cell.name] = {"cell": cell.as_dict(), "error": text.strip().splitlines()[-1], "traceback": text}
            log(f"      cell {cell.name} failed: {failures[cell.name]['error']}")
        paths.atomic_save_json(out / "results.json", [rows[c.name] for c in cells if c.name in rows])
        paths.atomic_save_json(out / "failures.json", list(failures.values()))
        bar.update(1)

    with tqdm(total=len(todo), desc=f"sweep ({engine})", disable=not progress, unit="cell") as bar:
        if engine == "local":
            _local(todo, out, data_home, gather)
        else:
            _ray(todo, out, data_home, gather, address, cpus_per_run, gpus_per_run)
    return {"rows": [rows[c.name] for c in cells if c.name in rows], "failures": list(failures.values()),
            "skipped": len(cells) - len(todo), "seconds": time.perf_counter() - start}


def _local(todo: list[Cell], out: Path, data_home, gather) -> None:
    for cell in todo:
        try:
            gather(cell, run_cell(cell.as_dict(), str(out), None if data_home is None else str(data_home)))
        except Exception as err:  # noqa: BLE001 - one failing cell must not stop the sweep
            gather(cell, None, err)


def _ray(todo: list[Cell], out: Path, data_home, gather, address, cpus: float, gpus: float) -> None:
    try:
        import ray
    except ImportError:
        raise ImportError("the ray engine needs Ray: pip install \"mepo_lab[ray]\" (or use --engine local)") from None
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_cell)
        pending = {task.remote(c.as_dict(), str(out.resolve()), None if data_home is None else str(data_home)): c
                   for c in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                gather(cell, ray.get(ready[0]))
            except Exception as err:  # noqa: BLE001 - a task error, or its worker died: report, go on
                gather(cell, None, str(err))
    finally:
        if started:
            ray.shutdown()
