"""Real image datasets on disk: CIFAR-100 (and CIFAR-10), ImageNet-R, CUB-200-2011, Tiny-ImageNet and any ImageFolder.

``get_dataset(name, split)`` returns a torch ``Dataset`` whose items are ``(transform(PIL image), label)``
(default: a uint8 ``(3, H, W)`` tensor, so the GCL runner can augment batches on the GPU) and which carries
``.targets`` and ``.classes``. Files live under ``root/<name>/`` (``root`` defaults to
``paths.data_home() / "datasets"``): the archive as published and the folder it extracts to. A dataset
already extracted directly under ``root`` (``<root>/cifar-100-python``, ``<root>/imagenet-r``,
``<root>/CUB_200_2011``, ``<root>/tiny-imagenet-200``: what torchvision and the MISA/MePo code leave) is
found too.

Where every number comes from:

* ``STATISTICS`` (defined in :mod:`mepo_lab.data.normalization`): ``kangzhiq/MISA`` ``utils/data_loader.py``
  ``get_statistics`` (commit bcea2af), the table the Si-Blurry / MISA / MePo code normalises with.
* CIFAR-100 and CIFAR-10: URLs and md5s are torchvision's own (``torchvision.datasets.CIFAR100``, ``CIFAR10``).
* ImageNet-R: URL from ``hendrycks/imagenet-r`` ``README.md``; md5 from ``ENSTA-U2IS-AI/torch-uncertainty``
  ``torch_uncertainty/datasets/classification/imagenet/imagenet_r.py`` (the same value recurs in several
  other public repositories).
* CUB-200-2011: md5 from ``ContinualAI/avalanche`` ``avalanche/benchmarks/datasets/cub200/cub200.py`` (which
  pairs it with the retired vision.caltech.edu URL); the CaltechDATA URL from ``pyshen-watson/TAIR``
  ``data/README.md`` and ``zijizhu/part-concept`` ``setup_cub.sh`` (other public code pairs that URL with
  the same md5).
* Tiny-ImageNet: md5 from ``ContinualAI/avalanche`` ``avalanche/benchmarks/datasets/tiny_imagenet/tiny_imagenet.py``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder
from torchvision.datasets import utils as tv_utils
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader
from torchvision.transforms.v2.functional import pil_to_tensor

from mepo_lab import paths
from mepo_lab.data.normalization import STATISTICS, Stats  # noqa: F401  (re-exported: data.STATISTICS)

Transform = Callable[[object], object]


@dataclass(frozen=True)
class Archive:
    """A published archive: file name, URL, md5 (``None`` = unknown), the folder it extracts to, and a file or
    folder inside it that marks a complete extraction (``None``: any class folder will do)."""

    filename: str
    url: str
    md5: str | None
    folder: str
    marker: str | None = None


ARCHIVES: dict[str, Archive] = {
    "imagenet-r": Archive("imagenet-r.tar", "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
                          "a61312130a589d0ca1a8fca1f2bd3337", "imagenet-r"),
    "cub200": Archive("CUB_200_2011.tgz", "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                      "97eceeb196236b17998738112f37df78", "CUB_200_2011", "images"),
    "tiny-imagenet": Archive("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                             "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200", "wnids.txt"),
}
SPLITS = ("train", "test")
CUB_REFERENCE_SEED = 42  # MISA/MePo: random_split(ImageFolder(root/images), [0.8, 0.2], manual_seed(42))


class ChecksumError(RuntimeError):
    """An archive on disk does not have the published md5."""


def pil_to_uint8(image) -> torch.Tensor:
    """The default transform: a PIL image as an RGB uint8 tensor ``(3, H, W)``."""
    return pil_to_tensor(image.convert("RGB"))


class FileImageDataset(torch.utils.data.Dataset):
    """Images read from files: ``samples`` is a list of ``(path, class id)`` in dataset order."""

    def __init__(self, samples, classes, transform: Transform | None = None, name: str = "", split: str = ""):
        self.samples = [(str(path), int(label)) for path, label in samples]
        self.targets = [label for _, label in self.samples]
        self.classes = list(classes)
        self.transform = transform or pil_to_uint8
        self.name, self.split = name, split

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return self.transform(default_loader(path)), label

    def __repr__(self) -> str:
        return f"FileImageDataset({self.name!r}, split={self.split!r}, n={len(self)}, classes={len(self.classes)})"


# ---------------------------------------------------------------- archives: checksum, fetch, extract
def _md5_mismatch(archive: Path, md5: str) -> str | None:
    """The archive's md5 if it differs from ``md5``, else ``None``; a verified file is remembered by
    size and mtime in a hidden stamp, so multi-GB archives are hashed once, not at every load."""
    st = archive.stat()
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}
    stamp = archive.with_name(f".{archive.name}.verified.json")
    try:
        if json.loads(stamp.read_text()) == key:
            return None
    except (OSError, ValueError):
        pass
    actual = tv_utils.calculate_md5(archive)
    if actual != md5:
        return actual
    paths.atomic_save_json(stamp, key)
    return None


def _missing(name: str, looked: list[Path], put: str, at: Path) -> FileNotFoundError:
    where = ", ".join(str(p) for p in looked)
    return FileNotFoundError(
        f"{name} not found: looked for {where}. Pass download=True, or put {put} at {at}; the extracted folder "
        f"may also sit directly under root (as torchvision and the MISA/MePo code leave it); or set "
        f"{paths.DATA_ENV} to a data home whose datasets/{name}/ holds it.")


def _flat(spec: Archive, root: Path) -> Path | None:
    """``root/<folder>`` when the dataset was extracted straight into ``root`` (torchvision's and the MISA/MePo
    code's layout: ``<root>/CUB_200_2011``, ``<root>/imagenet-r``), else ``None``. Our own ``<root>/<name>/``
    holding the archive is not such a folder (for ImageNet-R both are called ``imagenet-r``)."""
    folder = root / spec.folder
    if not folder.is_dir() or (folder / spec.filename).exists():
        return None
    if spec.marker is not None:
        return folder if (folder / spec.marker).exists() else None
    return folder if any(d.is_dir() and not d.name.startswith(".") for d in folder.iterdir()) else None


def _unpack(spec: Archive, base: Path, target: Path, fetch: bool, verify: bool) -> None:
    """Extract (after downloading, if ``fetch``) into a temporary folder, then move into place."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".extract-"))
    try:
        if fetch:
            tv_utils.download_and_extract_archive(spec.url, base, extract_root=tmp, filename=spec.filename,
                                                  md5=spec.md5 if verify else None)
        else:
            tv_utils.extract_archive(base / spec.filename, tmp)
        if not (tmp / spec.folder).is_dir():
            raise RuntimeError(f"{base / spec.filename} has no top-level folder {spec.folder}/")
        if target.exists():
            os.replace(target, tmp / ".old")
        os.replace(tmp / spec.folder, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_extracted(name: str, root: Path, download: bool = False, verify: bool = True) -> Path:
    """Folder of the extracted archive of ``name``, fetching/extracting into ``root/name`` as needed.

    Looked for, in order: ``root/name/<folder>`` (our layout), ``root/name/<archive>`` (extracted now),
    ``root/<folder>`` (the dataset extracted directly under ``root``). With ``verify`` an archive on disk must match its md5: a mismatch is deleted and re-fetched when
    ``download`` is true, and raises :class:`ChecksumError` otherwise. Without an archive, an extracted
    folder is trusted as it is (a custom copy).
    """
    spec = ARCHIVES[name]
    base = root / name
    archive, target = base / spec.filename, base / spec.folder
    if archive.is_file() and verify and spec.md5:
        actual = _md5_mismatch(archive, spec.md5)
        if actual is not None and not download:
            raise ChecksumError(f"{archive} has md5 {actual}, expected {spec.md5} (corrupted or incomplete); "
                                f"pass download=True to delete and re-fetch it, or verify=False to accept it")
        if actual is not None:
            archive.unlink()
            _unpack(spec, base, target, fetch=True, verify=verify)
            return target
    if target.is_dir():
        return target
    flat = None if archive.is_file() else _flat(spec, root)
    if flat is not None:
        return flat
    if not archive.is_file() and not download:
        raise _missing(name, [target, archive, root / spec.folder], f"{spec.filename} (from {spec.url})", archive)
    _unpack(spec, base, target, fetch=not archive.is_file(), verify=verify)
    return target


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100 (torchvision's format)
def _verified(tv: type) -> type:
    """torchvision's ``tv`` (CIFAR10 or CIFAR100); ``verify=False`` blanks its md5 table on the instance, so its
    own ``_check_integrity``/``_load_meta`` only check that the files exist (custom copies, test fakes)."""

    class Verified(tv):
        def __init__(self, root: Path, train: bool, transform: Transform, download: bool, verify: bool):
            if not verify:
                self.train_list = [(f, None) for f, _ in tv.train_list]
                self.test_list = [(f, None) for f, _ in tv.test_list]
                self.meta = dict(tv.meta, md5=None)
                self.tgz_md5 = None
            super().__init__(str(root), train=train, transform=transform, download=download)

    return Verified


_CIFAR = {"cifar100": CIFAR100, "cifar10": CIFAR10}
_CIFAR_FILES = {"cifar100": ("train", "test", "meta"),
                "cifar10": (*[f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta")}


def _cifar_base(name: str, root: Path) -> Path:
    """``root/<name>`` (our layout) unless only ``root`` holds the data (torchvision's ``CIFAR100(root=...)``
    layout, also the MISA/MePo code's): extracted files first, then the archive."""
    tv, bases = _CIFAR[name], (root / name, root)
    for base in bases:
        if all((base / tv.base_folder / f).is_file() for f in _CIFAR_FILES[name]):
            return base
    return next((b for b in bases if (b / tv.filename).is_file()), bases[0])


def _cifar(split: str, root: Path, download: bool, verify: bool, transform: Transform | None, *,
           name: str = "cifar100"):
    tv = _CIFAR[name]
    base = _cifar_base(name, root)
    folder = base / tv.base_folder
    tgz = base / tv.filename
    if not download and not all((folder / f).is_file() for f in _CIFAR_FILES[name]):
        if not tgz.is_file():
            raise _missing(name, [folder, tgz, root / tv.base_folder, root / tv.filename],
                           f"{tv.filename} (from {tv.url}) or its extracted {tv.base_folder}/", base)
        actual = _md5_mismatch(tgz, tv.tgz_md5) if verify else None
        if actual is not None:
            raise ChecksumError(f"{tgz} has md5 {actual}, expected {tv.tgz_md5}; pass download=True "
                                f"to re-fetch it, or verify=False to accept it")
        download = True  # torchvision then only extracts the archive that is already there
    try:
        ds = _verified(tv)(base, split == "train", transform or pil_to_uint8, download, verify)
    except RuntimeError as err:
        raise ChecksumError(f"{name} under {folder} fails torchvision's md5 check ({err}); pass "
                            f"download=True to re-fetch, or verify=False to accept a custom copy") from err
    ds.name, ds.split = name, split
    return ds


_cifar100 = partial(_cifar, name="cifar100")
_cifar10 = partial(_cifar, name="cifar10")


# ---------------------------------------------------------------- ImageNet-R: seeded 80/20 split per class
def list_images(folder: Path) -> list[str]:
    """Sorted ``"<class folder>/<file>"`` paths of the images one level below ``folder``."""
    return sorted(f"{d.name}/{f.name}" for d in folder.iterdir() if d.is_dir()
                  for f in d.iterdir() if f.suffix.lower() in IMG_EXTENSIONS)


def split_per_class(files: list[str], seed: int = 0) -> dict[str, list[str]]:
    """Deterministic 80/20 split of ``"<class>/<file>"`` paths, independent of the listing order.

    In each class the files are ranked by ``sha256(f"{seed}:{path}")`` and the first ``n // 5`` go to
    test (stdlib hashing only, so the same split comes out on any machine and library version).
    """
    by_class: dict[str, list[str]] = {}
    for f in sorted(files):
        by_class.setdefault(f.split("/", 1)[0], []).append(f)
    train, test = [], []
    for members in by_class.values():
        ranked = sorted(members, key=lambda f: hashlib.sha256(f"{seed}:{f}".encode()).hexdigest())
        test += ranked[: len(members) // 5]
        train += ranked[len(members) // 5:]
    return {"train": sorted(train), "test": sorted(test)}


def _listing_digest(files: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()


def load_or_make_split(path: Path, files: list[str], seed: int) -> dict[str, list[str]]:
    """The split saved at ``path`` (checked against ``files``), or a new one saved there atomically."""
    if path.is_file():
        saved = json.loads(path.read_text())
        same_files = sorted(saved["train"] + saved["test"]) == sorted(files)
        if saved.get("listing_sha256") != _listing_digest(files) or not same_files:
            raise RuntimeError(f"{path} was made for another file list ({saved.get('n_files')} files, now "
                               f"{len(files)}); delete it to make a new split")
        return {"train": saved["train"], "test": saved["test"]}
    split = split_per_class(files, seed)
    paths.atomic_save_json(path, {"seed": seed, "rule": "per class: rank by sha256('<seed>:<class>/<file>'), "
                                  "first n//5 -> test", "n_files": len(files),
                                  "listing_sha256": _listing_digest(files), **split})
    return split


def _imagenet_r(split: str, root: Path, download: bool, verify: bool, transform: Transform | None, seed: int = 0):
    folder = ensure_extracted("imagenet-r", root, download, verify)
    files = list_images(folder)
    ours = root / "imagenet-r"  # our layout keeps the split next to the archive; a flat copy keeps it beside
    split_path = (ours / f"split_seed{seed}.json" if folder == ours / "imagenet-r"
                  else folder.parent / f"imagenet-r_split_seed{seed}.json")
    chosen = load_or_make_split(split_path, files, seed)[split]
    classes = sorted({f.split("/", 1)[0] for f in files})
    index = {c: i for i, c in enumerate(classes)}
    samples = [(folder / f, index[f.split("/", 1)[0]]) for f in chosen]
    return FileImageDataset(samples, classes, transform, "imagenet-r", split)


# ---------------------------------------------------------------- CUB-200-2011
def _read_table(path: Path) -> dict[int, str]:
    rows = (line.split(" ", 1) for line in path.read_text().splitlines() if line.strip())
    return {int(key): value.strip() for key, value in rows}


def _cub200(split: str, root: Path, download: bool, verify: bool, transform: Transform | None,
            split_kind: str = "reference"):
    """``split_kind="reference"``: MISA/MePo's random 80/20 split; ``"official"``: train_test_split.txt."""
    folder = ensure_extracted("cub200", root, download, verify)
    if split_kind == "reference":
        full = ImageFolder(str(folder / "images"))
        parts = torch.utils.data.random_split(range(len(full)), [0.8, 0.2],
                                              generator=torch.Generator().manual_seed(CUB_REFERENCE_SEED))
        samples, classes = [full.samples[i] for i in parts[SPLITS.index(split)].indices], full.classes
    elif split_kind == "official":
        images, labels = _read_table(folder / "images.txt"), _read_table(folder / "image_class_labels.txt")
        is_train, names = _read_table(folder / "train_test_split.txt"), _read_table(folder / "classes.txt")
        want = "1" if split == "train" else "0"
        samples = [(folder / "images" / images[i], int(labels[i]) - 1) for i in sorted(images) if is_train[i] == want]
        classes = [names[k] for k in sorted(names)]
    else:
        raise ValueError(f"split_kind must be 'reference' or 'official', got {split_kind!r}")
    return FileImageDataset(samples, classes, transform, "cub200", split)


# ---------------------------------------------------------------- Tiny-ImageNet and plain ImageFolders
def _tiny_imagenet(split: str, root: Path, download: bool, verify: bool, transform: Transform | None):
    """Train: ``train/<wnid>/images``; test: the labelled ``val`` set (the official test set has no labels)."""
    folder = ensure_extracted("tiny-imagenet", root, download, verify)
    wnids = sorted((folder / "wnids.txt").read_text().split())
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        samples = [(f, index[w]) for w in wnids for f in sorted((folder / "train" / w / "images").iterdir())
                   if f.suffix.lower() in IMG_EXTENSIONS]
    else:
        rows = [line.split("\t") for line in (folder / "val" / "val_annotations.txt").read_text().splitlines() if line]
        samples = [(folder / "val" / "images" / row[0], index[row[1]]) for row in rows]
    return FileImageDataset(samples, wnids, transform, "tiny-imagenet", split)


def _imagefolder(split: str, root: Path, download: bool, verify: bool, transform: Transform | None):
    """Class folders of images at ``root``, or at ``root/<split>`` when that exists (test falls back to val)."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found: point imagefolder:<path> (or root=) at a "
                                f"folder of class folders, optionally split into train/ and val/ (or test/)")
    candidates = {"test": ("test", "val"), "val": ("val", "test")}.get(split, (split,))
    folder = next((root / c for c in candidates if (root / c).is_dir()), root)
    full = ImageFolder(str(folder))
    return FileImageDataset(full.samples, full.classes, transform, f"imagefolder:{root}", split)


DATASETS: dict[str, Callable] = {"cifar100": _cifar100, "cifar10": _cifar10, "imagenet-r": _imagenet_r, "cub200": _cub200,
                                 "tiny-imagenet": _tiny_imagenet, "imagefolder": _imagefolder}


def get_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None, download: bool = False,
                verify: bool = True, transform: Transform | None = None, **options) -> torch.utils.data.Dataset:
    """One split of a real dataset, as a ``Dataset`` with ``.targets`` and ``.classes``.

    ``name``: one of :data:`DATASETS`, or ``"imagefolder:<path>"`` (``"imagefolder"`` takes the path from
    ``root``). ``split``: ``"train"`` or ``"test"``. ``root``: folder holding ``<name>/`` or the dataset's own
    extracted folder (default ``data_home()/datasets``). ``download``: fetch missing or corrupted archives.
    ``verify``: check archive md5s. ``transform``: applied to the PIL image (default :func:`pil_to_uint8`). ``options``:
    ``seed`` (imagenet-r split, default 0), ``split_kind`` (cub200: ``"reference"`` or ``"official"``).
    """
    if name.startswith("imagefolder:"):
        name, root = "imagefolder", name.split(":", 1)[1]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)} (or 'imagefolder:<path>')")
    if name == "imagefolder":
        if root is None:
            raise ValueError("imagefolder needs a folder: use name='imagefolder:<path>' or pass root=<path>")
        return _imagefolder(split, Path(root).expanduser(), download, verify, transform)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    base = Path(root).expanduser() if root is not None else paths.data_home() / "datasets"
    return DATASETS[name](split, base, download, verify, transform, **options)
