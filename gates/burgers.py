"""Bundled Burgers 1D sample evaluation: a real solver, two surrogates and their metric reports.

``pytest gates/`` gates this sample by default, so it has to be real data that a reader can
regenerate and check, not hand-written numbers. ``python -m gates.burgers`` writes,
deterministically (same seed, same bytes, no clock), into ``gates/sample/``:

* ``burgers1d_eval.json`` / ``champion_eval.json``: MetricReport JSON as the universal-simulator
  evaluator writes it (``{"metrics": {...}, "extra": {...}}``), challenger and champion.
* ``burgers1d_eval_samples.npz`` / ``champion_eval_samples.npz``: per-sample float64 vectors, one
  array per metric, plus ``sample_id``.
* ``burgers1d_eval_arrays.npz`` / ``champion_arrays.npz``: the float32 ``pred`` and ``target``
  fields, layout (sample, time, x, channel=1), for the field-level metrics demo.

``python -m gates.burgers --check`` regenerates into a temporary folder and compares sha256 digests.

The physics: viscous Burgers ``u_t + (u^2/2)_x = nu u_xx`` on the periodic domain [0, 2 pi). The
reference is a conservative finite-volume scheme (MUSCL reconstruction with the minmod limiter,
the exact Godunov flux, central diffusion, SSP-RK3, CFL-limited steps) on 256 cells, block-averaged
to the 64-cell evaluation grid at 11 times. The surrogates are the same scheme on coarser grids
(champion 46 cells, challenger 48 cells), started from the t=0 evaluation snapshot (conservative
remap) and decoded to the evaluation grid by periodic linear interpolation, the cheapest decoder;
it is not mass-conserving when the coarse grid does not divide 64, which gives the small,
honest conservation gap the physics gate looks at.

Metric definitions (every aggregate is the mean over samples of the per-sample value; a sample's
value averages over time, x and channel unless said otherwise):

* ``mse``, ``mae``: mean of ``(p - t)^2`` and ``|p - t|``; ``rmse``: ``sqrt(mse)`` per sample.
* ``nrmse``: ``sqrt(mean (p - t)^2 / (mean t^2 + 1e-8))`` (the evaluator's formula, per sample).
* ``rel_l2``: ``||p - t||_2 / ||t||_2`` over the sample's whole trajectory.
* ``conservation_gap``: mean over time (and channel) of ``|sum_x p - sum_x t| * dx``.
* ``bc_violation``: periodic seam error, mean over time (and channel) of
  ``|(p[x=0] - p[x=-1]) - (t[x=0] - t[x=-1])|``: the jump across the periodic boundary must be
  the true one. It is zero for the target, small for a translation-invariant model (the size of
  an interior first-difference error) and large for a model with a padding seam.
* ``negativity_penalty``: mean of ``max(-p, 0)``. The initial fields are non-negative, so by the
  maximum principle the exact solution stays so; both surrogates are monotone and score 0.

Determinism across machines: the data path uses only IEEE arithmetic (+ - * / sqrt, sums,
comparisons) and the PCG64 uniform stream; no libm transcendental, whose last bit may depend on
the CPU's SIMD level. The npz files are stored uncompressed, so no zlib version enters the bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gates.bundle import write_baseline
from gates.policy import DEFAULT_RULE

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
EPS = 1e-8
LENGTH = 2.0 * math.pi
EVAL_DX = LENGTH / NX_EVAL
GENERATED_AT = "2025-01-01T00:00:00+00:00"
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

ERROR_METRICS = ("mse", "mae", "rmse", "nrmse", "rel_l2")
PHYSICS_METRICS = ("conservation_gap", "bc_violation", "negativity_penalty")
METRIC_NAMES = ERROR_METRICS + PHYSICS_METRICS

# Relations the bundled pair must keep so that the default gate run passes and the challenger
# is promotable: nrmse improves by 2-8 %, no error metric worsens by more than 10 %, and no
# physics metric worsens at all.
NRMSE_RATIO_RANGE = (0.92, 0.98)
ERROR_SLACK = 1.10


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

FILES = {
    "challenger": (
        "burgers1d_eval.json",
        "burgers1d_eval_samples.npz",
        "burgers1d_eval_arrays.npz",
    ),
    "champion": ("champion_eval.json", "champion_eval_samples.npz", "champion_arrays.npz"),
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


# -------------------------------------------------------------------------------------- metrics


def report_metrics(
    pred: npt.ArrayLike, target: npt.ArrayLike, dx: float = EVAL_DX
) -> tuple[dict[str, float], dict[str, FloatArray]]:
    """Evaluator metrics of ``pred`` against ``target``, both (sample, time, x, channel).

    Written independently of any gate code so that it can check what the gates read. Returns
    ``(aggregates, per_sample)``; each aggregate is the mean over samples of the per-sample
    vector. Definitions are in the module docstring.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 4:
        raise ValueError(f"pred {p.shape} and target {t.shape} must share a 4-D shape")
    diff = p - t
    axes = (1, 2, 3)
    mse = np.mean(diff * diff, axis=axes)
    seam_p = p[:, :, 0, :] - p[:, :, -1, :]
    seam_t = t[:, :, 0, :] - t[:, :, -1, :]
    per_sample: dict[str, FloatArray] = {
        "mse": mse,
        "mae": np.mean(np.abs(diff), axis=axes),
        "rmse": np.sqrt(mse),
        "nrmse": np.sqrt(mse / (np.mean(t * t, axis=axes) + EPS)),
        "rel_l2": np.sqrt(np.sum(diff * diff, axis=axes)) / np.sqrt(np.sum(t * t, axis=axes)),
        "conservation_gap": np.mean(np.abs(p.sum(axis=2) - t.sum(axis=2)) * dx, axis=(1, 2)),
        "bc_violation": np.mean(np.abs(seam_p - seam_t), axis=(1, 2)),
        "negativity_penalty": np.mean(np.maximum(-p, 0.0), axis=axes),
    }
    aggregates = {name: float(np.mean(values)) for name, values in per_sample.items()}
    return aggregates, per_sample


@dataclass(frozen=True)
class Evaluation:
    """One model's float32 fields as the evaluator sees them, and their metrics."""

    label: str
    pred: npt.NDArray[np.float32]
    target: npt.NDArray[np.float32]
    metrics: dict[str, float]
    per_sample: dict[str, FloatArray]


def evaluate(seed: int = SEED) -> dict[str, Evaluation]:
    """Run both surrogates on the seeded dataset; keys ``champion`` and ``challenger``.

    Fields are rounded to float32 (what a model emits and the arrays file stores) before the
    metrics, so the report and the arrays file agree.
    """
    _, nu = initial_conditions(seed, N_SAMPLES, NX_REF)
    target = make_dataset(seed, N_SAMPLES)
    target32 = target.astype(np.float32)
    result: dict[str, Evaluation] = {}
    for key, spec in SURROGATES.items():
        pred32 = surrogate_predictions(key, target, nu).astype(np.float32)
        aggregates, per_sample = report_metrics(pred32, target32, EVAL_DX)
        result[key] = Evaluation(spec.label, pred32, target32, aggregates, per_sample)
    return result


def relation_violations(
    champion: Mapping[str, float], challenger: Mapping[str, float]
) -> list[str]:
    """Ways in which the challenger breaks the bundled relations (empty list: all kept)."""
    problems: list[str] = []
    ratio = challenger["nrmse"] / champion["nrmse"]
    if not NRMSE_RATIO_RANGE[0] <= ratio <= NRMSE_RATIO_RANGE[1]:
        problems.append(f"nrmse ratio {ratio:.4f} outside {NRMSE_RATIO_RANGE}")
    for name in ERROR_METRICS:
        if challenger[name] > ERROR_SLACK * champion[name]:
            problems.append(f"{name} {challenger[name]:.6g} > {ERROR_SLACK} x {champion[name]:.6g}")
    for name in PHYSICS_METRICS:
        if challenger[name] > champion[name]:
            problems.append(f"{name} {challenger[name]:.6g} > champion {champion[name]:.6g}")
    if not (challenger["bc_violation"] > 0.0 and champion["bc_violation"] > 0.0):
        problems.append("bc_violation must be non-zero for both surrogates")
    return problems


# -------------------------------------------------------------------------------------- writing


def _solver_params(spec: Surrogate, seed: int) -> dict[str, Any]:
    """Parameters recorded in the report so a reader can tell how the sample was made."""
    return {
        "equation": "u_t + (u^2/2)_x = nu u_xx",
        "domain": [0.0, LENGTH],
        "boundary": "periodic",
        "reference_scheme": "finite volume, MUSCL-minmod, Godunov flux, central diffusion, SSP-RK3",
        "cfl": CFL,
        "nx_reference": NX_REF,
        "nx_eval": NX_EVAL,
        "nx_model": spec.nx,
        "decoder": "periodic linear interpolation",
        "t_final": T_FINAL,
        "n_times": N_TIMES,
        "nu_range": list(NU_RANGE),
        "n_modes": N_MODES,
        "seed": seed,
    }


def _report_json(ev: Evaluation, spec: Surrogate, seed: int) -> str:
    """MetricReport JSON, laid out as the evaluator's ``json.dumps(asdict(report), indent=2)``."""
    report = {
        "metrics": {name: ev.metrics[name] for name in METRIC_NAMES},
        "extra": {
            "samples": int(ev.pred.shape[0]),
            "tau": None,
            "ttc": False,
            "suite": "burgers1d",
            "model": spec.label,
            "generated_at": GENERATED_AT,
            "solver": _solver_params(spec, seed),
        },
    }
    return json.dumps(report, indent=2) + "\n"


def generate(out_dir: Path, seed: int = SEED) -> list[Path]:
    """Write the sample files into ``out_dir``; asserts the champion/challenger relations."""
    evals = evaluate(seed)
    problems = relation_violations(evals["champion"].metrics, evals["challenger"].metrics)
    if problems:
        raise AssertionError("bundled champion/challenger relations broken: " + "; ".join(problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, (report_name, samples_name, arrays_name) in FILES.items():
        ev = evals[key]
        report_path = out_dir / report_name
        report_path.write_text(_report_json(ev, SURROGATES[key], seed), encoding="utf-8")
        samples_path = out_dir / samples_name
        vectors: dict[str, Any] = {name: ev.per_sample[name] for name in METRIC_NAMES}
        vectors["sample_id"] = np.arange(ev.pred.shape[0], dtype=np.int64)
        np.savez(samples_path, allow_pickle=False, **vectors)
        arrays_path = out_dir / arrays_name
        np.savez(arrays_path, allow_pickle=False, pred=ev.pred, target=ev.target)
        written += [report_path, samples_path, arrays_path]
    return written


def _sha256(path: Path) -> str:
    """Hex digest of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(bundle_dir: Path = SAMPLE_DIR, baselines: Path | None = None) -> list[str]:
    """Regenerate into a temporary folder; list every file that differs from the bundle
    (the sample in ``bundle_dir`` and, when given, the baseline store ``baselines``)."""
    differences: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh_dir = Path(tmp)
        pairs = [(bundle_dir / f.name, f) for f in generate(fresh_dir / "sample")]
        if baselines is not None:
            store = fresh_dir / "baselines"
            pairs += [(baselines / f.relative_to(store), f)
                      for f in write_baseline(store, fresh_dir / "sample", DEFAULT_RULE)]
        for bundled, fresh in pairs:
            if not bundled.is_file():
                differences.append(f"{bundled}: missing")
            elif _sha256(bundled) != _sha256(fresh):
                differences.append(f"{bundled}: differs from a fresh regeneration")
    return differences


def main(argv: list[str] | None = None) -> int:
    """CLI: write the sample (default) or verify it byte for byte (``--check``)."""
    parser = argparse.ArgumentParser(
        prog="python -m gates.burgers",
        description="Generate (or --check) the bundled Burgers 1D sample evaluation.",
    )
    parser.add_argument(
        "--out", type=Path, default=SAMPLE_DIR, help="folder (default: %(default)s)"
    )
    parser.add_argument(
        "--baselines", type=Path, default=Path("baselines"),
        help="baseline store to (re)write the bundled burgers1d suite into "
             "(default: %(default)s; 'none' to skip)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary folder and compare sha256 with the files in --out",
    )
    args = parser.parse_args(argv)
    baselines = None if str(args.baselines) == "none" else args.baselines
    if args.check:
        differences = check(args.out, baselines)
        for line in differences:
            print(line, file=sys.stderr)
        if differences:
            print(
                f"{len(differences)} file(s) differ; rerun `python -m gates.burgers`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.out}: the bundled Burgers sample regenerates byte for byte")
        return 0
    written = generate(args.out)
    if baselines is not None:
        written += write_baseline(baselines, args.out, DEFAULT_RULE)
    for path in written:
        print(f"{path.stat().st_size:>9d}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
