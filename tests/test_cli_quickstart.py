import json
import subprocess
import sys

import pytest

from mepo_lab.cli import build_parser, main
from mepo_lab.protocols.results import METRIC_KEYS
from mepo_lab.quickstart import QUICKSTART_GRID


def test_stream_command_prints_reference_task_sizes(tmp_path, capsys):
    out = tmp_path / "raster.png"
    main(["stream", "--n", "50", "--m", "10", "--n-tasks", "5", "--seed", "1", "--classes", "100",
          "--per-class", "500", "--out", str(out)])
    text = capsys.readouterr().out
    for size in ("6500", "3000", "10264", "22000", "8236"):
        assert size in text
    assert out.stat().st_size > 1000


def test_stream_flags_come_from_the_dataclass():
    args = build_parser().parse_args(["stream", "--no-stochastic", "--n-tasks", "4"])
    assert args.stochastic is False and args.n_tasks == 4 and args.m == 10


@pytest.mark.parametrize("argv, message", [
    (["stream", "--n", "140"], "n must be in [0, 100], got 140"),
    (["stream", "--set", "world.colour=1"], "unknown setting 'world.colour'"),
    (["bench", "--only", "warp"], "unknown benchmark(s) warp"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["gcl", "--backbone", "resnet50"], "unknown backbone 'resnet50': choose one of random, pretrained, mepo, sup21k"),
    (["gcl", "--backbone", "mepo:vit_l"], "local:<path>, mepo:sup21k, mepo:sup1k, mepo:ibot21k"),
    (["gcl", "--dataset", "mnist"], "unknown dataset 'mnist': choose one of synthetic, cifar100, imagenet-r"),
    (["refine", "--pretrain-data", "imagefolder:"], "imagefolder:<path>"),
    (["gcl", "--learner", "ewc"], "invalid choice: 'ewc'"),
    (["gcl", "--normalization", "zca"], "invalid choice: 'zca'"),
])
def test_names_are_checked_against_the_registries(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err


def test_a_newly_registered_learner_is_reachable_from_the_cli(monkeypatch):
    from mepo_lab.learners import LEARNERS, LinearLearner

    class ToyLearner(LinearLearner):
        name = "toy"

    monkeypatch.setitem(LEARNERS, "toy", ToyLearner)
    args = build_parser().parse_args(["gcl", "--learner", "toy", "--backbone", "mepo:sup21k", "--align",
                                      "corrected", "--normalization", "imagenet", "--dataset", "imagefolder:/x"])
    assert (args.learner, args.backbone, args.dataset) == ("toy", "mepo:sup21k", "imagefolder:/x")


def test_unknown_preset_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["quickstart", "--preset", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_quickstart_smoke_writes_results_and_figures(tmp_path, smoke_home, monkeypatch):
    monkeypatch.setenv("MEPO_LAB_SMOKE", "1")
    out = tmp_path / "qs"
    main(["quickstart", "--preset", "cpu", "--out", str(out), "--data-home", str(smoke_home), "--no-progress"])
    rows = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["backbone"], r["alignment"]) for r in rows} == set(QUICKSTART_GRID)
    assert {r["backbone"] for r in rows} == {"random", "pretrained", "mepo"}
    assert {r["alignment"] for r in rows} == {"none", "official", "corrected"}
    for row in rows:
        assert {"method", "backbone", "alignment", "seed", *METRIC_KEYS, "wall_seconds"} <= set(row)
        assert 0 <= row["A_last"] <= 1
    for name in ("anytime_accuracy", "class_forgetting", "stream_raster", "metrics", "mepo", "mepo_gain"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert len(list((out / "runs").glob("*.json"))) == len(rows)


def test_mepo_gains_pair_each_ingredient_with_the_plain_pretrained_backbone():
    from mepo_lab.experiment import mepo_gains

    rows = [{"method": "linear", "backbone": b, "alignment": a, "seed": s, "A_auc": base + gain}
            for s, base in ((1, 0.40), (2, 0.50))
            for b, a, gain in (("pretrained", "none", 0.0), ("mepo", "none", -0.01), ("mepo", "corrected", 0.02))]
    gains = mepo_gains(rows)
    assert list(gains) == ["refined backbone only", "MePo + corrected alignment"]  # only what was run
    assert gains["MePo + corrected alignment"]["mean"] == pytest.approx(0.02)
    assert gains["refined backbone only"]["n"] == 2
    assert mepo_gains([r for r in rows if r["backbone"] == "mepo"]) == {}


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "mepo_lab.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "mepo_lab 0.1.0" in result.stdout


def test_gcl_command_with_mepo_and_alignment(tmp_path, smoke_home, monkeypatch):
    monkeypatch.setenv("MEPO_LAB_SMOKE", "1")
    out = tmp_path / "gcl"
    main(["gcl", "--backbone", "mepo", "--align", "corrected", "--alpha", "0.3", "--out", str(out),
          "--data-home", str(smoke_home), "--no-progress"])
    rows = json.loads((out / "results.json").read_text())
    assert [(r["backbone"], r["alignment"]) for r in rows] == [("mepo", "corrected")]
    run = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert run["meta"]["alpha"] == 0.3


@pytest.mark.parametrize("learner, align", [("misa", "corrected"), ("finetune", "official")])
def test_gcl_command_runs_an_image_learner_with_mepo(tmp_path, smoke_home, monkeypatch, learner, align):
    """The MePo plug-in on an image learner: refined backbone + alignment of the CLS feature before the head."""
    monkeypatch.setenv("MEPO_LAB_SMOKE", "1")
    out = tmp_path / learner
    main(["gcl", "--learner", learner, "--backbone", "mepo", "--align", align, "--out", str(out),
          "--data-home", str(smoke_home), "--no-progress", "--set", "align.official_singleton=skip"])
    row = json.loads((out / "results.json").read_text())[0]
    assert (row["method"], row["backbone"], row["alignment"]) == (learner, "mepo", align)
    run = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert run["meta"]["learner"]["transform"] == align
    if learner == "misa":
        assert run["meta"]["gcl"]["train_mask"] == "batch"


def test_empty_seed_list_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["gcl", "--set", "seeds=", "--no-progress"])
    assert exc.value.code == 2 and "seeds= is empty: give at least one value" in capsys.readouterr().err
