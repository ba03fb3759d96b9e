"""The bundled Burgers 1D sample's physics: a real solver and two coarse-grid surrogates.

A generator module (``python -m gates.sample.generate`` runs it); nothing on the gates'
runtime path imports it.

The physics: viscous Burgers ``u_t + (u^2/2)_x = nu u_xx`` on the periodic domain [0, 2 pi). The
reference is a conservative finite-volume scheme (MUSCL reconstruction with the minmod limiter,
the exact Godunov flux, central diffusion, SSP-RK3, CFL-limited steps) on 256 cells, block-averaged
to the 64-cell evaluation grid at 11 times. The surrogates are the same scheme on coarser grids
(champion 46 cells, challenger 48 cells), started from the t=0 evaluation snapshot (conservative
remap) and decoded to the evaluation grid by periodic linear interpolation, the cheapest decoder;
it is not mass-conserving when the coarse grid does not divide 64, which gives the small,
honest conservation gap the physics gate looks at.

Determinism across machines: the data path uses only IEEE arithmetic (+ - * / sqrt, sums,
comparisons) and the PCG64 uniform stream; no libm transcendental, whose last bit may depend on
the CPU's SIMD level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

SEED = 20240611
N_SAMPLES = 32
NX_REF = 256
NX_EVAL = 64
N_TIMES = 11
T_FINAL = 1.5
NU_RANGE = (0.02, 0.05)
N_MODES = 3
CFL = 0.4
LENGTH = 2.0 * math.pi
EVAL_DX = LENGTH / NX_EVAL
SAMPLE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Surrogate:
    """A coarse-grid surrogate: the reference scheme on ``nx`` cells plus a linear decoder."""

    key: str
    label: str
    nx: int


SURROGATES: dict[str, Surrogate] = {
    "champion": Surrogate("champion", "champion-fv46", 46),
    "challenger": Surrogate("challenger", "challenger-fv48", 48),
}

# --------------------------------------------------------------------------- initial conditions


def _cos_sin_table(n: int) -> tuple[FloatArray, FloatArray]:
    """cos and sin of 2 pi m / n, m = 0..n-1, from Taylor polynomials.

    Only IEEE arithmetic, so the table is bit-identical on every CPU (numpy's SIMD sin/cos
    is not); the error is ~1e-15, far below anything the sample is sensitive to.
    """
    m = np.arange(n, dtype=np.float64)
    m = np.where(m > n / 2, m - n, m)  # reduce the angle to (-pi, pi]
    theta = LENGTH * m / n
    t2 = theta * theta
    cos = np.ones(n)
    sin = np.ones(n)
    for j in range(24, 0, -1):  # Horner in theta^2; the last term is ~1e-40
        cos = 1.0 - t2 * cos / ((2 * j - 1) * (2 * j))
        sin = 1.0 - t2 * sin / ((2 * j) * (2 * j + 1))
    return cos, theta * sin


def initial_conditions(
    seed: int = SEED, n_samples: int = N_SAMPLES, nx: int = NX_REF
) -> tuple[FloatArray, FloatArray]:
    """Random smooth, non-negative periodic fields (exact cell averages) and their viscosities.

    ``u0 = c + A g / max|g|`` with ``g`` a sum of Fourier modes 1..3 whose amplitudes fall
    like 1/k, ``A`` in [0.4, 0.8] and ``c >= A``, so every cell average is >= 0 and the flow
    moves right and steepens into weak shocks within T. Returns ``(u0 (n, nx), nu (n,))``.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(1, N_MODES + 1)
    a = rng.uniform(-1.0, 1.0, (n_samples, N_MODES)) / k
    b = rng.uniform(-1.0, 1.0, (n_samples, N_MODES)) / k
    amp = rng.uniform(0.4, 0.8, n_samples)
    offset = amp * rng.uniform(1.0, 1.3, n_samples)
    nu = rng.uniform(NU_RANGE[0], NU_RANGE[1], n_samples)

    cos, sin = _cos_sin_table(nx)
    dx = LENGTH / nx
    edges = np.arange(nx + 1)
    g = np.zeros((n_samples, nx))
    for i, kk in enumerate(k):
        idx = (kk * edges) % nx  # exact periodicity: k x_j = 2 pi (k j mod nx) / nx
        cos_avg = (sin[idx[1:]] - sin[idx[:-1]]) / (kk * dx)  # cell average of cos(kx)
        sin_avg = (cos[idx[:-1]] - cos[idx[1:]]) / (kk * dx)  # cell average of sin(kx)
        g += a[:, i : i + 1] * cos_avg + b[:, i : i + 1] * sin_avg
    g /= np.max(np.abs(g), axis=1, keepdims=True)
    return offset[:, None] + amp[:, None] * g, nu


# --------------------------------------------------------------------------------------- solver


def _minmod(a: FloatArray, b: FloatArray) -> FloatArray:
    """Minmod slope: second order in smooth regions, no new extrema at shocks (TVD)."""
    return np.where(a * b > 0.0, np.sign(a) * np.minimum(np.abs(a), np.abs(b)), 0.0)


def _godunov_flux(ul: FloatArray, ur: FloatArray) -> FloatArray:
    """Exact Riemann flux of the convex flux u^2/2: least numerical diffusion of its kind."""
    fl = 0.5 * ul * ul
    fr = 0.5 * ur * ur
    rarefaction = np.where((ul < 0.0) & (ur > 0.0), 0.0, np.minimum(fl, fr))
    return np.where(ul > ur, np.maximum(fl, fr), rarefaction)


def _rhs(u: FloatArray, nu: FloatArray | float, dx: float) -> FloatArray:
    """Flux-difference right-hand side; the telescoping sum makes the scheme conservative."""
    up = np.roll(u, -1, axis=-1)
    um = np.roll(u, 1, axis=-1)
    slope = _minmod(u - um, up - u)
    left = u + 0.5 * slope  # state left of face i+1/2
    right = np.roll(u - 0.5 * slope, -1, axis=-1)  # state right of face i+1/2
    flux = _godunov_flux(left, right) - nu * (up - u) / dx
    return -(flux - np.roll(flux, 1, axis=-1)) / dx


def solve_burgers(
    u0: npt.ArrayLike,
    nu: float | npt.ArrayLike,
    t_final: float = T_FINAL,
    *,
    n_times: int = N_TIMES,
    nx_out: int | None = None,
    cfl: float = CFL,
) -> FloatArray:
    """Solve viscous Burgers on the periodic [0, 2 pi) from cell averages ``u0``.

    ``u0`` is (nx,) or (batch, nx); ``nu`` a scalar or one value per batch member. Returns the
    cell averages at ``n_times`` equally spaced times in [0, t_final], shape (batch, n_times, nx)
    (no batch axis for a 1-D ``u0``), block-averaged to ``nx_out`` cells if given (it must
    divide nx; block averaging keeps the mass). The batch shares one time step, the smallest
    CFL-limited one, recomputed per output interval and shortened to land on the output times.
    """
    u = np.array(u0, dtype=np.float64)
    single = u.ndim == 1
    u = np.atleast_2d(u)
    if u.ndim != 2:
        raise ValueError(f"u0 must be (nx,) or (batch, nx), got shape {u.shape}")
    nx = u.shape[-1]
    if nx_out is not None and (nx_out <= 0 or nx % nx_out):
        raise ValueError(f"nx_out={nx_out} must divide nx={nx}")
    if n_times < 2 or t_final <= 0.0:
        raise ValueError("need n_times >= 2 and t_final > 0")
    nu_arr = np.asarray(nu, dtype=np.float64)
    if np.any(nu_arr < 0.0):
        raise ValueError("viscosity must be >= 0")
    nu_col = nu_arr.reshape(-1, 1) if nu_arr.ndim else nu_arr
    nu_max = float(np.max(nu_arr))
    dx = LENGTH / nx
    interval = t_final / (n_times - 1)

    out = np.empty((u.shape[0], n_times, nx))
    out[:, 0] = u
    for k in range(1, n_times):
        rate = float(np.max(np.abs(u))) / dx + 2.0 * nu_max / dx**2  # forward-Euler limit
        n_steps = max(1, math.ceil(interval * rate / cfl))
        dt = interval / n_steps
        for _ in range(n_steps):  # SSP-RK3 (Shu-Osher): convex sums of Euler steps
            u1 = u + dt * _rhs(u, nu_col, dx)
            u2 = 0.75 * u + 0.25 * (u1 + dt * _rhs(u1, nu_col, dx))
            u = u / 3.0 + 2.0 / 3.0 * (u2 + dt * _rhs(u2, nu_col, dx))
        out[:, k] = u
    if nx_out is not None:
        out = block_average(out, nx_out)
    return out[0] if single else out


# ------------------------------------------------------------------------------- grid transfers


def block_average(u: FloatArray, nx_out: int) -> FloatArray:
    """Restrict cell averages along the last axis by averaging blocks (mass-conserving)."""
    nx = u.shape[-1]
    if nx % nx_out:
        raise ValueError(f"nx_out={nx_out} must divide {nx}")
    return np.asarray(u.reshape(*u.shape[:-1], nx_out, nx // nx_out).mean(axis=-1))


def remap_periodic(u: FloatArray, nx_out: int) -> FloatArray:
    """Conservative remap of periodic piecewise-constant cell averages to ``nx_out`` cells.

    Interpolates the cumulative integral (exact for piecewise constants) at the new edges, so
    the mass is kept for any pair of grids; the surrogates use it to read their initial state.
    """
    nx = u.shape[-1]
    flat = u.reshape(-1, nx)
    cumulative = np.concatenate([np.zeros((flat.shape[0], 1)), np.cumsum(flat, axis=1)], axis=1)
    edges_in = np.arange(nx + 1) / nx
    edges_out = np.arange(nx_out + 1) / nx_out
    at_out = np.stack([np.interp(edges_out, edges_in, row) for row in cumulative])
    return (np.diff(at_out, axis=1) * (nx_out / nx)).reshape(*u.shape[:-1], nx_out)


def interpolate_periodic(u: FloatArray, nx_out: int) -> FloatArray:
    """Periodic linear interpolation between cell centres along the last axis.

    The surrogates' decoder: no new extrema (it keeps positivity), but not mass-conserving
    when the grids are not nested.
    """
    nx = u.shape[-1]
    pos = (np.arange(nx_out) + 0.5) * (nx / nx_out) - 0.5  # output centres in input index units
    i0 = np.floor(pos).astype(np.int64)
    w = pos - i0
    return np.asarray(u[..., i0 % nx] * (1.0 - w) + u[..., (i0 + 1) % nx] * w)


# ------------------------------------------------------------------------- dataset and surrogates


def make_dataset(seed: int = SEED, n_samples: int = N_SAMPLES) -> FloatArray:
    """Reference target fields, (sample, time, x, channel=1) on the evaluation grid."""
    u0, nu = initial_conditions(seed, n_samples, NX_REF)
    return solve_burgers(u0, nu, T_FINAL, n_times=N_TIMES, nx_out=NX_EVAL)[..., None]


def _surrogate(name: str) -> Surrogate:
    """Look a surrogate up by key (``champion``) or label (``champion-fv46``)."""
    for spec in SURROGATES.values():
        if name in (spec.key, spec.label):
            return spec
    raise KeyError(f"unknown surrogate {name!r}; known: {sorted(SURROGATES)}")


def surrogate_predictions(
    name: str, target: FloatArray, nu: npt.ArrayLike, t_final: float = T_FINAL
) -> FloatArray:
    """Predictions of surrogate ``name`` for ``target`` (sample, time, x, 1).

    The surrogate sees what a learned model would: the t=0 snapshot and the viscosity. It
    remaps that snapshot to its coarse grid, integrates with the reference scheme and decodes
    every output time back to the evaluation grid.
    """
    spec = _surrogate(name)
    start = remap_periodic(np.asarray(target[:, 0, :, 0], dtype=np.float64), spec.nx)
    coarse = solve_burgers(start, nu, t_final, n_times=target.shape[1])
    return interpolate_periodic(coarse, target.shape[2])[..., None]
