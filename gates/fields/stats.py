"""Raw per-slab sums, the interface between a kernel (NumPy or numba) and the formulas.

A slab is one (sample, time) snapshot: ``P`` spatial points by ``C`` channels. Every
field is float64; per-channel arrays are (n, C), channel-summed ones (n,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SlabStats"]


@dataclass
class SlabStats:
    """Sums of one chunk's slabs; ``e = p - t``, ``u = t - t0`` (t0: the slab's first target
    value per channel, a shift that keeps the variance from cancelling)."""

    se: np.ndarray  # (n, C) sum e
    se2: np.ndarray  # (n, C) sum e^2
    su: np.ndarray  # (n, C) sum u
    su2: np.ndarray  # (n, C) sum u^2
    t0: np.ndarray  # (n, C)
    maxe: np.ndarray  # (n, C) max |e|
    sae: np.ndarray  # (n,) sum |e| over points and channels
    neg: np.ndarray  # (n,) sum max(-p, 0) over points and channels
    bse2: np.ndarray  # (n, C) sum e^2 over both faces of every axis (PDEBench's bRMSE)
    eb0: np.ndarray  # (n, C) |e| at the first flattened point
    eb1: np.ndarray  # (n, C) |e| at the last flattened point
    wband: np.ndarray  # (n, 3) sum over channels of |fftn(e)|^2 per The Well band
    shell: np.ndarray  # (n, C, S) PDEBench's per-shell |E|^2 (1D: per rfft mode)

    @classmethod
    def zeros(cls, n: int, c: int, shells: int) -> SlabStats:
        z = np.zeros
        return cls(z((n, c)), z((n, c)), z((n, c)), z((n, c)), z((n, c)), z((n, c)), z(n),
                   z(n), z((n, c)), z((n, c)), z((n, c)), z((n, 3)), z((n, c, shells)))
