"""On-demand benchmarks of whole gate sessions; run with

    python -m pytest tests/bench_gates.py -m slow -s

Each prints ratios against a reference measured in the same run, the two commands
alternating (A B A B ...) so that drift of a shared machine hits both alike. Nothing here
asserts a time: the figures are for people to read (targets in each line).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PACKAGE, hermetic_wandb_env

KINDS = ("mse", "mae", "rmse", "nrmse", "rel_l2")
POLICY = "[physics]\ndefault_ceilings = false\n"


def synthetic(folder: Path, n: int, *, samples: int = 0) -> tuple[Path, Path, int]:
    """A report with ``n`` horizon metrics (and per-sample vectors of ``samples`` entries),
    and a store whose champion is the same run 3 % worse, made by a real promotion.
    Returns the report, the store and the number of gates a session plans."""
    rng = np.random.default_rng(0)
    names = [f"{KINDS[i % 5]}@{i}" for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "baselines"
    (store / "synthetic").mkdir(parents=True, exist_ok=True)
    (store / "synthetic" / "policy.toml").write_text(POLICY)
    # drawn once: the eval is the champion 3 % better (with 5 % noise per sample), so no
    # gate fails and pytest's failure summary (its cost grows with failures x reports)
    # stays out of the figures
    base = rng.uniform(0.01, 1.0, n)
    base_vectors = {m: rng.lognormal(np.log(0.1), 0.5, samples) for m in names}
    reports = []
    for label, scale in (("champion", 1.0), ("eval", 0.97)):
        vectors = {m: v * scale * (rng.lognormal(0.0, 0.05, samples) if scale < 1 else 1.0)
                   for m, v in base_vectors.items()}
        metrics = {m: float(v.mean()) for m, v in vectors.items()} if samples else \
            {m: float(x * scale) for m, x in zip(names, base, strict=True)}
        metrics.setdefault("nrmse", 0.05 * scale)
        report = folder / label / f"{label}.json"
        report.parent.mkdir(exist_ok=True)
        report.write_text(json.dumps({"metrics": metrics, "extra": {"suite": "synthetic"}}))
        if samples:
            np.savez(report.with_name(f"{label}_samples.npz"), **vectors)  # type: ignore[arg-type]
        reports.append(report)
    first = gates_cmd(reports[0], store, "off") + ["--gates-promote", "--gates-suite",
                                                   "synthetic"]
    subprocess.run(first, check=True, capture_output=True, cwd=folder,
                   env=hermetic_wandb_env(folder / "wandb-home"))
    names_all = set(names) | {"nrmse"}
    return reports[1], store, 1 + len(names_all) + 1  # comparability, regression, promotion


def wall(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    return elapsed


def paired(a: list[str], b: list[str], env: dict[str, str], cwd: Path, rounds: int
           ) -> tuple[list[float], list[float]]:
    wall(a, env, cwd), wall(b, env, cwd)  # warm-up: caches, bytecode
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(wall(a, env, cwd))
        times_b.append(wall(b, env, cwd))
    return times_a, times_b


def gates_cmd(report: Path, store: Path, wandb: str) -> list[str]:
    return [sys.executable, "-m", "pytest", str(PACKAGE), "--gates-eval", str(report),
            "--gates-baselines", str(store), "--gates-wandb", wandb, "--gates-no-ledger",
            "-q", "-p", "no:cacheprovider"]


def bare_tests(folder: Path, count: int) -> list[str]:
    test = folder / f"test_bare_{count}.py"
    test.write_text(f"import pytest\n\n\n@pytest.mark.parametrize('i', range({count}))\n"
                    "def test_bare(i):\n    pass\n")
    return [sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider"]


def summary(a: list[float], b: list[float]) -> str:
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return (f"median {statistics.median(a):.2f} s vs {statistics.median(b):.2f} s, ratio "
            f"median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, "
            f"max {max(ratios):.2f})")


@pytest.mark.slow
@pytest.mark.parametrize("n", [100, 1000, 10_000])
def test_session_against_bare_pytest(tmp_path: Path, n: int) -> None:
    report, store, gates = synthetic(tmp_path, n)
    env = hermetic_wandb_env(tmp_path / "wandb-home")
    a, b = paired(gates_cmd(report, store, "off"), bare_tests(tmp_path, gates), env, tmp_path,
                  rounds=5 if n < 10_000 else 3)
    per_gate = (statistics.median(a) - statistics.median(b)) / gates * 1e3
    print(f"\n{gates} gates: pytest gates/ against bare pytest with as many trivial tests: "
          f"{summary(a, b)}; added {per_gate:.3f} ms per gate; target ratio <= 1.3")


@pytest.mark.slow
def test_per_sample_vectors_cost_per_gate(tmp_path: Path) -> None:
    with_vectors, store_v, gates = synthetic(tmp_path / "v", 1000, samples=64)
    without, store_p, _ = synthetic(tmp_path / "p", 1000)
    env = hermetic_wandb_env(tmp_path / "wandb-home")
    a, b = paired(gates_cmd(with_vectors, store_v, "off"), gates_cmd(without, store_p, "off"),
                  env, tmp_path, rounds=5)
    added = (statistics.median(a) - statistics.median(b)) / gates * 1e3
    print(f"\n1,000 metrics with 64-sample vectors against none: {summary(a, b)}; the paired "
          f"test adds {added:.3f} ms per gate; target <= 0.5 ms")


@pytest.mark.slow
def test_xdist_plans_once_with_arrays(tmp_path: Path) -> None:
    """-n 2 against serial at 1,000 gates with --gates-arrays on a 256 MiB input."""
    report, store, _ = synthetic(tmp_path, 1000)
    rng = np.random.default_rng(1)
    shape = (64, 16, 4096, 8)  # 32 Mi values: 128 MiB per float32 array, 256 MiB in all
    folder = tmp_path / "arrays"
    folder.mkdir()
    for name in ("target", "pred"):
        arr = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32,
                                        shape=shape)
        arr[:] = rng.standard_normal(shape, dtype=np.float32) + 1.5
        arr.flush()
        del arr
    env = hermetic_wandb_env(tmp_path / "wandb-home")
    serial = gates_cmd(report, store, "off") + ["--gates-arrays", str(folder)]
    a, b = paired(serial + ["-n", "2"], serial, env, tmp_path, rounds=3)
    print(f"\n-n 2 against serial, 1,000 gates + field metrics of 256 MiB: {summary(a, b)}; "
          "target ratio <= 1.0 (plan once)")


@pytest.mark.slow
def test_plugin_cost_in_a_session_without_gates(tmp_path: Path) -> None:
    """500 trivial tests with only this plugin loaded against an empty plugin (autoload
    off). Both load a plugin with ``-p``, whose own cost in pytest (a scan of every
    installed entry point for that name) is larger than ours: the reference pays it too. With
    valgrind installed, also the instructions each run executes (hash seed fixed): exact
    where the wall clock of a shared machine is not."""
    env = hermetic_wandb_env(tmp_path / "wandb-home")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    (tmp_path / "empty_plugin.py").write_text('"""The reference: a plugin of nothing."""\n')
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    bare = bare_tests(tmp_path, 500)
    ours, empty = [*bare, "-p", "gates.plugin"], [*bare, "-p", "empty_plugin"]
    a, b = paired(ours, empty, env, tmp_path, rounds=30)
    added = [x - y for x, y in zip(a, b, strict=True)]
    print(f"\n500 tests without gates, with the plugin against an empty plugin: "
          f"{summary(a, b)}; added median {1e3 * statistics.median(added):.1f} ms; "
          "target <= 20 ms")
    if shutil.which("valgrind"):
        counted = [instructions(cmd, env | {"PYTHONHASHSEED": "0"}, tmp_path)
                   for cmd in (ours, empty)]
        ratio = counted[0] / counted[1]
        print(f"instructions: {counted[0]:,} against {counted[1]:,}, ratio {ratio:.4f}: "
              f"{1e3 * (ratio - 1) * statistics.median(b):.1f} ms of the empty plugin's "
              f"median {statistics.median(b):.2f} s")


def instructions(cmd: list[str], env: dict[str, str], cwd: Path) -> int:
    """Instructions a command executes, counted by valgrind (about 40x slower than a run)."""
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           *cmd], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    refs = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    assert refs is not None, done.stderr[-2000:]
    return int(refs.group(1).replace(",", ""))
