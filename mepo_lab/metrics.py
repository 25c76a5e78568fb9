"""Stable import path of the continual-learning metrics (the code lives in :mod:`mepo_lab.protocols.metrics`).

``from mepo_lab.metrics import a_auc, a_last, a_avg, f_last`` keeps working; definitions, formulas and
references are in :mod:`mepo_lab.protocols.metrics` and ``docs/reference/metrics.md``.
"""
from mepo_lab.protocols.metrics import (
                                        F_LAST_UNDEFINED,
                                        a_auc,
                                        a_avg,
                                        a_last,
                                        accuracy_matrix,
                                        bwt,
                                        f_last,
                                        forgetting_max,
                                        summarize,
)

__all__ = ["F_LAST_UNDEFINED", "a_auc", "a_avg", "a_last", "accuracy_matrix", "bwt", "f_last", "forgetting_max",
           "summarize"]
