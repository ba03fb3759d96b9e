"""The NumPy kernel: every per-slab sum of a chunk, on cache-sized blocks of whole slabs.

One read of each chunk feeds all three conventions: the pointwise sums (fused block
passes with preallocated buffers; float32 input is summed in float32 leaves of at most
256 values, then in float64), the face and end-point sums, and one ``rfftn`` of the
error per slab whose squared modes serve both PDEBench's shells and The Well's bins.
The spectrum of a real field is Hermitian, so ``rfftn`` holds all of ``fftn``:
PDEBench's quadrant ``0 <= i_d < n_d // 2`` is a sub-block of it, and The Well's
full-spectrum bin sums weigh each folded mode twice.

``engine="numba"`` hands the pointwise and face sums to gates.fields.numba.FusedSums (one
compiled loop reading each value once); the end points and the FFT stay here.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gates.fields.layout import Plan
from gates.fields.numba import Engine, FusedSums
from gates.fields.stats import SlabStats

__all__ = ["BAND_EDGES", "THREADS_ENV", "Kernel", "kernel_threads", "shell_count"]

THREADS_ENV = "GATES_FIELDS_THREADS"
"""Threads of the NumPy kernel (default: the usable cores)."""

BAND_EDGES = (4, 12)
"""Band edges on the integer wavenumber: low < 4 <= mid < 12 <= high (PDEBench's iLow,
iHigh; The Well's bins at the same wavenumbers)."""

_LEAF = 256  # longest run of values summed in the input precision before float64
_BLOCK_BYTES = 1 << 20  # per-array working block: near the cache, amortises per-call overhead
_GROUP_BYTES = 4 << 20  # per-array FFT/boundary group: stays in L3


def kernel_threads() -> int:
    """GATES_FIELDS_THREADS, else the cores this process may use."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """Process-wide helper threads (idle threads cost nothing; created on first use)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gates-fields")


def shell_count(space: tuple[int, ...]) -> int:
    """PDEBench's number of Fourier shells: n//2 + 1 rfft modes in 1D, min(n_d // 2) else."""
    if len(space) == 1:
        return space[0] // 2 + 1
    return min(n // 2 for n in space)


def _largest_divisor(n: int, cap: int) -> int:
    """Largest d <= cap dividing n (1 when n is prime and > cap)."""
    for d in range(min(n, cap), 0, -1):
        if n % d == 0:
            return d
    return 1


class Kernel:
    """Per-chunk computation with buffers reused across chunks (cheap to build)."""

    def __init__(self, plan: Plan, dtype: np.dtype, *, pointwise: bool = True,
                 spectral: bool = True, engine: Engine = "numpy",
                 block_bytes: int | None = None, group_bytes: int | None = None,
                 threads: int | None = None) -> None:
        self.plan = plan
        self.wd = np.dtype(dtype)
        self.pointwise = pointwise
        self.spectral = spectral
        self.C = plan.n_chan
        self.P = plan.points
        self.L = self.P * self.C
        self.S = shell_count(plan.space)
        slab_bytes = self.L * self.wd.itemsize
        block_bytes = _BLOCK_BYTES if block_bytes is None else block_bytes
        group_bytes = _GROUP_BYTES if group_bytes is None else group_bytes
        self.group_slabs = max(1, group_bytes // slab_bytes)
        self.block_slabs = max(1, min(self.group_slabs, block_bytes // slab_bytes))
        if self.C == 1:
            self.W = _largest_divisor(self.L, _LEAF)
        else:  # rows of W = m*C values keep every channel in its own column
            self.W = _largest_divisor(self.P, max(1, _LEAF // self.C)) * self.C
        self.R = self.L // self.W
        self.R2 = _largest_divisor(self.R, _LEAF)  # rows added in the input precision
        self.ones = np.ones(self.W, self.wd)
        # a row, not a scalar: NumPy's minimum has no vector loop for a broadcast
        # scalar (4x slower), but has one when both inner strides are contiguous
        self.zero_row = np.zeros((1, self.L), self.wd)
        self._local = threading.local()  # work buffers are per thread
        self.threads = kernel_threads() if threads is None else max(1, int(threads))
        if spectral:
            self._spectral_setup()
        self.fused = (FusedSums(plan.space, self.C, threads=None if not spectral else 1)
                      if engine == "numba" and pointwise else None)

    # buffers ------------------------------------------------------------------------
    @property
    def _buffers(self) -> dict[str, np.ndarray]:
        local = self._local
        if not hasattr(local, "buffers"):
            local.buffers = {}
            local.views = {}
        out: dict[str, np.ndarray] = local.buffers
        return out

    @property
    def _views(self) -> dict[tuple[str, tuple[int, ...]], np.ndarray]:
        self._buffers  # noqa: B018 - creates this thread's dicts
        out: dict[tuple[str, tuple[int, ...]], np.ndarray] = self._local.views
        return out

    def _buf(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Preallocated work buffer, grown on demand; views memoised per shape."""
        view = self._views.get((name, shape))
        if view is not None:
            return view
        size = math.prod(shape)
        b = self._buffers.get(name)
        if b is None or b.size < size:
            b = np.empty(size, self.wd)
            self._buffers[name] = b
            views = self._views
            for key in [key for key in views if key[0] == name]:
                del views[key]
        view = b[:size].reshape(shape)
        self._views[(name, shape)] = view
        return view

    def _rows(self, x: np.ndarray, k: int, name: str) -> np.ndarray:
        """``x`` as contiguous (k, L) rows in the work dtype: a view when possible."""
        if self._is_rows(x):
            return x.reshape(k, self.L)
        buf = self._buf(name, (k, self.L))
        np.copyto(buf.reshape(x.shape), x, casting="same_kind")
        return buf

    def _is_rows(self, x: np.ndarray) -> bool:
        return x.dtype == self.wd and x.flags.c_contiguous

    def _groups(self, ns: int, nt: int) -> Iterator[tuple[int, int, int, int]]:
        """(s0, s1, t0, t1) groups of whole slabs, contiguous in slab order."""
        gs = self.group_slabs
        if nt <= gs:
            per = max(1, gs // nt)
            for a in range(0, ns, per):
                yield a, min(a + per, ns), 0, nt
        else:
            for a in range(ns):
                for ta in range(0, nt, gs):
                    yield a, a + 1, ta, min(ta + gs, nt)

    def reads_in_place(self, dtype: Any) -> bool:
        """True when the compiled loop reads chunks of this dtype straight from the window
        (then a mapped window is not pre-faulted: its threads take the faults in parallel)."""
        return self.fused is not None and self.plan.in_order and np.dtype(dtype) == self.wd

    # driver -------------------------------------------------------------------------
    def stats(self, pc: np.ndarray, tc: np.ndarray) -> SlabStats:
        """Per-slab sums for canonical (S, T, space..., C) arrays of one chunk."""
        ns, nt = pc.shape[:2]
        st = SlabStats.zeros(ns * nt, self.C, self.S if self.spectral else 0)
        shape4 = self.plan.space + (self.C,)
        fused = self.fused
        if fused is not None and not self.spectral and self._is_rows(pc) and self._is_rows(tc):
            # pointwise only, already (k, L) rows: one call for the chunk, its rows split
            # over the compiled loop's threads (with spectra, each group thread runs the
            # loop on its group instead, so the FFT reads the group while it is in cache)
            p2, t2 = pc.reshape(ns * nt, self.L), tc.reshape(ns * nt, self.L)
            fused(p2, t2, st, 0)
            self._ends(p2, t2, st, 0)
            fused = None
            if not self.spectral:
                return st
        def run(groups: list[tuple[int, int, int, int]]) -> None:
            for a, b, ta, tb in groups:
                k = (b - a) * (tb - ta)
                j0 = a * nt + ta
                p2 = self._rows(pc[a:b, ta:tb], k, "p")
                t2 = self._rows(tc[a:b, ta:tb], k, "t")
                e2 = self._buf("e", (k, self.L)) if self.spectral else None
                if fused is not None:
                    fused(p2, t2, st, j0)
                    self._ends(p2, t2, st, j0)
                elif self.pointwise and self.fused is None:
                    self._pointwise_group(p2, t2, e2, st, j0)
                if e2 is not None:
                    if self.fused is not None or not self.pointwise:
                        np.subtract(p2, t2, out=e2)
                    self._spectra(e2.reshape((k,) + shape4), st, j0)

        groups = list(self._groups(ns, nt))
        parts = min(self.threads, len(groups))
        if parts <= 1:
            run(groups)
            return st
        # whole groups per thread (NumPy and the FFT release the GIL): a group's sums are
        # computed by one thread, with its own buffers, so threads never change a result
        cuts = [len(groups) * i // parts for i in range(parts + 1)]
        futures = [_pool(parts - 1).submit(run, groups[lo:hi])
                   for lo, hi in zip(cuts[1:-1], cuts[2:], strict=True)]
        run(groups[cuts[0]:cuts[1]])
        for fut in futures:
            fut.result()
        return st

    # pointwise sums -----------------------------------------------------------------
    # leaf quantities, in plane order: sum e, e^2, u^2, u, |e|, min(p, 0)
    _Q_SE, _Q_SE2, _Q_SU2, _Q_SU, _Q_SAE, _Q_NEG = range(6)
    _NQ = 6

    def _pointwise_group(self, p2: np.ndarray, t2: np.ndarray, e2: np.ndarray | None,
                         st: SlabStats, j0: int) -> None:
        """Fused block passes over a group, then one float64 fold of the leaves."""
        k = p2.shape[0]
        n_q = self._NQ
        if self.C == 1:
            leaf = self._buf("leaf", (n_q, k, self.R))
        else:
            leaf = self._buf("leaf", (n_q, k, self.R // self.R2, self.W))
        maxe = self._buf("maxe", (k, self.C))
        t0 = self._buf("t0", (k, self.C))
        bk = self.block_slabs
        for r0 in range(0, k, bk):
            r1 = min(r0 + bk, k)
            e = e2[r0:r1] if e2 is not None else None
            e = self._pointwise(p2[r0:r1], t2[r0:r1], e, leaf[:, r0:r1], maxe[r0:r1],
                                t0[r0:r1])
            self._faces(e, st, j0 + r0)
        sl = slice(j0, j0 + k)
        if self.C == 1:
            sums = leaf.sum(axis=2, dtype=np.float64)[:, :, None]  # (n_q, k, 1)
        else:
            y64 = leaf.reshape(n_q * k, -1).astype(np.float64)
            # channel c sits in every C-th column: a 0/1 selector folds them
            sums = (y64 @ self._selector(y64.shape[1])).reshape(n_q, k, self.C)
        st.se[sl] = sums[self._Q_SE]
        st.se2[sl] = sums[self._Q_SE2]
        st.su[sl] = sums[self._Q_SU]
        st.su2[sl] = sums[self._Q_SU2]
        st.sae[sl] = sums[self._Q_SAE].sum(axis=1)
        st.neg[sl] = -sums[self._Q_NEG].sum(axis=1)
        st.maxe[sl] = maxe
        st.t0[sl] = t0
        self._ends(p2, t2, st, j0)

    def _pointwise(self, p: np.ndarray, t: np.ndarray, e_out: np.ndarray | None,
                   leaf: np.ndarray, maxe: np.ndarray, t0: np.ndarray) -> np.ndarray:
        """Leaf sums over one cache-sized block of kb whole slabs, max |e| and t0 per
        slab and channel; returns e = p - t (in ``e_out`` when given, for the FFT).
        np.vecdot does one dot per row, so a slab's sums never depend on how many slabs
        share the call."""
        kb = p.shape[0]
        n_q = leaf.shape[0]
        np.copyto(t0, t[:, : self.C])
        if self.C == 1:
            e = e_out if e_out is not None else self._buf("eb", (kb, self.L))
            np.subtract(p, t, out=e)
            # one scratch plane, each use consumed at once: the block's working set is
            # p, t, e and the plane, so it stays near the core's cache
            x = self._buf("scratch1", (self.block_slabs, self.L))[:kb]
            shp = (kb, self.R, self.W)
            er, xr = e.reshape(shp), x.reshape(shp)
            np.vecdot(er, self.ones, out=leaf[self._Q_SE])
            np.vecdot(er, er, out=leaf[self._Q_SE2])
            np.abs(e, out=x)
            np.vecdot(xr, self.ones, out=leaf[self._Q_SAE])
            np.max(x, axis=1, out=maxe[:, 0])
            np.subtract(t, t[:, :1], out=x)
            np.vecdot(xr, xr, out=leaf[self._Q_SU2])
            np.vecdot(xr, self.ones, out=leaf[self._Q_SU])
            np.minimum(p, self.zero_row, out=x)
            np.vecdot(xr, self.ones, out=leaf[self._Q_NEG])
            return e
        pl = self._buf("planesC", (n_q, self.block_slabs, self.L))[:, :kb]
        e, e_sq, u_sq, u, a = pl[0], pl[1], pl[2], pl[3], pl[4]
        np.subtract(p, t, out=e)
        if e_out is not None:
            np.copyto(e_out, e)
        np.multiply(e, e, out=e_sq)
        t0w = np.tile(t0, (1, self.W // self.C))[:, None, :]
        np.subtract(t.reshape(kb, self.R, self.W), t0w, out=u.reshape(kb, self.R, self.W))
        np.multiply(u, u, out=u_sq)
        np.abs(e, out=a)
        np.minimum(p, self.zero_row, out=pl[5])
        r1 = self.R // self.R2
        np.sum(pl.reshape(n_q, kb, r1, self.R2, self.W), axis=3, out=leaf)
        wide = np.max(a.reshape(kb, self.R, self.W), axis=1)
        np.max(wide.reshape(kb, self.W // self.C, self.C), axis=1, out=maxe)
        return e

    def _selector(self, width: int) -> np.ndarray:
        """(width, C) 0/1 matrix picking channel c from every C-th column."""
        sel = self._buffers.get("sel64")
        if sel is None or sel.shape[0] != width:
            sel = np.tile(np.eye(self.C), (width // self.C, 1))
            self._buffers["sel64"] = sel
        return sel

    # faces and end points -----------------------------------------------------------
    @functools.cached_property
    def _face_index(self) -> np.ndarray:
        """(F, C) positions in a slab row of PDEBench's face points: index 0 and n-1 of
        every spatial axis, a point listed once per face it lies on (twice for a size-1
        axis, whose one index is both faces)."""
        space = self.plan.space
        faces = []
        for d, n in enumerate(space):  # only the face points, never the whole grid
            axes = [np.array([0, n - 1]) if j == d else np.arange(m)
                    for j, m in enumerate(space)]
            coords = np.meshgrid(*axes, indexing="ij")
            faces.append(np.ravel_multi_index(tuple(c.ravel() for c in coords), space))
        points = np.concatenate(faces)
        return points[:, None] * self.C + np.arange(self.C)[None, :]

    def _faces(self, e2: np.ndarray, st: SlabStats, j: int) -> None:
        """PDEBench's face sums: e^2 over the face points, per channel, in float64, from
        the block's e (k, L)."""
        ef = e2[:, self._face_index].astype(np.float64)  # (k, F, C)
        st.bse2[j : j + e2.shape[0]] += np.einsum("kfc,kfc->kc", ef, ef)

    def _ends(self, p2: np.ndarray, t2: np.ndarray, st: SlabStats, j: int) -> None:
        """|e| at the first and the last flattened grid point (universal-simulator's bc)."""
        k = p2.shape[0]
        c, n = self.C, self.L
        st.eb0[j : j + k] = np.abs(np.subtract(p2[:, :c], t2[:, :c], dtype=np.float64))
        st.eb1[j : j + k] = np.abs(np.subtract(p2[:, n - c :], t2[:, n - c :],
                                               dtype=np.float64))

    # spectra ------------------------------------------------------------------------
    def _spectral_setup(self) -> None:
        """Wavenumbers of every rfftn mode: The Well's bins and weights, PDEBench's shells.

        Integer wavenumbers k_d (cycles per domain), compared squared, so a mode on a band
        edge never lands on the wrong side by rounding.
        """
        space = self.plan.space
        grids = [np.rint(np.fft.fftfreq(n, 1.0 / n)).astype(np.int64) for n in space[:-1]]
        grids.append(np.arange(space[-1] // 2 + 1, dtype=np.int64))
        kk = np.meshgrid(*grids, indexing="ij")
        k2 = np.sum([g * g for g in kk], axis=0).ravel()
        last = kk[-1].ravel()
        w = np.full(k2.shape, 2.0)  # rfftn keeps one of each conjugate pair
        w[last == 0] = 1.0
        if space[-1] % 2 == 0:
            w[last == space[-1] // 2] = 1.0
        lo2, hi2 = BAND_EDGES[0] ** 2, BAND_EDGES[1] ** 2
        modes = np.flatnonzero(k2 < hi2)
        per_mode = 2 * self.C  # C channels x (re, im)
        self.sel = (modes[:, None] * per_mode + np.arange(per_mode)[None, :]).ravel()
        km = np.repeat(k2[modes], per_mode)
        wm = np.repeat(w[modes], per_mode)
        self.w_low = np.where(km < lo2, wm, 0.0)
        self.w_mid = np.where(km >= lo2, wm, 0.0)
        self.fft_axes = tuple(range(1, 1 + len(space)))
        self.nyquist = space[-1] % 2 == 0 and space[-1] > 1
        # PDEBench: 1D every rfft mode is its own shell; else the quadrant i_d < n_d // 2,
        # shell floor(|i|) below S, positions sorted by shell for one reduceat
        self.quadrant = tuple(slice(0, n // 2) for n in space)
        if len(space) > 1 and self.S > 0:
            qg = np.meshgrid(*[np.arange(n // 2, dtype=np.int64) for n in space],
                             indexing="ij")
            q2 = np.sum([g * g for g in qg], axis=0).ravel()
            shell = np.floor(np.sqrt(q2)).astype(np.int64)  # exact floor(sqrt) below:
            shell -= shell * shell > q2
            shell += (shell + 1) * (shell + 1) <= q2
            keep = np.flatnonzero(shell < self.S)
            order = keep[np.argsort(shell[keep], kind="stable")]
            self.q_order = order
            self.q_starts = np.searchsorted(shell[order], np.arange(self.S))

    def _spectra(self, e: np.ndarray, st: SlabStats, j: int) -> None:
        """One rfftn per slab; squared in place as real pairs, then read by both
        conventions (PDEBench's shells first: The Well's high band zeroes its modes)."""
        k = e.shape[0]
        sl = slice(j, j + k)
        f64 = np.float64
        spec = np.fft.rfftn(e, axes=self.fft_axes)  # C-contiguous
        x = spec.view(spec.real.dtype)  # (k, modes..., 2C): re, im interleaved
        np.square(x, out=x)
        pairs = x.reshape(x.shape[:-1] + (self.C, 2))
        if len(self.plan.space) == 1:  # (k, M, C): re^2 + im^2 (a length-2 sum is slow)
            st.shell[sl] = np.add(pairs[..., 0], pairs[..., 1], dtype=f64).transpose(0, 2, 1)
        elif self.S > 0:
            quad = pairs[(slice(None), *self.quadrant)]
            q = np.add(quad[..., 0], quad[..., 1]).reshape(k, -1, self.C)
            q = q[:, self.q_order]  # summed in float64 without a float64 copy
            st.shell[sl] = np.add.reduceat(q, self.q_starts, axis=1, dtype=f64).transpose(0, 2, 1)
        rows = x.reshape(k, -1)
        g = rows[:, self.sel].astype(f64)
        st.wband[sl, 0] = np.vecdot(g, self.w_low)  # one dot per row: independent of k
        st.wband[sl, 1] = np.vecdot(g, self.w_mid)
        rows[:, self.sel] = 0
        lastax = len(self.plan.space)
        high = 2.0 * _leaf_sums(rows)
        high -= _leaf_sums(np.take(x, 0, axis=lastax).reshape(k, -1))
        if self.nyquist:
            high -= _leaf_sums(np.take(x, -1, axis=lastax).reshape(k, -1))
        st.wband[sl, 2] = high


def _leaf_sums(rows: np.ndarray) -> np.ndarray:
    """Row sums of (k, n): pairwise in the input precision over 256 values, then float64."""
    k, n = rows.shape
    m = n - n % _LEAF
    out = rows[:, :m].reshape(k, -1, _LEAF).sum(axis=2).sum(axis=1, dtype=np.float64)
    if m < n:
        out += rows[:, m:].sum(axis=1, dtype=np.float64)
    return out
