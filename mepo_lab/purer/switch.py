"""PURER's gradient switch: when the next generator step on the dynamic dataset is adversarial.

Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning" (CVPR 2023,
arXiv 2303.11183), Fig. 3: "the real-time feedback of the meta model controls the Gradient Switch".
Official code Egg-Hu/PURER ``main.py`` (``adv_update``, ``maxAcc``, ``e_count``): with ``a_k`` the mean
pseudo-episode accuracy of meta-iteration ``k``, the switch fires once at ``k = adv_start``; for
``k > adv_start`` it keeps a running maximum ``m`` of ``a_k`` and a counter ``c`` of iterations with
``a_k ≤ m``; an improvement sets ``m = a_k, c = 0``; when ``c`` reaches ``patience`` (official 6) it fires and
resets (the maximum restarts from the next accuracy). A firing makes exactly one generator step minimise
``L_inv − λ_adv · L_outer`` instead of ``L_inv``.
"""
from __future__ import annotations

from numbers import Integral


class AdversarialSwitch:
    """Feedback-driven switch; call :meth:`update` once per meta-iteration, with increasing iterations."""

    def __init__(self, adv_start: int, patience: int = 6) -> None:
        if not isinstance(adv_start, Integral) or adv_start < 0:
            raise ValueError(f"adv_start must be an integer >= 0 (got {adv_start!r}): the meta-iteration of the "
                             "first adversarial step (official 4000)")
        if not isinstance(patience, Integral) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1 (got {patience!r}): the number of non-improving "
                             "meta-iterations before the switch fires (official 6)")
        self.adv_start = int(adv_start)
        self.patience = int(patience)
        self.best: float | None = None
        self.bad = 0
        self.fired: list[int] = []
        self._last: int | None = None

    def update(self, iteration: int, acc: float) -> bool:
        """Feed meta-iteration ``k = iteration`` and its accuracy; True when the NEXT generator step must be
        adversarial. Rule: fire if ``k = adv_start``; for ``k > adv_start``: if ``m`` is unset or ``acc > m``
        then ``m, c = acc, 0``, else ``c += 1`` and, when ``c = patience``, fire and unset ``m``, ``c = 0``."""
        if self._last is not None and iteration <= self._last:
            raise ValueError(f"iterations must increase (got {iteration} after {self._last}): call update once "
                             "per meta-iteration")
        self._last = iteration
        acc = float(acc)
        fire = False
        if iteration == self.adv_start:
            fire = True
        elif iteration > self.adv_start:
            if self.best is None or acc > self.best:
                self.best, self.bad = acc, 0
            else:
                self.bad += 1
                if self.bad == self.patience:
                    fire, self.best, self.bad = True, None, 0
        if fire:
            self.fired.append(iteration)
        return fire
