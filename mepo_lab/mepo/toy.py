"""Why a Reptile step over a *sequence* of tasks should help continual learning: a two-parameter toy.

Two pseudo tasks are quadratic bowls ``L_i(θ) = ½ (θ − c_i)ᵀ H_i (θ − c_i)`` with different centres and
curvatures. One meta-iteration trains the way MePo's inner loop does — ``k`` SGD steps on task 1, then
``k`` on task 2 (sequential), then ``k`` on ``L_1 + L_2`` (joint) — and moves the meta-parameters a fraction
``η`` of the way to where that trajectory ended (Reptile, Nichol et al., 2018, arXiv 1803.02999)::

    θ ← θ + η (θ_end − θ)

Nichol et al. show that, to second order in the step size, the expected Reptile update contains
``−α/2 · ∇(g_1 · g_2)`` besides the sum of the task gradients: it favours points where the gradients of
successive tasks *agree*, so that training on task 2 undoes less of task 1. :func:`forgetting` measures that
here — the loss on task 1 that training on task 2 adds. In this quadratic toy the curvatures do not change
with θ, so the agreement term has little room to act: the meta-trajectory ends next to the joint optimum
(:func:`joint_optimum`), with the forgetting of the joint solution. That is also what the lab measures on
its micro ViT (MePo's refined backbone ≈ the pretrained one); the term can only matter where the network's
curvature does change from place to place.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ToyTasks:
    """Two quadratic pseudo tasks in 2-D: centres ``c1, c2`` and curvatures ``h1, h2`` (2×2, SPD)."""

    c1: np.ndarray = field(default_factory=lambda: np.array([-1.0, 0.0]))
    c2: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.5]))
    h1: np.ndarray = field(default_factory=lambda: np.array([[3.0, 0.0], [0.0, 0.3]]))
    h2: np.ndarray = field(default_factory=lambda: np.array([[0.4, 0.3], [0.3, 2.5]]))

    def loss(self, task: int, theta: np.ndarray) -> np.ndarray:
        """``L_task(θ)``, vectorised over leading axes of ``theta`` (``(..., 2)``)."""
        c, h = (self.c1, self.h1) if task == 1 else (self.c2, self.h2)
        d = np.asarray(theta, float) - c
        return 0.5 * np.einsum("...i,ij,...j->...", d, h, d)

    def grad(self, task: int, theta: np.ndarray) -> np.ndarray:
        """``∇L_task(θ) = H (θ − c)``; task 0 is the joint loss ``L_1 + L_2``."""
        if task == 0:
            return self.grad(1, theta) + self.grad(2, theta)
        c, h = (self.c1, self.h1) if task == 1 else (self.c2, self.h2)
        return h @ (np.asarray(theta, float) - c)


def inner_trajectory(tasks: ToyTasks, theta: np.ndarray, lr: float = 0.15, steps: int = 8) -> np.ndarray:
    """The points visited by one meta-iteration's inner loop: ``steps`` SGD steps on task 1, task 2, joint."""
    path = [np.asarray(theta, float)]
    for task in (1, 2, 0):
        for _ in range(steps):
            path.append(path[-1] - lr * tasks.grad(task, path[-1]))
    return np.stack(path)


def reptile_path(tasks: ToyTasks, theta0: np.ndarray, eta: float = 0.3, meta_iterations: int = 25,
                 lr: float = 0.15, steps: int = 8) -> np.ndarray:
    """Meta-parameters after each Reptile update ``θ ← θ + η (θ_end − θ)``, starting at ``theta0``."""
    path = [np.asarray(theta0, float)]
    for _ in range(meta_iterations):
        end = inner_trajectory(tasks, path[-1], lr, steps)[-1]
        path.append(path[-1] + eta * (end - path[-1]))
    return np.stack(path)


def forgetting(tasks: ToyTasks, theta: np.ndarray, lr: float = 0.15, steps: int = 8) -> float:
    """How much a start at ``θ`` forgets: ``L_1`` after training on task 1 then task 2, minus ``L_1`` before task 2."""
    after_1 = np.asarray(theta, float)
    for _ in range(steps):
        after_1 = after_1 - lr * tasks.grad(1, after_1)
    after_2 = after_1
    for _ in range(steps):
        after_2 = after_2 - lr * tasks.grad(2, after_2)
    return float(tasks.loss(1, after_2) - tasks.loss(1, after_1))


def joint_optimum(tasks: ToyTasks) -> np.ndarray:
    """``argmin L_1 + L_2 = (H_1 + H_2)⁻¹ (H_1 c_1 + H_2 c_2)``."""
    return np.linalg.solve(tasks.h1 + tasks.h2, tasks.h1 @ tasks.c1 + tasks.h2 @ tasks.c2)
