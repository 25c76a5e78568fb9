"""Writers of tiny fake datasets in the real on-disk formats (CIFAR-100 pickles, ImageNet-R, CUB, Tiny-ImageNet).

CIFAR pickles are written the way the originals were (Python 2 pickles: dictionary keys and file names
are Python 2 ``str`` objects), so ``pickle.load(f, encoding="bytes")`` shows the documented keys
``b'data'``, ``b'fine_labels'``, ... and torchvision's ``encoding="latin1"`` sees ``'data'``, ....
"""
from __future__ import annotations

import pickle
import struct
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image


class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that stores ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING)."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _dump_py2(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        _Py2Pickler(handle, protocol=2).dump(obj)


def write_cifar100(base: Path, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0) -> Path:
    """``base/cifar-100-python/{train,test,meta}`` with 100 fine and 20 coarse classes."""
    rng = np.random.default_rng(seed)
    folder = base / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        fine = np.repeat(np.arange(100), per_class)
        rng.shuffle(fine)
        _dump_py2(folder / name, {
            b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
            b"batch_label": f"{name} batch 1 of 1".encode(),
            b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
            b"data": rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)})
    _dump_py2(folder / "meta", {b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
                                b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)]})
    return folder


def write_cifar10(base: Path, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0) -> Path:
    """``base/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` with 10 classes (the training
    images dealt over the five batches, as in the real archive)."""
    rng = np.random.default_rng(seed)
    folder = base / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(labels: np.ndarray, name: str) -> dict:
        return {b"batch_label": name.encode(), b"labels": labels.tolist(),
                b"data": rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8),
                b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}

    train = rng.permutation(np.repeat(np.arange(10), train_per_class))
    for i, part in enumerate(np.array_split(train, 5), start=1):
        _dump_py2(folder / f"data_batch_{i}", batch(part, f"training batch {i} of 5"))
    _dump_py2(folder / "test_batch", batch(rng.permutation(np.repeat(np.arange(10), test_per_class)), "testing batch 1 of 1"))
    _dump_py2(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)],
                                        b"num_cases_per_batch": 10000, b"num_vis": 3072})
    return folder


def write_image(path: Path, seed: int, size: int = 8) -> Path:
    """A small random RGB image; the format follows the suffix (``.jpg``/``.JPEG`` or ``.png``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size + 2, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_class_tree(folder: Path, counts: dict[str, int], suffix: str = ".jpg") -> list[str]:
    """ImageFolder tree ``folder/<class>/<class>_<k><suffix>``; returns the ``class/file`` paths."""
    files = []
    for c, (cls, n) in enumerate(counts.items()):
        for k in range(n):
            ext = ".png" if (k % 3 == 2 and suffix == ".jpg") else suffix
            write_image(folder / cls / f"{cls}_{k:03d}{ext}", seed=100 * c + k)
            files.append(f"{cls}/{cls}_{k:03d}{ext}")
    return files


IMAGENET_R_COUNTS = {"n01443537": 10, "n01484850": 7, "n01494475": 5}


def write_imagenet_r_tar(base: Path) -> tuple[Path, list[str]]:
    """``base/imagenet-r.tar`` holding ``imagenet-r/<wnid>/*.jpg|png`` (+ a README like the real one)."""
    staging = base / "staging"
    files = write_class_tree(staging / "imagenet-r", IMAGENET_R_COUNTS)
    (staging / "imagenet-r" / "README.txt").write_text("fake ImageNet-R\n")
    archive = base / "imagenet-r.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(staging / "imagenet-r", arcname="imagenet-r")
    return archive, files


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


def write_cub(base: Path, per_class: tuple[int, ...] = (6, 5, 4)) -> Path:
    """``base/CUB_200_2011`` with ``images/<class>/*.jpg`` and the four metadata tables."""
    folder = base / "CUB_200_2011"
    images, labels, split = [], [], []
    for c, (cls, n) in enumerate(zip(CUB_CLASSES, per_class)):
        for k in range(n):
            rel = f"{cls}/{cls.split('.', 1)[1]}_{k:04d}_{100 + k}.jpg"
            write_image(folder / "images" / rel, seed=10 * c + k)
            images.append(rel)
            labels.append(c + 1)
            split.append(int(k % 2 == 0))
    ids = range(1, len(images) + 1)
    (folder / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in zip(ids, images)))
    (folder / "image_class_labels.txt").write_text("".join(f"{i} {y}\n" for i, y in zip(ids, labels)))
    (folder / "train_test_split.txt").write_text("".join(f"{i} {s}\n" for i, s in zip(ids, split)))
    (folder / "classes.txt").write_text("".join(f"{c + 1} {n}\n" for c, n in enumerate(CUB_CLASSES)))
    return folder


TINY_WNIDS = ["n02124075", "n01443537", "n09246464"]  # deliberately unsorted, like the real wnids.txt


def write_tiny_imagenet(base: Path, train_per_class: int = 3, val_per_class: int = 2) -> Path:
    """``base/tiny-imagenet-200`` with ``wnids.txt``, ``train/<wnid>/images`` and ``val`` + annotations."""
    folder = base / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in TINY_WNIDS))
    rows = []
    for c, wnid in enumerate(TINY_WNIDS):
        for k in range(train_per_class):
            write_image(folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", seed=c * 10 + k)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for k in range(val_per_class):
            name = f"val_{c * val_per_class + k}.JPEG"
            write_image(folder / "val" / "images" / name, seed=1000 + c * 10 + k)
            rows.append(f"{name}\t{wnid}\t0\t0\t7\t7\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(rows))
    return folder
