"""The three pretraining regimes of the zapping paper, each with and without zapping.

Frati et al., "Reset It and Forget It" (ECAI 2024, arXiv 2310.07996), §4; official ``iid.py`` and ``anml.py``.

* **i.i.d.** (``iid``): shuffled minibatches, Adam. With zapping, at the start of every epoch ``e ≥ 1``
  (0-based) with ``e mod zap_every = 0``, ``zap_size`` random rows (all rows by default) are re-drawn.
* **ASB** (``asb``) and **Meta-ASB** (``meta``): episodes of :mod:`mepo_lab.zapping.episodes`, one random
  pretraining class each; the episode zaps that class's row when zapping is on.

Every regime records a learning curve: the held-out accuracy on the pretraining classes
(``pretrain_test``) at ``curve_points`` evenly spaced moments, and the mean training loss between them.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mepo_lab.device import flush_denormal
from mepo_lab.zapping.config import REGIMES, ZappingConfig
from mepo_lab.zapping.episodes import EPISODES, EpisodeData
from mepo_lab.zapping.models import ZapNet
from mepo_lab.zapping.operator import zap_

Evaluate = Callable[[ZapNet], float]


def parse_regime(regime: str) -> tuple[str, bool]:
    """``"asb_zap"`` → ``("asb", True)``; ValueError naming the valid regimes otherwise."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}: choose one of {', '.join(REGIMES)}")
    kind, _, zap = regime.partition("_")
    return kind, zap == "zap"


def _checkpoints(total: int, points: int) -> set[int]:
    """The steps after which the learning curve is measured: ``points`` evenly spaced, always the last."""
    points = max(1, min(points, total))
    return {round(total * (k + 1) / points) for k in range(points)}


def pretrain_iid(net: ZapNet, data: EpisodeData, cfg: ZappingConfig, gen: torch.Generator, zap: bool,
                 evaluate: Evaluate | None = None, progress: bool = False) -> list[dict]:
    """i.i.d. pretraining for ``cfg.iid_epochs`` epochs of Adam (``cfg.iid_lr``, batch ``cfg.iid_batch_size``).

    Zapping (``zap=True``): before epoch ``e ≥ 1`` with ``e mod cfg.zap_every = 0``, re-draw ``cfg.zap_size``
    random head rows (``None``: every row). Returns the learning curve (one record per measured epoch).
    """
    device = next(net.parameters()).device
    opt = torch.optim.Adam(net.parameters(), lr=cfg.iid_lr)
    marks, history, losses = _checkpoints(cfg.iid_epochs, cfg.curve_points), [], []
    n_out = net.head.out_features
    for epoch in tqdm(range(cfg.iid_epochs), desc="i.i.d.", leave=False, disable=not progress):
        if zap and epoch > 0 and cfg.zap_every > 0 and epoch % cfg.zap_every == 0:
            rows = None if cfg.zap_size is None else torch.randperm(n_out, generator=gen)[:cfg.zap_size]
            zap_(net.head, rows, official_fan=cfg.official_fan, generator=gen)
        net.train()
        for index in torch.randperm(len(data.y), generator=gen).split(cfg.iid_batch_size):
            loss = F.cross_entropy(net(data.x[index].to(device)), data.y[index].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if epoch + 1 in marks:
            history.append(_record(epoch + 1, losses, net, evaluate))
            losses = []
    return history


def pretrain_episodic(net: ZapNet, data: EpisodeData, cfg: ZappingConfig, gen: torch.Generator, kind: str,
                      zap: bool, evaluate: Evaluate | None = None, progress: bool = False) -> list[dict]:
    """ASB (``kind="asb"``, ``cfg.asb_episodes``) or Meta-ASB (``kind="meta"``, ``cfg.meta_episodes``): every
    episode draws one pretraining class uniformly; Adam (``cfg.outer_lr``) makes the batch steps."""
    episodes = cfg.asb_episodes if kind == "asb" else cfg.meta_episodes
    opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    marks, history, losses = _checkpoints(episodes, cfg.curve_points), [], []
    run = EPISODES[kind]
    net.train()
    for e in tqdm(range(episodes), desc="ASB" if kind == "asb" else "Meta-ASB", leave=False, disable=not progress):
        cls = int(torch.randint(data.n_classes, (1,), generator=gen))
        stats = run(net, data, cls, opt, gen, n_seq=cfg.n_seq, inner_lr=cfg.inner_lr, remember=cfg.remember,
                    zap=zap, inner_params=cfg.inner_params, official_fan=cfg.official_fan)
        losses.append(stats["batch_loss"])
        if e + 1 in marks:
            history.append(_record(e + 1, losses, net, evaluate))
            losses = []
            net.train()
    return history


def _record(step: int, losses: list[float], net: ZapNet, evaluate: Evaluate | None) -> dict:
    record = {"step": step, "loss": sum(losses) / max(1, len(losses))}
    if evaluate is not None:
        record["held_out_acc"] = evaluate(net)
    return record


def pretrain(net: ZapNet, data: EpisodeData, regime: str, cfg: ZappingConfig, seed: int,
             evaluate: Evaluate | None = None, progress: bool = False) -> dict:
    """Pretrain ``net`` in place with ``regime`` (one of :data:`REGIMES`); returns the curve and the time.

    All randomness (batch order, episode classes, trajectories, zapped rows and their values) comes from one
    generator seeded with ``seed``, so a run is reproducible on the CPU.
    """
    kind, zap = parse_regime(regime)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with flush_denormal():  # Adam's moments of rarely trained rows go subnormal: 15x slower CPU steps
        if kind == "iid":
            history = pretrain_iid(net, data, cfg, gen, zap, evaluate, progress)
        else:
            history = pretrain_episodic(net, data, cfg, gen, kind, zap, evaluate, progress)
    return {"regime": regime, "history": history, "seconds": time.perf_counter() - start}
