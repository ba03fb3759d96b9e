"""The sign-flip randomization behind :mod:`gates.evidence`.

Pure numpy.

Sign-flip designs (:class:`Resampling`)
    A paired comparison of champion and challenger on the same samples is tested by
    randomly swapping the two runs' values within each sample.  Under a pure rerun (the
    two runs are exchangeable per sample, whatever the distribution: heavy tails, diverged
    samples, any correlation) every swap pattern is equally likely, so the test is *exact*.
    A design is a 0/1 matrix ``F`` (rows x n): row 0 swaps nothing (the observed data),
    every other row marks the samples it swaps.  For ``n <= EXACT_MAX_N`` the rows are all
    ``2**n`` patterns (an exact permutation test, no Monte Carlo at all); above, row 0 plus
    ``n_flips - 1`` uniform random patterns (a Monte Carlo permutation test, exact in
    level because the observed pattern is counted).  A design depends only on the seed and
    ``n``: it is drawn once per sample count and shared by every metric of a session,
    which is what makes the min-P adjustment across metrics valid (the same samples are
    swapped in every metric, so the joint null distribution is kept).

    Everything the tests need is linear in the data: with ``u = F @ c`` and ``v = F @ b``
    (the swapped subsets' sums), swapping moves ``sum(c - k*b)`` to itself minus
    ``2*(u - k*v)``, so a test of "``mean(c)/mean(b) <= k``" for any ``k`` and the exact
    inversion of that test into an interval for the ratio need only ``u`` and ``v``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

#: Up to this many samples the design enumerates every swap pattern (2**12 = 4096 rows).
EXACT_MAX_N = 12
#: Rows of a Monte Carlo design (the observed pattern included): Monte Carlo error of a
#: p-value near 0.01 is about 0.0016.
DEFAULT_FLIPS = 4096
_CACHE_LIMIT = 1 << 23  # design entries kept per sample count (64 MB); larger ones stream
_BLOCK = 1 << 20  # entries per streamed block
_FEW_COLUMNS = 8  # up to this many columns a product runs in small blocks (see _product)
_SMALL_BLOCK = 1 << 16
_GRID = 256  # design rows drawn per random stream: the design depends on seed and n only


class Resampling:
    """Sign-flip designs drawn once per sample count, shared by every gate of a session.

    Create one per session (``Resampling(seed=policy.seed)``) and pass it to every
    evidence call: each design is drawn once and reused, and metrics of the same samples
    are swapped together, which :func:`gates.evidence.regression_evidence` needs for
    simultaneous (min-P) p-values.  Thread-compatible, not thread-safe (a plain cache).
    """

    def __init__(self, seed: int = 0, n_flips: int = DEFAULT_FLIPS) -> None:
        if n_flips < 100:
            raise ValueError(f"n_flips must be at least 100, got {n_flips}")
        self.seed = int(seed)
        self.n_flips = int(n_flips)
        self._designs: dict[int, Array] = {}

    def rows(self, n: int) -> int:
        """Number of swap patterns (the observed one included) for ``n`` samples."""
        return 1 << n if n <= EXACT_MAX_N else self.n_flips

    def exact(self, n: int) -> bool:
        """True when every swap pattern is enumerated (no Monte Carlo error)."""
        return n <= EXACT_MAX_N

    def subset_sums(self, n: int, x: Array) -> Array:
        """``F @ x`` for the design of ``n`` samples: ``x`` is (n,) or (n, k)."""
        if x.shape[0] != n:
            raise ValueError(f"expected {n} rows, got {x.shape[0]}")
        if n * self.rows(n) <= _CACHE_LIMIT:
            design = self._designs.get(n)
            if design is None:
                design = self._draw(n, 0, self.rows(n))
                self._designs[n] = design
            return _product(design, x)
        step = max(1, _BLOCK // n)
        out = np.empty((self.rows(n), *x.shape[1:]))
        for start in range(0, self.rows(n), step):
            stop = min(start + step, self.rows(n))
            out[start:stop] = _product(self._draw(n, start, stop), x)
        return out

    def subset_sums_by_column(self, n: int, x: Array) -> Array:
        """``(F @ x).T`` for (n, k) ``x``, computed as ``x.T @ F.T``: each column's sums
        contiguous (k, rows), without transposing a large result."""
        if x.shape[0] != n:
            raise ValueError(f"expected {n} rows, got {x.shape[0]}")
        if n * self.rows(n) <= _CACHE_LIMIT and x.shape[1] > _FEW_COLUMNS:
            design = self._designs.get(n)
            if design is None:
                design = self._draw(n, 0, self.rows(n))
                self._designs[n] = design
            return x.T @ design.T
        return np.ascontiguousarray(self.subset_sums(n, x).T)

    def _draw(self, n: int, start: int, stop: int) -> Array:
        """Rows ``start:stop`` of the design; block by block the same matrix as at once."""
        if n <= EXACT_MAX_N:
            codes = np.arange(start, stop)[:, None]
            return ((codes >> np.arange(n)) & 1).astype(np.float64)
        out = np.empty((stop - start, n))
        for lo in range(start - start % _GRID, stop, _GRID):  # fixed grid: reproducible
            rng = np.random.default_rng([self.seed, n, lo])
            block = rng.integers(0, 2, size=(_GRID, n), dtype=np.int8).astype(np.float64)
            if lo == 0:
                block[0] = 0.0  # row 0 is the observed data
            a, z = max(lo, start), min(lo + _GRID, stop)
            out[a - start : z - start] = block[a - lo : z - lo]
        return out


def _product(design: Array, x: Array) -> Array:
    """``design @ x``.  With a few columns, in row blocks of at most 2**16 entries: one BLAS
    matrix-vector product over the whole design runs threaded, and on a busy 2-core machine
    its threads spin for milliseconds (n=64: 16 ms threaded, 0.1 ms in blocks)."""
    if x.ndim == 2 and x.shape[1] > _FEW_COLUMNS:
        return design @ x
    step = max(16, _SMALL_BLOCK // max(1, design.shape[1]))
    if design.shape[0] <= step:
        return design @ x
    return np.concatenate([design[i : i + step] @ x for i in range(0, design.shape[0], step)])
