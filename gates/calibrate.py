"""A/A calibration: how often would the gates fail a pure rerun of the champion?

The verdict-quality benchmark answers this on simulated data; here it is answered on the
suite's own champion. Each trial draws two evaluation sets of the champion's own size
from its per-sample vectors (``resample``: with replacement, independently; ``split``: a
random half each), makes one the champion (:class:`gates.model.Champion`) and the other a
challenger of exactly the same quality (:class:`gates.model.Evaluation`, its metrics the
aggregates of the drawn vectors), and runs the session's own gates on them:
``gates.plan.planned_outcomes`` under the suite's policy. So a trial is judged exactly as a
session is: every regression and spike comparison in one family of
``evidence.regression_evidence`` (max-T adjusted, one shared resampling design), spikes
noise-aware, ceilings on the aggregates, severities by ``logic.apply_severity``. A gate
fails a trial when its outcome does not pass; the session fails when any regression or
physics gate does (promotion never fails it). Every metric uses the same drawn samples in
a trial, so correlated metrics fail together as they would in a real session.

Metrics with only repeated runs (``repeats``) take part by leaving one run out as the
challenger, the others being the champion's repeats. Metrics with neither, and
``max``-aggregated ones (a resampled maximum is no model of a rerun's), are reported as
not estimated, and the trials' sessions leave their gates out. Rates come with a 95 %
Wilson interval.

Cost: a gate can fail only past its limit by point estimate (the rule's condition 1 for
regressions and spikes, a plain threshold for ceilings), checked for every trial at once;
the other trials pass without a session. Of the rest, a trial whose gates past their
limits are all paired is first judged on just those comparisons (the plan's own ``judge``,
a smaller family: it cannot regress less than the session's, see :func:`_may_fail`); only
when one regresses there does the whole session run. Those run on every core when there
are many.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gates import evidence, logic
from gates.errors import GateInputError
from gates.model import Champion, Evaluation, Kind
from gates.plan import (
    FIELD_PREFIX,
    SPIKE,
    Plan,
    Settings,
    comparison,
    judge,
    planned_outcomes,
)
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

#: above this many trials for the plan, the work is shared among the machine's cores
PARALLEL_TRIALS = 60
#: the screen's slack at every limit: it may send a trial to the plan that then passes,
#: never skip one the plan would fail
_LOOSE = 1e-6
#: stands in for ``--gates-arrays`` so the plan gates the champion's field metrics
_FIELDS = Path("<the champion's field metrics>")


@dataclass
class _Gate:
    """One gate the trials count, and in which trials its point estimate is past its limit
    (only there can the plan fail it)."""

    id: str
    kind: str
    metric: str
    method: str
    n: int | None
    screen: npt.NDArray[np.bool_]
    #: a paired gate's tolerance (the spike's ``factor - 1``): it must regress in the
    #: family of the comparisons past their limits before the session can fail it
    alone: float | None = None


@dataclass
class _Trials:
    """What every trial's champion and challenger are built from (sent to the workers)."""

    champion: Champion
    policy: Policy
    store: BaselineStore
    vectors: dict[str, npt.NDArray[np.float64]]
    aggregation: dict[str, str]
    idx_a: npt.NDArray[np.intp] | None
    idx_b: npt.NDArray[np.intp] | None
    runs: dict[str, npt.NDArray[np.float64]]
    picks: dict[str, npt.NDArray[np.intp]]
    base: dict[str, npt.NDArray[np.float64]]
    cur: dict[str, npt.NDArray[np.float64]]
    gates: list[_Gate] = field(default_factory=list)

    def ids(self) -> npt.NDArray[np.intp] | None:
        """Both draws' samples are named by position: sample i of one is paired with sample
        i of the other, in that order (the order the evidence then keeps)."""
        return None if self.idx_a is None else np.arange(self.idx_a.shape[1])

    def plan(self, t: int, resampling: evidence.Resampling) -> Plan:
        """Trial ``t`` as a gate session: one draw the champion, the other the challenger."""
        champ = self.champion
        base_samples: dict[str, np.ndarray] = {}
        cur_samples: dict[str, np.ndarray] = {}
        if self.idx_a is not None and self.idx_b is not None:
            for metric, vector in self.vectors.items():
                base_samples[metric] = vector[self.idx_a[t]]
                cur_samples[metric] = vector[self.idx_b[t]]
        repeats = {m: np.delete(runs, int(self.picks[m][t])).tolist()
                   for m, runs in self.runs.items()}
        fields = any(m.startswith(FIELD_PREFIX) for m in self.base)
        shape = champ.provenance.get("field_shape")
        version = champ.provenance.get("field_metrics_version")
        ids = self.ids() if base_samples else None
        trial_champion = Champion(
            suite=champ.suite, version=champ.version,
            metrics={m: float(v[t]) for m, v in self.base.items()}, samples=base_samples,
            sample_ids=ids, repeats=repeats, provenance=champ.provenance, extra=champ.extra,
            aggregation=dict(self.aggregation))
        challenger = Evaluation(
            path=None, metrics={m: float(v[t]) for m, v in self.cur.items()},
            extra=dict(champ.extra), samples=cur_samples, sample_ids=ids,
            aggregation=dict(self.aggregation),
            field_shape=tuple(shape) if isinstance(shape, list) else None)
        return Plan(settings=Settings(arrays=_FIELDS if fields else None),
                    evaluation=challenger, store=self.store, suite=champ.suite,
                    policy=self.policy, champion=trial_champion,
                    out_dir=Path(tempfile.gettempdir()),
                    field_version=None if version is None else str(version),
                    resampling=resampling)


def calibrate(champion: Champion, policy: Policy, *, trials: int = 1000, seed: int = 0,
              method: str = "resample", workers: int | None = None,
              store: BaselineStore | None = None) -> Calibration:
    """Run ``trials`` A/A trials of every built-in gate on the champion's own data.

    ``workers``: processes for the trials the plan judges (default: every core; 1 = this
    process). ``store``: the suite's store, handed to each trial's plan (never written).
    """
    job, n, skipped = trial_sessions(champion, policy, trials=trials, seed=seed,
                                     method=method, store=store)
    gates = job.gates
    candidates = np.flatnonzero(np.logical_or.reduce([g.screen for g in gates])) \
        if gates else np.zeros(0, dtype=np.intp)
    failed_ids = _run_trials(job, [int(t) for t in candidates], workers)
    fails = {g.id: np.zeros(trials, dtype=bool) for g in gates}
    for t, ids in zip(candidates, failed_ids, strict=True):
        for gid in ids:
            if gid in fails:
                fails[gid][t] = True
    rates = [_rate(g.id, g.kind, g.metric, g.method, fails[g.id], g.n) for g in gates]
    any_fail = np.logical_or.reduce(list(fails.values())) if fails else \
        np.zeros(trials, dtype=bool)
    return Calibration(
        suite=champion.suite, champion=champion.version, trials=trials, method=method,
        seed=seed, n_samples=n, session=_rate("session", "session", "", method, any_fail, n),
        gates=rates, not_estimated=skipped, time=utc_now(),
        policy={"rule": policy.rule, "confidence": policy.confidence,
                "margin": policy.margin, "tolerance": policy.tolerance,
                "path": policy.path})


def trial_sessions(champion: Champion, policy: Policy, *, trials: int, seed: int = 0,
                   method: str = "resample", store: BaselineStore | None = None
                   ) -> tuple[_Trials, int | None, list[str]]:
    """The trials' draws and gates (with their screens), the sample count, and the metrics
    that cannot be estimated; ``job.plan(t, resampling)`` is trial ``t``'s session."""
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    rng = np.random.default_rng(seed)
    aggregation = dict(getattr(champion, "aggregation", {}) or {})
    metrics = sorted(m for m in champion.metrics
                     if m not in policy.ignore and not m.startswith("_"))
    vectors = {m: np.asarray(v, dtype=np.float64) for m, v in champion.samples.items()
               if m in metrics and np.asarray(v).ndim == 1 and np.asarray(v).size >= 2
               and np.all(np.isfinite(v))}
    sizes = {v.size for v in vectors.values()}
    if len(sizes) > 1:
        raise GateInputError(None, f"the champion's per-sample vectors have different "
                                   f"lengths {sorted(sizes)}")
    n = sizes.pop() if sizes else None
    idx_a = idx_b = None
    if n is not None:
        idx_a, idx_b = _draw(rng, n, trials, method)
    base: dict[str, npt.NDArray[np.float64]] = {}
    cur: dict[str, npt.NDArray[np.float64]] = {}
    runs: dict[str, npt.NDArray[np.float64]] = {}
    picks: dict[str, npt.NDArray[np.intp]] = {}
    sampled: dict[str, npt.NDArray[np.float64]] = {}
    skipped: list[str] = []
    for metric in metrics:
        vector = vectors.get(metric)
        how = aggregation.get(metric, "mean")
        repeats = champion.repeats.get(metric, [])
        if vector is not None and idx_a is not None and idx_b is not None \
                and how in ("mean", "rms"):
            sampled[metric] = vector
            base[metric], cur[metric] = _aggregate(vector[idx_a], how), \
                _aggregate(vector[idx_b], how)
        elif len(repeats) >= 3:
            values = np.asarray(repeats, dtype=np.float64)
            runs[metric] = values
            picks[metric] = rng.integers(0, values.size, size=trials)
            left = values[picks[metric]]
            base[metric] = (values.sum() - left) / (values.size - 1)
            cur[metric] = left
        else:
            skipped.append(metric)
    # every gate on a metric the trials do not draw is left out of their sessions
    absent = (set(champion.metrics) | set(policy.ceilings) | set(policy.spike_factors)) \
        - set(base)
    trial_policy = replace(policy, optional=frozenset(policy.optional | absent))
    job = _Trials(champion, trial_policy, store or BaselineStore(Path(tempfile.gettempdir())),
                  sampled, {m: aggregation.get(m, "mean") for m in sampled}, idx_a, idx_b,
                  runs, picks, base, cur)
    job.gates = _gates(job, n)
    return job, n, skipped


def _gates(job: _Trials, n: int | None) -> list[_Gate]:
    """The gates the trials' sessions hold, each with its screen (vectorized over trials):
    a regression gate can fail only where the estimate is past the tolerance (the rule's
    condition 1), a spike only past its factor, a ceiling only above it."""
    policy = job.policy
    gates: list[_Gate] = []
    for metric in sorted(job.base):
        b, c = job.base[metric], job.cur[metric]
        direction = policy.direction(metric)
        paired = metric in job.vectors
        worse = {"lower": c - b, "higher": b - c}.get(direction or "", np.abs(c - b))
        allowed = np.maximum(policy.tolerance_for(metric) * np.abs(b), policy.abs_tolerance)
        if paired:
            method, size = ("paired" if direction is not None else "threshold"), n
        else:
            method, size = "repeats-leave-one-out", job.runs[metric].size
        gates.append(_Gate(logic.gate_id(Kind.REGRESSION, metric), Kind.REGRESSION, metric,
                           method, size, worse > allowed * (1 - _LOOSE),
                           policy.tolerance_for(metric) if method == "paired" else None))
        if metric in policy.ceilings:
            limit = float(policy.ceilings[metric])
            gates.append(_Gate(logic.gate_id(Kind.PHYSICS, metric, "ceiling"), Kind.PHYSICS,
                               metric, "aggregate", size,
                               c > limit - _LOOSE * abs(limit)))
        if metric in policy.spike_factors:
            factor = float(policy.spike_factors[metric])
            limits = factor * b + policy.abs_tolerance
            noise = paired and factor >= 1 and direction == "lower"
            gates.append(_Gate(logic.gate_id(Kind.PHYSICS, metric, "spike"), Kind.PHYSICS,
                               metric, "paired" if noise else "threshold", size,
                               c > limits - _LOOSE * np.abs(limits),
                               factor - 1 if noise else None))
    return gates


def _draw(rng: np.random.Generator, n: int, trials: int,
          method: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    if method == "resample":
        return (rng.integers(0, n, size=(trials, n)), rng.integers(0, n, size=(trials, n)))
    half = n // 2
    perms = np.argsort(rng.random((trials, n)), axis=1)
    return perms[:, :half], perms[:, half:2 * half]


def _aggregate(values: npt.NDArray[np.float64], how: str) -> npt.NDArray[np.float64]:
    """The aggregate of each trial's drawn vector, as the evidence module defines it."""
    mean = values.sum(axis=1) / values.shape[1]
    return np.asarray(np.sqrt(np.maximum(mean, 0.0)) if how == "rms" else mean)


def _judge_trials(job: _Trials, trials: Sequence[int], bound: bool = True
                  ) -> list[list[str]]:
    """The ids of the gates each trial's session fails: ``plan.planned_outcomes`` itself
    (one shared resampling design: it depends on the seed and the sample count only).

    ``bound``: first judge only the comparisons past their limits; when none of them
    regresses there, the session passes (see :func:`_may_fail`)."""
    resampling = evidence.Resampling(seed=job.policy.seed)
    found: list[list[str]] = []
    for t in trials:
        plan = job.plan(t, resampling)
        if bound and not _may_fail(job, plan, t):
            found.append([])
            continue
        outcomes = planned_outcomes(plan)
        found.append([o.id for o in outcomes
                      if o.kind in (Kind.REGRESSION, Kind.PHYSICS) and not o.passed])
    return found


def _may_fail(job: _Trials, plan: Plan, t: int) -> bool:
    """Can the session of trial ``t`` fail a gate? False only when every gate past its
    limit is a paired one, and none of them regresses when the plan's own ``judge`` weighs
    just those comparisons (a smaller family of the session).

    Exact, not an approximation: in the smaller family each comparison uses the same swap
    design rows in the same (sample-id) order as in the session's (the same sums, up to
    rounding), so the rule's conditions 1 and 3 are the same; its condition 2 p-value there
    is at most the session's (the largest statistic of each swap over fewer metrics is no
    larger, and Bonferroni across the session's families only lowers the level). Not
    regressing there, it cannot in the session; and gates not past their limit cannot fail
    at all (condition 1).
    """
    ev, champ = plan.evaluation, plan.champion
    assert champ is not None
    comparisons: list[evidence.Comparison] = []
    for gate in job.gates:
        if not gate.screen[t]:
            continue
        if gate.alone is None:
            return True
        spike = gate.id.endswith("/spike")
        comp = comparison(plan, gate.metric, ev.metrics.get(gate.metric),
                          champ.metrics.get(gate.metric),
                          tolerance=gate.alone if spike else None,
                          key=SPIKE + gate.metric if spike else None)
        if comp is None:
            return True
        comparisons.append(comp)
    found = judge(plan, comparisons)
    return any(e.regressed or e.error or e.method == "threshold-only" for e in found.values())


def _run_trials(job: _Trials, trials: list[int], workers: int | None = None
                ) -> list[list[str]]:
    """Judge the trials the screen let through (on every core when there are many)."""
    if not trials:
        return []
    cores = workers if workers is not None else (os.cpu_count() or 1)
    if cores > 1 and len(trials) >= PARALLEL_TRIALS and _can_fork():
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunks = [trials[i::cores] for i in range(cores)]
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(cores, mp_context=context) as pool:
            parts = list(pool.map(_judge_trials, [job] * cores, chunks))
        found: list[list[str]] = [[] for _ in trials]
        for i, part in enumerate(parts):
            found[i::cores] = part
        return found
    return _judge_trials(job, trials)


def _can_fork() -> bool:
    import threading

    return hasattr(os, "fork") and threading.active_count() == 1


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
        lines.append(f"not estimated (no per-sample mean or rms vectors, nor >= 3 repeats): "
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
                       method=method, store=store)
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
