"""ICFIL — Inversion Calibration Following Inner Loop — as the lab reads it (**our interpretation**).

PURER (Hu et al., CVPR 2023, arXiv 2303.11183) adds ICFIL at meta-test only: after the inner loop on a real
support set S, the adapted model is "calibrated via inversion" to narrow the gap between the pseudo episodes it
was meta-trained on and real ones (abstract, Fig. 2 and Fig. 3 captions). No public code implements it (the
official ``main.py`` parses an ``--efil`` flag but uses it only in the run name), so the procedure is ours:

1. ``θ' = adapt(θ; S)`` (the meta-learner's own inner loop, from a zero N-way head);
2. invert ``θ'`` as a teacher: synthesise ``Ŝ`` (``per_class`` images per class) with PURER's inversion loss,
   the BatchNorm prior targeting the *batch statistics of S* (the support set is what the model sees of the new
   distribution);
3. variant ``A``: adapt again from θ on ``S ∪ Ŝ`` and predict the query; variant ``B``: continue from θ' on Ŝ
   (one inner pass at a tenth of the inner rate) and predict.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from mepo_lab.purer.inversion import DynamicDataset, InversionLoss
from mepo_lab.purer.meta import MetaLearner, maml_adapt, zero_head


def adapted_copy(model: nn.Module, learner: MetaLearner, support_x: torch.Tensor, support_y: torch.Tensor,
                 n_way: int) -> nn.Module:
    """A copy of ``model`` holding ``θ' = adapt(θ; S)`` (zero N-way head, first-order inner loop) whose BatchNorm
    running statistics are the batch statistics of S, in eval mode: the teacher ICFIL inverts."""
    if learner.kind == "protonet":
        raise ValueError("ICFIL inverts the adapted classifier head: use meta_learner='maml' or 'anil', not protonet")
    twin = copy.deepcopy(model).train()
    with torch.enable_grad():
        params = {k: p.detach().requires_grad_(True) for k, p in zero_head(twin, dict(twin.named_parameters()),
                                                                             n_way).items()}
        steps = learner.inner_steps if learner.test_steps is None else learner.test_steps
        fast = maml_adapt(twin, params, support_x, support_y, learner.inner_lr, steps, True)
    twin.head = nn.Linear(twin.head.in_features, n_way).to(support_x.device)
    twin.load_state_dict({k: v.detach() for k, v in fast.items()}, strict=False)
    for m in twin.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = 1.0  # one forward pass in train mode sets the running statistics to S's batch statistics
    with torch.no_grad():
        twin(support_x)
    return twin.eval().requires_grad_(False)


def synthesise(teacher: nn.Module, n_way: int, per_class: int, steps: int, image_size: int, *, tv: float = 1e-4,
               bn: float = 1e-2, l2: float = 1e-5, jitter: int = 2, lr: float = 0.25, seed: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``Ŝ``: ``per_class`` images per class inverted from ``teacher`` by ``steps`` Adam steps on PURER's loss."""
    device = next(teacher.parameters()).device
    dyn = DynamicDataset(n_way, per_class, image_size, lr=lr, seed=seed, device=device)
    inv, gen = InversionLoss(teacher, tv=tv, bn=bn, l2=l2, jitter=jitter), torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(steps):
            loss, _ = inv(dyn.images(), dyn.labels, generator=gen)
            dyn.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            dyn.optimizer.step()
    return dyn.images(detach=True), dyn.labels.clone()


def icfil_predictor(model: nn.Module, learner: MetaLearner, variant: str = "A", per_class: int = 5, steps: int = 30,
                    seed: int = 0) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(support_x, support_y, query_x) -> logits`` with ICFIL (variant ``A`` or ``B``) for ``evaluate_episodes``."""
    if variant not in ("A", "B"):
        raise ValueError(f"icfil variant must be 'A' or 'B', got {variant!r}")
    calls = [0]

    def predict(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        sx, sy, qx = sx.to(device), torch.as_tensor(sy).to(device), qx.to(device)
        n_way = len(torch.unique(sy))
        twin = adapted_copy(model, learner, sx, sy, n_way)
        calls[0] += 1
        fake_x, fake_y = synthesise(twin, n_way, per_class, steps, sx.shape[-1], seed=seed * 100003 + calls[0])
        if variant == "A":
            return learner.adapt_predict(model, torch.cat([sx, fake_x]), torch.cat([sy, fake_y]), qx, n_way)
        cont = MetaLearner(learner.kind, learner.inner_lr / 10, 1, True, head_init="meta")
        return cont.adapt_predict(twin.train().requires_grad_(True), fake_x, fake_y, qx, n_way)

    return predict
