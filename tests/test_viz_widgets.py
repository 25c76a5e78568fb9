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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_committed_without_outputs_and_start_with_badge_and_install(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert "colab.research.google.com" in "".join(nb["cells"][0]["source"])
    assert "%pip install" in "".join(code[0]["source"])


def test_mepo_plots_draw():
    from mepo_lab.config import MePoConfig
    from mepo_lab.mepo.pseudo_tasks import PseudoTaskSampler
    from mepo_lab.viz.mepo import plot_alignment_errors, plot_pseudo_timeline, plot_refinement, plot_spectrum

    labels = np.repeat(np.arange(12), 10)
    sampler = PseudoTaskSampler(labels, MePoConfig(group_size=6, tasks_per_group=3, samples_per_class=4,
                                                   batch_size=8))
    for fig in (plot_pseudo_timeline(sampler), plot_refinement(REFINE_LOG, group_size=6),
                plot_spectrum({"I": np.eye(4)}),
                plot_alignment_errors([8, 16], {"official": [10.0, 9.0], "corrected": [1.0, 0.1]}, 12)):
        assert fig.axes
        plt.close(fig)


REFINE_LOG = [{"meta_epoch": e, "group": g, "seq_loss": 2.0, "seq_acc": 0.3, "joint_loss": 1.5, "joint_acc": 0.5,
               "inner_distance": 1.0} for e in range(2) for g in range(3)]


def test_refinement_plot_marks_meta_epochs_and_the_uniform_guess():
    from mepo_lab.viz.mepo import plot_refinement

    fig = plot_refinement(REFINE_LOG, group_size=40)
    loss = fig.axes[0]
    assert [ln.get_xdata()[0] for ln in loss.lines if ln.get_linestyle() == ":"] == [2.5]  # one epoch boundary
    dashed = [ln for ln in loss.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(np.log(40))
    plt.close(fig)


def test_forgetting_heatmap_masks_classes_not_seen_yet():
    from mepo_lab.viz.runs import plot_class_forgetting, seen_mask

    run = fake_run()  # 3 exposed classes; one seen at the end of task 0, three at the end of task 1
    run.task_end_n_seen = [1, 3]
    np.testing.assert_array_equal(seen_mask(run), [[True, False, False], [True, True, True]])
    run.task_end_n_seen = []  # an older record: inferred from the anytime evaluations
    np.testing.assert_array_equal(seen_mask(run), [[True, False, False], [True, True, True]])
    fig = plot_class_forgetting(run)
    mesh = fig.axes[0].collections[0]
    assert np.ma.count_masked(mesh.get_array()) == 2 and "not seen yet" in fig.axes[0].get_title()
    plt.close(fig)


def test_metric_panels_say_which_way_is_better_and_paired_differences_draw():
    from mepo_lab.protocols.results import paired_difference
    from mepo_lab.viz.runs import plot_metric_bars, plot_paired_differences

    rows = [fake_run(backbone=b, seed=s, drop=d).summary() for s, d in ((1, 0.3), (2, 0.1))
            for b in ("pretrained", "mepo")]
    fig = plot_metric_bars(rows)
    titles = [ax.get_title() for ax in fig.axes]
    assert "F_last (lower is better)" in titles and "A_auc (higher is better)" in titles
    plt.close(fig)
    diff = paired_difference(rows, {"backbone": "mepo"}, {"backbone": "pretrained"}, "F_last")
    fig = plot_paired_differences({"mepo − pretrained": diff})
    assert "lower is better" in fig.axes[0].get_title()
    plt.close(fig)


def test_ablation_explorer_runs_every_seed_with_the_chosen_knobs():
    from mepo_lab.widgets import ablation_explorer

    calls = []

    def run(n, m, n_tasks, stochastic, alpha, backbone, alignment, seed):
        calls.append((n, backbone, alignment, alpha, seed))
        return fake_run(seed=seed)

    panel = ablation_explorer(run, backbones=["pretrained", "mepo"], seeds=(1, 2))
    panel.knobs["backbone"].value, panel.knobs["alignment"].value = "mepo", "corrected"
    panel.knobs["alpha"].value, panel.knobs["n"].value = 0.3, 70
    panel.run()
    assert calls == [(70, "mepo", "corrected", 0.3, 1), (70, "mepo", "corrected", 0.3, 2)]
    assert len(panel.last) == 2 and panel.status.value.startswith("done in") and "A_auc 73.0%" in panel.status.value


def test_class_curves_of_a_run_without_anytime_evaluation():
    from mepo_lab.viz.runs import plot_class_curves

    run = fake_run()
    run.anytime_samples, run.anytime_acc, run.anytime_class_acc, run.anytime_n_seen = [], [], [], []
    fig = plot_class_curves(run, classes=range(3))  # a stream shorter than one eval period: nothing to draw
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("class #")]
    plt.close(fig)


def _markdown(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_follow_the_notebook_standard(path):
    """docs/notebook_standard.md: header, runtime measured, equations, a reading under every figure,
    conclusions, exercises with collapsed solutions."""
    nb = json.loads(path.read_text())
    header = "".join(nb["cells"][0]["source"])
    for part in ("**You will learn**", "**Before this**", "**Runtime**"):
        assert part in header, f"{path.name}: the header lacks {part}"
    assert "⟨" not in header, f"{path.name}: the runtime line still has placeholders"
    markdown = "\n".join(_markdown(nb))
    assert markdown.count("$") >= 20, f"{path.name}: the equations come before the code (LaTeX)"
    assert "## Conclusions" in markdown and "## Exercises" in markdown
    assert markdown.count("<details><summary>Solution</summary>") >= 3
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and "plt.show()" in "".join(cell["source"]):
            reading = next(("".join(c["source"]) for c in cells[i + 1:] if c["cell_type"] == "markdown"), "")
            assert "What you should see" in reading, f"{path.name}: cell {i} draws a figure without its reading"
