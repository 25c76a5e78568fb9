import pytest
import torch
import torch.nn.functional as F

from mepo_lab.learners import StepContext, logit_mask, make_learner


@pytest.mark.parametrize("mode, n_seen, y, expected", [
    ("seen", 2, [0], [0, 0, -1, -1]),
    ("batch", 4, [3, 1, 3], [-1, 0, -1, 0]),
])
def test_logit_masks(mode, n_seen, y, expected):
    mask = logit_mask(mode, 4, n_seen, torch.tensor(y))
    assert mask.tolist() == [0.0 if e == 0 else float("-inf") for e in expected]


def test_no_mask_and_unknown_mask():
    assert logit_mask("none", 4, 1) is None
    with pytest.raises(ValueError, match="unknown logit mask 'session'"):
        logit_mask("session", 4, 1)


def test_unknown_learner_lists_valid_names():
    with pytest.raises(ValueError, match="unknown learner 'coda': choose one of linear, ncm, finetune, l2p, "
                                         "dualprompt, misa"):
        make_learner("coda")


@pytest.mark.parametrize("mask", ["seen", "batch", "none"])
def test_linear_learner_matches_autograd_adam(mask):
    torch.manual_seed(0)
    learner = make_learner("linear", lr=5e-3)
    learner.setup(n_classes=6, in_dim=5, device=torch.device("cpu"))
    head = torch.nn.Linear(5, 6)
    with torch.no_grad():
        head.weight.copy_(learner.weight)
        head.bias.copy_(learner.bias)
    opt = torch.optim.Adam(head.parameters(), lr=5e-3)
    for n_seen, labels in [(3, [0, 1, 2, 1]), (5, [3, 4, 0, 4])]:
        x, y = torch.randn(4, 5), torch.tensor(labels)
        learner.observe(x, y, StepContext(n_seen, online_iter=3, train_mask=mask))
        m = logit_mask(mask, 6, n_seen, y)
        for _ in range(3):
            z = head(x)
            loss = F.cross_entropy(z if m is None else z + m, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.testing.assert_close(learner.weight, head.weight.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(learner.bias, head.bias.detach(), atol=1e-6, rtol=1e-5)


def test_masked_units_do_not_move_under_seen_mask():
    learner = make_learner("linear")
    learner.setup(4, 3, torch.device("cpu"))
    before = learner.theta.clone()
    learner.observe(torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]), StepContext(2, 3, "seen"))
    assert torch.equal(learner.theta[2:], before[2:])
    assert not torch.equal(learner.theta[:2], before[:2])


def test_ncm_hand_computed():
    ncm = make_learner("ncm", metric="euclidean")
    ncm.setup(3, 2, torch.device("cpu"))
    ncm.observe(torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]]), torch.tensor([0, 0, 1]), StepContext(2, 3))
    # means: class 0 -> (1, 0), class 1 -> (10, 10), class 2 unseen
    scores = ncm.logits(torch.tensor([[1.0, 1.0], [9.0, 9.0]]))
    assert scores[:, 2].tolist() == [float("-inf")] * 2
    assert scores[0, :2].tolist() == pytest.approx([-1.0, -(81.0 + 81.0)])
    assert scores.argmax(1).tolist() == [0, 1]
    ncm.observe(torch.tensor([[3.0, 0.0]]), torch.tensor([0]), StepContext(2, 3))  # mean moves to (5/3, 0)
    assert ncm.logits(torch.tensor([[1.0, 1.0]]))[0, 0].item() == pytest.approx(-((2 / 3) ** 2 + 1))


def test_ncm_cosine_and_bad_metric():
    ncm = make_learner("ncm")
    ncm.setup(2, 2, torch.device("cpu"))
    ncm.observe(torch.tensor([[5.0, 0.0], [0.0, 0.1]]), torch.tensor([0, 1]), StepContext(2, 1))
    assert ncm.logits(torch.tensor([[1.0, 0.9]])).argmax().item() == 0
    assert ncm.logits(torch.tensor([[0.9, 1.0]])).argmax().item() == 1
    with pytest.raises(ValueError, match="unknown NCM metric"):
        make_learner("ncm", metric="manhattan")


def test_finetune_updates_backbone_copy_only():
    from mepo_lab.backbones.micro_vit import create_micro_vit
    from mepo_lab.config import MicroViTConfig

    vit = create_micro_vit(MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2), 16, seed=0)
    original = {k: v.clone() for k, v in vit.state_dict().items()}
    ft = make_learner("finetune", backbone=vit, head_lr=1e-2, backbone_lr=1e-2)
    ft.setup(3, 0, torch.device("cpu"))
    x = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    ft.observe(x, torch.tensor([0, 1, 0, 1]), StepContext(2, 2))
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in original.items())
    assert not torch.equal(ft.backbone.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    assert ft.logits(x).shape == (4, 3)
