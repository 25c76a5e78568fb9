"""Evaluation queries computed once: same predictions as recomputing them, and the counters show the saving."""
import numpy as np
import pytest
import torch

from mepo_lab.data.normalization import WORLD_PREPROCESS
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.learners import make_learner
from mepo_lab.learners.queries import QueryCache, bank_key, query_bank
from mepo_lab.protocols.online import run_gcl
from mepo_lab.protocols.streams import si_blurry
from mepo_lab.registry import get_backbone

CURVES = ("anytime_acc", "task_end_acc", "class_acc", "anytime_class_acc")


@pytest.fixture(scope="module")
def world(smoke_preset, smoke_home):
    w = SyntheticWorld(smoke_preset.world)
    train, test = w.dataset("downstream", "train"), w.dataset("downstream", "test")
    backbone = get_backbone("pretrained", smoke_preset, smoke_home, progress=False)
    stream = si_blurry(train.targets, n_tasks=3, n=50, m=10, seed=1)
    return backbone, train, test, stream


def _run(world, smoke_preset, learner="dualprompt", **kwargs):
    backbone, train, test, stream = world
    model = make_learner(learner, backbone=backbone.model, lr=smoke_preset.gcl.lr, amp=False, **kwargs)
    res = run_gcl(model, torch.from_numpy(train.images), torch.from_numpy(test.images), test.targets, stream,
                  smoke_preset.gcl, train_seed=1, progress=False)
    return res, res.meta["passes"]


@pytest.mark.parametrize("learner", ["dualprompt", "l2p"])
def test_cached_and_banked_queries_give_the_recomputed_predictions(world, smoke_preset, smoke_home, tmp_path,
                                                                   learner):
    backbone, _, test, stream = world
    fresh, p_fresh = _run(world, smoke_preset, learner, query_cache=False)  # the reference's path: every time
    cached, p_cached = _run(world, smoke_preset, learner)  # once per test image per run
    bank = query_bank(backbone.model, torch.from_numpy(test.images), WORLD_PREPROCESS,
                      bank_key(backbone.weights_hash, "smoke-test", WORLD_PREPROCESS.id, "fp32", len(test.images)),
                      amp=False, data_home=tmp_path, batch_size=37)  # another batching than the evaluation's
    banked, p_banked = _run(world, smoke_preset, learner, query_bank=bank)
    for res in (cached, banked):
        for name in CURVES:
            assert getattr(res, name) == getattr(fresh, name), name
    n_eval = p_fresh["eval_forward"]
    assert p_cached["eval_forward"] == p_banked["eval_forward"] == n_eval > 0
    assert p_fresh["eval_query"] == n_eval  # today: one query pass per evaluated image
    assert 0 < p_cached["eval_query"] <= len(test.images) < n_eval
    assert p_banked["eval_query"] == 0  # evaluation forwards: at most half of today's
    assert p_banked["eval_query"] + p_banked["eval_forward"] <= (p_fresh["eval_query"] + p_fresh["eval_forward"]) / 2
    steps = smoke_preset.gcl.online_iter * len(stream)
    assert p_fresh["train_query"] == p_fresh["train_forward"] == p_fresh["train_backward"] == steps
    again = query_bank(backbone.model, None, WORLD_PREPROCESS,
                       bank_key(backbone.weights_hash, "smoke-test", WORLD_PREPROCESS.id, "fp32", len(test.images)),
                       data_home=tmp_path)  # from disk: the images are not read again
    assert torch.equal(again, bank)


def test_query_cache_computes_each_row_once():
    calls = []

    def compute(x):
        calls.append(len(x))
        return x[:, :2] * 10

    cache = QueryCache(None, torch.device("cpu"))
    x = torch.arange(12.0).reshape(4, 3)
    q, n = cache.get(np.array([5, 1, 7, 2]), x, compute)
    assert n == 4 and torch.equal(q, x[:, :2] * 10)
    q2, n2 = cache.get(np.array([7, 9, 5]), torch.stack([x[2], torch.full((3,), -1.0), x[0]]), compute)
    assert n2 == 1 and calls == [4, 1] and torch.equal(q2[0], q[2]) and torch.equal(q2[2], q[0])
    bank = QueryCache(torch.ones(3, 2), torch.device("cpu"))
    with pytest.raises(ValueError, match="the query bank has 3 rows but test row 4"):
        bank.get(np.array([4]), x, compute)


def test_image_runs_record_their_passes_and_use_the_bank(smoke_preset, smoke_home):
    from mepo_lab.experiment import run_one

    backbone = get_backbone("pretrained", smoke_preset, smoke_home, progress=False)
    run = run_one(smoke_preset, "dualprompt", backbone, 1, data_home=smoke_home, progress=False)
    assert run.meta["passes"]["eval_query"] == 0 and run.meta["passes"]["eval_forward"] > 0
    assert list((smoke_home / "queries").glob("*.pt"))
    tuned = run_one(smoke_preset, "finetune", backbone, 1, data_home=smoke_home, progress=False)
    passes = tuned.meta["passes"]
    assert passes["train_forward"] == passes["train_backward"] > 0 and passes["train_query"] == 0
