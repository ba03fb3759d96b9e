"""Field metrics from prediction/target arrays, as PDEBench, The Well and
universal-simulator compute them (see gates.fields.formulas for every definition).

Modules: ``sources`` (.npz, .npy folders, zarr), ``layout`` (axes, conventions),
``kernels`` (NumPy per-slab sums and spectra), ``numba`` (the optional compiled kernel),
``formulas`` (the definitions), ``compute`` (the streaming pass), ``dask`` (the same as
dask tasks). Nothing here imports numba, dask or zarr until it is used.
"""

from __future__ import annotations

from pathlib import Path

from gates.fields.compute import compute_field_metrics, compute_field_metrics_arrays
from gates.fields.formulas import (
    DEFINITIONS,
    DEFINITIONS_VERSION,
    METRIC_DOCS,
    METRIC_NAMES,
    FieldMetrics,
)
from gates.fields.layout import DEFAULT_LAYOUT, FieldLayout
from gates.fields.sources import open_arrays

__all__ = [
    "DEFAULT_LAYOUT",
    "DEFINITIONS",
    "DEFINITIONS_VERSION",
    "METRIC_DOCS",
    "METRIC_NAMES",
    "FieldLayout",
    "FieldMetrics",
    "compute_field_metrics",
    "compute_field_metrics_arrays",
    "open_arrays",
    "refresh_field_metrics",
]


def refresh_field_metrics(arrays: Path, layout: FieldLayout = DEFAULT_LAYOUT, *,
                          dask_scheduler: str | None = None) -> FieldMetrics:
    """Recompute a champion's field metrics from its arrays under the current definitions
    (``python -m gates baseline refresh-fields``); ``.version`` says which ones."""
    return compute_field_metrics(Path(arrays), layout, dask_scheduler=dask_scheduler)
