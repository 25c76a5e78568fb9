"""GPU check of BECAME on ViT-B/16 with its last 3 blocks adapted (the ``colab_vit`` preset).

Not collected by pytest. Run on a GPU machine without network, from the checkout::

    PYTHONPATH=. HF_HUB_OFFLINE=1 python tests/gpu/became_vit.py OUT_DIR [--tiny]

It writes fake CIFAR-100 pickles of the real size (random pixels: accuracies are chance, the point is that the
whole ViT path runs on CUDA in bf16, and how long it takes), runs GPM and BECAME for one seed with timm's random
ViT-B/16 initialisation (no weights can be downloaded there), times the training step in fp32 and bf16, and writes
``OUT_DIR/gpu_became_vit.json``. ``--tiny`` is a CPU dry run of the script with a small ViT.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from mepo_lab.became import models
from mepo_lab.became import run as became_run
from mepo_lab.became.config import BECAME_PRESETS
from mepo_lab.became.gpm import GPMMemory, layer_inputs, linear_layers, project_grads_
from mepo_lab.config import override
from tests.fakes import write_cifar100


def step_rate(precision: str, batch: int, steps: int, tiny: bool) -> dict:
    """Images/s of one projected stage-1 SGD step (forward, backward, GPM projection, step)."""
    kw = {"img_size": 32, "embed_dim": 64, "depth": 4, "num_heads": 2} if tiny else {}
    net = models.pretrained_vit([10] * 10, "sup21k", 3, pretrained=False, precision=precision, **kw)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    net.to(dev)
    layers = linear_layers(net)
    x, y = torch.rand(batch, 3, 32, 32, device=dev), torch.randint(0, 10, (batch,), device=dev)
    memory = GPMMemory()
    memory.update(layer_inputs(net.body, x[:16], layers, 2048), 0.97)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    residual = None
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize() if dev == "cuda" else None
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x, 1), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        project_grads_(net, memory, layers)
        if residual is None:
            name = next(iter(layers))
            g, m = layers[name].weight.grad, memory.bases[name]
            residual = float((g @ m.to(g)).norm() / g.norm().clamp_min(1e-30))
        opt.step()
    torch.cuda.synchronize() if dev == "cuda" else None
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None
    return {"precision": precision, "batch": batch, "img_per_s": batch * steps / seconds,
            "projection_residual": residual, "peak_gib": peak}


def main() -> None:
    out, tiny = Path(sys.argv[1]), "--tiny" in sys.argv
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp())
    per_class = (5, 2) if tiny else (500, 100)
    write_cifar100(home / "datasets" / "cifar100", *per_class)
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    report["step"] = [step_rate(p, 64, 3 if tiny else 30, tiny) for p in ("fp32", "bf16")]
    print(json.dumps(report["step"], indent=1), flush=True)
    cfg = override(BECAME_PRESETS["colab_vit"](), {"pretrained": False, "seeds": (1,), "methods": ("gpm", "became")})
    if tiny:
        cfg = override(cfg, {"n_tasks": 2, "epochs": 1, "epochs2": 1, "rep_samples": 8, "device": "cpu"})
        small = models.pretrained_vit
        became_run.MODELS["pretrained_vit"] = lambda *a, **k: small(*a, **k, img_size=32, embed_dim=64, depth=4,
                                                                    num_heads=2)
    start = time.perf_counter()
    result = became_run.run_became(cfg, out / "became_vit", data_home=home, progress=False, verify=False)
    report["run_seconds"] = time.perf_counter() - start
    report["rows"] = [{k: r[k] for k in ("method", "ACC", "BWT", "alpha", "memory", "seconds")} for r in result["rows"]]
    report["table"] = became_run.format_table(result["summary"])
    images = cfg.n_tasks * cfg.classes_per_task * cfg.train_per_class
    report["train_images_per_stage_epoch"] = images
    (out / "gpu_became_vit.json").write_text(json.dumps(report, indent=1))
    print(report["table"], "\n", json.dumps({k: report[k] for k in ("device", "run_seconds")}), flush=True)


if __name__ == "__main__":
    main()
