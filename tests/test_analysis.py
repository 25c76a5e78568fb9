import numpy as np
import pytest

from mepo_lab.mepo.analysis import alignment_error, batch_dependence


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    d = 6
    mix = rng.normal(size=(d, d))
    feats = rng.normal(size=(3000, d)) @ mix
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    target = q @ np.diag(np.linspace(0.2, 4.0, d)) @ q.T
    return feats, target


def test_corrected_reaches_the_target_with_large_batches_official_does_not(data):
    feats, target = data
    assert alignment_error(feats, target, "corrected", 2000) < 0.1
    assert alignment_error(feats, target, "official", 2000) > 0.3
    # small batches: rank-limited estimate, the corrected error grows
    assert alignment_error(feats, target, "corrected", 8) > alignment_error(feats, target, "corrected", 2000)


def test_batch_dependence_only_for_batch_statistics(data):
    feats, target = data
    assert batch_dependence(feats, target, "corrected", batch_size=8) == pytest.approx(1.0)
    assert batch_dependence(feats, target, "official", batch_size=8) < 0.99
