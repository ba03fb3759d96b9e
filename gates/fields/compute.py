"""One streaming pass: read each chunk once, reduce it, fold the partial sums, finalize.

Chunks run along the sample axis, and along time when one sample exceeds
``chunk_bytes`` (``.npy`` memory-mapped window by window and unmapped after use, zarr
chunk by chunk, rounded to the store's own chunks). Inside a chunk the kernel works on
cache-sized groups of whole slabs with preallocated buffers, so extra memory is about
2 x chunk_bytes plus a few MiB of buffers, plus the per-(time, channel, shell)
accumulators of PDEBench's fRMSE (T x C x S float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gates.fields.formulas import FieldMetrics, Partial, finalize, partial
from gates.fields.kernels import Kernel
from gates.fields.layout import DEFAULT_LAYOUT, FieldLayout, Plan, canonical, make_plan
from gates.fields.numba import choose
from gates.fields.sources import ArrayLike, check_pair, open_arrays, read_block

__all__ = ["DEFAULT_CHUNK_BYTES", "chunk_ranges", "compute_field_metrics",
           "compute_field_metrics_arrays", "native_chunks", "work_dtype"]

DEFAULT_CHUNK_BYTES = 64 << 20

Progress = Callable[[int, int], None]


def work_dtype(*dtypes: Any) -> np.dtype:
    """float32 stays float32 (half the bytes), anything wider is computed in float64."""
    dt = np.result_type(*[np.dtype(d) for d in dtypes])
    return np.dtype(np.float32) if dt.itemsize <= 4 else np.dtype(np.float64)


def chunk_ranges(plan: Plan, itemsize: int, chunk_bytes: int,
                 native: tuple[int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """(s0, s1, t0, t1) chunks of at most chunk_bytes per array (at least one slab).

    ``native`` = the store's own (sample, time) chunk lengths: ranges are rounded to
    them so no stored chunk is decompressed twice.
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


def native_chunks(arr: Any, plan: Plan) -> tuple[int, int] | None:
    """(sample, time) chunk lengths of a chunked store (zarr), else None."""
    chunks = getattr(arr, "chunks", None)
    if isinstance(arr, np.ndarray) or not isinstance(chunks, tuple) or not chunks:
        return None
    if not all(isinstance(c, int | np.integer) for c in chunks):
        return None  # e.g. dask's tuple of tuples
    t = int(chunks[plan.time_axis]) if plan.time_axis is not None else 1
    return int(chunks[plan.sample_axis]), t


def nbytes(arr: Any) -> int:
    """Bytes of an array-like from its shape and dtype (nothing is read)."""
    return math.prod(arr.shape) * np.dtype(arr.dtype).itemsize


def _index(plan: Plan, s0: int, s1: int, t0: int, t1: int) -> list[slice]:
    idx = [slice(None)] * len(plan.shape)
    idx[plan.sample_axis] = slice(s0, s1)
    if plan.time_axis is not None:
        idx[plan.time_axis] = slice(t0, t1)
    return idx


def block_partial(p: np.ndarray, t: np.ndarray, plan: Plan, kernel: Kernel, s0: int,
                  t0: int) -> Partial:
    """Partial sums of one block given in the original axis order."""
    pc = canonical(p, plan)
    tc = canonical(t, plan)
    ns, nt = pc.shape[:2]
    return partial(kernel.stats(pc, tc), ns, nt, s0, t0, plan, spectral=kernel.spectral)


def compute_field_metrics_arrays(
    pred: ArrayLike,
    target: ArrayLike,
    layout: FieldLayout = DEFAULT_LAYOUT,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Progress | None = None,
    source: str | Path = "<arrays>",
    pointwise: bool = True,
    spectral: bool = True,
    kernel: str | None = None,
) -> FieldMetrics:
    """Stream already-open arrays (memmap, zarr, ndarray) through one pass.

    ``pointwise=False`` / ``spectral=False`` skip the direct-space metrics or the
    spectra (their names are then absent); the benchmark times each part so.
    ``kernel``: ``"numpy"``, ``"numba"`` or ``"auto"``; None defers to
    GATES_FIELDS_KERNEL, then auto (numba for large inputs when installed).
    ``source`` names the data in error messages.
    """
    check_pair(pred, target, source)
    plan = make_plan(tuple(pred.shape), layout, source)
    wd = work_dtype(pred.dtype, target.dtype)
    engine = choose(nbytes(pred) + nbytes(target), kernel, plan.n_chan)
    kern = Kernel(plan, wd, pointwise=pointwise, spectral=spectral, engine=engine)
    itemsize = max(np.dtype(pred.dtype).itemsize, np.dtype(target.dtype).itemsize)
    ranges = chunk_ranges(plan, itemsize, max(1, int(chunk_bytes)), native_chunks(pred, plan))
    acc = Partial.empty(plan)
    for i, (s0, s1, t0, t1) in enumerate(ranges):
        idx = _index(plan, s0, s1, t0, t1)
        p = read_block(pred, idx, populate=not kern.reads_in_place(pred.dtype))
        t = read_block(target, idx, populate=not kern.reads_in_place(target.dtype))
        acc.merge(block_partial(p, t, plan, kern, s0, t0))
        del p, t  # unmaps the window before the next one is mapped
        if progress is not None:
            progress(i + 1, len(ranges))
    return finalize(acc, plan, pointwise=pointwise, spectral=spectral)


def compute_field_metrics(
    source: str | Path | tuple[ArrayLike, ArrayLike],
    layout: FieldLayout = DEFAULT_LAYOUT,
    *,
    progress: Progress | None = None,
    dask_scheduler: str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    kernel: str | None = None,
) -> FieldMetrics:
    """Every field metric of ``source``: a path (``.npz``, a folder with ``pred.npy`` and
    ``target.npy``, a zarr store with arrays ``pred`` and ``target``) or a (pred, target)
    pair of arrays.

    ``progress(done_chunks, total_chunks)`` is called as chunks complete. With
    ``dask_scheduler`` (an address such as ``tcp://host:8786``) the same computation
    runs as dask tasks on that distributed cluster (workers must see the path).
    Bad input raises gates.errors.GateInputError naming the source.
    """
    if isinstance(source, tuple):
        pred, target = source
        name: str | Path = "<arrays>"
    else:
        pred, target = open_arrays(source)
        name = source
    if dask_scheduler is None:
        return compute_field_metrics_arrays(pred, target, layout, chunk_bytes=chunk_bytes,
                                            progress=progress, source=name, kernel=kernel)
    from gates.fields.dask import compute_on_scheduler

    return compute_on_scheduler(pred, target, layout, dask_scheduler, chunk_bytes=chunk_bytes,
                                kernel=kernel, progress=progress, source=name)
