"""Properties every field metric definition must have, whatever the data."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gates.fields import DEFINITIONS, compute_field_metrics_arrays

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
ABSOLUTE = ("rmse", "crmse", "brmse", "max_error", "frmse_low", "frmse_mid", "frmse_high",
            "mae", "linf", "conservation_gap", "bc_violation", "negativity_penalty")
SQUARED = ("mse", "spectral_mse_low", "spectral_mse_mid", "spectral_mse_high")
NORMALISED = ("nrmse",)


def _pair(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.standard_normal(shape) + 2.0
    return target + 0.2 * rng.standard_normal(shape), target


shapes = st.sampled_from([(5, 3, 16, 2), (4, 2, 26, 1), (3, 2, 8, 6, 2), (3, 1, 28, 26, 1),
                          (2, 2, 4, 6, 5, 1)])


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**31), perm_seed=st.integers(0, 2**31))
def test_permuting_samples_changes_no_aggregate(shape: tuple[int, ...], seed: int,
                                                perm_seed: int) -> None:
    pred, target = _pair(shape, seed)
    order = np.random.default_rng(perm_seed).permutation(shape[0])
    a = compute_field_metrics_arrays(pred, target)
    b = compute_field_metrics_arrays(pred[order], target[order])
    assert list(a.values) == list(b.values)
    for name in a.values:
        np.testing.assert_allclose(b.values[name], a.values[name], rtol=1e-12, atol=1e-300,
                                   err_msg=name)
        np.testing.assert_allclose(b.samples[name], a.samples[name][order], rtol=1e-12,
                                   err_msg=name)


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**31))
def test_zero_error_gives_zero(shape: tuple[int, ...], seed: int) -> None:
    _, target = _pair(shape, seed)
    got = compute_field_metrics_arrays(target, target.copy())
    for name, value in got.values.items():
        if name == "negativity_penalty":  # a property of the prediction alone
            continue
        assert value == 0.0, name
        assert np.all(got.samples[name] == 0.0), name


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**31), c=st.floats(0.05, 20.0))
def test_scaling_pred_and_target(shape: tuple[int, ...], seed: int, c: float) -> None:
    """Absolute metrics scale by c, squared ones by c^2, normalised ones stay."""
    pred, target = _pair(shape, seed)
    pred[0, 0, 0] = -1.0  # something for negativity_penalty to see
    a = compute_field_metrics_arrays(pred, target)
    b = compute_field_metrics_arrays(c * pred, c * target)
    for names, factor in ((ABSOLUTE, c), (SQUARED, c * c), (NORMALISED, 1.0)):
        for name in names:
            if name in a.values:
                np.testing.assert_allclose(b.values[name], factor * a.values[name],
                                           rtol=1e-9, err_msg=name)
    # VRMSE is normalised too, up to The Well's eps (1e-7) in the variance
    np.testing.assert_allclose(b.values["vrmse"], a.values["vrmse"], rtol=1e-4)


def _mode(shape: tuple[int, ...], k: tuple[int, ...], phase: float) -> np.ndarray:
    """cos(2 pi k.x + phase) on the periodic unit grid x_j = j / n."""
    grids = np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij")
    return np.cos(2 * np.pi * sum(kd * g for kd, g in zip(k, grids, strict=True)) + phase)


def _band(k2: float) -> str:
    return "low" if k2 < 16 else "mid" if k2 < 144 else "high"


@SETTINGS
@given(n=st.integers(26, 40), k=st.integers(0, 13), phase=st.floats(0, 6.28),
       amp=st.floats(0.01, 1.0))
def test_one_wavenumber_lands_in_its_band_1d(n: int, k: int, phase: float,
                                            amp: float) -> None:
    target = np.ones((2, 1, n, 1))
    pred = target + amp * _mode((n,), (k,), phase)[None, None, :, None]
    got = compute_field_metrics_arrays(pred, target)
    hit = _band(k * k)
    for family in ("frmse", "spectral_mse"):
        top = got.values[f"{family}_{hit}"]
        assert top > 0, (family, hit)
        for band in {"low", "mid", "high"} - {hit}:
            assert got.values[f"{family}_{band}"] <= 1e-10 * top, (family, band)


@SETTINGS
@given(nx=st.integers(26, 44), ny=st.integers(26, 44), i=st.integers(0, 12),
       j=st.integers(0, 12), flip=st.booleans(), phase=st.floats(0, 6.28))
def test_one_wavenumber_lands_in_its_band_2d(nx: int, ny: int, i: int, j: int, flip: bool,
                                            phase: float) -> None:
    """PDEBench counts the non-negative quadrant only: k = (i, -j) with i, j > 0 is
    invisible to its fRMSE; The Well's bins see every mode by |k|."""
    k = (i, -j if flip else j)
    if i == 0 and j == 0:
        phase = 0.0  # a constant: amplitude cos(0) = 1
    target = np.full((2, 1, nx, ny, 1), 1.5)
    pred = target + 0.1 * _mode((nx, ny), k, phase)[None, None, :, :, None]
    got = compute_field_metrics_arrays(pred, target)
    k2 = i * i + j * j
    hit = _band(k2)
    shell = int(np.floor(np.sqrt(k2)))
    top = got.values[f"spectral_mse_{hit}"]
    assert top > 0
    for band in {"low", "mid", "high"} - {hit}:
        assert got.values[f"spectral_mse_{band}"] <= 1e-10 * top
    visible = not (flip and i > 0 and j > 0) and shell < min(nx // 2, ny // 2)
    frmse = {b: got.values[f"frmse_{b}"] for b in ("low", "mid", "high")}
    scale = 0.1 / 1000
    if visible:
        assert frmse[hit] > 1e-3 * scale
        assert all(frmse[b] <= 1e-10 * frmse[hit] for b in frmse if b != hit)
    else:
        assert all(v <= 1e-12 for v in frmse.values()), frmse


def test_definitions_are_all_lower_is_better() -> None:
    assert {d.direction for d in DEFINITIONS.values()} == {"lower"}
