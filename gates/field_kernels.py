"""Optional numba kernel for gates.fields: every pointwise sum of a chunk in one fused loop.

The NumPy kernel in gates.fields makes ~8 array passes per value (subtract, abs, square,
leaf sums, max, ...). With numba installed (the ``fast`` extra) one compiled loop reads
each value of pred and target once and keeps every accumulator in registers: sum e,
sum e^2, sum u, sum u^2 per channel (u = t - t0, the slab's first target value per
channel), sum |e|, max |e|, sum min(p, 0), followed by the box-face sums (bRMSE,
bc_violation) while the slab is still in cache. fRMSE stays on NumPy's FFT.

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
channel count, dtype or nonnegative setting. ``choose`` decides, per computation,
whether the input is large enough to repay it (GATES_FIELDS_KERNEL=numpy|numba|auto
overrides); the choice depends only on the input, never on what ran before.
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
middle. More cores move that lower (the loop is threaded, the NumPy kernel is not):
GATES_FIELDS_KERNEL=numba, or kernel="numba", uses it regardless of size.
"""

AUTO_MAX_CHANNELS = 8
"""Auto mode keeps the NumPy kernel above this many channels: LLVM stops vectorising the
channel-strided loop (C=11: ~4.6 GB/s, barely ahead of NumPy's ~3.2) while compiling
takes longer (~2 s)."""

_KINDS = {"none": 0, "periodic": 1, "dirichlet": 2}
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


def _loop_source(channels: int, nonnegative: bool, block: int) -> str:
    """Source of the fused kernel for a fixed channel count.

    Channel c of a slab row sits at every C-th value; writing one scalar accumulator per
    (quantity, channel) keeps them in registers and lets LLVM vectorise the C-strided
    loop (accumulator arrays indexed by a runtime channel would live in memory). The
    negativity sum is only emitted when the layout counts it (3 of ~14 operations).
    """
    c_range = range(channels)
    body = [
        "def fused(p, t, space, kind, dval, se, se2, su, su2, t0, sae, maxbits, neg,",
        "          bse2, bcn, bcd):",
        "    k, n_values = p.shape",
        f"    n_points = n_values // {channels}",
        "    for r in range(k):",
        "        pr = p[r]",
        "        tr = t[r]",
        "        tot_ae = 0.0",
        "        tot_neg = 0.0",
        "        mx = 0",
    ]
    for c in c_range:
        body += [
            f"        t0_{c} = np.float64(tr[{c}])",
            f"        tse_{c} = 0.0; tse2_{c} = 0.0; tsu_{c} = 0.0; tsu2_{c} = 0.0",
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
            "                mx = max(mx, _bits(a))",
        ]
        if nonnegative:  # min(p, 0) that keeps NaN, as np.minimum does
            body.append("                s_neg += pv if not (pv >= 0.0) else 0.0")
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
        ]
    body += [
        "        sae[r] = tot_ae",
        "        neg[r] = 0.0 - tot_neg",
        "        maxbits[r] = mx",
        f"        bse2[r], bcn[r], bcd[r] = _faces(pr, tr, space, {channels}, kind, dval)",
    ]
    return "\n".join(body) + "\n"


@functools.cache
def _compiled(channels: int, nonnegative: bool) -> Callable[..., None]:
    """The numba dispatcher for one channel count (compiled per dtype on first call)."""
    import numba

    namespace = dict(_helpers())
    source = _loop_source(channels, nonnegative, _BLOCK)
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


def _faces_py(pr: Any, tr: Any, space: Any, channels: int, kind: int,
              dval: float) -> tuple[float, float, float]:
    """Box-face sums of one slab row (compiled by _compiled; plain Python for reading).

    Returns (sum e^2 on the faces, bcn, bcd) as gates.fields._Kernel._boundary defines
    them: the faces are the points with some spatial index 0 or n-1, each counted once;
    periodic bcn/bcd run over the seam of every axis with n >= 3. The row is seen as
    lines along the last axis: a line on a face of an earlier axis counts whole, any
    other line its first and last point. (Kept this plain: it compiles in a third of the
    time of a version with more loops, and runs as fast.)
    """
    nd = space.size
    n_last = space[nd - 1]
    row = n_last * channels
    n_lines = pr.size // row
    bse2 = 0.0
    bcn = 0.0  # dirichlet: sum |p - dval| on the faces; periodic: seam jumps
    bcd = 0.0
    for li in range(n_lines):
        q = li
        whole = False
        for ax in range(nd - 2, -1, -1):  # the line's index along the earlier axes
            n = space[ax]
            ix = q % n
            q //= n
            whole = whole or ix == 0 or ix == n - 1
        step = 1 if whole or n_last <= 2 else n_last - 1
        for x in range(0, n_last, step):
            for j in range(li * row + x * channels, li * row + (x + 1) * channels):
                pv = np.float64(pr[j])
                e = pv - np.float64(tr[j])
                bse2 += e * e
                bcn += abs(pv - dval)
    if kind != 2:
        bcn = 0.0
    if kind == 1:
        stride = channels
        for ax in range(nd - 1, -1, -1):
            n = space[ax]
            if n >= 3:
                for b0 in range(0, pr.size, n * stride):
                    for j in range(b0, b0 + stride):
                        x0 = np.float64(pr[j])
                        x1 = np.float64(pr[j + stride])
                        xm = np.float64(pr[j + (n - 2) * stride])
                        xl = np.float64(pr[j + (n - 1) * stride])
                        bcn += abs(x0 - xl)
                        bcd += abs(x1 - x0) + abs(xl - xm)
            stride *= n
    return bse2, bcn, 0.5 * bcd


# --------------------------------------------------------------------------- driver


class FusedSums:
    """Per-slab sums of gates.fields._SlabStats for one plan, from the compiled loop.

    The rows of a call are split over ``threads`` threads (the caller plus a shared
    pool): the kernel releases the GIL, and each row's sums are computed whole by one
    thread, so the split never changes a result. Plain threads rather than numba's
    ``parallel=True`` + ``prange``: measured as fast here, but that adds ~1-2 s of
    compilation, and numba's fallback threading layer (workqueue, when neither TBB nor
    OpenMP is installed) aborts on concurrent calls, which dask's threaded workers make.
    """

    def __init__(self, space: tuple[int, ...], channels: int, boundary: str,
                 dirichlet_value: float, nonnegative: bool, *,
                 threads: int | None = None) -> None:
        self.space = np.asarray(space, dtype=np.int64)
        self.channels = int(channels)
        self.nonnegative = bool(nonnegative)
        self.kind = _KINDS[boundary]
        self.dval = float(dirichlet_value)
        self.threads = default_threads() if threads is None else max(1, int(threads))

    def __call__(self, p2: np.ndarray, t2: np.ndarray, st: Any, j0: int) -> None:
        """Fill rows j0.. of ``st`` (se, se2, su, su2, t0, sae, maxe, neg, bse2, bcn, bcd).

        ``p2``/``t2``: C-contiguous (k, L) rows of one dtype (float32 or float64).
        """
        fn = _compiled(self.channels, self.nonnegative)
        p2 = _readonly(p2)
        t2 = _readonly(t2)
        k = p2.shape[0]
        # a thread hand-off costs tens of microseconds: only split large calls
        parts = max(1, min(self.threads, k, 2 * p2.nbytes // _SPLIT_BYTES))
        cuts = [k * i // parts for i in range(parts + 1)]

        def run(a: int, b: int) -> None:
            sl = slice(j0 + a, j0 + b)
            fn(p2[a:b], t2[a:b], self.space, self.kind, self.dval, st.se[sl], st.se2[sl],
               st.su[sl], st.su2[sl], st.t0[sl], st.sae[sl], st.maxe[sl].view(np.int64),
               st.neg[sl], st.bse2[sl], st.bcn[sl], st.bcd[sl])

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


def warm_up(channels: int = 1, dtype: Any = np.float32, nonnegative: bool = False) -> float:
    """Compile the kernel a computation with this channel count and dtype will use.

    Returns the seconds spent, numba's import included (~0 once compiled); the
    benchmark reports it apart from the throughput.
    """
    from gates.fields import _SlabStats  # local: gates.fields imports this module

    t0 = time.perf_counter()
    p = np.zeros((1, 12 * channels), dtype=dtype)
    fused = FusedSums((3, 4), channels, "periodic", 0.0, nonnegative, threads=1)
    fused(p, p, _SlabStats.zeros(1, channels), 0)
    return time.perf_counter() - t0
