"""Write (or ``--check``) the bundled Burgers 1D sample and its baseline, byte for byte.

``python -m gates.sample.generate`` writes, deterministically (same seed, same bytes, no
clock), into ``gates/sample/``:

* ``burgers1d_eval.json`` / ``champion_eval.json``: MetricReport JSON as the
  universal-simulator evaluator writes it (``{"metrics": {...}, "extra": {...}}``).
* ``burgers1d_eval_samples.npz`` / ``champion_eval_samples.npz``: per-sample float64
  vectors, one array per metric, plus ``sample_id``.
* ``burgers1d_eval_arrays.npz`` / ``champion_arrays.npz``: the float32 ``pred`` and
  ``target`` fields, layout (sample, time, x, channel=1), for ``--gates-arrays``.

and the baseline store of suite ``burgers1d`` (the champion as version 1, with its field
metrics) into ``baselines/`` and, identical, into ``gates/sample/baseline/`` (shipped with
the package). ``--check`` regenerates into a temporary folder and compares every byte.
A generator: nothing on the gates' runtime path imports this module.

Report metrics (each aggregate is the mean over samples of the per-sample vector; a
sample's value averages over its time steps):

* ``mse``, ``mae``: mean of ``(p - t)^2`` and ``|p - t|``; ``rmse``: ``sqrt(mse)`` per sample.
* ``nrmse``: ``sqrt(mean (p - t)^2 / (mean t^2 + 1e-8))`` (the evaluator's formula, per sample).
* ``rel_l2``: ``||p - t||_2 / ||t||_2`` over the sample's whole trajectory.
* ``conservation_gap``, ``bc_violation``, ``negativity_penalty``: universal-simulator's
  evaluator definitions, computed by gates.fields (the one implementation of them): per
  (sample, time) snapshot ``|sum p - sum t|``, ``(|e[x=0]| + |e[x=N-1]|) / 2`` and
  ``mean max(-p, 0)``.

Bytes that do not depend on the machine: every float written (report metrics, vectors,
the baseline's field metrics) is rounded to ``DIGITS`` significant digits, because the
last bits of a float sum depend on the BLAS kernel and SIMD width the CPU selects
(``np.vecdot``/``matmul`` go to BLAS; the previous bundle's float32 field metrics moved
by ~1e-9 between machines, which is why its check failed here). Field metrics are
computed from float64 copies of the float32 arrays (an exact widening), so that rounding
leaves the reproducible digits only. The npz files are written with explicit zip entries
(fixed time stamp, permissions, creating system; stored, not compressed), so neither the
Python nor the zlib version enters the bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gates.evidence import CONFIDENT_MARGIN, DEFAULT_CONFIDENCE, DEFAULT_RULE
from gates.fields import DEFINITIONS_VERSION, FieldLayout, compute_field_metrics
from gates.inputs import load_evaluation
from gates.policy import policy_from_mapping
from gates.sample import burgers
from gates.sample.burgers import N_SAMPLES, SAMPLE_DIR, SEED, SURROGATES, Surrogate
from gates.store import BaselineStore

FloatArray = npt.NDArray[np.float64]

SUITE = "burgers1d"
GENERATED_AT = "2025-01-01T00:00:00+00:00"
DIGITS = 10
EPS = 1e-8
REPO_BASELINES = SAMPLE_DIR.parents[1] / "baselines"
PACKAGE_BASELINES = SAMPLE_DIR / "baseline"

ERROR_METRICS = ("mse", "mae", "rmse", "nrmse", "rel_l2")
PHYSICS_METRICS = ("conservation_gap", "bc_violation", "negativity_penalty")
METRIC_NAMES = ERROR_METRICS + PHYSICS_METRICS

# Relations the bundled pair must keep so that the default gate run passes and the challenger
# is promotable: nrmse improves by 2-8 %, no error metric worsens by more than 10 %, and no
# physics metric worsens at all.
NRMSE_RATIO_RANGE = (0.92, 0.98)
ERROR_SLACK = 1.10

FILES = {
    "challenger": (
        "burgers1d_eval.json",
        "burgers1d_eval_samples.npz",
        "burgers1d_eval_arrays.npz",
    ),
    "champion": ("champion_eval.json", "champion_eval_samples.npz", "champion_arrays.npz"),
}

POLICY = """\
# Gate policy of the burgers1d suite: reviewed and versioned beside its baselines.
# Every key is optional; the values below are the contract's defaults, written out.

[regression]
tolerance = 0.10            # fail when a metric is more than 10 % worse than the champion
improvement = 0.05          # report "improved" when more than 5 % better
abs_tolerance = 1e-12       # changes smaller than this are noise, whatever their ratio
higher_is_better = []       # e.g. ["psnr", "pearson_r"]; error metrics are lower-is-better
rule = "{rule}"          # threshold | confident | significant (see README)
confidence = {confidence}           # two-sided level of the interval the rule reads
margin = {margin}               # confident: the interval's bound must pass margin x tolerance

[physics.ceilings]
conservation_gap = 5.0
bc_violation = 1.0
negativity_penalty = 0.5

[physics.spike_factors]     # at most this many times the champion's value
conservation_gap = 2.0
bc_violation = 1.5

[promotion]
primary_metric = "nrmse"
min_improvement_rel = 0.01  # the challenger must beat the champion by at least 1 %
min_improvement_abs = 0.0

[metrics]
optional = []               # metrics a report may lack without failing

[fields]                    # layout of --gates-arrays: (sample, time, x, channel)
sample_axis = 0
time_axis = 1
channel_axis = -1
initial_step = 0            # PDEBench's context frames left out of its metrics
"""


# -------------------------------------------------------------------------------- rounding


def rounded(value: float) -> float:
    """``value`` to DIGITS significant digits (the digits every machine agrees on)."""
    return float(f"{value:.{DIGITS}g}")


def rounded_vector(values: npt.ArrayLike) -> FloatArray:
    return np.array([rounded(float(v)) for v in np.asarray(values).ravel()], dtype=np.float64)


# --------------------------------------------------------------------------------- metrics


def physics_metrics(pred: npt.ArrayLike, target: npt.ArrayLike) -> dict[str, FloatArray]:
    """universal-simulator's three physics metrics per sample, from gates.fields."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    found = compute_field_metrics((p, t), kernel="numpy")
    return {name: found.samples[name] for name in PHYSICS_METRICS}


def report_metrics(
    pred: npt.ArrayLike, target: npt.ArrayLike
) -> tuple[dict[str, float], dict[str, FloatArray]]:
    """Evaluator metrics of ``pred`` against ``target``, both (sample, time, x, channel).

    Returns ``(aggregates, per_sample)``, rounded (see the module docstring); each
    aggregate is the rounded mean over samples of the unrounded per-sample vector.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 4:
        raise ValueError(f"pred {p.shape} and target {t.shape} must share a 4-D shape")
    diff = p - t
    axes = (1, 2, 3)
    mse = np.mean(diff * diff, axis=axes)
    per_sample: dict[str, FloatArray] = {
        "mse": mse,
        "mae": np.mean(np.abs(diff), axis=axes),
        "rmse": np.sqrt(mse),
        "nrmse": np.sqrt(mse / (np.mean(t * t, axis=axes) + EPS)),
        "rel_l2": np.sqrt(np.sum(diff * diff, axis=axes)) / np.sqrt(np.sum(t * t, axis=axes)),
        **physics_metrics(p, t),
    }
    aggregates = {name: rounded(float(np.mean(v))) for name, v in per_sample.items()}
    return aggregates, {name: rounded_vector(v) for name, v in per_sample.items()}


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
    _, nu = burgers.initial_conditions(seed, N_SAMPLES, burgers.NX_REF)
    target = burgers.make_dataset(seed, N_SAMPLES)
    target32 = target.astype(np.float32)
    result: dict[str, Evaluation] = {}
    for key, spec in SURROGATES.items():
        pred32 = burgers.surrogate_predictions(key, target, nu).astype(np.float32)
        aggregates, per_sample = report_metrics(pred32, target32)
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


# --------------------------------------------------------------------------------- writing


def write_npz(path: Path, arrays: Mapping[str, npt.ArrayLike]) -> None:
    """An ``np.load``-able .npz whose bytes depend only on the arrays (see the docstring)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(value), version=(1, 0),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, buf.getvalue())


def _solver_params(spec: Surrogate, seed: int) -> dict[str, Any]:
    """Parameters recorded in the report so a reader can tell how the sample was made."""
    return {
        "equation": "u_t + (u^2/2)_x = nu u_xx",
        "domain": [0.0, burgers.LENGTH],
        "boundary": "periodic",
        "reference_scheme": "finite volume, MUSCL-minmod, Godunov flux, central diffusion, SSP-RK3",
        "cfl": burgers.CFL,
        "nx_reference": burgers.NX_REF,
        "nx_eval": burgers.NX_EVAL,
        "nx_model": spec.nx,
        "decoder": "periodic linear interpolation",
        "t_final": burgers.T_FINAL,
        "n_times": burgers.N_TIMES,
        "nu_range": list(burgers.NU_RANGE),
        "n_modes": burgers.N_MODES,
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
            "suite": SUITE,
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
        vectors: dict[str, Any] = {name: ev.per_sample[name] for name in METRIC_NAMES}
        vectors["sample_id"] = np.arange(ev.pred.shape[0], dtype=np.int64)
        write_npz(out_dir / samples_name, vectors)
        write_npz(out_dir / arrays_name, {"pred": ev.pred, "target": ev.target})
        written += [report_path, out_dir / samples_name, out_dir / arrays_name]
    return written


def write_baseline(root: Path, sample_dir: Path, rule: str = DEFAULT_RULE) -> list[Path]:
    """Recreate ``root/burgers1d`` with the champion sample (and its field metrics) as v1."""
    suite_dir = root / SUITE
    if suite_dir.exists():
        shutil.rmtree(suite_dir)
    suite_dir.mkdir(parents=True)
    text = POLICY.format(rule=rule, confidence=DEFAULT_CONFIDENCE, margin=CONFIDENT_MARGIN)
    (suite_dir / "policy.toml").write_text(text, encoding="utf-8")
    report = sample_dir / "champion_eval.json"
    champion = load_evaluation(report)
    layout = FieldLayout.from_policy(policy_from_mapping(tomllib.loads(text), "policy").fields,
                                     str(suite_dir / "policy.toml"))
    with np.load(sample_dir / "champion_arrays.npz", allow_pickle=False) as z:
        pred, target = z["pred"].astype(np.float64), z["target"].astype(np.float64)
    found = compute_field_metrics((pred, target), layout, kernel="numpy")
    for name, value in found.values.items():
        champion.metrics[f"field/{name}"] = rounded(value)
        champion.samples[f"field/{name}"] = rounded_vector(found.samples[name])
        champion.aggregation[f"field/{name}"] = found.aggregation[name]
    provenance = {
        "run_id": champion.extra.get("model"),
        "wandb_run": None,
        "git_commit": None,
        "eval_report": f"gates/sample/{report.name}",
        "eval_sha256": champion.sha256,
        "eval_format": champion.format,
        "samples": f"gates/sample/{report.stem}_samples.npz",
        "arrays": "gates/sample/champion_arrays.npz",
        "timestamp": GENERATED_AT,
        "promoted_by": "python -m gates.sample.generate (bundled sample)",
        "promoted_from": None,
        "field_metrics_version": found.version,
        "field_shape": list(found.spatial_shape),
    }
    assert found.version == DEFINITIONS_VERSION
    BaselineStore(root).promote(SUITE, champion, expected=None, provenance=provenance)
    for leftover in (".lock", "runs.jsonl"):
        (suite_dir / leftover).unlink(missing_ok=True)
    return sorted(p for p in suite_dir.rglob("*") if p.is_file())


def write_bundle(sample_dir: Path, baselines: Path | None, package_copy: Path | None,
                 seed: int = SEED) -> list[Path]:
    """The sample, the baseline store, and the package's identical copy of the store."""
    written = generate(sample_dir, seed)
    if baselines is None and package_copy is None:
        return written
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "baselines"
        write_baseline(store, sample_dir)
        for dest in (d for d in (baselines, package_copy) if d is not None):
            if (dest / SUITE).exists():
                shutil.rmtree(dest / SUITE)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copytree(store / SUITE, dest / SUITE)
            written += sorted(p for p in (dest / SUITE).rglob("*") if p.is_file())
    return written


def _sha256(path: Path) -> str:
    """Hex digest of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: written by gate sessions, not by the generator: the store's lock and staging, the ledger
_SESSION_FILES = (".lock", ".tmp-*", ".*.tmp", "runs.jsonl")


def _tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not any(p.match(pattern) for pattern in _SESSION_FILES)}


def check(sample_dir: Path = SAMPLE_DIR, baselines: Path | None = REPO_BASELINES,
          package_copy: Path | None = PACKAGE_BASELINES) -> list[str]:
    """Regenerate into a temporary folder; list every file that differs from the bundle
    (the sample, and when given the baseline store and the package's copy of it)."""
    differences: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        write_bundle(fresh / "sample", fresh / "baselines", None)
        pairs = [(sample_dir / name, fresh / "sample" / name)
                 for names in FILES.values() for name in names]
        for dest in (d for d in (baselines, package_copy) if d is not None):
            want = _tree(fresh / "baselines" / SUITE)
            have = _tree(dest / SUITE) if (dest / SUITE).is_dir() else {}
            differences += [f"{dest / SUITE / extra}: not produced by the generator"
                            for extra in sorted(set(have) - set(want))]
            pairs += [(dest / SUITE / rel, path) for rel, path in want.items()]
        for bundled, regenerated in pairs:
            if not bundled.is_file():
                differences.append(f"{bundled}: missing")
            elif _sha256(bundled) != _sha256(regenerated):
                differences.append(f"{bundled}: differs from a fresh regeneration")
    return differences


def main(argv: list[str] | None = None) -> int:
    """CLI: write the bundle (default) or verify it byte for byte (``--check``)."""
    parser = argparse.ArgumentParser(
        prog="python -m gates.sample.generate",
        description="Generate (or --check) the bundled Burgers 1D sample and its baseline.",
    )
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR,
                        help="sample folder (default: %(default)s)")
    parser.add_argument("--baselines", type=Path, default=REPO_BASELINES,
                        help="the repository's baseline store ('none' to skip; "
                             "default: %(default)s)")
    parser.add_argument("--package-baselines", type=Path, default=PACKAGE_BASELINES,
                        help="the package's copy of the store ('none' to skip; "
                             "default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temporary folder and compare every byte")
    args = parser.parse_args(argv)
    baselines = None if str(args.baselines) == "none" else args.baselines
    package = None if str(args.package_baselines) == "none" else args.package_baselines
    if args.check:
        differences = check(args.out, baselines, package)
        for line in differences:
            print(line, file=sys.stderr)
        if differences:
            print(f"{len(differences)} file(s) differ; rerun `python -m gates.sample.generate`",
                  file=sys.stderr)
            return 1
        print(f"{args.out}: the bundled Burgers sample and baseline regenerate byte for byte")
        return 0
    for path in write_bundle(args.out, baselines, package):
        print(f"{path.stat().st_size:>9d}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
