"""GPU check of issue 10: compiled against eager training steps, then full Si-Blurry runs of DualPrompt and MISA on
fake CIFAR-100 of the real size (ViT-B/16 with random weights at 224 px, the protocol's augmentation, one seed).

Not collected by pytest. Run on a GPU machine without network, from the checkout::

    PYTHONPATH=. HF_HUB_OFFLINE=1 python tests/gpu/issue10.py OUT_DIR [--budget 540] [--tiny]

Stages, in order, each written to ``OUT_DIR/gpu_issue10.json`` as soon as it ends (a timeout keeps what finished):
the step comparison (:func:`mepo_lab.bench.gpu.step_rows`), DualPrompt with the defaults (compiled on CUDA), MISA
with the defaults, and DualPrompt eager (``compile="off"``, the reference's step) -- a stage starts only while
``--budget`` seconds are not spent. ``--tiny`` is a CPU dry run with the micro ViT and a tiny stream.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from mepo_lab.bench.gpu import gpu_rows, misa_prompts, step_rows
from mepo_lab.bench.report import format_report


def main() -> None:
    out, tiny = Path(sys.argv[1]), "--tiny" in sys.argv
    budget = float(sys.argv[sys.argv.index("--budget") + 1]) if "--budget" in sys.argv else 540.0
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if tiny:
        from mepo_lab.backbones.micro_vit import create_micro_vit
        from mepo_lab.config import get_preset

        preset = get_preset("smoke")
        vit, device, size, sizes = create_micro_vit(preset.vit, 32, seed=0), torch.device("cpu"), 32, (10, 20, 5)
        settings, backend = (("off", "default"), ("on", "default")), "aot_eager"
    else:
        import timm

        vit, device, size, sizes = (timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0),
                                    torch.device("cuda"), 224, (100, 500, 100))
        settings, backend = None, "inductor"
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "stages": {}}
    prompts, which = misa_prompts(vit)
    stages = {
        "steps": lambda: step_rows(vit, device, size, **({"settings": settings} if settings else {}), backend=backend),
        "dualprompt": lambda: gpu_rows(vit, device, sizes, size, **_compiled(tiny)),
        "misa": lambda: gpu_rows(vit, device, sizes, size, learner="misa", prompts=prompts, note=which, **_compiled(tiny)),
        "dualprompt_eager": lambda: gpu_rows(vit, device, sizes, size, compile="off"),
    }
    for name, stage in stages.items():
        spent = time.perf_counter() - start
        if spent > budget:
            report["stages"][name] = f"skipped: {spent:.0f} s of the {budget:.0f} s budget spent"
        else:
            t0 = time.perf_counter()
            try:
                rows = stage()
                report["stages"][name] = {"seconds": time.perf_counter() - t0, "rows": rows}
                print(format_report(rows), flush=True)
            except Exception:  # keep the stages after it
                report["stages"][name] = {"seconds": time.perf_counter() - t0, "error": traceback.format_exc()}
                print(f"stage {name} failed:\n{traceback.format_exc()}", flush=True)
        tmp = out / "gpu_issue10.json.tmp"
        tmp.write_text(json.dumps(report, indent=1, default=str))
        os.replace(tmp, out / "gpu_issue10.json")
    print(f"done in {time.perf_counter() - start:.0f} s")


def _compiled(tiny: bool) -> dict:
    """The defaults (``compile="auto"``) on the GPU; on the CPU dry run, compiled with aot_eager."""
    return {"compile": "on"} if tiny else {}


if __name__ == "__main__":
    main()
