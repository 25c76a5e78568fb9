"""MePo's meta post-refinement: the bi-level Reptile loop over pseudo task sequences (notes §1.3).

For every group (meta-iteration) of every meta-epoch::

    θ0 ← θ                                           # anchor: one copy of backbone + head
    for t in pseudo tasks:  inner_epochs of SGD on D_t   (logits restricted to the group's classes)
    one epoch of SGD on the joint set D_joint
    θ ← θ0 + η (θ − θ0)                              # Reptile, in place

SGD with momentum 0.9 and two learning rates (backbone / head), a train augmentation in the
sequential phase. The switches of :mod:`mepo_lab.mepo.switches` pick the official or corrected
behaviour; ``head_reset`` re-initialises the head (zapping). After every meta-epoch the backbone is
saved in the released format (``meta_{e}.pth``: plain head-less timm state dict; ``meta_0.pth`` is
the untouched input) together with ``state.pt`` (head, optimiser, log), written atomically: a killed
run resumes from its last finished meta-epoch and ends with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mepo_lab import paths
from mepo_lab.backbones import normalize, save_mepo_backbone
from mepo_lab.config import MePoConfig
from mepo_lab.data.augment import train_augment
from mepo_lab.device import Amp
from mepo_lab.mepo.pseudo_tasks import PseudoGroup, PseudoTaskSampler
from mepo_lab.mepo.reptile import MetaModel, masked_logits, reptile_step_, reset_head_, snapshot
from mepo_lab.mepo.switches import resolve


def _emit(callbacks: Iterable[Any], event: str, entry: dict) -> None:
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(entry)


class MetaRefiner:
    """Runs the refinement of ``backbone`` on ``images``/``labels`` (uint8 pretraining set) into ``folder``."""

    def __init__(self, backbone: torch.nn.Module, images: np.ndarray, labels: np.ndarray, cfg: MePoConfig,
                 folder: str | Path, device: torch.device | str = "cpu") -> None:
        self.cfg, self.folder, self.device = resolve(cfg), Path(folder), torch.device(device)
        self.sampler = PseudoTaskSampler(labels, self.cfg)
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(np.asarray(labels, np.int64))
        with torch.random.fork_rng(devices=[]):  # the head's default init, reproducible, RNG untouched
            torch.manual_seed(self.cfg.seed)
            self.model = MetaModel(backbone, self.sampler.n_classes).to(self.device)
        head = [p for n, p in self.model.named_parameters() if n.startswith("head.")]
        body = [p for n, p in self.model.named_parameters() if not n.startswith("head.")]
        self.params = body + head
        self.opt = torch.optim.SGD([{"params": body, "lr": self.cfg.backbone_lr},
                                    {"params": head, "lr": self.cfg.head_lr}], momentum=self.cfg.momentum,
                                   foreach=True)
        self.log: list[dict] = []
        self.done, self.seconds = 0, 0.0
        self.amp = Amp(self.device)  # bf16/fp16 autocast on a GPU, plain fp32 on CPU

    # ----------------------------------------------------------------------------- checkpoints
    def config_record(self) -> dict:
        """The resolved configuration without ``meta_epochs`` (a longer run may extend a shorter one)."""
        return {k: v for k, v in asdict(self.cfg).items() if k != "meta_epochs"}

    def resume(self) -> bool:
        """Load ``state.pt`` if the folder holds a run of this configuration; False when starting fresh."""
        state_path = self.folder / "state.pt"
        if not state_path.exists():
            return False
        state = torch.load(state_path, map_location=self.device, weights_only=False)
        if state["config"] != self.config_record():
            raise ValueError(f"{self.folder} holds a refinement with another configuration; "
                             "use another folder or delete it to start over")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.done, self.log, self.seconds = state["meta_epoch"], state["log"], state["seconds"]
        return True

    def _save(self) -> None:
        save_mepo_backbone(self.model.vit, self.folder / f"meta_{self.done}.pth")
        state = {"meta_epoch": self.done, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "log": self.log, "config": self.config_record(), "seconds": self.seconds}
        paths.atomic_write(self.folder / "state.pt", lambda h: torch.save(state, h))
        paths.atomic_save_json(self.folder / "info.json", {"meta_epochs_done": self.done, "seconds": self.seconds,
                                                           "config": asdict(self.cfg), "log": self.log})

    # ----------------------------------------------------------------------------- training
    def _step(self, idx: torch.Tensor, allowed: torch.Tensor, augment: bool, gen: torch.Generator) -> tuple:
        x, y = self.images[idx], self.labels[idx].to(self.device)
        if augment:
            x = train_augment(x, gen)
        with self.amp.autocast():
            z = self.model(normalize(x.to(self.device)))
        z = masked_logits(z.float(), self.cfg.logit_mask, allowed)
        loss = F.cross_entropy(z, y)
        self.amp.step(loss, self.opt)
        return float(loss.detach()), float((z.argmax(1) == y).float().mean())

    def _phase(self, indices: np.ndarray, epochs: int, allowed: torch.Tensor, augment: bool,
               gen: torch.Generator, bar) -> tuple[float, float]:
        stats, idx = [], torch.from_numpy(indices)
        for _ in range(epochs):
            order = idx[torch.randperm(len(idx), generator=gen)]
            for start in range(0, len(order), self.cfg.batch_size):
                stats.append(self._step(order[start:start + self.cfg.batch_size], allowed, augment, gen))
                bar.update(1)
        return tuple(float(v) for v in np.mean(stats, axis=0))

    def _allowed(self, classes: np.ndarray) -> torch.Tensor:
        mask = torch.zeros(self.sampler.n_classes, dtype=torch.bool, device=self.device)
        mask[torch.from_numpy(classes)] = True
        return mask

    def _group(self, group: PseudoGroup, gen: torch.Generator, bar) -> dict:
        cfg, start = self.cfg, time.perf_counter()
        anchor = snapshot(self.params)
        if cfg.optimizer_state == "reset":
            self.opt.state.clear()
        ends = None
        group_mask = self._allowed(group.classes)
        for r in range(cfg.n_repeats):
            if r > 0 and cfg.repeats == "restart":
                torch._foreach_copy_(self.params, anchor)
            if cfg.head_reset == "per_sequence":
                reset_head_(self.model.head, gen)
            seq = []
            for task in group.tasks:
                if cfg.head_reset == "per_task":
                    reset_head_(self.model.head, gen)
                allowed = self._allowed(task.classes) if cfg.logit_mask == "current_task" else group_mask
                seq.append(self._phase(task.indices, cfg.inner_epochs, allowed, True, gen, bar))
            joint = self._phase(group.joint, 1, group_mask, cfg.joint_augment, gen, bar)
            if cfg.n_repeats > 1:  # a second copy only when the mean over several trajectory ends is needed
                if ends is None:
                    ends = snapshot(self.params)
                else:
                    torch._foreach_add_(ends, [p.detach() for p in self.params])
        with torch.no_grad():
            moved = sum(float(torch.dist(p, a)) ** 2 for p, a in zip(self.params, anchor)) ** 0.5
            if ends is not None:
                torch._foreach_div_(ends, cfg.n_repeats)
            reptile_step_(self.params, anchor, cfg.meta_lr, ends)
        seq_loss, seq_acc = np.mean(seq, axis=0)
        return {"meta_epoch": group.meta_epoch, "group": group.group, "seq_loss": float(seq_loss),
                "seq_acc": float(seq_acc), "joint_loss": joint[0], "joint_acc": joint[1],
                "inner_distance": moved, "seconds": time.perf_counter() - start}

    def run(self, meta_epochs: int | None = None, callbacks: Iterable[Any] = (), progress: bool = True) -> None:
        """Train until ``meta_epochs`` (default ``cfg.meta_epochs``) meta-epochs are done, saving each."""
        target = self.cfg.meta_epochs if meta_epochs is None else meta_epochs
        if not (self.folder / "meta_0.pth").exists():
            save_mepo_backbone(self.model.vit, self.folder / "meta_0.pth")
        steps = self.sampler.steps_per_group() * self.sampler.n_groups * max(0, target - self.done)
        bar = tqdm(total=steps, desc="MePo refinement", disable=not progress, mininterval=1.0)
        self.model.train()
        for epoch in range(self.done, target):
            start = time.perf_counter()
            gen = torch.Generator().manual_seed(_epoch_seed(self.cfg.seed, epoch))
            for group in self.sampler.epoch(epoch):
                entry = self._group(group, gen, bar)
                self.log.append(entry)
                bar.set_postfix(loss=f"{entry['seq_loss']:.2f}", joint=f"{entry['joint_acc']:.2f}")
                _emit(callbacks, "on_group_end", entry)
            self.done, self.seconds = epoch + 1, self.seconds + time.perf_counter() - start
            self._save()
            _emit(callbacks, "on_epoch_end", {"meta_epoch": self.done, "seconds": self.seconds})
        bar.close()
        self.model.eval()


def _epoch_seed(seed: int, epoch: int) -> int:
    """One torch seed per (seed, meta-epoch): augmentations and batch orders replay on resume."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def read_info(folder: str | Path) -> dict:
    """The ``info.json`` of a refinement folder (log, seconds, configuration)."""
    return json.loads((Path(folder) / "info.json").read_text())
