"""Batch sources of the MePo refinement and the real-data pipeline, on tiny fake image folders (offline)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms as T
from torchvision.datasets.folder import default_loader

from mepo_lab.backbones.base import Backbone, weights_hash
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.cli import main
from mepo_lab.config import MePoConfig, MicroViTConfig, get_preset
from mepo_lab.data.augment import train_augment
from mepo_lab.data.normalization import IMAGENET_PREPROCESS, normalize
from mepo_lab.data.real import get_dataset
from mepo_lab.loading import to_device
from mepo_lab.mepo.covariance import validate_covariance
from mepo_lab.mepo.prototypes import class_prototypes
from mepo_lab.mepo.real import real_covariance, refine_real
from mepo_lab.mepo.refine import MetaRefiner, _epoch_seed
from mepo_lab.mepo.reptile import MetaModel, masked_logits, reptile_step_
from mepo_lab.mepo.sources import ArraySource, FileSource
from tests import fakes

TINY = MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2)
CFG = MePoConfig(group_size=4, tasks_per_group=2, samples_per_class=4, inner_epochs=1, batch_size=8,
                 backbone_lr=1e-3, meta_lr=0.5, meta_epochs=2, cov_samples_per_class=4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster than two, and steadier on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """An ImageFolder ``train/`` of 6 classes x 12 small images (jpg and png)."""
    root = tmp_path_factory.mktemp("pretrain") / "train"
    fakes.write_class_tree(root, {f"n0{k}": 12 for k in range(6)})
    return root


def _backbone(seed: int = 0) -> Backbone:
    model = create_micro_vit(TINY, 32, seed=seed)
    return Backbone(model, "tiny", weights_hash(model))


def _cfg(**kw) -> MePoConfig:
    return MePoConfig(**{**CFG.__dict__, **kw})


# ---------------------------------------------------------------- sources
def test_file_source_applies_the_reference_transforms_in_any_worker(tree):
    ds = get_dataset(f"imagefolder:{tree}")
    src, idx = FileSource(ds, size=32, workers=0), np.array([0, 13, 40, 71])
    rng_before = torch.get_rng_state()
    (x, y), = src.load([src.prepare(idx, False, torch.Generator())], "cpu")
    test = T.Compose([T.Resize(36), T.CenterCrop(32), T.PILToTensor()])
    clean = torch.stack([test(default_loader(ds.samples[i][0])) for i in idx])
    torch.testing.assert_close(x, IMAGENET_PREPROCESS(clean))
    assert x.dtype == torch.float32 and y.tolist() == [ds.targets[i] for i in idx]

    gen = torch.Generator().manual_seed(0)
    tokens = [src.prepare(idx, True, gen) for _ in range(3)]
    inline = [x for x, _ in src.load(tokens, "cpu")]
    workers = [x for x, _ in FileSource(ds, size=32, workers=2).load(tokens, "cpu")]
    assert all(torch.equal(a, b) for a, b in zip(inline, workers, strict=True)) and not torch.equal(inline[0], inline[1])
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeded per image, global RNG untouched
    i, seed = tokens[2][1]
    torch.manual_seed(seed)
    train = T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.ColorJitter(brightness=63 / 255),
                       T.PILToTensor()])
    torch.testing.assert_close(inline[2][1], IMAGENET_PREPROCESS(train(default_loader(ds.samples[i][0]))[None])[0])


def test_array_source_gathers_memmaps_and_replays_inline_augmentation(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (20, 3, 16, 16), dtype=np.uint8), np.arange(20) % 4
    np.save(tmp_path / "x.npy", images)
    mapped = ArraySource(np.load(tmp_path / "x.npy", mmap_mode="r"), labels)
    idx, gen, ref_gen = np.array([3, 1, 17]), torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    tokens = [mapped.prepare(idx, True, gen), mapped.prepare(idx, False, gen)]
    (xa, ya), (xc, _) = mapped.load(tokens, "cpu")
    expected = normalize(train_augment(torch.from_numpy(images[idx]), ref_gen))
    assert torch.equal(xa, expected) and torch.equal(xc, normalize(torch.from_numpy(images[idx])))
    assert ya.tolist() == [3, 1, 1] and torch.equal(gen.get_state(), ref_gen.get_state())
    assert torch.equal(to_device(xa, "cpu"), xa)
    with pytest.raises(ValueError, match="uint8 images of shape"):
        ArraySource(images.astype(np.float32), labels)


def _inline_refinement(model, images, labels, cfg, n_classes):
    """The refinement loop before sources existed: gather, augment on CPU with the epoch's generator,
    normalise, masked CE, SGD — one Reptile step per group (official switches, one meta-epoch)."""
    from mepo_lab.mepo.pseudo_tasks import PseudoTaskSampler

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        meta = MetaModel(model, n_classes)
    head = [p for n, p in meta.named_parameters() if n.startswith("head.")]
    body = [p for n, p in meta.named_parameters() if not n.startswith("head.")]
    opt = torch.optim.SGD([{"params": body, "lr": cfg.backbone_lr}, {"params": head, "lr": cfg.head_lr}],
                          momentum=cfg.momentum, foreach=True)
    imgs, labs = torch.from_numpy(images), torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, 0))
    for group in PseudoTaskSampler(labels, cfg).epoch(0):
        anchor = [p.detach().clone() for p in body + head]
        mask = torch.zeros(n_classes, dtype=torch.bool)
        mask[torch.from_numpy(group.classes)] = True
        for indices, epochs, augment in [(t.indices, cfg.inner_epochs, True) for t in group.tasks] + [(group.joint, 1, False)]:
            for _ in range(epochs):
                order = torch.from_numpy(indices)[torch.randperm(len(indices), generator=gen)]
                for s in range(0, len(order), cfg.batch_size):
                    b = order[s:s + cfg.batch_size]
                    x = train_augment(imgs[b], gen) if augment else imgs[b]
                    loss = F.cross_entropy(masked_logits(meta(normalize(x)), "multiply", mask), labs[b])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        reptile_step_(body + head, anchor, cfg.meta_lr)
    return meta


def test_array_source_gives_the_weights_of_the_inline_loop(tmp_path):
    from mepo_lab.data.synthetic import SyntheticWorld

    data = SyntheticWorld(get_preset("smoke").world).dataset("pretrain", "train")
    keep = data.targets < 4
    images, labels = data.images[keep], np.asarray(data.targets[keep], np.int64)
    cfg = MePoConfig(group_size=4, tasks_per_group=2, samples_per_class=5, inner_epochs=2, batch_size=6,
                     backbone_lr=1e-3, meta_lr=0.5, meta_epochs=1)  # 2 epochs x (6 + 4 images) per task
    new = MetaRefiner(create_micro_vit(TINY, 32, seed=0), ArraySource(images, labels), cfg, tmp_path / "a")
    new.run(progress=False)
    old = MetaRefiner(create_micro_vit(TINY, 32, seed=0), images, labels, cfg, tmp_path / "b")  # array form
    old.run(progress=False)
    inline = _inline_refinement(create_micro_vit(TINY, 32, seed=0), images, labels, cfg, 4)
    for k, v in inline.state_dict().items():
        assert torch.equal(v, new.model.state_dict()[k]) and torch.equal(v, old.model.state_dict()[k]), k


# ---------------------------------------------------------------- the real-data pipeline
class Interrupt(Exception):
    pass


class CrashInSecondEpoch:
    def on_group_end(self, entry):
        if entry["meta_epoch"] == 1:
            raise Interrupt


def _state(folder):
    return torch.load(folder / "state.pt", weights_only=False)["model"]


def test_refine_real_writes_checkpoints_resumes_exactly_with_any_workers(tree, tmp_path):
    straight = refine_real(_backbone(), f"imagefolder:{tree}", cfg=CFG, folder=tmp_path / "s", size=32,
                           workers=0, progress=False, device="cpu")
    folder = tmp_path / "s"
    assert sorted(p.name for p in folder.glob("meta_*.pth")) == ["meta_0.pth", "meta_1.pth", "meta_2.pth"]
    assert straight.info["meta_epoch"] == 2 and len(straight.info["log"]) == 2  # 6 classes: one group of 4
    cov = np.load(folder / "cov_meta_2.npy")
    validate_covariance(cov, dim=16)  # symmetric PSD, d x d
    assert np.linalg.eigvalsh(cov).min() > -1e-10 and straight.weights_hash != _backbone().weights_hash
    for workers in (0, 2):
        run = tmp_path / f"w{workers}"
        with pytest.raises(Interrupt):
            refine_real(_backbone(), f"imagefolder:{tree}", cfg=CFG, folder=run, size=32, workers=workers,
                        progress=False, device="cpu", callbacks=[CrashInSecondEpoch()])
        assert (run / "meta_1.pth").exists() and not (run / "meta_2.pth").exists()
        resumed = refine_real(_backbone(), f"imagefolder:{tree}", cfg=CFG, folder=run, size=32, workers=workers,
                              progress=False, device="cpu")
        assert resumed.weights_hash == straight.weights_hash, workers
        assert all(torch.equal(v, _state(run)[k]) for k, v in _state(folder).items())  # head too
        assert np.array_equal(np.load(run / "cov_meta_2.npy"), cov)


def test_repeats_restart_and_head_resets_run_on_files(tree, tmp_path):
    """n_repeats=2 with restart (crashed before sources: in-place copy into leaf parameters) and zapping."""
    cfg = _cfg(fidelity="corrected", n_repeats=2, repeats="restart", head_reset="per_task", meta_epochs=1)
    src = FileSource(get_dataset(f"imagefolder:{tree}"), size=32, workers=0)
    ref = MetaRefiner(create_micro_vit(TINY, 32, seed=0), src, cfg, tmp_path)
    ref.run(progress=False)
    assert len(ref.log) == 1 and np.isfinite(ref.log[0]["seq_loss"]) and ref.model.head[-1].out_features == 6


def test_covariance_official_augments_corrected_uses_clean_images(tree):
    src, bb = FileSource(get_dataset(f"imagefolder:{tree}"), size=32, workers=0), _backbone()
    official = class_prototypes(bb.model, src, per_class=4, augment=True, device="cpu", progress=False)
    clean = real_covariance(bb, src, _cfg(fidelity="corrected"), device="cpu", progress=False)
    assert official.shape == (6, 16) and clean.shape == (16, 16)
    assert not np.allclose(np.cov(official, rowvar=False), clean)
    again = class_prototypes(bb.model, src, per_class=4, augment=False, batch_size=8, device="cpu", progress=False)
    np.testing.assert_array_equal(np.cov(again, rowvar=False), clean)


@pytest.mark.parametrize("kw, message", [
    ({"samples_per_class": 13}, r"class 'n00' \(id 0\) has only 12 images but mepo.samples_per_class is 13: "
                                r"use --set mepo.samples_per_class=12"),
    ({"cov_samples_per_class": 20}, r"--set mepo.cov_samples_per_class=12"),
    ({"group_size": 8}, r"mepo.group_size \(8\) exceeds the 6 classes .* --set mepo.group_size=6"),
    ({"group_size": 4, "tasks_per_group": 3}, r"must be a multiple of mepo.tasks_per_group"),
])
def test_bad_configurations_fail_before_any_work_with_the_fix(tree, tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        refine_real(_backbone(), f"imagefolder:{tree}", cfg=_cfg(**kw), folder=tmp_path, size=32, workers=0,
                    progress=False)
    assert not (tmp_path / "meta_0.pth").exists()


def test_bad_inputs_name_the_fix(tree, tmp_path):
    small = tmp_path / "small"
    fakes.write_class_tree(small, {"a": 5, "b": 3, "c": 5, "d": 5})
    with pytest.raises(ValueError, match=r"class 'b' \(id 1\) has only 3 images.*samples_per_class=3"):
        refine_real(_backbone(), f"imagefolder:{small}", cfg=_cfg(), folder=tmp_path / "x", size=32, workers=0)
    with pytest.raises(ValueError, match=r"takes 32x32 images but size=64: pass size=32"):
        refine_real(_backbone(), f"imagefolder:{tree}", cfg=_cfg(), folder=tmp_path / "x", size=64, workers=0)
    refine_real(_backbone(), f"imagefolder:{tree}", cfg=_cfg(meta_epochs=1), folder=tmp_path / "y", size=32,
                workers=0, progress=False, covariance=False)
    with pytest.raises(ValueError, match="another backbone, pretraining set or configuration"):
        refine_real(_backbone(seed=1), f"imagefolder:{tree}", cfg=_cfg(meta_epochs=1), folder=tmp_path / "y",
                    size=32, workers=0, progress=False)
    with pytest.raises(ValueError, match="unknown dataset"):
        refine_real(_backbone(), "imagenet-1k", cfg=_cfg(), folder=tmp_path / "z", size=32)


def test_cli_refines_a_named_backbone_on_tiny_imagenet(tmp_path, capsys, data_home):
    fakes.write_tiny_imagenet(tmp_path / "datasets" / "tiny-imagenet", train_per_class=4)
    flags = ["refine", "--preset", "smoke", "--backbone", "random", "--pretrain-data", "tiny-imagenet", "--root",
             str(tmp_path / "datasets"), "--size", "32", "--workers", "0", "--no-progress",
             "--out", str(tmp_path / "out")]
    sets = ["mepo.group_size=2", "mepo.tasks_per_group=2", "mepo.samples_per_class=4", "mepo.meta_epochs=1",
            "mepo.cov_samples_per_class=4", "mepo.batch_size=4"]
    assert main(flags + [a for s in sets for a in ("--set", s)]) == 0
    assert "after 1 meta-epochs" in capsys.readouterr().out and (tmp_path / "out" / "cov_meta_1.npy").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(flags + [a for s in sets + ["mepo.samples_per_class=5"] for a in ("--set", s)])
    assert exit_info.value.code == 2 and "--set mepo.samples_per_class=4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["refine", "--backbone", "sup21k", "--no-progress"])
    assert "needs real pretraining data" in capsys.readouterr().err


def test_file_source_reads_datasets_without_files_through_pil(tmp_path):
    """CIFAR-100 as pretraining data: torchvision's dataset yields PIL images, no ``samples`` list."""
    from PIL import Image

    fakes.write_cifar100(tmp_path / "cifar100", train_per_class=2, test_per_class=1)
    ds = get_dataset("cifar100", "train", root=tmp_path, verify=False)
    src, idx = FileSource(ds, size=32, workers=0), np.array([0, 5, 17])
    (x, y), = src.load([src.prepare(idx, False, torch.Generator())], "cpu")
    test = T.Compose([T.Resize(36), T.CenterCrop(32), T.PILToTensor()])
    clean = torch.stack([test(Image.fromarray(ds.data[i])) for i in idx])  # from the raw pickled pixels
    torch.testing.assert_close(x, IMAGENET_PREPROCESS(clean))
    assert y.tolist() == [ds.targets[i] for i in idx]
    (xa, _), = src.load([src.prepare(idx, True, torch.Generator().manual_seed(1))], "cpu")
    assert xa.shape == x.shape and not torch.equal(xa, x)
