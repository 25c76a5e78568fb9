"""H-embedding end to end: HyperCL keeps earlier tasks' generated weights, the guides, results.json and resume,
the CLI, and bad configurations."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from mepo_lab.hembed.config import HEMBED_PRESETS, HembedConfig


@pytest.fixture(scope="module")
def two_tasks(smoke_home):
    from mepo_lab.hembed import run

    cfg = replace(HEMBED_PRESETS["smoke"](), n_per_group=1, train_per_class=50, epochs=30, lr=2e-3,
                  methods=("hnet",), device="cpu")
    tasks, _ = run.build_tasks(cfg)
    return cfg, tasks, run.build_backbone(cfg, smoke_home)


def test_hypercl_keeps_task_one_and_beta_zero_does_not(two_tasks):
    from mepo_lab.hembed.run import run_one

    cfg, tasks, backbone = two_tasks
    kept = run_one(tasks, backbone, cfg, "hnet", 1)
    free = run_one(tasks, backbone, replace(cfg, beta=0.0), "hnet", 1)
    assert kept["drift"][0] < 0.05  # relative change of h(e_1) after task 2, with the regulariser
    assert free["drift"][0] > 0.30  # and without it
    r = kept["matrix"]
    assert r[1][0] >= r[0][0] - 0.02  # task-1 accuracy drop < 2 points


def test_guides_follow_the_method(two_tasks):
    from mepo_lab.hembed import run
    from mepo_lab.hembed.run import run_one

    cfg, _, backbone = two_tasks
    cfg = replace(cfg, n_per_group=2, epochs=2, emb_iters=20)
    tasks, _ = run.build_tasks(cfg)
    rows = {m: run_one(tasks, backbone, cfg, m, 1) for m in ("hnet", "hnet_random_guide", "hnet_hembedding")}
    assert rows["hnet"]["scores"] == [None] * 4 and rows["hnet"]["guides"] == {}
    for method in ("hnet_random_guide", "hnet_hembedding"):
        scores = rows[method]["scores"]
        assert scores[:2] == [None, None] and [len(s) for s in scores[2:]] == [2, 3]
        assert set(rows[method]["guides"]) == {"2", "3"} and len(rows[method]["guides"]["2"]) == cfg.temb
    assert all(0 <= s < 1 for s in rows["hnet_random_guide"]["scores"][3])
    h = np.array(rows["hnet_hembedding"]["hscore_matrix"])
    assert h.shape == (4, 4) and np.all((h >= -1e-9) & (h <= 1 + 1e-6))  # binary tasks: H <= |Y| - 1 = 1


def test_smoke_run_writes_results_resumes_and_plots(smoke_home, tmp_path, monkeypatch):
    from mepo_lab.hembed import run
    from mepo_lab.viz.hembed import save_hembed_figures

    cfg = replace(HEMBED_PRESETS["smoke"](), device="cpu")
    result = run.run_hembed(cfg, tmp_path, data_home=smoke_home, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in saved["rows"]] == list(cfg.methods) and saved["groups"][:2] == ["shape", "pattern"]
    row = saved["rows"][0]
    assert row["ACC"] == pytest.approx(np.mean(row["matrix"][-1])) and len(row["embeddings"]) == len(saved["groups"])
    monkeypatch.setattr(run, "run_one", lambda *a, **k: pytest.fail("a finished run was recomputed"))
    assert run.run_hembed(cfg, tmp_path, data_home=smoke_home, progress=False)["rows"] == result["rows"]
    paths = save_hembed_figures(result, tmp_path)
    assert {p.name for p in paths} == {"accuracy_matrices.png", "acc_bwt.png", "hscores.png", "embeddings.png"}


def test_cli_hembed_and_bad_input(smoke_home, tmp_path, capsys):
    from mepo_lab.cli import main

    assert main(["hembed", "--preset", "smoke", "--data-home", str(smoke_home), "--out", str(tmp_path),
                 "--no-progress", "--set", "methods=hnet", "--set", "device=cpu"]) == 0
    assert "| HNET (no guide) |" in capsys.readouterr().out
    for bad, message in (("emb_mode=mds", "emb_mode must be one of"), ("methods=ewc", "methods must be"),
                         ("epochs=0", "epochs must be >= 1")):
        with pytest.raises(SystemExit) as err:
            main(["hembed", "--preset", "smoke", "--out", str(tmp_path), "--set", bad])
        assert err.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("kw, match", [
    ({"world_preset": "huge"}, "world_preset must be one of"),
    ({"seeds": ()}, "seeds must list"),
    ({"beta": -1.0}, "beta and emb_beta must be >= 0"),
    ({"contrast": "some"}, "contrast must be one of"),
    ({"backbone": "vitx"}, "backbone must be pretrained, random"),
    ({"backbone": "dino"}, "target='mlp' runs on the micro ViT's features"),
    ({"target": "resnet"}, "target must be one of mlp, lora, resnet32"),
    ({"cifar100_tasks": 11}, r"cifar100_tasks in \[1, 10\]"),
])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        HembedConfig(**kw)


def test_unknown_method_is_refused(two_tasks):
    from mepo_lab.hembed.strategy import HnetStrategy

    cfg, _, backbone = two_tasks
    with pytest.raises(ValueError, match="unknown method 'ewc'"):
        HnetStrategy(backbone.model, [2, 2], "ewc", cfg)
