import pytest
import torch

from mepo_lab.data.normalization import WORLD_PREPROCESS, Preprocess, normalize
from mepo_lab.device import Amp, oom_guard


def test_world_preprocess_is_the_historic_normalisation():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(WORLD_PREPROCESS(x), (x.float() / 255 - 0.5) / 0.25)
    torch.testing.assert_close(normalize(x), WORLD_PREPROCESS(x))


def test_preprocess_resizes_and_uses_its_statistics():
    pre = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size=16)
    x = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    out = pre(x)
    assert out.shape == (1, 3, 16, 16) and torch.allclose(out, torch.ones_like(out))
    assert pre.id != WORLD_PREPROCESS.id and "resize16" in pre.id


def test_amp_is_plain_fp32_on_cpu():
    amp = Amp("cpu")
    assert not amp.enabled and amp.describe() == "fp32"
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.5)
    with amp.autocast():
        loss = (w * torch.tensor([1.0, 2.0])).sum()
    amp.step(loss, opt)
    assert w.tolist() == [0.5, 0.0]


def test_oom_becomes_one_error_naming_the_fix():
    with pytest.raises(RuntimeError, match="CUDA ran out of memory during GCL.*try --preset colab"):
        with oom_guard("GCL", "paper"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_setup_colab_reports_outside_colab(capsys, tmp_path, monkeypatch):
    from mepo_lab.colab import in_colab, setup_colab

    monkeypatch.setenv("MEPO_LAB_DATA", str(tmp_path))
    facts = setup_colab(drive=True)  # not in Colab: nothing is mounted, only reported
    assert not in_colab() and facts["device"] == "CPU" and facts["data_home"] == str(tmp_path)
    assert "mepo_lab" in capsys.readouterr().out
