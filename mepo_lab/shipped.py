"""Shipped artefacts of the embedded default: the `cpu` preset's pretrained micro ViT, its MePo refinement and
their meta covariances, inside the package, so that a first run does not spend minutes training them.

``mepo_lab/resources/shipped/`` mirrors the data home (``micro_vit/<key>/backbone.pt``, ``mepo/<key>/meta_5.pth``,
``covariance/cov_<hash>-50-aug.npy``, ...). ``manifest.json`` lists every file with its SHA-256 and the fingerprint
of what produced it. The data home's cache keys already hash the preset (world, ViT, pretraining, MePo settings),
so a shipped folder is used only when the lab asks for exactly that key: :func:`install` copies it into the data
home after checking every file's hash. A corrupt or missing file is reported in one line and the caller trains
instead. ``MEPO_LAB_SHIPPED=0`` (or ``mepo-lab quickstart --retrain``) turns shipped artefacts off.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from mepo_lab import paths

ENV = "MEPO_LAB_SHIPPED"
MANIFEST = "manifest.json"


def root() -> Path:
    """The folder of the shipped artefacts inside the installed package."""
    return Path(str(resources.files("mepo_lab.resources"))) / "shipped"


def enabled() -> bool:
    """False when ``MEPO_LAB_SHIPPED`` is set to 0/false/no/off (retrain everything here)."""
    return os.environ.get(ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(folder: Path | None = None) -> dict:
    """``{"files": {relative path: sha256}, ...}`` of the shipped artefacts (empty when none are shipped)."""
    path = (folder or root()) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"files": {}}


def notice(progress: bool, hint: str = "") -> Callable[[str], None]:
    """The ``log`` of :func:`install`: a rejected artefact is always printed; a used one (with ``hint``) unless
    ``progress`` is False."""
    def say(message: str) -> None:
        if not message.startswith("using"):
            print(message)
        elif progress:
            print(message + hint)
    return say


def install(relative: str, data_home: str | Path | None = None, *, log: Callable[[str], None] | None = print,
            what: str = "artefact", folder: Path | None = None) -> bool:
    """Copy the shipped files under ``relative`` (a data-home path such as ``micro_vit/<key>``, or one file) into
    the data home; True when they are there afterwards. Every file's SHA-256 is checked against the manifest
    first: a mismatch (a corrupt or edited file) installs nothing, says so in one line, and returns False."""
    if not enabled():
        return False
    src_root, files = folder or root(), manifest(folder)["files"]
    chosen = {rel: digest for rel, digest in files.items() if rel == relative or rel.startswith(relative.rstrip("/") + "/")}
    if not chosen:
        return False
    for rel, digest in chosen.items():
        path = src_root / rel
        if not path.exists() or sha256(path) != digest:
            if log:
                log(f"the shipped {what} ({rel}) is missing or does not match its hash: training it here instead")
            return False
    home = paths.data_home(data_home)
    for rel in chosen:
        dest = home / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        paths.atomic_write(dest, lambda h, src=src_root / rel: _copy(src, h))
    if log:
        log(f"using the shipped {what} ({relative})")
    return True


def _copy(src: Path, handle) -> None:
    with open(src, "rb") as source:
        shutil.copyfileobj(source, handle)
