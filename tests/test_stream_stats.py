"""Tests of mepo_lab.protocols.stream_stats (hand-computed cases) and mepo_lab.viz.streams (smoke tests)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mepo_lab.protocols.stream_stats import StreamStatistics, format_statistics, stream_statistics  # noqa: E402
from mepo_lab.protocols.streams import Stream, si_blurry  # noqa: E402
from mepo_lab.viz.streams import (  # noqa: E402
    plot_shares,
    plot_stream_overview,
    plot_stream_raster,
    plot_task_histograms,
)


def _hand_stream(n_classes: int = 4) -> Stream:
    """Two tasks over 8 samples; class 0/3 disjoint, 1/2 blurry; samples 3 and 4 swapped via the pool.

    labels:       [0, 0, 1, 1, 2, 2, 3, 3]
    task 0 order: [0, 2, 4, 1]  -> labels [0, 1, 2, 0]  (sample 4 received from the pool)
    task 1 order: [3, 5, 6, 7]  -> labels [1, 2, 3, 3]  (sample 3 received from the pool)
    """
    blurred = np.zeros(8, dtype=bool)
    blurred[[3, 4]] = True
    return Stream(
        task_indices=[np.array([0, 2, 4, 1]), np.array([3, 5, 6, 7])],
        disjoint_classes=[[0], [3]], blurry_classes=[[1], [2]],
        n_classes=n_classes, n_tasks=2, n=50, m=50, seed=0, stochastic=True,
        labels=np.array([0, 0, 1, 1, 2, 2, 3, 3]), dropped=np.zeros(0, dtype=np.int64),
        blurred=blurred,
    )


def test_hand_computed_counts_and_shares():
    st = stream_statistics(_hand_stream(), n_bins=4)
    np.testing.assert_array_equal(st.class_counts, [[2, 1, 1, 0], [0, 1, 1, 2]])
    np.testing.assert_array_equal(st.classes_per_task, [3, 3])
    np.testing.assert_array_equal(st.first_appearance, [0, 1, 2, 6])
    np.testing.assert_array_equal(st.new_classes_per_task, [3, 1])
    np.testing.assert_array_equal(st.n_disjoint, [2, 2])
    np.testing.assert_array_equal(st.n_blurry_kept, [1, 1])
    np.testing.assert_array_equal(st.n_pooled, [1, 1])
    np.testing.assert_allclose(st.disjoint_share, [0.5, 0.5])
    np.testing.assert_allclose(st.blurry_share, [0.5, 0.5])
    np.testing.assert_allclose(st.pooled_share, [0.25, 0.25])
    np.testing.assert_array_equal(st.task_boundaries, [0, 4, 8])
    np.testing.assert_array_equal(st.task_sizes, [4, 4])
    np.testing.assert_array_equal(st.class_task, [0, 0, 1, 1])
    np.testing.assert_array_equal(st.class_is_disjoint, [True, False, False, True])
    assert st.n_samples == 8 and st.n_dropped == 0


def test_hand_computed_raster():
    st = stream_statistics(_hand_stream(), n_bins=4)  # stream labels [0, 1, 2, 0 | 1, 2, 3, 3]
    np.testing.assert_array_equal(st.raster_classes, [0, 1, 2, 3])
    np.testing.assert_array_equal(st.raster, [[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 2]])
    np.testing.assert_array_equal(st.bin_edges, [0, 2, 4, 6, 8])
    st3 = stream_statistics(_hand_stream(), n_bins=3)  # bins: positions 0-2, 3-5, 6-7
    np.testing.assert_array_equal(st3.bin_edges, [0, 3, 6, 8])
    np.testing.assert_array_equal(st3.raster, [[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 2]])
    assert st3.n_bins == 3


def test_unseen_class_is_last_with_minus_one():
    st = stream_statistics(_hand_stream(n_classes=5), n_bins=2)
    assert st.first_appearance[4] == -1
    assert st.raster_classes[-1] == 4 and st.raster[-1].sum() == 0
    assert st.raster.shape == (5, 2)
    assert st.class_counts[:, 4].sum() == 0


def test_raster_orders_by_first_appearance():
    stream = _hand_stream()
    swapped = Stream(**{**stream.__dict__, "task_indices": [np.array([6, 7, 3, 5]), np.array([0, 2, 4, 1])]})
    st = stream_statistics(swapped, n_bins=8)  # stream labels [3, 3, 1, 2, 0, 1, 2, 0]
    np.testing.assert_array_equal(st.first_appearance, [4, 2, 3, 0])
    np.testing.assert_array_equal(st.raster_classes, [3, 1, 2, 0])
    np.testing.assert_array_equal(st.new_classes_per_task, [3, 1])


@pytest.mark.parametrize("stochastic,seed", [(True, 1), (True, 4), (False, 2)])
def test_consistency_on_real_streams(stochastic, seed):
    labels = np.repeat(np.arange(100), 500)
    stream = si_blurry(labels, n_tasks=5, n=50, m=10, seed=seed, stochastic=stochastic)
    st = stream_statistics(stream, n_bins=50)
    assert st.class_counts.sum() == len(stream) == st.n_samples
    np.testing.assert_array_equal(st.class_counts.sum(axis=1), stream.task_sizes)
    np.testing.assert_array_equal(st.n_disjoint + st.n_blurry_kept + st.n_pooled, stream.task_sizes)
    np.testing.assert_array_equal(np.sort(st.raster.sum(axis=1)), np.sort(st.class_counts.sum(axis=0)))
    assert st.raster.shape == (100, 50) and st.raster.sum() == len(stream)
    assert st.new_classes_per_task.sum() == 100
    for t, classes in enumerate(stream.disjoint_classes):  # disjoint classes: only in their task
        assert (st.class_counts[np.arange(5) != t][:, classes] == 0).all()
    np.testing.assert_allclose(st.disjoint_share + st.blurry_share, 1.0)
    if stochastic and seed == 1:
        assert st.n_pooled[2] == 264 and st.n_blurry_kept[2] == 0


def test_dropped_counted():
    labels = np.repeat(np.arange(6), [10, 10, 10, 10, 10, 30])
    stream = si_blurry(labels, n_tasks=3, n=50, m=20, seed=2, stochastic=False)
    st = stream_statistics(stream)
    assert st.n_dropped == 1 and st.n_samples == len(labels) - 1
    assert "1 dropped" in format_statistics(st)


def test_empty_task_shares_are_zero():
    stream = next(s for s in (si_blurry(np.repeat(np.arange(6), 5), n_tasks=6, n=0, m=0, seed=k)
                              for k in range(20)) if (s.task_sizes == 0).any())
    st = stream_statistics(stream)
    empty = stream.task_sizes == 0
    assert (st.disjoint_share[empty] == 0).all() and (st.pooled_share[empty] == 0).all()
    format_statistics(st)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_n_bins(bad):
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        stream_statistics(_hand_stream(), n_bins=bad)


def test_format_statistics():
    stream = si_blurry(np.repeat(np.arange(100), 500), n_tasks=5, n=50, m=10, seed=1)
    text = format_statistics(stream_statistics(stream))
    lines = text.splitlines()
    assert "stochastic" in lines[0] and "N=50%" in lines[0] and "M=10%" in lines[0] and "seed 1" in lines[0]
    assert sum(line.strip().startswith(tuple("01234")) for line in lines) >= 5
    for size in (6500, 3000, 10264, 22000, 8236):
        assert str(size) in text
    assert lines[-1].split()[:2] == ["all", "50000"]


# ------------------------------------------------------------------------------ viz smoke tests
@pytest.fixture(scope="module")
def small():
    stream = si_blurry(np.repeat(np.arange(20), 30), n_tasks=4, n=50, m=20, seed=0)
    return stream, stream_statistics(stream, n_bins=30)


def test_raster_plot_shape(small):
    _, st = small
    ax = plot_stream_raster(st)
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    assert len(ax.images) == 2  # blurry and disjoint layers
    assert all(img.get_array().shape == (20, 30) for img in ax.images)
    assert len(ax.lines) == 3  # task boundaries between 4 tasks


@pytest.mark.parametrize("plot", [plot_task_histograms, plot_shares, plot_stream_raster])
def test_plots_accept_and_return_axes(small, plot):
    _, st = small
    fig = Figure()
    ax = fig.add_subplot()
    assert plot(st, ax=ax) is ax


def test_overview_figure(small):
    stream, st = small
    for fig in (plot_stream_overview(stream), plot_stream_overview(stream, st)):
        assert isinstance(fig, Figure) and len(fig.axes) == 5  # raster + 2 colour bars, composition, shares
        bars = [ax.get_ylabel() for ax in fig.axes if "samples per bin" in ax.get_ylabel()]
        assert len(bars) == 2 and bars[0].startswith("disjoint") and bars[1].startswith("blurry")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.tell() > 0


def test_statistics_type(small):
    assert isinstance(small[1], StreamStatistics)
