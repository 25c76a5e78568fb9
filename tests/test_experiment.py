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
