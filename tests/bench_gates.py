"""On-demand benchmarks of whole gate sessions; run with

    python -m pytest tests/bench_gates.py -m slow -s

Each prints ratios against a reference measured in the same run, commands alternating
(A B A B ...) so that drift of a shared machine hits both alike. Nothing here asserts a
time: the figures are for people to read.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gates.model import Evaluation
from gates.store import BaselineStore
from tests.conftest import PACKAGE, hermetic_wandb_env

KINDS = ("mse", "mae", "rmse", "nrmse", "rel_l2")


def synthetic(folder: Path, n: int) -> tuple[Path, Path]:
    """A report with ``n`` horizon metrics, and a store whose champion has the same."""
    rng = np.random.default_rng(0)
    names = [f"{KINDS[i % 5]}@{i}" for i in range(n)]
    base = dict(zip(names, rng.uniform(0.01, 1.0, n).tolist(), strict=True))
    base.update(nrmse=0.05, conservation_gap=0.1, bc_violation=0.01, negativity_penalty=0.0)
    current = {k: v * 0.97 for k, v in base.items()}
    report = folder / "eval.json"
    report.write_text(json.dumps({"metrics": current, "extra": {"suite": "synthetic"}}))
    store = folder / "baselines"
    BaselineStore(store).promote("synthetic", Evaluation(None, base), expected=None,
                                 provenance={})
    return report, store


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
    return [sys.executable, "-m", "pytest", str(PACKAGE), "--eval", str(report),
            "--baselines", str(store), "--wandb", wandb, "-q", "-p", "no:cacheprovider"]


@pytest.mark.slow
def test_session_at_1000_metrics_against_bare_pytest(tmp_path: Path) -> None:
    report, store = synthetic(tmp_path, 1000)
    gates = 1001 + 3 + 2 + 1  # regression (1,000 horizons and nrmse), physics, promotion
    (tmp_path / "test_bare.py").write_text(
        f"import pytest\n\n\n@pytest.mark.parametrize('i', range({gates}))\n"
        "def test_bare(i):\n    pass\n")
    env = hermetic_wandb_env(tmp_path / "wandb-home")
    bare = [sys.executable, "-m", "pytest", str(tmp_path / "test_bare.py"), "-q",
            "-p", "no:cacheprovider"]
    a, b = paired(gates_cmd(report, store, "off"), bare, env, tmp_path, rounds=5)
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    print(f"\n{gates} gates: pytest gates/ median {statistics.median(a):.2f} s, bare pytest "
          f"with {gates} trivial tests median {statistics.median(b):.2f} s; ratio median "
          f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
          "target <= 1.5")


@pytest.mark.slow
@pytest.mark.parametrize("n", [100, 10_000])
def test_wandb_offline_cost(tmp_path: Path, n: int) -> None:
    report, store = synthetic(tmp_path, n)
    env = hermetic_wandb_env(tmp_path / "wandb-home")
    del env["WANDB_DIR"]
    rounds = 5 if n <= 1000 else 3
    a, b = paired(gates_cmd(report, store, "offline"), gates_cmd(report, store, "off"), env,
                  tmp_path, rounds=rounds)
    added = [x - y for x, y in zip(a, b, strict=True)]
    print(f"\n{n} metrics: --wandb offline median {statistics.median(a):.2f} s, --wandb off "
          f"median {statistics.median(b):.2f} s; W&B adds median {statistics.median(added):.2f}"
          f" s (min {min(added):.2f}, max {max(added):.2f}); target <= 1.5 s at 10,000")


@pytest.mark.slow
def test_dashboards_cost_with_every_sidecar(tmp_path: Path) -> None:
    """A gate session with realistic sidecars against the same session without them."""
    import shutil

    from tests.conftest import BASELINES, SAMPLE
    from tests.test_dashboards import (
        CONFIG_YAML,
        write_leaderboard,
        write_training_log,
        write_ttc,
    )

    sessions = {}
    for name in ("with", "without"):
        folder = tmp_path / name
        folder.mkdir()
        for item in ("burgers1d_eval.json", "burgers1d_eval_samples.npz"):
            shutil.copy(SAMPLE / item, folder / item)
        cmd = gates_cmd(folder / "burgers1d_eval.json", BASELINES, "off")
        cmd += ["--gates-out", str(folder / "out")]
        if name == "with":
            write_ttc(folder / "burgers1d_eval_ttc_step_logs.json")
            (folder / "burgers1d_eval.config.yaml").write_text(CONFIG_YAML)
            write_training_log(folder / "train.jsonl")
            write_leaderboard(folder / "leaderboard.csv")
            cmd += ["--training-log", str(folder / "train.jsonl"), "--leaderboard",
                    str(folder / "leaderboard.csv")]
        sessions[name] = cmd
    env = hermetic_wandb_env(tmp_path / "wandb-home")
    a, b = paired(sessions["with"], sessions["without"], env, tmp_path, rounds=5)
    added = [x - y for x, y in zip(a, b, strict=True)]
    print(f"\ndashboards (TTC 50 steps x 8, training log 4,500 lines, leaderboard 200 rows, "
          f"config): session median {statistics.median(a):.2f} s with, "
          f"{statistics.median(b):.2f} s without; added median {statistics.median(added):.2f} s"
          f" (min {min(added):.2f}, max {max(added):.2f}); target <= 2 s")
