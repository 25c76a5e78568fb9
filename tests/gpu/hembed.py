"""GPU check of the H-embedding experiment's GPU presets: ``colab`` (the official fully generated ResNet-32 on
CIFAR-10 + CIFAR-100 splits) and ``colab_vit`` (a frozen ViT-B/16 with a generated LoRA on its last 2 blocks).

Not collected by pytest. Run on a GPU machine without network, from the checkout::

    PYTHONPATH=. HF_HUB_OFFLINE=1 python tests/gpu/hembed.py OUT_DIR [--tiny]

Fake CIFAR-10/100 pickles of the real size (random pixels: accuracies are chance; this measures the path and its
cost), timm's random ViT-B/16 initialisation (no weights there), one seed, one epoch per task. Writes
``OUT_DIR/gpu_hembed.json``. ``--tiny`` is a CPU dry run with small fakes.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from mepo_lab.hembed import run as hembed_run
from mepo_lab.hembed.config import HEMBED_PRESETS
from mepo_lab.protocols.task_incremental import format_runs_table
from tests.fakes import write_cifar10, write_cifar100


def main() -> None:
    out, tiny = Path(sys.argv[1]), "--tiny" in sys.argv
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp())
    per_class = {"cifar10": (3, 2), "cifar100": (3, 2)} if tiny else {"cifar10": (5000, 1000), "cifar100": (500, 100)}
    write_cifar10(home / "datasets" / "cifar10", *per_class["cifar10"])
    write_cifar100(home / "datasets" / "cifar100", *per_class["cifar100"])
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "runs": {}}
    plans = {"colab": {"epochs": 1, "seeds": (1,)},
             "colab_vit": {"epochs": 1, "seeds": (1,), "cifar100_tasks": 3, "methods": ("hnet_hembedding",),
                           "pretrained": False}}
    for name, sets in plans.items():
        cfg = replace(HEMBED_PRESETS[name](), **sets)
        if tiny:
            cfg = replace(cfg, cifar100_tasks=2, emb_iters=10, device="cpu")
            if name == "colab_vit":
                small = hembed_run.create_backbone
                hembed_run.create_backbone = lambda n, small=small, **k: small(
                    n, **k, img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = hembed_run.run_hembed(cfg, out / name, data_home=home, progress=False, verify=False)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        report["runs"][name] = {"seconds": seconds, "peak_gib": peak, "table": format_runs_table(result["summary"]),
                                "per_run_seconds": {r["method"]: r["seconds"] for r in result["rows"]},
                                "tasks": 1 + cfg.cifar100_tasks, "epochs": cfg.epochs, "target": cfg.target}
        print(name, json.dumps(report["runs"][name], indent=1), flush=True)
        (out / "gpu_hembed.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
