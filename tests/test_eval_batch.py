"""Evaluation batches sized from free GPU memory (issue 10): the arithmetic, the choice per learner, and an
out-of-memory error that halves the size and repeats the evaluation with the same predictions."""
import numpy as np
import pytest
import timm
import torch

from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import GCLConfig, MicroViTConfig
from mepo_lab.learners import make_learner
from mepo_lab.protocols import eval_batch as eb
from mepo_lab.protocols.eval_batch import EvalBatch, activation_bytes, fit_batch
from mepo_lab.protocols.learner import Learner
from mepo_lab.protocols.online import _Exposure, evaluate


@pytest.mark.parametrize("free,per,floor,cap,expected", [
    (1000, 10, 1, 1024, 32),  # room 50 -> 32
    (1280, 10, 1, 1024, 64),  # room 64 exactly
    (1000, 10, 64, 1024, 64),  # never below the configured size
    (10**12, 10, 64, 1024, 1024),  # never above the cap
    (10, 100, 8, 1024, 8),  # no room at all: the floor
    (10**6, 10, 2048, 1024, 2048),  # a floor above the cap wins
])
def test_fit_batch(free, per, floor, cap, expected):
    assert fit_batch(free, per, floor, cap) == expected


def test_activation_bytes_of_vit_b16():
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    # T = 196 patches + 1 CLS + 32 prompt tokens = 229; D = 768, MLP 3072, 12 heads, 224 px, fp32
    assert activation_bytes(vit) == 4 * (229 * (6 * 768 + 2 * 3072) + 12 * 229 ** 2 + 6 * 224 * 224)


class _Fake(Learner):
    """Scores = one-hot of (pixel sum mod k); out of memory above ``limit`` images per pass."""

    input_kind = "images"

    def __init__(self, vit, limit: int = 10**9, independent: bool = True):
        self.vit, self.limit, self.sizes, self.independent = vit, limit, [], independent

    @property
    def eval_backbone(self):
        return self.vit

    @property
    def batch_independent(self) -> bool:
        return self.independent

    def setup(self, n_classes, in_dim, device):
        self.n_classes = n_classes

    def observe(self, x, y, ctx):
        return {}

    def logits(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return torch.nn.functional.one_hot(x.long().sum((1, 2, 3)) % self.n_classes, self.n_classes).float()


@pytest.fixture
def fake_gpu(monkeypatch):
    """``mem_get_info`` of a GPU with 1 GiB free, so EvalBatch takes its CUDA branch on this CPU."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 2**31))
    return torch.device("cuda")


def test_the_size_per_learner_and_device(fake_gpu):
    vit = create_micro_vit(MicroViTConfig(), 32)
    cfg = GCLConfig(eval_batch_size=64)
    per = activation_bytes(vit)
    expected = fit_batch(2**30, per, 64)
    assert expected > 64
    assert EvalBatch(_Fake(vit), cfg, fake_gpu).size == expected
    assert EvalBatch(_Fake(vit), cfg, torch.device("cpu")).size == 64  # the CPU: the configured size
    assert EvalBatch(_Fake(vit, independent=False), cfg, fake_gpu).size == 64  # batch statistics: unchanged
    assert EvalBatch(_Fake(vit), GCLConfig(eval_batch_size=64, eval_batch_auto=False), fake_gpu).size == 64
    prompt = make_learner("dualprompt", backbone=vit)
    assert EvalBatch(prompt, cfg, fake_gpu).size == expected
    linear = make_learner("linear")
    assert EvalBatch(linear, cfg, fake_gpu).size == eb.FEATURE_BATCH


def test_out_of_memory_halves_the_size_and_repeats(fake_gpu, monkeypatch):
    vit = create_micro_vit(MicroViTConfig(), 32)
    cfg = GCLConfig(eval_batch_size=16)
    monkeypatch.setattr(eb, "CAP", 128)
    test_x = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    test_y = np.arange(300) % 5
    exposure = _Exposure(5)
    exposure.update(np.arange(5))
    learner = _Fake(vit, limit=40)
    learner.setup(5, 0, "cpu")
    batch = EvalBatch(learner, cfg, fake_gpu)
    assert batch.size == 128 and batch.auto
    acc, cls_acc = evaluate(learner, test_x, test_y, exposure, 5, cfg, torch.device("cpu"), batch)
    assert batch.size == 32  # 128 and 64 ran out of memory
    assert learner.sizes[:3] == [128, 64, 32]
    ref = _Fake(vit)
    ref.setup(5, 0, "cpu")
    acc_ref, cls_ref = evaluate(ref, test_x, test_y, exposure, 5, cfg, torch.device("cpu"))
    assert acc == acc_ref and np.array_equal(cls_acc, cls_ref)
    assert set(ref.sizes) <= {16, 300 % 16}  # the configured size on the CPU
    hopeless = _Fake(vit, limit=8)
    hopeless.setup(5, 0, "cpu")
    with pytest.raises(torch.cuda.OutOfMemoryError):  # at the configured size: the caller's oom_guard names the fix
        evaluate(hopeless, test_x, test_y, exposure, 5, cfg, torch.device("cpu"), EvalBatch(hopeless, cfg, fake_gpu))
