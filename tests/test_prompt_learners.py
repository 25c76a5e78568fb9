import numpy as np
import pytest
import torch

from mepo_lab.backbones.base import cls_features
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import GCLConfig, MicroViTConfig
from mepo_lab.learners import StepContext, make_learner
from mepo_lab.learners.prompting import PromptPool, prompt_tuning_forward
from mepo_lab.protocols.online import run_gcl
from mepo_lab.protocols.streams import si_blurry

VIT = MicroViTConfig(patch_size=8, embed_dim=16, depth=5, num_heads=2)


def vit():
    return create_micro_vit(VIT, 16, seed=0).eval()


def images(n, seed=0):
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def isa(dim=16, pool=10):
    return torch.randn(pool, 3 * 20, dim), torch.randn(1, 2 * 10, dim)


@pytest.mark.parametrize("routing, expected", [("official", [0, 0]), ("corrected", [3, 3])])
def test_routing_quirk_uses_slot_zero_inside_a_window(routing, expected):
    pool = PromptPool(10, 4, 8)
    _, chosen, slot = pool.select(torch.randn(2, 8), 1, window=(3, 4), routing=routing)
    assert slot[:, 0].tolist() == expected
    assert torch.equal(chosen[:, 0], pool.prompts[expected])


def test_without_window_the_nearest_key_wins():
    pool = PromptPool(10, 4, 8)
    query = pool.keys[[7, 2]].detach() * 3
    dist, _, slot = pool.select(query, 1)
    assert slot[:, 0].tolist() == [7, 2] and torch.allclose(dist, torch.zeros_like(dist), atol=1e-6)


def test_prompted_pass_without_prompts_is_timm_forward():
    model, x = vit(), torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(prompt_tuning_forward(model, x, {}), cls_features(model, x))


def test_dualprompt_official_trains_expert_slot_zero_and_key_of_the_task():
    learner = make_learner("dualprompt", backbone=vit(), routing="official")
    learner.setup(4, 0, torch.device("cpu"))
    learner.begin_task(2)
    frozen = {k: v.clone() for k, v in learner.vit.state_dict().items()}
    e_before = learner.prompts.e.prompts.detach().clone()
    keys_before = learner.prompts.e.keys.detach().clone()
    learner.observe(images(6), torch.tensor([0, 1, 0, 1, 0, 1]), StepContext(2, 1, "seen"))
    assert all(torch.equal(v, learner.vit.state_dict()[k]) for k, v in frozen.items())
    changed = (learner.prompts.e.prompts.detach() != e_before).flatten(1).any(1)
    assert changed.tolist() == [True] + [False] * 9        # only slot 0 learns
    key_changed = (learner.prompts.e.keys.detach() != keys_before).any(1)
    assert key_changed.tolist() == [i == 2 for i in range(10)]  # the similarity loss pulls key t


def test_dualprompt_corrected_trains_the_slot_of_the_task():
    learner = make_learner("dualprompt", backbone=vit(), routing="corrected")
    learner.setup(4, 0, torch.device("cpu"))
    learner.begin_task(2)
    before = learner.prompts.e.prompts.detach().clone()
    learner.observe(images(4), torch.tensor([0, 1, 0, 1]), StepContext(2, 1, "seen"))
    assert ((learner.prompts.e.prompts.detach() != before).flatten(1).any(1)).tolist() == [i == 2 for i in range(10)]


def test_misa_needs_prompts_loads_them_and_masks_the_batch():
    with pytest.raises(ValueError, match="misa needs ISA prompts"):
        make_learner("misa", backbone=vit())
    e, g = isa()
    learner = make_learner("misa", backbone=vit(), prompts=(e, g))
    learner.setup(5, 0, torch.device("cpu"))
    assert torch.equal(learner.prompts.e.prompts.detach(), e) and torch.equal(learner.prompts.g.detach(), g)
    assert learner.train_mask == "batch" and learner.eval_mask == "none"
    head_before = learner.head.weight.detach().clone()
    learner.observe(images(4), torch.tensor([1, 3, 1, 3]), StepContext(4, 1, "batch"))
    moved = (learner.head.weight.detach() != head_before).any(1)
    assert moved.tolist() == [False, True, False, True, False]  # rows of classes absent from the batch: no gradient


def test_l2p_official_key_loss_is_dead_corrected_trains_keys():
    for key_loss, keys_move in (("official", False), ("corrected", True)):
        learner = make_learner("l2p", backbone=vit(), key_loss=key_loss)
        learner.setup(3, 0, torch.device("cpu"))
        keys = learner.prompts.keys.detach().clone()
        learner.observe(images(4), torch.tensor([0, 1, 2, 0]), StepContext(3, 1, "batch"))
        assert (not torch.equal(keys, learner.prompts.keys.detach())) is keys_move


def test_prompt_layers_must_fit_the_backbone():
    with pytest.raises(ValueError, match="do not fit a ViT of depth 5"):
        make_learner("dualprompt", backbone=vit(), e_layers=(2, 3, 9))


class Spy:
    name, batch_dependent = "spy", False

    def __init__(self):
        self.seen = []

    def update(self, x):
        pass

    def __call__(self, x):
        self.seen.append(x.detach().clone())
        return x


@pytest.mark.parametrize("name", ["l2p", "dualprompt", "misa", "finetune"])
def test_every_image_learner_runs_a_stream(name):
    labels = np.repeat(np.arange(4), 12)
    x, xte, yte = images(48), images(16, seed=1), np.repeat(np.arange(4), 4)
    stream = si_blurry(labels, n_tasks=2, n=50, m=10, seed=1)
    kwargs = {"prompts": isa()} if name == "misa" else {}
    res = run_gcl(make_learner(name, backbone=vit(), **kwargs), x, xte, yte, stream,
                  GCLConfig(batch_size=8, eval_period=16, online_iter=1), progress=False)
    assert res.finished and len(res.task_end_acc) == 2 and 0 <= res.metrics["A_last"] <= 1
    if name in ("l2p", "misa"):
        assert res.meta["gcl"]["train_mask"] == "batch"


def test_alignment_sees_the_prompted_feature_not_the_query():
    spy = Spy()
    learner = make_learner("dualprompt", backbone=vit(), transform=spy)
    learner.setup(3, 0, torch.device("cpu"))
    x = images(4)
    learner.logits(x)
    from mepo_lab.data.normalization import normalize

    query = cls_features(learner.vit, normalize(x))
    assert len(spy.seen) == 1 and not torch.allclose(spy.seen[0], query)


@pytest.mark.parametrize("name", ["l2p", "dualprompt", "finetune", "linear"])
def test_running_alignment_counts_each_new_sample_once(name):
    """With 3 online iterations a batch is transformed 3 times but enters the running statistics once."""
    from mepo_lab.mepo.alignment import CorrectedAlignment

    dim = vit().num_features
    align = CorrectedAlignment(np.eye(dim), alpha=0.5)
    kwargs = {} if name == "linear" else {"backbone": vit()}
    learner = make_learner(name, transform=align, **kwargs)
    learner.setup(3, dim, torch.device("cpu"))
    x = images(5) if name != "linear" else torch.randn(5, dim)
    y = torch.tensor([0, 1, 2, 0, 1])
    learner.observe(x, y, StepContext(3, online_iter=3, train_mask="seen"))
    assert align.count == 5
    learner.observe(x[:2], y[:2], StepContext(3, online_iter=3, train_mask="seen"))
    assert align.count == 7


def test_isa_lite_prompts_are_cached_and_fit_misa(smoke_preset, tmp_path):
    from mepo_lab.backbones.pretrain import random_backbone
    from mepo_lab.isa import isa_prompts

    bb = random_backbone(smoke_preset)
    e, g = isa_prompts(smoke_preset, bb, tmp_path, per_class=2, progress=False)
    d = bb.feature_dim  # the smoke ViT has one block: G (10 tokens) and E (20 tokens) both at block 0
    assert e.shape == (10, 20, d) and g.shape == (1, 10, d)
    e2, _ = isa_prompts(smoke_preset, bb, tmp_path, per_class=2, progress=False)
    assert torch.equal(e, e2) and len(list((tmp_path / "isa").glob("*.pt"))) == 1
    assert not torch.equal(e, torch.zeros_like(e))
    make_learner("misa", backbone=bb.model, prompts=(e, g)).setup(3, 0, torch.device("cpu"))


@pytest.mark.parametrize("depth, expected", [(12, ((0, 1), (2, 3, 4))), (5, ((0, 1), (2, 3, 4))),
                                             (4, ((0,), (1, 2, 3))), (1, ((0,), (0,)))])
def test_prompt_layers_scale_with_depth(depth, expected):
    from mepo_lab.learners.prompt_learners import prompt_layers

    assert prompt_layers(depth) == expected
