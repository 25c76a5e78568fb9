"""Plots: streams, runs, the synthetic world, the seed methods. Functions return figures; they never call plt.show()."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def save_figure_set(result: dict, out: str | Path, figures: dict[str, Callable]) -> list[Path]:
    """Draw every ``figures[name](result)`` and save it as ``out/<name>.png`` (120 dpi); returns the paths."""
    import matplotlib.pyplot as plt

    saved = []
    for name, plot in figures.items():
        fig = plot(result)
        path = Path(out) / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        saved.append(path)
    return saved
