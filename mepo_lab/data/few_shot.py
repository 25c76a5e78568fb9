"""Few-shot class splits for the zapping experiment: many pretraining classes, disjoint transfer classes.

The setting of Frati, Traft, Clune, Cheney, "Reset It and Forget It: Relearning Last-Layer Weights Improves
Continual and Transfer Learning" (ECAI 2024, arXiv 2310.07996; official code
uvm-neurobotics-lab/reset-it-and-forget-it): pretrain on the Omniglot background alphabets (964 characters,
15 training drawings each), then transfer to characters of the evaluation alphabets (15 drawings to learn
from, 5 held out per character).

* :func:`omniglot_few_shot`: that split, from torchvision's Omniglot files (``root/omniglot-py/``).
* :func:`synthetic_few_shot`: the synthetic world as the offline Omniglot analogue: pretraining classes
  from the world's ``pretrain`` role, transfer classes from its ``downstream`` role (disjoint by
  construction, sharing shapes, patterns and palettes).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mepo_lab import paths
from mepo_lab.config import WorldConfig
from mepo_lab.data.base import ImageArrays
from mepo_lab.data.synthetic import N_CLASSES, WORLD_VERSION, SyntheticWorld

OMNIGLOT_FOLDER = "omniglot-py"  # torchvision.datasets.Omniglot.folder
OMNIGLOT_SPLITS = {True: "images_background", False: "images_evaluation"}
OMNIGLOT_DRAWINGS = 20  # drawings per character (20 people drew each one)
_CACHE_VERSION = 1  # bump when the decoding (resize filter, channel layout) changes


@dataclass
class FewShotSplit:
    """An Omniglot-style class split: many pretraining classes, disjoint transfer classes."""

    pretrain: ImageArrays  # pretraining classes, train_per_class images each, labels 0..P-1
    pretrain_test: ImageArrays  # held-out images of the same P classes, test_per_class each
    transfer: ImageArrays  # K disjoint transfer classes, train_per_class each, labels 0..K-1, class by class
    transfer_test: ImageArrays  # test_per_class each, labels 0..K-1
    name: str  # identity (cache keys, results.json)


def _check_counts(train_per_class: int, test_per_class: int, **classes: int | None) -> None:
    for key, value in {"train_per_class": train_per_class, "test_per_class": test_per_class, **classes}.items():
        if value is not None and value < 1:
            raise ValueError(f"{key} must be at least 1, got {value}")


def _renamed(data: ImageArrays, name: str, order: np.ndarray | None = None) -> ImageArrays:
    index = np.arange(len(data)) if order is None else order
    return ImageArrays(data.images[index], data.targets[index], data.class_names, name, dict(data.meta))


# ---------------------------------------------------------------- synthetic world
def synthetic_few_shot(world: WorldConfig, n_pretrain_classes: int, n_transfer_classes: int,
                       train_per_class: int = 15, test_per_class: int = 5,
                       pretrain_per_class: int | None = None) -> FewShotSplit:
    """The synthetic world as the Omniglot analogue of the zapping paper (arXiv 2310.07996, §4).

    The world is rebuilt with ``n_downstream_classes = K`` and ``max_pretrain_classes = P``: its seeded
    class split sends K of the ``N_CLASSES`` = 384 classes to the downstream role (the transfer classes)
    and the first P of the remaining ones (sorted world ids) to the pretrain role, so P + K <= 384 and the
    two sets are disjoint. Training images come from the world's ``train`` split, held-out ones from its
    ``test`` split (``world.seed`` and ``world.image_size`` are kept; the world's own per-class counts are
    ignored). ``transfer`` is re-ordered class by class (stable), as continual transfer presents it; the
    other three keep the world's seeded shuffle. ``meta["world_ids"]`` lists the world class of each label.
    ``pretrain_per_class`` (default ``train_per_class``) sets the pretraining classes' training images alone:
    the world's images vary more than Omniglot's drawings, so a small network needs more of them per class.
    """
    pretrain_per_class = train_per_class if pretrain_per_class is None else pretrain_per_class
    _check_counts(train_per_class, test_per_class, pretrain_per_class=pretrain_per_class,
                  n_pretrain_classes=n_pretrain_classes,
                  n_transfer_classes=n_transfer_classes)
    if n_pretrain_classes + n_transfer_classes > N_CLASSES:
        raise ValueError(f"n_pretrain_classes + n_transfer_classes must be at most {N_CLASSES} (the synthetic "
                         f"world's class count), got {n_pretrain_classes} + {n_transfer_classes}: use fewer classes")
    w = SyntheticWorld(replace(world, n_downstream_classes=n_transfer_classes,
                               max_pretrain_classes=n_pretrain_classes))
    name = (f"fewshot-synthetic-v{WORLD_VERSION}(seed={world.seed},size={world.image_size},"
            f"{n_pretrain_classes}pre+{n_transfer_classes}transfer,{train_per_class}+{test_per_class}/class"
            + ("" if pretrain_per_class == train_per_class else f",{pretrain_per_class}/pretrain class")
            + ("" if world.shift == "none" else f",shift={world.shift}") + ")")
    transfer = w.dataset("downstream", "train", train_per_class)
    return FewShotSplit(
        pretrain=_renamed(w.dataset("pretrain", "train", pretrain_per_class), f"{name}/pretrain"),
        pretrain_test=_renamed(w.dataset("pretrain", "test", test_per_class), f"{name}/pretrain_test"),
        transfer=_renamed(transfer, f"{name}/transfer", np.argsort(transfer.targets, kind="stable")),
        transfer_test=_renamed(w.dataset("downstream", "test", test_per_class), f"{name}/transfer_test"),
        name=name)


# ---------------------------------------------------------------- Omniglot
def _omniglot_folder(root: Path, background: bool, download: bool) -> Path:
    """``root/omniglot-py/images_<split>``, fetched through torchvision (md5-checked zip) if ``download``."""
    base, split = root / OMNIGLOT_FOLDER, OMNIGLOT_SPLITS[background]
    folder, archive = base / split, base / f"{split}.zip"
    if folder.is_dir():
        return folder  # an extracted folder is trusted as it is (as in mepo_lab.data.real)
    if not download:
        from torchvision.datasets import Omniglot

        found = f" ({archive} is there: download=True checks its md5 and extracts it)" if archive.is_file() else ""
        raise FileNotFoundError(
            f"Omniglot not found: {folder} does not exist{found}. Pass download=True (CLI: --download) to fetch "
            f"{Omniglot.download_url_prefix}/{split}.zip (md5-checked by torchvision), or extract that zip into "
            f"{base} (root defaults to datasets/ in the data home, ${paths.DATA_ENV}).")
    from torchvision.datasets import Omniglot
    from torchvision.datasets import utils as tv_utils

    if archive.is_file() and tv_utils.check_integrity(str(archive), Omniglot.zips_md5[split]):
        tv_utils.extract_archive(str(archive), str(base))  # torchvision skips a valid zip without extracting it
    else:
        Omniglot(str(root), background=background, download=True)  # fetch (md5-checked) and extract
    return folder


def _characters(folder: Path, n: int | None, drawings: int) -> tuple[list[str], list[list[Path]]]:
    """The first ``n`` characters (``alphabet/character``, sorted) and the first ``drawings`` PNGs of each."""
    chars = [f"{a.name}/{c.name}" for a in sorted(folder.iterdir()) if a.is_dir()
             for c in sorted(a.iterdir()) if c.is_dir()]
    if not chars:
        raise ValueError(f"{folder} holds no character folders (<alphabet>/<character>/*.png): re-extract it")
    if n is not None and n > len(chars):
        raise ValueError(f"asked for {n} characters but {folder} holds {len(chars)}: pass at most {len(chars)} "
                         f"(or None for all)")
    chars = chars[:n]
    files = []
    for char in chars:
        pngs = sorted(p for p in (folder / char).iterdir() if p.suffix == ".png" and p.is_file())
        if len(pngs) < drawings:
            raise ValueError(f"{folder / char} holds {len(pngs)} drawings, fewer than train_per_class + "
                             f"test_per_class = {drawings}: lower them or repair the folder")
        files.append(pngs[:drawings])
    return chars, files


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        gray = image.convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)  # antialiased when shrinking
    return np.asarray(gray, dtype=np.uint8)


def _fingerprint(files: list[list[Path]], folder: Path) -> str:
    """Hash of the chosen files' relative paths, sizes and modification times (invalidates stale caches)."""
    digest = hashlib.sha1()
    for path in (p for group in files for p in group):
        st = path.stat()
        digest.update(f"{path.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()


def _load_split(root: Path, background: bool, download: bool, n: int | None, drawings: int,
                size: int) -> tuple[np.ndarray, list[str], dict]:
    """Grayscale ``(n, drawings, size, size)`` uint8 of one Omniglot split, decoded once and cached as .npz."""
    folder = _omniglot_folder(root, background, download)
    chars, files = _characters(folder, n, drawings)
    fingerprint = _fingerprint(files, folder)
    cache = root / OMNIGLOT_FOLDER / "decoded" / (
        f"{folder.name}-v{_CACHE_VERSION}-{size}px-{len(chars)}chars-{drawings}drawings.npz")
    meta = {"folder": str(folder), "fingerprint": fingerprint, "cache": str(cache)}
    try:
        with np.load(cache) as stored:
            if str(stored["fingerprint"]) == fingerprint and json.loads(str(stored["chars"])) == chars:
                return stored["images"], chars, meta
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # no cache yet, or an unreadable one: decode again
    flat = [p for group in files for p in group]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        pixels = list(pool.map(lambda p: _decode(p, size), flat))
    images = np.stack(pixels).reshape(len(chars), drawings, size, size)
    try:
        paths.atomic_write(cache, lambda h: np.savez_compressed(
            h, images=images, chars=json.dumps(chars), fingerprint=fingerprint))
    except OSError as err:
        warnings.warn(f"could not cache decoded Omniglot at {cache} ({err}); it will be decoded again next time",
                      stacklevel=3)
    return images, chars, meta


def _arrays(images: np.ndarray, chars: list[str], first: int, count: int, name: str, meta: dict) -> ImageArrays:
    """Drawings ``first .. first+count-1`` of every character, class by class, as RGB ``(N, 3, H, W)``."""
    part = images[:, first:first + count]
    flat = part.reshape(-1, 1, *part.shape[2:])
    targets = np.repeat(np.arange(len(chars)), count)
    return ImageArrays(np.repeat(flat, 3, axis=1), targets, list(chars), name, dict(meta))


def omniglot_few_shot(root, download: bool = False, image_size: int = 28, n_pretrain_classes: int | None = None,
                      n_transfer_classes: int | None = None, train_per_class: int = 15,
                      test_per_class: int = 5) -> FewShotSplit:
    """Omniglot as in the zapping paper (arXiv 2310.07996; official configs: ``train_size 15``).

    Pretraining classes: the characters of the background split (964), transfer classes: those of the
    evaluation split (659); characters in sorted ``alphabet/character`` order, the first n of each split
    (``None`` = all). Every character has 20 drawings; in sorted file order the first ``train_per_class``
    are training images and the next ``test_per_class`` held-out ones (so their sum must be <= 20). Each
    drawing is converted to grayscale, resized to ``image_size`` (PIL bilinear, antialiased) and replicated
    to 3 channels, uint8. Omniglot draws black strokes on a white background; the pixels are kept as they
    are (not inverted). All four arrays are ordered class by class.

    ``root`` holds torchvision's ``omniglot-py/`` (``None``: ``data_home()/datasets``). ``download=True``
    fetches the missing split with ``torchvision.datasets.Omniglot`` (md5-checked zip); without it a missing
    folder raises ``FileNotFoundError``. Decoded arrays are cached in ``root/omniglot-py/decoded/`` and reused
    while the chosen files are unchanged (names, sizes, modification times).
    """
    _check_counts(train_per_class, test_per_class, n_pretrain_classes=n_pretrain_classes,
                  n_transfer_classes=n_transfer_classes, image_size=image_size)
    drawings = train_per_class + test_per_class
    if drawings > OMNIGLOT_DRAWINGS:
        raise ValueError(f"train_per_class + test_per_class must be at most {OMNIGLOT_DRAWINGS} (drawings per "
                         f"Omniglot character), got {train_per_class} + {test_per_class}")
    root = Path(root).expanduser() if root is not None else paths.data_home() / "datasets"
    parts, counts = {}, {}
    for role, background, n in (("pretrain", True, n_pretrain_classes), ("transfer", False, n_transfer_classes)):
        images, chars, meta = _load_split(root, background, download, n, drawings, image_size)
        parts[role], counts[role] = (images, chars, {**meta, "split": OMNIGLOT_SPLITS[background]}), len(chars)
    name = (f"fewshot-omniglot(size={image_size},{counts['pretrain']}pre+{counts['transfer']}transfer,"
            f"{train_per_class}+{test_per_class}/class)")
    pre, tra = parts["pretrain"], parts["transfer"]
    return FewShotSplit(
        pretrain=_arrays(*pre[:2], 0, train_per_class, f"{name}/pretrain", pre[2]),
        pretrain_test=_arrays(*pre[:2], train_per_class, test_per_class, f"{name}/pretrain_test", pre[2]),
        transfer=_arrays(*tra[:2], 0, train_per_class, f"{name}/transfer", tra[2]),
        transfer_test=_arrays(*tra[:2], train_per_class, test_per_class, f"{name}/transfer_test", tra[2]),
        name=name)
