"""MePo's output alignment for many runs at once: the official and corrected transforms, batched over runs.

The same formulas as :mod:`mepo_lab.mepo.alignment` (``docs/reference/mepo.md#alignment``), with every
per-run quantity stacked along a leading run axis::

    official :  μ, C of each run's batch;  L = chol(C + rI);  F̂ = (F − μ) L⁻¹ Lt
    corrected:  running (n, μ_s, M2) per run (Chan et al.'s merge);  A = chol(M2/(n−1) + rI)⁻ᵀ Ltᵀ;  F̂ = (F − μ_s) A
    output   :  (1 − α) F + α F̂ / ‖F̂‖   (row-wise, α per run)

Batched Cholesky factorisations and triangular solves (``torch.linalg`` loops LAPACK over the batch) give the
numbers of the per-run transforms bit for bit on a CPU; the equivalence tests check that through whole runs.
The per-run transform objects stay the source of truth for settings (α, ridge, target) and receive the final
running statistics when the program ends (:meth:`BatchedAlignment.write_back`).
"""
from __future__ import annotations

import numpy as np
import torch

from mepo_lab.mepo.alignment import CorrectedAlignment, OfficialAlignment
from mepo_lab.mepo.whitening import (
    F64,
    _too_few_message,
    apply_alignment,
    ridge_cholesky,
)

def _mode(transform) -> str:
    if transform is None:
        return "none"
    if type(transform) is OfficialAlignment:
        return "official"
    if type(transform) is CorrectedAlignment:
        return "corrected"
    raise ValueError(f"cannot batch the feature transform {type(transform).__name__}: only the official and "
                     "corrected alignments are batched; run this learner with run_gcl")


def _mix(x: torch.Tensor, xhat: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """:func:`mepo_lab.mepo.whitening.mix` along the last axis, α a scalar or one value per leading row.

    In place on ``xhat`` (a temporary of the callers): the same products and sums in the same order (IEEE
    multiplication and addition commute), half the memory traffic."""
    norm = xhat.norm(dim=-1, keepdim=True).clamp_min_(torch.finfo(xhat.dtype).tiny)
    return (x * (1.0 - alpha)).add_(xhat.div_(norm).mul_(alpha))


def _alpha(values: np.ndarray, device: torch.device) -> torch.Tensor | float:
    """α as a Python float when all runs share it (the per-run code multiplies by a float), else ``(R, 1, 1)``."""
    if np.all(values == values[0]):
        return float(values[0])
    return torch.tensor(values, dtype=F64, device=device)[:, None, None]


class BatchedAlignment:
    """Alignment state of ``R`` runs (``transforms[r]`` is ``None``, official or corrected), on ``device``.

    Per-mode state is stacked by *slot* (the runs of that mode in order), so a step that moves every run of a mode
    uses the stacked tensors as they are, without gathering or scattering them.
    """

    def __init__(self, transforms: list, dim: int, device: torch.device) -> None:
        self.transforms, self.dim, self.device = list(transforms), dim, device
        self.modes = np.array([_mode(t) for t in transforms])
        for t in transforms:
            if t is not None and t.dim != dim:
                raise ValueError(f"an alignment of width {t.dim} cannot transform features of width {dim}")
        self.alpha = np.array([t.alpha if t is not None else 0.0 for t in transforms])
        self.ridge = np.array([t.ridge if t is not None else 0.0 for t in transforms])
        self.active = np.array([t is not None and t.alpha != 0.0 for t in transforms])
        self.off = np.flatnonzero((self.modes == "official") & self.active)
        self.cor = np.flatnonzero(self.modes == "corrected")
        self.slot = np.full(len(transforms), -1)
        self.slot[self.off], self.slot[self.cor] = np.arange(len(self.off)), np.arange(len(self.cor))
        empty = torch.zeros(0, dim, dim, dtype=F64, device=device)
        stack = lambda ts: torch.stack(ts) if ts else empty
        self.l_off = stack([transforms[p]._target_factor(device) for p in self.off])
        cor = [transforms[p] for p in self.cor]
        self.l_cor = stack([t._target_factor(device) for t in cor])
        self.count = np.array([t.count for t in cor], np.int64)
        self.mean = stack([t.mean.to(device) for t in cor]) if cor else empty[:, 0]
        self.m2 = stack([t.m2.to(device) for t in cor])
        self.a = torch.zeros_like(self.m2)
        self.n_recomputes = np.zeros(len(cor), np.int64)
        self._chunks: dict[tuple, tuple[bytes, torch.Tensor]] = {}

    @staticmethod
    def _take(t: torch.Tensor, slots: np.ndarray) -> torch.Tensor:
        """Rows ``slots`` of a per-slot tensor (the tensor itself when ``slots`` are all of them, in order)."""
        return t if len(slots) == len(t) else t[torch.from_numpy(slots)]

    # ------------------------------------------------------------------ training batches
    def train(self, pos: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """``g(x)`` of a training batch ``x`` ``(R', b, d)`` of the runs at ``pos``; corrected runs first merge it."""
        modes, active = self.modes[pos], self.active[pos]
        cor = np.flatnonzero(modes == "corrected")
        if len(cor):
            self._update(self.slot[pos[cor]], x if len(cor) == len(pos) else x[torch.from_numpy(cor)])
        off, cor = np.flatnonzero((modes == "official") & active), np.flatnonzero((modes == "corrected") & active)
        if not (len(off) or len(cor)):
            return x
        out = x.clone()
        for sel, fn in ((off, self._official), (cor, self._corrected)):
            if len(sel):
                idx = torch.from_numpy(sel)
                out[idx] = fn(self.slot[pos[sel]], x[idx] if len(sel) < len(pos) else x)
        return out

    def _official(self, slots: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """Official transform with each run's batch statistics (``OfficialAlignment.__call__``)."""
        b, pos = x.shape[1], self.off[slots]
        if b < 2:
            if all(self.transforms[p].on_singleton == "skip" for p in pos):
                return x
            raise ValueError(_too_few_message("official", b))
        for p in pos:
            self.transforms[p]._warn_once(b)
        f = x.to(F64)
        mu = f.mean(1, keepdim=True)
        xc = f - mu
        l_src = self._cholesky(xc.mT @ xc / (b - 1), pos, "the batch covariance")
        xhat = apply_alignment(f - mu, l_src, self._take(self.l_off, slots), "official")
        return _mix(f, xhat, _alpha(self.alpha[pos], x.device)).to(x.dtype)

    def _cholesky(self, cov: torch.Tensor, pos: np.ndarray, name: str) -> torch.Tensor:
        ridge = self.ridge[pos]
        if np.all(ridge == ridge[0]):
            return ridge_cholesky(cov, float(ridge[0]), name)
        return torch.stack([ridge_cholesky(c, float(r), name) for c, r in zip(cov, ridge)])

    @torch.no_grad()
    def _update(self, slots: np.ndarray, x: torch.Tensor) -> None:
        """Chan et al.'s merge per run: ``δ = μ_b − μ``, ``μ += δ n_b/n'``, ``M2 += M2_b + δδᵀ n n_b/n'``; then A."""
        f, nb = x.to(F64), x.shape[1]
        if nb == 0:
            return
        mb = f.mean(1)
        fc = f - mb[:, None, :]
        delta = mb - self._take(self.mean, slots)
        count = self.count[slots]
        n = count + nb
        scale = torch.tensor([c * nb / m for c, m in zip(count.tolist(), n.tolist())], dtype=F64, device=f.device)
        step = torch.tensor([nb / m for m in n.tolist()], dtype=F64, device=f.device)
        add = fc.mT @ fc + delta[:, :, None] * delta[:, None, :] * scale[:, None, None]
        if len(slots) == len(self.m2):
            self.m2 += add
            self.mean = self.mean + delta * step[:, None]
        else:
            idx = torch.from_numpy(slots)
            self.m2[idx] += add
            self.mean[idx] = self.mean[idx] + delta * step[:, None]
        self.count[slots] = n
        self._recompute(slots)

    def _recompute(self, slots: np.ndarray) -> None:
        """``A = chol(C_s + rI)⁻ᵀ Ltᵀ`` of the runs with at least 2 samples (``CorrectedAlignment._matrix``)."""
        slots = slots[(self.count[slots] >= 2) & self.active[self.cor[slots]]]
        if not len(slots):
            return
        pos = self.cor[slots]
        for p, c in zip(pos, self.count[slots]):
            self.transforms[p]._warn_once(int(c), stacklevel=5)
        counts = torch.tensor((self.count[slots] - 1).tolist(), dtype=F64, device=self.m2.device)
        l_src = self._cholesky(self._take(self.m2, slots) / counts[:, None, None], pos, "the running covariance")
        a = torch.linalg.solve_triangular(l_src.mT, self._take(self.l_cor, slots).mT, upper=True)
        if len(slots) == len(self.a):
            self.a = a
        else:
            self.a[torch.from_numpy(slots)] = a
        self.n_recomputes[slots] += 1

    def _corrected(self, slots: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """Corrected transform with the current running statistics (identity for runs with < 2 samples)."""
        ready = self.count[slots] >= 2
        if not ready.all():
            out = x.clone()
            sel = torch.from_numpy(np.flatnonzero(ready))
            if len(sel):
                out[sel] = self._corrected(slots[ready], x[sel])
            return out
        f = x.to(F64)
        xhat = (f - self._take(self.mean, slots)[:, None, :]) @ self._take(self.a, slots)
        return _mix(f, xhat, _alpha(self.alpha[self.cor[slots]], x.device)).to(x.dtype)

    # ------------------------------------------------------------------ evaluation
    def chunk_dependent(self, pos: np.ndarray) -> np.ndarray:
        """Which runs at ``pos`` align test rows with their evaluation batch's statistics (active official)."""
        return (self.modes[pos] == "official") & self.active[pos]

    def evaluate(self, pos: np.ndarray, x: torch.Tensor, block: int = 1024) -> torch.Tensor:
        """``g(x)`` of test features ``(R', L, d)`` of runs whose transform is row-wise (none, corrected).

        Rows go through in blocks of ``block`` so the float64 intermediates stay in cache (row-wise formulas: the
        blocks do not change any number). ``x`` is never written (it may be a broadcast view of cached rows).
        """
        sel = np.flatnonzero((self.modes[pos] == "corrected") & self.active[pos])
        if not len(sel):
            return x
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if len(sel) == len(pos) else x.clone()
        idx, slots = torch.from_numpy(sel), self.slot[pos[sel]]
        xs = x[idx] if len(sel) < len(pos) else x
        for i in range(0, x.shape[1], block):
            out[idx, i:i + block] = self._corrected(slots, xs[:, i:i + block])
        return out

    def evaluate_chunked(self, p: int, set_id: int, keep: np.ndarray, x: torch.Tensor, chunk: int) -> torch.Tensor:
        """Official ``g`` of run ``p``'s test rows ``x`` (dataset rows ``keep``) in evaluation batches of ``chunk``.

        A batch's statistics come from its test rows alone, so the aligned rows change only when the exposed
        classes (hence ``keep``) do: the latest result is kept per feature set and settings, and reused.
        """
        t = self.transforms[p]
        slot_key = (set_id, chunk, t.alpha, t.ridge, t.on_singleton, id(t.target_cov))
        rows = keep.tobytes()
        cached = self._chunks.get(slot_key)
        if cached is not None and cached[0] == rows:
            return cached[1]
        n_full, parts = len(x) // chunk, []
        if n_full:
            full = x[:n_full * chunk].reshape(n_full, chunk, -1)
            parts.append(self._official_one_run(p, full).reshape(n_full * chunk, -1))
        if len(x) > n_full * chunk:  # the last, shorter evaluation batch
            rest = x[n_full * chunk:]
            skip = len(rest) < 2 and t.on_singleton == "skip"
            parts.append(rest if skip else self._official(self.slot[[p]], rest[None])[0])
        aligned = torch.cat(parts) if len(parts) > 1 else parts[0]
        self._chunks[slot_key] = (rows, aligned)
        return aligned

    def _official_one_run(self, p: int, chunks: torch.Tensor) -> torch.Tensor:
        """The official transform of run ``p`` on each of ``chunks`` ``(n, b, d)`` (target shared by all chunks)."""
        b = chunks.shape[1]
        self.transforms[p]._warn_once(b)
        f = chunks.to(F64)
        mu = f.mean(1, keepdim=True)
        xc = f - mu
        l_src = ridge_cholesky(xc.mT @ xc / (b - 1), float(self.ridge[p]), "the batch covariance")
        xhat = apply_alignment(f - mu, l_src, self.l_off[self.slot[p]], "official")
        return _mix(f, xhat, float(self.alpha[p])).to(chunks.dtype)

    # ------------------------------------------------------------------ hand back
    def write_back(self) -> None:
        """Give each corrected transform its run's final running statistics (as after a sequential run)."""
        for slot, p in enumerate(self.cor):
            t = self.transforms[p]
            t.count, t.mean, t.m2 = int(self.count[slot]), self.mean[slot].cpu().clone(), self.m2[slot].cpu().clone()
            t._version += 1
            t.n_recomputes += int(self.n_recomputes[slot])
