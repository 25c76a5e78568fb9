"""PURER end to end at the smoke preset: the meta-learning rows, the switch, data-free MePo, results.json and
resume, the figures and the CLI; ICFIL's calibrated teacher; bad configurations."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from mepo_lab.purer.config import PURER_PRESETS, PurerConfig


@pytest.fixture(scope="module")
def smoke_run(smoke_home, tmp_path_factory):
    from mepo_lab.purer.run import run_purer

    out = tmp_path_factory.mktemp("purer")
    cfg = replace(PURER_PRESETS["smoke"](), device="cpu")
    return cfg, out, run_purer(cfg, out, data_home=smoke_home, progress=False)


def test_smoke_run_records_every_method_and_the_mepo_comparison(smoke_run):
    cfg, out, _ = smoke_run
    saved = json.loads((out / "results.json").read_text())
    meta = [r for r in saved["rows"] if r["kind"] == "meta"]
    assert [r["method"] for r in meta] == list(cfg.methods) and all(0 <= r["acc"] <= 1 for r in meta)
    eci = next(r for r in meta if r["method"] == "eci")
    assert eci["fired"] and eci["fired"][0] == cfg.adv_start + 1  # the step after the switch fired at adv_start
    assert next(r for r in meta if r["method"] == "ei")["fired"] == []
    assert {r["backbone"] for r in saved["rows"] if r["kind"] == "mepo"} == {"pretrained", "mepo_real",
                                                                              "mepo_data_free"}
    assert (out / f"snapshots_{cfg.shots[0]}.npz").exists() and saved["inversion"]["steps"] == cfg.mepo_steps


def test_meta_training_moves_the_averaged_teachers(smoke_home):
    """ECI/EI start from the teachers' average and must train it (frozen teachers must not freeze the copy)."""
    from mepo_lab.purer import run
    from mepo_lab.purer.eci import meta_train
    from mepo_lab.purer.teachers import teacher_average

    cfg = replace(PURER_PRESETS["smoke"](), iterations=3, device="cpu")
    teachers = run.build_teachers(cfg, run.build_data(cfg)[0], torch.device("cpu"))
    for adversarial in (False, True):
        model = teacher_average(teachers, cfg.n_way)
        before = [p.detach().clone() for p in model.parameters()]
        meta_train(model, teachers, cfg, 1, adversarial=adversarial)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_rerun_skips_finished_work_and_figures_are_drawn(smoke_run, smoke_home, monkeypatch):
    from mepo_lab.purer import run
    from mepo_lab.viz.purer import save_purer_figures

    cfg, out, result = smoke_run
    monkeypatch.setattr(run, "meta_rows", lambda *a, **k: pytest.fail("a finished meta run was recomputed"))
    monkeypatch.setattr(run, "mepo_rows", lambda *a, **k: pytest.fail("the MePo comparison was recomputed"))
    again = run.run_purer(cfg, out, data_home=smoke_home, progress=False)
    assert again["rows"] == result["rows"]
    names = {p.name for p in save_purer_figures(again, out)}
    assert {"meta_test.png", "switch.png", "mepo.png", f"snapshots_{cfg.shots[0]}.png"} <= names


def test_icfil_teacher_is_the_adapted_model_with_support_statistics():
    from mepo_lab.purer.icfil import adapted_copy
    from mepo_lab.purer.meta import MetaLearner
    from mepo_lab.purer.models import conv4

    model = conv4(3, width=4, image_size=16, seed=0)
    sx, sy = torch.rand(6, 3, 16, 16), torch.tensor([0, 0, 1, 1, 2, 2])
    twin = adapted_copy(model, MetaLearner("maml"), sx, sy, 3)
    bn = next(m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = (sx - model.mean) / model.std
    conv = next(m for m in twin.modules() if isinstance(m, torch.nn.Conv2d))
    torch.testing.assert_close(bn.running_mean, conv(x).mean((0, 2, 3)))
    assert not torch.equal(twin.head.weight, torch.zeros_like(twin.head.weight))  # adapted from a zero head
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), conv4(3, 4, image_size=16,
                                                                                     seed=0).state_dict().values()))
    with pytest.raises(ValueError, match="protonet"):
        adapted_copy(model, MetaLearner("protonet"), sx, sy, 3)


def test_cli_purer_and_bad_input(smoke_home, tmp_path, capsys):
    from mepo_lab.cli import main

    assert main(["purer", "--preset", "smoke", "--data-home", str(smoke_home), "--out", str(tmp_path),
                 "--no-progress", "--set", "methods=random_init,teacher_average", "--set", "data_free_mepo=false",
                 "--set", "device=cpu"]) == 0
    assert "| teacher_average |" in capsys.readouterr().out
    for bad, message in (("n_way=30", "n_way must be in"), ("q_query=50", "K + Q"), ("meta_learner=reptile",
                                                                                      "meta_learner must be one of")):
        with pytest.raises(SystemExit) as err:
            main(["purer", "--preset", "smoke", "--out", str(tmp_path), "--set", bad])
        assert err.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("kw, match", [
    ({"methods": ("maml",)}, "methods must be"), ({"shots": ()}, "shots must list"),
    ({"image_size": 8}, "image_size must be >= 16"), ({"seeds": ()}, "seeds must list"),
    ({"meta_learner": "protonet"}, "ProtoNet does not have"),
])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        PurerConfig(**kw)


def test_inverted_pretraining_images_are_cached_and_labelled(smoke_home):
    from mepo_lab.config import get_preset
    from mepo_lab.purer import mepo_link
    from mepo_lab.registry import get_backbone

    preset = get_preset("smoke")
    source = get_backbone("pretrained", preset, smoke_home, progress=False)
    classes = mepo_link.class_subset(preset, 4)
    first = mepo_link.invert_pretraining(preset, source, 3, 2, classes=classes, data_home=smoke_home, progress=False)
    images, labels, info = mepo_link.invert_pretraining(preset, source, 3, 2, classes=classes, data_home=smoke_home,
                                                        progress=False)
    assert images.dtype == np.uint8 and images.shape[0] == 12 and sorted(set(labels.tolist())) == [0, 1, 2, 3]
    assert np.array_equal(first[0], images) and info["n_classes"] == 4 and len(info["curve"]) == 2
