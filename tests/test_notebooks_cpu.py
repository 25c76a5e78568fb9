"""Every notebook, top to bottom, at the ``cpu`` preset students run (slow: ``make test-notebooks-cpu``).

CI executes the notebooks in smoke mode (``make test``); this test runs them at the sizes of a course lab on
a laptop, in order 00 → 06 sharing one data home (as a student's checkout does), and records each
notebook's wall time in ``runs/notebook_times.json`` — the numbers the notebooks' headers quote.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest

from mepo_lab import paths

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMES = ROOT / "runs" / "notebook_times.json"


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)  # the suite's 600 s is for unit tests; 05 alone takes longer on 2 cores
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_the_cpu_preset(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.delenv("MEPO_LAB_SMOKE", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=3 * 3600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start  # a failing cell raised CellExecutionError above
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[path.stem] = {"seconds": round(seconds, 1), "cores": os.cpu_count(), "machine": platform.machine(),
                        "date": time.strftime("%Y-%m-%d"), "data_home": str(paths.data_home())}
    paths.atomic_save_json(TIMES, times)
