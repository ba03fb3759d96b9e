"""Optional numba kernel: every pointwise and face sum of a chunk in one fused loop.

The NumPy kernel (gates.fields.kernels) makes ~8 array passes per value (subtract, abs,
square, leaf sums, max, ...). With numba installed (the ``fast`` extra) one compiled
loop reads each value of pred and target once and keeps every accumulator in registers:
per channel sum e, sum e^2, sum u, sum u^2 (u = t - t0, the slab's first target value
per channel) and max |e|; over channels sum |e| and sum max(-p, 0); then PDEBench's face
sums while the slab is still in cache. The spectra stay on NumPy's FFT.

Precision: every value is widened to float64 before any arithmetic, so float32 input is
summed more accurately than by the NumPy kernel's float32 leaves; float64 results agree
with the NumPy kernel to float64 rounding (different summation order only). The loop is
compiled with ``reassoc`` so LLVM can vectorise the sums, but ``p - t`` and ``t - t0``
are emitted as flagged subtractions that the fast-math pass leaves alone, so the
compiler is not allowed to re-associate them into ``sum p - sum t`` (which would cancel).
Sums run in blocks of ``_BLOCK`` points added into float64 totals. max |e| is an integer max
of the float64 bit patterns (non-negative floats order like their bits, NaN above inf),
which vectorises without fast-math on NaN and still propagates NaN like np.max.

Compilation happens on first use in the process (no ``cache=True``: that would write
into the installed package): ~1.5-2 s, numba's import included, then ~1 s for each other
channel count or dtype. ``choose`` decides, per computation, whether the input is large
enough to repay it (GATES_FIELDS_KERNEL=numpy|numba|auto overrides); the choice depends
only on the input, never on what ran before. This module never imports numba at import
time (``import numba`` below is the top-level package: imports are absolute).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from gates.errors import GateInputError

__all__ = [
    "AUTO_MAX_CHANNELS",
    "KERNEL_ENV",
    "MIN_BYTES",
    "FusedSums",
    "choose",
    "default_threads",
    "numba_available",
    "warm_up",
]

KERNEL_ENV = "GATES_FIELDS_KERNEL"
"""Environment override: ``numpy``, ``numba`` or ``auto`` (the default)."""

MIN_BYTES = 8 << 30
"""Auto mode uses numba when pred + target hold at least this many bytes.

numba's first use in a process costs ~1.4-1.8 s (import ~0.2 s, compilation ~1.2-1.5 s).
On the 2-core reference machine the fused loop then saves ~0.15 s per GB with the
pointwise metrics alone (~5 -> ~20-24 GB/s) and 0.1-0.25 s per GB with every metric
(the FFT dominates), so it is repaid from ~5-13 GiB depending on the run: 8 GiB is the
middle. GATES_FIELDS_KERNEL=numba, or kernel="numba", uses it regardless of size.
"""

AUTO_MAX_CHANNELS = 8
"""Auto mode keeps the NumPy kernel above this many channels: LLVM stops vectorising the
channel-strided loop (C=11: ~4.6 GB/s, barely ahead of NumPy's ~3.2) while compiling
takes longer (~2 s)."""

_SPLIT_BYTES = 8 << 20  # bytes of pred + target per thread before a call is split
_BLOCK = 4096  # points summed in block accumulators before the float64 totals
_FASTMATH = {"reassoc", "contract", "nsz"}  # no nnan/ninf: NaN must propagate

Engine = Literal["numpy", "numba"]


@functools.cache
def numba_available() -> bool:
    """True when numba imports (imported here, once, never at module import)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def choose(total_bytes: int, kernel: str | None = None, channels: int = 1) -> Engine:
    """``"numpy"`` or ``"numba"`` for a computation over ``total_bytes`` of pred + target.

    ``kernel`` (the caller's choice, e.g. ``"auto"``) wins over GATES_FIELDS_KERNEL; in
    auto mode numba is used when it imports, ``total_bytes >= MIN_BYTES`` and
    ``channels <= AUTO_MAX_CHANNELS``. Asking for numba without numba installed is an
    error rather than a silent fallback.
    """
    choice = (kernel or os.environ.get(KERNEL_ENV) or "auto").strip().lower()
    source = "kernel" if kernel else KERNEL_ENV
    if choice not in ("auto", "numpy", "numba"):
        raise GateInputError(None, f"{source} must be auto, numpy or numba, got {choice!r}")
    if choice == "numba" and not numba_available():
        raise GateInputError(
            None, f"{source}=numba but numba is not installed (install the 'fast' extra)"
        )
    if choice == "auto":
        big = total_bytes >= MIN_BYTES and channels <= AUTO_MAX_CHANNELS
        return "numba" if big and numba_available() else "numpy"
    return "numba" if choice == "numba" else "numpy"


# --------------------------------------------------------------------------- compiled code


def _loop_source(channels: int, block: int) -> str:
    """Source of the fused kernel for a fixed channel count.

    Channel c of a slab row sits at every C-th value; writing one scalar accumulator per
    (quantity, channel) keeps them in registers and lets LLVM vectorise the C-strided
    loop (accumulator arrays indexed by a runtime channel would live in memory).
    """
    c_range = range(channels)
    body = [
        "def fused(p, t, space, se, se2, su, su2, t0, sae, maxbits, neg, bse2):",
        "    k, n_values = p.shape",
        f"    n_points = n_values // {channels}",
        "    for r in range(k):",
        "        pr = p[r]",
        "        tr = t[r]",
        "        tot_ae = 0.0",
        "        tot_neg = 0.0",
    ]
    for c in c_range:
        body += [
            f"        t0_{c} = np.float64(tr[{c}])",
            f"        tse_{c} = 0.0; tse2_{c} = 0.0; tsu_{c} = 0.0; tsu2_{c} = 0.0; mx_{c} = 0",
        ]
    body += [
        f"        for x0 in range(0, n_points, {block}):",
        f"            x1 = min(x0 + {block}, n_points)",
        "            s_ae = 0.0",
        "            s_neg = 0.0",
    ]
    body += [f"            s_e_{c} = 0.0; s_e2_{c} = 0.0; s_u_{c} = 0.0; s_u2_{c} = 0.0"
             for c in c_range]
    body += [  # a block as its own views: a loop from 0 vectorises, range(x0, x1) did not
        f"            qp = pr[x0 * {channels} : x1 * {channels}]",
        f"            qt = tr[x0 * {channels} : x1 * {channels}]",
        "            for x in range(x1 - x0):",
        f"                i = x * {channels}",
    ]
    for c in c_range:
        body += [
            f"                pv = np.float64(qp[i + {c}])",
            f"                tv = np.float64(qt[i + {c}])",
            "                e = _sub(pv, tv)",
            f"                u = _sub(tv, t0_{c})",
            f"                s_e_{c} += e",
            f"                s_e2_{c} += e * e",
            f"                s_u_{c} += u",
            f"                s_u2_{c} += u * u",
            "                a = abs(e)",
            "                s_ae += a",
            f"                mx_{c} = max(mx_{c}, _bits(a))",
            # min(p, 0) that keeps NaN, as np.minimum does
            "                s_neg += pv if not (pv >= 0.0) else 0.0",
        ]
    body += ["            tot_ae += s_ae", "            tot_neg += s_neg"]
    body += [f"            tse_{c} += s_e_{c}; tse2_{c} += s_e2_{c}; "
             f"tsu_{c} += s_u_{c}; tsu2_{c} += s_u2_{c}" for c in c_range]
    for c in c_range:
        body += [
            f"        se[r, {c}] = tse_{c}",
            f"        se2[r, {c}] = tse2_{c}",
            f"        su[r, {c}] = tsu_{c}",
            f"        su2[r, {c}] = tsu2_{c}",
            f"        t0[r, {c}] = t0_{c}",
            f"        maxbits[r, {c}] = mx_{c}",
        ]
    body += [
        "        sae[r] = tot_ae",
        "        neg[r] = 0.0 - tot_neg",
        f"        _faces(pr, tr, space, {channels}, bse2[r])",
    ]
    return "\n".join(body) + "\n"


@functools.cache
def _compiled(channels: int) -> Callable[..., None]:
    """The numba dispatcher for one channel count (compiled per dtype on first call)."""
    import numba

    namespace = dict(_helpers())
    source = _loop_source(channels, _BLOCK)
    exec(compile(source, f"<fused C={channels}>", "exec"), namespace)
    fn: Callable[..., None] = numba.njit(nogil=True, fastmath=_FASTMATH)(namespace["fused"])
    return fn


@functools.cache
def _helpers() -> dict[str, Any]:
    """Globals of the generated loop: np, the two intrinsics and the face sums."""
    import numba
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def _bits(typingctx: Any, x: Any) -> Any:
        """float64 -> int64 bit pattern (a plain bitcast)."""
        sig = types.int64(types.float64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.bitcast(args[0], ir.IntType(64))

        return sig, codegen

    @intrinsic
    def _sub(typingctx: Any, a: Any, b: Any) -> Any:
        """a - b carrying its own flag (arcp, meaningless for a subtraction).

        numba's fast-math pass only flags instructions that have none, so this one
        never gets ``reassoc``: LLVM may not fold it into the surrounding sums.
        """
        sig = types.float64(types.float64, types.float64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            out = builder.fsub(args[0], args[1])
            out.flags.append("arcp")
            return out

        return sig, codegen

    faces = numba.njit(nogil=True, fastmath=_FASTMATH)(_faces_py)
    return {"np": np, "_bits": _bits, "_sub": _sub, "_faces": faces}


def _faces_py(pr: Any, tr: Any, space: Any, channels: int, out: Any) -> None:
    """PDEBench's face sums of one slab row into ``out[c]`` (compiled by _helpers).

    The definition of gates.fields.kernels.Kernel._faces: e^2 over index 0 and n-1 of
    every axis, a point counted once per face it lies on (twice for a size-1 axis); here
    e is taken in float64, where the NumPy kernel squares its float32 error (about 1e-7
    apart). The row is seen as (outer, n, inner) around each axis in turn; both faces
    are inner-long runs.
    """
    nd = space.size
    inner = channels
    for ax in range(nd - 1, -1, -1):
        n = space[ax]
        outer = pr.size // (n * inner)
        for o in range(outer):
            for f in range(2):
                j0 = (o * n + (0 if f == 0 else n - 1)) * inner
                for i in range(inner):
                    e = np.float64(pr[j0 + i]) - np.float64(tr[j0 + i])
                    out[i % channels] += e * e
        inner *= n


# --------------------------------------------------------------------------- driver


class FusedSums:
    """Per-slab sums of gates.fields.stats.SlabStats for one geometry, from the compiled loop.

    The rows of a call are split over ``threads`` threads (the caller plus a shared
    pool): the kernel releases the GIL, and each row's sums are computed whole by one
    thread, so the split never changes a result. Plain threads rather than numba's
    ``parallel=True`` + ``prange``: measured as fast here, but that adds ~1-2 s of
    compilation, and numba's fallback threading layer (workqueue, when neither TBB nor
    OpenMP is installed) aborts on concurrent calls, which dask's threaded workers make.
    """

    def __init__(self, space: tuple[int, ...], channels: int, *,
                 threads: int | None = None) -> None:
        self.space = np.asarray(space, dtype=np.int64)
        self.channels = int(channels)
        self.threads = default_threads() if threads is None else max(1, int(threads))

    def __call__(self, p2: np.ndarray, t2: np.ndarray, st: Any, j0: int) -> None:
        """Fill rows j0.. of ``st`` (se, se2, su, su2, t0, maxe, sae, neg, bse2).

        ``p2``/``t2``: C-contiguous (k, L) rows of one dtype (float32 or float64).
        """
        fn = _compiled(self.channels)
        p2 = _readonly(p2)
        t2 = _readonly(t2)
        k = p2.shape[0]
        # a thread hand-off costs tens of microseconds: only split large calls
        parts = max(1, min(self.threads, k, 2 * p2.nbytes // _SPLIT_BYTES))
        cuts = [k * i // parts for i in range(parts + 1)]

        def run(a: int, b: int) -> None:
            sl = slice(j0 + a, j0 + b)
            fn(p2[a:b], t2[a:b], self.space, st.se[sl], st.se2[sl], st.su[sl], st.su2[sl],
               st.t0[sl], st.sae[sl], st.maxe[sl].view(np.int64), st.neg[sl], st.bse2[sl])

        if parts == 1:
            run(0, k)
            return
        pool = _pool(self.threads - 1)
        futures = [pool.submit(run, a, b) for a, b in zip(cuts[1:-1], cuts[2:], strict=True)]
        run(cuts[0], cuts[1])
        for fut in futures:
            fut.result()


def default_threads() -> int:
    """Threads for the fused loop: numba's NUMBA_NUM_THREADS (default: usable cores)."""
    import numba

    return max(1, int(getattr(numba.config, "NUMBA_NUM_THREADS", 0) or os.cpu_count() or 1))


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """Process-wide helper threads (idle threads cost nothing; created on first use)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gates-fused")


def _readonly(x: np.ndarray) -> np.ndarray:
    """A read-only view: memmaps are read-only, so all inputs share one specialisation."""
    if not x.flags.writeable:
        return x
    v = x.view()
    v.flags.writeable = False
    return v


def warm_up(channels: int = 1, dtype: Any = np.float32) -> float:
    """Compile the kernel a computation with this channel count and dtype will use.

    Returns the seconds spent, numba's import included (~0 once compiled); the
    benchmark reports it apart from the throughput.
    """
    from gates.fields.stats import SlabStats

    t0 = time.perf_counter()
    p = np.zeros((1, 12 * channels), dtype=dtype)
    fused = FusedSums((3, 4), channels, threads=1)
    fused(p, p, SlabStats.zeros(1, channels, 0), 0)
    return time.perf_counter() - t0
