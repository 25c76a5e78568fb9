"""ECI: meta-learning from a pool of teachers through a dynamic pseudo dataset, with the adversarial switch.

Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning" (PURER), CVPR 2023,
arXiv 2303.11183; official ``main.py`` of Egg-Hu/PURER. Per meta-iteration k:

1. one generator step on the dynamic dataset X̂ (its own Adam):
   ``min_X̂  Σ_i L_inv(X̂_{C_i}; M_i)  −  s_k · λ_adv · L_outer(θ; T̂(X̂))`` with the switch ``s_k ∈ {0, 1}``
   and ``T̂(X̂)`` a fresh pseudo-episode drawn from the non-detached X̂ (the adversarial term pushes X̂ towards
   episodes the meta-learner finds hard);
2. one meta step: ``θ ← Adam(θ, ∇ Σ_{b=1..B} L_outer(θ; T̂_b(X̂.detach())))``;
3. the switch (:class:`mepo_lab.purer.switch.AdversarialSwitch`) reads the meta-batch's mean pseudo-episode accuracy:
   it fires at ``adv_start``, then after ``patience`` non-improvements.

X̂ improves slowly while θ trains, so the episodes drift from noise to teacher-consistent images: the curriculum.
EI is the same loop with the switch never on. Episodes mix classes of different teachers.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mepo_lab.purer.config import PurerConfig
from mepo_lab.purer.inversion import DynamicDataset, InversionLoss
from mepo_lab.purer.meta import MetaLearner
from mepo_lab.purer.switch import AdversarialSwitch
from mepo_lab.purer.teachers import Teacher


def meta_learner_of(cfg: PurerConfig) -> MetaLearner:
    """The meta-learner of ``cfg`` (MAML / ANIL / ProtoNet, inner steps and rate, order)."""
    return MetaLearner(cfg.meta_learner, cfg.inner_lr, cfg.inner_steps, cfg.first_order)


def _generator_loss(dyn: DynamicDataset, losses: Sequence[InversionLoss], groups: Sequence[list[int]],
                    gen: torch.Generator) -> tuple[torch.Tensor, float]:
    total, accs = 0.0, []
    for inv, group in zip(losses, groups):
        x, y = dyn.slice(group)
        loss, parts = inv(x, y, generator=gen)
        total, accs = total + loss, accs + [float(parts["acc"])]
    return total, float(np.mean(accs))


def meta_train(model: nn.Module, teachers: Sequence[Teacher], cfg: PurerConfig, k_shot: int, *, adversarial: bool,
               seed: int = 0, device: torch.device | str = "cpu", progress: bool = False,
               on_snapshot: Callable[[int, np.ndarray], None] | None = None) -> dict:
    """EI (``adversarial=False``) or ECI (``True``) for ``cfg.iterations`` meta-iterations; trains ``model`` in place.

    The dynamic dataset holds ``k_shot + q_query`` images per class of every teacher (class j of teacher i is row
    group ``offset_i + j``). Returns the log: per iteration the mean pseudo-episode accuracy, the outer loss, the
    teachers' accuracy on their slices and the inversion loss; ``fired`` (iterations whose generator step was
    adversarial); seconds. ``on_snapshot(k, uint8 images)`` receives X̂ every ``cfg.snapshot_every`` iterations.
    """
    device = torch.device(device)
    offsets = np.cumsum([0] + [len(t.classes) for t in teachers])
    groups = [list(range(offsets[i], offsets[i + 1])) for i in range(len(teachers))]
    size = int(getattr(model, "image_size", 32))
    dyn = DynamicDataset(int(offsets[-1]), k_shot + cfg.q_query, size, lr=cfg.generator_lr, seed=seed, device=device)
    losses = [InversionLoss(t.model.to(device), tv=cfg.tv, bn=cfg.bn, l2=cfg.l2, jitter=cfg.jitter) for t in teachers]
    learner, opt = meta_learner_of(cfg), torch.optim.Adam(model.parameters(), lr=cfg.outer_lr)
    switch, gen = AdversarialSwitch(cfg.adv_start, cfg.patience), torch.Generator().manual_seed(seed)
    model.to(device).train()
    log, fired, adversarial_next, start = [], [], False, time.perf_counter()
    for k in tqdm(range(cfg.iterations), desc="ECI" if adversarial else "EI", disable=not progress, mininterval=1):
        loss_g, teacher_acc = _generator_loss(dyn, losses, groups, gen)
        inv_value = float(loss_g.detach())
        if adversarial_next:
            outer, _ = learner.outer_loss(model, dyn.sample_episode(cfg.n_way, k_shot, cfg.q_query, gen, detach=False))
            loss_g = loss_g - cfg.adv_scale * outer
            fired.append(k)
        dyn.optimizer.zero_grad(set_to_none=True)
        loss_g.backward()
        dyn.optimizer.step()
        opt.zero_grad(set_to_none=True)  # the adversarial term left gradients on θ: a generator step never moves θ
        outs = [learner.outer_loss(model, dyn.sample_episode(cfg.n_way, k_shot, cfg.q_query, gen))
                for _ in range(cfg.meta_batch)]
        loss = torch.stack([o[0] for o in outs]).mean()
        loss.backward()
        opt.step()
        acc = float(np.mean([float(o[1]) for o in outs]))
        adversarial_next = switch.update(k, acc) if adversarial else False
        log.append({"iteration": k, "acc": acc, "loss": float(loss.detach()), "teacher_acc": teacher_acc,
                    "inversion": inv_value})
        if on_snapshot is not None and (k % cfg.snapshot_every == 0 or k == cfg.iterations - 1):
            on_snapshot(k, dyn.to_uint8())
    return {"log": log, "fired": fired, "seconds": time.perf_counter() - start}
