"""Live plots for runs that are going on: cheap to redraw, throttled, with a history of earlier runs.

* :class:`Throttle` — lets a live plot redraw only while its drawing time stays below ``max_overhead`` of the
  time the run has taken so far (the last state is always drawn), so watching a run live costs at most
  about that fraction on top of the bare run (``mepo-lab bench --only widgets`` measures it).
* :func:`show_figure` — renders a figure to PNG once and shows it in an ``Output`` (what the inline backend
  would do, but measurable and the same on Colab, Jupyter and headless test kernels).
* :class:`RunHistory` — the last ``k`` finished runs, drawn as grey curves under the current one.
* :class:`LivePlot` — a GCL-runner callback: anytime accuracy (with the history) and per-class curves.
* :class:`LiveRefinePlot` — a refinement callback: inner-loop curves; a refinement loaded from the cache is
  replayed from its log with a "loaded from cache" note.
"""
from __future__ import annotations

import io
import time
from collections import deque
from typing import Callable

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython import get_ipython
from IPython.display import Image, display

from mepo_lab.protocols.results import RunResult
from mepo_lab.viz.runs import plot_class_curves, run_label


class Throttle:
    """Allows a redraw when ``drawn + last_cost ≤ max_overhead · elapsed`` (seconds since :meth:`start`)."""

    def __init__(self, max_overhead: float = 0.2, clock: Callable[[], float] = time.perf_counter) -> None:
        if not 0 < max_overhead:
            raise ValueError(f"max_overhead must be positive, got {max_overhead}")
        self.max_overhead, self.clock = max_overhead, clock
        self.start()

    def start(self) -> None:
        """Restart the budget (a new run)."""
        self.t0, self.drawn, self.last_cost, self.skipped = self.clock(), 0.0, 0.0, 0

    def ready(self) -> bool:
        """Whether one more redraw fits the budget (counts a refusal in ``skipped``)."""
        ok = self.drawn + self.last_cost <= self.max_overhead * (self.clock() - self.t0)
        self.skipped += not ok
        return ok

    def record(self, seconds: float) -> None:
        """Book one redraw that took ``seconds``."""
        self.drawn, self.last_cost = self.drawn + seconds, seconds


def show_figure(fig, out: W.Output, dpi: int = 72) -> float:
    """Render ``fig`` to PNG, close it, show it in ``out`` (replacing what was there); returns the seconds taken."""
    start = time.perf_counter()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    if get_ipython() is not None:  # outside IPython (scripts, the bench) there is nowhere to show it
        with out:
            out.clear_output(wait=True)
            display(Image(data=buffer.getvalue()))
    return time.perf_counter() - start


class RunHistory:
    """The last ``k`` finished runs with a label each (what the knobs were), oldest first."""

    def __init__(self, k: int = 5) -> None:
        if k < 0:
            raise ValueError(f"history size k must be >= 0, got {k}")
        self.runs: deque[tuple[str, RunResult]] = deque(maxlen=k)

    def add(self, run: RunResult, label: str | None = None) -> None:
        self.runs.append((label or run_label(run), run))

    def clear(self) -> None:
        self.runs.clear()

    def __len__(self) -> int:
        return len(self.runs)


def _curve(run: RunResult) -> tuple[list[int], list[float]]:
    return list(run.anytime_points or run.anytime_samples), [100 * a for a in run.anytime_acc]


def draw_anytime(ax, run: RunResult, history: RunHistory | None = None) -> None:
    """Anytime accuracy of ``run`` over the grey curves of ``history`` (labels carry their A_auc)."""
    for i, (label, old) in enumerate(history.runs if history else ()):
        shade = str(0.45 + 0.4 * (len(history) - 1 - i) / max(len(history), 1))
        auc = old.metrics.get("A_auc")
        ax.plot(*_curve(old), color=shade, lw=1, label=f"{label}" + (f" (A_auc {100 * auc:.1f})" if auc else ""))
    ax.plot(*_curve(run), color="C0", lw=2, marker="o", ms=3, label=f"now: {run_label(run)}")
    for s in run.task_end_samples[:-1]:
        ax.axvline(s, color="0.6", ls=":", lw=1)
    ax.set(xlabel="samples seen", ylabel="accuracy on exposed classes (%)", ylim=(0, 100),
           title="anytime accuracy (dotted: task ends; grey: earlier runs)")
    ax.legend(fontsize=7, loc="lower left")


class LivePlot:
    """Runner callback: anytime accuracy (left, with ``history``) and per-class curves (right), throttled.

    Redraws on evaluations and task ends while the drawing costs stay under ``max_overhead`` of the run
    time so far (:class:`Throttle`), and always at the end of the run. ``out`` is the ``Output`` to draw
    into (a new one is displayed when omitted).
    """

    def __init__(self, out: W.Output | None = None, classes: int = 8, history: RunHistory | None = None,
                 max_overhead: float = 0.2, clock: Callable[[], float] = time.perf_counter) -> None:
        self.out = out if out is not None else W.Output()
        self.classes, self.history, self.n_evals, self.n_draws = classes, history, 0, 0
        self.throttle = Throttle(max_overhead, clock)
        if out is None:
            display(self.out)

    def draw(self, res: RunResult, final: bool = False) -> None:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
        draw_anytime(left, res, self.history)
        plot_class_curves(res, ax=right, classes=range(min(self.classes, len(res.exposed_classes))))
        status = f"{res.anytime_samples[-1] if res.anytime_samples else 0} samples, " \
                 f"{len(res.exposed_classes)} classes seen"
        if final:
            status += " — " + ", ".join(f"{k} {100 * v:.1f}" for k, v in res.metrics.items())
        fig.suptitle(f"{res.method} / {res.backbone}: {status}", fontsize=9)
        fig.tight_layout()
        self.throttle.record(show_figure(fig, self.out))
        self.n_draws += 1

    def on_run_start(self, res: RunResult) -> None:
        self.throttle.start()

    def on_eval(self, res: RunResult) -> None:
        self.n_evals += 1
        if self.throttle.ready():
            self.draw(res)

    def on_task_end(self, res: RunResult, task: int) -> None:
        if res.anytime_samples and self.throttle.ready():
            self.draw(res)

    def on_run_end(self, res: RunResult) -> None:
        self.draw(res, final=True)


class LiveRefinePlot:
    """Refinement callback: the inner-loop curves (:func:`mepo_lab.viz.mepo.plot_refinement`), throttled.

    ``group_size`` adds the ``ln(group_size)`` reference line. A refinement that is loaded from the cache
    (``on_cached``) is drawn from its stored log, with a note saying so.
    """

    def __init__(self, out: W.Output | None = None, group_size: int | None = None, max_overhead: float = 0.2,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.out, self.group_size, self.log = out if out is not None else W.Output(), group_size, []
        self.throttle, self.note, self.n_draws = Throttle(max_overhead, clock), "", 0
        if out is None:
            display(self.out)

    def draw(self) -> None:
        from mepo_lab.viz.mepo import plot_refinement

        fig = plot_refinement(self.log, group_size=self.group_size)
        if self.note:
            fig.suptitle(self.note, fontsize=9)
            fig.tight_layout()
        self.throttle.record(show_figure(fig, self.out))
        self.n_draws += 1

    def on_group_end(self, entry: dict) -> None:
        self.log.append(entry)
        if self.throttle.ready():
            self.draw()

    def on_epoch_end(self, entry: dict) -> None:
        self.draw()

    def on_cached(self, info: dict) -> None:
        """A finished refinement was loaded: replay its curves (nothing was trained)."""
        self.log = list(info.get("log", []))
        self.note = (f"loaded from cache: {info.get('meta_epoch', '?')} meta-epochs refined earlier "
                     f"({info.get('seconds', 0):.0f} s) in {info.get('folder', '?')}")
        self.draw()
