"""On-demand benchmark of the W&B sink's cost in whole gate sessions; run with

    python -m pytest tests/bench_wandb.py -m slow -s

``--gates-wandb offline`` against ``--gates-wandb off`` on the same synthetic report,
sessions alternating (off, offline, off, offline, ...) so that drift of a shared machine hits
both alike. It prints the added seconds and the ratio; nothing here asserts a time.
Target (issue "sinks as plugins"): W&B offline adds <= 1.0 s at 10,000 gates.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import pytest

from tests.bench_gates import synthetic, wall
from tests.conftest import PACKAGE, hermetic_wandb_env

#: a plugin timing the sink's hook, i.e. how long the session waits for W&B at its end
TIMING_PLUGIN = """
import functools, time
from gates.sinks.wandb import WandbSink

hook = WandbSink.pytest_gates_session_finished


@functools.wraps(hook)
def timed(self, result):
    began = time.perf_counter()
    try:
        return hook(self, result)
    finally:
        with open({path!r}, "a") as handle:
            handle.write(f"{{time.perf_counter() - began:.4f}}\\n")


WandbSink.pytest_gates_session_finished = timed
"""


def session(report: Path, store: Path, wandb: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", str(PACKAGE), "--gates-eval", str(report),
            "--gates-baselines", str(store), "--gates-wandb", wandb, "--gates-out", str(out),
            "--gates-no-ledger", "-q", "-p", "no:cacheprovider", "-p", "wandb_timing"]


@pytest.mark.slow
@pytest.mark.parametrize("n", [1000, 10_000])
def test_wandb_offline_cost(tmp_path: Path, n: int) -> None:
    report, store, _ = synthetic(tmp_path, n)
    env = hermetic_wandb_env(tmp_path / "wandb-home")
    del env["WANDB_DIR"]
    waits = tmp_path / "waits.txt"
    (tmp_path / "wandb_timing.py").write_text(TIMING_PLUGIN.format(path=str(waits)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH"))
                                        if p)
    rounds = int(os.environ.get("BENCH_ROUNDS", "5"))
    off = session(report, store, "off", tmp_path / "out-off")
    offline = session(report, store, "offline", tmp_path / "out-offline")
    began = time.perf_counter()
    wall(off, env, tmp_path), wall(offline, env, tmp_path)  # warm-up: caches, bytecode
    a, b = [], []
    for _ in range(rounds):
        b.append(wall(off, env, tmp_path))
        a.append(wall(offline, env, tmp_path))
    ended = time.perf_counter()
    wait = [float(x) for x in waits.read_text().split()][1:]  # the warm-up's first
    added = [x - y for x, y in zip(a, b, strict=True)]
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    print(f"\n{n} metrics, {rounds} pairs: offline median {statistics.median(a):.2f} s, off "
          f"median {statistics.median(b):.2f} s; W&B adds median {statistics.median(added):+.2f}"
          f" s (min {min(added):+.2f}, max {max(added):+.2f}), ratio median "
          f"{statistics.median(ratios):.3f}; the session waits for W&B at its end median "
          f"{statistics.median(wait):.2f} s (max {max(wait):.2f}); target <= 1.0 s at "
          f"10,000 ({ended - began:.0f} s of benchmark, load {os.getloadavg()[0]:.1f})")
