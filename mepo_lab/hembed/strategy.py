"""HNET, HNET with a random guide and HNET with the H-embedding guide as task-incremental strategies.

Wu et al., "H-embedding guided hypernetworks for continual learning", NeurIPS 2025, arXiv 2502.11609 (official
review code ``cifar/train/train_Hemb.py``), on HyperCL (von Oswald et al., ICLR 2020, arXiv 1906.00695). A
hypernetwork ``h(e_t, Θ)`` generates the weights of a 2-layer head on frozen backbone features; one embedding
``e_t`` is stored per task. For task ``t`` (0-based), every minibatch:

1. ``L = CE(head(f; h(e_t, Θ)), y) + L_emb`` with ``L_emb = min(β_emb·t, 1)·(1 − cos(Dec(z_t), ê_t))`` only when
   a guide ``ê_t`` exists (t ≥ 2; H-embedding or random);
2. backward; step ``e_t`` (its own Adam) and the decoder;
3. ``ΔΘ`` = the step Θ's Adam would take now (lookahead); add the gradient of
   ``β·(1/t) Σ_{t'<t} ‖h(e_{t'}, Θ + ΔΘ) − W*_{t'}‖²`` (``W*`` stored before task t); step Θ.

The guide: H-scores ``H_i = H(features of h(e_i) on task-t data, y_t)`` for i < t, target distances, and the
placement of :func:`mepo_lab.hembed.embedding.h_embedding`. ``hnet_random_guide`` places the guide from
uniform random scores instead (our reading of the official ``--emb_metric random``); ``hnet`` has no guide.
The target (a head on frozen features, a LoRA'd ViT or a ResNet-32: :mod:`mepo_lab.hembed.targets`) uses the
generated values through a fixed gain and offset per tensor; the regulariser acts on the generated values.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from mepo_lab.backbones.base import cls_features
from mepo_lab.backbones.zoo import normalization_stats
from mepo_lab.data.normalization import WORLD_PREPROCESS
from mepo_lab.hembed.config import GUIDES, HembedConfig
from mepo_lab.hembed.embedding import h_embedding
from mepo_lab.hembed.hscore import h_score
from mepo_lab.hembed.hypernet import ChunkedHypernet, EmbDecoder, emb_loss
from mepo_lab.hembed.regularizer import delta_theta, hypercl_reg, store_targets
from mepo_lab.hembed.resnet import ResNet32
from mepo_lab.hembed.targets import LoRAViT, MlpTarget, ModuleTarget
from mepo_lab.protocols.task_incremental import Task
from mepo_lab.protocols.transfer import to_input


def make_target(cfg: HembedConfig, backbone: torch.nn.Module | None, n_out: int, featurize=None):
    """The target of ``cfg.target`` (see :mod:`mepo_lab.hembed.targets`); ``backbone`` is the frozen ViT (None for
    ``resnet32``), ``featurize`` the frozen-feature function of ``mlp``."""
    if cfg.target == "mlp":
        return MlpTarget(featurize, int(backbone.num_features), cfg.hidden, n_out)
    if cfg.target == "resnet32":
        return ModuleTarget(ResNet32(n_out))
    vit = copy.deepcopy(backbone)  # LoRA modules are inserted in place: never into the caller's backbone
    micro = cfg.backbone in ("pretrained", "random")
    stats = {"mean": WORLD_PREPROCESS.mean, "std": WORLD_PREPROCESS.std} if micro else \
        normalization_stats(vit, mode="backbone")
    return ModuleTarget(LoRAViT(vit, n_out, cfg.lora_rank, cfg.lora_blocks, stats["mean"], stats["std"],
                                cfg.precision))


class HnetStrategy:
    """One of :data:`mepo_lab.hembed.config.METHODS` with the target of ``cfg.target``; ``train_task`` /
    ``predict`` for :func:`mepo_lab.protocols.task_incremental.run_task_incremental`."""

    def __init__(self, backbone: torch.nn.Module | None, n_classes: list[int], method: str, cfg: HembedConfig,
                 seed: int = 0, device: torch.device | str = "cpu"):
        if method not in GUIDES:
            raise ValueError(f"unknown method {method!r}: choose one of {', '.join(GUIDES)}")
        self.device, self.cfg, self.guide_kind = torch.device(device), cfg, GUIDES[method]
        if backbone is not None:
            backbone = backbone.eval().requires_grad_(False).to(self.device)
        self.backbone, self.n_classes = backbone, list(n_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.target = make_target(cfg, backbone, max(self.n_classes), self.features)
        if isinstance(self.target, ModuleTarget):
            self.target.module.to(self.device)
        self.hnet = ChunkedHypernet(self.target.shapes, len(self.n_classes), cfg.temb, cfg.cemb, cfg.chunk,
                                    cfg.hnet_hidden, seed).to(self.device)
        self.seed, self.decoder = seed, None
        self.gen = torch.Generator().manual_seed(seed)  # batch order: the same for every method of a seed
        self.guide_gen = torch.Generator().manual_seed(seed + 7919)  # the guide's draws, apart from the batches
        self.guides: dict[int, torch.Tensor] = {}
        self.scores: dict[int, list[float]] = {}
        self.snapshots: dict[int, torch.Tensor] = {}  # flat h(e_t) right after task t
        self.initial_embs = [e.detach().cpu().clone() for e in self.hnet.task_embs]

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen CLS features of float images in [0, 1] (normalised as the world's preprocessing does)."""
        mean = torch.tensor(WORLD_PREPROCESS.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(WORLD_PREPROCESS.std, device=self.device).view(1, 3, 1, 1)
        out = [cls_features(self.backbone, (x[i:i + 512].to(self.device) - mean) / std) for i in range(0, len(x), 512)]
        return torch.cat(out).float()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What the target trains on, for float images in [0, 1], on the device (frozen features or images)."""
        return self.target.prepare(x.to(self.device))

    def weights(self, task: int) -> list[torch.Tensor]:
        """The target weights of ``task``: ``offset + gain · h(e_task, Θ)`` per tensor (see ``targets``)."""
        return [o + w * g for w, g, o in zip(self.hnet(task), self.target.gains, self.target.offsets)]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Logits of task ``task`` (the task id is known at test time)."""
        return self.target.logits(self.weights(task), self.prepare(x))[:, :self.n_classes[task]]

    @torch.no_grad()
    def hidden_features(self, source: int, inputs: torch.Tensor) -> torch.Tensor:
        """Penultimate features of task ``source``'s generated target on prepared inputs (what the H-score sees),
        in batches of 256."""
        w = self.weights(source)
        return torch.cat([self.target.hidden(w, inputs[i:i + 256]) for i in range(0, len(inputs), 256)])

    def guide(self, t: int, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """``ê_t`` for t ≥ 2 (None otherwise or for plain HNET): placed from H-scores of the earlier generated
        heads on up to ``emb_data_size`` samples of task t (or from random scores)."""
        cfg = self.cfg
        if self.guide_kind == "none" or t < 2:
            return None
        keep = torch.randperm(len(y), generator=self.guide_gen)[:cfg.emb_data_size]
        if self.guide_kind == "hembedding":
            scores = [h_score(self.hidden_features(i, f[keep]), y[keep].numpy()) for i in range(t)]
        else:
            scores = torch.rand(t, generator=self.guide_gen).tolist()
        self.scores[t] = [float(s) for s in scores]
        prev = torch.stack([self.hnet.task_embs[i].detach().cpu() for i in range(t)])
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.guide_gen))
        guide = h_embedding(prev, scores, cfg.emb_mode, cfg.emb_eps, cfg.emb_iters, cfg.emb_lr, seed)
        self.guides[t] = guide.to(self.device)
        return self.guides[t]

    def train_task(self, task: Task) -> dict:
        """Train ``e_t``, Θ (and the decoder) on ``task`` with the task loss, the guide loss and HyperCL."""
        cfg, t = self.cfg, task.index
        f = self.prepare(to_input(task.train.images))
        y = torch.from_numpy(np.asarray(task.train.targets)).long()
        targets = store_targets(self.hnet, list(range(t))) if t > 0 and cfg.beta > 0 else {}
        guide = self.guide(t, f, y)
        theta = self.hnet.theta()
        theta_opt = torch.optim.Adam(theta, lr=cfg.lr)
        emb_opt = torch.optim.Adam([self.hnet.task_embs[t]], lr=cfg.temb_lr or cfg.lr)
        dec_opt = None
        if guide is not None:  # a fresh decoder per task, trained by Adam at emb_lr (official train_Hemb.py)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed * 1000 + t)
                self.decoder = EmbDecoder(self.hnet.z_dim, cfg.temb, cfg.dec_mid).to(self.device)
            dec_opt = torch.optim.Adam(self.decoder.parameters(), lr=cfg.emb_lr)
        y_dev = y.to(self.device)
        losses = []
        for _ in range(cfg.epochs):
            for index in torch.randperm(len(y), generator=self.gen).split(cfg.batch_size):
                index = index.to(self.device)
                if len(index) < 2 and isinstance(self.target, ModuleTarget):
                    continue  # BatchNorm with batch statistics cannot normalise one image
                loss = F.cross_entropy(self.target.logits(self.weights(t), f[index])[:, :self.n_classes[t]],
                                       y_dev[index])
                if guide is not None:
                    loss = loss + emb_loss(self.decoder, self.hnet.hidden_z(t), guide, t, cfg.emb_beta)
                for opt in (theta_opt, emb_opt, dec_opt):
                    if opt is not None:
                        opt.zero_grad(set_to_none=True)
                loss.backward()
                emb_opt.step()
                if dec_opt is not None:
                    dec_opt.step()
                if targets:
                    delta = delta_theta(theta_opt, theta) if cfg.lookahead else None
                    (cfg.beta * hypercl_reg(self.hnet, targets, delta=delta)).backward()
                theta_opt.step()
                losses.append(float(loss.detach()))
        self.snapshots[t] = self.hnet.flat(self.hnet(t)).detach().clone()
        return {"task": t, "loss": float(np.mean(losses[-max(1, len(losses) // cfg.epochs):])),
                "scores": self.scores.get(t), "guide": guide is not None}

    @torch.no_grad()
    def drift(self) -> list[float]:
        """``‖h(e_i) now − h(e_i) after task i‖ / ‖h(e_i) after task i‖`` for every trained task i."""
        return [float((self.hnet.flat(self.hnet(i)) - w).norm() / w.norm()) for i, w in sorted(self.snapshots.items())]

    @torch.no_grad()
    def score_matrix(self, tasks: list[Task]) -> np.ndarray:
        """``H[i, j]``: H-score of task i's generated head on up to ``emb_data_size`` training samples of task j."""
        out = np.full((len(tasks), len(tasks)), np.nan)
        for j, task in enumerate(tasks):
            f = self.prepare(to_input(task.train.images[:self.cfg.emb_data_size]))
            y = np.asarray(task.train.targets[:self.cfg.emb_data_size])
            for i in range(len(tasks)):
                out[i, j] = h_score(self.hidden_features(i, f), y)
        return out
