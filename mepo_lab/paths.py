"""Where mepo_lab reads and writes, and how it writes without ever leaving half a file.

Data home precedence (README, "Where files go"): explicit argument > ``MEPO_LAB_DATA`` > ``<repo>/data``
when running from a checkout > the platform cache directory (``$XDG_CACHE_HOME/mepo_lab``,
``~/Library/Caches/mepo_lab``, ``%LOCALAPPDATA%/mepo_lab``).

Every result file is written to a temporary sibling and moved into place with :func:`os.replace`,
so a killed process leaves either the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

DATA_ENV = "MEPO_LAB_DATA"


def _checkout_data_dir() -> Path | None:
    repo = Path(__file__).resolve().parent.parent
    pyproject = repo / "pyproject.toml"
    if (repo / "data").is_dir() and pyproject.is_file() and 'name = "mepo_lab"' in pyproject.read_text():
        return repo / "data"
    return None


def _platform_cache() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mepo_lab"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "mepo_lab"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mepo_lab"


def data_home(root: str | os.PathLike | None = None, *, create: bool = True) -> Path:
    """Resolve the data home: ``root`` > ``$MEPO_LAB_DATA`` > ``<repo>/data`` > platform cache.

    With ``create=True`` the folder is created and checked for writability; an unwritable folder
    raises ``PermissionError`` that says how to choose another one.
    """
    if root is not None:
        path, source = Path(root), "the data_home argument"
    elif os.environ.get(DATA_ENV):
        path, source = Path(os.environ[DATA_ENV]), f"${DATA_ENV}"
    else:
        path, source = _checkout_data_dir() or _platform_cache(), "the default"
    path = path.expanduser()
    if create:
        _ensure_writable(path, source)
    return path


def _ensure_writable(path: Path, source: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PermissionError(
            f"data home {path} (from {source}) is not writable ({err.strerror or err}); "
            f"set {DATA_ENV} to a writable folder or pass data_home=... explicitly"
        ) from None


def subdir(name: str, root: str | os.PathLike | None = None) -> Path:
    """A named folder inside the data home (``micro_vit``, ``features``, ...), created on demand."""
    path = data_home(root) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(fileobj)`` on a temporary sibling of ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf become ``null``)."""
    text = json.dumps(_json_safe(obj), indent=1)
    return atomic_write(path, lambda h: h.write(text.encode()))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return _json_safe(obj.tolist())
    return obj


def load_matching_json(path: str | os.PathLike, fingerprint: str) -> dict:
    """The JSON object at ``path`` if its ``"fingerprint"`` equals ``fingerprint``, else ``{}`` (missing file,
    unreadable JSON or another configuration): what a resumable experiment may reuse of an earlier run."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return old if isinstance(old, dict) and old.get("fingerprint") == fingerprint else {}
