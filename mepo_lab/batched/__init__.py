"""Grids of feature-cached GCL runs as one batched program (the runs stacked along a leading axis).

:func:`run_batched` takes :class:`FeatureJob` s (a ``linear`` or ``ncm`` learner, cached features, a stream, a
seed) and returns the records :func:`mepo_lab.protocols.online.run_gcl` would return, run for run, in a fraction
of the time: :mod:`~mepo_lab.batched.plan` (each run's schedule, computed up front),
:mod:`~mepo_lab.batched.transforms` (MePo's alignments, batched), :mod:`~mepo_lab.batched.heads` (the heads,
batched), :mod:`~mepo_lab.batched.runner` (the lockstep program).
"""
from mepo_lab.batched.plan import RunPlan, build_plan, plan_for
from mepo_lab.batched.runner import FeatureJob, run_batched

__all__ = ["FeatureJob", "RunPlan", "build_plan", "plan_for", "run_batched"]
