"""ISA-lite: initial-session prompt adaptation for backbones without released ISA prompts.

MISA (Kang et al., ICLR 2025; docs/reference/misa.md#isa) warms its DualPrompt prompts up on pretraining data
before any continual session ("initial session adaptation"): a 10-task disjoint stream of ImageNet
classes with all 10 expert prompts competing for every sample, a residual projector on the prompts and
a SAM-like optimiser (FAM) whose ascent step uses held-out classes. The released ``e_prompt.pt`` /
``g_prompt.pt`` are the result for ViT-B/16.

For the micro ViT there is nothing released, so ``isa_prompts`` runs the same *shape* of procedure with
the lab's own pieces — a disjoint stream over the pretraining classes, DualPrompt with every key
competing (``isa=True``), Adam — and **without** the projector and FAM. That is a named deviation
(docs/fidelity.md): the prompts are warmed up, not ISA-trained. The result is cached under
``<data home>/isa/``, keyed by the backbone and the settings.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import torch

from mepo_lab import paths
from mepo_lab.backbones.base import Backbone
from mepo_lab.config import Preset
from mepo_lab.data.synthetic import SyntheticWorld
from mepo_lab.learners.prompt_learners import DualPromptLearner
from mepo_lab.protocols.online import run_gcl
from mepo_lab.protocols.streams import si_blurry


def isa_prompts(preset: Preset, backbone: Backbone, data_home: str | Path | None = None, *, per_class: int = 20,
                n_tasks: int = 10, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(e_prompt, g_prompt)`` warmed up on the pretraining classes (shapes ``(10, 3·20, d)``, ``(1, 2·10, d)``).

    ``backbone`` is the pretrained micro ViT; the stream is disjoint (N = 100, M = 0,
    fixed variant when the classes split evenly, else stochastic) over ``per_class`` images per class.
    """
    world = SyntheticWorld(preset.world)
    n_classes = len(world.pretrain_classes)
    n_tasks = min(n_tasks, n_classes)
    key = json.dumps([backbone.weights_hash, preset.world.seed, per_class, n_tasks, preset.gcl.lr], sort_keys=True)
    path = paths.subdir("isa", data_home) / f"isa_{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state["e"], state["g"]
    data = world.dataset("pretrain", "train", per_class=per_class)
    stream = si_blurry(data.targets, n_tasks=n_tasks, n=100, m=0, seed=preset.pretrain.seed,
                       stochastic=n_classes % n_tasks != 0)
    learner = DualPromptLearner(backbone.model, lr=preset.gcl.lr, isa=True)
    images = torch.from_numpy(data.images)
    cfg = replace(preset.gcl, online_iter=1, eval_period=10**12, train_mask="seen")
    run_gcl(learner, images, images[:1], data.targets[:1], stream, cfg, train_seed=preset.pretrain.seed,
            progress=progress)
    e, g = learner.prompts.e.prompts.detach().cpu(), learner.prompts.g.detach().cpu()
    paths.atomic_write(path, lambda h: torch.save({"e": e, "g": g}, h))
    return e, g
