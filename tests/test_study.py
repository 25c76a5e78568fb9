"""``mepo-lab study``: the grid, the comparisons, the diagnostics and the command, on hand-made cases and the
smoke preset."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mepo_lab.study.config import STUDY_PRESETS, StudyConfig
from mepo_lab.study.diagnostics import DriftProbe, gain_shares
from mepo_lab.study.grid import cells, lab_preset
from mepo_lab.study.report import (
    comparisons,
    conclusions,
    find,
    format_comparisons,
    in_words,
    shift_interaction,
    summary_table,
    target_check,
)


def _row(variant, alignment, seed, value, learner="linear", shift="none"):
    return {"variant": variant, "alignment": alignment, "seed": seed, "A_auc": value, "learner": learner,
            "shift": shift}


def test_cpu_grid_has_the_preregistered_size():
    # 7 variants x 2 feature learners x 2 alignments x 2 shifts + 4 image variants x 2 image learners x 2 x 2
    cfg = STUDY_PRESETS["cpu"]()
    assert len(cells(cfg)) == 7 * 2 * 2 * 2 + 4 * 2 * 2 * 2 == 88
    assert cfg.shifts == ("none", "sketch") and cfg.seeds == (1, 2, 3)


@pytest.mark.parametrize("bad, message", [
    ({"variants": ("mepo",)}, "must include 'none'"),
    ({"variants": ("none", "nope")}, "variants must be a non-empty subset"),
    ({"image_variants": ("none", "eta_1"), "variants": ("none", "mepo")}, "image_variants"),
    ({"shifts": ("sepia",)}, "shifts must be a non-empty subset"),
    ({"learners": ()}, "learners must be a non-empty subset"),
    ({"image_train_per_class": 0}, "image_train_per_class must be >= 1"),
])
def test_bad_study_settings_name_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig(**({"image_variants": ("none",)} | bad))


def test_lab_preset_applies_shift_variant_and_course_stream():
    cfg = StudyConfig()
    p = lab_preset(cfg, "joint_ft", "sketch", images=True)
    assert p.world.shift == "sketch" and p.mepo.schedule == "joint" and p.mepo.meta_lr == 1.0
    assert (p.world.train_per_class, p.world.test_per_class) == (50, 10)
    base = lab_preset(cfg)
    assert base.world.shift == "none" and base.mepo.meta_lr == 0.1 and base.world.train_per_class == 500
    assert lab_preset(cfg, "mepo_corrected").mepo.fidelity == "corrected"


def test_gain_shares_split_the_gain_by_hand():
    rows = [_row("none", "none", s, v) for s, v in ((1, 0.40), (2, 0.50))]
    rows += [_row("mepo", "none", s, v) for s, v in ((1, 0.41), (2, 0.49))]  # backbone: mean 0.45 -> 0.45
    rows += [_row("mepo", "corrected", s, v) for s, v in ((1, 0.45), (2, 0.53))]  # alignment: +0.04
    (share,) = gain_shares(rows)
    assert share["gain"] == pytest.approx(0.04) and share["backbone"] == pytest.approx(0.0, abs=1e-12)
    assert share["alignment_part"] == pytest.approx(0.04) and share["n"] == 2


def test_comparisons_pair_by_seed_with_student_interval():
    rows = [_row("none", "none", s, v) for s, v in ((1, 0.40), (2, 0.50), (3, 0.45))]
    rows += [_row("mepo", "corrected", s, v) for s, v in ((1, 0.42), (2, 0.525), (3, 0.465))]  # .02 .025 .015
    rows += [_row("joint_ft", "corrected", s, v) for s, v in ((1, 0.42), (2, 0.525), (3, 0.465))]
    comps = comparisons(rows)
    c = find(comps, variant="mepo", alignment="corrected", versus="pretrained")
    half = 4.302652729911275 * 0.005 / math.sqrt(3)  # t_{2, 0.975} * s_d / sqrt(n), s_d = 0.005
    assert c["mean"] == pytest.approx(0.02) and c["high"] == pytest.approx(0.02 + half, rel=1e-4)
    assert "improvement" in c["verdict"]
    same = find(comps, variant="mepo", alignment="corrected", versus="joint_ft")
    assert same["mean"] == pytest.approx(0.0) and "no measurable effect" in same["verdict"]
    assert find(comps, variant="joint_ft", versus="joint_ft") is None  # never against itself
    assert "MePo (official)" in format_comparisons(comps)


@pytest.mark.parametrize("gain, met", [(0.031, True), (0.029, False)])
def test_target_check_reads_the_quickstart_setting(gain, met):
    rows = [_row("none", "none", s, 0.4 + 0.01 * s) for s in (1, 2, 3)]
    rows += [_row("mepo", "corrected", s, 0.4 + 0.01 * s + gain) for s in (1, 2, 3)]
    rows += [_row("mepo", "corrected", s, 0.9, shift="sketch") for s in (1, 2, 3)]  # a shift never counts
    rows += [_row("none", "none", s, 0.1, shift="sketch") for s in (1, 2, 3)]
    check = target_check(comparisons(rows))
    assert check["met"] is met and check["best"] == "linear"
    assert any(line.startswith("target") for line in conclusions({"rows": rows}))


class _Learner:
    name = "finetune"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.source = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
        self.backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
        self.backbone.load_state_dict(self.source.state_dict())

    def pre(self, x):
        return x.float()


def test_drift_probe_is_zero_at_start_and_grows(monkeypatch):
    import mepo_lab.study.diagnostics as diag

    monkeypatch.setattr(diag, "cls_features", lambda model, x: model(x))
    probe, learner = DriftProbe(np.random.default_rng(0).integers(0, 255, (8, 3, 2, 2)).astype(np.uint8)), _Learner()
    probe.on_learner(learner)
    probe.on_eval(SimpleNamespace(anytime_samples=[32]))
    with torch.no_grad():
        learner.backbone[1].weight.add_(torch.randn_like(learner.backbone[1].weight))
    probe.on_eval(SimpleNamespace(anytime_samples=[64]))
    (s0, d0), (s1, d1) = probe.points
    assert (s0, s1) == (32, 64) and d0 == pytest.approx(0.0, abs=1e-6) and d1 > 0.01
    with pytest.raises(TypeError, match="trained backbone"):
        DriftProbe(np.zeros((1, 3, 2, 2), np.uint8)).on_learner(SimpleNamespace(name="linear"))


def test_study_command_runs_resumes_and_draws(smoke_home, tmp_path, capsys):
    from mepo_lab.cli import main

    args = ["study", "--preset", "smoke", "--data-home", str(smoke_home), "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    cfg = STUDY_PRESETS["smoke"]()
    assert len(result["rows"]) == len(cells(cfg)) * len(cfg.seeds)
    assert {p["variant"] for p in result["probes"]} == set(cfg.variants)
    assert all(r["drift"] for r in result["rows"] if r["learner"] == "finetune")
    assert {f.name for f in tmp_path.glob("study_*.png")} >= {"study_grid.png", "study_drift.png", "study_probes.png"}
    printed = capsys.readouterr().out
    assert "MePo + corrected" in printed and "linear probe (%)" in printed and "target (MePo" in printed
    before = (tmp_path / "results.json").read_text()
    assert main(args) == 0  # everything is in results.json: nothing reruns, the rows stay
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == json.loads(before)["rows"]
    with pytest.raises(SystemExit) as exit_:
        main([*args[:-1], "--set", "variants=nope"])
    assert exit_.value.code == 2
    assert "variants must be a non-empty subset" in capsys.readouterr().err


def test_shift_interaction_pairs_the_gains_by_seed():
    rows = []
    for shift, gains in (("none", (0.01, 0.02, 0.03)), ("sketch", (0.05, 0.05, 0.08))):
        rows += [_row("none", "none", s, 0.4, shift=shift) for s in (1, 2, 3)]
        rows += [_row("mepo", "corrected", s, 0.4 + g, shift=shift) for s, g in zip((1, 2, 3), gains)]
    d = shift_interaction(rows, "linear", "sketch")
    assert d["mean"] == pytest.approx(0.04) and d["per_seed"] == pytest.approx([0.04, 0.03, 0.05])
    assert shift_interaction(rows, "linear", "invert") is None and shift_interaction(rows, "ncm", "sketch") is None
    assert in_words(d).startswith("+4.00 [") and "improvement" in in_words(d)
    assert in_words(None) == "not in this grid"


def test_image_variants_only_matter_with_image_learners():
    StudyConfig(learners=("linear",), variants=("none", "mepo"))  # the default image_variants are not checked
    with pytest.raises(ValueError, match="image_variants"):
        StudyConfig(learners=("linear", "finetune"), variants=("none", "mepo"))


def test_results_of_other_sizes_are_moved_aside_not_overwritten(tmp_path, monkeypatch):
    from mepo_lab.study import grid

    (tmp_path / "results.json").write_text(json.dumps({"fingerprint": "another study", "rows": [{"seed": 1}]}))
    monkeypatch.setattr(grid, "cells", lambda cfg: [])  # nothing to run: only the bookkeeping
    monkeypatch.setattr(grid, "variant_backbone", lambda *a, **k: pytest.fail("no backbone needed"))
    cfg = StudyConfig(learners=("linear",), variants=("none",), shifts=("none",))
    monkeypatch.setattr(grid, "_probe_row", lambda cfg, v, s, feats: {"variant": v, "shift": s})
    monkeypatch.setattr(grid, "world_features", lambda *a, **k: None)
    monkeypatch.setattr(grid, "variant_backbone", lambda *a, **k: None)
    grid.run_study(cfg, tmp_path, progress=False, log=lambda s: None)
    (kept,) = tmp_path.glob("results.*-*.json")
    assert json.loads(kept.read_text())["rows"] == [{"seed": 1}]
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == []


def test_summary_table_reads_the_paired_gains():
    rows = [_row("none", "none", s, v) for s, v in ((1, 0.40), (2, 0.50), (3, 0.45))]
    rows += [_row("mepo", "corrected", s, v) for s, v in ((1, 0.42), (2, 0.525), (3, 0.465))]
    table = summary_table({"rows": rows}).splitlines()
    assert table[0].startswith("learner | shift | no refinement | alignment only")
    cells = table[2].split(" | ")
    assert cells[:3] == ["linear", "none", "45.00 ± 5.00"]
    assert cells[5].startswith("+2.00 [+0.76, +3.24]")  # MePo + corrected: mean 2, half-width 4.303 * 0.5 / sqrt 3
    assert cells[3] == "—"  # no alignment-only runs here


def test_drift_table_reads_the_last_point():
    from mepo_lab.study.report import drift_table

    rows = [_row("mepo", "none", s, 0.3, learner="finetune") | {"drift": [(32, 0.01), (64, d)]}
            for s, d in ((1, 0.2), (2, 0.4))]
    rows.append(_row("mepo", "corrected", 1, 0.3, learner="finetune") | {"drift": [(64, 0.9)]})  # aligned: not shown
    assert drift_table({"rows": rows}).splitlines()[2] == "MePo (official) | none | 0.3000 ± 0.1414 | 2"
