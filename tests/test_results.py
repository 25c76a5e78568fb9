import math

import pytest

from mepo_lab.protocols.results import format_difference, paired_difference, t_quantile_975


def rows(pairs, metric="A_auc"):
    """(baseline, variant) values per seed 1, 2, ... as flat result rows."""
    return [{"seed": s, "backbone": b, metric: v} for s, (base, var) in enumerate(pairs, 1)
            for b, v in (("pretrained", base), ("mepo", var))]


def test_paired_difference_hand_computed():
    # differences 0.01, 0.02, 0.02: mean 0.016667, sample std 0.0057735, t_{2, 0.975} = 4.303
    d = paired_difference(rows([(0.40, 0.41), (0.50, 0.52), (0.45, 0.47)]), {"backbone": "mepo"},
                          {"backbone": "pretrained"})
    assert d["n"] == 3 and d["seeds"] == [1, 2, 3]
    assert d["mean"] == pytest.approx(0.0166667, abs=1e-6) and d["std"] == pytest.approx(0.0057735, abs=1e-6)
    half = 4.303 * 0.0057735 / math.sqrt(3)
    assert d["low"] == pytest.approx(d["mean"] - half, abs=1e-7)
    assert d["high"] == pytest.approx(d["mean"] + half, abs=1e-7)
    assert format_difference(d) == "+1.67 [+0.23, +3.10] (95 % t-interval, 3 paired seeds)"


def test_pairing_ignores_unpaired_seeds_and_one_seed_has_no_interval():
    data = rows([(0.4, 0.5)]) + [{"seed": 9, "backbone": "mepo", "A_auc": 0.9}]
    d = paired_difference(data, {"backbone": "mepo"}, {"backbone": "pretrained"})
    assert d["n"] == 1 and d["mean"] == pytest.approx(0.1) and math.isnan(d["low"])
    assert format_difference(d) == "+10.00 (one seed: no interval)"
    with pytest.raises(ValueError, match="no seed has both"):
        paired_difference(data, {"backbone": "mepo"}, {"backbone": "random"})


@pytest.mark.parametrize("df, value", [(1, 12.706), (2, 4.303), (10, 2.228), (30, 2.042)])
def test_t_quantiles(df, value):
    assert t_quantile_975(df) == value
    assert 1.96 < t_quantile_975(100) < t_quantile_975(31) < 2.042


def test_ambiguous_selectors_and_verdicts():
    from mepo_lab.protocols.results import describe_difference

    data = rows([(0.4, 0.5), (0.45, 0.55)]) + [{"seed": 1, "backbone": "pretrained", "A_auc": 0.9, "method": "ncm"}]
    with pytest.raises(ValueError, match="matches several rows of one seed"):
        paired_difference(data, {"backbone": "mepo"}, {"backbone": "pretrained"})
    def verdict(low, high, n=3, metric="A_auc"):
        return describe_difference({"n": n, "low": low, "high": high, "mean": (low + high) / 2, "metric": metric})

    assert verdict(0.01, 0.02).startswith("an improvement") and verdict(-0.02, -0.01).startswith("a worsening")
    assert verdict(-0.02, -0.01, metric="F_last").startswith("an improvement")  # less forgetting
    assert verdict(-0.01, 0.02).startswith("no measurable effect") and verdict(0, 0, n=1).startswith("one seed")
