"""Meta covariance and output alignment (docs/reference/mepo.md#meta-covariance to #q4; checks.md#c7 to #c12 and #c21)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mepo_lab.mepo.alignment import CorrectedAlignment, OfficialAlignment
from mepo_lab.mepo.covariance import (
    RankDeficientWarning,
    load_covariance,
    meta_covariance,
    save_covariance,
    validate_covariance,
)
from mepo_lab.mepo.whitening import align_features, whiten_color

pytestmark = pytest.mark.filterwarnings("ignore::mepo_lab.covariance.RankDeficientWarning")


def spd(d: int, seed: int = 0, lo: float = -2.0, hi: float = 1.0) -> np.ndarray:
    """Random SPD matrix with eigenvalues log-spaced in [10^lo, 10^hi]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.logspace(lo, hi, d)) @ q.T


def features(b: int, d: int, seed: int = 1) -> torch.Tensor:
    """Correlated, off-centre features (float64): z M + m."""
    g = torch.Generator().manual_seed(seed)
    mix_ = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    return torch.randn(b, d, generator=g, dtype=torch.float64) @ mix_ + 3.0


def rel_err(feats: torch.Tensor, target: np.ndarray) -> float:
    c = np.cov(feats.numpy(), rowvar=False)
    return float(np.linalg.norm(c - target) / np.linalg.norm(target))


def reference(f: torch.Tensor, target: torch.Tensor, reg: float = 1e-4) -> torch.Tensor:
    """``transform_to_target_covariance`` of GCL/models/dualprompt.py, written out literally."""
    fc = f - f.mean(dim=0)
    c = (fc.T @ fc) / (fc.size(0) - 1)
    eye = torch.eye(c.size(0), dtype=c.dtype)
    a = torch.linalg.solve(torch.linalg.cholesky(c + reg * eye), torch.linalg.cholesky(target + reg * eye))
    return fc @ a


# ----------------------------------------------------------------------------- meta covariance
@pytest.mark.parametrize("k,d", [(50, 8), (1000, 32), (2, 4)])
def test_meta_covariance_is_np_cov(k, d):
    p = np.random.default_rng(k).standard_normal((k, d)) * np.arange(1, d + 1)
    cov = meta_covariance(p)
    assert cov.dtype == np.float64 and cov.shape == (d, d)
    np.testing.assert_allclose(cov, np.cov(p, rowvar=False), rtol=1e-12, atol=1e-12)
    assert np.array_equal(cov, cov.T) or np.abs(cov - cov.T).max() < 1e-12
    assert np.linalg.eigvalsh(cov)[0] > -1e-10
    from32 = meta_covariance(torch.tensor(p, dtype=torch.float32))
    np.testing.assert_allclose(from32, cov, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad,match", [(np.ones(5), "2-D"), (np.ones((1, 5)), "at least 2"),
                                       (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN")])
def test_meta_covariance_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        meta_covariance(bad)


# ----------------------------------------------------------------------------- target check
@pytest.mark.parametrize("d,b", [(8, 10_000), (64, 4_000)])
def test_corrected_reaches_target(d, b):
    target = spd(d)
    out = whiten_color(features(b, d), target, mode="corrected")
    assert rel_err(out, target) < 1e-2


def test_official_is_reference_and_misses_target():
    d, b = 8, 10_000
    target, f = spd(d), features(b, d)
    out = whiten_color(f, target, mode="official")
    torch.testing.assert_close(out, reference(f, torch.from_numpy(target)), rtol=1e-9, atol=1e-9)
    assert rel_err(out, target) > 1.0


@pytest.mark.parametrize("b", [32, 7])
def test_official_alignment_matches_reference_end_to_end(b):
    target, f = spd(16, 3), features(b, 16, seed=b)
    ref = reference(f, torch.from_numpy(target))
    expected = 0.3 * f + 0.7 * ref / torch.norm(ref, dim=1, keepdim=True)
    torch.testing.assert_close(align_features(f, target, 0.7, "official"), expected)
    torch.testing.assert_close(OfficialAlignment(target, 0.7)(f), expected)


@pytest.mark.parametrize("mode", ["official", "corrected"])
def test_gradients_flow_like_the_reference(mode):
    """Prompt learners back-propagate through the alignment (the reference does, batch stats included)."""
    target, f = spd(6, 2), features(12, 6, seed=4).float()
    ours = f.clone().requires_grad_(True)
    w = torch.randn(12, 6, generator=torch.Generator().manual_seed(0))
    (align_features(ours, target, 0.5, mode) * w).sum().backward()
    assert torch.isfinite(ours.grad).all() and ours.grad.abs().sum() > 0
    if mode == "official":
        ref = f.double().requires_grad_(True)
        fj = reference(ref, torch.from_numpy(target))
        ((0.5 * ref + 0.5 * fj / torch.norm(fj, dim=1, keepdim=True)) * w.double()).sum().backward()
        torch.testing.assert_close(ours.grad.double(), ref.grad, rtol=1e-4, atol=1e-5)
    t = OfficialAlignment(target, 0.5) if mode == "official" else CorrectedAlignment(target, 0.5)
    t.update(f)
    x = f.clone().requires_grad_(True)
    (t(x) * w).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- alpha
@pytest.mark.parametrize("mode", ["official", "corrected"])
def test_alpha_endpoints_and_linearity(mode):
    f, target = features(40, 8), spd(8)
    assert align_features(f, target, 0.0, mode) is f
    one = align_features(f, target, 1.0, mode)
    torch.testing.assert_close(one.norm(dim=1), torch.ones(40, dtype=torch.float64))
    for a in (0.25, 0.6):
        torch.testing.assert_close(align_features(f, target, a, mode), (1 - a) * f + a * one)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        align_features(features(4, 3), np.eye(3), alpha)
    with pytest.raises(ValueError, match="alpha"):
        CorrectedAlignment(np.eye(3), alpha)


# ----------------------------------------------------------------------------- batch of one
def test_batch_of_one():
    target, f = spd(8), features(200, 8)
    with pytest.raises(ValueError, match="needs at least 2 samples, got 1 .*docs/reference/mepo.md#q3"):
        align_features(f[:1], target, 0.5, "official")
    with pytest.raises(ValueError, match="at least 2 samples"):
        OfficialAlignment(target, 0.5)(f[:1])
    torch.testing.assert_close(OfficialAlignment(target, 0.5, on_singleton="skip")(f[:1]), f[:1])
    with pytest.raises(ValueError, match="source_mean and source_cov"):
        whiten_color(f[:1], target, "corrected")
    src = dict(source_cov=np.cov(f.numpy(), rowvar=False), source_mean=f.mean(0).numpy())
    single = align_features(f[:1], target, 0.5, "corrected", **src)
    torch.testing.assert_close(single, align_features(f, target, 0.5, "corrected", **src)[:1])
    t = CorrectedAlignment(target, 0.5)
    t.update(f)
    torch.testing.assert_close(t(f[:1]), single)


def test_corrected_alignment_fallback_before_two_samples():
    f, t = features(5, 4), CorrectedAlignment(spd(4), 0.5)
    assert t(f) is f
    t.update(f[:1])
    assert t(f) is f and t.describe()["fallback"].startswith("identity")


# ----------------------------------------------------------------------------- batch dependence
def _two_batches(d: int = 64, b: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    pool = features(2 * b, d, seed=5)
    return pool[:b], torch.cat([pool[:1], pool[b + 1:]])   # same first sample, other batch-mates


def test_official_depends_on_batch_mates():
    b1, b2 = _two_batches()
    t = OfficialAlignment(spd(64), 1.0)
    assert t.batch_dependent and t.name == "official"
    cos = torch.nn.functional.cosine_similarity(t(b1)[0], t(b2)[0], dim=0)
    assert cos < 0.99


def test_corrected_ignores_batch_mates():
    b1, b2 = _two_batches()
    train = features(500, 64, seed=9)
    src = dict(source_cov=np.cov(train.numpy(), rowvar=False), source_mean=train.mean(0).numpy())
    out1, out2 = (align_features(b, spd(64), 1.0, "corrected", **src) for b in (b1, b2))
    torch.testing.assert_close(out1[0], out2[0], rtol=1e-12, atol=1e-12)
    t = CorrectedAlignment(spd(64), 1.0)
    t.update(train)
    assert not t.batch_dependent and t.name == "corrected"
    torch.testing.assert_close(t(b1)[0], t(b2)[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t(b1), out1)


# ----------------------------------------------------------------------------- validation
def _sym_indefinite(d: int) -> np.ndarray:
    m = np.random.default_rng(0).standard_normal((d, d))
    return (m + m.T) / 2


@pytest.mark.parametrize("bad,match", [
    (torch.randn(6, 6, generator=torch.Generator().manual_seed(0)), "symmetric|semi-definite"),
    (_sym_indefinite(6), "not positive semi-definite .*meta_covariance"),
    (np.triu(spd(6)), "not symmetric"),
    (spd(7), "7×7 but the features have d = 6"),
    (np.where(np.eye(6) > 0, np.nan, 0.0), "NaN"),
    (np.ones((6, 5)), "square 2-D"),
])
def test_target_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        align_features(features(20, 6), bad, 0.5, "corrected")
    with pytest.raises(ValueError):
        OfficialAlignment(bad, 0.5)(features(20, 6))


def test_reference_random_target_is_rejected():
    """Check 21: without --pretrain_cor the reference uses torch.randn(768, 768) as Σ."""
    with pytest.raises(ValueError, match="target_cov is not symmetric"):
        OfficialAlignment(torch.randn(768, 768), 0.5)


def test_mode_and_source_errors():
    f, target = features(20, 4), spd(4)
    with pytest.raises(ValueError, match="official mode uses batch statistics"):
        whiten_color(f, target, "official", source_cov=np.eye(4), source_mean=np.zeros(4))
    with pytest.raises(ValueError, match="unknown alignment mode"):
        whiten_color(f, target, "exact")
    with pytest.raises(ValueError, match="go together"):
        whiten_color(f, target, "corrected", source_cov=np.eye(4))
    with pytest.raises(ValueError, match="source_cov is not positive"):
        whiten_color(f, target, "corrected", source_cov=-np.eye(4), source_mean=np.zeros(4))


def test_rank_deficient_warning_once_per_instance():
    f, target = features(32, 48), spd(48)
    with pytest.warns(RankDeficientWarning, match="rank"):
        whiten_color(f, target, "official")
    for t in (OfficialAlignment(target, 0.5), CorrectedAlignment(target, 0.5)):
        t.update(f)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                t(f)
                t.update(f[:4])
        assert [w.category for w in caught] == [RankDeficientWarning]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whiten_color(features(100, 8), spd(8), "official")   # B > d: no warning


# ----------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, np.float32,
                                   np.float64])
@pytest.mark.parametrize("mode", ["official", "corrected"])
def test_dtypes_round_trip(dtype, mode):
    f64 = features(24, 6)
    f = f64.numpy().astype(dtype) if isinstance(dtype, type) else f64.to(dtype)
    out = align_features(f, torch.from_numpy(spd(6)).float(), 0.5, mode)
    assert type(out) is type(f) and out.dtype == f.dtype and out.shape == f.shape
    assert np.isfinite(np.asarray(torch.as_tensor(out).float())).all()
    ref = align_features(f64, spd(6), 0.5, mode)
    tol = {torch.float16: 2e-2, torch.bfloat16: 1e-1}.get(dtype, 1e-4)
    np.testing.assert_allclose(np.asarray(torch.as_tensor(out).double()), ref.numpy(), atol=tol, rtol=tol)
    for t in (OfficialAlignment(spd(6), 0.5), CorrectedAlignment(spd(6), 0.5)):
        t.update(f)
        y = t(f)
        assert type(y) is type(f) and y.dtype == f.dtype


# ----------------------------------------------------------------------------- running statistics
def test_running_statistics_match_batch_statistics():
    d, target = 8, spd(8)
    t = CorrectedAlignment(target, 0.7)
    chunks = [features(n, d, seed=n) for n in (32, 1, 17, 50)]
    for c in chunks:
        t.update(c)
    seen = torch.cat(chunks)
    assert t.count == len(seen)
    torch.testing.assert_close(t.mean, seen.mean(0))
    torch.testing.assert_close(t.cov, torch.from_numpy(np.cov(seen.numpy(), rowvar=False)))
    src = dict(source_cov=t.cov, source_mean=t.mean)
    torch.testing.assert_close(t(seen[:5]), align_features(seen[:5], target, 0.7, "corrected", **src))


def test_lazy_recompute_and_state_dict():
    d, target = 8, spd(8)
    t = CorrectedAlignment(target, 0.5)
    t.update(features(32, d))
    x = features(16, d, seed=3)
    for _ in range(5):
        t(x)
    assert t.n_recomputes == 1
    t.update(features(32, d, seed=4))
    y = t(x)
    t(x)
    assert t.n_recomputes == 2
    restored = CorrectedAlignment(target, 0.5)
    restored.load_state_dict(t.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in t.state_dict().values())
    torch.testing.assert_close(restored(x), y)
    assert restored.describe()["count"] == 64
    with pytest.raises(ValueError, match="different target"):
        CorrectedAlignment(spd(8, seed=1), 0.5).load_state_dict(t.state_dict())


def test_describe():
    for cls, name in ((OfficialAlignment, "official"), (CorrectedAlignment, "corrected")):
        t = cls(np.eye(3), 0.5)
        info = t.describe()
        assert info["name"] == name and info["alpha"] == 0.5 and info["dim"] == 3


# ----------------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    cov = meta_covariance(np.random.default_rng(0).standard_normal((30, 5)))
    path = tmp_path / "cov_matrix.npy"
    save_covariance(path, cov)
    raw = np.load(path)
    assert raw.dtype == np.float64 and raw.shape == (5, 5)
    np.testing.assert_array_equal(load_covariance(path, dim=5), cov)
    with pytest.raises(ValueError, match="5×5 but the features have d = 6"):
        load_covariance(path, dim=6)


def test_load_rejects_non_psd_naming_file(tmp_path):
    path = tmp_path / "random_cov.npy"
    np.save(path, _sym_indefinite(5))
    with pytest.raises(ValueError, match="random_cov.npy.*not positive semi-definite"):
        load_covariance(path)
    with pytest.raises(ValueError, match="not symmetric"):
        save_covariance(tmp_path / "x.npy", np.triu(spd(4)))
    assert validate_covariance(np.zeros((3, 3))).shape == (3, 3)   # PSD (all zero) is accepted
