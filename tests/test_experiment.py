import numpy as np
import pytest

from mepo_lab.config import GCLConfig
from mepo_lab.learners import make_learner
from mepo_lab.mepo.alignment import CorrectedAlignment, OfficialAlignment, make_alignment
from mepo_lab.protocols.online import run_gcl
from mepo_lab.protocols.streams import si_blurry
from mepo_lab.registry import get_backbone
from tests.helpers import clustered


class Spy:
    """Wraps a transform and records the batch sizes it sees (and whether it was updated)."""

    def __init__(self, inner):
        self.inner, self.sizes, self.updates = inner, [], 0
        self.batch_dependent, self.name = inner.batch_dependent, inner.name

    def update(self, x):
        self.updates += len(x)
        self.inner.update(x)

    def __call__(self, x):
        self.sizes.append(len(x))
        return self.inner(x)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrected_alignment_learns_stream_statistics_only_from_training_batches():
    x, y, xte, yte, cov = clustered(n_classes=5, dim=6)
    stream = si_blurry(y, n_tasks=2, n=50, m=10, seed=1)
    spy = Spy(CorrectedAlignment(cov, 0.5))
    run_gcl(make_learner("linear", transform=spy), x, xte, yte, stream, GCLConfig(eval_period=40), progress=False)
    assert spy.updates == len(y) == spy.inner.count
    np.testing.assert_allclose(spy.inner.mean.numpy(), x.double().mean(0).numpy(), atol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_official_alignment_is_evaluated_in_protocol_batches():
    x, y, xte, yte, cov = clustered(n_classes=5, per_class=60, dim=6)
    stream = si_blurry(y, n_tasks=2, n=50, m=10, seed=1)
    spy = Spy(OfficialAlignment(cov, 0.5, on_singleton="skip"))
    cfg = GCLConfig(eval_period=1000, eval_batch_size=16)
    run_gcl(make_learner("linear", transform=spy), x, xte, yte, stream, cfg, progress=False)
    eval_sizes = spy.sizes[-4:]  # the last evaluation: 50 test samples in batches of 16
    assert eval_sizes == [16, 16, 16, 2]


def test_alignment_changes_predictions_and_alpha_zero_does_not(monkeypatch):
    x, y, xte, yte, cov = clustered(n_classes=5, dim=6)
    stream = si_blurry(y, n_tasks=2, n=50, m=10, seed=1)
    runs = {}
    for name, t in [("none", None), ("zero", CorrectedAlignment(cov, 0.0)), ("one", CorrectedAlignment(cov, 1.0))]:
        learner = make_learner("linear", **({"transform": t} if t is not None else {}))
        runs[name] = run_gcl(learner, x, xte, yte, stream, GCLConfig(eval_period=40), progress=False)
    assert runs["none"].class_acc == runs["zero"].class_acc
    assert runs["none"].anytime_acc != runs["one"].anytime_acc


@pytest.mark.parametrize("mode, kind", [("none", type(None)), ("official", OfficialAlignment),
                                        ("corrected", CorrectedAlignment)])
def test_make_alignment(mode, kind):
    assert isinstance(make_alignment(mode, 0.5, np.eye(3)), kind)


def test_bad_names_list_the_valid_ones(smoke_preset):
    with pytest.raises(ValueError, match="unknown alignment 'whiten': choose one of none, official, corrected"):
        make_alignment("whiten", 0.5, np.eye(3))
    with pytest.raises(ValueError, match="needs the meta covariance"):
        make_alignment("corrected", 0.5, None)
    with pytest.raises(ValueError, match="unknown backbone 'vgg': choose one of random, pretrained, mepo"):
        get_backbone("vgg", smoke_preset)


def test_zoo_backbone_offline_is_one_clear_error(smoke_preset, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="offline mode"):
        get_backbone("dino", smoke_preset)


def _fake_world_features(kind: str, seed: int = 0):
    """WorldFeatures over clustered Gaussians: a feature-cached run without any backbone or image."""
    from mepo_lab.backbones.base import Backbone
    from mepo_lab.backbones.features import FeatureSet
    from mepo_lab.experiment import WorldFeatures

    x, y, xte, yte, cov = clustered(n_classes=10, per_class=30, dim=8, seed=seed)
    sets = [FeatureSet(f.numpy().astype(np.float16), t, f"key-{kind}", "fake", kind) for f, t in ((x, y), (xte, yte))]
    import torch

    return WorldFeatures(Backbone(torch.nn.Identity(), kind, kind), *sets, covariance=cov)


def test_feature_runner_overrides_the_stream_and_picks_the_backbone():
    from mepo_lab.config import PRESETS, override
    from mepo_lab.experiment import feature_runner

    preset = override(PRESETS["cpu"](), {"gcl.eval_period": 50, "stream.n_tasks": 2})  # the sizes students run
    feats = {"pretrained": _fake_world_features("pretrained"), "mepo": _fake_world_features("mepo", seed=1)}
    run = feature_runner(preset, feats)
    a = run(seed=2, backbone="mepo", alignment="corrected", alpha=0.3, m=0, n=100)
    assert (a.backbone, a.alignment, a.seed) == ("mepo", "corrected", 2) and a.meta["alpha"] == 0.3
    assert a.config["stream"]["m"] == 0 and a.config["stream"]["n"] == 100 and a.config["stream"]["n_tasks"] == 2
    b = run(seed=2)  # defaults: the first backbone, no alignment, the preset's stream
    assert b.backbone == "pretrained" and b.config["stream"]["m"] == preset.stream.m
    with pytest.raises(ValueError, match=r"unknown stream setting\(s\) \['blurriness'\]"):
        run(blurriness=3)


def test_run_one_and_compare_backbones_on_the_embedded_default(smoke_preset, smoke_home):
    from mepo_lab.experiment import compare_backbones, run_one
    from mepo_lab.protocols.results import paired_difference

    pretrained = get_backbone("pretrained", smoke_preset, smoke_home, progress=False)
    run = run_one(smoke_preset, "ncm", pretrained, 1, data_home=smoke_home, progress=False)
    assert run.method == "ncm" and run.finished
    image = run_one(smoke_preset, "finetune", pretrained, 1, data_home=smoke_home, progress=False)
    assert image.meta["learner"]["name"] == "finetune"
    random = get_backbone("random", smoke_preset, smoke_home, progress=False)
    rows = compare_backbones(smoke_preset, {"pretrained": pretrained, "random": random}, "linear",
                             seeds=(1, 2), data_home=smoke_home)
    assert [(r["backbone"], r["seed"]) for r in rows] == [("pretrained", 1), ("pretrained", 2), ("random", 1),
                                                           ("random", 2)]
    gain = paired_difference(rows, {"backbone": "pretrained"}, {"backbone": "random"})
    assert gain["n"] == 2 and gain["seeds"] == [1, 2]


def test_sweep_tags_rows_with_the_knob_value():
    from mepo_lab.experiment import sweep
    from tests.test_viz_widgets import fake_run

    calls = []

    def run(seed, backbone, m):
        calls.append((seed, backbone, m))
        return fake_run(seed=seed, backbone=backbone)

    rows = sweep(run, "m", (0, 50), seeds=(1, 2), backbone="mepo")
    assert calls == [(1, "mepo", 0), (2, "mepo", 0), (1, "mepo", 50), (2, "mepo", 50)]
    assert [(r["m"], r["seed"]) for r in rows] == [(0, 1), (0, 2), (50, 1), (50, 2)]
