"""BECAME (Li et al., "BECAME: BayEsian Continual Learning with Adaptive Model MErging", ICML 2025,
arXiv 2504.02666): gradient projection (GPM), unconstrained retraining and a Fisher-weighted closed-form merge.

``gpm`` (representation matrices, the memory, gradient projection; Saha et al., ICLR 2021), ``fisher`` (diagonal
Fisher), ``merge`` (the closed-form coefficient), ``models`` (multi-head AlexNet and micro ViT), ``strategy`` (the
six methods as task-incremental strategies), ``config`` (presets), ``run`` (methods x seeds behind
``mepo-lab became``). The task-incremental protocol lives in :mod:`mepo_lab.protocols.task_incremental`.
"""
