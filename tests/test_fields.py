"""Field metrics: streamed results against a plain whole-array NumPy reference.

The reference below is written independently of gates/fields.py (full complex FFT
instead of rfftn with Hermitian weights, boolean boundary masks instead of face
enumeration, np.var instead of shifted sums) so a wrong formula or a broken
chunk combination shows up as a mismatch.
"""

from __future__ import annotations

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
    EPS,
    METRIC_DOCS,
    METRIC_NAMES,
    FieldLayout,
    compute_field_metrics,
    compute_field_metrics_arrays,
    compute_field_metrics_dask,
    open_arrays,
)

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


def reference(pred: np.ndarray, target: np.ndarray, layout: FieldLayout) -> dict[str, np.ndarray]:
    """Every metric from its formula, on whole float64 arrays."""
    p = canon(pred, layout)
    t = canon(target, layout)
    S, T = p.shape[:2]
    space = p.shape[2:-1]
    C = p.shape[-1]
    P = int(np.prod(space))
    ax = tuple(range(2, 2 + len(space)))
    e = p - t
    fe = e.reshape(S, -1)
    ft = t.reshape(S, -1)
    out: dict[str, np.ndarray] = {}
    out["mse"] = (fe**2).mean(axis=1)
    out["mae"] = np.abs(fe).mean(axis=1)
    out["rmse"] = np.sqrt(out["mse"])
    out["nrmse"] = out["rmse"] / (np.sqrt((ft**2).mean(axis=1)) + EPS)
    out["rel_l2"] = np.linalg.norm(fe, axis=1) / (np.linalg.norm(ft, axis=1) + EPS)
    out["max_error"] = np.abs(fe).max(axis=1)
    out["crmse"] = np.sqrt((e.mean(axis=ax) ** 2).mean(axis=(1, 2)))

    mask = np.zeros(space, dtype=bool)
    for d in range(len(space)):
        edge: list[slice | int] = [slice(None)] * len(space)
        edge[d] = 0
        mask[tuple(edge)] = True
        edge[d] = -1
        mask[tuple(edge)] = True
    be = e[:, :, mask]  # (S, T, Nb, C)
    out["brmse"] = np.sqrt((be**2).mean(axis=(1, 2, 3)))

    kk = np.meshgrid(*[np.fft.fftfreq(n) * n for n in space], indexing="ij")
    kmag = np.sqrt(sum(k**2 for k in kk))
    power = np.abs(np.fft.fftn(e, axes=ax)) ** 2  # full spectrum, no folding
    for name, band in (
        ("frmse_low", kmag < 4),
        ("frmse_mid", (kmag >= 4) & (kmag < 12)),
        ("frmse_high", kmag >= 12),
    ):
        energy = power[:, :, band].sum(axis=(1, 2, 3))
        out[name] = np.sqrt(energy / (P**2 * T * C))

    var = t.var(axis=ax)
    mse_tc = (e**2).mean(axis=ax)
    out["vrmse"] = np.sqrt(mse_tc / (var + EPS)).mean(axis=(1, 2))

    sp = p.sum(axis=ax)
    stt = t.sum(axis=ax)
    out["conservation_gap"] = np.abs(sp - stt).mean(axis=(1, 2))
    out["conservation_drift"] = np.abs(sp - sp[:, :1]).max(axis=1).mean(axis=1)

    if layout.boundary == "dirichlet":
        out["bc_violation"] = np.abs(p[:, :, mask] - layout.dirichlet_value).mean(axis=(1, 2, 3))
    elif layout.boundary == "periodic":
        jumps, nears = [], []
        for d, n in enumerate(space):
            if n < 3:
                continue
            a = 2 + d
            diffs = np.abs(np.diff(p, axis=a))
            first = np.take(p, 0, axis=a)
            last = np.take(p, n - 1, axis=a)
            jumps.append(np.abs(first - last).reshape(S, -1))
            near = 0.5 * (np.take(diffs, 0, axis=a) + np.take(diffs, n - 2, axis=a))
            nears.append(near.reshape(S, -1))
        if jumps:
            j = np.concatenate(jumps, axis=1).mean(axis=1)
            r = np.concatenate(nears, axis=1).mean(axis=1)
            out["bc_violation"] = j / (r + EPS)
        else:
            out["bc_violation"] = np.zeros(S)
    else:
        out["bc_violation"] = np.zeros(S)
    if layout.nonnegative:
        out["negativity_penalty"] = np.maximum(-p, 0).reshape(S, -1).mean(axis=1)
    else:
        out["negativity_penalty"] = np.zeros(S)
    return out


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol: float,
                 atol_frac: float = 0.0) -> None:
    """Every metric, per sample; atol is a fraction of that sample's rmse or scale."""
    assert sorted(got) == sorted(METRIC_NAMES)
    for name in METRIC_NAMES:
        g, w = got[name], want[name]
        assert g.shape == w.shape, name
        assert g.dtype == np.float64, name
        scale = np.maximum(np.abs(w).max(), want["rmse"].max())
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol_frac * scale, err_msg=name)


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


# --------------------------------------------------------------------------- correctness


@pytest.mark.parametrize("chunk_bytes", [64 << 20, 3 * 16 * 12 * 2 * 8, 1])
def test_random_2d_matches_reference(tmp_path: Path, chunk_bytes: int) -> None:
    """Multi-channel 2D, offset target; small chunks force time chunking and combining."""
    layout = FieldLayout()
    pred, target = random_pair((3, 5, 16, 12, 2), offset=5.0)
    got = compute_field_metrics(save_npy_dir(tmp_path / "d", pred, target), layout,
                                chunk_bytes=chunk_bytes)
    assert_close(got, reference(pred, target, layout), rtol=1e-9, atol_frac=1e-12)


def test_float32_2d_single_channel(tmp_path: Path) -> None:
    """float32 input: float32 leaves, float64 accumulation -> ~1e-6 relative."""
    layout = FieldLayout()
    pred, target = random_pair((4, 3, 32, 40, 1), dtype=np.float32, seed=1, offset=3.0)
    got = compute_field_metrics(save_npy_dir(tmp_path / "d", pred, target), layout,
                                chunk_bytes=32 * 40 * 4 * 2)
    assert_close(got, reference(pred, target, layout), rtol=2e-5, atol_frac=2e-6)


def test_burgers_1d_smooth(tmp_path: Path) -> None:
    """Smooth steepening sine: error lives at low wavenumbers; every metric matches."""
    times = np.linspace(0.0, 0.8, 9)
    target = np.stack([burgers(256, times, amp=a) for a in (0.8, 1.0)])[..., None]
    pred = np.stack([burgers(256, times * 1.03, amp=a) for a in (0.8, 1.0)])[..., None]
    layout = FieldLayout()
    got = compute_field_metrics(save_npz(tmp_path / "b.npz", pred, target), layout)
    want = reference(pred, target, layout)
    assert_close(got, want, rtol=1e-8, atol_frac=1e-10)
    assert np.all(got["frmse_high"] < got["frmse_low"])
    # smooth periodic field: seam jump comparable to neighbour differences
    assert np.all((got["bc_violation"] > 0.5) & (got["bc_violation"] < 1.5))
    # pred and target both conserve the mean (zero) -> tiny gap and drift
    assert np.all(got["conservation_drift"] < 1e-8)


def test_burgers_float32_2channels(tmp_path: Path) -> None:
    times = np.linspace(0.0, 0.9, 6)
    u = burgers(200, times)
    target = np.stack([u, 0.5 * u + 2.0], axis=-1)[None].astype(np.float32)
    pred = np.stack([burgers(200, times * 0.98), 0.5 * u + 2.01], axis=-1)[None]
    pred = pred.astype(np.float32)
    layout = FieldLayout()
    got = compute_field_metrics(save_npz(tmp_path / "b.npz", pred, target), layout)
    assert_close(got, reference(pred, target, layout), rtol=1e-4, atol_frac=1e-5)


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((4, 10, 9), FieldLayout(time_axis=None, channel_axis=None)),  # (S, X, Y)
        ((3, 6, 20), FieldLayout(channel_axis=None)),  # (S, T, X)
        ((5, 7, 3, 2), FieldLayout(sample_axis=2, time_axis=0, channel_axis=-1)),  # (T,X,S,C)
        ((2, 4, 6, 5, 3), FieldLayout(sample_axis=-1, time_axis=None, channel_axis=0)),
        ((2, 3, 5, 4, 6, 1), FieldLayout(boundary="dirichlet", dirichlet_value=0.5)),  # 3D
    ],
)
def test_layouts_match_reference(tmp_path: Path, shape: tuple[int, ...],
                                 layout: FieldLayout) -> None:
    pred, target = random_pair(shape, seed=len(shape))
    path = save_npy_dir(tmp_path / "d", pred, target)
    want = reference(pred, target, layout)
    for chunk in (1 << 20, 200):
        assert_close(compute_field_metrics(path, layout, chunk_bytes=chunk), want,
                     rtol=1e-9, atol_frac=1e-12)


def test_dirichlet_nonnegative(tmp_path: Path) -> None:
    layout = FieldLayout(boundary="dirichlet", dirichlet_value=1.0, nonnegative=True)
    pred, target = random_pair((3, 4, 11, 13, 1), seed=7, offset=0.5)
    got = compute_field_metrics(save_npz(tmp_path / "f.npz", pred, target), layout)
    want = reference(pred, target, layout)
    assert_close(got, want, rtol=1e-9, atol_frac=1e-12)
    assert np.all(got["negativity_penalty"] > 0)


def test_bc_none_and_negativity_off(tmp_path: Path) -> None:
    pred, target = random_pair((2, 3, 8, 8, 1), offset=-3.0)
    got = compute_field_metrics(save_npz(tmp_path / "f.npz", pred, target),
                                FieldLayout(boundary="none"))
    assert np.all(got["bc_violation"] == 0.0)
    assert np.all(got["negativity_penalty"] == 0.0)  # reported, not counted


def test_periodic_seam_jump_is_flagged() -> None:
    """A field that is smooth inside but jumps at the seam scores far above a periodic one."""
    x = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    smooth = np.sin(x)[None, None, :, None] * np.ones((1, 2, 1, 1))
    ramp = (x / (2 * np.pi))[None, None, :, None] * np.ones((1, 2, 1, 1))  # 0 .. ~1
    both = np.concatenate([smooth, ramp])
    got = compute_field_metrics_arrays(both, np.zeros_like(both))
    assert 0.9 < got["bc_violation"][0] < 1.1
    assert got["bc_violation"][1] > 30


def test_parseval_and_zero_error() -> None:
    pred, target = random_pair((3, 2, 24, 18, 2), seed=3)
    got = compute_field_metrics_arrays(pred, target)
    bands = got["frmse_low"] ** 2 + got["frmse_mid"] ** 2 + got["frmse_high"] ** 2
    np.testing.assert_allclose(bands, got["rmse"] ** 2, rtol=1e-10)
    zero = compute_field_metrics_arrays(target, target)
    for name in ("mse", "mae", "rmse", "nrmse", "rel_l2", "max_error", "crmse", "brmse",
                 "frmse_low", "frmse_mid", "frmse_high", "vrmse", "conservation_gap"):
        np.testing.assert_allclose(zero[name], 0.0, atol=1e-12, err_msg=name)


def test_nan_stays_in_its_sample() -> None:
    pred, target = random_pair((3, 2, 8, 8, 1))
    pred[1, 1, 3, 3, 0] = np.nan
    got = compute_field_metrics_arrays(pred, target)
    assert np.isnan(got["mse"][1]) and np.isnan(got["max_error"][1])
    assert np.isfinite(got["mse"][[0, 2]]).all()


def test_float16_and_mixed_dtypes() -> None:
    pred, target = random_pair((2, 3, 8, 10, 1), seed=5)
    want = reference(pred.astype(np.float16), target, FieldLayout())
    got = compute_field_metrics_arrays(pred.astype(np.float16), target)
    assert_close(got, want, rtol=1e-9, atol_frac=1e-12)


def test_metric_docs_give_formulas() -> None:
    assert set(METRIC_DOCS) == set(METRIC_NAMES)
    assert all("=" in METRIC_DOCS[n] or ":" in METRIC_DOCS[n] for n in METRIC_NAMES)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    s=st.integers(1, 3), t=st.integers(1, 4), x=st.integers(1, 9), y=st.integers(2, 7),
    c=st.integers(1, 3), chunk=st.integers(1, 4000), seed=st.integers(0, 10_000),
)
def test_chunking_never_changes_results(s: int, t: int, x: int, y: int, c: int, chunk: int,
                                        seed: int) -> None:
    pred, target = random_pair((s, t, x, y, c), seed=seed)
    want = reference(pred, target, FieldLayout())
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
        for name in METRIC_NAMES:
            np.testing.assert_array_equal(other[name], results[0][name], err_msg=name)


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
    assert_close(got, reference(pred, target, FieldLayout()), rtol=1e-9, atol_frac=1e-12)


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
        ({"boundary": "reflective"}, "boundary"),
        ({"time_axis": "1"}, "time_axis"),
        ({"sample_axis": True}, "sample_axis"),
        ({"dirichlet_value": "zero"}, "dirichlet_value"),
        ({"dirichlet_value": float("nan")}, "dirichlet_value"),
        ({"nonnegative": 1}, "nonnegative"),
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
        {"time_axis": None, "channel_axis": 3, "boundary": "dirichlet", "dirichlet_value": 1,
         "nonnegative": True},
        "policy.toml",
    )
    assert layout == FieldLayout(time_axis=None, channel_axis=3, boundary="dirichlet",
                                 dirichlet_value=1, nonnegative=True)


# --------------------------------------------------------------------------- dask


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as lc:
        yield lc


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300), initial=0.0))


def test_dask_cluster_matches_numpy(tmp_path: Path, cluster: Any) -> None:
    pred, target = random_pair((5, 6, 16, 12, 2), seed=21, offset=2.0)
    path = save_zarr(tmp_path / "f.zarr", pred, target, chunks=(2, 3, 16, 12, 2))
    layout = FieldLayout(nonnegative=True)
    want = compute_field_metrics(path, layout)
    progress = Progress()
    got = compute_field_metrics(path, layout, chunk_bytes=16 * 12 * 2 * 8 * 4,
                                dask_scheduler=cluster.scheduler_address, progress=progress)
    assert progress.calls and progress.calls[-1][0] == progress.calls[-1][1]
    for name in METRIC_NAMES:
        assert _rel_diff(got[name], want[name]) <= 1e-10, name
    # npy folder goes through the picklable window reader
    npy = save_npy_dir(tmp_path / "npy", pred, target)
    got_npy = compute_field_metrics(npy, layout, dask_scheduler=cluster.scheduler_address)
    for name in METRIC_NAMES:
        assert _rel_diff(got_npy[name], want[name]) <= 1e-10, name


def test_dask_function_directly(cluster: Any) -> None:
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    pred, target = random_pair((4, 5, 9, 7, 1), dtype=np.float32, seed=4)
    layout = FieldLayout(boundary="dirichlet")
    want = compute_field_metrics_arrays(pred, target, layout)
    with distributed.Client(cluster.scheduler_address):
        got = compute_field_metrics_dask(da.from_array(pred, chunks=(3, 2, 5, 7, 1)),
                                         da.from_array(target, chunks=(1, 5, 9, 7, 1)), layout)
    for name in METRIC_NAMES:  # per-slab sums do not depend on the block decomposition
        assert _rel_diff(got[name], want[name]) <= 1e-10, name


# --------------------------------------------------------------------------- numba kernel

POINTWISE = tuple(n for n in METRIC_NAMES if not n.startswith("frmse"))


def _both(pred: Any, target: Any, layout: FieldLayout = DEFAULT_LAYOUT,
          **kw: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(numba, numpy) results of compute_field_metrics_arrays for the same input."""
    pytest.importorskip("numba")
    return (compute_field_metrics_arrays(pred, target, layout, kernel="numba", **kw),
            compute_field_metrics_arrays(pred, target, layout, kernel="numpy", **kw))


def _assert_kernels_agree(got: dict[str, np.ndarray], want: dict[str, np.ndarray],
                          rtol: float = 1e-10) -> None:
    """Every metric within rtol, plus rtol x (scale of that metric or rmse) for values
    that are sums cancelling to ~0 (e.g. the drift of a conserving field)."""
    assert sorted(got) == sorted(want)
    for name in want:
        scale = max(float(np.abs(want[name]).max()), float(want["rmse"].max()))
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=rtol * scale,
                                   err_msg=name)


@pytest.mark.parametrize(
    ("shape", "layout", "chunk_bytes"),
    [
        ((3, 5, 16, 12, 2), FieldLayout(), 64 << 20),
        ((3, 5, 16, 12, 2), FieldLayout(), 3 * 16 * 12 * 2 * 8),  # 3 steps: time chunks
        ((3, 5, 16, 12, 2), FieldLayout(), 1),  # one slab per chunk
        ((4, 10, 9), FieldLayout(time_axis=None, channel_axis=None), 1 << 20),
        ((3, 6, 20), FieldLayout(channel_axis=None, boundary="dirichlet"), 200),
        ((5, 7, 3, 2), FieldLayout(sample_axis=2, time_axis=0, channel_axis=-1), 200),
        ((2, 4, 6, 5, 2), FieldLayout(sample_axis=-1, time_axis=None, channel_axis=0), 1 << 20),
        ((2, 3, 5, 4, 6, 1), FieldLayout(boundary="dirichlet", dirichlet_value=0.5), 300),
        ((2, 3, 1, 2, 1), FieldLayout(boundary="dirichlet", nonnegative=True), 1 << 20),
        ((3, 4, 11, 13, 3), FieldLayout(boundary="none", nonnegative=True), 11 * 13 * 3 * 8),
    ],
)
def test_numba_matches_numpy_random(tmp_path: Path, shape: tuple[int, ...],
                                    layout: FieldLayout, chunk_bytes: int) -> None:
    """float64, offset target: same metrics as the NumPy kernel to float64 rounding,
    in memory and from memory-mapped .npy windows (read without pre-faulting)."""
    pred, target = random_pair(shape, seed=sum(shape), offset=2.5)
    got, want = _both(pred, target, layout, chunk_bytes=chunk_bytes)
    _assert_kernels_agree(got, want)
    assert_close(got, reference(pred, target, layout), rtol=1e-9, atol_frac=1e-12)
    path = save_npy_dir(tmp_path / "d", pred, target)
    mapped = compute_field_metrics(path, layout, chunk_bytes=chunk_bytes, kernel="numba")
    _assert_kernels_agree(mapped, want)


def test_numba_matches_numpy_burgers() -> None:
    """Smooth steepening Burgers fields, 1D and 2 channels, sample- and time-chunked."""
    times = np.linspace(0.0, 0.9, 10)
    u = np.stack([burgers(256, times, amp=a) for a in (0.8, 1.0, 1.1)])
    u_hat = np.stack([burgers(256, times * 1.02, amp=a) for a in (0.8, 1.0, 1.1)])
    target = np.stack([u, 0.5 * u + 2.0], axis=-1)
    pred = np.stack([u_hat, 0.5 * u_hat + 2.001], axis=-1)
    for chunk in (64 << 20, 256 * 2 * 8 * 3):
        got, want = _both(pred, target, chunk_bytes=chunk)
        _assert_kernels_agree(got, want)
    # conserving fields: both kernels see the drift of the first channel at noise level
    got, _ = _both(pred[..., :1], target[..., :1])
    assert np.all(got["conservation_drift"] < 1e-8)


def test_numba_float32_sums_in_float64() -> None:
    """float32 input is widened before any arithmetic: the pointwise metrics equal the
    float64 reference on the same values (the NumPy kernel is ~1e-6 off, float32 leaves)."""
    pred, target = random_pair((3, 4, 32, 40, 2), dtype=np.float32, seed=2, offset=3.0)
    got, want = _both(pred, target, FieldLayout(nonnegative=True))
    ref = reference(pred, target, FieldLayout(nonnegative=True))
    for name in POINTWISE:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-10, err_msg=name)
    assert_close(got, ref, rtol=2e-5, atol_frac=2e-6)  # fRMSE: float32 FFT as before
    _assert_kernels_agree(got, want, rtol=2e-5)


def test_numba_large_offset_does_not_cancel() -> None:
    """t ~ 1e6 with O(1) errors: sums of p - t and t - t0 keep their precision in the
    fused loop (the whole-array reference's S_p - S_t itself loses ~1e-8 here)."""
    pred, target = random_pair((2, 3, 64, 64, 1), seed=8, offset=1e6)
    got, want = _both(pred, target)
    _assert_kernels_agree(got, want)
    e = pred - target
    gap = np.abs(e.sum(axis=(2, 3))).mean(axis=(1, 2))
    np.testing.assert_allclose(got["conservation_gap"], gap, rtol=1e-10)
    var = target.var(axis=(2, 3))
    vrmse = np.sqrt((e**2).mean(axis=(2, 3)) / (var + EPS)).mean(axis=(1, 2))
    np.testing.assert_allclose(got["vrmse"], vrmse, rtol=1e-10)


def test_numba_nan_stays_in_its_sample() -> None:
    pred, target = random_pair((3, 2, 8, 8, 1))
    pred[1, 1, 3, 3, 0] = np.nan
    layout = FieldLayout(nonnegative=True)
    got, want = _both(pred, target, layout)
    for name in POINTWISE:
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(want[name]), name)
    assert np.isnan(got["mse"][1]) and np.isnan(got["max_error"][1])
    assert np.isnan(got["negativity_penalty"][1])
    assert np.isfinite(got["mse"][[0, 2]]).all()


def test_numba_threads_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows split over threads give bit-identical sums (each row is one thread's)."""
    pytest.importorskip("numba")
    import gates.field_kernels as fk

    pred, target = random_pair((6, 5, 16, 12, 2), seed=4)
    one = compute_field_metrics_arrays(pred, target, kernel="numba")
    monkeypatch.setattr(fk, "_SPLIT_BYTES", 1)  # split every call
    monkeypatch.setattr(fk, "default_threads", lambda: 3)
    split = compute_field_metrics_arrays(pred, target, kernel="numba")
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(split[name], one[name], err_msg=name)


def test_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import gates.field_kernels as fk

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
        "assert abs(out['mae'][0] - 0.5) < 1e-12\n"
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
    _assert_kernels_agree(got, want)
