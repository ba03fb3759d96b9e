"""Noise-aware verdicts: is the challenger worse (or better) than the champion, by how much,
and how sure can this evaluation be?  The one home of relative change and of every rule.

Question
    A gated metric is an aggregate of per-sample values (their mean, or their root mean
    square).  The gate asks about *that aggregate*: is ``agg(current)/agg(baseline) - 1``
    worse than the tolerance?  Not whether the typical sample got worse: a challenger that
    is less spread out with the same mean is not a regression (a test on log-ratios fails it
    about one time in five).  ``change = (current - baseline) / |baseline|`` (see
    :func:`relative_change`); ``worse`` is ``change`` for lower-is-better metrics and
    ``-change`` for higher-is-better ones.

Test: paired sign-flip (randomization) test of the ratio of means
    Under a pure rerun the two runs are exchangeable on every sample, so swapping them
    within a sample changes nothing in distribution.  The test swaps random subsets of
    samples (all ``2**n`` subsets for n <= 12) and asks how often the swapped data look at
    least as worse as the observed; for "ratio of means <= k" the statistic is
    ``sum(c - k*b)`` (:mod:`gates.stats`).  So:

    * a pure rerun fails at most ``1 - confidence`` of the time *exactly*, whatever the
      distribution: heavy tails, diverged samples in one or both runs, any correlation
      (a t-test or bootstrap interval is only approximately right there, and a diverged
      sample that dominates both means fools both: 20-30 % false failures);
    * for ratio ``k`` the test is exact whenever the challenger is the champion's
      distribution scaled by ``k`` (the benchmark's model), and asymptotically valid for the
      ratio of means in general (the swap distribution of ``sum(c - k*b)`` has the right
      variance, ``sum (c - k*b)**2``);
    * inverting it gives an interval for the ratio with exact coverage in the scale model:
      the bounds are order statistics of the swapped subsets' own ratios
      ``sum_S c / sum_S b``.  A diverged sample that dominates both means gives a wide
      interval, as it should.

Rule ``confident`` (the default): fail when all three hold
    1. the estimate is past the tolerance: ``worse > tolerance`` and the absolute change is
       past ``abs_tolerance`` (a round-off gap, 1e-12 against 3e-13, never fails);
    2. the evidence supports "worse at all": one-sided p <= ``1 - confidence`` (0.01) for
       "ratio <= 1", adjusted over the session's metrics (see below);
    3. the evidence supports "worse by more than ``margin`` x tolerance" (half of it): one-
       sided p <= ``MARGIN_LEVEL`` (0.05) for "ratio <= 1 + margin x tolerance".
    Each condition is the test that keeps one promise, and the rule fails only when all
    three reject (an intersection-union test), so each promise holds by construction: a
    pure rerun fails at most 1 %, a regression of half the tolerance at most 5 %, a change
    inside the tolerance never, however large the evaluation.  Condition 2 decides small
    evaluations, 3 middle ones, 1 large ones.  ``significant`` is 1 (absolute part) and 2;
    ``threshold`` is 1 alone (the old fixed rule).  There is no "hard limit": a change the
    evidence supports at this size fails anyway (2 implies 3 there), and one the evidence
    does not support is noise, e.g. one diverged sample.

Session (many gates at once)
    A session gates tens of metrics; what a user sees is whether a pure rerun fails
    *anything*.  :func:`regression_evidence` takes every gate of the session: metrics on the
    same samples share one swap design (:class:`Resampling`), and condition 2 uses the
    min-P adjustment (Westfall-Young): a metric's p-value is the share of swaps under which
    the *smallest* of all those metrics' own swap p-values reaches its own.  Swapping the
    same samples in every metric keeps their correlation (mse, rmse, nrmse, rel_l2 of the
    same errors move together and cost almost nothing), so a pure rerun fails the whole
    family at most ``1 - confidence``, exactly.  Separate families (other sample sets,
    repeats) split that level (Bonferroni).  Conditions 1 and 3 stay per gate: they guard
    tolerated changes, not reruns.

What the rule cannot do (measured in ``tests/bench_verdicts.py``)
    No test of the ratio of means catches a 20 % regression on 20 samples of the benchmark's
    noise half the time at 1 % false failures: even an oracle that knows the estimate's
    exact null distribution gets about 50 %; the 60 % / 52 % of a z / t test on log-ratios
    answer the typical-sample question.  At n=100, "at most 5 % failing at +5 %" and "at
    least 99.5 % failing at +20 %" exclude each other for the ratio of means (the estimate's
    95th percentile at +5 % lies above its 0.5th percentile at +20 %); the rule keeps the
    false-failure promises and catches about 98 %.

Detectable
    ``detectable`` is the smallest regression (relative) this evaluation fails at least half
    the time: the challenger's values rescaled until the rule, applied to them, just fails
    (exact for the scale model, where the swapped ratios scale with the data).

Repeats (seeds)
    With aggregate values of several baseline runs only, their spread is the noise: one
    current run against the baseline runs' t prediction interval (``k-1`` df), several with
    a Welch t-test; the same three conditions.

Without per-sample data or repeats the threshold rule decides, and the evidence says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from gates.stats import DEFAULT_FLIPS, Resampling

__all__ = [
    "CONFIDENT_MARGIN", "DEFAULT_CONFIDENCE", "DEFAULT_FLIPS", "DEFAULT_RULE", "MARGIN_LEVEL",
    "RULES", "Comparison", "Evidence", "Resampling", "Rule", "SampleMismatch",
    "evidence_line", "paired_evidence", "physics_evidence", "promotion_evidence",
    "regression_evidence", "relative_change", "repeats_evidence", "threshold_evidence",
    "threshold_regressed",
]

Rule = Literal["threshold", "confident", "significant"]
RULES: tuple[Rule, ...] = get_args(Rule)
Aggregation = Literal["mean", "rms", "max"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)

#: Chosen from ``tests/bench_verdicts.py``; see the module docstring.
DEFAULT_RULE: Rule = "confident"
#: ``1 - confidence`` is the most a pure rerun may fail (a gate, and a session's family);
#: the reported interval is two-sided at ``confidence``.
DEFAULT_CONFIDENCE: float = 0.99
#: ``confident``: the evidence must support "worse by more than margin x tolerance" ...
CONFIDENT_MARGIN: float = 0.5
#: ... at this one-sided level: a regression of margin x tolerance fails at most 5 %.
MARGIN_LEVEL: float = 0.05
#: Relative slack at every limit: 1.1 against 1.0 at 10 % is at the limit, not past it.
BOUNDARY_EPS = 1e-9

_Array = npt.NDArray[np.float64]


class SampleMismatch(ValueError):
    """Baseline and current were not evaluated on the same samples, so they cannot be paired."""


# ---------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Evidence:
    """What one comparison showed, and the answer of the rule that was applied.

    ``change``, ``ci_low``, ``ci_high`` and ``detectable`` are relative (0.14 = 14 %);
    ``change`` is ``(current - baseline)/|baseline|`` whatever the metric's direction.
    ``question`` is what ``supported`` answers: ``"regression"`` (the gate fails; then
    ``regressed`` is the same), ``"improvement"`` (promotion: better by at least the
    required minimum) or ``"worse"`` (promotion's physics check: supported worse).
    ``p_value`` is for "worse at all" (regression, worse) or "better by the minimum"
    (improvement), adjusted over ``adjusted_for`` metrics; ``error`` is set when the
    inputs cannot be compared (mismatched samples): the gate is then an error.
    """

    method: str
    change: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n: int
    detectable: float | None
    seed: int | None
    regressed: bool
    note: str
    confidence: float | None = None
    p_margin: float | None = None
    adjusted_for: int = 1
    rule: str | None = None
    question: str = "regression"
    supported: bool = False
    error: str | None = None

    @property
    def interval(self) -> tuple[float | None, float | None]:
        return self.ci_low, self.ci_high

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (non-finite numbers as strings, as ``gates.json`` writes them)."""
        # every field is a scalar: no need for asdict's recursive deep copy (0.1 ms a gate)
        return {f: _json_number(getattr(self, f)) for f in _EVIDENCE_FIELDS}

    def describe(self) -> str:
        """One line for the terminal, ``gates.md`` and W&B: see :func:`evidence_line`."""
        return evidence_line(self)


_EVIDENCE_FIELDS = tuple(f.name for f in fields(Evidence))


@dataclass(frozen=True)
class Comparison:
    """One metric of champion (``baseline``) and challenger (``current``), as the plan has it.

    ``baseline``/``current`` are the reported aggregates; the optional per-sample vectors
    must reproduce them (``aggregation``: ``"mean"`` of the vector, ``"rms"``: square root
    of the mean of per-sample squared contributions, ``"max"``: the largest; a vector that
    does not is not used, and the evidence says why).  ``baseline_repeats`` are aggregate
    values of repeated baseline runs.  ``where`` names the challenger's samples in messages.
    """

    metric: str
    baseline: float
    current: float
    higher_is_better: bool
    tolerance: float
    abs_tolerance: float = 0.0
    baseline_samples: npt.ArrayLike | None = None
    current_samples: npt.ArrayLike | None = None
    baseline_ids: npt.ArrayLike | None = None
    current_ids: npt.ArrayLike | None = None
    aggregation: str = "mean"
    baseline_repeats: npt.ArrayLike | None = None
    where: str = "the challenger's samples"


# ---------------------------------------------------------------------------------------
# relative change and the threshold rule: the one place that decides them


def relative_change(current: float, baseline: float) -> float:
    """``(current - baseline) / |baseline|``; a zero baseline gives 0 (both zero) or +/-inf.

    The one definition of relative change in the package (``gates.logic`` imports it).
    """
    if baseline == 0:
        return 0.0 if current == 0 else math.copysign(math.inf, current - baseline)
    return (current - baseline) / abs(baseline)


def threshold_regressed(current: float, baseline: float, *, higher_is_better: bool,
                        tolerance: float, abs_tolerance: float = 0.0) -> bool:
    """The fixed rule: worse by more than ``max(tolerance x |baseline|, abs_tolerance)``.

    Compared on the baseline's scale, so a value exactly at the limit (1.1 against 1.0 at
    10 %) is not past it; a zero baseline fails any worsening beyond ``abs_tolerance``.
    """
    worse_abs = (baseline - current) if higher_is_better else (current - baseline)
    limit = max(tolerance * abs(baseline), abs_tolerance)
    return bool(worse_abs > limit + BOUNDARY_EPS * abs(baseline))


def threshold_evidence(baseline: float, current: float, *, higher_is_better: bool,
                       threshold: float, abs_tolerance: float = 0.0,
                       reason: str | None = None) -> Evidence:
    """The fixed rule on two values, for when there is nothing to measure noise by."""
    _check_threshold(threshold)
    base, cur = float(baseline), float(current)
    if not (math.isfinite(base) and math.isfinite(cur)):
        raise ValueError(f"non-finite metric: baseline={base!r}, current={cur!r}")
    change = relative_change(cur, base)
    worse = -change if higher_is_better else change
    regressed = threshold_regressed(cur, base, higher_is_better=higher_is_better,
                                    tolerance=threshold, abs_tolerance=abs_tolerance)
    verdict = (f"fails: worse than the {_pct(threshold)} tolerance" if regressed
               else f"passes: within the {_pct(threshold)} tolerance")
    if base == 0.0:
        verdict = (f"fails: worse by more than the absolute tolerance {abs_tolerance:g}"
                   if regressed else f"passes: within the absolute tolerance {abs_tolerance:g}")
    if base == 0.0 and cur != 0.0:
        what = (f"the champion's value is 0, so the change is {_abs_change(cur - base)} in "
                f"absolute terms (abs_tolerance {abs_tolerance:g})")
    else:
        what = _describe(worse)
    why = reason or "no per-sample data or repeated runs"
    note = (f"{why}, so the fixed {_pct(threshold)} threshold rule decides; {what}, "
            f"so the gate {verdict}")
    return Evidence(method="threshold-only", change=change, ci_low=None, ci_high=None,
                    p_value=None, n=1, detectable=None, seed=None, regressed=regressed,
                    note=note, rule="threshold", supported=regressed)


# ---------------------------------------------------------------------------------------
# regression: every gate of a session at once


def regression_evidence(
    comparisons: Sequence[Comparison],
    *,
    rule: Rule = DEFAULT_RULE,
    confidence: float = DEFAULT_CONFIDENCE,
    margin: float = CONFIDENT_MARGIN,
    resampling: Resampling | None = None,
) -> dict[str, Evidence]:
    """Evidence and verdict for every regression gate of a session, keyed by metric.

    The gate function the plan calls: pass *all* of a session's comparisons in one call,
    so condition 2 is adjusted over them (min-P within metrics on the same samples,
    Bonferroni across such families and repeats).  Each comparison gets the paired
    sign-flip test when both sides have per-sample vectors that reproduce the aggregates,
    else the repeats test when the baseline has >= 2 repeats, else the threshold rule;
    every fallback says why in ``note``.  Mismatched sample sets give an Evidence with
    ``error`` set (the gate is an error, never a silent unpaired test).  Aggregates must be
    finite (the plan fails non-finite values before asking).
    """
    _check_options(rule, confidence, margin)
    rs = resampling or Resampling()
    results: dict[str, Evidence] = {}
    families: dict[tuple[int, bytes | None], list[_Paired]] = {}
    repeats: list[tuple[Comparison, _Array]] = []
    for comp in comparisons:
        _check_threshold(comp.tolerance)
        try:
            prepared = _prepare(comp)
        except SampleMismatch as exc:
            results[comp.metric] = _mismatch(comp, str(exc))
            continue
        if isinstance(prepared, _Paired):
            families.setdefault((prepared.n, prepared.ids_key), []).append(prepared)
        elif isinstance(prepared, np.ndarray):
            repeats.append((comp, prepared))
        else:
            results[comp.metric] = threshold_evidence(
                comp.baseline, comp.current, higher_is_better=comp.higher_is_better,
                threshold=comp.tolerance, abs_tolerance=comp.abs_tolerance, reason=prepared)
    groups = len(families) + len(repeats)
    size = sum(len(members) for members in families.values()) + len(repeats)
    for members in families.values():
        for paired, found in zip(members, _family(members, rs, groups, rule, confidence,
                                                  margin, size), strict=True):
            results[paired.comp.metric] = found
    for comp, runs in repeats:
        results[comp.metric] = repeats_evidence(
            runs, comp.current, higher_is_better=comp.higher_is_better,
            threshold=comp.tolerance, rule=rule, confidence=confidence, margin=margin,
            abs_tolerance=comp.abs_tolerance, adjust=groups, adjusted_for=size)
    return results


def paired_evidence(
    baseline: npt.ArrayLike,
    current: npt.ArrayLike,
    *,
    higher_is_better: bool,
    threshold: float,
    rule: Rule = DEFAULT_RULE,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    baseline_ids: npt.ArrayLike | None = None,
    current_ids: npt.ArrayLike | None = None,
    margin: float = CONFIDENT_MARGIN,
    abs_tolerance: float = 0.0,
    aggregation: str = "mean",
    resampling: Resampling | None = None,
    n_resamples: int | None = None,
) -> Evidence:
    """One gate alone (a session of one metric): per-sample vectors of both runs.

    The aggregates are taken from the vectors.  Unlike :func:`regression_evidence` it
    raises :class:`SampleMismatch` on mismatched samples and ``ValueError`` when no paired
    test is possible (NaN/inf, fewer than 2 samples, a baseline mean at 0 or values that
    change sign).  ``n_resamples`` sets the Monte Carlo design size (``Resampling(n_flips)``).
    """
    b = _finite_1d(baseline, "baseline")
    c = _finite_1d(current, "current")
    agg = _aggregator(aggregation)
    comp = Comparison("metric", agg(b), agg(c), higher_is_better, threshold, abs_tolerance,
                      b, c, baseline_ids, current_ids, aggregation)
    prepared = _prepare(comp)
    if not isinstance(prepared, _Paired):
        raise ValueError(f"no paired test possible: {prepared}")
    rs = resampling or Resampling(seed, n_resamples or DEFAULT_FLIPS)
    _check_options(rule, confidence, margin)
    _check_threshold(threshold)
    return _family([prepared], rs, 1, rule, confidence, margin, 1)[0]


# ---------------------------------------------------------------------------------------
# promotion


def promotion_evidence(
    comparison: Comparison,
    *,
    min_improvement_rel: float,
    min_improvement_abs: float = 0.0,
    confidence: float = DEFAULT_CONFIDENCE,
    resampling: Resampling | None = None,
) -> Evidence:
    """Is the primary metric better by at least the required minimum, supported?

    The requirement is a relative improvement of ``max(min_improvement_rel,
    min_improvement_abs / |champion|)``.  With per-sample vectors: supported when the
    estimate meets it and the sign-flip test of "not better by that much" rejects at
    ``1 - confidence`` (an unchanged challenger is promotable at most 1 % of the time).
    Without: the threshold rule (the estimate meets it), and the note says so.
    ``supported`` is the answer; ``regressed`` is always False.
    """
    comp = comparison
    base, cur = float(comp.baseline), float(comp.current)
    need = max(min_improvement_rel,
               min_improvement_abs / abs(base) if base != 0 else math.inf
               if min_improvement_abs > 0 else 0.0)
    gain = -relative_change(cur, base) if not comp.higher_is_better else \
        relative_change(cur, base)
    gain_abs = (base - cur) if not comp.higher_is_better else (cur - base)
    meets = bool(gain >= need - BOUNDARY_EPS and gain_abs >= min_improvement_abs)
    prepared = _prepare_or_reason(comp)
    if not isinstance(prepared, _Paired):
        what = (f"needs {_pct(need)} better, {_describe(-gain)}; "
                f"{'meets' if meets else 'does not meet'} the requirement")
        return Evidence(method="threshold-only", change=relative_change(cur, base),
                        ci_low=None, ci_high=None, p_value=None, n=1, detectable=None,
                        seed=None, regressed=False, rule="threshold",
                        note=f"{prepared}, so the threshold rule decides promotion: {what}",
                        question="improvement", supported=meets)
    rs = resampling or Resampling()
    _canonical([prepared])
    flips = _Flips(prepared, rs)
    alpha = 1.0 - confidence
    better = _Sided(prepared, flips, toward="better")
    p = better.p(need)
    supported = bool(meets and p <= alpha)
    lo, hi = flips.change_interval(confidence)
    det = better.detect(alpha, need)
    verdict = ("promotable on this metric: the improvement is supported" if supported
               else "not supported: " + ("the estimate does not meet it" if not meets
                                         else f"p={p:.3g} > {alpha:g} for 'better by "
                                              f"{_pct(need)}'; more samples would decide"))
    note = (f"with {prepared.n} samples, an improvement of {_pct(det)} or more is supported "
            f"at least half the time; needs {_pct(need)} better, {_describe(-gain)} "
            f"({_pct(confidence)} CI {_signed(lo)} to {_signed(hi)}): {verdict}")
    return Evidence(method="paired-sign-flip", change=prepared.change, ci_low=lo, ci_high=hi,
                    p_value=p, n=prepared.n, detectable=det, seed=rs.seed, regressed=False,
                    note=note, confidence=confidence, rule="improvement",
                    question="improvement", supported=supported)


def physics_evidence(
    comparison: Comparison,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resampling: Resampling | None = None,
) -> Evidence:
    """Is a physics metric *supported* worse than the champion's (promotion's check)?

    With per-sample vectors: worse beyond ``abs_tolerance`` and the sign-flip test of "not
    worse" rejects at ``1 - confidence`` (+0.3 % with a CI of -16 % to +21 % does not block).
    Without: any worsening beyond ``abs_tolerance`` counts, and the note says so.
    """
    comp = comparison
    base, cur = float(comp.baseline), float(comp.current)
    change = relative_change(cur, base)
    worse_abs = (base - cur) if comp.higher_is_better else (cur - base)
    past = bool(worse_abs > comp.abs_tolerance + BOUNDARY_EPS * abs(base))
    prepared = _prepare_or_reason(comp)
    worse = -change if comp.higher_is_better else change
    if not isinstance(prepared, _Paired):
        return Evidence(method="threshold-only", change=change, ci_low=None, ci_high=None,
                        p_value=None, n=1, detectable=None, seed=None, regressed=past,
                        note=f"{prepared}, so any worsening counts: {_describe(worse)}",
                        rule="threshold", question="worse", supported=past)
    rs = resampling or Resampling()
    _canonical([prepared])
    flips = _Flips(prepared, rs)
    alpha = 1.0 - confidence
    p = _Sided(prepared, flips, toward="worse").p(0.0)
    supported = bool(past and p <= alpha)
    lo, hi = flips.change_interval(confidence)
    note = (f"with {prepared.n} samples: {_describe(worse)} ({_pct(confidence)} CI "
            f"{_signed(lo)} to {_signed(hi)}, p={p:.3g} for 'worse'), so it is "
            + ("supported worse" if supported else "not supported worse"))
    return Evidence(method="paired-sign-flip", change=change, ci_low=lo, ci_high=hi,
                    p_value=p, n=prepared.n, detectable=None, seed=rs.seed,
                    regressed=supported, note=note, confidence=confidence, rule="worse",
                    question="worse", supported=supported)


# ---------------------------------------------------------------------------------------
# repeats (seeds)


def repeats_evidence(
    baseline_runs: npt.ArrayLike,
    current: float | npt.ArrayLike,
    *,
    higher_is_better: bool,
    threshold: float,
    rule: Rule = DEFAULT_RULE,
    confidence: float = DEFAULT_CONFIDENCE,
    margin: float = CONFIDENT_MARGIN,
    abs_tolerance: float = 0.0,
    adjust: int = 1,
    adjusted_for: int = 1,
) -> Evidence:
    """Compare an aggregate metric against several baseline runs (seeds), using their spread.

    One current value: t prediction interval of the baseline runs (``k-1`` df), as Bencher's
    t-test thresholds do with past runs.  Several current runs: Welch t-test of the means.
    Needs at least 2 baseline runs (else use :func:`threshold_evidence`).  ``adjust``:
    Bonferroni factor for condition 2 (the number of families in the session).
    """
    from scipy.special import stdtr, stdtrit  # lazily: only sessions with repeats pay for it

    _check_options(rule, confidence, margin)
    _check_threshold(threshold)
    x = _finite_1d(baseline_runs, "baseline_runs")
    y = _finite_1d(np.atleast_1d(np.asarray(current, dtype=float)), "current")
    k, m = int(x.size), int(y.size)
    if k < 2:
        raise ValueError(f"need at least 2 baseline runs to estimate run-to-run spread, got {k}; "
                         "use threshold_evidence")
    x_mean, y_mean = float(x.mean()), float(y.mean())
    if x_mean == 0.0:
        raise ValueError("the baseline mean is 0, so a relative change is undefined")
    var_x = float(x.var(ddof=1))
    if m == 1:
        se = math.sqrt(var_x * (1.0 + 1.0 / k))
        df = float(k - 1)
    else:
        vx, vy = var_x / k, float(y.var(ddof=1)) / m
        se = math.sqrt(vx + vy)
        df = (vx + vy) ** 2 / (vx**2 / (k - 1) + vy**2 / (m - 1)) if se > 0 else float(k + m - 2)
    scale = abs(x_mean)
    change = (y_mean - x_mean) / scale
    worse = -change if higher_is_better else change
    rel_se = se / scale

    def p_worse_than(delta: float) -> float:
        if rel_se > 0:
            return float(stdtr(df, -(worse - delta) / rel_se))
        return float(worse <= delta + BOUNDARY_EPS)  # no spread: certain either way

    alpha = (1.0 - confidence) / adjust
    p_value = min(1.0, adjust * p_worse_than(0.0))
    p_margin = p_worse_than(margin * threshold)
    half = float(stdtrit(df, 1.0 - (1.0 - confidence) / 2.0)) * rel_se
    past = threshold_regressed(y_mean, x_mean, higher_is_better=higher_is_better,
                               tolerance=threshold if rule != "significant" else 0.0,
                               abs_tolerance=abs_tolerance)
    regressed = _decide(rule, past, p_value <= 1.0 - confidence, p_margin <= MARGIN_LEVEL)
    r1 = max(threshold, abs_tolerance / scale)
    r2 = float(stdtrit(df, 1.0 - alpha)) * rel_se
    r3 = margin * threshold + float(stdtrit(df, 1.0 - MARGIN_LEVEL)) * rel_se
    detectable = {"threshold": r1, "significant": max(abs_tolerance / scale, r2),
                  "confident": max(r1, r2, r3)}[rule]
    runs = f"{k} baseline runs" + ("" if m == 1 else f" and {m} current runs")
    return _record("seed-t", change, (change - half, change + half), p_value, p_margin, k,
                   detectable, None, regressed, rule, threshold, margin, confidence,
                   max(adjusted_for, adjust),
                   worse, past, what=runs, more="runs")


# ---------------------------------------------------------------------------------------
# one line for every sink


def evidence_line(evidence: Evidence | Mapping[str, Any]) -> str:
    """The evidence in one line: method, change, interval, p, n, detectable, seed.

    What the terminal summary, ``gates.md`` and W&B print for every outcome that carries
    evidence (an :class:`Evidence` or its ``to_json()``/``asdict`` form); "" for none.
    """
    if not isinstance(evidence, Evidence) and not evidence.get("method"):
        return ""  # before the copy: most outcomes of a large session carry none
    ev = evidence.to_json() if isinstance(evidence, Evidence) else dict(evidence)
    method = ev.get("method")
    if not method:
        return ""
    change = _num(ev.get("change"))
    parts = [f"{method}: change {_signed(change)}" if change is not None else str(method)]
    lo, hi = _num(ev.get("ci_low")), _num(ev.get("ci_high"))
    if lo is not None and hi is not None:
        conf = _num(ev.get("confidence"))
        level = f"{_pct(conf)} " if conf is not None else ""
        parts.append(f"{level}CI [{_signed(lo)}, {_signed(hi)}]")
    p = _num(ev.get("p_value"))
    if p is not None:
        adj = int(ev.get("adjusted_for") or 1)
        parts.append(f"p={p:.3g}" + (f" (adjusted for {adj} metrics)" if adj > 1 else ""))
    if ev.get("n") is not None and method != "threshold-only":
        parts.append(f"n={ev['n']}")
    det = _num(ev.get("detectable"))
    if det is not None:
        parts.append(f"detectable {_pct(det)}")
    if method == "threshold-only":
        parts.append("no noise estimate: threshold rule")
    else:
        parts.append(f"seed {ev.get('seed')}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------
# preparing a comparison


@dataclass
class _Paired:
    """A comparison ready for the sign-flip test, in the orientation the tests use.

    ``b``/``c`` have a positive baseline sum (both negated when the baseline's values are
    all <= 0); ``ratio_worse`` is +1 when "worse" means a larger ratio sum(c)/sum(b), -1
    when a smaller one; ``root`` is True for rms (the gated ratio is sqrt of the vectors').
    """

    comp: Comparison
    b: _Array
    c: _Array
    ids_key: bytes | None
    ratio_worse: int
    root: bool
    negated: bool
    change: float
    agg_b: float
    agg_c: float

    @property
    def n(self) -> int:
        return int(self.b.size)

    def reaggregate(self) -> None:
        agg = _aggregator(self.comp.aggregation)
        sign = -1.0 if self.negated else 1.0
        self.agg_b, self.agg_c = sign * agg(self.b), sign * agg(self.c)
        self.change = relative_change(self.agg_c, self.agg_b)

    def g(self, ratio: float) -> float:
        """Ratio of the vectors' sums -> ratio of the gated aggregates."""
        if self.root:
            return math.sqrt(max(ratio, 0.0)) if ratio != math.inf else math.inf
        return ratio

    def g_inv(self, agg_ratio: float) -> float:
        return agg_ratio * agg_ratio if self.root else agg_ratio


def _prepare(comp: Comparison) -> _Paired | _Array | str:
    """A paired comparison, baseline repeats, or the reason the threshold rule decides."""
    if comp.aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {comp.aggregation!r}; expected one of "
                         f"{', '.join(AGGREGATIONS)}")
    theirs, ours = comp.baseline_samples, comp.current_samples
    if theirs is not None and ours is not None:
        if (comp.baseline_ids is None) != (comp.current_ids is None):
            raise SampleMismatch(f"{comp.where}: {comp.metric}: sample ids are given on one "
                                 "side only; give sample_id in both or in neither")
        if comp.aggregation == "max":
            return "a max-aggregated metric has no per-sample mean to test"
        try:
            b = _finite_1d(theirs, "the champion's samples")
            c = _finite_1d(ours, comp.where)
        except ValueError as exc:
            return f"paired test not possible: {exc}"
        b, c = _pair(b, c, comp.baseline_ids, comp.current_ids)
        for vec, value, where in ((c, comp.current, comp.where),
                                  (b, comp.baseline, "the champion's samples")):
            mismatch = _aggregate_mismatch(comp.metric, vec, value, comp.aggregation, where)
            if mismatch:
                return mismatch
        return _orient(comp, b, c)
    if comp.baseline_repeats is not None:
        runs = np.asarray(comp.baseline_repeats, dtype=float)
        if runs.size >= 2:
            try:
                runs = _finite_1d(runs, "the champion's repeats")
            except ValueError as exc:
                return f"repeats test not possible: {exc}"
            mismatch = _aggregate_mismatch(comp.metric, runs, comp.baseline, "mean",
                                           "the champion's repeats")
            if mismatch:
                return mismatch
            if float(runs.mean()) == 0.0:
                return "repeats test not possible: the baseline runs' mean is 0"
            return runs
    return "no per-sample data or repeated runs"


def _prepare_or_reason(comp: Comparison) -> _Paired | str:
    try:
        prepared = _prepare(comp)
    except SampleMismatch as exc:
        return f"paired test not possible: {exc}"
    return prepared if isinstance(prepared, _Paired) else \
        ("no per-sample data" if isinstance(prepared, np.ndarray) else prepared)


def _orient(comp: Comparison, b: _Array, c: _Array) -> _Paired | str:
    n = int(b.size)
    if n < 2:
        return f"paired test not possible: it needs at least 2 samples, got {n}"
    root = comp.aggregation == "rms"
    if root and (np.any(b < 0) or np.any(c < 0)):
        return "paired test not possible: rms vectors must hold squared contributions >= 0"
    total = float(b.sum())
    negated = False
    if np.all(b <= 0) and total < 0:
        b, c, negated, total = -b, -c, True, -total
    elif not (np.all(b >= 0) and total > 0):
        return ("paired test not possible: the champion's per-sample values change sign or "
                "average to 0, so no relative change of their mean can be tested")
    agg = _aggregator(comp.aggregation)
    sign = -1.0 if negated else 1.0
    agg_b, agg_c = sign * agg(b), sign * agg(c)
    # lower-is-better: worse = larger aggregate; negated data turn "larger" into "smaller"
    ratio_worse = (-1 if comp.higher_is_better else 1) * (-1 if negated else 1)
    ids_key = None if comp.baseline_ids is None else _ids_key(comp.baseline_ids)
    return _Paired(comp, b, c, ids_key, ratio_worse, root, negated,
                   relative_change(agg_c, agg_b), agg_b, agg_c)


def _aggregator(kind: str) -> Callable[[_Array], float]:
    if kind == "rms":
        return lambda v: math.sqrt(max(float(v.sum()) / v.size, 0.0))
    if kind == "max":
        return lambda v: float(v.max())
    if kind == "mean":
        return lambda v: float(v.sum()) / v.size
    raise ValueError(f"unknown aggregation {kind!r}; expected one of {', '.join(AGGREGATIONS)}")


def _aggregate_mismatch(metric: str, vector: _Array, value: float, kind: str,
                        where: object) -> str | None:
    """A per-sample vector that does not reproduce the reported aggregate cannot judge it."""
    agg = _aggregator(kind)(vector)
    if math.isclose(agg, value, rel_tol=1e-6, abs_tol=1e-12):
        return None
    how = {"rms": "root-mean-square", "mean": "mean"}.get(kind, kind)
    return (f"the per-sample {how} of {metric} in {where} is {agg:.6g}, the reported value "
            f"{value:.6g}; the paired test was not used")


def _mismatch(comp: Comparison, problem: str) -> Evidence:
    return Evidence(method="sample-mismatch", change=relative_change(comp.current,
                                                                     comp.baseline),
                    ci_low=None, ci_high=None, p_value=None, n=0, detectable=None, seed=None,
                    regressed=False, note=f"per-sample vectors do not match: {problem}",
                    error=problem)


# ---------------------------------------------------------------------------------------
# the sign-flip machinery for one comparison


class _Flips:
    """Swapped-subset sums of one comparison: ``u = F @ c``, ``v = F @ b``."""

    def __init__(self, paired: _Paired, rs: Resampling,
                 uv: tuple[_Array, _Array] | None = None) -> None:
        self.paired = paired
        if uv is None:
            sums = rs.subset_sums(paired.n, np.column_stack([paired.c, paired.b]))
            uv = (sums[:, 0], sums[:, 1])
        u, v = uv
        self.rows = int(u.size)
        if v[0] == 0.0 and u[0] == 0.0 and float(v[1:].min()) > 0:  # positive baselines
            self.always = 1
            self.sorted = np.sort(u[1:] / v[1:])
        else:
            pos = v > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where(pos, u / np.where(pos, v, 1.0),
                                  np.where(u > 0, np.inf, np.where(u < 0, -np.inf, np.nan)))
            both = np.isnan(ratios)  # swaps that do not move the sums: count in both tails
            self.always = int(both.sum())
            self.sorted = np.sort(ratios[~both])
        self.ratio = float(paired.c.sum() / paired.b.sum())

    def p_upper(self, k: float) -> float:
        """P(swapped data look at least as high as observed) for "ratio <= k"."""
        count = self.always + int(np.searchsorted(self.sorted, k, side="right"))
        return min(1.0, count / self.rows)

    def p_lower(self, k: float) -> float:
        count = self.always + self.sorted.size - int(np.searchsorted(self.sorted, k,
                                                                     side="left"))
        return min(1.0, count / self.rows)

    def lower(self, level: float) -> float:
        """One-sided lower bound of the ratio at ``level`` (e.g. 0.005): the exact inversion."""
        j = _max_count(level, self.rows) - self.always
        if j < 0:
            return -math.inf
        return float(self.sorted[min(j, self.sorted.size - 1)]) if self.sorted.size else \
            -math.inf

    def upper(self, level: float) -> float:
        j = _max_count(level, self.rows) - self.always
        if j < 0:
            return math.inf
        return float(self.sorted[max(self.sorted.size - 1 - j, 0)]) if self.sorted.size else \
            math.inf

    def change_interval(self, confidence: float) -> tuple[float, float]:
        """Two-sided interval of the relative change of the gated aggregate."""
        p = self.paired
        gamma = (1.0 - confidence) / 2.0
        lo_r, hi_r = self.lower(gamma), self.upper(gamma)
        if np.all(p.c >= 0):  # a ratio of non-negative sums is >= 0
            lo_r = max(lo_r, 0.0)
        lo_r, hi_r = min(lo_r, self.ratio), max(hi_r, self.ratio)
        if p.negated:
            return 1.0 - hi_r, 1.0 - lo_r
        return p.g(lo_r) - 1.0, p.g(hi_r) - 1.0


def _max_count(level: float, rows: int) -> int:
    """The most swapped patterns that may reach the observed for p <= level."""
    return int(math.floor(level * rows * (1.0 + 1e-12)))


class _Sided:
    """Tests and detection toward one side ("worse" or "better") of one comparison."""

    def __init__(self, paired: _Paired, flips: _Flips, toward: str) -> None:
        self.p_, self.f = paired, flips
        self.up = (paired.ratio_worse > 0) == (toward == "worse")  # larger ratio is that side

    def boundary(self, delta: float) -> float:
        """The ratio of the vectors' sums at which the aggregate is ``delta`` to that side.

        "Up" (a larger ratio) is ``1 + delta``, "down" ``1 - delta``, in every orientation:
        negated data (``change = 1 - ratio``) only swap which side is worse.
        """
        agg_ratio = 1.0 + delta if self.up else 1.0 - delta
        return self.p_.g_inv(max(agg_ratio, 0.0))

    def p(self, delta: float) -> float:
        """One-sided p for "not more than ``delta`` to that side"."""
        k = self.boundary(delta)
        return self.f.p_upper(k) if self.up else self.f.p_lower(k)

    def detect(self, level: float, delta: float) -> float:
        """Smallest change to that side for which the test at ``level`` rejects "<= delta",
        with the challenger's values rescaled (exact in the scale model, where the swapped
        ratios and so the bounds scale with the data)."""
        ratio, k = self.f.ratio, self.boundary(delta)
        if self.up:
            bound = self.f.lower(level)
            if bound <= 0:
                return math.inf
            return max(0.0, self.p_.g(k * ratio / bound) - 1.0)
        bound = self.f.upper(level)
        if not 0 < bound < math.inf:
            return 1.0
        return max(0.0, 1.0 - self.p_.g(k * ratio / bound))


def _canonical(members: list[_Paired]) -> None:
    """Put every member in one sample order: by id, else by the values themselves, so the
    answer does not depend on the order the samples came in, and symmetric in the two runs
    (swapping champion and challenger mirrors the answer exactly)."""
    if members[0].ids_key is None:
        keys: list[_Array] = []
        for p in sorted(members, key=lambda m: m.comp.metric, reverse=True):
            keys += [np.abs(p.c - p.b), p.c + p.b]
        order = np.lexsort(keys)
    else:  # already in sample-id order
        order = np.arange(members[0].n)
    for p in members:
        p.b, p.c = p.b[order], p.c[order]
        p.reaggregate()  # sums in the canonical order: the same bits for any input order


def _family(members: list[_Paired], rs: Resampling, groups: int, rule: Rule,
            confidence: float, margin: float, size: int = 1) -> list[Evidence]:
    """Decide every member of one family (same samples): min-P across them for condition 2."""
    n = members[0].n
    _canonical(members)
    x = np.empty((n, 2 * len(members)))
    for j, p in enumerate(members):
        x[:, 2 * j], x[:, 2 * j + 1] = p.c, p.b
    sums = rs.subset_sums_by_column(n, x)  # (2 members, rows): c then b sums per member
    alpha = 1.0 - confidence
    # studentized "worse at all" statistic of every member under every swap pattern:
    # swapping moves sum(d) to sum(d) - 2 * (swapped part of d), d = sign * (c - b)
    sign = np.array([p.ratio_worse for p in members], dtype=float)[:, None]
    diffs = x[:, 0::2] - x[:, 1::2]
    norms = np.sqrt(np.einsum("ij,ij->j", diffs, diffs))
    same = norms == 0.0  # identical runs: no statistic, p = 1
    safe = np.where(same, 1.0, norms)[:, None]
    totals = sign * diffs.sum(axis=0)[:, None]
    # = (totals - 2 * sign * (c sums - b sums)) / safe, in place: the same bits, without
    # four temporaries of (members, rows) (160 ms of 1,000 members x 4,096 rows)
    stats_rows = np.subtract(sums[0::2], sums[1::2])
    stats_rows *= -2.0 * sign
    stats_rows += totals
    stats_rows /= safe
    stats_rows[same] = -math.inf
    p_adj, level_j = _min_p(stats_rows, same, alpha / groups)
    p_adj = np.minimum(1.0, groups * p_adj)
    out = []
    for j, p in enumerate(members):
        flips = _Flips(p, rs, (sums[2 * j], sums[2 * j + 1]))
        worse_side = _Sided(p, flips, toward="worse")
        p_margin = worse_side.p(margin * p.comp.tolerance)
        comp = p.comp
        worse = -p.change if comp.higher_is_better else p.change
        past = threshold_regressed(p.agg_c, p.agg_b, higher_is_better=comp.higher_is_better,
                                   tolerance=comp.tolerance if rule != "significant" else 0.0,
                                   abs_tolerance=comp.abs_tolerance)
        regressed = _decide(rule, past, bool(p_adj[j] <= alpha), p_margin <= MARGIN_LEVEL)
        r_abs = comp.abs_tolerance / abs(p.agg_b)
        r1 = max(comp.tolerance, r_abs)
        r2 = worse_side.detect(level_j, 0.0) if level_j > 0 else math.inf
        r3 = worse_side.detect(MARGIN_LEVEL, margin * comp.tolerance)
        detectable = {"threshold": r1, "significant": max(r_abs, r2),
                      "confident": max(r1, r2, r3)}[rule]
        lo, hi = flips.change_interval(confidence)
        what = f"{n} samples" + (" (every swap enumerated)" if rs.exact(n) else "")
        out.append(_record("paired-sign-flip", p.change, (lo, hi), float(p_adj[j]), p_margin, n,
                           detectable, rs.seed, regressed, rule, comp.tolerance, margin,
                           confidence, size,
                           worse, past, what=what, more="samples"))
    return out


def _min_p(stats_rows: _Array, same: npt.NDArray[np.bool_], level: float
           ) -> tuple[_Array, float]:
    """Westfall-Young single-step min-P over one family: adjusted p-values, and the per-metric
    level that the adjustment leaves (the same for every member).

    ``stats_rows`` (members, rows): each member's statistic under every swap pattern, row 0
    observed.  Each member's statistics become its own swap p-values first, so members with
    differently shaped null distributions (a few dominant samples against many similar
    ones) weigh alike; a max over the raw statistics lets the smooth ones drown the rest.
    Only the tail that can be rejected (own p-values <= ``level``) is ranked, so the cost is
    linear in the rows: there the adjusted p-values and the decision are exact; above it
    an adjusted p-value is the own one times the family's effective number of tests
    (``level`` over the per-metric level), which only describes it.
    """
    members, rows = stats_rows.shape
    slack = 1e-12 * np.abs(stats_rows[:, :1])
    own = np.where(same, 1.0, np.count_nonzero(stats_rows >= stats_rows[:, :1] - slack,
                                               axis=1) / rows)
    allowed = _max_count(level, rows)
    if members == 1 or allowed == 0:
        factor = 1.0 if members == 1 else float(members)
        return np.minimum(1.0, own * factor), (level if members == 1 else 0.0)
    # each member's rows whose own p-value can be <= level: its `allowed` largest, with ties
    kth = rows - allowed
    edge = np.partition(stats_rows, kth, axis=1)[:, kth]
    tail = (stats_rows >= (edge - 1e-12 * np.abs(edge))[:, None]) & ~same[:, None]
    member, row = np.nonzero(tail)
    if member.size == 0:  # every member identical to the champion: nothing to reject
        return own, 0.0
    values = stats_rows[member, row]
    order = np.lexsort((-values, member))  # by member, largest first
    member, row, values = member[order], row[order], values[order]
    start = np.r_[0, np.flatnonzero(np.diff(member)) + 1]
    first = np.zeros(member.size, dtype=np.int64)
    first[start] = start
    position = np.arange(member.size)
    # own p of an entry: how many of its member's rows are >= it (ties count together)
    tie_end = position.copy()
    newer = np.r_[np.abs(np.diff(values)) > 1e-12 * np.abs(values[1:]), True]
    newer[np.r_[start[1:] - 1, member.size - 1]] = True  # a member's last entry ends a run
    ends = np.flatnonzero(newer)
    tie_end = ends[np.searchsorted(ends, position)]
    group_start = np.maximum.accumulate(first)
    own_tail = (tie_end - group_start + 1) / rows
    keep = own_tail <= level * (1 + 1e-12)
    smallest = np.full(rows, np.inf)
    np.minimum.at(smallest, row[keep], own_tail[keep])
    smallest = np.sort(smallest)
    per_metric = 0.0
    for k in range(allowed, 0, -1):  # the largest own p-value still rejected
        candidate = float(smallest[k - 1])
        if math.isfinite(candidate) and np.searchsorted(
                smallest, candidate * (1 + 1e-12), side="right") <= allowed:
            per_metric = candidate
            break
    exact = np.searchsorted(smallest, own * (1 + 1e-12), side="right") / rows
    scale = level / per_metric if per_metric > 0 else float(members)
    adjusted = np.where(own <= level * (1 + 1e-12), exact, np.minimum(1.0, own * scale))
    return np.maximum(adjusted, own), per_metric


# ---------------------------------------------------------------------------------------
# the rule and the record


def _decide(rule: Rule, past: bool, worse_at_all: bool, past_margin: bool) -> bool:
    """The single place the rules are defined (conditions 1, 2, 3 of the module docstring)."""
    if rule == "threshold":
        return past
    if rule == "significant":
        return past and worse_at_all
    return past and worse_at_all and past_margin


def _record(method: str, change: float, ci: tuple[float, float], p_value: float,
            p_margin: float, n: int, detectable: float, seed: int | None, regressed: bool,
            rule: Rule, threshold: float, margin: float, confidence: float, adjusted: int,
            worse: float, past: bool, *, what: str, more: str) -> Evidence:
    lo, hi = ci
    alpha = 1.0 - confidence
    adj = f", adjusted for {adjusted} metrics" if adjusted > 1 else ""
    tol, floor = _pct(threshold), _pct(margin * threshold)
    if regressed:
        reason = {"threshold": f"fails: worse than the {tol} tolerance",
                  "significant": f"fails: the regression is supported (p={p_value:.2g}{adj})",
                  "confident": f"fails: past the {tol} tolerance, supported worse "
                               f"(p={p_value:.2g}{adj}) and worse by more than {floor} "
                               f"(p={p_margin:.2g})"}[rule]
    elif not past:
        reason = (f"passes: within the {tol} tolerance" if rule != "significant"
                  else "passes: within the absolute tolerance")
    elif p_value > alpha:
        reason = (f"passes: past the tolerance but not supported worse (p={p_value:.2g}"
                  f"{adj} > {alpha:g}; more {more} would decide)")
    else:
        reason = (f"passes: past the {tol} tolerance but not surely more than {floor} worse "
                  f"(p={p_margin:.2g} > {MARGIN_LEVEL:g}; more {more} would decide)")
    note = (f"with {what}, changes under {_pct(detectable)} cannot be told from noise (the "
            f"gate catches them less than half the time); {_describe(worse)} "
            f"({_pct(confidence)} CI {_signed(lo)} to {_signed(hi)}), so the gate {reason}")
    return Evidence(method=method, change=change, ci_low=lo, ci_high=hi,
                    p_value=min(1.0, max(0.0, p_value)), n=n, detectable=detectable,
                    seed=seed, regressed=bool(regressed), note=note, confidence=confidence,
                    p_margin=min(1.0, max(0.0, p_margin)), adjusted_for=adjusted, rule=rule,
                    question="regression", supported=bool(regressed))


# ---------------------------------------------------------------------------------------
# formatting


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _pct(x: float) -> str:
    if math.isinf(x):
        return "inf %"
    v = 100.0 * x
    return f"{v:.0f} %" if abs(v) >= 10 or v == round(v) else f"{v:.1f} %"


def _signed(x: float) -> str:
    if math.isinf(x):
        return "+inf %" if x > 0 else "-inf %"
    return f"{100.0 * x:+.1f} %"


def _abs_change(x: float) -> str:
    return f"{x:+.6g}"


def _describe(worse: float) -> str:
    if worse == 0.0:
        return "current is unchanged"
    return f"current is {_pct(abs(worse))} {'worse' if worse > 0 else 'better'}"


# ---------------------------------------------------------------------------------------
# input checks and pairing


def _check_threshold(threshold: float) -> None:
    if not (math.isfinite(threshold) and threshold >= 0.0):
        raise ValueError(f"threshold must be a finite relative tolerance >= 0, got {threshold!r}")


def _check_options(rule: str, confidence: float, margin: float) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    if not (math.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"margin must be a finite fraction >= 0, got {margin!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")


def _finite_1d(values: npt.ArrayLike, name: str) -> _Array:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.flatnonzero(bad)
        raise ValueError(f"{name} has {where.size} non-finite value(s) (NaN or inf), "
                         f"first at index {int(where[0])}")
    return arr


def _ids_key(ids: npt.ArrayLike) -> bytes:
    arr = np.sort(np.asarray(ids))
    return str(arr.dtype).encode() + b":" + (arr.tobytes() if arr.dtype.kind != "O"
                                            else repr(arr.tolist()).encode())


def _pair(b: _Array, c: _Array, baseline_ids: npt.ArrayLike | None,
          current_ids: npt.ArrayLike | None) -> tuple[_Array, _Array]:
    """Match samples by id (both reordered by id), or check the lengths when there are none."""
    if baseline_ids is None and current_ids is None:
        if b.size != c.size:
            raise SampleMismatch(f"baseline has {b.size} samples and current {c.size}, "
                                 "and no sample ids were given to pair them")
        return b, c
    if baseline_ids is None or current_ids is None:
        raise ValueError("give both baseline_ids and current_ids, or neither")
    bid, cid = np.asarray(baseline_ids), np.asarray(current_ids)
    for name, ids, vals in (("baseline", bid, b), ("current", cid, c)):
        if ids.ndim != 1 or ids.size != vals.size:
            raise ValueError(f"{name}_ids has {ids.size} entries for {vals.size} values")
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != ids.size:
            dup = uniq[counts > 1]
            raise SampleMismatch(f"{name}_ids repeat {dup.size} id(s), e.g. {_few(dup)}: "
                                 "samples cannot be paired")
    if _is_text(bid) != _is_text(cid):
        raise SampleMismatch(f"baseline ids are {bid.dtype} and current ids {cid.dtype}: "
                             "they never match")
    ob, oc = np.argsort(bid, kind="stable"), np.argsort(cid, kind="stable")
    if bid.size != cid.size or not np.array_equal(bid[ob], cid[oc]):
        missing = np.setdiff1d(bid, cid)
        extra = np.setdiff1d(cid, bid)
        parts = [f"baseline has {bid.size} samples and current {cid.size}"]
        if missing.size:
            parts.append(f"{missing.size} baseline id(s) missing from current, "
                         f"e.g. {_few(missing)}")
        if extra.size:
            parts.append(f"{extra.size} current id(s) not in baseline, e.g. {_few(extra)}")
        raise SampleMismatch("; ".join(parts))
    return b[ob], c[oc]


def _is_text(ids: npt.NDArray[np.generic]) -> bool:
    return ids.dtype.kind in "USO"


def _few(ids: npt.NDArray[np.generic], k: int = 5) -> str:
    shown = ", ".join(repr(v) for v in ids[:k].tolist())
    return shown + (", ..." if ids.size > k else "")
