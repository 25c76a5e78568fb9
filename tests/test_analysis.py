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


def test_official_plateau_depends_on_the_source_spectrum():
    from mepo_lab.mepo.analysis import format_alignment_table, gaussian_alignment_table

    rows = gaussian_alignment_table(dim=16, conditions=(1.0, 100.0), batch_sizes=(16, 2000), n=4000)
    err = {(r["condition"], r["mode"], r["batch_size"]): r["error"] for r in rows}
    assert err[(1.0, "corrected", 2000)] < 1e-2 and err[(100.0, "corrected", 2000)] < 1e-2
    assert err[(1.0, "official", 2000)] > 0.3  # misses Σ even with many samples
    assert err[(100.0, "official", 2000)] > 2 * err[(1.0, "official", 2000)]  # and by more for anisotropic sources
    assert err[(1.0, "corrected", 16)] > err[(1.0, "corrected", 2000)]  # B = d: rank-limited estimate
    assert "source condition" in format_alignment_table(rows) and len(format_alignment_table(rows).splitlines()) == 5


def test_random_covariance_has_the_asked_spectrum():
    from mepo_lab.mepo.analysis import random_covariance

    cov = random_covariance(np.array([3.0, 2.0, 0.5]), seed=1)
    np.testing.assert_allclose(np.linalg.eigvalsh(cov), [0.5, 2.0, 3.0])
    assert not np.allclose(cov, np.diag(np.diag(cov)))


def test_mode_agreement_and_covariance_difference(data):
    from mepo_lab.mepo.analysis import covariance_difference, mode_agreement

    feats, target = data
    assert mode_agreement(feats, target, alpha=0.0) == pytest.approx(1.0)  # α = 0: both return F itself
    assert mode_agreement(feats, target, alpha=1.0) < 0.99  # unit-norm F̂ of two different formulas
    same = covariance_difference(target, target)
    assert same == {"frobenius": 0.0, "spectrum": 0.0}
    scaled = covariance_difference(target, 2 * target)
    assert scaled["frobenius"] == pytest.approx(1.0) and scaled["spectrum"] == pytest.approx(1.0)
    rotated = covariance_difference(target, target[::-1, ::-1])  # same eigenvalues, other directions
    assert rotated["spectrum"] == pytest.approx(0.0, abs=1e-12) and rotated["frobenius"] > 0.1
