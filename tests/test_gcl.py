import dataclasses
import json

import numpy as np
import pytest
import torch

from mepo_lab.config import GCLConfig
from mepo_lab.learners import Learner, StepContext, make_learner
from mepo_lab.protocols.online import _Exposure, run_gcl
from mepo_lab.protocols.results import RunResult
from mepo_lab.protocols.streams import si_blurry
from tests.helpers import clustered


def toy_stream(task_indices, labels, n_classes=None):
    """A hand-made stream with the given per-task indices (built by replacing a real one's fields)."""
    labels = np.asarray(labels, np.int64)
    base = si_blurry(labels, n_tasks=1, n=0, m=0, seed=0, n_classes=n_classes)
    return dataclasses.replace(base, task_indices=[np.asarray(t, np.int64) for t in task_indices],
                               n_tasks=len(task_indices))


class Recorder(Learner):
    """Records what the runner feeds it; predicts class 0 for everything."""

    name = "recorder"

    def __init__(self):
        self.batches = []

    def setup(self, n_classes, in_dim, device):
        self.n_classes = n_classes

    def observe(self, x, y, ctx: StepContext):
        self.batches.append((x[:, 0].long().tolist(), y.tolist(), ctx.n_seen))
        return {}

    def logits(self, x):
        z = torch.zeros(len(x), self.n_classes)
        z[:, 0] = 1
        return z


def test_exposure_order_follows_first_appearance_within_batches():
    exp = _Exposure(10)
    assert exp.update(np.array([7, 3, 7, 5])).tolist() == [0, 1, 0, 2]
    assert exp.update(np.array([5, 9, 3])).tolist() == [2, 3, 1]
    assert exp.order == [7, 3, 5, 9]


def test_eval_schedule_matches_reference_points():
    labels = np.zeros(3200, np.int64)
    stream = toy_stream([np.arange(3200)], labels, n_classes=2)
    x = torch.arange(3200, dtype=torch.float32)[:, None]
    res = run_gcl(Recorder(), x, x[:10], np.zeros(10, np.int64), stream, GCLConfig(), progress=False)
    assert res.anytime_samples == [992, 1984, 2976]
    assert res.task_end_samples == [3200]


def test_batches_never_straddle_tasks_and_labels_are_remapped():
    labels = np.array([4, 4, 2, 2, 9, 4, 2], np.int64)
    stream = toy_stream([[0, 1, 2], [3, 4, 5, 6]], labels, n_classes=10)
    rec = Recorder()
    x = torch.arange(7, dtype=torch.float32)[:, None]
    run_gcl(rec, x, x, labels, stream, GCLConfig(batch_size=2, eval_period=100), progress=False)
    assert [b[0] for b in rec.batches] == [[0, 1], [2], [3, 4], [5, 6]]
    assert [b[1] for b in rec.batches] == [[0, 0], [1], [1, 2], [0, 1]]
    assert [b[2] for b in rec.batches] == [1, 2, 3, 3]


def test_empty_tasks_and_per_class_accuracy():
    labels = np.array([0, 1, 0, 1], np.int64)
    stream = toy_stream([[], [0, 1], [], [2, 3]], labels, n_classes=3)
    x = torch.zeros(4, 1)
    test_y = np.array([0, 0, 1, 2])
    res = run_gcl(Recorder(), x, torch.zeros(4, 1), test_y, stream, GCLConfig(eval_period=10), progress=False)
    assert np.isnan(res.task_end_acc[0])  # nothing exposed yet: no test sample to score
    assert res.task_end_acc[1:] == [2 / 3] * 3  # class 2 never exposed: 3 test samples of classes 0, 1
    np.testing.assert_allclose(res.class_acc[-1], [1.0, 0.0, 0.0], atol=1e-4)
    assert res.metrics["A_last"] == pytest.approx(2 / 3)
    assert res.metrics["A_avg"] == pytest.approx(2 / 3)
    assert res.finished


def test_seeds_are_separate_and_global_rng_untouched(tmp_path):
    x, y, xte, yte, _ = clustered()
    stream = si_blurry(y, n_tasks=3, n=50, m=10, seed=1)
    cfg = GCLConfig(eval_period=50)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = run_gcl(make_learner("linear"), x, xte, yte, stream, cfg, train_seed=1, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = run_gcl(make_learner("linear"), x, xte, yte, stream, cfg, train_seed=1, progress=False)
    c = run_gcl(make_learner("linear"), x, xte, yte, stream, cfg, train_seed=2, progress=False)
    assert a.anytime_acc == b.anytime_acc
    assert a.class_acc != c.class_acc
    assert (a.stream_seed, a.train_seed, c.train_seed) == (1, 1, 2)


def test_results_written_after_every_evaluation(tmp_path):
    x, y, xte, yte, _ = clustered()
    stream = si_blurry(y, n_tasks=3, n=50, m=10, seed=1)
    out = tmp_path / "run.json"
    seen = []

    class Spy:
        def on_eval(self, res):
            seen.append(len(json.loads(out.read_text())["anytime_acc"]))

    res = run_gcl(make_learner("ncm"), x, xte, yte, stream, GCLConfig(eval_period=50), callbacks=[Spy()],
                  out_path=out, progress=False)
    assert seen == list(range(1, len(res.anytime_acc) + 1))
    loaded = RunResult.load(out)
    assert loaded.finished and loaded.metrics == res.metrics
    assert res.metrics["A_last"] > 0.8  # well-separated clusters: NCM is nearly perfect


@pytest.mark.parametrize("cfg, message", [
    (GCLConfig(batch_size=0), "gcl.batch_size must be at least 1"),
    (GCLConfig(train_mask="task"), "unknown train_mask 'task'"),
    (GCLConfig(eval_mask="batch"), "unknown eval_mask 'batch'"),
])
def test_bad_config(cfg, message):
    x, y, xte, yte, _ = clustered()
    with pytest.raises(ValueError, match=message):
        run_gcl(make_learner("linear"), x, xte, yte, si_blurry(y, n_tasks=2, n=50, m=10, seed=1), cfg)


def test_mismatched_inputs_are_named():
    x, y, xte, yte, _ = clustered()
    stream = si_blurry(y, n_tasks=2, n=50, m=10, seed=1)
    with pytest.raises(ValueError, match="stream was built on 240 labels but train_x has 10 rows"):
        run_gcl(make_learner("linear"), x[:10], xte, yte, stream)
    with pytest.raises(ValueError, match="expects features but got uint8 images"):
        images = torch.zeros(240, 3, 8, 8, dtype=torch.uint8)
        run_gcl(make_learner("linear"), images, images[:len(yte)], yte, stream)
    with pytest.raises(ValueError, match=r"test_x \(60, 4\) / test_y \(60\) do not match train_x \(240, 8\)"):
        run_gcl(make_learner("linear"), x, xte[:, :4], yte, stream)


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.test_gcl import resumable_setup
from mepo_lab.protocols.online import run_gcl

class Kill:
    def __init__(self):
        self.n = 0
    def on_eval(self, res):
        self.n += 1
        if self.n == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)

learner, args, kwargs = resumable_setup({name!r})
run_gcl(learner, *args, **kwargs, out_path={out!r}, callbacks=[Kill()], progress=False)
"""


def resumable_setup(name):
    """A small but real run: clustered features for `linear`, tiny images for `dualprompt`."""
    from mepo_lab.backbones.micro_vit import create_micro_vit
    from mepo_lab.config import MicroViTConfig

    x, y, xte, yte, _ = clustered(per_class=60)
    cfg = GCLConfig(batch_size=16, eval_period=48, online_iter=2)
    if name == "linear":
        learner = make_learner("linear")
    else:
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (len(y), 3, 16, 16), dtype=torch.uint8, generator=gen)
        xte = torch.randint(0, 256, (len(yte), 3, 16, 16), dtype=torch.uint8, generator=gen)
        vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=2, num_heads=2), 16, seed=0)
        learner = make_learner(name, backbone=vit, routing="corrected")
    stream = si_blurry(y, n_tasks=3, n=50, m=10, seed=2)
    return learner, (x, xte, yte, stream, cfg), {"train_seed": 3}


@pytest.mark.parametrize("name", ["linear", "dualprompt"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, name):
    import os
    import subprocess
    import sys

    from mepo_lab.protocols.online import checkpoint_path

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "run.json"
    code = KILLED_RUN.format(root=root, name=name, out=str(out), kill_at=4)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert checkpoint_path(out).exists() and not RunResult.load(out).finished
    learner, args, kwargs = resumable_setup(name)
    resumed = run_gcl(learner, *args, **kwargs, out_path=out, resume=True, progress=False)
    learner, args, kwargs = resumable_setup(name)
    straight = run_gcl(learner, *args, **kwargs, progress=False)
    for field in ("anytime_samples", "anytime_acc", "anytime_class_acc", "task_end_acc", "class_acc",
                  "exposed_classes", "metrics"):
        np.testing.assert_equal(getattr(resumed, field), getattr(straight, field), err_msg=field)  # NaN == NaN
    assert resumed.finished and not checkpoint_path(out).exists()


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    from mepo_lab.protocols.online import checkpoint_path

    x, y, xte, yte, _ = clustered()
    stream = si_blurry(y, n_tasks=2, n=50, m=10, seed=1)
    out = tmp_path / "run.json"

    class Stop:
        def on_eval(self, res):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_gcl(make_learner("linear"), x, xte, yte, stream, GCLConfig(eval_period=40), out_path=out,
                callbacks=[Stop()], progress=False)
    assert checkpoint_path(out).exists()
    with pytest.warns(UserWarning, match="other settings"):
        res = run_gcl(make_learner("linear", lr=1e-3), x, xte, yte, stream, GCLConfig(eval_period=40),
                      out_path=out, resume=True, progress=False)
    assert res.finished and res.anytime_samples[0] < 80
