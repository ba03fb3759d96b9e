"""Per-sample accuracy and physics metrics computed from prediction/target fields.

Arrays are laid out ``(sample, time, space..., channel)`` by default (see FieldLayout).
Every metric is a per-sample float64 vector; an aggregate is the mean over samples of
the per-sample value, as PDEBench and The Well report them.

Notation, for one sample: ``p`` prediction, ``t`` target, ``e = p - t``; ``T`` time steps,
``P`` spatial points, ``C`` channels, ``N = T*P*C``; ``S_p(t,c) = sum_x p`` is the spatial
sum; means run over every value of the sample unless said otherwise. The formulas are
re-derived from the papers (PDEBench: Takamoto et al. 2022, The Well: Ohana et al. 2024);
no code is taken from either project. Each formula is in the docstring of the
``_m_<name>`` function below; ``METRIC_DOCS`` collects them.

Large inputs are streamed: one pass reads each chunk once (``.npy`` memory-mapped window
by window and unmapped after use, zarr chunk by chunk), and every metric, the FFT bands
included, is computed from that chunk while it is resident. Chunks run along the sample
axis, and along time when one sample exceeds ``chunk_bytes``; accumulators (sums, max,
min, spatial sums at t = 0) combine across chunks. Inside a chunk the work runs on
cache-sized blocks of whole (sample, time) slabs with preallocated buffers, so extra
memory is about 2 x chunk_bytes plus a few 4 MiB buffers (a single slab is never split,
so a slab larger than that sets the buffer size instead).

Two interchangeable kernels compute the pointwise sums: the NumPy one below (``_Kernel``)
and, when numba is installed (the ``fast`` extra), a compiled loop that reads each value
once (gates.field_kernels; compiled on first use, so it is only chosen automatically for
inputs large enough to repay that, or when asked: ``kernel=`` or GATES_FIELDS_KERNEL).
Both give the same float64 results to rounding; the compiled one sums float32 input in
float64 from the first operation. The FFT bands always use NumPy.

Precision (NumPy kernel): float32 input is read as float32; a float32 partial sum never
covers more than 256 values (a leaf) before it is added in float64, and face/boundary
terms are float64 throughout. Spatial variance uses sums of ``t - t0`` (t0 = the slab's first
target value) so a large offset does not cancel it away. The FFT runs in the input
precision (complex64 for float32), its band energies are summed in 256-value leaves.
Results for one slab do not depend on chunking or on dask's block layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gates.errors import GateInputError
from gates.field_kernels import Engine, FusedSums, choose
from gates.field_sources import (
    ArrayLike,
    NpyFile,
    check_pair,
    open_arrays,
    read_block,
    window_mappable,
)

if TYPE_CHECKING:  # optional extra, only for annotations
    import dask.array

__all__ = [
    "BANDS",
    "DEFAULT_LAYOUT",
    "EPS",
    "METRIC_DOCS",
    "METRIC_NAMES",
    "FieldLayout",
    "compute_field_metrics",
    "compute_field_metrics_arrays",
    "compute_field_metrics_dask",
    "open_arrays",
]

EPS = 1e-7
"""Guard added to denominators (nrmse, rel_l2, VRMSE's variance, bc ratio); The Well's value."""

BANDS = (4.0, 12.0)
"""fRMSE band edges on the radial wavenumber |k|: low < 4 <= mid < 12 <= high (PDEBench)."""

_BOUNDARIES = ("periodic", "dirichlet", "none")
_LEAF = 256  # longest run of values summed in the input precision before float64
_BLOCK_BYTES = 512 << 10  # per-array working block: ~L2, amortises per-call overhead
_GROUP_BYTES = 4 << 20  # per-array FFT/boundary group: stays in L3


@dataclass(frozen=True)
class FieldLayout:
    """Axes of the arrays: (sample, time, space..., channel) by default.

    ``time_axis``/``channel_axis`` may be None (no such axis). Every axis not named is
    spatial. ``boundary`` picks what bc_violation measures; ``nonnegative`` declares the
    field physically non-negative (density, concentration) so negativity_penalty counts.
    """

    sample_axis: int = 0
    time_axis: int | None = 1
    channel_axis: int | None = -1
    boundary: str = "periodic"  # "periodic" | "dirichlet" | "none"
    dirichlet_value: float = 0.0
    nonnegative: bool = False  # negativity_penalty only counted when True; else 0.0

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        """First invalid value, worded for the user, or None."""

        def is_int(v: object) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)

        if not is_int(self.sample_axis):
            return f"sample_axis must be an integer, got {self.sample_axis!r}"
        for name in ("time_axis", "channel_axis"):
            v = getattr(self, name)
            if v is not None and not is_int(v):
                return f"{name} must be an integer or null, got {v!r}"
        named = [a for a in (self.sample_axis, self.time_axis, self.channel_axis) if a is not None]
        if len(set(named)) != len(named):
            return f"sample/time/channel axes must differ, got {named}"
        if self.boundary not in _BOUNDARIES:
            return f"boundary must be one of {list(_BOUNDARIES)}, got {self.boundary!r}"
        v = self.dirichlet_value
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return f"dirichlet_value must be a finite number, got {v!r}"
        if not isinstance(self.nonnegative, bool):
            return f"nonnegative must be true or false, got {self.nonnegative!r}"
        return None

    @classmethod
    def from_policy(cls, table: Mapping[str, Any], path: str) -> FieldLayout:
        """Build from a policy table (keys as the fields); bad input -> GateInputError(path)."""
        if not isinstance(table, Mapping):
            raise GateInputError(path, f"field layout must be a table, got {type(table).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in table if k not in known)
        if unknown:
            raise GateInputError(path, f"unknown field layout key(s) {unknown}; known: {known}")
        try:
            return cls(**dict(table))
        except (TypeError, ValueError) as err:
            raise GateInputError(path, f"field layout: {err}") from err


DEFAULT_LAYOUT = FieldLayout()


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Plan:
    """Where the layout's axes sit for one array shape, and the per-slab geometry."""

    shape: tuple[int, ...]
    sample_axis: int
    time_axis: int | None
    channel_axis: int | None
    space_axes: tuple[int, ...]

    @property
    def n_samples(self) -> int:
        return self.shape[self.sample_axis]

    @property
    def n_times(self) -> int:
        return 1 if self.time_axis is None else self.shape[self.time_axis]

    @property
    def n_chan(self) -> int:
        return 1 if self.channel_axis is None else self.shape[self.channel_axis]

    @property
    def space(self) -> tuple[int, ...]:
        return tuple(self.shape[a] for a in self.space_axes)

    @property
    def points(self) -> int:
        return math.prod(self.space)

    @property
    def in_order(self) -> bool:
        """True when the axes already are (sample, time, space..., channel): no transpose."""
        order = [self.sample_axis, self.time_axis, *self.space_axes, self.channel_axis]
        present = [a for a in order if a is not None]
        return present == list(range(len(self.shape)))

    @property
    def n_boundary(self) -> int:
        """Grid points on the box surface (any index 0 or n-1), each counted once."""
        return self.points - math.prod(max(n - 2, 0) for n in self.space)

    @property
    def n_seam(self) -> int:
        """Seam points summed over the spatial axes long enough (n >= 3) to have a seam."""
        return sum(self.points // n for n in self.space if n >= 3)


def _plan(shape: tuple[int, ...], layout: FieldLayout, path: str | Path) -> _Plan:
    """Resolve (possibly negative) axes against ``shape``; any problem names ``path``."""
    nd = len(shape)

    def norm(ax: int | None, name: str) -> int | None:
        if ax is None:
            return None
        if not -nd <= ax < nd:
            raise GateInputError(path, f"{name}={ax} is out of range for {nd}-d arrays {shape}")
        return ax % nd

    s = norm(layout.sample_axis, "sample_axis")
    t = norm(layout.time_axis, "time_axis")
    c = norm(layout.channel_axis, "channel_axis")
    named = [a for a in (s, t, c) if a is not None]
    if len(set(named)) != len(named):
        raise GateInputError(path, f"layout names the same axis twice for shape {shape}")
    space = tuple(a for a in range(nd) if a not in named)
    if not space:
        raise GateInputError(path, f"no spatial axis left in shape {shape} with this layout")
    assert s is not None
    return _Plan(tuple(int(n) for n in shape), s, t, c, space)


def _canonical(x: np.ndarray, plan: _Plan) -> np.ndarray:
    """View ``x`` (a sample/time slice in the original axis order) as (S, T, space..., C)."""
    order = [plan.sample_axis]
    if plan.time_axis is not None:
        order.append(plan.time_axis)
    order += plan.space_axes
    if plan.channel_axis is not None:
        order.append(plan.channel_axis)
    y = x.transpose(order)
    if plan.time_axis is None:
        y = y[:, None]
    if plan.channel_axis is None:
        y = y[..., None]
    return y


def _largest_divisor(n: int, cap: int) -> int:
    """Largest d <= cap dividing n (1 when n is prime and > cap)."""
    for d in range(min(n, cap), 0, -1):
        if n % d == 0:
            return d
    return 1


def _work_dtype(*dtypes: Any) -> np.dtype:
    """float32 stays float32 (half the bytes), anything wider is computed in float64."""
    dt = np.result_type(*[np.dtype(d) for d in dtypes])
    return np.dtype(np.float32) if dt.itemsize <= 4 else np.dtype(np.float64)


# --------------------------------------------------------------------------- per-slab stats


@dataclass
class _SlabStats:
    """Raw sums for each (sample, time) slab of one chunk; float64."""

    se: np.ndarray  # (n, C) sum e
    se2: np.ndarray  # (n, C) sum e^2
    su: np.ndarray  # (n, C) sum u, u = t - t0 (t0: first target value of the slab)
    su2: np.ndarray  # (n, C) sum u^2
    t0: np.ndarray  # (n, C)
    sae: np.ndarray  # (n,) sum |e|
    maxe: np.ndarray  # (n,) max |e|
    neg: np.ndarray  # (n,) sum max(-p, 0)
    bse2: np.ndarray  # (n,) sum e^2 on the boundary
    bcn: np.ndarray  # (n,) periodic: sum seam jump; dirichlet: sum |p_b - value|
    bcd: np.ndarray  # (n,) periodic: sum interior neighbour difference next to the seam
    band: np.ndarray  # (n, 3) sum over channels of w_k |E_k|^2 per band

    @classmethod
    def zeros(cls, n: int, c: int) -> _SlabStats:
        z = np.zeros
        return cls(z((n, c)), z((n, c)), z((n, c)), z((n, c)), z((n, c)), z(n), z(n), z(n),
                   z(n), z(n), z(n), z((n, 3)))


class _Kernel:
    """Fused per-chunk computation with buffers reused across chunks.

    Cheap to build; the dask path builds one per task. ``engine="numba"`` hands the
    pointwise and face sums to gates.field_kernels.FusedSums (the FFT stays here).
    """

    def __init__(self, plan: _Plan, layout: FieldLayout, dtype: np.dtype, *,
                 pointwise: bool = True, spectral: bool = True, engine: Engine = "numpy",
                 block_bytes: int = _BLOCK_BYTES, group_bytes: int = _GROUP_BYTES) -> None:
        self.plan = plan
        self.layout = layout
        self.wd = np.dtype(dtype)
        self.pointwise = pointwise
        self.spectral = spectral
        self.C = plan.n_chan
        self.P = plan.points
        self.L = self.P * self.C
        slab_bytes = self.L * self.wd.itemsize
        self.group_slabs = max(1, group_bytes // slab_bytes)
        self.block_slabs = max(1, min(self.group_slabs, block_bytes // slab_bytes))
        if self.C == 1:
            self.W = _largest_divisor(self.L, _LEAF)
        else:  # rows of W = m*C values keep every channel in its own column
            self.W = _largest_divisor(self.P, max(1, _LEAF // self.C)) * self.C
        self.R = self.L // self.W
        self.R2 = _largest_divisor(self.R, _LEAF)  # rows added in the input precision
        self.ones = np.ones(self.W, self.wd)
        self._buffers: dict[str, np.ndarray] = {}
        self._views: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
        # last spatial axis: its edge columns 0, 1, n-2, n-1 (all channels) are strided,
        # so one flat np.take per group gathers them; the other axes use plain views
        n_last = plan.space[-1]
        pos = [0, min(1, n_last - 1), max(n_last - 2, 0), n_last - 1]
        cols = (np.array(pos)[:, None] * self.C + np.arange(self.C)).ravel()
        lines = np.arange(self.block_slabs * (self.P // n_last)) * (n_last * self.C)
        self.col_flat = (lines[:, None] + cols[None, :]).ravel()
        self.col_per_slab = (self.P // n_last) * cols.size
        if spectral:
            self._spectral_setup()
        # engine "numba": one compiled pass replaces _pointwise_group
        self.fused = (FusedSums(plan.space, self.C, layout.boundary, layout.dirichlet_value,
                                layout.nonnegative)
                      if engine == "numba" and pointwise else None)

    # buffers ------------------------------------------------------------------------
    def _buf(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Preallocated work buffer, grown on demand (chunks are usually all alike).

        Views are memoised per shape: this runs several times per block.
        """
        view = self._views.get((name, shape))
        if view is not None:
            return view
        size = math.prod(shape)
        b = self._buffers.get(name)
        if b is None or b.size < size:
            b = np.empty(size, self.wd)
            self._buffers[name] = b
            self._views = {key: v for key, v in self._views.items() if key[0] != name}
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

    # driver -------------------------------------------------------------------------
    def stats(self, pc: np.ndarray, tc: np.ndarray) -> _SlabStats:
        """Per-slab sums for canonical (S, T, space..., C) arrays of one chunk."""
        ns, nt = pc.shape[:2]
        st = _SlabStats.zeros(ns * nt, self.C)
        shape4 = self.plan.space + (self.C,)
        fused = self.fused
        if fused is not None and self._is_rows(pc) and self._is_rows(tc):
            # already (k, L) rows in the work dtype: one call for the chunk, its rows
            # split over the kernel's threads; the groups below only serve the FFT
            fused(pc.reshape(ns * nt, self.L), tc.reshape(ns * nt, self.L), st, 0)
            fused = None
            if not self.spectral:
                return st
        for a, b, ta, tb in self._groups(ns, nt):
            k = (b - a) * (tb - ta)
            j0 = a * nt + ta
            p2 = self._rows(pc[a:b, ta:tb], k, "p")
            t2 = self._rows(tc[a:b, ta:tb], k, "t")
            e2 = self._buf("e", (k, self.L)) if self.spectral else None
            if fused is not None:
                fused(p2, t2, st, j0)
            elif self.pointwise and self.fused is None:
                self._pointwise_group(p2, t2, e2, st, j0)
            if e2 is not None:
                if self.fused is not None or not self.pointwise:
                    np.subtract(p2, t2, out=e2)
                self._fft_bands(e2.reshape((k,) + shape4), st, j0)
        return st

    def reads_in_place(self, dtype: Any) -> bool:
        """True when the compiled loop reads chunks of this dtype straight from the window.

        Then a mapped window is not pre-faulted: the loop's threads take the page faults
        in parallel, overlapped with arithmetic (NumPy is better off with MAP_POPULATE).
        """
        return self.fused is not None and self.plan.in_order and np.dtype(dtype) == self.wd

    def _is_rows(self, x: np.ndarray) -> bool:
        """True when ``x`` reshapes to contiguous (k, L) rows of the work dtype (a view)."""
        return x.dtype == self.wd and x.flags.c_contiguous

    # pointwise sums -----------------------------------------------------------------
    # leaf quantities, in plane order: sum e, e^2, u^2, u, |e|, min(p, 0)
    _Q_SE, _Q_SE2, _Q_SU2, _Q_SU, _Q_SAE, _Q_NEG = range(6)

    def _pointwise_group(self, p2: np.ndarray, t2: np.ndarray, e2: np.ndarray | None,
                         st: _SlabStats, j0: int) -> None:
        """Fused block pass over a group, then one float64 fold of the float32 leaves."""
        k = p2.shape[0]
        n_q = 6 if self.layout.nonnegative else 5
        if self.C == 1:
            leaf = self._buf("leaf", (n_q, k, self.R))
        else:
            leaf = self._buf("leaf", (n_q, k, self.R // self.R2, self.W))
        maxe = self._buf("maxe", (k,))
        t0 = self._buf("t0", (k, self.C))
        ncol = self.col_per_slab
        pcol = self._buf("pcol", (k * ncol,))
        tcol = self._buf("tcol", (k * ncol,))
        bk = self.block_slabs
        for r0 in range(0, k, bk):
            r1 = min(r0 + bk, k)
            e = e2[r0:r1] if e2 is not None else None
            self._pointwise(p2[r0:r1], t2[r0:r1], e, leaf[:, r0:r1], maxe[r0:r1], t0[r0:r1])
            # edge columns of the last axis gathered while the block is still in L2
            idx = self.col_flat[: (r1 - r0) * ncol]
            np.take(p2[r0:r1].reshape(-1), idx, out=pcol[r0 * ncol : r1 * ncol], mode="clip")
            np.take(t2[r0:r1].reshape(-1), idx, out=tcol[r0 * ncol : r1 * ncol], mode="clip")
        sl = slice(j0, j0 + k)
        if self.C == 1:
            sums = leaf.sum(axis=2, dtype=np.float64)[:, :, None]  # (n_q, k, 1)
        else:
            y64 = leaf.reshape(n_q * k, -1).astype(np.float64)
            # channel c sits in every C-th column: a 0/1 selector folds them (a tiny
            # matmul; a reduction with a C-long inner loop is ~10x slower)
            sums = (y64 @ self._selector(y64.shape[1])).reshape(n_q, k, self.C)
        st.se[sl] = sums[self._Q_SE]
        st.se2[sl] = sums[self._Q_SE2]
        st.su[sl] = sums[self._Q_SU]
        st.su2[sl] = sums[self._Q_SU2]
        st.sae[sl] = sums[self._Q_SAE].sum(axis=1)
        if n_q == 6:
            st.neg[sl] = -sums[self._Q_NEG].sum(axis=1)
        st.maxe[sl] = maxe
        st.t0[sl] = t0
        shape4 = (k,) + self.plan.space + (self.C,)
        cols = (k,) + self.plan.space[:-1] + (4, self.C)
        self._boundary(p2.reshape(shape4), t2.reshape(shape4), pcol.reshape(cols),
                       tcol.reshape(cols), st, j0)

    def _pointwise(self, p: np.ndarray, t: np.ndarray, e_out: np.ndarray | None,
                   leaf: np.ndarray, maxe: np.ndarray, t0: np.ndarray) -> None:
        """Fused float32 leaf sums over one cache-sized block of kb whole slabs.

        Writes leaf sums (one per W values, see _Q_*), max |e| and t0 per slab; ``e_out``
        (when the FFT needs the error later) receives e = p - t. np.vecdot does one dot
        per row, so a slab's sums never depend on how many slabs share the call (gemv's
        row blocking would, and dask blocks differ from ours).
        """
        kb = p.shape[0]
        n_q = leaf.shape[0]
        np.copyto(t0, t[:, : self.C])
        if self.C == 1:
            e = e_out if e_out is not None else self._buf("eb", (kb, self.L))
            np.subtract(p, t, out=e)
            pl = self._buf("planes1", (n_q - 3, self.block_slabs, self.L))[:, :kb]
            u, a = pl[0], pl[1]  # planes in _Q_SU, _Q_SAE, _Q_NEG order
            np.subtract(t, t[:, :1], out=u)
            np.abs(e, out=a)
            if n_q == 6:
                np.minimum(p, 0, out=pl[2])
            shp = (kb, self.R, self.W)
            er = e.reshape(shp)
            ur = u.reshape(shp)
            np.vecdot(er, self.ones, out=leaf[self._Q_SE])
            np.vecdot(er, er, out=leaf[self._Q_SE2])
            np.vecdot(ur, ur, out=leaf[self._Q_SU2])
            np.vecdot(pl.reshape((n_q - 3,) + shp), self.ones, out=leaf[self._Q_SU :])
            np.max(a, axis=1, out=maxe)
            return
        pl = self._buf("planesC", (n_q, self.block_slabs, self.L))[:, :kb]
        e, e_sq, u_sq, u, a = pl[0], pl[1], pl[2], pl[3], pl[4]
        np.subtract(p, t, out=e)
        if e_out is not None:
            np.copyto(e_out, e)
        np.multiply(e, e, out=e_sq)
        # u = t - t0 per channel; t0 tiled to a W-wide row keeps the inner loop long
        t0w = np.tile(t0, (1, self.W // self.C))[:, None, :]
        np.subtract(t.reshape(kb, self.R, self.W), t0w, out=u.reshape(kb, self.R, self.W))
        np.multiply(u, u, out=u_sq)
        np.abs(e, out=a)
        if n_q == 6:
            np.minimum(p, 0, out=pl[5])
        # add whole rows of W = m*C values (channels stay in columns), R2 rows per leaf
        r1 = self.R // self.R2
        np.sum(pl.reshape(n_q, kb, r1, self.R2, self.W), axis=3, out=leaf)
        np.max(a, axis=1, out=maxe)

    def _selector(self, width: int) -> np.ndarray:
        """(width, C) 0/1 matrix picking channel c from every C-th column."""
        sel = self._buffers.get("sel64")
        if sel is None or sel.shape[0] != width:
            sel = np.tile(np.eye(self.C), (width // self.C, 1))
            self._buffers["sel64"] = sel
        return sel

    # boundary -----------------------------------------------------------------------
    def _boundary(self, p: np.ndarray, t: np.ndarray, pcol: np.ndarray, tcol: np.ndarray,
                  st: _SlabStats, j: int) -> None:
        """bRMSE and bc_violation sums from the box faces of (k, space..., C) slabs.

        Faces of the last spatial axis come from ``pcol``/``tcol`` (its columns 0, 1,
        n-2, n-1 gathered per block); the others are basic-slice views, both faces of an
        axis in one strided slice. Only face values are converted to float64.
        """
        k = p.shape[0]
        sl = slice(j, j + k)
        space = self.plan.space
        last = len(space) - 1
        f64 = np.float64
        kind = self.layout.boundary
        for d, n in enumerate(space):
            ix: list[slice | int] = [slice(None)] * p.ndim
            for d2 in range(d):  # earlier axes interior only, so no point counts twice
                ix[1 + d2] = slice(1, -1)
            if d == last:  # columns (0, 1, n-2, n-1) -> faces 0 and n-1 are 0 and 3
                ix[1 + d] = slice(0, 1) if n == 1 else slice(0, 4, 3)
                pf, tf = pcol[tuple(ix)], tcol[tuple(ix)]
            else:
                ix[1 + d] = slice(0, 1) if n == 1 else slice(0, n, n - 1)
                pf, tf = p[tuple(ix)], t[tuple(ix)]
            ef = np.subtract(pf, tf, dtype=f64).reshape(k, -1)
            st.bse2[sl] += np.vecdot(ef, ef)
            if kind == "dirichlet":
                dev = np.abs(np.subtract(pf, self.layout.dirichlet_value, dtype=f64))
                st.bcn[sl] += dev.reshape(k, -1).sum(axis=1)
        if kind != "periodic":
            return
        for d, n in enumerate(space):
            if n < 3:
                continue
            x, m = (pcol, 4) if d == last else (p, n)
            ix = [slice(None)] * p.ndim
            ix[1 + d] = slice(0, m, m - 1)  # first and last
            ends = x[tuple(ix)]
            ix[1 + d] = slice(1, m, m - 2)  # second and last
            hi = x[tuple(ix)]
            ix[1 + d] = slice(0, m - 1, m - 2)  # first and second-to-last
            lo = x[tuple(ix)]
            jump = np.abs(np.diff(ends, axis=1 + d).astype(f64))
            near = np.abs(np.subtract(hi, lo, dtype=f64))
            st.bcn[sl] += jump.reshape(k, -1).sum(axis=1)
            st.bcd[sl] += 0.5 * near.reshape(k, -1).sum(axis=1)

    # spectral -----------------------------------------------------------------------
    def _spectral_setup(self) -> None:
        """Radial |k| of every rfftn mode, Hermitian weights and the low/mid selections.

        Indices address the spectrum viewed as real pairs, (modes..., C, re/im) flattened,
        so |E_k|^2 never needs its own array.
        """
        space = self.plan.space
        grids = [np.fft.fftfreq(n, 1.0 / n) for n in space[:-1]]
        grids.append(np.arange(space[-1] // 2 + 1, dtype=np.float64))
        kk = np.meshgrid(*grids, indexing="ij")
        kmag = np.sqrt(sum(g * g for g in kk)).ravel()
        last = kk[-1].ravel()
        w = np.full(kmag.shape, 2.0)  # rfftn keeps one of each conjugate pair
        w[last == 0] = 1.0
        if space[-1] % 2 == 0:
            w[last == space[-1] // 2] = 1.0
        modes = np.flatnonzero(kmag < BANDS[1])
        per_mode = 2 * self.C  # C channels x (re, im)
        self.sel = (modes[:, None] * per_mode + np.arange(per_mode)[None, :]).ravel()
        km = np.repeat(kmag[modes], per_mode)
        wm = np.repeat(w[modes], per_mode)
        self.w_low = np.where(km < BANDS[0], wm, 0.0)
        self.w_mid = np.where(km >= BANDS[0], wm, 0.0)
        self.fft_axes = tuple(range(1, 1 + len(space)))
        self.nyquist = space[-1] % 2 == 0 and space[-1] > 1

    def _fft_bands(self, e: np.ndarray, st: _SlabStats, j: int) -> None:
        """Band energies of the error from one rfftn per slab (float32 stays complex64).

        The spectrum is squared in place as real pairs. low and mid (the few modes with
        |k| < 12) are gathered, then zeroed, so the remaining Hermitian-weighted sum is
        the high band itself rather than a difference of large totals (which the square
        root would turn into a visible floor).
        """
        k = e.shape[0]
        sl = slice(j, j + k)
        f64 = np.float64
        spec = np.ascontiguousarray(np.fft.rfftn(e, axes=self.fft_axes))
        x = spec.view(spec.real.dtype)  # (k, modes..., 2C): re, im interleaved
        np.square(x, out=x)
        rows = x.reshape(k, -1)
        g = rows[:, self.sel].astype(f64)
        st.band[sl, 0] = g @ self.w_low
        st.band[sl, 1] = g @ self.w_mid
        rows[:, self.sel] = 0
        lastax = len(self.plan.space)
        high = 2.0 * _leaf_sums(rows)
        high -= _leaf_sums(np.take(x, 0, axis=lastax).reshape(k, -1))
        if self.nyquist:
            high -= _leaf_sums(np.take(x, -1, axis=lastax).reshape(k, -1))
        st.band[sl, 2] = high


def _leaf_sums(rows: np.ndarray) -> np.ndarray:
    """Row sums of (k, n): pairwise in the input precision over 256 values, then float64."""
    k, n = rows.shape
    m = n - n % _LEAF
    out = rows[:, :m].reshape(k, -1, _LEAF).sum(axis=2).sum(axis=1, dtype=np.float64)
    if m < n:
        out += rows[:, m:].sum(axis=1, dtype=np.float64)
    return out


# --------------------------------------------------------------------------- accumulators

_ADD = ("se2", "sae", "st2", "neg", "vr", "csq", "gap", "bse2", "bcn", "bcd", "low", "mid", "high")
_A = {name: i for i, name in enumerate(_ADD)}


@dataclass
class _Partial:
    """Per-sample partial results of one block of samples x time steps; combinable."""

    add: np.ndarray  # (ns, len(_ADD)) sums
    mx: np.ndarray  # (ns, 1 + C): max |e|, then max_t S_p(t, c)
    mn: np.ndarray  # (ns, C): min_t S_p(t, c)
    first: np.ndarray  # (ns, C): S_p(0, c), NaN when this block does not hold t = 0

    @classmethod
    def empty(cls, ns: int, c: int) -> _Partial:
        return cls(np.zeros((ns, len(_ADD))), np.full((ns, 1 + c), -np.inf),
                   np.full((ns, c), np.inf), np.full((ns, c), np.nan))

    def merge(self, s0: int, other: _Partial) -> None:
        """Fold ``other`` (samples s0.. of this one) in; order does not matter."""
        sl = slice(s0, s0 + other.add.shape[0])
        self.add[sl] += other.add
        np.maximum(self.mx[sl], other.mx, out=self.mx[sl])
        np.minimum(self.mn[sl], other.mn, out=self.mn[sl])
        np.fmax(self.first[sl], other.first, out=self.first[sl])


def _partial(st: _SlabStats, ns: int, nt: int, t_offset: int, plan: _Plan) -> _Partial:
    """Reduce per-slab sums to per-sample partials (per-(t, c) ratios taken here)."""
    P = float(plan.points)
    C = plan.n_chan
    r = lambda a: a.reshape((ns, nt) + a.shape[1:])  # noqa: E731
    se, se2, su, su2, t0 = r(st.se), r(st.se2), r(st.su), r(st.su2), r(st.t0)
    st2 = su2 + 2.0 * t0 * su + P * t0 * t0  # sum t^2 from the shifted sums
    var = np.maximum(su2 / P - (su / P) ** 2, 0.0)
    vr = np.sqrt((se2 / P) / (var + EPS))
    sp = su + P * t0 + se  # spatial sum of the prediction
    out = _Partial.empty(ns, C)
    add = out.add
    add[:, _A["se2"]] = se2.sum(axis=(1, 2))
    add[:, _A["sae"]] = r(st.sae).sum(axis=1)
    add[:, _A["st2"]] = st2.sum(axis=(1, 2))
    add[:, _A["neg"]] = r(st.neg).sum(axis=1)
    add[:, _A["vr"]] = vr.sum(axis=(1, 2))
    add[:, _A["csq"]] = ((se / P) ** 2).sum(axis=(1, 2))
    add[:, _A["gap"]] = np.abs(se).sum(axis=(1, 2))
    add[:, _A["bse2"]] = r(st.bse2).sum(axis=1)
    add[:, _A["bcn"]] = r(st.bcn).sum(axis=1)
    add[:, _A["bcd"]] = r(st.bcd).sum(axis=1)
    band = r(st.band).sum(axis=1)
    add[:, _A["low"]] = band[:, 0]
    add[:, _A["mid"]] = band[:, 1]
    add[:, _A["high"]] = band[:, 2]
    out.mx[:, 0] = r(st.maxe).max(axis=1)
    out.mx[:, 1:] = sp.max(axis=1)
    out.mn[:] = sp.min(axis=1)
    if t_offset == 0:
        out.first[:] = sp[:, 0]
    return out


# --------------------------------------------------------------------------- metric formulas


@dataclass(frozen=True)
class _Totals:
    """Accumulated per-sample sums plus the counts the formulas divide by."""

    acc: _Partial
    plan: _Plan
    layout: FieldLayout

    def col(self, name: str) -> np.ndarray:
        return self.acc.add[:, _A[name]]

    @property
    def tc(self) -> float:
        return float(self.plan.n_times * self.plan.n_chan)

    @property
    def n(self) -> float:
        return self.tc * self.plan.points


def _m_mse(z: _Totals) -> np.ndarray:
    """mse = mean e^2 over the sample."""
    return z.col("se2") / z.n


def _m_mae(z: _Totals) -> np.ndarray:
    """mae = mean |e| over the sample."""
    return z.col("sae") / z.n


def _m_rmse(z: _Totals) -> np.ndarray:
    """rmse = sqrt(mean e^2)."""
    return np.sqrt(_m_mse(z))


def _m_nrmse(z: _Totals) -> np.ndarray:
    """nrmse = sqrt(mean e^2) / (sqrt(mean t^2) + EPS), whole sample (PDEBench's nRMSE idea).

    Differs from rel_l2 only in how the guard scales; a zero target gives rmse/EPS.
    """
    return np.sqrt(_m_mse(z)) / (np.sqrt(z.col("st2") / z.n) + EPS)


def _m_rel_l2(z: _Totals) -> np.ndarray:
    """rel_l2 = ||e||_2 / (||t||_2 + EPS) over all values of the sample (FNO-style relative L2).

    Equal to nrmse whenever ||t|| >> EPS; both names are reported because baselines use either.
    """
    return np.sqrt(z.col("se2")) / (np.sqrt(z.col("st2")) + EPS)


def _m_max_error(z: _Totals) -> np.ndarray:
    """max_error = max |e| over the sample (NaN if the sample holds NaN)."""
    return z.acc.mx[:, 0].copy()


def _m_crmse(z: _Totals) -> np.ndarray:
    """cRMSE (PDEBench, error of the conserved quantity) = sqrt(mean_{t,c} (mean_x e)^2).

    mean_x e = (S_p - S_t)/P is the error of the spatial mean, i.e. of the conserved
    integral per grid point.
    """
    return np.sqrt(z.col("csq") / z.tc)


def _m_brmse(z: _Totals) -> np.ndarray:
    """bRMSE (PDEBench, boundary error) = sqrt(mean of e^2 over the box faces, t and c).

    Faces are all points with some spatial index 0 or n-1, each counted once.
    """
    return np.sqrt(z.col("bse2") / (z.tc * z.plan.n_boundary))


def _frmse(z: _Totals, band: str) -> np.ndarray:
    p = float(z.plan.points)
    return np.sqrt(np.maximum(z.col(band), 0.0) / (p * p * z.tc))


def _m_frmse_low(z: _Totals) -> np.ndarray:
    """fRMSE low band (PDEBench's spectral split): modes with |k| < 4.

    With E = rfftn(e) over the spatial axes (integer wavenumbers, |k| the radial
    magnitude), frmse_B = sqrt( sum_{t,c} sum_{k in B} w_k |E_k|^2 / (P^2 T C) ), w_k = 2 for
    the modes rfftn folds (1 for k_last = 0 and Nyquist). By Parseval the three bands
    add up: frmse_low^2 + frmse_mid^2 + frmse_high^2 = rmse^2.
    """
    return _frmse(z, "low")


def _m_frmse_mid(z: _Totals) -> np.ndarray:
    """fRMSE mid band: 4 <= |k| < 12 (definition as frmse_low)."""
    return _frmse(z, "mid")


def _m_frmse_high(z: _Totals) -> np.ndarray:
    """fRMSE high band: |k| >= 12 (definition as frmse_low); total minus low and mid."""
    return _frmse(z, "high")


def _m_vrmse(z: _Totals) -> np.ndarray:
    """VRMSE (The Well) = mean_{t,c} sqrt( mean_x e^2 / (var_x t + EPS) ).

    Normalising by the target's spatial variance makes a constant offset not count
    as skill; ~1 means no better than predicting the spatial mean.
    """
    return z.col("vr") / z.tc


def _m_conservation_gap(z: _Totals) -> np.ndarray:
    """conservation_gap = mean_{t,c} |S_p(t,c) - S_t(t,c)| (raw spatial sums, not means)."""
    return z.col("gap") / z.tc


def _m_conservation_drift(z: _Totals) -> np.ndarray:
    """conservation_drift = mean_c max_t |S_p(t,c) - S_p(0,c)|: drift of the predicted sum.

    Needs no target: a conserving model keeps its own integral; 0 without a time axis.
    """
    first = z.acc.first
    drift = np.maximum(z.acc.mx[:, 1:] - first, first - z.acc.mn)
    return drift.mean(axis=1)


def _m_bc_violation(z: _Totals) -> np.ndarray:
    """bc_violation, by FieldLayout.boundary.

    * periodic: seam jump ratio J/R, J = mean |p[0] - p[n-1]| across the seam of every
      spatial axis with n >= 3, R = mean (|p[1] - p[0]| + |p[n-1] - p[n-2]|)/2, the
      neighbour differences just inside it, both over t and c; R + EPS guards a constant
      field. About 1 for a smooth periodic field; grows with a jump at the seam.
    * dirichlet: mean |p - dirichlet_value| over the box faces (as bRMSE's points).
    * none: 0.
    """
    kind = z.layout.boundary
    if kind == "dirichlet":
        return z.col("bcn") / (z.tc * z.plan.n_boundary)
    if kind == "periodic" and z.plan.n_seam:
        cnt = z.tc * z.plan.n_seam
        return (z.col("bcn") / cnt) / (z.col("bcd") / cnt + EPS)
    return np.zeros(z.acc.add.shape[0])


def _m_negativity_penalty(z: _Totals) -> np.ndarray:
    """negativity_penalty = mean max(-p, 0) when layout.nonnegative, else 0."""
    if not z.layout.nonnegative:
        return np.zeros(z.acc.add.shape[0])
    return z.col("neg") / z.n


_POINTWISE: dict[str, Callable[[_Totals], np.ndarray]] = {
    "mse": _m_mse,
    "mae": _m_mae,
    "rmse": _m_rmse,
    "nrmse": _m_nrmse,
    "rel_l2": _m_rel_l2,
    "max_error": _m_max_error,
    "crmse": _m_crmse,
    "brmse": _m_brmse,
    "vrmse": _m_vrmse,
    "conservation_gap": _m_conservation_gap,
    "conservation_drift": _m_conservation_drift,
    "bc_violation": _m_bc_violation,
    "negativity_penalty": _m_negativity_penalty,
}
_SPECTRAL: dict[str, Callable[[_Totals], np.ndarray]] = {
    "frmse_low": _m_frmse_low,
    "frmse_mid": _m_frmse_mid,
    "frmse_high": _m_frmse_high,
}
METRIC_NAMES: tuple[str, ...] = (
    "mse", "mae", "rmse", "nrmse", "rel_l2", "max_error", "crmse", "brmse", "frmse_low",
    "frmse_mid", "frmse_high", "vrmse", "conservation_gap", "conservation_drift",
    "bc_violation", "negativity_penalty",
)
METRIC_DOCS: dict[str, str] = {
    name: (_POINTWISE.get(name) or _SPECTRAL[name]).__doc__ or "" for name in METRIC_NAMES
}


def _finalize(acc: _Partial, plan: _Plan, layout: FieldLayout, *, pointwise: bool,
              spectral: bool) -> dict[str, np.ndarray]:
    z = _Totals(acc, plan, layout)
    chosen = {**(_POINTWISE if pointwise else {}), **(_SPECTRAL if spectral else {})}
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            name: np.asarray(chosen[name](z), dtype=np.float64)
            for name in METRIC_NAMES
            if name in chosen
        }


# --------------------------------------------------------------------------- NumPy streaming


def _chunk_ranges(plan: _Plan, itemsize: int, chunk_bytes: int,
                  native: tuple[int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """(s0, s1, t0, t1) chunks of at most chunk_bytes per array (at least one slab).

    ``native`` = the store's own (sample, time) chunk lengths: ranges are rounded to
    them so no stored chunk is decompressed twice (a stored chunk larger than
    chunk_bytes is then read whole).
    """
    S, T = plan.n_samples, plan.n_times
    ns, nt = native if native is not None else (1, 1)
    sample_bytes = math.prod(plan.shape) // S * itemsize
    if sample_bytes <= chunk_bytes or (ns > 1 and nt >= T):
        per = _align(max(1, chunk_bytes // sample_bytes), ns)
        return [(s, min(s + per, S), 0, T) for s in range(0, S, per)]
    slab_bytes = max(1, sample_bytes // T)
    per_t = _align(max(1, chunk_bytes // slab_bytes), nt)
    return [(s, s + 1, t, min(t + per_t, T)) for s in range(S) for t in range(0, T, per_t)]


def _align(n: int, native: int) -> int:
    """n rounded down to a multiple of native, but at least native."""
    return max(native, n - n % native) if native > 1 else n


def _native_chunks(arr: Any, plan: _Plan) -> tuple[int, int] | None:
    """(sample, time) chunk lengths of a chunked store (zarr), else None."""
    chunks = getattr(arr, "chunks", None)
    if isinstance(arr, np.ndarray) or not isinstance(chunks, tuple) or not chunks:
        return None
    if not all(isinstance(c, int | np.integer) for c in chunks):
        return None  # e.g. dask's tuple of tuples
    t = int(chunks[plan.time_axis]) if plan.time_axis is not None else 1
    return int(chunks[plan.sample_axis]), t


def _nbytes(arr: Any) -> int:
    """Bytes of an array-like from its shape and dtype (nothing is read)."""
    return math.prod(arr.shape) * np.dtype(arr.dtype).itemsize


def _index(plan: _Plan, s0: int, s1: int, t0: int, t1: int) -> list[slice]:
    idx = [slice(None)] * len(plan.shape)
    idx[plan.sample_axis] = slice(s0, s1)
    if plan.time_axis is not None:
        idx[plan.time_axis] = slice(t0, t1)
    return idx


def _block_partial(p: np.ndarray, t: np.ndarray, plan: _Plan, kernel: _Kernel,
                   t_offset: int) -> _Partial:
    """Per-sample partials for one block given in the original axis order."""
    pc = _canonical(p, plan)
    tc = _canonical(t, plan)
    ns, nt = pc.shape[:2]
    return _partial(kernel.stats(pc, tc), ns, nt, t_offset, plan)


def _read_partial(pred: Any, target: Any, plan: _Plan, kernel: _Kernel,
                  rng: tuple[int, int, int, int]) -> _Partial:
    """Read one chunk (mapped window / zarr read), reduce it, release it on return."""
    idx = _index(plan, *rng)
    p = read_block(pred, idx, populate=not kernel.reads_in_place(pred.dtype))
    t = read_block(target, idx, populate=not kernel.reads_in_place(target.dtype))
    return _block_partial(p, t, plan, kernel, rng[2])


def compute_field_metrics_arrays(
    pred: ArrayLike,
    target: ArrayLike,
    layout: FieldLayout = DEFAULT_LAYOUT,
    *,
    chunk_bytes: int = 64 << 20,
    progress: Callable[[int, int], None] | None = None,
    source: str | Path = "<arrays>",
    pointwise: bool = True,
    spectral: bool = True,
    kernel: str | None = None,
) -> dict[str, np.ndarray]:
    """Stream already-open arrays (memmap, zarr, ndarray) through one pass.

    ``pointwise=False`` / ``spectral=False`` skip the direct-space metrics or the fRMSE
    bands (and omit their keys); used by the benchmark to time each part.
    ``kernel`` picks the pointwise kernel: ``"numpy"``, ``"numba"`` (the compiled fused
    loop of gates.field_kernels, needs numba) or ``"auto"``; None defers to the
    GATES_FIELDS_KERNEL variable, then auto (numba for large inputs when installed).
    ``source`` names the data in error messages.
    """
    check_pair(pred, target, source)
    plan = _plan(tuple(pred.shape), layout, source)
    wd = _work_dtype(pred.dtype, target.dtype)
    engine = choose(_nbytes(pred) + _nbytes(target), kernel, plan.n_chan)
    kern = _Kernel(plan, layout, wd, pointwise=pointwise, spectral=spectral, engine=engine)
    itemsize = max(np.dtype(pred.dtype).itemsize, np.dtype(target.dtype).itemsize)
    native = _native_chunks(pred, plan)
    ranges = _chunk_ranges(plan, itemsize, max(1, int(chunk_bytes)), native)
    acc = _Partial.empty(plan.n_samples, plan.n_chan)
    for i, rng in enumerate(ranges):
        acc.merge(rng[0], _read_partial(pred, target, plan, kern, rng))
        if progress is not None:
            progress(i + 1, len(ranges))
    return _finalize(acc, plan, layout, pointwise=pointwise, spectral=spectral)


def compute_field_metrics(
    path: str | Path,
    layout: FieldLayout = DEFAULT_LAYOUT,
    *,
    chunk_bytes: int = 64 << 20,
    progress: Callable[[int, int], None] | None = None,
    dask_scheduler: str | None = None,
    kernel: str | None = None,
) -> dict[str, np.ndarray]:
    """Per-sample metrics (keys in METRIC_NAMES, no ``field/`` prefix) for the file at path.

    ``progress(done_chunks, total_chunks)`` is called as chunks complete. With
    ``dask_scheduler`` (an address such as ``tcp://host:8786``) the same computation runs
    as dask tasks on that distributed cluster (workers must see ``path``). ``kernel``:
    see compute_field_metrics_arrays.
    """
    pred, target = open_arrays(path)
    if dask_scheduler is None:
        return compute_field_metrics_arrays(
            pred, target, layout, chunk_bytes=chunk_bytes, progress=progress, source=path,
            kernel=kernel,
        )
    from distributed import Client

    plan = _plan(tuple(pred.shape), layout, path)
    itemsize = max(np.dtype(pred.dtype).itemsize, np.dtype(target.dtype).itemsize)
    dp = _as_dask(pred, plan, itemsize, chunk_bytes)
    dt = _as_dask(target, plan, itemsize, chunk_bytes)
    with Client(dask_scheduler, set_as_default=True):
        out = compute_field_metrics_dask(dp, dt, layout, kernel=kernel)
    if progress is not None:
        progress(1, 1)
    return out


# --------------------------------------------------------------------------- dask


def _as_dask(arr: Any, plan: _Plan, itemsize: int, chunk_bytes: int) -> dask.array.Array:
    """Wrap a source as dask.array with chunks along sample/time only (zarr: from_zarr)."""
    import dask.array as da

    ranges = _chunk_ranges(plan, itemsize, max(1, int(chunk_bytes)), _native_chunks(arr, plan))
    s_step = ranges[0][1] - ranges[0][0]
    t_step = ranges[0][3] - ranges[0][2]
    chunks: list[int] = list(plan.shape)
    chunks[plan.sample_axis] = s_step
    if plan.time_axis is not None:
        chunks[plan.time_axis] = t_step
    if type(arr).__module__.startswith("zarr"):
        return da.from_zarr(arr, chunks=tuple(chunks))
    if window_mappable(arr):
        arr = NpyFile.from_memmap(arr)
    meta = np.empty((0,) * len(plan.shape), dtype=arr.dtype)
    return da.from_array(arr, chunks=tuple(chunks), meta=meta)


def compute_field_metrics_dask(
    pred: dask.array.Array,
    target: dask.array.Array,
    layout: FieldLayout = DEFAULT_LAYOUT,
    *,
    kernel: str | None = None,
) -> dict[str, np.ndarray]:
    """Same metrics over dask arrays, on the current dask scheduler (e.g. a distributed Client).

    Space and channel axes are rechunked whole (slabs are never split); each block
    yields per-sample partials, combined here. Only those small partials travel back to
    the client. ``kernel`` as in compute_field_metrics_arrays, resolved on each worker
    (auto uses numba where the worker has it and the whole input is large enough).
    """
    import dask

    source = "<dask arrays>"
    check_pair(pred, target, source)
    plan = _plan(tuple(pred.shape), layout, source)
    whole = {ax: -1 for ax in range(len(plan.shape))
             if ax not in (plan.sample_axis, plan.time_axis)}
    pred = pred.rechunk(whole)
    target = target.rechunk(pred.chunks)
    wd = _work_dtype(pred.dtype, target.dtype)
    s_off = np.concatenate([[0], np.cumsum(pred.chunks[plan.sample_axis])])
    t_off = (np.concatenate([[0], np.cumsum(pred.chunks[plan.time_axis])])
             if plan.time_axis is not None else np.zeros(1, dtype=int))
    total = _nbytes(pred) + _nbytes(target)
    pd = pred.to_delayed()
    td = target.to_delayed()
    tasks = []
    starts = []
    for bidx in np.ndindex(*pd.shape):
        t0 = int(t_off[bidx[plan.time_axis]]) if plan.time_axis is not None else 0
        tasks.append(dask.delayed(_dask_block)(pd[bidx], td[bidx], plan, layout, wd, t0,
                                               kernel, total))
        starts.append(int(s_off[bidx[plan.sample_axis]]))
    results = dask.compute(*tasks)
    acc = _Partial.empty(plan.n_samples, plan.n_chan)
    for s0, part in zip(starts, results, strict=True):
        acc.merge(s0, part)
    return _finalize(acc, plan, layout, pointwise=True, spectral=True)


def _dask_block(p: np.ndarray, t: np.ndarray, plan: _Plan, layout: FieldLayout,
                wd: np.dtype, t_offset: int, kernel: str | None, total: int) -> _Partial:
    """One dask task: the chosen kernel on an in-memory block."""
    kern = _Kernel(plan, layout, wd, engine=choose(total, kernel, plan.n_chan))
    return _block_partial(np.asarray(p), np.asarray(t), plan, kern, t_offset)
