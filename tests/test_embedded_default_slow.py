"""Claims about the embedded default at the `cpu` preset (minutes: marked slow, run with -m slow)."""
import pytest

from mepo_lab.config import get_preset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cpu_features():
    """The cpu preset's backbones and features (cached in the default data home)."""
    from mepo_lab.backbones.pretrain import pretrained_backbone, random_backbone
    from mepo_lab.experiment import world_features

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MEPO_LAB_SMOKE", raising=False)
        preset = get_preset("cpu")
    return preset, {bb.kind: world_features(preset, bb, progress=False)
                    for bb in (pretrained_backbone(preset, progress=False), random_backbone(preset))}


def test_pretraining_beats_random_init_on_linear_probe_by_20_points(cpu_features):
    from mepo_lab.backbones.probe import linear_probe

    _, feats = cpu_features
    acc = {k: linear_probe(f.train.features, f.train.targets, f.test.features, f.test.targets)
           for k, f in feats.items()}
    assert acc["pretrained"] - acc["random"] >= 0.20, acc


def test_forgetting_is_visible_and_pretraining_helps_online(cpu_features):
    from mepo_lab.experiment import run_on_features

    preset, feats = cpu_features
    pre = run_on_features(preset, "linear", feats["pretrained"], seed=1, progress=False)
    rnd = run_on_features(preset, "linear", feats["random"], seed=1, progress=False)
    assert pre.metrics["F_last"] > 0.10          # the linear head forgets earlier classes
    assert pre.metrics["A_auc"] > rnd.metrics["A_auc"] + 0.20
