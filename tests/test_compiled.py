"""Compiled backbone passes (issue 10): padded to fixed shapes with the eager values and gradients, a fallback
that prints one line and keeps going, and whole runs that match the eager path."""
import pytest
import torch

from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import GCLConfig, MicroViTConfig
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.learners import make_learner
from mepo_lab.learners import compiled as compiled_module
from mepo_lab.learners.compiled import CompiledPass, compile_wanted
from mepo_lab.learners.prompting import prompt_tuning_forward
from mepo_lab.protocols.online import run_gcl
from mepo_lab.protocols.streams import si_blurry
from mepo_lab.registry import get_backbone


@pytest.fixture(scope="module")
def vit():
    model = create_micro_vit(MicroViTConfig(), 32, seed=0).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _layers(g: torch.Tensor, b: int) -> dict[int, list[torch.Tensor]]:
    return {0: [g[:1].expand(b, -1, -1)], 2: [g[1:].expand(b, -1, -1)]}


@pytest.mark.parametrize("setting,device,expected", [("auto", "cpu", False), ("auto", "cuda", True),
                                                     ("on", "cpu", True), ("off", "cuda", False)])
def test_compile_setting(setting, device, expected):
    assert compile_wanted(setting, device) is expected


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="compile must be one of auto, on, off, got 'yes'"):
        GCLConfig(compile="yes")
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        make_learner("dualprompt", backbone=create_micro_vit(MicroViTConfig(), 32), compile_mode="fast")


def test_padded_pass_gives_the_eager_values_and_gradients(vit):
    compiled = CompiledPass(prompt_tuning_forward, enabled=True, backend="aot_eager")
    g = torch.randn(2, 4, 128, requires_grad=True)
    for b in (32, 7, 32, 5):  # 7 and 5 are padded to 32 and cut back
        x = torch.randn(b, 3, 32, 32)
        out = compiled(vit, x, _layers(g, b))
        (grad,) = torch.autograd.grad(out.square().sum(), g)
        ref = prompt_tuning_forward(vit, x, _layers(g, b))
        (ref_grad,) = torch.autograd.grad(ref.square().sum(), g)
        assert out.shape == ref.shape == (b, 128)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert compiled(vit, torch.randn(3, 3, 32, 32), _layers(g, 3)).shape == (3, 128)
    assert compiled.sizes == {("", True): 32, ("", False): 3} and compiled.active and compiled.failure is None


def _broken_backend(gm, example_inputs):
    raise RuntimeError("no compiler here\nsecond line")


def test_a_failing_compiler_falls_back_with_one_line(vit, capsys, monkeypatch):
    monkeypatch.setattr(compiled_module, "_SAID", set())
    compiled = CompiledPass(prompt_tuning_forward, enabled=True, backend=_broken_backend, name="prompted")
    g = torch.randn(2, 4, 128)
    x = torch.randn(4, 3, 32, 32)
    out = compiled(vit, x, _layers(g, 4))
    torch.testing.assert_close(out, prompt_tuning_forward(vit, x, _layers(g, 4)), rtol=0, atol=0)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "torch.compile of the prompted pass failed" in lines[0]
    assert "no compiler here" in lines[0] and "second line" not in lines[0]
    assert not compiled.active and "no compiler here" in compiled.failure
    compiled(vit, x, _layers(g, 4))  # eager from now on: no second line
    assert capsys.readouterr().out == ""


def test_an_error_of_the_pass_itself_is_raised(vit):
    compiled = CompiledPass(prompt_tuning_forward, enabled=True, backend=_broken_backend)
    with pytest.raises(RuntimeError, match="expected input|channels|size"):  # the eager pass's own error
        compiled(vit, torch.randn(2, 5, 32, 32), {})


def _run(learner, smoke_preset, smoke_home, backend=None, **kwargs):
    w = SyntheticWorld(smoke_preset.world)
    train, test = w.dataset("downstream", "train"), w.dataset("downstream", "test")
    backbone = get_backbone("pretrained", smoke_preset, smoke_home, progress=False)
    stream = si_blurry(train.targets, n_tasks=3, n=50, m=10, seed=1)
    model = make_learner(learner, backbone=backbone.model, lr=smoke_preset.gcl.lr, amp=False, **kwargs)
    if backend is not None:
        model.compile_backend = backend
    res = run_gcl(model, torch.from_numpy(train.images), torch.from_numpy(test.images), test.targets, stream,
                  smoke_preset.gcl, train_seed=1, progress=False)
    return res, model


@pytest.mark.parametrize("learner", ["dualprompt", "l2p"])
def test_a_compiled_run_matches_the_eager_run(smoke_preset, smoke_home, learner):
    eager, _ = _run(learner, smoke_preset, smoke_home)
    compiled, model = _run(learner, smoke_preset, smoke_home, backend="aot_eager", compile="on")
    assert model.prompted_pass.active and model.query_pass.active  # no silent fallback
    batch, chunk = smoke_preset.gcl.batch_size, smoke_preset.gcl.eval_batch_size
    # training calls are padded to the training batch, never to an evaluation chunk
    assert model.prompted_pass.sizes[("train", True)] == model.query_pass.sizes[("train", False)] == batch
    assert batch < model.prompted_pass.sizes[("eval", False)] <= chunk
    assert compiled.meta["learner"]["compile"] == "on" and eager.meta["learner"]["compile"] == "auto"
    assert compiled.meta["passes"] == eager.meta["passes"]
    # same predictions up to float reassociation: accuracies within one test image of the eager ones
    n_test = len(SyntheticWorld(smoke_preset.world).dataset("downstream", "test").targets)
    for a, b in zip(compiled.anytime_acc + compiled.task_end_acc, eager.anytime_acc + eager.task_end_acc):
        assert abs(a - b) <= 1 / n_test * 1.01 + 1e-12


@pytest.mark.slow
def test_an_inductor_compiled_run_matches_the_eager_run(smoke_preset, smoke_home):
    """TorchInductor on the CPU (about a minute of compiling): the code path a GPU run takes."""
    eager, _ = _run("dualprompt", smoke_preset, smoke_home)
    compiled, model = _run("dualprompt", smoke_preset, smoke_home, compile="on")
    assert model.prompted_pass.active, model.prompted_pass.failure
    for a, b in zip(compiled.task_end_acc, eager.task_end_acc):
        assert abs(a - b) <= 0.02


def test_a_platform_without_torch_compile_falls_back_at_setup(vit, monkeypatch, capsys):
    monkeypatch.setattr(compiled_module, "_SAID", set())
    def refuse(*args, **kwargs):
        raise RuntimeError("torch.compile is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuse)
    compiled = CompiledPass(prompt_tuning_forward, enabled=True, name="query")
    assert not compiled.active and "not supported" in compiled.failure
    CompiledPass(prompt_tuning_forward, enabled=True, name="prompted")  # the same reason again: said once
    assert capsys.readouterr().out.count("\n") == 1
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(compiled(vit, x, {}), prompt_tuning_forward(vit, x, {}), rtol=0, atol=0)
