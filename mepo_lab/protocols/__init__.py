"""Evaluation protocols: how a continual learner is fed and scored.

* ``streams`` — Si-Blurry streams (:func:`si_blurry`: index arrays identical to the reference sampler) and
  ``stream_stats`` (their statistics, from indices only);
* ``online`` — the online GCL runner: one pass, ``online_iter`` updates per batch, anytime evaluation,
  atomic records and resume; ``learner`` — what the runner asks of a learner, and the logit masks;
* ``metrics`` — A_auc, A_last, A_avg, F_last, forgetting, BWT (pure functions); ``results`` — run records.
* ``transfer`` — zapping's transfer protocols: continual (one image per step), i.i.d. few-shot, zero-shot.
* ``task_incremental`` — tasks of disjoint classes (local labels, task ids known), the accuracy matrix, ACC, BWT.

Few-shot episodes join here with the method that needs them first (PURER).
"""
from __future__ import annotations

from mepo_lab.protocols.learner import Learner, StepContext, logit_mask
from mepo_lab.protocols.online import run_gcl
from mepo_lab.protocols.results import RunResult
from mepo_lab.protocols.streams import Stream, si_blurry

__all__ = ["Learner", "RunResult", "StepContext", "Stream", "logit_mask", "run_gcl", "si_blurry"]
