"""Field metrics: streamed results against a plain whole-array NumPy reference.

The reference below is written independently of gates/fields/ from the definitions
(full complex ``fftn`` and Python loops over PDEBench's quadrant instead of ``rfftn``
with Hermitian weights and a sorted reduceat, ``np.std(ddof=1)`` instead of shifted
sums, face slices instead of a compiled loop), so a wrong formula, layout handling or
chunk combination shows up as a mismatch. tests/test_parity.py compares with the
reference implementations' own numbers.
"""

from __future__ import annotations

import math
import os
import pathlib
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gates.errors import GateInputError
from gates.fields import (
    DEFAULT_LAYOUT,
    DEFINITIONS,
    DEFINITIONS_VERSION,
    METRIC_DOCS,
    METRIC_NAMES,
    FieldLayout,
    FieldMetrics,
    compute_field_metrics,
    compute_field_metrics_arrays,
    open_arrays,
)
from gates.fields.dask import compute_field_metrics_dask

Ref = dict[str, tuple[float, np.ndarray]]

# --------------------------------------------------------------------------- reference


def canon(x: np.ndarray, layout: FieldLayout) -> np.ndarray:
    """(S, T, space..., C) float64 copy, written with moveaxis/expand_dims."""
    x = np.asarray(x, dtype=np.float64)
    nd = x.ndim
    s = layout.sample_axis % nd
    named = [s]
    t = None if layout.time_axis is None else layout.time_axis % nd
    c = None if layout.channel_axis is None else layout.channel_axis % nd
    named += [a for a in (t, c) if a is not None]
    space = [a for a in range(nd) if a not in named]
    src = [s] + ([t] if t is not None else []) + space + ([c] if c is not None else [])
    y = np.moveaxis(x, src, list(range(len(src))))
    if t is None:
        y = np.expand_dims(y, 1)
    if c is None:
        y = np.expand_dims(y, -1)
    return y


def _pdebench_shells(e: np.ndarray) -> np.ndarray:
    """(S, T, C, shells) |E|^2 per PDEBench shell, by its loops (1D: rfft modes)."""
    space = e.shape[2:-1]
    ax = tuple(range(2, 2 + len(space)))
    if len(space) == 1:
        return np.moveaxis(np.abs(np.fft.rfft(e, axis=2)) ** 2, 2, -1)
    power = np.abs(np.fft.fftn(e, axes=ax)) ** 2
    n_shells = min(n // 2 for n in space)
    out = np.zeros(e.shape[:2] + (e.shape[-1], n_shells))
    for idx in np.ndindex(*[n // 2 for n in space]):
        s = math.floor(math.sqrt(sum(i * i for i in idx)))
        if s > n_shells - 1:
            continue
        out[..., s] += power[(slice(None), slice(None), *idx)]
    return out


def reference(pred: np.ndarray, target: np.ndarray, layout: FieldLayout = DEFAULT_LAYOUT
              ) -> Ref:
    """name -> (aggregate, per-sample batch-of-one values), from the definitions."""
    p = canon(pred, layout)
    t = canon(target, layout)
    S, T = p.shape[:2]
    space = p.shape[2:-1]
    P = int(np.prod(space))
    ax = tuple(range(2, 2 + len(space)))
    e = p - t
    out: Ref = {}

    def mean_of(per_btc: np.ndarray) -> tuple[float, np.ndarray]:
        return float(per_btc.mean()), per_btc.mean(axis=(1, 2))

    # The Well, per (b, t, c)
    mse = (e**2).mean(axis=ax)
    out["mse"] = mean_of(mse)
    out["mae"] = mean_of(np.abs(e).mean(axis=ax))
    out["vrmse"] = mean_of(np.sqrt(mse / (t.std(axis=ax, ddof=1) ** 2 + 1e-7)))
    out["linf"] = mean_of(np.abs(e).max(axis=ax))
    kk = np.meshgrid(*[np.rint(np.fft.fftfreq(n) * n) for n in space], indexing="ij")
    k2 = sum(k**2 for k in kk)
    power = np.abs(np.fft.fftn(e, axes=ax)) ** 2
    for name, band in (("low", k2 < 16), ("mid", (k2 >= 16) & (k2 < 144)), ("high", k2 >= 144)):
        out[f"spectral_mse_{name}"] = mean_of(power[:, :, band].sum(axis=2) / P**2)
    # universal-simulator, per (b, t) row of P x C
    rows = e.reshape(S, T, P, -1)
    gap = np.abs(p.reshape(S, T, -1).sum(axis=2) - t.reshape(S, T, -1).sum(axis=2))
    out["conservation_gap"] = (float(gap.mean()), gap.mean(axis=1))
    bc = 0.5 * (np.abs(rows[:, :, 0]).mean(axis=2) + np.abs(rows[:, :, -1]).mean(axis=2))
    out["bc_violation"] = (float(bc.mean()), bc.mean(axis=1))
    neg = np.maximum(-p, 0.0).reshape(S, T, -1).mean(axis=2)
    out["negativity_penalty"] = (float(neg.mean()), neg.mean(axis=1))
    # PDEBench, the whole set as one batch, time steps from initial_step on
    i0 = layout.initial_step
    ek, tk, pk = e[:, i0:], t[:, i0:], p[:, i0:]
    rmse = np.sqrt((ek**2).mean(axis=ax))
    out["rmse"] = mean_of(rmse)
    out["nrmse"] = mean_of(rmse / np.sqrt((tk**2).mean(axis=ax)))
    csv = pk.sum(axis=ax) - tk.sum(axis=ax)
    out["crmse"] = (float((np.sqrt((csv**2).mean(axis=0)) / P).mean()),
                    (np.abs(csv) / P).mean(axis=(1, 2)))
    mx = np.abs(ek).max(axis=ax)
    out["max_error"] = (float(mx.max(axis=0).mean()), mx.mean(axis=(1, 2)))
    faces = sum((np.take(ek, 0, axis=2 + d) ** 2 + np.take(ek, -1, axis=2 + d) ** 2)
                .reshape(S, ek.shape[1], -1, ek.shape[-1]).sum(axis=2)
                for d in range(len(space)))
    n_face = sum(2 * P // n for n in space)
    if len(space) >= 3:
        b = np.sqrt(faces.sum(axis=2) / n_face)
        out["brmse"] = (float(b.mean()), b.mean(axis=1))
    else:
        out["brmse"] = mean_of(np.sqrt(faces / n_face))
    shells = _pdebench_shells(ek)  # (S, Tk, C, n)
    amp_all = np.sqrt(shells.mean(axis=0)) / P
    amp_one = np.sqrt(shells) / P
    n = shells.shape[-1]
    for name, lo, hi in (("low", 0, 4), ("mid", 4, 12), ("high", 12, n)):
        lo, hi = min(lo, n), min(hi, n)
        if hi > lo:
            out[f"frmse_{name}"] = (float(amp_all[..., lo:hi].mean(axis=-1).mean()),
                                    amp_one[..., lo:hi].mean(axis=-1).mean(axis=(1, 2)))
    return out


def assert_close(got: FieldMetrics, want: Ref, rtol: float, atol_frac: float = 0.0) -> None:
    """Every metric: aggregate and per-sample vector (squared back for "rms"), atol a
    fraction of that metric's scale (or of rmse)."""
    assert list(got.values) == [n for n in METRIC_NAMES if n in want]
    assert got.version == DEFINITIONS_VERSION
    for name, (value, vector) in want.items():
        how = got.aggregation[name]
        g = got.samples[name]
        assert g.dtype == np.float64 and g.shape == vector.shape, name
        scale = max(abs(value), float(np.abs(vector).max()), want["rmse"][0])
        atol = atol_frac * scale
        np.testing.assert_allclose(got.values[name], value, rtol=rtol, atol=atol, err_msg=name)
        if how == "rms":
            np.testing.assert_allclose(np.sqrt(np.mean(g)), got.values[name], rtol=1e-12,
                                       err_msg=name)
            g = np.sqrt(g)
        elif how == "mean":
            np.testing.assert_allclose(np.mean(g), got.values[name], rtol=1e-12,
                                       atol=1e-15 * scale, err_msg=name)
        np.testing.assert_allclose(g, vector, rtol=rtol, atol=atol, err_msg=f"{name} samples")


# --------------------------------------------------------------------------- fixtures


def random_pair(shape: tuple[int, ...], dtype: Any = np.float64, seed: int = 0,
                offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = (rng.standard_normal(shape) + offset).astype(dtype)
    pred = (target + 0.3 * rng.standard_normal(shape)).astype(dtype)
    return pred, target


def burgers(nx: int, times: np.ndarray, amp: float = 1.0) -> np.ndarray:
    """Inviscid Burgers u_t + u u_x = 0 from u0 = amp*sin(x), before the shock (t < 1/amp).

    Characteristics: u = amp*sin(x - u t), solved by fixed-point iteration: a sine
    wave that steepens smoothly.
    """
    x = np.linspace(0, 2 * np.pi, nx, endpoint=False)
    out = np.empty((len(times), nx))
    for i, tt in enumerate(times):
        u = amp * np.sin(x)
        for _ in range(200):
            u = amp * np.sin(x - u * tt)
        out[i] = u
    return out


def save_npz(path: Path, pred: np.ndarray, target: np.ndarray) -> Path:
    np.savez(path, pred=pred, target=target)
    return path


def save_npy_dir(path: Path, pred: np.ndarray, target: np.ndarray) -> Path:
    path.mkdir()
    np.save(path / "pred.npy", pred)
    np.save(path / "target.npy", target)
    return path


def save_zarr(path: Path, pred: np.ndarray, target: np.ndarray,
              chunks: tuple[int, ...] | None = None) -> Path:
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(path), mode="w")
    for name, arr in (("pred", pred), ("target", target)):
        z = group.create_array(name, shape=arr.shape, dtype=arr.dtype,
                               chunks=chunks or arr.shape)
        z[:] = arr
    return path


def same(a: FieldMetrics, b: FieldMetrics, rtol: float = 0.0) -> None:
    """Identical (rtol=0) or close results, aggregates and vectors."""
    assert list(a.values) == list(b.values)
    assert a.aggregation == b.aggregation
    for name in a.values:
        np.testing.assert_allclose(a.values[name], b.values[name], rtol=rtol, err_msg=name)
        np.testing.assert_allclose(a.samples[name], b.samples[name], rtol=rtol,
                                   atol=rtol * float(np.abs(b.samples[name]).max()),
                                   err_msg=name)


# --------------------------------------------------------------------------- correctness


@pytest.mark.parametrize("chunk_bytes", [64 << 20, 3 * 16 * 12 * 2 * 8, 1])
def test_random_2d_matches_reference(tmp_path: Path, chunk_bytes: int) -> None:
    """Multi-channel 2D, offset target; small chunks force time chunking and combining."""
    pred, target = random_pair((3, 5, 16, 12, 2), offset=5.0)
    got = compute_field_metrics(save_npy_dir(tmp_path / "d", pred, target),
                                chunk_bytes=chunk_bytes)
    assert_close(got, reference(pred, target), rtol=1e-9, atol_frac=1e-12)


def test_random_2d_with_pdebench_high_band(tmp_path: Path) -> None:
    """A grid with more than 12 shells has every band; non-square, 3 channels."""
    pred, target = random_pair((3, 2, 30, 28, 3), seed=4, offset=1.0)
    got = compute_field_metrics(save_npz(tmp_path / "f.npz", pred, target))
    assert "frmse_high" in got.values and not got.notes
    assert_close(got, reference(pred, target), rtol=1e-9, atol_frac=1e-12)


def test_float32_2d_single_channel(tmp_path: Path) -> None:
    """float32 input: float32 leaves and FFT, float64 accumulation -> ~1e-6 relative."""
    pred, target = random_pair((4, 3, 32, 40, 1), dtype=np.float32, seed=1, offset=3.0)
    got = compute_field_metrics(save_npy_dir(tmp_path / "d", pred, target),
                                chunk_bytes=32 * 40 * 4 * 2)
    assert_close(got, reference(pred, target), rtol=2e-5, atol_frac=2e-6)


def test_burgers_1d_smooth(tmp_path: Path) -> None:
    """Smooth steepening sine: error lives at low wavenumbers; every metric matches."""
    times = np.linspace(0.0, 0.8, 9)
    target = np.stack([burgers(256, times, amp=a) for a in (0.8, 1.0)])[..., None]
    pred = np.stack([burgers(256, times * 1.03, amp=a) for a in (0.8, 1.0)])[..., None]
    got = compute_field_metrics(save_npz(tmp_path / "b.npz", pred, target))
    assert_close(got, reference(pred, target), rtol=1e-8, atol_frac=1e-10)
    assert got.values["frmse_high"] < got.values["frmse_low"]
    assert got.values["spectral_mse_high"] < got.values["spectral_mse_low"]
    # both conserve the mean (zero): the gap is round-off
    assert got.values["conservation_gap"] < 1e-10


def test_burgers_float32_2channels(tmp_path: Path) -> None:
    times = np.linspace(0.0, 0.9, 6)
    u = burgers(200, times)
    target = np.stack([u, 0.5 * u + 2.0], axis=-1)[None].astype(np.float32)
    pred = np.stack([burgers(200, times * 0.98), 0.5 * u + 2.01], axis=-1)[None]
    pred = pred.astype(np.float32)
    got = compute_field_metrics(save_npz(tmp_path / "b.npz", pred, target))
    assert_close(got, reference(pred, target), rtol=1e-4, atol_frac=1e-5)


LAYOUTS = [
    ((4, 10, 9), FieldLayout(time_axis=None, channel_axis=None)),  # (S, X, Y)
    ((3, 6, 20), FieldLayout(channel_axis=None)),  # (S, T, X)
    ((5, 7, 3, 2), FieldLayout(sample_axis=2, time_axis=0, channel_axis=-1)),  # (T,X,S,C)
    ((2, 4, 6, 5, 3), FieldLayout(sample_axis=-1, time_axis=None, channel_axis=0)),
    ((2, 3, 5, 4, 6, 1), FieldLayout()),  # 3D
    ((2, 3, 4, 5, 6, 2), FieldLayout(initial_step=1)),  # 3D, 2 channels, PDEBench context
    ((3, 4, 1, 7, 1), FieldLayout(initial_step=2)),  # a size-1 axis: no PDEBench shells
]


@pytest.mark.parametrize(("shape", "layout"), LAYOUTS)
def test_layouts_match_reference(tmp_path: Path, shape: tuple[int, ...],
                                 layout: FieldLayout) -> None:
    pred, target = random_pair(shape, seed=len(shape), offset=1.5)
    path = save_npy_dir(tmp_path / "d", pred, target)
    want = reference(pred, target, layout)
    for chunk in (1 << 20, 200):
        assert_close(compute_field_metrics(path, layout, chunk_bytes=chunk), want,
                     rtol=1e-9, atol_frac=1e-12)


def test_empty_band_is_omitted_with_a_note() -> None:
    """PDEBench returns NaN for an empty band (3D grids below 26 points): not a metric."""
    pred, target = random_pair((2, 2, 12, 12, 12, 1), seed=3)
    got = compute_field_metrics_arrays(pred, target)
    assert "frmse_high" not in got.values and "frmse_high" not in got.samples
    assert "frmse_mid" in got.values
    assert any("frmse_high" in note and "NaN" in note for note in got.notes)
    assert all(np.isfinite(v) for v in got.values.values())


def test_initial_step_only_affects_pdebench() -> None:
    pred, target = random_pair((3, 4, 32, 1), seed=6)
    pred[:, 0] += 1.0  # a bad first frame
    full = compute_field_metrics_arrays(pred, target)
    skip = compute_field_metrics_arrays(pred, target, FieldLayout(initial_step=1))
    tail = compute_field_metrics_arrays(pred[:, 1:], target[:, 1:])
    for name, d in DEFINITIONS.items():
        if d.source.startswith("PDEBench"):
            assert skip.values[name] == pytest.approx(tail.values[name], rel=1e-12), name
        else:
            assert skip.values[name] == full.values[name], name
    with pytest.raises(GateInputError, match="initial_step"):
        compute_field_metrics_arrays(pred, target, FieldLayout(initial_step=4))


def test_aggregation_kinds() -> None:
    """rms exactly where the decomposition is exact (one time step and channel for cRMSE),
    max (threshold rule) where PDEBench's batch RMS / max has none."""
    pred, target = random_pair((5, 1, 32, 1), seed=2)
    one = compute_field_metrics_arrays(pred, target)
    assert one.aggregation["crmse"] == "rms"
    assert one.aggregation["max_error"] == "max"
    assert one.aggregation["frmse_low"] == "max"
    many = compute_field_metrics_arrays(*random_pair((5, 3, 32, 1), seed=2))
    assert many.aggregation["crmse"] == "max"
    for name, d in DEFINITIONS.items():
        if d.aggregation == "mean":
            assert one.aggregation[name] == many.aggregation[name] == "mean", name


def test_spectral_bands_add_up_to_mse() -> None:
    """Parseval: The Well's three bins cover every mode, so they sum to the MSE."""
    pred, target = random_pair((3, 2, 24, 18, 2), seed=3)
    got = compute_field_metrics_arrays(pred, target)
    bands = sum(got.samples[f"spectral_mse_{b}"] for b in ("low", "mid", "high"))
    np.testing.assert_allclose(bands, got.samples["mse"], rtol=1e-10)


def test_nan_stays_in_its_sample() -> None:
    pred, target = random_pair((3, 2, 8, 8, 1))
    pred[1, 1, 3, 3, 0] = np.nan
    got = compute_field_metrics_arrays(pred, target)
    assert np.isnan(got.samples["mse"][1]) and np.isnan(got.samples["linf"][1])
    assert np.isfinite(got.samples["mse"][[0, 2]]).all()
    assert np.isnan(got.values["mse"]) and np.isnan(got.values["max_error"])


def test_float16_and_mixed_dtypes() -> None:
    pred, target = random_pair((2, 3, 8, 10, 1), seed=5)
    want = reference(pred.astype(np.float16), target)
    got = compute_field_metrics_arrays(pred.astype(np.float16), target)
    assert_close(got, want, rtol=1e-9, atol_frac=1e-12)


def test_metric_docs_give_formulas() -> None:
    assert set(METRIC_DOCS) == set(METRIC_NAMES) == set(DEFINITIONS)
    for name, d in DEFINITIONS.items():
        assert d.source and d.formula and d.direction == "lower", name
        assert d.aggregation in ("mean", "rms", "max"), name


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    s=st.integers(1, 3), t=st.integers(1, 4), x=st.integers(2, 9), y=st.integers(2, 7),
    c=st.integers(1, 3), chunk=st.integers(1, 4000), seed=st.integers(0, 10_000),
)
def test_chunking_never_changes_results(s: int, t: int, x: int, y: int, c: int, chunk: int,
                                        seed: int) -> None:
    pred, target = random_pair((s, t, x, y, c), seed=seed, offset=1.0)
    want = reference(pred, target)
    got = compute_field_metrics_arrays(pred, target, chunk_bytes=chunk)
    assert_close(got, want, rtol=1e-8, atol_frac=1e-11)


# --------------------------------------------------------------------------- sources


class Progress:
    """Records progress(done, total) calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


def test_sources_agree_and_report_progress(tmp_path: Path) -> None:
    pred, target = random_pair((6, 3, 10, 8, 2), dtype=np.float32, seed=11)
    paths = [
        save_npz(tmp_path / "a.npz", pred, target),
        save_npy_dir(tmp_path / "npy", pred, target),
        save_zarr(tmp_path / "s.zarr", pred, target, chunks=(2, 3, 10, 8, 2)),
    ]
    results = []
    for path in paths:
        progress = Progress()
        results.append(compute_field_metrics(path, chunk_bytes=2 * 3 * 10 * 8 * 2 * 4,
                                             progress=progress))
        assert progress.calls == [(i, 3) for i in range(1, 4)]
    for other in results[1:]:
        same(other, results[0])


@pytest.mark.parametrize(
    ("store_chunks", "chunk_bytes", "reads"),
    [
        ((3, 4, 6, 5, 1), 6 * 5 * 8 * 4, 3),  # 1 sample asked, 3 per stored chunk: 7/3 -> 3
        ((1, 2, 6, 5, 1), 6 * 5 * 8, 14),  # 1 time step asked, 2 stored: 7 x 2 time reads
    ],
)
def test_zarr_reads_align_to_store_chunks(tmp_path: Path, store_chunks: tuple[int, ...],
                                          chunk_bytes: int, reads: int) -> None:
    pred, target = random_pair((7, 4, 6, 5, 1), seed=9)
    path = save_zarr(tmp_path / "z.zarr", pred, target, chunks=store_chunks)
    progress = Progress()
    got = compute_field_metrics(path, chunk_bytes=chunk_bytes, progress=progress)
    assert progress.calls[-1] == (reads, reads)
    assert_close(got, reference(pred, target), rtol=1e-9, atol_frac=1e-12)


def test_open_arrays_is_lazy(tmp_path: Path) -> None:
    pred, target = random_pair((2, 2, 4, 4, 1))
    p, t = open_arrays(save_npy_dir(tmp_path / "d", pred, target))
    assert isinstance(p, np.memmap) and isinstance(t, np.memmap)
    zp, zt = open_arrays(save_zarr(tmp_path / "z.zarr", pred, target))
    assert type(zp).__module__.startswith("zarr")
    np.testing.assert_array_equal(np.asarray(zt[:]), target)


# --------------------------------------------------------------------------- bad input


class _Touch:
    """Unpickling this creates a marker file: proves whether an npz got unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def test_pickled_npz_is_refused_and_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    obj = np.empty(1, dtype=object)
    obj[0] = _Touch(marker)
    path = tmp_path / "evil.npz"
    np.savez(path, pred=obj, target=obj)
    with np.load(path, allow_pickle=True) as z:  # sanity: the payload really is a pickle
        assert z.files == ["pred", "target"]
    assert pickle.dumps(_Touch(marker))  # picklable, so savez stored a pickle
    with pytest.raises(GateInputError) as info:
        compute_field_metrics(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def _bad_inputs(tmp: Path) -> Iterator[tuple[Path, str]]:
    good = np.zeros((2, 3, 4, 1))
    yield tmp / "missing.npz", "no such file"
    np.savez(tmp / "nopred.npz", target=good)
    yield tmp / "nopred.npz", "missing"
    np.savez(tmp / "shape.npz", pred=good, target=np.zeros((2, 3, 5, 1)))
    yield tmp / "shape.npz", "shape"
    np.savez(tmp / "int.npz", pred=good.astype(np.int32), target=good.astype(np.int32))
    yield tmp / "int.npz", "dtype"
    np.savez(tmp / "complex.npz", pred=good.astype(complex), target=good.astype(complex))
    yield tmp / "complex.npz", "dtype"
    np.savez(tmp / "flat.npz", pred=np.zeros((2, 3)), target=np.zeros((2, 3)))
    yield tmp / "flat.npz", "3 dims"
    (tmp / "half").mkdir()
    np.save(tmp / "half" / "pred.npy", good)
    yield tmp / "half", "target.npy"
    (tmp / "empty").mkdir()
    yield tmp / "empty", "neither"
    (tmp / "notes.txt").write_text("hello")
    yield tmp / "notes.txt", "unsupported"
    (tmp / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    yield tmp / "broken.npz", "npz"


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    for path, words in _bad_inputs(tmp_path):
        with pytest.raises(GateInputError) as info:
            compute_field_metrics(path)
        assert str(info.value).startswith(str(path)), str(info.value)  # file or member
        assert words in str(info.value), str(info.value)


def test_zarr_missing_target(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "z.zarr"), mode="w")
    group.create_array("pred", shape=(2, 3, 4), dtype="f8")
    with pytest.raises(GateInputError, match="target"):
        compute_field_metrics(tmp_path / "z.zarr")


def test_layout_axis_out_of_range(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "f.npz", *random_pair((2, 3, 4)))
    with pytest.raises(GateInputError, match="out of range"):
        compute_field_metrics(path, FieldLayout(time_axis=5))
    with pytest.raises(GateInputError, match="no spatial axis"):
        compute_field_metrics(path, FieldLayout(time_axis=1, channel_axis=2))


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"sample_axes": 0}, "unknown"),
        ({"boundary": "periodic"}, "removed"),
        ({"nonnegative": False, "dirichlet_value": 0.0}, "always computed"),
        ({"time_axis": "1"}, "time_axis"),
        ({"sample_axis": True}, "sample_axis"),
        ({"initial_step": -1}, "initial_step"),
        ({"initial_step": 1.5}, "initial_step"),
        ({"sample_axis": 1, "time_axis": 1}, "differ"),
    ],
)
def test_from_policy_rejects(table: dict[str, Any], words: str) -> None:
    with pytest.raises(GateInputError) as info:
        FieldLayout.from_policy(table, "policy.toml")
    assert str(info.value).startswith("policy.toml: ")
    assert words in str(info.value)


def test_from_policy_accepts() -> None:
    layout = FieldLayout.from_policy(
        {"time_axis": None, "channel_axis": 3, "initial_step": 0}, "policy.toml")
    assert layout == FieldLayout(time_axis=None, channel_axis=3, initial_step=0)


# --------------------------------------------------------------------------- dask


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as lc:
        yield lc


def test_dask_cluster_matches_numpy(tmp_path: Path, cluster: Any) -> None:
    pred, target = random_pair((5, 6, 16, 12, 2), seed=21, offset=2.0)
    path = save_zarr(tmp_path / "f.zarr", pred, target, chunks=(2, 3, 16, 12, 2))
    layout = FieldLayout(initial_step=1)
    want = compute_field_metrics(path, layout)
    progress = Progress()
    got = compute_field_metrics(path, layout, chunk_bytes=16 * 12 * 2 * 8 * 4,
                                dask_scheduler=cluster.scheduler_address, progress=progress)
    assert progress.calls and progress.calls[-1][0] == progress.calls[-1][1]
    same(got, want, rtol=1e-10)
    # npy folder goes through the picklable window reader
    npy = save_npy_dir(tmp_path / "npy", pred, target)
    got_npy = compute_field_metrics(npy, layout, dask_scheduler=cluster.scheduler_address)
    same(got_npy, want, rtol=1e-10)


def test_dask_function_directly(cluster: Any) -> None:
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    pred, target = random_pair((4, 5, 9, 7, 1), dtype=np.float32, seed=4)
    layout = FieldLayout()
    want = compute_field_metrics_arrays(pred, target, layout)
    with distributed.Client(cluster.scheduler_address):
        got = compute_field_metrics_dask(da.from_array(pred, chunks=(3, 2, 5, 7, 1)),
                                         da.from_array(target, chunks=(1, 5, 9, 7, 1)), layout)
    same(got, want, rtol=1e-10)  # per-slab sums do not depend on the block decomposition


# --------------------------------------------------------------------------- numba kernel


def _both(pred: Any, target: Any, layout: FieldLayout = DEFAULT_LAYOUT,
          **kw: Any) -> tuple[FieldMetrics, FieldMetrics]:
    """(numba, numpy) results of compute_field_metrics_arrays for the same input."""
    pytest.importorskip("numba")
    return (compute_field_metrics_arrays(pred, target, layout, kernel="numba", **kw),
            compute_field_metrics_arrays(pred, target, layout, kernel="numpy", **kw))


@pytest.mark.parametrize(
    ("shape", "layout", "chunk_bytes"),
    [
        ((3, 5, 16, 12, 2), FieldLayout(), 64 << 20),
        ((3, 5, 16, 12, 2), FieldLayout(), 3 * 16 * 12 * 2 * 8),  # 3 steps: time chunks
        ((3, 5, 16, 12, 2), FieldLayout(), 1),  # one slab per chunk
        ((4, 10, 9), FieldLayout(time_axis=None, channel_axis=None), 1 << 20),
        ((3, 6, 20), FieldLayout(channel_axis=None), 200),
        ((5, 7, 3, 2), FieldLayout(sample_axis=2, time_axis=0, channel_axis=-1), 200),
        ((2, 4, 6, 5, 2), FieldLayout(sample_axis=-1, time_axis=None, channel_axis=0), 1 << 20),
        ((2, 3, 5, 4, 6, 1), FieldLayout(), 300),
        ((2, 3, 1, 2, 1), FieldLayout(initial_step=1), 1 << 20),
        ((3, 4, 11, 13, 3), FieldLayout(), 11 * 13 * 3 * 8),
    ],
)
def test_numba_matches_numpy_random(tmp_path: Path, shape: tuple[int, ...],
                                    layout: FieldLayout, chunk_bytes: int) -> None:
    """float64, offset target: same metrics as the NumPy kernel to float64 rounding,
    in memory and from memory-mapped .npy windows (read without pre-faulting)."""
    pred, target = random_pair(shape, seed=sum(shape), offset=2.5)
    got, want = _both(pred, target, layout, chunk_bytes=chunk_bytes)
    same(got, want, rtol=1e-10)
    assert_close(got, reference(pred, target, layout), rtol=1e-9, atol_frac=1e-12)
    path = save_npy_dir(tmp_path / "d", pred, target)
    mapped = compute_field_metrics(path, layout, chunk_bytes=chunk_bytes, kernel="numba")
    same(mapped, want, rtol=1e-10)


def test_numba_matches_numpy_burgers() -> None:
    """Smooth steepening Burgers fields, 1D and 2 channels, sample- and time-chunked."""
    times = np.linspace(0.0, 0.9, 10)
    u = np.stack([burgers(256, times, amp=a) for a in (0.8, 1.0, 1.1)])
    u_hat = np.stack([burgers(256, times * 1.02, amp=a) for a in (0.8, 1.0, 1.1)])
    target = np.stack([u, 0.5 * u + 2.0], axis=-1)
    pred = np.stack([u_hat, 0.5 * u_hat + 2.001], axis=-1)
    for chunk in (64 << 20, 256 * 2 * 8 * 3):
        got, want = _both(pred, target, chunk_bytes=chunk)
        same(got, want, rtol=1e-10)


def test_numba_float32_sums_in_float64() -> None:
    """float32 input is widened before any arithmetic: the pointwise metrics equal the
    float64 reference on the same values (the NumPy kernel is ~1e-6 off, float32 leaves)."""
    pred, target = random_pair((3, 4, 32, 40, 2), dtype=np.float32, seed=2, offset=3.0)
    got, want = _both(pred, target)
    ref = reference(pred, target)
    for name in ("mse", "mae", "rmse", "nrmse", "vrmse", "linf", "brmse", "max_error",
                 "negativity_penalty"):
        np.testing.assert_allclose(got.values[name], ref[name][0], rtol=1e-10, err_msg=name)
    assert_close(got, ref, rtol=2e-5, atol_frac=2e-6)  # spectra: float32 FFT
    same(got, want, rtol=2e-5)


def test_numba_large_offset_does_not_cancel() -> None:
    """t ~ 1e6 with O(1) errors: sums of p - t and t - t0 keep their precision in the
    fused loop."""
    pred, target = random_pair((2, 3, 64, 64, 1), seed=8, offset=1e6)
    got, want = _both(pred, target)
    same(got, want, rtol=1e-9)
    e = pred - target
    var = target.var(axis=(2, 3), ddof=1)
    vrmse = np.sqrt((e**2).mean(axis=(2, 3)) / (var + 1e-7)).mean(axis=(1, 2))
    np.testing.assert_allclose(got.samples["vrmse"], vrmse, rtol=1e-10)


def test_numba_nan_stays_in_its_sample() -> None:
    pred, target = random_pair((3, 2, 8, 8, 1))
    pred[1, 1, 3, 3, 0] = np.nan
    got, want = _both(pred, target)
    for name in got.samples:
        np.testing.assert_array_equal(np.isnan(got.samples[name]),
                                      np.isnan(want.samples[name]), name)
    assert np.isnan(got.samples["mse"][1]) and np.isnan(got.samples["linf"][1])
    assert np.isnan(got.samples["negativity_penalty"][1])
    assert np.isfinite(got.samples["mse"][[0, 2]]).all()


def test_numba_threads_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows split over threads give bit-identical sums (each row is one thread's)."""
    pytest.importorskip("numba")
    import gates.fields.numba as fk

    pred, target = random_pair((6, 5, 16, 12, 2), seed=4)
    one = compute_field_metrics_arrays(pred, target, kernel="numba")
    monkeypatch.setattr(fk, "_SPLIT_BYTES", 1)  # split every call
    monkeypatch.setattr(fk, "default_threads", lambda: 3)
    split = compute_field_metrics_arrays(pred, target, kernel="numba")
    same(split, one)


def test_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import gates.fields.numba as fk

    monkeypatch.delenv(fk.KERNEL_ENV, raising=False)
    monkeypatch.setattr(fk, "numba_available", lambda: True)
    assert fk.choose(fk.MIN_BYTES - 1) == "numpy"
    assert fk.choose(fk.MIN_BYTES) == "numba"
    assert fk.choose(fk.MIN_BYTES, channels=fk.AUTO_MAX_CHANNELS + 1) == "numpy"
    assert fk.choose(1, "numba", channels=fk.AUTO_MAX_CHANNELS + 1) == "numba"
    monkeypatch.setenv(fk.KERNEL_ENV, "numpy")
    assert fk.choose(fk.MIN_BYTES) == "numpy"
    assert fk.choose(1, "numba") == "numba"  # the argument wins over the variable
    monkeypatch.setenv(fk.KERNEL_ENV, " NUMBA ")
    assert fk.choose(1) == "numba"
    monkeypatch.setenv(fk.KERNEL_ENV, "fast")
    with pytest.raises(GateInputError, match="GATES_FIELDS_KERNEL must be"):
        fk.choose(1)
    monkeypatch.setattr(fk, "numba_available", lambda: False)
    monkeypatch.setenv(fk.KERNEL_ENV, "auto")
    assert fk.choose(fk.MIN_BYTES) == "numpy"
    with pytest.raises(GateInputError, match="numba is not installed"):
        fk.choose(1, "numba")


def test_fields_work_without_numba(tmp_path: Path) -> None:
    """numba blocked: gates.fields imports without it, auto runs NumPy, numba is refused."""
    script = (
        "import sys\n"
        "sys.modules['numba'] = None\n"
        "import numpy as np\n"
        "import gates.fields as gf\n"
        "from gates.errors import GateInputError\n"
        "p = np.ones((2, 3, 4, 4, 1))\n"
        "out = gf.compute_field_metrics_arrays(p, p * 0.5)\n"
        "assert abs(out.values['mae'] - 0.5) < 1e-12\n"
        "try:\n"
        "    gf.compute_field_metrics_arrays(p, p, kernel='numba')\n"
        "except GateInputError as err:\n"
        "    print('refused:', err)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "GATES_FIELDS_KERNEL"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=root, env={**env, "PYTHONPATH": str(root)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused: " in done.stdout and "not installed" in done.stdout


def test_dask_with_numba_kernel(tmp_path: Path, cluster: Any) -> None:
    """Dask's two worker threads call the fused kernel concurrently."""
    pytest.importorskip("numba")
    pred, target = random_pair((6, 4, 16, 12, 2), seed=31, offset=1.0)
    path = save_zarr(tmp_path / "f.zarr", pred, target, chunks=(1, 2, 16, 12, 2))
    want = compute_field_metrics(path, kernel="numpy")
    got = compute_field_metrics(path, kernel="numba", chunk_bytes=16 * 12 * 2 * 8 * 2,
                                dask_scheduler=cluster.scheduler_address)
    same(got, want, rtol=1e-10)


def test_numpy_kernel_threads_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups of slabs split over threads give bit-identical sums (each group is one
    thread's, with that thread's buffers)."""
    import gates.fields.kernels as kernels

    pred, target = random_pair((6, 5, 40, 36, 2), seed=5)
    monkeypatch.setattr(kernels, "_GROUP_BYTES", 40 * 36 * 2 * 8 * 3)  # many groups
    monkeypatch.setenv(kernels.THREADS_ENV, "1")
    one = compute_field_metrics_arrays(pred, target, kernel="numpy")
    monkeypatch.setenv(kernels.THREADS_ENV, "3")
    split = compute_field_metrics_arrays(pred, target, kernel="numpy")
    same(split, one)


def test_refresh_recomputes_under_the_current_definitions(tmp_path: Path) -> None:
    from gates.fields import refresh_field_metrics

    pred, target = random_pair((3, 2, 16, 1), seed=8)
    path = save_npz(tmp_path / "champion_arrays.npz", pred, target)
    got = refresh_field_metrics(path, FieldLayout())
    assert got.version == DEFINITIONS_VERSION
    same(got, compute_field_metrics(path))
