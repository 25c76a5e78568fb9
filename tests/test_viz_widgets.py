import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from mepo_lab.protocols.results import RunResult, aggregate, format_table

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def fake_run(method="linear", backbone="pretrained", seed=1, drop=0.3):
    return RunResult(method=method, backbone=backbone, seed=seed,
                     anytime_samples=[100, 200, 300], anytime_acc=[0.9, 0.7, 0.6],
                     anytime_class_acc=[[0.9, 0, 0], [0.8, 0.6, 0], [0.9 - drop, 0.5, 0.7]],
                     anytime_n_seen=[1, 2, 3], task_end_samples=[150, 320], task_end_acc=[0.8, 0.6],
                     class_acc=[[0.9, 0.0, 0.0], [0.9 - drop, 0.5, 0.7]], exposed_classes=[4, 1, 2],
                     metrics={"A_auc": 0.73, "A_last": 0.6, "A_avg": 0.7, "F_last": drop})


def test_run_plots_draw_without_error():
    from mepo_lab.viz.runs import plot_anytime, plot_class_curves, plot_class_forgetting, plot_metric_bars

    runs = [fake_run(seed=1), fake_run(seed=2, drop=0.1), fake_run(backbone="random")]
    for fig in (plot_anytime(runs), plot_class_forgetting(runs[0]), plot_class_curves(runs[0]),
                plot_metric_bars([r.summary() for r in runs])):
        assert fig.axes
        plt.close(fig)


def test_aggregate_mean_and_sample_std():
    rows = [fake_run(seed=1, drop=0.3).summary(), fake_run(seed=2, drop=0.1).summary(),
            fake_run(backbone="random").summary()]
    table = aggregate(rows)
    pre = next(t for t in table if t["backbone"] == "pretrained")
    assert pre["n_seeds"] == 2 and pre["F_last"] == pytest.approx(0.2)
    assert pre["F_last_std"] == pytest.approx(np.std([0.3, 0.1], ddof=1))
    assert "20.00 ± 14.14" in format_table(table)


def test_world_plots(smoke_preset):
    from mepo_lab.data.synthetic import SyntheticWorld
    from mepo_lab.viz.world import plot_factors, plot_gallery, plot_training_curve

    world = SyntheticWorld(smoke_preset.world)
    for fig in (plot_gallery(world, per_class=2), plot_factors(world),
                plot_training_curve([{"epoch": 0, "loss": 5, "acc": 0.1}, {"epoch": 1, "loss": 3, "acc": 0.4}])):
        assert fig.axes
        plt.close(fig)


def test_live_run_panel_runs_headless():
    from mepo_lab.widgets import LivePlot, live_run_panel, stream_explorer

    calls = []

    def run(n, m, n_tasks, seed, stochastic, callbacks):
        calls.append((n, m, n_tasks, seed, stochastic))
        res = fake_run()
        for cb in callbacks:
            cb.on_eval(res)
            cb.on_run_end(res)
        return res

    panel = live_run_panel(run)
    panel.run()
    assert calls == [(50, 10, 5, 1, True)]
    assert stream_explorer(np.repeat(np.arange(10), 20)) is not None
    live = LivePlot(every=2)
    for _ in range(3):
        live.on_eval(fake_run())  # draws on the 2nd evaluation only; must not raise headless
    assert live.n_evals == 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_committed_without_outputs_and_start_with_badge_and_install(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert "colab.research.google.com" in "".join(nb["cells"][0]["source"])
    assert "%pip install" in "".join(code[0]["source"])


def test_mepo_plots_and_pseudo_task_explorer():
    from mepo_lab.config import MePoConfig
    from mepo_lab.mepo.pseudo_tasks import PseudoTaskSampler
    from mepo_lab.viz.mepo import plot_alignment_errors, plot_pseudo_timeline, plot_refinement, plot_spectrum
    from mepo_lab.widgets import LiveRefinePlot, pseudo_task_explorer

    labels = np.repeat(np.arange(12), 10)
    sampler = PseudoTaskSampler(labels, MePoConfig(group_size=6, tasks_per_group=3, samples_per_class=4,
                                                   batch_size=8))
    log = [{"seq_loss": 2.0, "seq_acc": 0.3, "joint_loss": 1.5, "joint_acc": 0.5, "inner_distance": 1.0}] * 3
    for fig in (plot_pseudo_timeline(sampler), plot_refinement(log), plot_spectrum({"I": np.eye(4)}),
                plot_alignment_errors([8, 16], {"official": [10.0, 9.0], "corrected": [1.0, 0.1]}, 12)):
        assert fig.axes
        plt.close(fig)
    assert pseudo_task_explorer(labels, group_size=6, tasks_per_group=3, samples_per_class=4) is not None
    live = LiveRefinePlot(every=2)
    for entry in log:
        live.on_group_end(entry)
    assert len(live.log) == 3


def test_ablation_explorer_runs_every_seed():
    from mepo_lab.widgets import ablation_explorer

    calls = []

    def run(n, m, n_tasks, stochastic, alpha, backbone, alignment, seed):
        calls.append((backbone, alignment, alpha, seed))
        return fake_run(seed=seed)

    panel = ablation_explorer(run, backbones=["pretrained", "mepo"], seeds=(1, 2))
    panel.run()
    assert calls == [("pretrained", "none", 0.5, 1), ("pretrained", "none", 0.5, 2)]
