"""``mepo-lab``: the command line, derived from the preset dataclasses.

Subcommands: ``quickstart``, ``stream``, ``gcl``, ``sweep``, ``refine``, ``pretrain``, ``zapping``, ``became``,
``hembed``, ``purer``, ``study``, ``bench`` (their bodies live in :mod:`mepo_lab.commands`). Every preset field can be
set with ``--set section.field=value`` (e.g. ``--set gcl.online_iter=1 --set seeds=1,2``); the ``stream``
command's flags are generated from :class:`~mepo_lab.config.StreamConfig`'s fields, and every list of
names (learners, alignments, backbones, datasets, normalisations) comes from its registry, so a newly
registered learner or backbone is reachable here without editing this file.
Errors in the input print one line (``mepo-lab: error: ...``) and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from mepo_lab import __version__
from mepo_lab.config import PRESETS, StreamConfig
from mepo_lab.data import check_dataset_name, dataset_names
from mepo_lab.data.normalization import NORMALIZATIONS
from mepo_lab.learners import IMAGE_LEARNERS, LEARNERS
from mepo_lab.mepo.alignment import ALIGNMENTS
from mepo_lab.registry import backbone_names, check_backbone_name


def add_dataclass_flags(parser: argparse.ArgumentParser, instance) -> None:
    """One ``--field-name`` flag per dataclass field, typed and defaulted from ``instance``."""
    for f in dataclasses.fields(instance):
        default, flag = getattr(instance, f.name), "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, default=default, action=argparse.BooleanOptionalAction,
                                help=f"(default: {default})")
        else:
            parser.add_argument(flag, dest=f.name, default=default, type=type(default),
                                help=f"(default: {default})")


def _common(parser: argparse.ArgumentParser, presets: list[str] | None = None) -> None:
    parser.add_argument("--preset", default="cpu", choices=presets or list(PRESETS),
                        help="configuration preset (MEPO_LAB_SMOKE=1 forces smoke)")
    parser.add_argument("--data-home", default=None, help="where caches live (default: $MEPO_LAB_DATA, "
                        "<repo>/data in a checkout, else the platform cache dir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset field, e.g. --set gcl.lr=1e-3 (repeatable)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``mepo-lab`` argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="mepo-lab", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"mepo_lab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="the whole story on the embedded default (offline, CPU)")
    _common(q)
    q.add_argument("--out", default="runs/quickstart", help="output folder (results.json, figures)")
    q.add_argument("--retrain", action="store_true", help="train the micro ViT, its MePo refinement and the "
                   "covariances here instead of using the shipped ones (sets MEPO_LAB_SHIPPED=0)")

    s = sub.add_parser("stream", help="print Si-Blurry stream statistics and save the class x time raster")
    _common(s)
    add_dataclass_flags(s, StreamConfig())
    s.add_argument("--seed", type=int, default=1, help="stream seed (default: 1)")
    s.add_argument("--classes", type=int, default=None,
                   help="use labels repeat(arange(C), --per-class) instead of the preset world's")
    s.add_argument("--per-class", type=int, default=500)
    s.add_argument("--out", default="stream_raster.png", help="where to save the raster (PNG)")

    g = sub.add_parser("gcl", help="one learner / backbone / alignment over the preset's seeds")
    _common(g)
    features = [n for n in LEARNERS if n not in IMAGE_LEARNERS]
    g.add_argument("--learner", default="linear", choices=list(LEARNERS),
                   help=f"{'/'.join(features)} run on cached features; {'/'.join(IMAGE_LEARNERS)} on images "
                        "(minutes at the cpu preset)")
    g.add_argument("--backbone", default=None, type=_checked(check_backbone_name),
                   help=f"{' | '.join(backbone_names())} (default: the preset's)")
    g.add_argument("--align", default=None, choices=list(ALIGNMENTS),
                   help="MePo output alignment (default: the preset's align.mode)")
    g.add_argument("--alpha", type=float, default=None, help="alignment weight α in [0, 1]")
    g.add_argument("--dataset", default=None, type=_checked(check_dataset_name),
                   help=f"{' | '.join(dataset_names())} (default: the preset's; synthetic is the embedded world)")
    g.add_argument("--root", default=None, help="dataset folder (default: <data home>/datasets)")
    g.add_argument("--download", action="store_true", help="download the dataset if missing (checksummed)")
    g.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip checksum checks (custom or modified copies of a dataset)")
    g.add_argument("--normalization", default="dataset", choices=list(NORMALIZATIONS),
                   help="input statistics: the dataset's (Si-Blurry convention), the backbone's timm config, "
                        "or ImageNet's")
    g.add_argument("--out", default="runs/gcl", help="output folder (results.json, figures)")

    r = sub.add_parser("refine", help="MePo meta post-refinement (resumable): the micro ViT on the synthetic "
                       "world, or a real backbone on image folders")
    _common(r)
    r.add_argument("--backbone", default=None, type=_checked(check_backbone_name),
                   help="pretrained | random (micro ViT, synthetic data; default pretrained) or, with real "
                        f"--pretrain-data, any other of {' | '.join(backbone_names())} (default sup21k)")
    r.add_argument("--pretrain-data", default="synthetic", type=_checked(check_dataset_name),
                   help=f"{' | '.join(dataset_names())}, e.g. imagefolder:<ImageNet's train/> "
                        "(default: synthetic, the embedded world)")
    r.add_argument("--root", default=None, help="dataset folder (default: <data home>/datasets)")
    r.add_argument("--download", action="store_true", help="download the pretraining dataset if missing")
    r.add_argument("--size", type=int, default=224, help="input size of the real backbone (default: 224)")
    r.add_argument("--workers", type=int, default=2, help="image decoding processes for real data (default: 2)")
    r.add_argument("--normalization", default="imagenet", choices=list(NORMALIZATIONS),
                   help="real data: ImageNet mean/std (default, the reference's), the backbone's timm config, or "
                        "the pretraining dataset's statistics")
    r.add_argument("--out", default=None, help="refinement folder (meta_*.pth, state.pt, cov_meta_E.npy; "
                   "default: a cached folder under <data home>/mepo/)")

    p = sub.add_parser("pretrain", help="pretrain (or load from cache) the micro ViT and report it")
    _common(p)
    p.add_argument("--force", action="store_true", help="retrain even if cached")

    z = sub.add_parser("zapping", help="zapping (Frati et al. 2024): i.i.d. / ASB / Meta-ASB pretraining with and "
                       "without last-layer resets, evaluated by continual and i.i.d. transfer")
    _common(z)
    z.add_argument("--download", action="store_true", help="download Omniglot if missing (data=omniglot; checksummed)")
    z.add_argument("--out", default="runs/zapping", help="output folder (results.json, figures)")
    z.epilog = ("--set takes the fields of mepo_lab.zapping.config.ZappingConfig, e.g. --set asb_episodes=100 "
                "--set seeds=1,2 --set regimes=asb,asb_zap --set data=omniglot")

    c = sub.add_parser("became", help="BECAME (Li et al. 2025): GPM + closed-form Bayesian merging against five "
                       "baselines on a task-incremental split (ACC, BWT, accuracy matrices)")
    _common(c, [*PRESETS, "colab_vit"])
    c.add_argument("--download", action="store_true", help="download CIFAR-100 if missing (data=cifar100; checksummed)")
    c.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip checksum checks (custom or modified copies of a dataset)")
    c.add_argument("--out", default="runs/became", help="output folder (results.json, figures)")
    c.epilog = ("--set takes the fields of mepo_lab.became.config.BecameConfig, e.g. --set epochs=10 "
                "--set seeds=1,2 --set methods=gpm,became --set model=vit; --preset colab_vit adapts the last 3 blocks "
                "of a pretrained ViT-B/16 (a GPU run)")

    h = sub.add_parser("hembed", help="H-embedding guided hypernetworks (Wu et al. 2025) against plain HNET and a "
                       "random guide on tasks of designed similarity (ACC, BWT, H-score matrix)")
    _common(h, [*PRESETS, "colab_vit"])
    h.add_argument("--download", action="store_true", help="download CIFAR-10/100 if missing (data=cifar; checksummed)")
    h.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip checksum checks (custom or modified copies of a dataset)")
    h.add_argument("--out", default="runs/hembed", help="output folder (results.json, figures)")
    h.epilog = ("--set takes the fields of mepo_lab.hembed.config.HembedConfig, e.g. --set epochs=50 "
                "--set seeds=1,2 --set methods=hnet,hnet_hembedding --set emb_mode=reciprocal; --preset colab runs the official "
                "ResNet-32 on CIFAR-10 + CIFAR-100, --preset colab_vit a generated LoRA on a ViT-B/16 (GPU runs)")

    u = sub.add_parser("purer", help="PURER (Hu et al. 2023): data-free meta-learning from a teacher pool (EI, ECI, "
                       "ICFIL) and MePo refined on inverted instead of real pretraining images")
    _common(u)
    u.add_argument("--out", default="runs/purer", help="output folder (results.json, figures, snapshots)")
    u.epilog = ("--set takes the fields of mepo_lab.purer.config.PurerConfig, e.g. --set iterations=500 "
                "--set seeds=1,2 --set shots=1 --set methods=ei,eci --set data_free_mepo=false")

    y = sub.add_parser("study", help="what makes MePo work: refinement controls x learners x alignment x "
                       "distribution shift x seeds, with paired gains and diagnostics (pre-registered grid)")
    _common(y)
    y.add_argument("--out", default="runs/study", help="output folder (results.json, runs/, figures)")
    y.epilog = ("--set takes the fields of mepo_lab.study.config.StudyConfig, e.g. --set learners=linear,ncm "
                "--set variants=none,mepo,joint_ft --set image_variants=none,mepo --set shifts=none,invert --set seeds=1,2")

    w = sub.add_parser("sweep", help="a grid of runs from a TOML file, each cell one task, here or on a Ray cluster")
    w.add_argument("grid", help="TOML file: preset, [grid] learner/backbone/alignment (+ dataset, seed, [grid.set]), "
                   "[set] (see mepo_lab.sweep.grid)")
    w.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process (default); ray: a Ray cluster (pip install \"mepo_lab[ray]\")")
    w.add_argument("--address", default=None, help="Ray cluster address (default: start a local one), e.g. auto")
    w.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs a cell asks Ray for (default 1)")
    w.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs a cell asks Ray for (default 0)")
    w.add_argument("--out", default="runs/sweep", help="output folder (results.json, failures.json, runs/)")
    w.add_argument("--data-home", default=None, help="where caches live (as for the other commands)")
    w.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field in every cell (repeatable; on top of the file's [set])")
    w.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")

    b = sub.add_parser("bench", help="measure the speed targets and print ratios")
    _common(b)
    b.add_argument("--only", nargs="*", default=None, help="subset of benchmarks to run")
    b.add_argument("--out", default=None, help="also write the report as JSON here")
    return parser


def _checked(check):
    """An argparse ``type=`` from a registry check: its ``ValueError`` becomes argparse's one-line error."""
    def convert(value: str) -> str:
        try:
            return check(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    convert.__name__ = check.__name__
    return convert


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mepo-lab`` console script."""
    from mepo_lab.commands import COMMANDS
    from mepo_lab.device import DeviceMemoryError, oom_guard

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with oom_guard(args.command, getattr(args, "preset", "")):
            COMMANDS[args.command](args)
    except (ValueError, PermissionError, FileNotFoundError, DeviceMemoryError) as err:
        parser.exit(2, f"mepo-lab: error: {err}\n")
    except RuntimeError as err:  # a dataset failing its checksum is bad input too (one line, no traceback)
        from mepo_lab.data.real import ChecksumError

        if isinstance(err, ChecksumError):
            parser.exit(2, f"mepo-lab: error: {err}\n")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
