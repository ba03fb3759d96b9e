"""The same pass as dask tasks (the optional ``dask`` extra; imported only when used).

Space and channel axes are rechunked whole (a slab is never split); each block yields
the same partial sums as a chunk of the streaming pass, and only those small partials
travel back to the client.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gates.fields.compute import (
    DEFAULT_CHUNK_BYTES,
    Progress,
    block_partial,
    chunk_ranges,
    native_chunks,
    nbytes,
    work_dtype,
)
from gates.fields.formulas import FieldMetrics, Partial, finalize
from gates.fields.kernels import Kernel
from gates.fields.layout import DEFAULT_LAYOUT, FieldLayout, Plan, make_plan
from gates.fields.numba import choose
from gates.fields.sources import NpyFile, check_pair, window_mappable

if TYPE_CHECKING:  # optional extra, only for annotations
    import dask.array

__all__ = ["as_dask", "compute_field_metrics_dask", "compute_on_scheduler"]


def as_dask(arr: Any, plan: Plan, itemsize: int, chunk_bytes: int) -> dask.array.Array:
    """Wrap a source as dask.array with chunks along sample/time only (zarr: from_zarr)."""
    import dask.array as da

    ranges = chunk_ranges(plan, itemsize, max(1, int(chunk_bytes)), native_chunks(arr, plan))
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


def compute_on_scheduler(pred: Any, target: Any, layout: FieldLayout, scheduler: str, *,
                         chunk_bytes: int = DEFAULT_CHUNK_BYTES, kernel: str | None = None,
                         progress: Progress | None = None,
                         source: str | Path = "<arrays>") -> FieldMetrics:
    """Open a distributed Client on ``scheduler`` and run the dask path there."""
    from distributed import Client

    plan = make_plan(tuple(pred.shape), layout, source)
    itemsize = max(np.dtype(pred.dtype).itemsize, np.dtype(target.dtype).itemsize)
    dp = as_dask(pred, plan, itemsize, chunk_bytes)
    dt = as_dask(target, plan, itemsize, chunk_bytes)
    with Client(scheduler, set_as_default=True):
        out = compute_field_metrics_dask(dp, dt, layout, kernel=kernel)
    if progress is not None:
        progress(1, 1)
    return out


def compute_field_metrics_dask(
    pred: dask.array.Array,
    target: dask.array.Array,
    layout: FieldLayout = DEFAULT_LAYOUT,
    *,
    kernel: str | None = None,
) -> FieldMetrics:
    """Every field metric over dask arrays, on the current dask scheduler.

    ``kernel`` as in compute_field_metrics_arrays, resolved on each worker (auto uses
    numba where the worker has it and the whole input is large enough).
    """
    import dask

    source = "<dask arrays>"
    check_pair(pred, target, source)
    plan = make_plan(tuple(pred.shape), layout, source)
    whole = {ax: -1 for ax in range(len(plan.shape))
             if ax not in (plan.sample_axis, plan.time_axis)}
    pred = pred.rechunk(whole)
    target = target.rechunk(pred.chunks)
    wd = work_dtype(pred.dtype, target.dtype)
    s_off = np.concatenate([[0], np.cumsum(pred.chunks[plan.sample_axis])])
    t_off = (np.concatenate([[0], np.cumsum(pred.chunks[plan.time_axis])])
             if plan.time_axis is not None else np.zeros(1, dtype=int))
    total = nbytes(pred) + nbytes(target)
    pd = pred.to_delayed()
    td = target.to_delayed()
    tasks = []
    for bidx in np.ndindex(*pd.shape):
        s0 = int(s_off[bidx[plan.sample_axis]])
        t0 = int(t_off[bidx[plan.time_axis]]) if plan.time_axis is not None else 0
        tasks.append(dask.delayed(_dask_block)(pd[bidx], td[bidx], plan, wd, s0, t0, kernel,
                                               total))
    acc = Partial.empty(plan)
    for part in dask.compute(*tasks):
        acc.merge(part)
    return finalize(acc, plan)


def _dask_block(p: np.ndarray, t: np.ndarray, plan: Plan, wd: np.dtype, s0: int, t0: int,
                kernel: str | None, total: int) -> Partial:
    """One dask task: the chosen kernel on an in-memory block."""
    kern = Kernel(plan, wd, engine=choose(total, kernel, plan.n_chan))
    return block_partial(np.asarray(p), np.asarray(t), plan, kern, s0, t0)
