"""BECAME end to end: the multi-head models, the six methods' merge rules, results.json and resume, the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from mepo_lab.became.config import became_preset
from mepo_lab.became.models import alexnet, vit
from mepo_lab.config import override


@pytest.mark.parametrize("make", [lambda: alexnet([2, 3], image_size=32, width=0.1), lambda: vit([2, 3], 32)])
def test_multi_head_models_give_one_head_per_task(make):
    net = make()
    x = torch.rand(4, 3, 32, 32)
    assert net(x, 0).shape == (4, 2) and net(x, 1).shape == (4, 3)
    assert all(n.startswith("head.") for n, _ in net.named_parameters() if "head" in n.split(".")[0])
    with pytest.raises(ValueError, match="task must be in"):
        net(x, 2)


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory):
    from mepo_lab.became.run import run_became

    out = tmp_path_factory.mktemp("became")
    cfg = override(became_preset("smoke"), {"device": "cpu"})
    return cfg, out, run_became(cfg, out, progress=False)


def test_smoke_run_records_every_method_with_its_merge_rule(smoke_result):
    cfg, out, _ = smoke_result
    saved = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in saved["rows"]}
    assert list(rows) == list(cfg.methods)
    t = cfg.n_tasks
    assert rows["gpm_stage2"]["alpha"] == [None] + [1.0] * (t - 1)
    assert rows["avg"]["alpha"] == [None] + [pytest.approx(1 / (k + 1)) for k in range(1, t)]
    assert rows["half"]["alpha"] == [None] + [0.5] * (t - 1)
    assert rows["seqft"]["alpha"] == [None] * t and rows["gpm"]["alpha"] == [None] * t
    assert all(0.0 <= a <= 1.0 for a in rows["became"]["alpha"][1:])
    assert rows["seqft"]["memory"] is None and rows["gpm"]["memory"]  # only projecting methods keep a memory
    for r in rows.values():
        m = r["matrix"]
        assert len(m) == t and all(m[i][j] is None for i in range(t) for j in range(i + 1, t))
        assert r["ACC"] == pytest.approx(sum(m[-1]) / t)


def test_rerun_skips_finished_runs(smoke_result, monkeypatch):
    from mepo_lab.became import run

    cfg, out, result = smoke_result
    monkeypatch.setattr(run, "run_one", lambda *a, **k: pytest.fail("a finished run was recomputed"))
    assert run.run_became(cfg, out, progress=False)["rows"] == result["rows"]


def test_cli_became_and_bad_input(tmp_path, capsys):
    from mepo_lab.cli import main

    assert main(["became", "--preset", "smoke", "--out", str(tmp_path), "--no-progress",
                 "--set", "methods=seqft,became", "--set", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "| became |" in out and (tmp_path / "accuracy_matrices.png").exists()
    for bad, message in (("eps0=1.5", "eps0 must be in (0, 1)"), ("methods=ewc", "methods must be")):
        with pytest.raises(SystemExit) as err:
            main(["became", "--preset", "smoke", "--out", str(tmp_path), "--set", bad])
        assert err.value.code == 2 and message in capsys.readouterr().err


def test_became_command_on_fake_cifar100(tmp_path, capsys):
    """The real-data path on CIFAR-100 pickles in the real format (random pixels, offline)."""
    from mepo_lab.cli import main
    from tests.fakes import write_cifar100

    write_cifar100(tmp_path / "datasets" / "cifar100", train_per_class=3, test_per_class=2)
    out = tmp_path / "out"
    assert main(["became", "--preset", "smoke", "--data-home", str(tmp_path), "--out", str(out), "--no-progress",
                 "--no-verify", "--set", "data=cifar100", "--set", "n_tasks=2", "--set", "methods=gpm,became",
                 "--set", "device=cpu"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["gpm", "became"] and len(rows[1]["matrix"]) == 2
    with pytest.raises(SystemExit):  # random pixels do not match the real archive's checksum
        main(["became", "--preset", "smoke", "--data-home", str(tmp_path), "--out", str(tmp_path / "o2"),
              "--set", "data=cifar100", "--set", "n_tasks=2"])
    assert "mepo-lab: error" in capsys.readouterr().err


def test_run_one_is_reproducible_in_one_process():
    from mepo_lab.became.run import build_tasks, run_one

    cfg = override(became_preset("smoke"), {"device": "cpu"})
    tasks = build_tasks(cfg)
    first, second = (run_one(tasks, cfg, "became", 1) for _ in range(2))
    assert first["matrix"] == second["matrix"] and first["alpha"] == second["alpha"]
