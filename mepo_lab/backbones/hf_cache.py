"""The Hugging Face cache, offline: one clear error when weights are neither cached nor downloadable.

huggingface_hub downloads into its cache (``HF_HOME`` / ``HF_HUB_CACHE``, read when it is imported).
Offline (``HF_HUB_OFFLINE=1``) ``hf_hub_download`` resolves ``revision=None`` through ``refs/main`` of
the cached repository and raises ``LocalEntryNotFoundError`` when the file is not cached
(``huggingface_hub/file_download.py``, ``_hf_hub_download_to_cache_dir``); without network it raises the
same. :func:`unavailable_message` turns that into the text of one :class:`WeightsUnavailableError` that
names every missing file and how to provide it. Used by :mod:`mepo_lab.backbones.zoo` (timm weights) and
:mod:`mepo_lab.mepo.releases` (the released MePo files).
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

__all__ = ["NOT_CACHED_ERRORS", "WeightsUnavailableError", "hub_is_offline", "unavailable_message"]

# Raised by huggingface_hub when a file is neither cached nor downloadable (offline / no network).
NOT_CACHED_ERRORS = (LocalEntryNotFoundError, OfflineModeIsEnabled)


class WeightsUnavailableError(FileNotFoundError):
    """Weights are not in the local cache and cannot be downloaded (offline or no network)."""


def hub_is_offline() -> bool:
    """Whether huggingface_hub runs in offline mode (``HF_HUB_OFFLINE`` when it was imported)."""
    check = getattr(hf_constants, "is_offline_mode", None)
    return bool(check()) if check is not None else bool(hf_constants.HF_HUB_OFFLINE)


def unavailable_message(subject: str, repo_id: str, files: Iterable[str], revision: str | None,
                        cache_dir: str | os.PathLike | None, remedies: Iterable[str]) -> str:
    """The text of a :class:`WeightsUnavailableError`: why, which files, where, how to fix."""
    cache = os.fspath(cache_dir) if cache_dir is not None else hf_constants.HF_HUB_CACHE
    why = ("huggingface_hub is in offline mode (HF_HUB_OFFLINE is set), so nothing is downloaded"
           if hub_is_offline() else "the Hugging Face Hub could not be reached (no network?)")
    lines = [f"{subject} are not in the local Hugging Face cache and cannot be downloaded: {why}.",
             f"Needed from {repo_id} (revision {revision or 'main'}), looked for in {cache}:"]
    lines += [f"  - {name}" for name in files]
    lines.append("How to provide them:")
    lines += [f"  * {text}" for text in remedies]
    lines.append("  * or set HF_HOME (or HF_HUB_CACHE) to a cache that holds them, before Python starts.")
    return "\n".join(lines)
