import matplotlib.pyplot as plt
import numpy as np

from mepo_lab.mepo.toy import ToyTasks, forgetting, inner_trajectory, joint_optimum, reptile_path


def test_joint_optimum_zeroes_the_joint_gradient_and_reptile_reaches_it():
    tasks = ToyTasks()
    best = joint_optimum(tasks)
    np.testing.assert_allclose(tasks.grad(0, best), 0, atol=1e-12)
    path = reptile_path(tasks, np.array([0.0, -1.5]), eta=0.3, meta_iterations=60)
    assert np.linalg.norm(path[-1] - best) < 0.05 < np.linalg.norm(path[0] - best)
    assert forgetting(tasks, path[-1]) < forgetting(tasks, path[0])


def test_inner_trajectory_is_sequential_then_joint_and_eta_scales_the_step():
    tasks = ToyTasks()
    theta0 = np.array([0.5, 0.5])
    inner = inner_trajectory(tasks, theta0, lr=0.1, steps=3)
    assert inner.shape == (10, 2)
    np.testing.assert_allclose(inner[1], theta0 - 0.1 * tasks.grad(1, theta0))  # task 1 first
    np.testing.assert_allclose(inner[4], inner[3] - 0.1 * tasks.grad(2, inner[3]))  # then task 2
    for eta in (0.0, 0.5, 1.0):
        step = reptile_path(tasks, theta0, eta=eta, meta_iterations=1, lr=0.1, steps=3)[1]
        np.testing.assert_allclose(step, theta0 + eta * (inner[-1] - theta0))


def test_toy_figure_draws():
    from mepo_lab.viz.mepo import plot_reptile_toy

    fig = plot_reptile_toy(meta_iterations=5)
    assert len(fig.axes) == 2
    plt.close(fig)
