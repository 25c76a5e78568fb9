"""Grids as one batched program: every batched run must give the record of its sequential run_gcl run."""
import dataclasses

import numpy as np
import pytest
import torch

from mepo_lab.batched import FeatureJob, build_plan, run_batched
from mepo_lab.config import GCLConfig
from mepo_lab.learners import make_learner
from mepo_lab.mepo.alignment import make_alignment
from mepo_lab.protocols.online import run_gcl
from mepo_lab.protocols.streams import si_blurry
from tests.helpers import clustered

CURVES = ("anytime_acc", "task_end_acc", "class_acc", "anytime_class_acc")
SCHEDULE = ("anytime_samples", "anytime_points", "anytime_n_seen", "task_end_samples", "task_end_n_seen",
            "exposed_classes", "stream_seed", "train_seed")


@pytest.fixture(scope="module")
def data():
    """Two 'backbones' (feature sets) of one 12-class dataset; 1,440 training samples of width 16."""
    x, y, xte, yte, cov = clustered(n_classes=12, per_class=120, dim=16, seed=0, test_per_class=25)
    x2 = x @ torch.randn(16, 16, generator=torch.Generator().manual_seed(1)) / 4  # a second feature set
    return {"a": (x, xte, cov), "b": (x2, xte @ torch.randn(16, 16, generator=torch.Generator().manual_seed(1)) / 4,
                                      np.cov((x2.numpy()), rowvar=False) + 0.1 * np.eye(16))}, y, yte


def _job(data, learner, kind, alignment, seed, alpha=0.5, n=50, m=10, **kw):
    sets, y, yte = data
    x, xte, cov = sets[kind]
    stream = si_blurry(y, n_tasks=3, n=n, m=m, seed=seed)
    transform = make_alignment(alignment, alpha, cov, 1e-4, kw.pop("singleton", "raise"))
    if transform is not None:
        kw["transform"] = transform
    return FeatureJob(make_learner(learner, **kw), x, xte, yte, stream, train_seed=seed)


def _sequential(job, cfg):
    return run_gcl(job.learner, job.train_x, job.test_x, job.test_y, job.stream, cfg, train_seed=job.train_seed,
                   progress=False)


def _assert_same(seq, bat):
    for name in SCHEDULE:
        assert getattr(seq, name) == getattr(bat, name), name
    for name in CURVES:  # tolerance for float reassociation only; on one machine the numbers are identical
        np.testing.assert_allclose(np.asarray(getattr(bat, name), float), np.asarray(getattr(seq, name), float),
                                   atol=1e-6, err_msg=name)
    for key, value in seq.metrics.items():
        assert bat.metrics[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


GRID = [("linear", "a", "none", {}), ("linear", "a", "official", {}), ("linear", "a", "corrected", {}),
        ("linear", "b", "corrected", {}), ("linear", "b", "official", {"alpha": 0.8}),
        ("ncm", "a", "none", {}), ("ncm", "b", "corrected", {"metric": "euclidean"}),
        ("linear", "a", "corrected", {"alpha": 0.0}), ("linear", "b", "none", {"lr": 1e-2})]


@pytest.mark.parametrize("cfg", [GCLConfig(eval_period=100, online_iter=2),
                                 GCLConfig(eval_period=150, batch_size=20, train_mask="batch", eval_mask="seen",
                                           eval_batch_size=40),
                                 GCLConfig(eval_period=200, batch_size=16, train_mask="none", online_iter=1)],
                         ids=["seen-mask", "batch-mask+eval-seen", "no-mask"])
def test_every_batched_run_gives_its_sequential_record(data, cfg):
    """Seeds x feature sets x alignments x learners (mixed α, lr and NCM metrics) in one call, ragged last
    batches included (the three seeds' task sizes differ), against one run_gcl run each."""
    cells = [(cell, seed) for seed in (1, 2, 3) for cell in GRID]
    jobs = [_job(data, lr, kind, al, seed, **kw) for (lr, kind, al, kw), seed in cells]
    sizes = {tuple(len(t) % cfg.batch_size for t in j.stream.task_indices) for j in jobs}
    assert len(sizes) > 1 and any(any(s) for s in sizes)  # the streams really are ragged, and differ
    batched = run_batched(jobs, cfg, progress=False)
    for ((lr, kind, al, kw), seed), bat in zip(cells, batched):
        seq = _sequential(_job(data, lr, kind, al, seed, **kw), cfg)
        _assert_same(seq, bat)
        assert bat.finished and bat.meta["batched"]["runs"] == len(jobs)
        assert bat.meta["learner"] == seq.meta["learner"] and bat.meta["gcl"] == seq.meta["gcl"]


def test_learners_end_in_the_state_of_their_sequential_run(data):
    cfg = GCLConfig(eval_period=100)
    pairs = [(_job(data, "linear", "a", "corrected", 2), _job(data, "linear", "a", "corrected", 2)),
             (_job(data, "ncm", "b", "none", 1), _job(data, "ncm", "b", "none", 1))]
    run_batched([b for _, b in pairs], cfg, progress=False)
    for seq_job, bat_job in pairs:
        _sequential(seq_job, cfg)
        for key, value in seq_job.learner.state_dict().items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(bat_job.learner.state_dict()[key], value, rtol=0, atol=1e-6)
    t_seq, t_bat = pairs[0][0].learner.transform, pairs[0][1].learner.transform
    assert t_bat.count == t_seq.count == 1440
    torch.testing.assert_close(t_bat.m2, t_seq.m2, rtol=1e-12, atol=0)


def test_the_plan_is_the_runner_schedule():
    """Hand-checked: tasks of 5 and 3 samples, batches of 2, evaluations every 3 samples."""
    labels = np.array([0, 1, 0, 2, 1, 2, 3, 3])
    base = si_blurry(labels, n_tasks=1, n=0, m=0, seed=0)
    stream = dataclasses.replace(base, task_indices=[np.array([0, 1, 2, 3, 4]), np.array([5, 6, 7])], n_tasks=2)
    plan = build_plan(stream, GCLConfig(batch_size=2, eval_period=3))
    assert [r.tolist() for r in plan.rows] == [[0, 1], [2, 3], [4], [5, 6], [7]]
    assert [lb.tolist() for lb in plan.labels] == [[0, 1], [0, 2], [1], [2, 3], [3]]
    assert plan.n_seen.tolist() == [2, 3, 3, 4, 4]
    # samples + len(batch) > next_eval: after 2 (2+2 > 3), after 5 (5+1 <= 6: no), after 7 (7+2 > 6)
    assert {k: [(e.kind, e.samples, e.point) for e in v] for k, v in plan.events.items()} == {
        0: [("anytime", 2, 3)], 2: [("task", 5, 0)], 3: [("anytime", 7, 6)], 4: [("task", 8, 0)]}


def test_results_and_callbacks(data, tmp_path):
    class Watch:
        def __init__(self):
            self.events = []

        def on_run_start(self, res):
            self.events.append("start")

        def on_eval(self, res):
            self.events.append("eval")

        def on_task_end(self, res, task):
            self.events.append(f"task{task}")

        def on_run_end(self, res):
            self.events.append("end")

    watch, job = Watch(), _job(data, "linear", "a", "none", 1)
    job.out_path = tmp_path / "run.json"
    (tmp_path / "run.ckpt.pt").write_bytes(b"stale")
    res = run_batched([job], GCLConfig(eval_period=500), progress=False)[0]
    assert res.finished and watch.events == []
    job2 = _job(data, "linear", "a", "none", 1)
    job2.callbacks = (watch,)
    run_batched([job2], GCLConfig(eval_period=500), progress=False)
    assert watch.events[0] == "start" and watch.events[-1] == "end"
    assert watch.events.count("eval") == 2 and [e for e in watch.events if e.startswith("task")] == [
        "task0", "task1", "task2"]
    from mepo_lab.protocols.results import RunResult

    saved = RunResult.load(job.out_path)
    assert saved.finished and saved.anytime_acc == res.anytime_acc and not (tmp_path / "run.ckpt.pt").exists()


def test_what_cannot_be_batched_is_one_clear_error(data):
    sets, y, yte = data
    x, xte, _ = sets["a"]
    stream = si_blurry(y, n_tasks=3, n=50, m=10, seed=1)
    from mepo_lab.learners import LinearLearner

    class Custom(LinearLearner):  # a subclass may change observe: never batched behind its back
        name = "custom"

    with pytest.raises(ValueError, match="cannot batch learner 'custom'.*run it with run_gcl"):
        run_batched([FeatureJob(Custom(), x, xte, yte, stream)], progress=False)
    with pytest.raises(ValueError, match="trains on uint8 images"):
        run_batched([FeatureJob(make_learner("l2p", backbone=torch.nn.Identity()), x, xte, yte, stream)],
                    progress=False)

    class Probe:
        def on_batch(self, res, info):
            pass

    job = _job(data, "linear", "a", "none", 1)
    job.callbacks = (Probe(),)
    with pytest.raises(ValueError, match="listens to on_batch.*run_gcl"):
        run_batched([job], progress=False)
    job = _job(data, "linear", "a", "none", 1)
    job.learner.transform = lambda f: f
    with pytest.raises(ValueError, match="cannot batch the feature transform function"):
        run_batched([job], progress=False)
    with pytest.raises(ValueError, match="the stream was built on"):
        run_batched([FeatureJob(make_learner("ncm"), x[:100], xte, yte, stream)], progress=False)
    assert run_batched([], progress=False) == []


def test_official_singleton_batches_follow_the_switch(data):
    """A task of 33 samples with batches of 32 leaves a batch of one: 'raise' fails as run_gcl does, 'skip' runs."""
    sets, y, yte = data
    x, xte, cov = sets["a"]
    base = si_blurry(y, n_tasks=1, n=0, m=0, seed=0)
    stream = dataclasses.replace(base, task_indices=[np.arange(33), np.arange(33, 97)], n_tasks=2)
    cfg = GCLConfig(eval_period=1000)

    def job(mode):
        learner = make_learner("linear", transform=make_alignment("official", 0.5, cov, 1e-4, mode))
        return FeatureJob(learner, x, xte, yte, stream, train_seed=1)

    with pytest.raises(ValueError, match="needs at least 2 samples, got 1"):
        run_batched([job("raise")], cfg, progress=False)
    seq = _sequential(job("skip"), cfg)
    _assert_same(seq, run_batched([job("skip")], cfg, progress=False)[0])


def test_feature_runner_many_and_sweep_are_one_batched_call():
    from mepo_lab.config import PRESETS, override
    from mepo_lab.experiment import feature_runner, sweep
    from tests.test_experiment import _fake_world_features

    preset = override(PRESETS["cpu"](), {"gcl.eval_period": 50, "stream.n_tasks": 2})
    feats = {"pretrained": _fake_world_features("pretrained"), "mepo": _fake_world_features("mepo", seed=1)}
    run = feature_runner(preset, feats)
    settings = [{"seed": s, "backbone": b, "alignment": a, "alpha": 0.3, "m": m} for s, b, a, m in
                [(1, "mepo", "corrected", 0), (2, "pretrained", "official", 10), (3, "mepo", "none", 50)]]
    many = run.many(settings)
    for s, bat in zip(settings, many):
        seq = run(**s)
        _assert_same(seq, bat)
        assert (bat.backbone, bat.alignment, bat.seed, bat.meta["alpha"]) == (s["backbone"], s["alignment"],
                                                                             s["seed"], 0.3)
    calls = []
    run.many = lambda settings: calls.append(settings) or [run(**s) for s in settings]
    rows = sweep(run, "m", (0, 50), seeds=(1, 2), backbone="mepo")
    assert len(calls) == 1 and [(s["m"], s["seed"]) for s in calls[0]] == [(0, 1), (0, 2), (50, 1), (50, 2)]
    assert [(r["m"], r["seed"]) for r in rows] == [(0, 1), (0, 2), (50, 1), (50, 2)]


def test_run_grid_batches_feature_cells_with_sequential_records(smoke_preset, smoke_home, tmp_path):
    from mepo_lab.experiment import (
        run_grid,
        run_on_features,
        with_covariance,
        world_features,
    )
    from mepo_lab.protocols.results import RunResult
    from mepo_lab.registry import get_backbone

    combos = [("linear", "pretrained", "corrected"), ("ncm", "pretrained", "none"), ("linear", "pretrained", "none")]
    logs = []
    runs, rows = run_grid(smoke_preset, combos, tmp_path, data_home=smoke_home, progress=False, log=logs.append)
    assert any("3 feature-cached runs as one batched program" in line for line in logs)
    feats = with_covariance(smoke_preset, world_features(smoke_preset, get_backbone("pretrained", smoke_preset,
                                                                                    smoke_home, False), smoke_home,
                                                         False), smoke_home, False)
    for (learner, kind, alignment), run in zip(combos, runs):
        seq = run_on_features(smoke_preset, learner, feats, 1, alignment=alignment, progress=False)
        _assert_same(seq, run)
        saved = RunResult.load(tmp_path / "runs" / f"{learner}_{kind}_{alignment}_seed1.json")
        assert saved.finished and saved.metrics == pytest.approx(run.metrics, nan_ok=True)
    assert [r["method"] for r in rows] == ["linear", "ncm", "linear"]
