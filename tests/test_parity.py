"""Field metrics equal the reference implementations' own numbers.

../shared/parity/ (beside the repository; CI keeps a copy at the same relative place)
holds prediction/target cases and ``reference.json``: every value computed by running
PDEBench's ``metric_func``, The Well's metric classes and universal-simulator's evaluator
block (torch, float64). Each metric is checked on every case, aggregate and per-sample,
at ``1e-10 * |reference| + atol`` (the file's atol; float32 copies: 1e-5 relative), on
every path: whole arrays, small chunks, the numba kernel and dask.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gates.fields import FieldMetrics, compute_field_metrics, compute_field_metrics_arrays

PARITY = Path(__file__).resolve().parents[1].parent / "shared" / "parity"

NAMES = {  # reference family -> reference key -> our name
    "pdebench": {"RMSE": "rmse", "nRMSE": "nrmse", "cRMSE": "crmse", "Max": "max_error",
                 "bRMSE": "brmse", "fRMSE_low": "frmse_low", "fRMSE_mid": "frmse_mid",
                 "fRMSE_high": "frmse_high"},
    "the_well": {"MSE": "mse", "MAE": "mae", "VRMSE": "vrmse", "LInfinity": "linf"},
    "ups": {"conservation_gap": "conservation_gap", "bc_violation": "bc_violation",
            "negativity_penalty": "negativity_penalty"},
}

pytestmark = pytest.mark.skipif(
    not (PARITY / "reference.json").is_file(),
    reason=f"parity fixtures not found at {PARITY} (the shared/ folder beside the repository)",
)


@cache
def _reference() -> dict[str, Any]:
    out: dict[str, Any] = json.loads((PARITY / "reference.json").read_text(encoding="utf-8"))
    return out


def _cases() -> list[str]:
    if not (PARITY / "reference.json").is_file():
        return []
    return sorted(_reference())


def _arrays(case: str, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    with np.load(PARITY / _reference()[case]["file"], allow_pickle=False) as z:
        return z["pred"].astype(dtype), z["target"].astype(dtype)


def check(case: str, got: FieldMetrics, rel: float = 1e-10, atol_scale: float = 1.0) -> None:
    """Every reference value of ``case`` (aggregate and per sample) within tolerance."""
    ref = _reference()[case]
    problems = []
    for family, keys in NAMES.items():
        for key, name in keys.items():
            want = ref[family][key]
            atol = ref["atol"][family][key] * atol_scale
            if want is None:  # the reference returned NaN: we omit the metric, with a note
                if name in got.values or not any(name in n for n in got.notes):
                    problems.append(f"{name}: reference NaN, but not omitted with a note")
                continue
            value = got.values[name]
            if not abs(value - want) <= rel * abs(want) + atol:
                problems.append(f"{name}: {value!r} != {want!r} ({family} {key})")
            vector = got.samples[name]
            if got.aggregation[name] == "rms":  # per-sample squared contributions
                vector = np.sqrt(vector)
            per = np.asarray(ref[f"{family}_per_sample"][key], dtype=np.float64)
            bad = np.abs(vector - per) > rel * np.abs(per) + atol
            if bad.any():
                problems.append(f"{name} per sample {np.flatnonzero(bad).tolist()}: "
                                f"{vector[bad][:3]} != {per[bad][:3]}")
    assert not problems, f"{case}: " + "; ".join(problems)


def test_fixtures_cover_every_dimension() -> None:
    dims = {r["n_spatial_dims"] for r in _reference().values()}
    assert dims == {1, 2, 3}
    assert len(_reference()) >= 19


@pytest.mark.parametrize("case", _cases())
def test_float64_matches_reference(case: str, tmp_path: Path) -> None:
    """Through the public entry point, from the fixture file itself."""
    check(case, compute_field_metrics(PARITY / _reference()[case]["file"]))


@pytest.mark.parametrize("case", _cases())
def test_small_chunks_match_reference(case: str) -> None:
    """Chunks of a few slabs: time-chunked samples, partial sums folded across chunks."""
    pred, target = _arrays(case)
    slab = pred[0, 0].nbytes
    check(case, compute_field_metrics_arrays(pred, target, chunk_bytes=3 * slab))


@pytest.mark.parametrize("case", _cases())
def test_npy_folder_matches_reference(case: str, tmp_path: Path) -> None:
    """Memory-mapped .npy windows, one slab per chunk."""
    pred, target = _arrays(case)
    np.save(tmp_path / "pred.npy", pred)
    np.save(tmp_path / "target.npy", target)
    check(case, compute_field_metrics(tmp_path, chunk_bytes=1))


@pytest.mark.parametrize("case", _cases())
def test_numba_matches_reference(case: str) -> None:
    pytest.importorskip("numba")
    pred, target = _arrays(case)
    check(case, compute_field_metrics_arrays(pred, target, kernel="numba"))
    check(case, compute_field_metrics_arrays(pred, target, kernel="numba",
                                             chunk_bytes=pred[0, 0].nbytes))


@pytest.mark.parametrize("case", _cases())
def test_dask_matches_reference(case: str) -> None:
    """Irregular dask blocks along sample and time, on dask's threaded scheduler."""
    da = pytest.importorskip("dask.array")
    dask = pytest.importorskip("dask")
    from gates.fields.dask import compute_field_metrics_dask

    pred, target = _arrays(case)
    b, t = pred.shape[:2]
    chunks = ((1, b - 1) if b > 1 else (1,), (t,) if t == 1 else (1, t - 1))
    dp = da.from_array(pred, chunks=chunks + pred.shape[2:])
    dt = da.from_array(target, chunks=(b,) + target.shape[1:])
    with dask.config.set(scheduler="threads"):
        check(case, compute_field_metrics_dask(dp, dt))


@pytest.mark.parametrize("kernel", ["numpy", "numba"])
@pytest.mark.parametrize("case", _cases())
def test_float32_copies_match_reference(case: str, kernel: str) -> None:
    """float32 input, computed in float32 where the kernel does (FFT, NumPy leaves)."""
    if kernel == "numba":
        pytest.importorskip("numba")
    pred, target = _arrays(case, np.float32)
    got = compute_field_metrics_arrays(pred, target, kernel=kernel)
    # atol in the file is 1e-12 x the metric's natural scale; 1e-5 x that scale here
    check(case, got, rel=1e-5, atol_scale=1e7)


def test_per_sample_vectors_agree_with_their_aggregates() -> None:
    """mean: the vector averages to the aggregate; rms: sqrt(mean) is the aggregate."""
    for case in _cases():
        got = compute_field_metrics_arrays(*_arrays(case))
        for name, value in got.values.items():
            vector = got.samples[name]
            how = got.aggregation[name]
            if how == "mean":
                assert np.mean(vector) == pytest.approx(value, rel=1e-12, abs=1e-300), name
            elif how == "rms":
                assert np.sqrt(np.mean(vector)) == pytest.approx(value, rel=1e-12), name
            else:
                assert how == "max", name
