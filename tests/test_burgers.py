"""The bundled Burgers sample is trustworthy: right physics, right metrics, reproducible bytes."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pytest_regressions.ndarrays_regression import NDArraysRegressionFixture

from gates.fields import DEFINITIONS_VERSION, compute_field_metrics
from gates.sample import burgers, generate

FloatArray = npt.NDArray[np.float64]
TWO_PI = 2.0 * np.pi


@pytest.fixture(scope="module")
def evaluations() -> dict[str, generate.Evaluation]:
    """Both surrogates on the bundled seed, computed once in memory (about a second)."""
    return generate.evaluate()


def _cole_hopf_cell_averages(nx: int, nu: float, t: float, speed: float) -> FloatArray:
    """Exact cell averages of a periodic viscous Burgers solution (Cole-Hopf, Galilean shift).

    ``u = speed - 2 nu phi_x / phi`` with ``phi = 1 + 0.9 exp(-nu t) cos(x - speed t)`` solving the
    heat equation; the cell average of ``phi_x / phi`` is a difference of ``log phi`` at the edges.
    """
    edges = np.arange(nx + 1) * (TWO_PI / nx)
    log_phi = np.log(1.0 + 0.9 * np.exp(-nu * t) * np.cos(edges - speed * t))
    return np.asarray(speed - 2.0 * nu * np.diff(log_phi) / (TWO_PI / nx))


# ----------------------------------------------------------------------------------- the solver


def test_solver_conserves_mass_to_round_off() -> None:
    u0, nu = burgers.initial_conditions(seed=3, n_samples=8, nx=burgers.NX_REF)
    for nx, start in ((burgers.NX_REF, u0), (46, burgers.remap_periodic(u0, 46))):
        fields = burgers.solve_burgers(start, nu, burgers.T_FINAL, n_times=6)
        dx = TWO_PI / nx
        mass = fields.sum(axis=-1) * dx
        scale = np.abs(start).sum(axis=-1, keepdims=True) * dx
        assert np.max(np.abs(mass - mass[:, :1]) / scale) < 1e-12


def test_single_small_mode_decays_like_the_heat_equation() -> None:
    nx, nu, eps = 256, 0.05, 1e-6
    dx = TWO_PI / nx
    edges = np.arange(nx + 1) * dx
    centres = edges[:-1] + 0.5 * dx
    times = np.linspace(0.0, 1.0, 5)
    for k in (1, 2, 3):
        u0 = eps * (np.cos(k * edges[:-1]) - np.cos(k * edges[1:])) / (k * dx)  # avg of sin(kx)
        fields = burgers.solve_burgers(u0, nu, 1.0, n_times=len(times))
        amplitude = fields @ np.sin(k * centres)
        np.testing.assert_allclose(
            amplitude / amplitude[0], np.exp(-nu * k * k * times), rtol=1e-3, atol=0.0
        )


def test_solver_matches_cole_hopf_exact_solution_at_second_order() -> None:
    nu, t_final, speed = 0.05, 1.5, 0.7
    errors = []
    for nx in (128, 256):
        exact = _cole_hopf_cell_averages(nx, nu, t_final, speed)
        start = _cole_hopf_cell_averages(nx, nu, 0.0, speed)
        numeric = burgers.solve_burgers(start, nu, t_final, n_times=2)[-1]
        errors.append(np.sqrt(np.mean((numeric - exact) ** 2) / np.mean((exact - speed) ** 2)))
    assert errors[1] < 5e-3
    assert errors[0] / errors[1] > 3.0  # second order: ~4


def test_total_variation_and_bounds_never_grow() -> None:
    u0, nu = burgers.initial_conditions(seed=5, n_samples=8, nx=burgers.NX_REF)
    fields = burgers.solve_burgers(u0, nu, burgers.T_FINAL, n_times=31)
    tv = np.abs(fields - np.roll(fields, 1, axis=-1)).sum(axis=-1)
    assert np.all(np.diff(tv, axis=1) <= 1e-12 * tv[:, :1])
    assert np.all(fields.min(axis=-1) >= u0.min(axis=-1, keepdims=True) - 1e-12)
    assert np.all(fields.max(axis=-1) <= u0.max(axis=-1, keepdims=True) + 1e-12)


def test_grid_transfers_keep_what_they_promise() -> None:
    rng = np.random.default_rng(0)
    u = rng.uniform(0.0, 2.0, (3, 64))
    for nx_out in (46, 48, 128):
        np.testing.assert_allclose(
            burgers.remap_periodic(u, nx_out).sum(-1) / nx_out, u.sum(-1) / 64, rtol=1e-13
        )
    np.testing.assert_allclose(burgers.block_average(u, 16).sum(-1) * 4, u.sum(-1), rtol=1e-13)
    constant = np.full((2, 46), 1.25)
    np.testing.assert_allclose(burgers.interpolate_periodic(constant, 64), 1.25, rtol=1e-15)


# ---------------------------------------------------------------------------------- the metrics


def _independent_metrics(pred: FloatArray, target: FloatArray) -> dict[str, FloatArray]:
    """Straightforward per-sample loop, written apart from ``generate.report_metrics``; the
    physics metrics as universal-simulator's evaluator computes them per snapshot."""
    names = generate.METRIC_NAMES
    out: dict[str, list[float]] = {name: [] for name in names}
    for p, t in zip(pred.astype(np.float64), target.astype(np.float64), strict=True):
        d = (p - t).ravel()
        mse = float(np.dot(d, d) / d.size)
        out["mse"].append(mse)
        out["mae"].append(float(np.abs(d).sum() / d.size))
        out["rmse"].append(mse**0.5)
        out["nrmse"].append((mse / (float(np.dot(t.ravel(), t.ravel())) / d.size + 1e-8)) ** 0.5)
        out["rel_l2"].append(float(np.linalg.norm(d) / np.linalg.norm(t.ravel())))
        gaps, ends, negs = [], [], []
        for step in range(p.shape[0]):  # one snapshot: (x, channel)
            e = p[step] - t[step]
            gaps.append(abs(p[step].sum() - t[step].sum()))
            ends.append(0.5 * (np.abs(e[0]).mean() + np.abs(e[-1]).mean()))
            negs.append(float(np.maximum(-p[step], 0.0).mean()))
        out["conservation_gap"].append(float(np.mean(gaps)))
        out["bc_violation"].append(float(np.mean(ends)))
        out["negativity_penalty"].append(float(np.mean(negs)))
    return {name: np.array(values) for name, values in out.items()}


def _assert_metrics_agree(pred: FloatArray, target: FloatArray) -> None:
    aggregates, per_sample = generate.report_metrics(pred, target)
    expected = _independent_metrics(pred, target)
    assert list(aggregates) == list(generate.METRIC_NAMES)
    for name in generate.METRIC_NAMES:  # the bundle rounds to 10 significant digits
        np.testing.assert_allclose(per_sample[name], expected[name], rtol=1e-9, atol=1e-15)
        assert aggregates[name] == pytest.approx(
            float(np.mean(expected[name])), rel=1e-9, abs=1e-15
        )


def test_report_metrics_match_an_independent_computation_on_random_fields() -> None:
    rng = np.random.default_rng(42)
    target = rng.normal(1.0, 0.5, (5, 4, 16, 2))
    pred = target + rng.normal(0.0, 0.2, target.shape)  # some negative values too
    _assert_metrics_agree(pred, target)


def test_report_metrics_match_an_independent_computation_on_the_bundle() -> None:
    with np.load(burgers.SAMPLE_DIR / "burgers1d_eval_arrays.npz", allow_pickle=False) as arrays:
        pred, target = arrays["pred"], arrays["target"]
    assert pred.dtype == target.dtype == np.float32
    assert pred.shape == (burgers.N_SAMPLES, burgers.N_TIMES, burgers.NX_EVAL, 1)
    _assert_metrics_agree(pred.astype(np.float64), target.astype(np.float64))


def test_physics_metrics_are_the_field_metrics() -> None:
    """One definition per name: the report's physics metrics are gates.fields' values."""
    for _, _, arrays_name in generate.FILES.values():
        with np.load(burgers.SAMPLE_DIR / arrays_name, allow_pickle=False) as arrays:
            found = compute_field_metrics((arrays["pred"].astype(np.float64),
                                           arrays["target"].astype(np.float64)))
            aggregates, _ = generate.report_metrics(arrays["pred"], arrays["target"])
        for name in generate.PHYSICS_METRICS:
            assert aggregates[name] == pytest.approx(found.values[name], rel=1e-9, abs=1e-15)


def test_bundled_reports_agree_with_their_arrays_and_sample_vectors() -> None:
    for key, (report_name, samples_name, arrays_name) in generate.FILES.items():
        report = json.loads((burgers.SAMPLE_DIR / report_name).read_text(encoding="utf-8"))
        assert report["extra"]["samples"] == burgers.N_SAMPLES
        assert report["extra"]["suite"] == "burgers1d"
        assert report["extra"]["model"] == burgers.SURROGATES[key].label
        assert report["extra"]["model"].startswith(key)
        with np.load(burgers.SAMPLE_DIR / arrays_name, allow_pickle=False) as arrays:
            aggregates, per_sample = generate.report_metrics(arrays["pred"], arrays["target"])
        with np.load(burgers.SAMPLE_DIR / samples_name, allow_pickle=False) as samples:
            assert sorted(samples.files) == sorted([*generate.METRIC_NAMES, "sample_id"])
            np.testing.assert_array_equal(samples["sample_id"], np.arange(burgers.N_SAMPLES))
            assert samples["sample_id"].dtype == np.int64
            for name in generate.METRIC_NAMES:
                assert samples[name].dtype == np.float64
                np.testing.assert_array_equal(samples[name], per_sample[name])
                assert report["metrics"][name] == aggregates[name]


# ------------------------------------------------------------------------------------ the bundle


def test_bundle_regenerates_byte_for_byte() -> None:
    """Sample, baseline store and the package's copy, in a fresh interpreter."""
    root = Path(generate.__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "gates.sample.generate", "--check"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_reports_a_tampered_file(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    report = tmp_path / "burgers1d_eval.json"
    report.write_text(report.read_text(encoding="utf-8").replace("0.0", "0.1", 1), encoding="utf-8")
    argv = ["--out", str(tmp_path), "--baselines", "none", "--package-baselines", "none"]
    assert generate.main([*argv, "--check"]) == 1


def _files(root: Path) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in generate._tree(root).items()}


def test_package_ships_an_identical_copy_of_the_bundled_baseline() -> None:
    repo = generate.REPO_BASELINES / generate.SUITE
    package = generate.PACKAGE_BASELINES / generate.SUITE
    assert _files(package) == _files(repo)
    assert "versions/v0001/version.json" in _files(package)


def test_bundled_baseline_records_its_field_metric_definitions() -> None:
    path = generate.PACKAGE_BASELINES / generate.SUITE / "versions" / "v0001" / "version.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["provenance"]["field_metrics_version"] == DEFINITIONS_VERSION
    assert record["provenance"]["field_shape"] == [burgers.NX_EVAL]
    with np.load(burgers.SAMPLE_DIR / "champion_arrays.npz", allow_pickle=False) as arrays:
        found = compute_field_metrics((arrays["pred"], arrays["target"]))  # float32, as run
    for name, value in found.values.items():
        assert record["metrics"][f"field/{name}"] == pytest.approx(value, rel=1e-5, abs=1e-12)
        assert record.get("aggregation", {}).get(f"field/{name}", "mean") == \
            found.aggregation[name]


def test_nothing_at_runtime_imports_the_generator() -> None:
    gates_dir = Path(generate.__file__).resolve().parents[1]
    offenders = []
    for path in gates_dir.rglob("*.py"):
        if path.parent == gates_dir / "sample":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith(("gates.sample.burgers", "gates.sample.generate")) or
                   (isinstance(node, ast.ImportFrom) and node.module == "gates.sample")
                   for n in names):
                offenders.append(str(path))
    assert not offenders


def test_challenger_sample_vectors_golden(
    evaluations: dict[str, generate.Evaluation], ndarrays_regression: NDArraysRegressionFixture
) -> None:
    challenger = evaluations["challenger"]
    vectors: dict[str, npt.NDArray[Any]] = {
        name: challenger.per_sample[name] for name in generate.METRIC_NAMES
    }
    vectors["sample_id"] = np.arange(challenger.pred.shape[0], dtype=np.int64)
    ndarrays_regression.check(
        vectors, basename="burgers1d_samples", default_tolerance={"atol": 1e-12, "rtol": 1e-7}
    )


def test_challenger_is_slightly_better_and_promotable(
    evaluations: dict[str, generate.Evaluation],
) -> None:
    champion = evaluations["champion"].metrics
    challenger = evaluations["challenger"].metrics
    assert generate.relation_violations(champion, challenger) == []
    assert 0.92 <= challenger["nrmse"] / champion["nrmse"] <= 0.98
    for name in generate.ERROR_METRICS:
        assert challenger[name] <= 1.10 * champion[name]
    for name in generate.PHYSICS_METRICS:
        assert challenger[name] <= champion[name]
    assert 0.0 < challenger["bc_violation"] < 0.05
    assert 0.0 < challenger["conservation_gap"] < 0.01


def test_bundled_reports_keep_the_relations() -> None:
    metrics = {
        key: json.loads((burgers.SAMPLE_DIR / files[0]).read_text(encoding="utf-8"))["metrics"]
        for key, files in generate.FILES.items()
    }
    assert generate.relation_violations(metrics["champion"], metrics["challenger"]) == []


def test_relation_violations_notice_a_worse_challenger() -> None:
    champion = dict.fromkeys(generate.METRIC_NAMES, 1.0)
    worse = dict(champion, nrmse=1.0, conservation_gap=1.5)
    problems = generate.relation_violations(champion, worse)
    assert any("nrmse" in p for p in problems)
    assert any("conservation_gap" in p for p in problems)


def test_sample_folder_stays_small() -> None:
    total = sum(p.stat().st_size for p in burgers.SAMPLE_DIR.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024
