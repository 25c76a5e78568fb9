"""Experiment grids as independent tasks, on this process or on a Ray cluster (``mepo-lab sweep GRID.toml``).

:mod:`~mepo_lab.sweep.grid` reads the grid (a TOML file) into cells; :mod:`~mepo_lab.sweep.run` runs them on the
``local`` engine (one after another, no extra dependency) or the ``ray`` engine (``pip install "mepo_lab[ray]"``),
skipping finished cells and reporting failing ones without stopping the others.
"""
from mepo_lab.sweep.grid import Cell, cells_from, load_grid
from mepo_lab.sweep.run import ENGINES, run_cell, run_sweep

__all__ = ["ENGINES", "Cell", "cells_from", "load_grid", "run_cell", "run_sweep"]
