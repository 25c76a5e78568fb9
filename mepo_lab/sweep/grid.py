"""A sweep's grid from a TOML file: the cells (learner × backbone × alignment × dataset × seed × swept fields).

The file (``mepo-lab sweep GRID.toml``)::

    preset = "cpu"                      # optional (default cpu); MEPO_LAB_SMOKE=1 forces smoke
    [grid]
    learner = ["linear", "ncm"]         # required, like backbone and alignment
    backbone = ["pretrained", "mepo"]
    alignment = ["none", "corrected"]
    dataset = ["synthetic"]             # optional: the preset's dataset
    seed = [1, 2, 3]                    # optional: the preset's seeds
    [grid.set]                          # optional: any preset field swept as one more axis
    "align.alpha" = [0.3, 0.5]
    [set]                               # optional: fixed overrides of every cell
    "gcl.online_iter" = 1

Every combination is one :class:`Cell`; its ``name`` (learner, backbone, alignment, dataset, seed and the swept
values) names its run record. Names are checked up front (one clear error per problem), files and datasets when a
cell runs.
"""
from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from mepo_lab.config import PRESETS, get_preset, override
from mepo_lab.learners import LEARNERS
from mepo_lab.mepo.alignment import ALIGNMENTS

AXES = ("learner", "backbone", "alignment", "dataset", "seed")
REQUIRED = ("learner", "backbone", "alignment")


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: the preset name, the fixed and swept overrides, and the run's coordinates."""

    preset: str
    learner: str
    backbone: str
    alignment: str
    dataset: str
    seed: int
    set: dict[str, Any] = field(default_factory=dict)  # fixed overrides + this cell's swept values
    swept: dict[str, Any] = field(default_factory=dict)  # the swept values alone (part of the name)

    @property
    def name(self) -> str:
        """File-safe id: ``learner_backbone_alignment_dataset_seedS[_key=value…]`` (paths in names become a hash)."""
        extra = "".join(f"_{k}={v}" for k, v in sorted(self.swept.items()))
        raw = f"{self.learner}_{self.backbone}_{self.alignment}_{self.dataset}_seed{self.seed}{extra}"
        safe = re.sub(r"[^A-Za-z0-9._=+-]+", "-", raw)
        return safe if safe == raw else f"{safe}-{hashlib.sha1(raw.encode()).hexdigest()[:6]}"

    def as_dict(self) -> dict:
        return asdict(self)


def _listed(table: dict, key: str, where: str) -> list:
    value = table[key]
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError(f"{where}.{key} is empty: list at least one value")
    return values


def load_grid(path: str | Path) -> list[Cell]:
    """The cells of the TOML grid at ``path`` (module docstring for the format)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no grid file at {path}: write a TOML file with a [grid] table (see `mepo-lab sweep -h`)")
    try:
        spec = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    return cells_from(spec, str(path))


def cells_from(spec: dict, where: str = "the grid") -> list[Cell]:
    """The cells of a parsed grid ``spec`` (the TOML file as a dict)."""
    unknown = sorted(set(spec) - {"preset", "grid", "set"})
    if unknown:
        raise ValueError(f"{where}: unknown top-level key(s) {unknown}: use preset, [grid] and [set]")
    name = spec.get("preset", "cpu")
    if name not in PRESETS:
        raise ValueError(f"{where}: unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    grid, fixed = dict(spec.get("grid", {})), dict(spec.get("set", {}))
    swept = dict(grid.pop("set", {}))
    missing = [k for k in REQUIRED if k not in grid]
    if missing:
        raise ValueError(f"{where}: [grid] needs {', '.join(missing)} (lists of values)")
    extra = sorted(set(grid) - set(AXES))
    if extra:
        raise ValueError(f"{where}: unknown [grid] axis {extra}: axes are {', '.join(AXES)}; sweep other fields "
                         "under [grid.set]")
    preset = override(get_preset(name), fixed)  # a wrong --set style key fails here, naming the fix
    axes = {k: _listed(grid, k, "[grid]") if k in grid else None for k in AXES}
    axes["dataset"] = axes["dataset"] or [preset.dataset]
    axes["seed"] = axes["seed"] or list(preset.seeds)
    _check_names(axes, where)
    swept_axes = [(k, _listed(swept, k, "[grid.set]")) for k in sorted(swept)]
    for key, values in swept_axes:
        for v in values:
            override(preset, {key: v})
    cells = []
    for combo in itertools.product(*(axes[k] for k in AXES), *(v for _, v in swept_axes)):
        coords, values = combo[:len(AXES)], dict(zip((k for k, _ in swept_axes), combo[len(AXES):]))
        cells.append(Cell(name, *coords[:4], int(coords[4]), fixed | values, values))
    return cells


def _check_names(axes: dict, where: str) -> None:
    from mepo_lab.data import dataset_names
    from mepo_lab.registry import backbone_names

    patterns = {"dataset": ("imagefolder:",), "backbone": ("local:", "mepo:")}
    checks = {"learner": list(LEARNERS), "alignment": list(ALIGNMENTS), "dataset": dataset_names(),
              "backbone": backbone_names()}
    for axis, allowed in checks.items():
        bad = [v for v in axes[axis] if v not in allowed and not str(v).startswith(patterns.get(axis, ("\0",)))]
        if bad:
            raise ValueError(f"{where}: unknown {axis} {bad}: choose from {', '.join(map(str, allowed))}")
