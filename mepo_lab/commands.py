"""What each ``mepo-lab`` subcommand does (:mod:`mepo_lab.cli` parses the arguments and dispatches here).

``COMMANDS`` maps a subcommand to its function; each takes the parsed ``argparse`` namespace, runs the library
call behind it and prints its summary.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mepo_lab.config import get_preset, override


def _preset(args):
    return override(get_preset(args.preset), args.overrides)


def cmd_stream(args) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from mepo_lab.data.synthetic import SyntheticWorld
    from mepo_lab.protocols.stream_stats import format_statistics, stream_statistics
    from mepo_lab.protocols.streams import si_blurry
    from mepo_lab.viz.streams import plot_stream_overview

    if args.classes is not None:
        labels = np.repeat(np.arange(args.classes), args.per_class)
    else:
        labels = SyntheticWorld(_preset(args).world).targets("downstream", "train")
    stream = si_blurry(labels, n_tasks=args.n_tasks, n=args.n, m=args.m, seed=args.seed,
                       stochastic=args.stochastic)
    stats = stream_statistics(stream)
    print(format_statistics(stats))
    fig = plot_stream_overview(stream, stats)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {args.out}")


def cmd_quickstart(args) -> None:
    import os

    from mepo_lab.quickstart import quickstart
    from mepo_lab.shipped import ENV

    if args.retrain:
        os.environ[ENV] = "0"
    result = quickstart(_preset(args), args.out, data_home=args.data_home, progress=args.progress)
    print(f"wrote {Path(args.out) / 'results.json'} and {len(result['figures'])} figures "
          f"in {result['seconds']:.1f} s")


def cmd_gcl(args) -> None:
    from mepo_lab.experiment import run_grid
    from mepo_lab.protocols.results import aggregate, format_table
    from mepo_lab.quickstart import save_figures

    preset = _preset(args)
    dataset, backbone = args.dataset or preset.dataset, args.backbone or preset.backbone
    align = args.align or preset.align.mode
    if args.alpha is not None:
        preset = override(preset, {"align.alpha": args.alpha})
    data_kwargs = ({"root": args.root, "download": args.download, "verify": args.verify}
                   if dataset != "synthetic" else None)
    runs, rows = run_grid(preset, [(args.learner, backbone, align)], args.out, data_home=args.data_home,
                          progress=args.progress, dataset=dataset, normalization=args.normalization,
                          data_kwargs=data_kwargs)
    if dataset == "synthetic":
        save_figures(runs, rows, Path(args.out), preset)
    print(format_table(aggregate(rows)))
    print(f"wrote {Path(args.out) / 'results.json'}")


def cmd_sweep(args) -> None:
    from mepo_lab.config import _split
    from mepo_lab.protocols.results import aggregate, format_table
    from mepo_lab.sweep import load_grid, run_sweep

    cells = load_grid(args.grid)
    if args.overrides:
        from dataclasses import replace

        extra = dict(_split(a) for a in args.overrides)
        override(get_preset(cells[0].preset), extra)  # a wrong key fails here, naming the valid ones
        cells = [replace(c, set=c.set | extra) for c in cells]
    result = run_sweep(cells, args.out, engine=args.engine, address=args.address, cpus_per_run=args.cpus_per_run,
                       gpus_per_run=args.gpus_per_run, data_home=args.data_home, progress=args.progress)
    if result["rows"]:
        print(format_table(aggregate(result["rows"])))
    print(f"wrote {Path(args.out) / 'results.json'}: {len(result['rows'])} of {len(cells)} cells finished "
          f"({result['skipped']} from an earlier run), {len(result['failures'])} failed "
          f"({Path(args.out) / 'failures.json'}), {result['seconds']:.1f} s")
    if result["failures"]:
        sys.exit(1)


def cmd_refine(args) -> None:
    from mepo_lab.mepo import distributed
    from mepo_lab.mepo.pipeline import mepo_backbone
    from mepo_lab.mepo.real import refine_real
    from mepo_lab.registry import get_backbone

    distributed.init_from_env()  # under torchrun: one process group, every rank refines its share
    preset = _preset(args)
    if args.pretrain_data == "synthetic":
        if args.backbone not in (None, "pretrained", "random"):
            raise ValueError(f"--backbone {args.backbone} needs real pretraining data: pass --pretrain-data "
                             "imagefolder:<path> | tiny-imagenet (the synthetic world refines the micro ViT)")
        source = get_backbone(args.backbone, preset, args.data_home, args.progress) if args.backbone else None
        bb = mepo_backbone(preset, args.data_home, source=source, progress=args.progress, folder=args.out)
    else:
        source = get_backbone(args.backbone or "sup21k", preset, args.data_home, args.progress)
        bb = refine_real(source, args.pretrain_data, args.root, preset.mepo, args.out, preset.device, args.size,
                         args.workers, args.progress, data_home=args.data_home, normalization=args.normalization,
                         download=args.download)
    if not distributed.is_main():
        return
    last = bb.info["log"][-1]
    extra = f" and {Path(bb.info['covariance']).name}" if "covariance" in bb.info else ""
    print(f"MePo backbone {bb.weights_hash} after {bb.info['meta_epoch']} meta-epochs ({bb.info['seconds']:.0f} s): "
          f"last group: sequential acc {100 * last['seq_acc']:.1f}%, joint acc {100 * last['joint_acc']:.1f}%; "
          f"checkpoints{extra} in {bb.info['folder']}")


def cmd_pretrain(args) -> None:
    from mepo_lab.backbones.pretrain import pretrained_backbone

    bb = pretrained_backbone(_preset(args), args.data_home, force=args.force, progress=args.progress)
    info = bb.info
    print(f"micro ViT {bb.weights_hash}: {'cached' if info.get('cached') else 'trained'}, "
          f"{info['n_classes']} classes, {info['n_images']} images, held-out accuracy "
          f"{100 * info['held_out_acc']:.1f}%, {info['seconds']:.1f} s")


def cmd_zapping(args) -> None:
    from mepo_lab.viz.zapping import save_zapping_figures
    from mepo_lab.zapping.claims import format_claims, format_table
    from mepo_lab.zapping.config import zapping_preset
    from mepo_lab.zapping.run import run_zapping

    cfg = override(zapping_preset(args.preset), args.overrides)
    result = run_zapping(cfg, args.out, data_home=args.data_home, download=args.download, progress=args.progress)
    figures = save_zapping_figures(result, Path(args.out))
    print(format_table(result["summary"]))
    print(format_claims(result["claims"]))
    print(f"wrote {Path(args.out) / 'results.json'} and {len(figures)} figures in {result['seconds']:.1f} s")


def cmd_became(args) -> None:
    from mepo_lab.became.config import became_preset
    from mepo_lab.became.run import format_table, run_became
    from mepo_lab.viz.became import save_became_figures

    cfg = override(became_preset(args.preset), args.overrides)
    result = run_became(cfg, args.out, data_home=args.data_home, download=args.download, progress=args.progress,
                        verify=args.verify)
    figures = save_became_figures(result, Path(args.out))
    print(format_table(result["summary"]))
    print(f"wrote {Path(args.out) / 'results.json'} and {len(figures)} figures in {result['seconds']:.1f} s")


def cmd_hembed(args) -> None:
    from mepo_lab.hembed.config import hembed_preset
    from mepo_lab.hembed.run import run_hembed
    from mepo_lab.protocols.task_incremental import format_runs_table
    from mepo_lab.viz.hembed import METHOD_NAMES, save_hembed_figures

    cfg = override(hembed_preset(args.preset), args.overrides)
    result = run_hembed(cfg, args.out, data_home=args.data_home, progress=args.progress, download=args.download,
                        verify=args.verify)
    figures = save_hembed_figures(result, Path(args.out))
    print(format_runs_table(result["summary"], METHOD_NAMES))
    print(f"wrote {Path(args.out) / 'results.json'} and {len(figures)} figures in {result['seconds']:.1f} s")


def cmd_purer(args) -> None:
    from mepo_lab.purer.config import purer_preset
    from mepo_lab.purer.run import format_table, run_purer
    from mepo_lab.viz.purer import save_purer_figures

    cfg = override(purer_preset(args.preset), args.overrides)
    result = run_purer(cfg, args.out, data_home=args.data_home, progress=args.progress)
    figures = save_purer_figures(result, Path(args.out))
    print(format_table(result["summary"]))
    print(f"wrote {Path(args.out) / 'results.json'} and {len(figures)} figures in {result['seconds']:.1f} s")


def cmd_study(args) -> None:
    from mepo_lab.study.config import study_preset
    from mepo_lab.study.figures import save_study_figures
    from mepo_lab.study.grid import run_study
    from mepo_lab.study.report import (
        conclusions,
        drift_table,
        eta_table,
        probe_table,
        summary_table,
    )

    cfg = override(study_preset(args.preset), args.overrides)
    result = run_study(cfg, args.out, data_home=args.data_home, progress=args.progress)
    figures = save_study_figures(result, Path(args.out))
    print("\n\n".join([summary_table(result), eta_table(result), probe_table(result), drift_table(result),
                       "\n".join(conclusions(result))]))
    print(f"wrote {Path(args.out) / 'results.json'} and {len(figures)} figures in {result['seconds']:.1f} s")


def cmd_bench(args) -> None:
    from mepo_lab.bench import format_report, run_benchmarks

    report = run_benchmarks(_preset(args), only=args.only, data_home=args.data_home, out=args.out)
    print(format_report(report))


COMMANDS = {"quickstart": cmd_quickstart, "stream": cmd_stream, "gcl": cmd_gcl, "sweep": cmd_sweep, "refine": cmd_refine,
            "pretrain": cmd_pretrain, "zapping": cmd_zapping, "became": cmd_became,
            "hembed": cmd_hembed, "purer": cmd_purer, "study": cmd_study, "bench": cmd_bench}
