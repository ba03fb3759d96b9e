"""A/A calibration: how often would the gates fail a pure rerun of the champion?

The verdict-quality benchmark answers this on simulated data; here it is answered on the
suite's own champion. Each trial draws two evaluation sets of the champion's own size
from its per-sample vectors (``resample``: with replacement, independently; ``split``: a
random half each), treats one as the champion and the other as a challenger of exactly
the same quality, and runs the real gates on them: the regression rule of
``gates.logic.regression`` with the noise-aware evidence of ``gates.evidence`` under the
suite's policy (rule, confidence, margin, seed, tolerances, severities), the physics
ceilings and spikes of ``gates.logic``. A trial fails the session when any of those gates
fails. Every metric uses the same drawn samples in a trial, so correlated metrics fail
together as they would in a real session.

The two sides are independent draws from the champion's samples: a challenger of exactly
the champion's quality, evaluated on another set of the same size. The paired test keeps
its per-gate promise there (a pure rerun fails one gate at most ``1 - confidence`` of the
time); what this measures is everything around it on the suite's real data: the session
as a whole (tens of gates at once), physics ceilings and spikes (no noise model), metrics
judged by the fixed threshold (no vectors, ``max`` aggregation, unknown direction).
Metrics with only repeated runs (``repeats``) are calibrated by leaving one run out as
the challenger; metrics with neither are reported as not estimated. Rates come with a
95 % Wilson interval.

Each regression gate is judged as the plan judges it today: one
``evidence.paired_evidence`` call per gate. Should the plan judge a session's gates as
one family (``evidence.regression_evidence``, adjusted over the metrics), these per-gate
rates stay exact and the session rate becomes an upper bound.

Cost: the evidence only runs for trials in which the estimate is past the tolerance
(``logic.regression`` with ``regressed=True`` tells which: outside them no evidence can
fail the gate), on every core when there are many.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from gates import evidence, logic
from gates.errors import GateInputError
from gates.model import Champion, Outcome
from gates.policy import Policy
from gates.store import BaselineStore, StoreReadOnly, utc_now

CALIBRATION = "calibration.json"
SCHEMA = "gates-calibration/1"
#: a session-level false-failure rate above this is warned about
WARN_RATE = 0.01
METHODS = ("resample", "split")
_Z95 = 1.959963984540054


@dataclass
class GateRate:
    id: str
    kind: str
    metric: str
    method: str
    failures: int
    trials: int
    rate: float
    low: float
    high: float
    n: int | None = None


@dataclass
class Calibration:
    suite: str
    champion: int
    trials: int
    method: str
    seed: int
    n_samples: int | None
    session: GateRate
    gates: list[GateRate] = field(default_factory=list)
    not_estimated: list[str] = field(default_factory=list)
    time: str = ""
    policy: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "suite": self.suite, "champion": self.champion,
                "time": self.time, "trials": self.trials, "method": self.method,
                "seed": self.seed, "n_samples": self.n_samples, "policy": self.policy,
                "session": asdict(self.session), "gates": [asdict(g) for g in self.gates],
                "not_estimated": self.not_estimated}


def wilson(failures: int, trials: int) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial rate."""
    if trials <= 0:
        return 0.0, 1.0
    p = failures / trials
    z2 = _Z95 * _Z95
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = _Z95 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (
        1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(gid: str, kind: str, metric: str, method: str, fails: npt.NDArray[np.bool_],
          n: int | None) -> GateRate:
    failures, trials = int(fails.sum()), int(fails.size)
    low, high = wilson(failures, trials)
    return GateRate(gid, kind, metric, method, failures, trials,
                    failures / trials if trials else 0.0, low, high, n)


# ---------------------------------------------------------------------------------------
# the trials


def calibrate(champion: Champion, policy: Policy, *, trials: int = 1000, seed: int = 0,
              method: str = "resample", workers: int | None = None) -> Calibration:
    """Run ``trials`` A/A trials of every built-in gate on the champion's own data.

    ``workers``: processes for the evidence (default: every core; 1 = this process).
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    rng = np.random.default_rng(seed)
    vectors = {m: np.asarray(v, dtype=np.float64) for m, v in champion.samples.items()
               if m in champion.metrics and np.asarray(v).ndim == 1 and np.asarray(v).size >= 2
               and np.all(np.isfinite(v))}
    sizes = {v.size for v in vectors.values()}
    if len(sizes) > 1:
        raise GateInputError(None, f"the champion's per-sample vectors have different "
                                   f"lengths {sorted(sizes)}")
    n = sizes.pop() if sizes else None
    idx_a = idx_b = None
    if n is not None:
        idx_a, idx_b = _draw(rng, n, trials, method)
    aggregation = getattr(champion, "aggregation", {}) or {}
    gates: list[GateRate] = []
    fails: list[npt.NDArray[np.bool_]] = []
    skipped: list[str] = []
    jobs: list[tuple[Job, npt.NDArray[np.bool_], int]] = []
    metrics = sorted(m for m in champion.metrics
                     if m not in policy.ignore and not m.startswith("_"))
    for metric in metrics:
        vector = vectors.get(metric)
        repeats = champion.repeats.get(metric, [])
        if vector is not None and idx_a is not None and idx_b is not None:
            how = aggregation.get(metric, "mean")
            base = _aggregate(vector[idx_a], how)
            cur = _aggregate(vector[idx_b], how)
            failed, label = _regression_trials(metric, vector, idx_a, idx_b, base, cur, how,
                                               policy, jobs)
            gates.append(_rate(logic.gate_id("regression", metric), "regression", metric,
                               label, failed, n))
            fails.append(failed)
            for outcome_fn, check in _physics(metric, policy):
                failed = np.array([not _passed(outcome_fn(float(c), float(b)), policy)
                                   for b, c in zip(base, cur, strict=True)], dtype=bool)
                gates.append(_rate(logic.gate_id("physics", metric, check), "physics", metric,
                                   "aggregate", failed, n))
                fails.append(failed)
        elif len(repeats) >= 3:
            failed = _repeats_trials(metric, np.asarray(repeats, dtype=np.float64), policy,
                                     trials, rng)
            gates.append(_rate(logic.gate_id("regression", metric), "regression", metric,
                               "repeats-leave-one-out", failed, len(repeats)))
            fails.append(failed)
        else:
            skipped.append(metric)
    _run_jobs(policy, jobs, workers)
    for gate, failed in zip(gates, fails, strict=True):  # now that every trial is decided
        gate.failures = int(failed.sum())
        gate.rate = gate.failures / gate.trials if gate.trials else 0.0
        gate.low, gate.high = wilson(gate.failures, gate.trials)
    any_fail = np.logical_or.reduce(fails) if fails else np.zeros(trials, dtype=bool)
    session = _rate("session", "session", "", method, any_fail, n)
    return Calibration(
        suite=champion.suite, champion=champion.version, trials=trials, method=method,
        seed=seed, n_samples=n, session=session, gates=gates, not_estimated=skipped,
        time=utc_now(),
        policy={"rule": policy.rule, "confidence": policy.confidence,
                "margin": policy.margin, "tolerance": policy.tolerance,
                "path": policy.path})


def _draw(rng: np.random.Generator, n: int, trials: int,
          method: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    if method == "resample":
        return (rng.integers(0, n, size=(trials, n)), rng.integers(0, n, size=(trials, n)))
    half = n // 2
    perms = np.argsort(rng.random((trials, n)), axis=1)
    return perms[:, :half], perms[:, half:2 * half]


def _aggregate(values: npt.NDArray[np.float64], how: str) -> npt.NDArray[np.float64]:
    if how == "rms":
        return np.asarray(np.sqrt(np.mean(values, axis=1)))
    if how == "max":
        return np.asarray(np.max(values, axis=1))
    return np.asarray(np.mean(values, axis=1))


def _passed(outcome: Outcome, policy: Policy) -> bool:
    severity = getattr(logic, "apply_severity", None)
    if severity is not None:
        outcome = severity(outcome, policy)
    return bool(outcome.passed)


#: above this many bootstrap comparisons the work is shared among the machine's cores
PARALLEL_JOBS = 400

Job = tuple[str, npt.NDArray[np.float64], npt.NDArray[np.float64], float, float, str]


def _regression_trials(metric: str, vector: npt.NDArray[np.float64],
                       idx_a: npt.NDArray[np.intp], idx_b: npt.NDArray[np.intp],
                       base: npt.NDArray[np.float64], cur: npt.NDArray[np.float64], how: str,
                       policy: Policy, jobs: list[tuple[Job, npt.NDArray[np.bool_], int]]
                       ) -> tuple[npt.NDArray[np.bool_], str]:
    """Failures of the regression gate in each trial, and how it is decided.

    Trials that need the evidence's bootstrap are queued in ``jobs`` (decided later by
    :func:`_run_jobs`, which writes into the returned array).
    """
    direction = policy.direction(metric)
    tol = policy.tolerance_for(metric)
    paired = how in ("mean", "rms") and direction is not None
    label = "paired" if paired else "threshold"
    failed = np.zeros(base.size, dtype=bool)
    # loose pre-screen (half the tolerance): far inside it no rule can fail the gate
    moved = np.abs(cur - base) > 0.5 * tol * np.abs(base)
    if direction == "lower":
        moved &= cur > base
    elif direction == "higher":
        moved &= cur < base
    for t in np.flatnonzero(moved):
        b, c = float(base[t]), float(cur[t])
        if not paired:
            failed[t] = not _passed(logic.regression(metric, c, b, policy), policy)
        # the worst any evidence can do: if even that passes, the bootstrap is not needed
        elif not _passed(logic.regression(metric, c, b, policy, regressed=True), policy):
            jobs.append(((metric, vector[idx_a[t]], vector[idx_b[t]], b, c, how), failed,
                         int(t)))
    return failed, label


def _judge(policy: Policy, jobs: Sequence[Job]) -> list[bool]:
    """The real regression gate on each (metric, champion draw, challenger draw): failed?

    As the plan judges one gate: ``evidence.paired_evidence`` with the policy's rule,
    confidence, margin and seed (one shared sign-flip design: it depends on the seed and
    the sample count only, so the answers are the same as with a fresh one), then
    ``logic.regression`` and the policy's severity.
    """
    rule = cast(evidence.Rule, policy.rule)
    shared: dict[str, Any] = {}
    making = getattr(evidence, "Resampling", None)
    if making is not None:
        shared["resampling"] = making(policy.seed)
    verdicts = []
    for metric, a, b_vec, b, c, how in jobs:
        direction = policy.direction(metric)
        options: dict[str, Any] = dict(shared)
        if how != "mean":
            options["aggregation"] = how
        try:
            found = evidence.paired_evidence(
                a, b_vec, higher_is_better=direction == "higher",
                threshold=policy.tolerance_for(metric), rule=rule,
                confidence=policy.confidence, seed=policy.seed, margin=policy.margin,
                **options)
        except ValueError as exc:  # as the gate does: the fixed rule decides
            outcome = logic.regression(metric, c, b, policy,
                                       evidence={"note": f"paired test not possible: {exc}"})
        else:
            regressed = found.regressed if found.method != "threshold-only" else None
            outcome = logic.regression(metric, c, b, policy, evidence=dict(found.__dict__),
                                       regressed=regressed)
        verdicts.append(not _passed(outcome, policy))
    return verdicts


def _run_jobs(policy: Policy, jobs: list[tuple[Job, npt.NDArray[np.bool_], int]],
              workers: int | None = None) -> None:
    """Decide the queued trials (on every core when there are many) into their arrays."""
    if not jobs:
        return
    work = [job for job, _, _ in jobs]
    cores = workers if workers is not None else (os.cpu_count() or 1)
    if cores > 1 and len(work) >= PARALLEL_JOBS and _can_fork():
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunks = [work[i::cores] for i in range(cores)]
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(cores, mp_context=context) as pool:
            parts = list(pool.map(_judge, [policy] * cores, chunks))
        verdicts = [False] * len(work)
        for i, part in enumerate(parts):
            verdicts[i::cores] = part
    else:
        verdicts = _judge(policy, work)
    for (_, target, t), verdict in zip(jobs, verdicts, strict=True):
        target[t] = verdict


def _can_fork() -> bool:
    import threading

    return hasattr(os, "fork") and threading.active_count() == 1


def _physics(metric: str, policy: Policy) -> list[tuple[Any, str]]:
    checks: list[tuple[Any, str]] = []
    if metric in policy.ceilings:
        limit = float(policy.ceilings[metric])
        checks.append((lambda c, b, limit=limit: logic.ceiling(metric, c, limit), "ceiling"))
    if metric in policy.spike_factors:
        factor = float(policy.spike_factors[metric])
        checks.append((lambda c, b, factor=factor: logic.spike(metric, c, b, factor, policy),
                       "spike"))
    return checks


def _repeats_trials(metric: str, runs: npt.NDArray[np.float64], policy: Policy, trials: int,
                    rng: np.random.Generator) -> npt.NDArray[np.bool_]:
    """Leave one run out as the challenger; the others are the champion's repeats."""
    direction = policy.direction(metric)
    rule = cast(evidence.Rule, policy.rule)
    verdicts: dict[int, bool] = {}
    for j in range(runs.size):
        others = np.delete(runs, j)
        b, c = float(others.mean()), float(runs[j])
        if direction is None:
            outcome = logic.regression(metric, c, b, policy)
        else:
            found = evidence.repeats_evidence(
                others, c, higher_is_better=direction == "higher",
                threshold=policy.tolerance_for(metric), rule=rule,
                confidence=policy.confidence, margin=policy.margin)
            outcome = logic.regression(metric, c, b, policy, evidence=asdict(found),
                                       regressed=found.regressed)
        verdicts[j] = not _passed(outcome, policy)
    picks = rng.integers(0, runs.size, size=trials)
    return np.array([verdicts[int(j)] for j in picks], dtype=bool)


# ---------------------------------------------------------------------------------------
# storing and showing


def save(store: BaselineStore, suite: str, result: Calibration) -> Path:
    """Write ``calibration.json`` atomically under the suite's lock."""
    data = (json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n").encode()
    with store.locked(suite) as folder:
        target = Path(folder) / CALIBRATION
        tmp = Path(folder) / f".{CALIBRATION}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreReadOnly(target, f"calibration not stored ({exc})") from None
    return target


def load(store: BaselineStore, suite: str) -> dict[str, Any] | None:
    path = store.suite_dir(suite) / CALIBRATION
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def calibration_markdown(store: BaselineStore, suite: str) -> str | None:
    """A ``calibration`` section for gates.md from the stored estimate (None: none stored)."""
    data = load(store, suite)
    if data is None:
        return None
    session = data.get("session") or {}
    try:
        current = store.champion_version(suite)
    except GateInputError:
        current = None
    lines = [f"### calibration: {suite}", ""]
    rate = float(session.get("rate", 0.0))
    lines.append(
        f"A pure rerun of champion v{data.get('champion')} fails this suite's gates "
        f"{_pct(rate)} of the time (95 % CI {_pct(session.get('low', 0.0))} to "
        f"{_pct(session.get('high', 1.0))}; {data.get('trials')} A/A trials, "
        f"{data.get('method')}, {data.get('time')}).")
    if rate > WARN_RATE:
        lines.append("")
        lines.append(f"> **warning**: above {_pct(WARN_RATE)}: a failure here may be chance; "
                     "more samples or a looser policy would make the gates trustworthy.")
    if current is not None and current != data.get("champion"):
        lines.append("")
        lines.append(f"_Estimated for v{data.get('champion')}; the champion is now "
                     f"v{current}: re-run `python -m gates calibrate {suite}`._")
    noisy = sorted((g for g in data.get("gates", []) if g.get("failures")),
                   key=lambda g: -float(g.get("rate", 0.0)))[:10]
    if noisy:
        lines += ["", "| gate | false failures | 95 % CI |", "| --- | ---: | --- |"]
        lines += [f"| {g['id']} | {_pct(g['rate'])} | {_pct(g['low'])} to {_pct(g['high'])} |"
                  for g in noisy]
    return "\n".join(lines) + "\n"


def render(result: Calibration) -> list[str]:
    n = f"{result.n_samples} samples" if result.n_samples else "no per-sample vectors"
    lines = [f"{result.suite} v{result.champion}: A/A calibration, {result.trials} trials, "
             f"{result.method} of the champion's {n}; rule {result.policy.get('rule')}"]
    width = max([len(g.id) for g in result.gates] + [len("session (any gate fails)")])
    lines.append(f"{'gate':<{width}}  {'method':<22}  {'rate':>7}  95 % CI")
    for g in result.gates:
        lines.append(f"{g.id:<{width}}  {g.method:<22}  {_pct(g.rate):>7}  "
                     f"{_pct(g.low)} to {_pct(g.high)}")
    s = result.session
    lines.append(f"{'session (any gate fails)':<{width}}  {'':<22}  {_pct(s.rate):>7}  "
                 f"{_pct(s.low)} to {_pct(s.high)}")
    if result.not_estimated:
        lines.append(f"not estimated (no per-sample vectors or >= 3 repeats): "
                     f"{', '.join(result.not_estimated)}")
    return lines


def run_calibrate(store: BaselineStore, suite: str, *, trials: int = 1000, seed: int = 0,
                  method: str = "resample", as_json: bool = False,
                  keep: bool = True) -> int:
    """``python -m gates calibrate``: print the rates, warn above 1 %, store the estimate."""
    champion = store.champion(suite)
    if champion is None:
        raise GateInputError(store.suite_dir(suite), "suite has no champion to calibrate")
    result = calibrate(champion, store.policy(suite), trials=trials, seed=seed,
                       method=method)
    if as_json:
        print(json.dumps(result.to_json(), allow_nan=False))
    else:
        print("\n".join(render(result)))
    if result.session.rate > WARN_RATE:
        print(f"gates: warning: {suite}: a pure rerun of the champion fails the session "
              f"{_pct(result.session.rate)} of the time (above {_pct(WARN_RATE)}); the "
              "noisiest gates are listed above", file=sys.stderr)
    if keep:
        try:
            path = save(store, suite, result)
        except (StoreReadOnly, OSError) as exc:
            print(f"gates: warning: calibration not stored: {exc}", file=sys.stderr)
        else:
            print(f"gates: stored in {path}", file=sys.stderr if as_json else sys.stdout)
    return 0


def gate_rates(data: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    """The stored per-gate rates (for sinks that want them)."""
    return list(data.get("gates", []))
