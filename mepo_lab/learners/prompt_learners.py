"""Prompt learners on a frozen ViT: ``l2p``, ``dualprompt`` and ``misa`` (``docs/reference/misa.md``,
``docs/reference/si_blurry.md#training``, ``#masks``).

All three train a linear head plus prompts (and keys) with Adam on images, with the loss
``CE(head(g(f_prompted)) + mask, y) + λ · mean(1 − cos(q, k_selected))``, where ``q`` is the frozen
backbone's CLS feature, ``f_prompted`` the prompted one and ``g`` MePo's output alignment (identity
when off) — applied to the prompted feature right before the classifier, never to the query.

* ``l2p`` (Wang et al., CVPR 2022, as in the MISA/MePo code): pool 10, top-5 prompts of 10 tokens after
  the CLS token, feature = mean of the prompt tokens' outputs. Official quirk: the key loss is computed but
  never stored, so it contributes 0 and the keys never move (``key_loss="official"``); ``"corrected"``
  trains them (λ = 0.5). Masks: the batch mask in training, the seen-class mask at evaluation.
* ``dualprompt`` (Wang et al., ECCV 2022, as in MISA): a general prompt (10 tokens at blocks 0-1) and an
  expert prompt (20 tokens at blocks 2-4) picked from a pool of 10 by key matching; during task ``t`` the
  match is restricted to key ``t`` (pool 10 / ``task_num`` 10), with the reference's routing quirk
  (``routing="official"``: training always uses expert slot 0). λ = 1. Masks: seen classes / none.
* ``misa`` (Kang et al., ICLR 2025): DualPrompt whose prompts start from ISA prompts (released tensors,
  or any given), keys left random (``load_prompts_only``), and the batch logit mask; no mask at eval.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mepo_lab.backbones.base import cls_features
from mepo_lab.data.normalization import WORLD_PREPROCESS, Preprocess
from mepo_lab.data.online_augment import OnlineAugment
from mepo_lab.device import Amp
from mepo_lab.learners.compiled import CompiledPass, check_compile, compile_wanted
from mepo_lab.learners.prompting import PromptPool, l2p_forward, prompt_tuning_forward
from mepo_lab.learners.queries import PASSES, QueryCache
from mepo_lab.protocols.learner import FeatureTransform, Learner, StepContext, logit_mask


class PromptLearner(Learner):
    """Shared machinery: frozen backbone, head, Adam over the trainable parts, masks, alignment."""

    input_kind = "images"
    train_mask: str | None = None  # the method's own masks (the runner uses them over GCLConfig's)
    eval_mask: str | None = None

    def __init__(self, backbone: nn.Module, lr: float = 5e-3, transform: FeatureTransform | None = None,
                 lambd: float = 1.0, preprocess: Preprocess = WORLD_PREPROCESS, amp: bool = True,
                 augment: OnlineAugment | None = None, query_bank: torch.Tensor | None = None,
                 query_cache: bool = True, compile: str = "auto", compile_mode: str = "default") -> None:
        check_compile(compile, compile_mode)
        self.compile, self.compile_mode = compile, compile_mode  # mepo_lab.learners.compiled
        self.vit, self.lr, self.transform, self.lambd = backbone, lr, transform, lambd
        self.pre, self.use_amp, self.task = preprocess, amp, 0
        self.augment = OnlineAugment("flip", "sample") if augment is None else augment
        # evaluation queries: the frozen backbone's CLS feature of each test image never changes during a run
        self.query_bank, self.query_cache = query_bank, query_cache
        self.passes = dict.fromkeys(PASSES, 0)

    @property
    def eval_backbone(self) -> nn.Module:
        return self.vit

    def build_prompts(self, dim: int) -> nn.Module:
        raise NotImplementedError

    def prompted(self, x: torch.Tensor, query: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompted feature, key-matching distance ``1 − cos(q, k)``) for a normalised batch."""
        raise NotImplementedError

    #: The prompted backbone pass ``fn(vit, x, prompts)`` (compiled on a GPU, see :meth:`setup`).
    backbone_pass = staticmethod(prompt_tuning_forward)
    compile_backend = "inductor"  # torch.compile's backend when compiling (tests use "aot_eager")

    def setup(self, n_classes: int, in_dim: int, device: torch.device) -> None:
        self.n_classes, self.device = n_classes, device
        self.vit = self.vit.to(device).eval()
        for p in self.vit.parameters():
            p.requires_grad_(False)
        dim = int(self.vit.num_features)
        self.prompts = self.build_prompts(dim).to(device)
        self.head = nn.Linear(dim, n_classes).to(device)
        params = list(self.head.parameters()) + [p for p in self.prompts.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=self.lr, fused=device.type == "cuda" or None)  # CPU: as before
        self.amp = Amp(device, self.use_amp)
        on = compile_wanted(self.compile, device)
        opts = {"enabled": on, "mode": self.compile_mode, "backend": self.compile_backend}
        self.query_pass = CompiledPass(cls_features, name="query", **opts)
        self.prompted_pass = CompiledPass(self.backbone_pass, name="prompted", **opts)
        self.queries = QueryCache(self.query_bank, device) if self.query_cache or self.query_bank is not None else None

    def begin_task(self, task: int) -> None:
        """DualPrompt/MISA restrict key matching to the current task's slot while training."""
        self.task = task

    def _query(self, x: torch.Tensor, slot: str = "eval") -> torch.Tensor:
        """The frozen backbone's CLS feature of a normalised batch (no gradient)."""
        with self.amp.autocast(), torch.no_grad():
            return self.query_pass(self.vit, x, slot=slot)

    def _forward(self, x: torch.Tensor, training: bool, update: bool = False,
                 query: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        query = self._query(x, "train" if training else "eval") if query is None else query
        with self.amp.autocast():
            feat, dist = self.prompted(x, query, training)
        feat = self.train_features(feat.float(), update) if training else self.eval_features(feat.float())
        return self.head(feat), dist.float()

    def observe(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        x = x.to(self.device)
        mask = logit_mask(ctx.train_mask, self.n_classes, ctx.n_seen, y, self.device)
        for i in range(ctx.online_iter):  # every update re-augments the batch (si_blurry.md#training)
            self.query_pass.step_begin()
            # the alignment's running statistics count each new sample once: on the first pass only
            z, dist = self._forward(self.pre(x, self.augment), training=True, update=i == 0)
            loss = F.cross_entropy(z if mask is None else z + mask, y) + self.lambd * dist.mean()
            self.amp.step(loss, self.opt)
            self._count(train_query=len(x), train_forward=len(x), train_backward=len(x))
        return {"loss": loss.detach()}

    def _count(self, **passes: int) -> None:
        for key, n in passes.items():
            self.passes[key] += int(n)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of test images, the query computed afresh (what :meth:`eval_logits` caches)."""
        self._count(eval_query=len(x), eval_forward=len(x))
        self.query_pass.step_begin()
        return self._forward(self.pre(x.to(self.device)), training=False)[0]

    @torch.no_grad()
    def eval_logits(self, x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Scores of the test set's rows ``rows``: queries from the bank, or computed once per test image per run."""
        if self.queries is None:
            return self.logits(x)
        x = self.pre(x.to(self.device))
        self.query_pass.step_begin()
        query, computed = self.queries.get(rows, x, self._query)
        self._count(eval_query=computed, eval_forward=len(x))
        return self._forward(x, training=False, query=query)[0]

    def state_dict(self) -> dict:
        return {"prompts": self.prompts.state_dict(), "head": self.head.state_dict(), "opt": self.opt.state_dict(),
                "task": self.task, "transform": self._transform_state(), "passes": dict(self.passes)}

    def load_state_dict(self, state: dict) -> None:
        self.prompts.load_state_dict(state["prompts"])
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])
        self.task = state["task"]
        self._load_transform_state(state["transform"])
        self.passes = dict.fromkeys(PASSES, 0) | state.get("passes", {})

    def describe(self) -> dict:
        return {"name": self.name, "lr": self.lr, "lambda": self.lambd, "optimizer": "Adam",
                "train_mask": self.train_mask, "eval_mask": self.eval_mask, "preprocess": self.pre.id,
                "augment": self.augment.id, "compile": self.compile, "compile_mode": self.compile_mode,
                "precision": self.amp.describe() if hasattr(self, "amp") else None,
                "transform": getattr(self.transform, "name", None)}


class L2PLearner(PromptLearner):
    """Learning to Prompt: a key–query pool of prompts inserted after the CLS token."""

    name, train_mask, eval_mask = "l2p", "batch", "seen"
    backbone_pass = staticmethod(l2p_forward)

    def __init__(self, backbone: nn.Module, pool: int = 10, top_k: int = 5, length: int = 10,
                 key_loss: str = "official", lambd: float = 0.5, **kwargs) -> None:
        if key_loss not in ("official", "corrected"):
            raise ValueError(f"key_loss must be 'official' or 'corrected', got {key_loss!r}")
        super().__init__(backbone, lambd=lambd if key_loss == "corrected" else 0.0, **kwargs)
        self.pool, self.top_k, self.length, self.key_loss = pool, top_k, length, key_loss

    def build_prompts(self, dim: int) -> nn.Module:
        return PromptPool(self.pool, self.length, dim)

    def prompted(self, x, query, training):
        dist, chosen, _ = self.prompts.select(query, self.top_k)
        return self.prompted_pass(self.vit, x, chosen.flatten(1, 2), slot="train" if training else "eval"), dist

    def describe(self) -> dict:
        return super().describe() | {"pool": self.pool, "top_k": self.top_k, "key_loss": self.key_loss}


def prompt_layers(depth: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(G-prompt blocks, E-prompt blocks): the reference's (0, 1) and (2, 3, 4) for depth ≥ 5; scaled down
    for the micro ViT (G at block 0, E at the blocks after it, both at block 0 for a single block)."""
    if depth >= 5:
        return (0, 1), (2, 3, 4)
    return (0,), tuple(range(1, depth)) or (0,)


class DualPromptLearner(PromptLearner):
    """DualPrompt with prompt tuning: G-prompt at ``g_layers``, E-prompt (pool) at ``e_layers``."""

    name, train_mask, eval_mask = "dualprompt", "seen", "none"

    def __init__(self, backbone: nn.Module, g_layers: tuple[int, ...] | None = None, g_length: int = 10,
                 e_layers: tuple[int, ...] | None = None, e_length: int = 20, pool: int = 10, task_num: int = 10,
                 routing: str = "official", prompts: tuple[torch.Tensor, torch.Tensor] | None = None,
                 isa: bool = False, **kwargs) -> None:
        super().__init__(backbone, **kwargs)
        self.isa = isa  # MISA's initial session: every expert prompt competes, no task window
        depth = len(backbone.blocks)
        default_g, default_e = prompt_layers(depth)
        g_layers, e_layers = tuple(g_layers or default_g), tuple(e_layers or default_e)
        if max(g_layers + e_layers) >= depth:
            raise ValueError(f"prompt layers {g_layers + e_layers} do not fit a ViT of depth {depth}")
        self.g_layers, self.e_layers, self.g_length, self.e_length = g_layers, e_layers, g_length, e_length
        self.pool, self.per_task, self.routing, self.init = pool, max(1, pool // task_num), routing, prompts

    def build_prompts(self, dim: int) -> nn.Module:
        module = nn.Module()
        module.g = nn.Parameter(torch.empty(1, len(self.g_layers) * self.g_length, dim).uniform_(-1, 1))
        module.e = PromptPool(self.pool, len(self.e_layers) * self.e_length, dim)
        if self.init is not None:  # ISA prompts (MISA): prompts only, keys stay random
            e, g = self.init
            with torch.no_grad():
                module.e.prompts.copy_(e.reshape(module.e.prompts.shape))
                module.g.copy_(g.reshape(module.g.shape))
        return module

    def prompted(self, x, query, training):
        start = self.task * self.per_task
        window = (start, start + self.per_task) if training and start < self.pool and not self.isa else None
        dist, chosen, _ = self.prompts.e.select(query, 1, window, self.routing)
        b, dim = len(x), self.prompts.g.shape[-1]
        g = self.prompts.g.expand(b, -1, -1).reshape(b, len(self.g_layers), self.g_length, dim)
        e = chosen[:, 0].reshape(b, len(self.e_layers), self.e_length, dim)
        layers: dict[int, list[torch.Tensor]] = {}
        for j, i in enumerate(self.g_layers):
            layers.setdefault(i, []).append(g[:, j])
        for j, i in enumerate(self.e_layers):
            layers.setdefault(i, []).append(e[:, j])
        return self.prompted_pass(self.vit, x, layers, slot="train" if training else "eval"), dist

    def describe(self) -> dict:
        return super().describe() | {"routing": self.routing, "pool": self.pool, "isa_prompts": self.init is not None}


class MISALearner(DualPromptLearner):
    """MISA: DualPrompt + ISA prompt initialisation + the batch logit mask (no mask at evaluation)."""

    name, train_mask, eval_mask = "misa", "batch", "none"

    def __init__(self, backbone: nn.Module, prompts: tuple[torch.Tensor, torch.Tensor] | None = None,
                 **kwargs) -> None:
        if prompts is None:
            raise ValueError("misa needs ISA prompts (e_prompt, g_prompt): the released tensors via "
                             "mepo_lab.mepo.releases.mepo_artifacts for ViT-B/16, or mepo_lab.isa.isa_prompts "
                             "for the micro ViT; without them use learner 'dualprompt'")
        super().__init__(backbone, prompts=prompts, **kwargs)
