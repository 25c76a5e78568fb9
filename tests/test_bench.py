import math

import pytest

from mepo_lab.bench import format_report, run_benchmarks


def test_learner_and_gpu_benchmarks_report_rows(smoke_preset, smoke_home):
    report = run_benchmarks(smoke_preset, only=["learners", "augment", "gpu", "stream"], data_home=smoke_home)
    names = [r["name"] for r in report]
    assert any(n.startswith("dualprompt training throughput") for n in names)
    assert all(r["measured"] > 0 for r in report if "throughput" in r["name"])
    augment = [n for n in names if n.startswith("finetune throughput, augment")]
    assert [n.split("augment ")[1].split(" ")[0] for n in augment] == ["none", "flip", "protocol/batch",
                                                                        "protocol/sample"]
    stream = next(r for r in report if r["name"].startswith("stream build"))
    assert math.isclose(stream["ratio"], stream["measured"] / 0.3) and stream["kind"] == "<="
    text = format_report(report)
    assert "ratio" in text.splitlines()[0] and "stream build" in text


def test_refine_and_live_panel_benchmarks_report_ratios(smoke_preset, smoke_home):
    report = run_benchmarks(smoke_preset, only=["refine", "widgets"], data_home=smoke_home)
    rows = {r["name"].split(" (")[0].split(" /")[0]: r for r in report}
    refine = rows["MePo refinement"]
    assert refine["kind"] == "<=" and refine["measured"] > 0 and "steps" in refine["note"]
    memory = next(r for r in report if r["name"].startswith("tensor memory"))
    assert 0 < memory["measured"] < 10  # the anchor copy is counted (≈ 1), not every tensor of the process
    live = next(r for r in report if r["name"].startswith("live panel"))
    assert live["measured"] > 0 and live["target"] == 1.5 and "redraws of 50 evaluations" in live["note"]


def test_grid_benchmark_times_both_ways_and_measures_their_agreement(smoke_preset, smoke_home):
    rows = run_benchmarks(smoke_preset, only=["grid"], data_home=smoke_home)
    grid, *explorer = rows
    assert grid["unit"] == "x" and grid["kind"] == ">=" and grid["measured"] > 0
    assert grid["note"].endswith("largest accuracy difference between the two 0")  # batched = sequential
    assert [r["name"].rsplit(", ", 1)[1] for r in explorer] == ["none)", "official)", "corrected)"]
    assert all(r["unit"] == "s" and r["measured"] > 0 for r in explorer)


def test_passes_benchmark_counts_a_real_run_both_ways(smoke_preset):
    banked, wall = run_benchmarks(smoke_preset, only=["passes"])
    assert banked["unit"] == "x" and banked["measured"] == pytest.approx(0.5, abs=0.01) and banked["met"]
    assert "image passes" in banked["note"] and wall["measured"] > 0


def test_gpu_rows_measure_a_real_run_on_the_cpu(smoke_preset):
    """The GPU bench's full-run measurement, run here on the CPU with the smoke micro ViT and a tiny stream."""
    import torch

    from mepo_lab.backbones.micro_vit import create_micro_vit
    from mepo_lab.bench.gpu import gpu_rows

    vit = create_micro_vit(smoke_preset.vit, smoke_preset.world.image_size, seed=0)
    run, rate, evals, memory, share = gpu_rows(vit, torch.device("cpu"), (10, 20, 5), size=32)
    assert run["unit"] == "s" and run["target"] == 90.0 and 0 < run["measured"] < 90
    assert rate["measured"] > 0 and evals["measured"] == pytest.approx(0.5, abs=0.01)
    assert math.isnan(memory["measured"]) and math.isnan(share["measured"])  # no GPU: not measured, not made up


def test_step_rows_compare_eager_and_compiled_steps_on_the_cpu(smoke_preset):
    """The GPU bench's step comparison at a small scale: eager and compiled (aot_eager, no C compiler needed)."""
    import torch

    from mepo_lab.backbones.micro_vit import create_micro_vit
    from mepo_lab.bench.gpu import step_rows

    vit = create_micro_vit(smoke_preset.vit, smoke_preset.world.image_size, seed=0)
    eager, compiled = step_rows(vit, torch.device("cpu"), 32, settings=(("off", "default"), ("on", "default")),
                                steps=2, backend="aot_eager")
    assert eager["unit"] == compiled["unit"] == "img/s" and eager["measured"] > 0 and compiled["measured"] > 0
    assert compiled["target"] == pytest.approx(3 * eager["measured"])  # the 3x, against this run's eager
    assert "x eager" in compiled["note"] and "fell back" not in compiled["note"]


def test_misa_rows_run_with_prompts_of_the_learners_shapes(smoke_preset):
    import torch

    from mepo_lab.backbones.micro_vit import create_micro_vit
    from mepo_lab.bench.gpu import gpu_rows, misa_prompts
    from mepo_lab.learners import make_learner

    vit = create_micro_vit(smoke_preset.vit, smoke_preset.world.image_size, seed=0)
    (e, g), which = misa_prompts(vit)
    built = make_learner("misa", backbone=vit, prompts=(e, g)).build_prompts(int(vit.num_features))
    assert which == "random prompts of the released shapes"
    assert e.shape == built.e.prompts.shape and g.shape == built.g.shape  # what the learner holds
    assert torch.equal(built.e.prompts, e) and torch.equal(built.g, g)
    run, *_ = gpu_rows(vit, torch.device("cpu"), (10, 20, 5), size=32, learner="misa", prompts=(e, g), note=which)
    assert run["name"].startswith("MISA full fake CIFAR-100 run") and which in run["note"] and run["measured"] > 0
