"""The official / corrected switches of MePo's meta post-refinement, resolved in one place.

Each row is a documented discrepancy of the reference code (``docs/reference/mepo.md#quirks``) and one row of
the fidelity table in ``docs/fidelity.md``. A switch left at ``None`` in
:class:`~mepo_lab.config.MePoConfig` takes the value of ``MePoConfig.fidelity``; an explicit value
always wins, so single discrepancies can be toggled one at a time. Settings that are not a fix of the
reference are plain fields validated here too: ``head_reset`` (zapping, an ablation), ``repeat_draws`` (with
``n_repeats > 1``: fresh images in every repeat as the reference, or the first draw reused), ``schedule``
(``sequential`` = MePo, ``joint`` = the control that mixes each group's pseudo tasks) and ``amp``.
"""
from __future__ import annotations

from dataclasses import replace

from mepo_lab.config import MePoConfig

#: switch -> (official value, corrected value, allowed values)
SWITCHES: dict[str, tuple[object, object, tuple]] = {
    "logit_mask": ("multiply", "neg_inf", ("multiply", "neg_inf", "current_task")),
    "optimizer_state": ("persist", "reset", ("persist", "reset")),
    "class_index": ("double", "direct", ("double", "direct")),
    "joint_set": ("independent", "union", ("independent", "union")),
    "joint_augment": (False, True, (False, True)),
    "repeats": ("nested", "restart", ("nested", "restart")),
    "cov_augment": (True, False, (True, False)),
}
HEAD_RESETS = ("none", "per_sequence", "per_task")
REPEAT_DRAWS = ("fresh", "same")
SCHEDULES = ("sequential", "joint")
FIDELITIES = ("official", "corrected")


def resolve(cfg: MePoConfig) -> MePoConfig:
    """Fill every ``None`` switch from ``cfg.fidelity`` and validate all values (one clear error each)."""
    if cfg.fidelity not in FIDELITIES:
        raise ValueError(f"mepo.fidelity must be one of {', '.join(FIDELITIES)}, got {cfg.fidelity!r}")
    values = {}
    for name, (official, corrected, allowed) in SWITCHES.items():
        value = getattr(cfg, name)
        value = (official if cfg.fidelity == "official" else corrected) if value is None else value
        if value not in allowed:
            raise ValueError(f"mepo.{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        values[name] = value
    if cfg.head_reset not in HEAD_RESETS:
        raise ValueError(f"mepo.head_reset must be one of {', '.join(HEAD_RESETS)}, got {cfg.head_reset!r}")
    if cfg.repeat_draws not in REPEAT_DRAWS:
        raise ValueError(f"mepo.repeat_draws must be one of {', '.join(REPEAT_DRAWS)}, got {cfg.repeat_draws!r}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"mepo.schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    for name in ("group_size", "tasks_per_group", "samples_per_class", "inner_epochs", "batch_size",
                 "meta_epochs", "n_repeats", "cov_samples_per_class"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"mepo.{name} must be at least 1, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.meta_lr <= 1.0:
        raise ValueError(f"mepo.meta_lr (the Reptile step eta) must be in [0, 1], got {cfg.meta_lr}")
    if cfg.group_size % cfg.tasks_per_group:
        raise ValueError(f"mepo.group_size ({cfg.group_size}) must be a multiple of mepo.tasks_per_group "
                         f"({cfg.tasks_per_group}): each pseudo task gets group_size // tasks_per_group classes")
    return replace(cfg, **values)


def differences(cfg: MePoConfig) -> dict[str, tuple[object, object]]:
    """Switches whose resolved value differs from the official one: ``{name: (official, used)}``."""
    used = resolve(cfg)
    return {name: (official, getattr(used, name)) for name, (official, _, _) in SWITCHES.items()
            if getattr(used, name) != official}
