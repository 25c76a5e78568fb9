"""``setup_colab()``: what every notebook prints first — device, versions, where caches live.

On Colab, ``drive=True`` mounts Google Drive and points the data home (``MEPO_LAB_DATA``) and the
Hugging Face cache (``HF_HOME``) at a Drive folder, so backbones, features and refinements survive
a runtime reset. Elsewhere it only reports.
"""
from __future__ import annotations

import os
import sys

REPO = "mepo-lab/mepo_lab"


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def setup_colab(drive: bool = False, folder: str = "mepo_lab") -> dict:
    """Report device, versions and cache locations (and on Colab with ``drive=True``, use Drive for caches).

    Returns the reported facts as a dict.
    """
    if drive and in_colab():
        from google.colab import drive as gdrive  # type: ignore[import-not-found]

        gdrive.mount("/content/drive")
        base = f"/content/drive/MyDrive/{folder}"
        os.environ.setdefault("MEPO_LAB_DATA", f"{base}/data")
        os.environ.setdefault("HF_HOME", f"{base}/hf")
    import timm
    import torch

    import mepo_lab
    from mepo_lab.paths import data_home

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    facts = {"device": device, "torch": torch.__version__, "timm": timm.__version__,
             "mepo_lab": mepo_lab.__version__, "data_home": str(data_home()),
             "hf_home": os.environ.get("HF_HOME", "~/.cache/huggingface (default)"),
             "smoke": os.environ.get("MEPO_LAB_SMOKE", "") not in ("", "0")}
    for key, value in facts.items():
        print(f"{key:>9}: {value}")
    return facts
