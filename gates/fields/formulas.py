"""The metric definitions: per-slab sums -> accumulators -> aggregates and per-sample vectors.

Notation: ``e = pred - target``; a slab is one (sample b, time t) snapshot with ``P``
grid points and ``C`` channels; ``x`` runs over its points. Three conventions, each as
its reference code computes it (values checked against that code in tests/test_parity.py
with the fixtures of ../shared/parity/):

* PDEBench ``metric_func`` (rmse, nrmse, crmse, brmse, max_error, frmse_*): the whole set
  as one batch, ``initial_step`` (FieldLayout, default 0) leading time steps left out,
  ``Lx = Ly = Lz = 1``, ``iLow = 4``, ``iHigh = 12``, each per-(time, channel) value then
  averaged over channel and time.
* The Well (mse, mae, vrmse, linf, spectral_mse_*): per (sample, time, channel) slab,
  averaged over the batch, then over channels, then over time (its validation loop).
* universal-simulator's evaluator (conservation_gap, bc_violation, negativity_penalty):
  per (sample, time) row of P points x C channels, averaged over rows.

Every formula is in the ``DEFINITIONS`` table below (name -> source, formula, how the
per-sample vector relates to the aggregate). Only this module defines these names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gates.fields.kernels import BAND_EDGES, shell_count
from gates.fields.layout import Plan
from gates.fields.stats import SlabStats

__all__ = [
    "DEFINITIONS",
    "DEFINITIONS_VERSION",
    "METRIC_DOCS",
    "METRIC_NAMES",
    "Definition",
    "FieldMetrics",
    "Partial",
    "finalize",
    "partial",
]

DEFINITIONS_VERSION = "2"
"""Version of the field-metric definitions; baselines record it as ``field_metrics_version``.

"1": the first release (pooled per-sample RMS values, a seam-ratio bc_violation). "2":
every metric as its reference code computes it (this module).
"""

WELL_EPS = 1e-7
"""The Well's ``eps`` in NRMSE/VRMSE denominators."""


@dataclass(frozen=True)
class Definition:
    """One metric: where it comes from, its formula, how its per-sample vector aggregates."""

    name: str
    source: str
    formula: str
    aggregation: str  # "mean" | "rms" | "max" (see FieldMetrics)
    direction: str = "lower"


_PDE = "PDEBench metric_func"
_WELL = "The Well"
_UPS = "universal-simulator evaluator"
_BATCH = ("per-sample vector: the value of that sample alone (a batch of one); the "
          "aggregate is not a mean of it")
DEFINITIONS: dict[str, Definition] = {d.name: d for d in (
    Definition("rmse", f"{_PDE} err_RMSE",
               "mean_{t,c} mean_b sqrt(mean_x e^2)", "mean"),
    Definition("nrmse", f"{_PDE} err_nRMSE",
               "mean_{t,c} mean_b sqrt(mean_x e^2) / sqrt(mean_x target^2) (no eps)", "mean"),
    Definition("crmse", f"{_PDE} err_CSV",
               "mean_{t,c} sqrt(mean_b (sum_x pred - sum_x target)^2) / P; " + _BATCH
               + " (rms: per-sample squared values, exact when T*C = 1)", "max"),
    Definition("brmse", f"{_PDE} err_BD",
               "1D/2D: mean_{t,c} mean_b sqrt(sum over both faces of every axis of e^2 / F), "
               "F = sum_d 2 P / n_d (shared points counted once per face); 3D: the same "
               "with the channels summed inside the square root, mean over b and t", "mean"),
    Definition("max_error", f"{_PDE} err_Max",
               "mean_{t,c} max_b max_x |e|; " + _BATCH, "max"),
    *(Definition(f"frmse_{band}", f"{_PDE} err_F[{i}]",
                 "mean_{t,c} mean_{s in band} sqrt(mean_b E_s) / P; 1D: E_s = |rfft(e)_s|^2, "
                 "s = 0..n/2; 2D/3D: E_s = sum of |fftn(e)_i|^2 over the quadrant "
                 "0 <= i_d < n_d/2 with floor(|i|) = s, s < min(n_d/2); bands "
                 f"[0, 4), [4, 12), [12, ...); {_BATCH} (rms when a single (t, c, s) is "
                 "averaged)", "max")
      for i, band in enumerate(("low", "mid", "high"))),
    Definition("mse", f"{_WELL} MSE", "mean_{t,c,b} mean_x e^2", "mean"),
    Definition("mae", f"{_WELL} MAE", "mean_{t,c,b} mean_x |e|", "mean"),
    Definition("vrmse", f"{_WELL} VRMSE",
               "mean_{t,c,b} sqrt(mean_x e^2 / (std_x(target)^2 + 1e-7)), std with "
               "divisor P - 1 (Bessel, as torch.std)", "mean"),
    Definition("linf", f"{_WELL} LInfinity", "mean_{t,c,b} max_x |e|", "mean"),
    *(Definition(f"spectral_mse_{band}", f"{_WELL} binned_spectral_mse",
                 "mean_{t,c,b} sum over the fftn modes k with |k| in the band of "
                 "|fftn(e)_k|^2 / P^2 (integer wavenumbers, bins [0, 4), [4, 12), "
                 "[12, inf))", "mean")
      for band in ("low", "mid", "high")),
    Definition("conservation_gap", _UPS,
               "mean_{b,t} |sum_{x,c} pred - sum_{x,c} target| (channels summed first)",
               "mean"),
    Definition("bc_violation", _UPS,
               "mean_{b,t} (mean_c |e[x_first, c]| + mean_c |e[x_last, c]|) / 2, x_first and "
               "x_last the first and last grid point in C order", "mean"),
    Definition("negativity_penalty", _UPS, "mean_{b,t} mean_{x,c} max(-pred, 0)", "mean"),
)}
METRIC_NAMES: tuple[str, ...] = tuple(DEFINITIONS)
METRIC_DOCS: dict[str, str] = {n: f"{d.source}: {d.formula}" for n, d in DEFINITIONS.items()}

_BANDS = ("low", "mid", "high")


@dataclass
class FieldMetrics:
    """Field metrics of one evaluation set (names without the ``field/`` prefix).

    ``values``: the aggregates. ``samples``: one float64 vector per metric, one entry per
    sample. ``aggregation`` says how they relate: "mean" (the vector averages to the
    aggregate), "rms" (the vector holds per-sample squared contributions and
    ``sqrt(mean(vector))`` is the aggregate), "max" (no per-sample decomposition: the
    vector holds each sample's own value, the noise-aware rules fall back to the
    threshold rule). A metric the reference leaves undefined (NaN from an empty band,
    e.g. frmse_high on grids with fewer than 13 shells) is omitted, with a note.
    """

    values: dict[str, float]
    samples: dict[str, np.ndarray]
    aggregation: dict[str, str]
    spatial_shape: tuple[int, ...]
    n_samples: int
    version: str = DEFINITIONS_VERSION
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- accumulators

_PER_SAMPLE = ("mse", "mae", "vrmse", "linf", "gap", "bc", "neg", "w_low", "w_mid", "w_high",
               "rmse", "nrmse", "brmse", "crmse1", "crmse2", "max1", "f1_low", "f1_mid",
               "f1_high", "f2_low", "f2_mid", "f2_high")
_Q = {name: i for i, name in enumerate(_PER_SAMPLE)}


@dataclass
class Partial:
    """Sums of a block of samples s0.. x time steps t0..; combinable in any order."""

    s0: int
    t0: int
    add: np.ndarray  # (ns, len(_PER_SAMPLE)) per-sample sums over time (and channel)
    csq: np.ndarray  # (nt, C) sum_b (sum_x e)^2
    mx: np.ndarray  # (nt, C) max_b max_x |e|
    shell: np.ndarray  # (nt, C, S) sum_b E_s

    @classmethod
    def empty(cls, plan: Plan) -> Partial:
        nt, c = plan.n_times, plan.n_chan
        return cls(0, 0, np.zeros((plan.n_samples, len(_PER_SAMPLE))), np.zeros((nt, c)),
                   np.full((nt, c), -np.inf), np.zeros((nt, c, shell_count(plan.space))))

    def merge(self, other: Partial) -> None:
        """Fold ``other`` in (its samples and times sit at its offsets)."""
        self.add[other.s0 : other.s0 + other.add.shape[0]] += other.add
        ts = slice(other.t0, other.t0 + other.csq.shape[0])
        self.csq[ts] += other.csq
        np.maximum(self.mx[ts], other.mx, out=self.mx[ts])
        if other.shell.shape[2]:
            self.shell[ts] += other.shell


def _band_slices(plan: Plan) -> dict[str, slice]:
    """Shell ranges of the three PDEBench bands, clipped to the grid's shells."""
    n = shell_count(plan.space)
    lo, hi = BAND_EDGES
    return {"low": slice(0, min(lo, n)), "mid": slice(min(lo, n), min(hi, n)),
            "high": slice(min(hi, n), n)}


def partial(st: SlabStats, ns: int, nt: int, s0: int, t0: int, plan: Plan,
            spectral: bool = True) -> Partial:
    """Reduce one chunk's per-slab sums to per-sample and per-time partials."""
    P = float(plan.points)
    C = plan.n_chan

    def r(a: np.ndarray) -> np.ndarray:
        return a.reshape((ns, nt) + a.shape[1:])

    se, se2, su, su2, t0v, maxe = r(st.se), r(st.se2), r(st.su), r(st.su2), r(st.t0), r(st.maxe)
    keep = (np.arange(t0, t0 + nt) >= plan.initial_step).astype(np.float64)  # PDEBench only
    kc = keep[None, :, None]
    out = Partial(s0, t0, np.zeros((ns, len(_PER_SAMPLE))), np.zeros((nt, C)),
                  np.full((nt, C), -np.inf), np.zeros((nt, C, st.shell.shape[2])))
    add = out.add
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = se2 / P
        var = (su2 - su * su / P) / (P - 1.0)  # Bessel, from the shifted sums
        add[:, _Q["mse"]] = mse.sum(axis=(1, 2))
        add[:, _Q["mae"]] = r(st.sae).sum(axis=1) / P
        add[:, _Q["vrmse"]] = np.sqrt(mse / (var + WELL_EPS)).sum(axis=(1, 2))
        add[:, _Q["linf"]] = maxe.sum(axis=(1, 2))
        add[:, _Q["gap"]] = np.abs(se.sum(axis=2)).sum(axis=1)
        add[:, _Q["bc"]] = (0.5 * (r(st.eb0).mean(axis=2) + r(st.eb1).mean(axis=2))).sum(axis=1)
        add[:, _Q["neg"]] = r(st.neg).sum(axis=1) / (P * C)
        rmse = np.sqrt(mse)
        st2 = su2 + 2.0 * t0v * su + P * t0v * t0v
        add[:, _Q["rmse"]] = (rmse * kc).sum(axis=(1, 2))
        add[:, _Q["nrmse"]] = (rmse / np.sqrt(st2 / P) * kc).sum(axis=(1, 2))
        bse2 = r(st.bse2)
        if len(plan.space) >= 3:  # PDEBench 3D sums the channels inside the root
            add[:, _Q["brmse"]] = (np.sqrt(bse2.sum(axis=2) / plan.face_points)
                                   * keep).sum(axis=1)
        else:
            add[:, _Q["brmse"]] = (np.sqrt(bse2 / plan.face_points) * kc).sum(axis=(1, 2))
        add[:, _Q["crmse1"]] = (np.abs(se) / P * kc).sum(axis=(1, 2))
        add[:, _Q["crmse2"]] = ((se / P) ** 2 * kc).sum(axis=(1, 2))
        add[:, _Q["max1"]] = (maxe * kc).sum(axis=(1, 2))
        out.csq[:] = (se * se).sum(axis=0)
        out.mx[:] = maxe.max(axis=0)
        if spectral:
            wb = r(st.wband) / (P * P)
            for i, band in enumerate(_BANDS):
                add[:, _Q[f"w_{band}"]] = wb[..., i].sum(axis=1)
            shell = r(st.shell)  # (ns, nt, C, S)
            for band, sl in _band_slices(plan).items():
                if sl.stop > sl.start:
                    amp = np.sqrt(shell[..., sl]).mean(axis=3) / P
                    add[:, _Q[f"f1_{band}"]] = (amp * kc).sum(axis=(1, 2))
                    add[:, _Q[f"f2_{band}"]] = ((shell[..., sl] / (P * P)).sum(axis=3)
                                               * kc).sum(axis=(1, 2))
            out.shell[:] = shell.sum(axis=0)
    return out


def finalize(acc: Partial, plan: Plan, *, pointwise: bool = True,
             spectral: bool = True) -> FieldMetrics:
    """Aggregates and per-sample vectors from the accumulated sums."""
    B, T, C, P = plan.n_samples, plan.n_times, plan.n_chan, float(plan.points)
    tk = T - plan.initial_step
    kept = slice(plan.initial_step, T)
    col = lambda name: acc.add[:, _Q[name]]  # noqa: E731
    samples: dict[str, np.ndarray] = {}
    values: dict[str, float] = {}
    aggregation: dict[str, str] = {}
    notes: list[str] = []

    def put(name: str, vector: np.ndarray, value: float | None = None,
            how: str = "mean") -> None:
        samples[name] = np.ascontiguousarray(vector, dtype=np.float64)
        values[name] = float(np.mean(vector)) if value is None else float(value)
        aggregation[name] = how

    with np.errstate(divide="ignore", invalid="ignore"):
        if pointwise:
            per_tc = tk * C
            put("rmse", col("rmse") / per_tc)
            put("nrmse", col("nrmse") / per_tc)
            crmse = float(np.mean(np.sqrt(acc.csq[kept] / B) / P))
            if per_tc == 1:
                put("crmse", col("crmse2"), crmse, "rms")
            else:
                put("crmse", col("crmse1") / per_tc, crmse, "max")
            put("brmse", col("brmse") / (tk if len(plan.space) >= 3 else per_tc))
            put("max_error", col("max1") / per_tc, float(np.mean(acc.mx[kept])), "max")
            n_tc = T * C
            put("mse", col("mse") / n_tc)
            put("mae", col("mae") / n_tc)
            put("vrmse", col("vrmse") / n_tc)
            put("linf", col("linf") / n_tc)
        if spectral:
            amp = np.sqrt(acc.shell[kept] / B) / P  # (tk, C, S)
            for band, sl in _band_slices(plan).items():
                n_modes = sl.stop - sl.start
                name = f"frmse_{band}"
                if n_modes <= 0:
                    nominal = {"low": "[0, 4)", "mid": "[4, 12)", "high": "[12, ...)"}[band]
                    notes.append(f"field/{name} omitted: PDEBench's {band} band {nominal} has "
                                 f"no shell on a {'x'.join(map(str, plan.space))} grid "
                                 f"({shell_count(plan.space)} shells); PDEBench returns NaN")
                    continue
                value = float(np.mean(amp[..., sl].mean(axis=2)))
                if tk * C * n_modes == 1:
                    put(name, col(f"f2_{band}"), value, "rms")
                else:
                    put(name, col(f"f1_{band}") / (tk * C), value, "max")
            for band in _BANDS:
                put(f"spectral_mse_{band}", col(f"w_{band}") / (T * C))
        if pointwise:
            put("conservation_gap", col("gap") / T)
            put("bc_violation", col("bc") / T)
            put("negativity_penalty", col("neg") / T)
    order = {name: i for i, name in enumerate(METRIC_NAMES)}
    keys = sorted(values, key=order.__getitem__)
    return FieldMetrics({k: values[k] for k in keys}, {k: samples[k] for k in keys},
                        {k: aggregation[k] for k in keys}, plan.space, B, notes=notes)
