"""The bench report: one row per measurement, ``ratio ≤ 1`` meaning the target is met, and its text table.

``ratio = measured / target`` for "at most" targets and ``target / measured`` for "at least" targets, so
one column reads the same way everywhere. Targets live in the benchmarks, never as timed assertions in
tests.
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def row(name: str, measured: float, target: float, unit: str, at_most: bool, note: str = "") -> dict:
    """One report row; ``ratio`` is ``measured / target`` (``at_most``) or ``target / measured``: ≤ 1 is met."""
    ratio = measured / target if at_most else target / max(measured, 1e-12)
    return {"name": name, "measured": measured, "target": target, "unit": unit,
            "kind": "<=" if at_most else ">=", "ratio": ratio, "met": ratio <= 1.0, "note": note}


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Fastest wall time of ``repeat`` calls of ``fn`` (seconds): the least noisy estimate on a shared machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def format_report(report: list[dict]) -> str:
    """Fixed-width table: benchmark, measured, target, ratio (≤ 1 means the target is met)."""
    lines = [f"{'benchmark':58s} {'measured':>12s} {'target':>14s} {'ratio':>7s}"]
    for r in report:
        target = "" if r["target"] != r["target"] else f"{r['kind']} {r['target']:g} {r['unit']}"
        ratio = "" if r["ratio"] != r["ratio"] else f"{r['ratio']:.2f}"
        lines.append(f"{r['name']:58s} {r['measured']:9.2f} {r['unit']:>4s} {target:>14s} {ratio:>7s}"
                     + (f"  ({r['note']})" if r["note"] else ""))
    return "\n".join(lines)


def sync(device: torch.device | str) -> None:
    """Wait for the GPU's queued work before reading a clock (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
