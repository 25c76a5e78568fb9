"""Plots of MePo: pseudo task timelines, refinement curves, covariance spectra, alignment errors."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from mepo_lab.mepo.pseudo_tasks import PseudoTaskSampler


def plot_pseudo_timeline(sampler: PseudoTaskSampler, meta_epoch: int = 0, max_groups: int = 4, ax=None):
    """One meta-epoch as SGD steps: per group, its pseudo tasks in sequence, the joint pass, Reptile.

    Bar length = SGD steps (``inner_epochs · ⌈images / batch⌉`` per pseudo task, one pass for the joint
    set); labels give each pseudo task's classes; the ★ marks the Reptile step closing each group.
    """
    cfg, groups = sampler.cfg, sampler.epoch(meta_epoch)[:max_groups]
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 0.9 + 0.7 * len(groups)))
    ceil = lambda a, b: -(-a // b)  # noqa: E731
    colors = plt.get_cmap("tab20")
    for row, group in enumerate(groups):
        x = 0
        for t, task in enumerate(group.tasks):
            steps = cfg.inner_epochs * ceil(len(task.indices), cfg.batch_size)
            ax.barh(row, steps, left=x, color=colors(t % 20), edgecolor="white", lw=0.5)
            if len(group.tasks) <= 12:
                ax.text(x + steps / 2, row, ",".join(map(str, task.classes)), ha="center", va="center", fontsize=6)
            x += steps
        joint = ceil(len(group.joint), cfg.batch_size)
        ax.barh(row, joint, left=x, color="0.35", edgecolor="white", lw=0.5)
        ax.text(x + joint / 2, row, "joint", ha="center", va="center", color="white", fontsize=7)
        ax.plot(x + joint, row, marker="*", color="crimson", ms=12)
    ax.set_yticks(range(len(groups)), [f"group {g.group}\n({len(g.classes)} classes)" for g in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="SGD steps within the meta-iteration",
           title=f"meta-epoch {meta_epoch}: {sampler.n_groups} groups x {cfg.tasks_per_group} pseudo tasks "
                 f"(showing {len(groups)}); ★ = Reptile step")
    return ax.figure


def plot_refinement(log: Sequence[dict], axes=None, group_size: int | None = None):
    """Per meta-iteration: sequential and joint loss (left), accuracy (middle), inner distance (right).

    Dotted vertical lines separate meta-epochs (each reshuffles the classes into new groups). With
    ``group_size`` the loss panel also shows ``ln(group_size)``, the loss of a uniform guess over the
    group's classes: an inner loop that learns sits below it. (Under the official multiplicative mask the
    other pretraining classes stay in the softmax with logit 0, so an untrained head starts *above* it.)
    """
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3))
    it = np.arange(len(log))
    for key, label in (("seq", "sequential (pseudo tasks)"), ("joint", "joint pass")):
        axes[0].plot(it, [e[f"{key}_loss"] for e in log], label=label)
        axes[1].plot(it, [100 * e[f"{key}_acc"] for e in log], label=label)
    axes[2].plot(it, [e["inner_distance"] for e in log], color="C2")
    epochs = [e.get("meta_epoch", 0) for e in log]
    for i in range(1, len(log)):
        if epochs[i] != epochs[i - 1]:
            for ax in axes:
                ax.axvline(i - 0.5, color="0.6", ls=":", lw=1)
    if group_size:
        axes[0].axhline(np.log(group_size), color="crimson", ls="--", lw=1,
                        label=f"ln {group_size}: uniform guess in the group")
    axes[0].set(xlabel="meta-iteration", ylabel="cross-entropy", title="inner-loop loss (dotted: meta-epochs)")
    axes[1].set(xlabel="meta-iteration", ylabel="batch accuracy (%)", title="inner-loop accuracy")
    axes[2].set(xlabel="meta-iteration", ylabel="‖θ − θ0‖", title="distance moved before each Reptile step")
    axes[0].legend(fontsize=7)
    axes[0].figure.tight_layout()
    return axes[0].figure


def plot_spectrum(covariances: dict[str, np.ndarray], ax=None):
    """Eigenvalues (descending, log scale) of one or more covariance matrices."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    for name, cov in covariances.items():
        ev = np.sort(np.linalg.eigvalsh(np.asarray(cov, np.float64)))[::-1]
        ax.semilogy(np.arange(1, len(ev) + 1), np.clip(ev, 1e-12, None), label=name)
    ax.set(xlabel="eigenvalue rank", ylabel="eigenvalue", title="covariance spectrum")
    ax.legend(fontsize=8)
    return ax.figure


def plot_alignment_errors(batch_sizes: Sequence[int], errors: dict[str, Sequence[float]], dim: int, ax=None):
    """Relative error ‖cov(F̂) − Σ‖_F / ‖Σ‖_F against batch size, per mode (log-log), with B = d marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    for mode, err in errors.items():
        ax.loglog(batch_sizes, err, marker="o", label=mode)
    ax.axvline(dim, color="0.6", ls=":", lw=1)
    ax.text(dim, ax.get_ylim()[1], " B = d", va="top", fontsize=8, color="0.4")
    ax.set(xlabel="batch size B", ylabel="relative error of cov(F̂)", title="does the transform reach Σ?")
    ax.legend(fontsize=8)
    return ax.figure


def plot_reptile_toy(tasks=None, theta0=(0.0, -1.5), eta: float = 0.3, meta_iterations: int = 25, ax=None):
    """The bi-level loop on two 2-D quadratic pseudo tasks (:mod:`mepo_lab.mepo.toy`).

    Contours of task 1 (blue) and task 2 (orange); the first meta-iteration's inner loop (task 1, then task 2,
    then the joint pass) as a path; the Reptile step from θ0 a fraction η towards its end (red arrow); the
    meta-parameters after every update (black dots) and the joint optimum (star). The right panel: how much
    training on task 2 makes task 1 forget, from each meta-iterate.
    """
    from mepo_lab.mepo.toy import ToyTasks, forgetting, inner_trajectory, joint_optimum, reptile_path

    tasks = tasks or ToyTasks()
    if ax is None:
        _, (ax, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": (1.3, 1)})
    else:
        right = None
    grid = np.stack(np.meshgrid(np.linspace(-2, 2, 120), np.linspace(-2, 1.6, 120)), -1)
    for task, cmap in ((1, "Blues"), (2, "Oranges")):
        ax.contour(grid[..., 0], grid[..., 1], tasks.loss(task, grid), levels=8, cmap=cmap, linewidths=0.8)
    inner = inner_trajectory(tasks, np.asarray(theta0))
    steps = (len(inner) - 1) // 3
    for k, (color, label) in enumerate((("C0", "SGD on pseudo task 1"), ("C1", "then pseudo task 2"),
                                        ("0.3", "then the joint pass"))):
        seg = inner[k * steps:(k + 1) * steps + 1]
        ax.plot(seg[:, 0], seg[:, 1], "-", color=color, lw=1.5, marker=".", ms=3, label=label)
    meta = reptile_path(tasks, theta0, eta, meta_iterations)
    ax.annotate("", xy=meta[1], xytext=meta[0], arrowprops={"arrowstyle": "->", "color": "crimson", "lw": 2})
    ax.plot(meta[:, 0], meta[:, 1], "k.", ms=5, label=f"θ after each Reptile step (η = {eta})")
    best = joint_optimum(tasks)
    ax.plot(*best, "*", color="gold", mec="black", ms=14, label="joint optimum")
    ax.set(xlabel="θ₁", ylabel="θ₂", title="one meta-iteration and the meta-trajectory", aspect="equal")
    ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    if right is not None:
        right.plot([forgetting(tasks, th) for th in meta], marker="o", ms=3, label="from the meta-iterate")
        right.axhline(forgetting(tasks, best), color="gold", ls="--", label="from the joint optimum")
        right.set(xlabel="meta-iteration", ylabel="task-1 loss added by training on task 2",
                  title="forgetting along the meta-trajectory")
        right.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax.figure
