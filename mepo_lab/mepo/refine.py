"""MePo's meta post-refinement: the bi-level Reptile loop over pseudo task sequences
(``docs/reference/mepo.md#bi-level``).

For every group (meta-iteration) of every meta-epoch::

    θ0 ← θ                                           # anchor: one copy of backbone + head
    for t in pseudo tasks:  inner_epochs of SGD on D_t   (logits restricted to the group's classes)
    one epoch of SGD on the joint set D_joint
    θ ← θ0 + η (θ − θ0)                              # Reptile, in place

SGD with momentum 0.9 and two learning rates (backbone / head), a train augmentation in the
sequential phase. The switches of :mod:`mepo_lab.mepo.switches` pick the official or corrected
behaviour; ``head_reset`` re-initialises the head (zapping).

``schedule="joint"`` is a control (``docs/reference/mepo.md#controls``): the sequential phase becomes ONE
mixed phase over ``∪_t D_t`` with the same images, the same number of SGD steps and the same batch sizes
(per inner epoch, a random order of the union cut into the sizes ``⌈|D_t| / B⌉`` chunks of task after
task), logits restricted to the group's classes and one head reset (if any) at the start of the repeat.
With ``meta_lr=1`` it is plain joint fine-tuning.

Images come from a :class:`~mepo_lab.mepo.sources.BatchSource` (uint8 arrays, or image files decoded
in DataLoader workers). Each group is *planned* first — batch orders, augmentation draws and head
resets, all from the meta-epoch's seeded generator, in the order the old inline loop drew them — then
executed while the source streams the planned batches (a file source decodes ahead, across tasks).

Under ``torchrun`` (:mod:`mepo_lab.mepo.distributed`) the model trains under DistributedDataParallel: every rank
plans the same batches, takes its share of each, and only rank 0 writes files.

After every meta-epoch the backbone is saved in the released format (``meta_{e}.pth``: plain
head-less timm state dict; ``meta_0.pth`` is the untouched input) together with ``state.pt`` (head,
optimiser, log), written atomically: a killed run resumes from its last finished meta-epoch and ends
with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import copy
import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.backbones.base import save_mepo_backbone
from mepo_lab.config import MePoConfig
from mepo_lab.device import Amp
from mepo_lab.mepo import distributed
from mepo_lab.mepo.pseudo_tasks import PseudoGroup, PseudoTask, PseudoTaskSampler
from mepo_lab.mepo.reptile import MetaModel, masked_logits, reptile_step_, reset_head_, snapshot
from mepo_lab.mepo.sources import ArraySource, BatchSource
from mepo_lab.mepo.switches import resolve


def _emit(callbacks: Iterable[Any], event: str, entry: dict) -> None:
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(entry)


@dataclass
class _Phase:
    """One planned phase of a group: a pseudo task's epochs, or the joint epoch (``task is None``)."""

    repeat: int
    task: int | None
    allowed: torch.Tensor
    reset: torch.Tensor | None  # generator state of a head reset before the phase (zapping), or None
    tokens: list  # the source's prepared batches (handed to the source's feed when the group starts)
    n_batches: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_batches = len(self.tokens)


class MetaRefiner:
    """Runs the refinement of ``backbone`` on a pretraining set into ``folder``.

    ``MetaRefiner(backbone, source, cfg, folder, device="cpu")`` with a
    :class:`~mepo_lab.mepo.sources.BatchSource`, or the array form
    ``MetaRefiner(backbone, images, labels, cfg, folder, device="cpu")`` (uint8 ``(N, 3, H, W)``,
    an :class:`~mepo_lab.mepo.sources.ArraySource` with the synthetic world's preprocessing). The
    whole backbone is trained (``requires_grad`` is switched on); the head has ``source.n_classes``
    outputs.
    """

    def __init__(self, backbone: torch.nn.Module, source: BatchSource | np.ndarray, *args: Any, **kwargs: Any) -> None:
        if not isinstance(source, BatchSource):
            if not args:
                raise TypeError("the array form is MetaRefiner(backbone, images, labels, cfg, folder, device)")
            source, args = ArraySource(source, args[0]), args[1:]
        self._setup(backbone, source, *args, **kwargs)

    def _setup(self, backbone: torch.nn.Module, source: BatchSource, cfg: MePoConfig, folder: str | Path,
               device: torch.device | str = "cpu") -> None:
        self.cfg, self.folder, self.device = resolve(cfg), Path(folder), torch.device(device)
        self.source, self.labels = source, source.labels
        self.sampler = PseudoTaskSampler(self.labels, self.cfg)
        with torch.random.fork_rng(devices=[]):  # the head's default init, reproducible, RNG untouched
            torch.manual_seed(self.cfg.seed)
            self.model = MetaModel(backbone.requires_grad_(True), source.n_classes).to(self.device)
        head = [p for n, p in self.model.named_parameters() if n.startswith("head.")]
        body = [p for n, p in self.model.named_parameters() if not n.startswith("head.")]
        self.params = body + head
        self.opt = torch.optim.SGD([{"params": body, "lr": self.cfg.backbone_lr},
                                    {"params": head, "lr": self.cfg.head_lr}], momentum=self.cfg.momentum,
                                   foreach=True)
        self.world, self.ddp = distributed.world_size(), None
        if self.world > 1:  # torchrun: same plan on every rank, each takes its share of every batch
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.log: list[dict] = []
        self.done, self.seconds = 0, 0.0
        self.amp = Amp(self.device, self.cfg.amp)  # mepo.amp: autocast on a GPU (the reference: fp32); CPU: fp32
        self._scratch_head: torch.nn.Module | None = None  # advances the generator past planned head resets

    # ----------------------------------------------------------------------------- checkpoints
    def config_record(self) -> dict:
        """The resolved configuration of the refinement itself: without ``meta_epochs`` (a longer run may
        extend a shorter one) and the covariance's fields (they do not change the weights)."""
        return refinement_fields(asdict(self.cfg))

    def resume(self) -> bool:
        """Load ``state.pt`` if the folder holds a run of this configuration; False when starting fresh."""
        state_path = self.folder / "state.pt"
        if not state_path.exists():
            return False
        state = torch.load(state_path, map_location=self.device, weights_only=False)
        if refinement_fields(state["config"]) != self.config_record():
            raise ValueError(f"{self.folder} holds a refinement with another configuration; "
                             "use another folder or delete it to start over")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.done, self.log, self.seconds = state["meta_epoch"], state["log"], state["seconds"]
        return True

    def _save(self) -> None:
        if not distributed.is_main():  # every rank holds the same weights; one writes them
            return
        save_mepo_backbone(self.model.vit, self.folder / f"meta_{self.done}.pth")
        state = {"meta_epoch": self.done, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "log": self.log, "config": self.config_record(), "seconds": self.seconds}
        paths.atomic_write(self.folder / "state.pt", lambda h: torch.save(state, h))
        paths.atomic_save_json(self.folder / "info.json", {"meta_epochs_done": self.done, "seconds": self.seconds,
                                                           "config": asdict(self.cfg), "log": self.log})

    # ----------------------------------------------------------------------------- planning
    def _allowed(self, classes: np.ndarray) -> torch.Tensor:
        mask = torch.zeros(self.source.n_classes, dtype=torch.bool, device=self.device)
        mask[torch.from_numpy(classes)] = True
        return mask

    def _batches(self, indices: np.ndarray, epochs: int, augment: bool, gen: torch.Generator) -> list:
        """Prepared batches of ``epochs`` passes over ``indices``, a fresh random order each pass."""
        tokens, idx, bs = [], torch.from_numpy(indices), self.cfg.batch_size
        for _ in range(epochs):
            order = idx[torch.randperm(len(idx), generator=gen)].numpy()
            tokens += [self.source.prepare(order[s:s + bs], augment, gen) for s in range(0, len(order), bs)]
        return tokens

    def _draw_reset(self, gen: torch.Generator) -> torch.Tensor:
        """The generator state a head reset starts from; ``gen`` moves past its draws."""
        if self._scratch_head is None:
            self._scratch_head = copy.deepcopy(self.model.head).cpu()
        state = gen.get_state()
        reset_head_(self._scratch_head, gen)
        return state

    def _mixed_batches(self, tasks: list[PseudoTask], gen: torch.Generator) -> list:
        """Prepared batches of the joint schedule's mixed phase over ``U = ∪_t D_t``.

        Per inner epoch: a random order of ``U`` cut into the sequential epoch's sizes
        ``[min(B, |D_t| − s) for t in tasks for s in 0, B, 2B, …]`` (they sum to ``|U|``), augmented.
        """
        bs = self.cfg.batch_size
        sizes = [min(bs, len(t.indices) - s) for t in tasks for s in range(0, len(t.indices), bs)]
        cuts, union = np.cumsum([0] + sizes), torch.from_numpy(np.concatenate([t.indices for t in tasks]))
        tokens = []
        for _ in range(self.cfg.inner_epochs):
            order = union[torch.randperm(len(union), generator=gen)].numpy()
            tokens += [self.source.prepare(order[a:b], True, gen) for a, b in itertools.pairwise(cuts)]
        return tokens

    def _sequential_phases(self, r: int, drawn: PseudoGroup, group_mask: torch.Tensor,
                           gen: torch.Generator) -> list[_Phase]:
        """MePo's inner loop of repeat ``r``: each pseudo task for ``inner_epochs`` epochs, in order."""
        cfg, phases = self.cfg, []
        reset = self._draw_reset(gen) if cfg.head_reset == "per_sequence" else None
        for t, task in enumerate(drawn.tasks):
            if cfg.head_reset == "per_task":
                reset = self._draw_reset(gen)
            allowed = self._allowed(task.classes) if cfg.logit_mask == "current_task" else group_mask
            phases.append(_Phase(r, t, allowed, reset, self._batches(task.indices, cfg.inner_epochs, True, gen)))
            reset = None
        return phases

    def _mixed_phase(self, r: int, drawn: PseudoGroup, group_mask: torch.Tensor, gen: torch.Generator) -> _Phase:
        """The joint schedule's one phase of repeat ``r`` (reported as task 0), group mask, one head reset."""
        reset = self._draw_reset(gen) if self.cfg.head_reset != "none" else None
        return _Phase(r, 0, group_mask, reset, self._mixed_batches(drawn.tasks, gen))

    def _plan(self, group: PseudoGroup, gen: torch.Generator) -> list[_Phase]:
        """Every phase of one Reptile update, drawn from ``gen`` in training order."""
        cfg, group_mask, phases = self.cfg, self._allowed(group.classes), []
        for r in range(cfg.n_repeats):
            drawn = group if r == 0 or cfg.repeat_draws == "same" else self.sampler.group(group.meta_epoch,
                                                                                          group.group, repeat=r)
            if cfg.schedule == "joint":
                phases.append(self._mixed_phase(r, drawn, group_mask, gen))
            else:
                phases += self._sequential_phases(r, drawn, group_mask, gen)
            phases.append(_Phase(r, None, group_mask, None, self._batches(drawn.joint, 1, cfg.joint_augment, gen)))
        return phases

    # ----------------------------------------------------------------------------- training
    def _step(self, x: torch.Tensor, y: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """One SGD step on ``CE(mask(h(g(x))), y)``; returns ``[loss, accuracy]`` (no host sync).

        Under DDP (``W`` ranks) each rank takes its share of the global batch of ``B`` samples and minimises
        ``(W / B) Σ_local CE``: DDP averages the gradients over ranks, which gives the gradient of the global
        mean ``(1 / B) Σ CE`` even when the shares differ in size. It returns ``[Σ_local CE, correct, n_local]``.
        """
        if self.ddp is not None:
            return distributed.ddp_step(self, x, y, allowed)
        with self.amp.autocast():
            z = self.model(x)
        z = masked_logits(z.float(), self.cfg.logit_mask, allowed)
        loss = F.cross_entropy(z, y)
        self.amp.step(loss, self.opt)
        return torch.stack([loss.detach(), (z.argmax(1) == y).float().mean()])

    def meta_iteration(self, group: PseudoGroup, gen: torch.Generator, bar: Any = None,
                       callbacks: Iterable[Any] = ()) -> dict:
        """One Reptile update on ``group`` with the draws of ``gen``; returns its log entry.

        Callbacks (objects with any of these methods) see ``on_batch({"x", "y", "task", "repeat"})`` before
        every SGD step (``task`` is ``None`` in the joint pass, 0 in the mixed phase of ``schedule="joint"``) and
        ``on_reptile({"meta_epoch", "group"})`` right before the Reptile step; ``bar`` (a tqdm bar) is advanced
        by the steps taken. The entry's ``seq_loss``/``seq_acc`` average the sequential phases of the last repeat
        (with ``schedule="joint"``: its mixed phase).
        """
        cfg, start, callbacks = self.cfg, time.perf_counter(), list(callbacks)
        anchor = snapshot(self.params)
        if cfg.optimizer_state == "reset":
            self.opt.state.clear()
        plan = self._plan(group, gen)
        tokens = [tok for ph in plan for tok in ph.tokens]
        for ph in plan:
            ph.tokens = []  # the feed holds them now, and lets them go when it is exhausted
        feed = self.source.load(tokens, self.device)
        del tokens
        ends, stats = None, []
        for ph in plan:
            if ph.task == 0 and ph.repeat > 0 and cfg.repeats == "restart":
                with torch.no_grad():
                    torch._foreach_copy_(self.params, anchor)
            if ph.reset is not None:
                reset_head_(self.model.head, _generator(ph.reset))
            steps = []
            for x, y in itertools.islice(feed, ph.n_batches):
                if callbacks:
                    _emit(callbacks, "on_batch", {"x": x, "y": y, "task": ph.task, "repeat": ph.repeat})
                steps.append(self._step(x, y, ph.allowed))
            stats.append(torch.stack(steps))
            if bar is not None:
                bar.update(ph.n_batches)
            if ph.task is None and cfg.n_repeats > 1:  # a second copy only when several trajectory ends are averaged
                if ends is None:
                    ends = snapshot(self.params)
                else:
                    torch._foreach_add_(ends, [p.detach() for p in self.params])
        stats = distributed.global_stats(stats) if self.ddp is not None else stats
        if next(feed, None) is not None:  # also frees the feed's last batch before the Reptile step
            raise RuntimeError(f"{type(self.source).__name__} yielded more batches than planned")
        with torch.no_grad():
            moved = sum(float(torch.dist(p, a)) ** 2 for p, a in zip(self.params, anchor, strict=True)) ** 0.5
            if ends is not None:
                torch._foreach_div_(ends, cfg.n_repeats)
            _emit(callbacks, "on_reptile", {"meta_epoch": group.meta_epoch, "group": group.group})
            reptile_step_(self.params, anchor, cfg.meta_lr, ends)
        last = [np.mean(s.tolist(), axis=0) for s, ph in zip(stats, plan, strict=True) if ph.repeat == cfg.n_repeats - 1]
        seq_loss, seq_acc = np.mean(last[:-1], axis=0)
        return {"meta_epoch": group.meta_epoch, "group": group.group, "seq_loss": float(seq_loss),
                "seq_acc": float(seq_acc), "joint_loss": float(last[-1][0]), "joint_acc": float(last[-1][1]),
                "inner_distance": moved, "seconds": time.perf_counter() - start}

    def run(self, meta_epochs: int | None = None, callbacks: Iterable[Any] = (), progress: bool = True) -> None:
        """Train until ``meta_epochs`` (default ``cfg.meta_epochs``) meta-epochs are done, saving each.

        ``callbacks`` get ``on_group_end(entry)`` after every Reptile update and ``on_epoch_end`` after every
        meta-epoch, besides the per-step events of :meth:`meta_iteration`.
        """
        target, callbacks = self.cfg.meta_epochs if meta_epochs is None else meta_epochs, list(callbacks)
        if not (self.folder / "meta_0.pth").exists() and distributed.is_main():
            save_mepo_backbone(self.model.vit, self.folder / "meta_0.pth")
        steps = self.sampler.steps_per_group() * self.sampler.n_groups * max(0, target - self.done)
        bar = tqdm(total=steps, desc="MePo refinement", disable=not (progress and distributed.is_main()),
                   mininterval=1.0)
        self.model.train()
        for epoch in range(self.done, target):
            start = time.perf_counter()
            gen = torch.Generator().manual_seed(_epoch_seed(self.cfg.seed, epoch))
            for group in self.sampler.epoch(epoch):
                entry = self.meta_iteration(group, gen, bar, callbacks)
                self.log.append(entry)
                bar.set_postfix(loss=f"{entry['seq_loss']:.2f}", joint=f"{entry['joint_acc']:.2f}")
                _emit(callbacks, "on_group_end", entry)
            self.done, self.seconds = epoch + 1, self.seconds + time.perf_counter() - start
            self._save()
            distributed.barrier()  # a rank that resumes next reads a complete state.pt
            _emit(callbacks, "on_epoch_end", {"meta_epoch": self.done, "seconds": self.seconds})
        bar.close()
        self.model.eval()


def refinement_fields(cfg: dict) -> dict:
    """The fields that change the weights; ``schedule`` only when not the default ``"sequential"`` (so the
    records of refinements made before the field existed still match)."""
    return {k: v for k, v in cfg.items() if k not in ("meta_epochs", "cov_samples_per_class", "cov_augment")
            and not (k == "schedule" and v == "sequential")}


def _generator(state: torch.Tensor) -> torch.Generator:
    gen = torch.Generator()
    gen.set_state(state)
    return gen


def _epoch_seed(seed: int, epoch: int) -> int:
    """One torch seed per (seed, meta-epoch): augmentations and batch orders replay on resume."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def read_info(folder: str | Path) -> dict:
    """The ``info.json`` of a refinement folder (log, seconds, configuration)."""
    return json.loads((Path(folder) / "info.json").read_text())
