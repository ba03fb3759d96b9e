"""``python -m gates calibrate``: A/A false-failure rates from the champion's own samples."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gates import evidence
from gates.calibrate import _judge_trials, calibrate, calibration_markdown, trial_sessions, wilson
from gates.model import Champion
from gates.plan import planned_outcomes
from gates.policy import Policy
from gates.store import BaselineStore

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gates", "calibrate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False)


def noisy_champion(n: int = 24, sigma: float = 0.5, metrics: int = 3,
                   seed: int = 0) -> Champion:
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(n)
    samples = {f"nrmse@{k}": np.exp(-2 + sigma * (0.7 * shared + 0.7 * rng.standard_normal(n)))
               for k in range(metrics)}
    samples["bc_violation"] = np.exp(-3 + sigma * rng.standard_normal(n))
    return Champion(suite="demo", version=1, samples=samples,
                    metrics={k: float(v.mean()) for k, v in samples.items()})


def test_cli_on_the_bundled_champion(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "baselines", tmp_path / "baselines")
    store_root = tmp_path / "baselines"
    done = cli("burgers1d", "--baselines", str(store_root), "--trials", "300")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("burgers1d v1: A/A calibration, 300 trials, resample")
    assert any(line.startswith("regression/nrmse ") for line in lines)
    session = next(line for line in lines if line.startswith("session (any gate fails)"))
    assert "95 % CI" in lines[1] and " to " in session
    stored = json.loads((store_root / "burgers1d" / "calibration.json").read_text())
    assert stored["schema"] == "gates-calibration/1" and stored["champion"] == 1
    assert stored["trials"] == 300 and stored["n_samples"] == 32
    gate = next(g for g in stored["gates"] if g["id"] == "physics/bc_violation/spike")
    # 32 heavy-tailed samples cross the 1.5 x spike limit by chance, but the session's
    # noise-aware spike does not fail them: the whole family keeps its 1 % promise
    assert gate["method"] == "paired" and gate["rate"] < 0.02
    assert stored["session"]["rate"] < 0.03 and stored["session"]["rate"] >= gate["rate"]
    # a max-aggregated field metric has no per-sample mean to resample
    assert "field/max_error" in stored["not_estimated"]
    md = calibration_markdown(BaselineStore(store_root), "burgers1d")
    assert md is not None and md.startswith("### calibration: burgers1d")


def test_a_quiet_suite_passes_its_reruns(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "baselines")
    rng = np.random.default_rng(1)
    samples = {"nrmse": 0.1 * (1 + 0.05 * rng.standard_normal(200)),
               "mae": 0.2 * (1 + 0.05 * rng.standard_normal(200))}
    store.promote("quiet", expected=None, provenance={}, samples=samples,
                  metrics={k: float(v.mean()) for k, v in samples.items()})
    done = cli("quiet", "--baselines", str(tmp_path / "baselines"), "--trials", "200",
               "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["session"]["failures"] == 0 and data["session"]["high"] < 0.02
    assert "warning" not in done.stderr
    assert {g["id"] for g in data["gates"]} == {"regression/mae", "regression/nrmse"}
    # estimated for v1; after a promotion gates.md says it is stale
    assert "re-run" not in (calibration_markdown(store, "quiet") or "")
    store.promote("quiet", expected=1, provenance={}, samples=samples,
                  metrics={k: float(v.mean()) for k, v in samples.items()})
    assert "the champion is now v2" in (calibration_markdown(store, "quiet") or "")


def test_no_champion_no_calibration(tmp_path: Path) -> None:
    (tmp_path / "baselines" / "empty").mkdir(parents=True)
    (tmp_path / "baselines" / "empty" / "policy.toml").write_text("")
    done = cli("empty", "--baselines", str(tmp_path / "baselines"))
    assert done.returncode == 1 and "no champion" in done.stderr
    assert calibration_markdown(BaselineStore(tmp_path / "baselines"), "empty") is None


@pytest.mark.parametrize(("method", "policy"), [
    ("resample", Policy(confidence=0.8)), ("split", Policy(rule="threshold"))])
def test_each_trial_is_the_plans_own_session(method: str, policy: Policy) -> None:
    """Same failures as running ``planned_outcomes`` on every trial, screens off."""
    champion, trials = noisy_champion(n=16, sigma=1.0, metrics=4, seed=2), 120
    result = calibrate(champion, policy, trials=trials, seed=3, method=method, workers=1)
    job, _, _ = trial_sessions(champion, policy, trials=trials, seed=3, method=method)
    every = _judge_trials(job, range(trials), bound=False)
    for gate in result.gates:
        assert gate.failures == sum(gate.id in ids for ids in every), gate
    assert result.session.failures == sum(bool(ids) for ids in every) > 0
    # and a trial is a plain session: the plan's own outcomes, champion v1 vs a rerun
    plan = job.plan(0, evidence.Resampling(seed=policy.seed))
    assert plan.champion is not None and plan.champion.sample_ids is not None
    assert set(plan.evaluation.metrics) == set(champion.metrics)
    kinds = {o.kind for o in planned_outcomes(plan)}
    assert {"regression", "physics", "promotion"} <= kinds


def test_severity_warn_never_fails_a_rerun() -> None:
    champion = noisy_champion(n=16, sigma=1.0, metrics=4, seed=2)
    loud = calibrate(champion, Policy(), trials=200, workers=1)
    quiet = calibrate(champion, Policy(severities={"regression": "warn", "physics": "warn"}),
                      trials=200, workers=1)
    assert loud.session.failures > 0 and quiet.session.failures == 0


def test_a_spike_is_judged_by_its_evidence() -> None:
    """The spike limit's point estimate is crossed often; the session's spike fails only
    when the per-sample evidence supports the jump (as ``plan._spike`` decides)."""
    champion = noisy_champion(n=32, sigma=1.5, metrics=1, seed=5)
    policy = Policy(spike_factors={"bc_violation": 1.2})
    result = calibrate(champion, policy, trials=300, workers=1)
    job, _, _ = trial_sessions(champion, policy, trials=300)
    spike = next(g for g in job.gates if g.id == "physics/bc_violation/spike")
    rate = next(g for g in result.gates if g.id == spike.id)
    assert rate.method == "paired" and spike.screen.mean() > 0.1
    assert rate.rate < 0.03


def test_parallel_workers_give_the_same_answer() -> None:
    champion = noisy_champion(n=16, sigma=1.0, metrics=6, seed=4)
    one = calibrate(champion, Policy(), trials=400, workers=1)
    two = calibrate(champion, Policy(), trials=400, workers=2)
    assert [g.failures for g in one.gates] == [g.failures for g in two.gates]
    assert one.session.failures == two.session.failures > 0


def test_repeats_are_left_out_one_at_a_time() -> None:
    champion = Champion(suite="demo", version=1, metrics={"nrmse": 0.1, "mae": 0.2},
                        repeats={"nrmse": [0.1, 0.102, 0.098, 0.101, 0.099]})
    result = calibrate(champion, Policy(), trials=100)
    (gate,) = result.gates
    assert gate.id == "regression/nrmse" and gate.method == "repeats-leave-one-out"
    assert gate.n == 5 and result.not_estimated == ["mae"]
    # each trial's session: the champion's other runs as its repeats, judged by the plan
    job, _, _ = trial_sessions(champion, Policy(), trials=100)
    plan = job.plan(0, evidence.Resampling())
    assert plan.champion is not None and len(plan.champion.repeats["nrmse"]) == 4
    (outcome,) = [o for o in planned_outcomes(plan) if o.kind == "regression"]
    assert outcome.evidence["method"] == "seed-t"  # the repeats test of gates.evidence
    wild = Champion(suite="demo", version=1, metrics={"nrmse": 0.1},
                    repeats={"nrmse": [0.1, 0.1001, 0.0999, 0.1, 0.2]})
    (gate,) = calibrate(wild, Policy(), trials=200).gates
    assert gate.failures > 0  # the outlier run, left out, is judged against tight runs


def test_split_method_and_wilson() -> None:
    result = calibrate(noisy_champion(), Policy(), trials=50, method="split")
    assert result.method == "split" and all(g.trials == 50 for g in result.gates)
    low, high = wilson(0, 1000)
    assert low == pytest.approx(0.0, abs=1e-12) and 0.003 < high < 0.004
    low, high = wilson(10, 1000)
    assert low < 0.01 < high
    with pytest.raises(ValueError):
        calibrate(noisy_champion(), Policy(), trials=10, method="bogus")


@pytest.mark.slow
def test_bench_calibrate_1000_trials_100_samples_30_metrics() -> None:
    """Figures for the closing note (slow; run with -m slow): target under 10 s on 2 cores."""
    import resource

    rng = np.random.default_rng(1)
    names = [f"nrmse@{k}" for k in range(27)] + ["conservation_gap", "bc_violation",
                                                 "negativity_penalty"]
    shared = rng.standard_normal(100)
    samples = {m: np.exp(-2 + 0.5 * (0.7 * shared + 0.71 * rng.standard_normal(100)))
               for m in names}
    champion = Champion(suite="s", version=1, samples=samples,
                        metrics={m: float(v.mean()) for m, v in samples.items()})

    def children() -> float:
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        return used.ru_utime + used.ru_stime

    started, cpu, kids = time.perf_counter(), time.process_time(), children()
    result = calibrate(champion, Policy(), trials=1000)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu + children() - kids
    print(f"\ncalibrate 1,000 trials x 100 samples x 30 metrics ({len(result.gates)} gates): "
          f"{wall:.2f} s wall, {cpu:.2f} s CPU (all processes); session rate "
          f"{100 * result.session.rate:.1f} %")
    started, cpu = time.perf_counter(), time.process_time()
    serial = calibrate(champion, Policy(), trials=1000, workers=1)
    print(f"  in one process: {time.perf_counter() - started:.2f} s wall, "
          f"{time.process_time() - cpu:.2f} s CPU (same answer: "
          f"{serial.session.failures == result.session.failures})")
    assert serial.session.failures == result.session.failures
