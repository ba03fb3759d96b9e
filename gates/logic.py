"""Pure gate logic: values and a policy in, an :class:`Outcome` out.

No pytest, no W&B, no file I/O: everything here is tested directly and by properties.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from gates.model import Kind, Outcome, Status
from gates.policy import Policy

#: Relative slack at every limit: 0.33 against 0.3 at 10 % is at the limit, not past it.
BOUNDARY_EPS = 1e-9


def gate_id(kind: str, metric: str, check: str | None = None) -> str:
    return f"{kind}/{metric}" + (f"/{check}" if check else "")


def relative_change(current: float, baseline: float) -> float:
    """(current - baseline) / |baseline|; +/-inf when the baseline is zero and they differ."""
    if baseline == 0:
        return 0.0 if current == 0 else math.copysign(math.inf, current)
    return (current - baseline) / abs(baseline)


def _pct(value: float) -> float:
    return round(100.0 * value, 6) if math.isfinite(value) else value


def not_finite(kind: str, metric: str, current: float, baseline: float | None,
               check: str | None = None) -> Outcome:
    return Outcome(gate_id(kind, metric, check), kind, metric, Status.FAIL, current, baseline,
                   message=f"{metric} is {current}: a non-finite value never passes")


def missing_metric(kind: str, metric: str, baseline: float | None, where: str,
                   check: str | None = None) -> Outcome:
    why = ("the champion has it" if baseline is not None
           else "the suite policy requires it")
    return Outcome(gate_id(kind, metric, check), kind, metric, Status.FAIL, None, baseline,
                   message=f"{metric} is missing from the {where}; {why} (mark it optional "
                           "in the suite policy if that is intended)")


def regression(metric: str, current: float | None, baseline: float | None, policy: Policy,
               *, strict: bool = False, evidence: Mapping[str, Any] | None = None,
               regressed: bool | None = None) -> Outcome:
    """Fail when worse than the baseline by more than the tolerance (relative).

    ``regressed`` lets a noise-aware rule (``gates.evidence``) overrule the fixed
    threshold; its evidence is carried in the outcome either way.
    """
    kind = Kind.REGRESSION
    gid = gate_id(kind, metric)
    tol = policy.tolerance_for(metric)
    threshold = _pct(tol)
    if current is None:
        return missing_metric(kind, metric, baseline, "report")
    if not math.isfinite(current):
        return not_finite(kind, metric, current, baseline)
    if baseline is None:
        return no_baseline(gid, kind, metric, current, strict, threshold)
    direction = policy.direction(metric)
    change = relative_change(current, baseline)
    # Limits are computed on the baseline's scale, so a value exactly at the limit
    # (1.1 against 1.0 at 10 %) passes: the boundary is exact, not a float accident.
    sign = 1.0 if direction == "lower" else -1.0
    slack = BOUNDARY_EPS * abs(baseline)
    limit = baseline + sign * max(tol * abs(baseline), policy.abs_tolerance)
    by_threshold = sign * (current - limit) > slack
    # beyond hard_limit x tolerance no amount of noise excuses it (one diverged sample)
    hard = baseline + sign * max(policy.hard_limit * tol * abs(baseline), policy.abs_tolerance)
    past_hard = sign * (current - hard) > slack
    failed = by_threshold if regressed is None else (regressed or past_hard)
    better = baseline - sign * max(policy.improvement * abs(baseline), policy.abs_tolerance)
    improved = sign * (better - current) > slack and not failed
    ev = {"direction": direction, **(evidence or {})}
    if failed:
        status, verb = Status.FAIL, "regressed"
        if past_hard and regressed is not None and not regressed:
            verb = f"regressed past {policy.hard_limit:g} x the tolerance, whatever the noise"
    elif improved:
        status, verb = Status.IMPROVED, "improved"
    elif by_threshold:
        status, verb = Status.PASS, "past the tolerance but not supported by the evidence"
    else:
        status, verb = Status.PASS, "within tolerance"
    arrow = f"{baseline:.6g} -> {current:.6g} ({_pct(change):+.1f}%)"
    message = f"{metric} {verb}: {arrow}; allowed {tol:.0%} worse ({direction} is better)"
    if ev.get("note"):
        message += f"; {ev['note']}"
    return Outcome(gid, kind, metric, status, current, baseline, _pct(change), threshold,
                   message, ev)


def no_baseline(gid: str, kind: str, metric: str, current: float | None, strict: bool,
                threshold: float | None) -> Outcome:
    status = Status.FAIL if strict else Status.NO_BASELINE
    note = " (--strict: no_baseline fails)" if strict else ""
    return Outcome(gid, kind, metric, status, current, None, None, threshold,
                   f"{metric}: no champion value to compare with{note}")


def ceiling(metric: str, current: float | None, limit: float) -> Outcome:
    """Absolute physics ceiling: the value may not exceed ``limit``."""
    kind = Kind.PHYSICS
    if current is None:
        return missing_metric(kind, metric, None, "report", "ceiling")
    if not math.isfinite(current):
        return not_finite(kind, metric, current, None, "ceiling")
    ok = current <= limit
    return Outcome(gate_id(kind, metric, "ceiling"), kind, metric,
                   Status.PASS if ok else Status.FAIL, current, None, None, limit,
                   f"{metric} = {current:.6g} {'<=' if ok else '>'} ceiling {limit:g}")


def spike(metric: str, current: float | None, champion: float | None, factor: float,
          policy: Policy, *, strict: bool = False) -> Outcome:
    """The value may not jump past ``factor`` times the champion's value."""
    kind = Kind.PHYSICS
    gid = gate_id(kind, metric, "spike")
    if current is None:
        return missing_metric(kind, metric, champion, "report", "spike")
    if not math.isfinite(current):
        return not_finite(kind, metric, current, champion, "spike")
    if champion is None:
        return no_baseline(gid, kind, metric, current, strict, None)
    limit = factor * champion + policy.abs_tolerance
    ok = current <= limit
    change = relative_change(current, champion)
    return Outcome(gid, kind, metric, Status.PASS if ok else Status.FAIL, current, champion,
                   _pct(change), limit,
                   f"{metric} = {current:.6g} {'<=' if ok else '>'} {factor:g} x champion "
                   f"{champion:.6g}")


def promotion(current: Mapping[str, float], champion: Mapping[str, float] | None,
              others: Iterable[Outcome], policy: Policy, *, strict: bool = False) -> Outcome:
    """May this challenger replace the champion?"""
    kind = Kind.PROMOTION
    metric = policy.primary_metric
    gid = gate_id(kind, metric)
    threshold = _pct(policy.min_improvement_rel)
    value = current.get(metric)
    if value is None:
        return missing_metric(kind, metric, (champion or {}).get(metric), "report")
    if not math.isfinite(value):
        return not_finite(kind, metric, value, (champion or {}).get(metric))
    blocking = [o for o in others if o.kind in (Kind.REGRESSION, Kind.PHYSICS) and not o.passed]
    reasons = [f"{o.id} {o.status}" for o in blocking]
    if champion is None:
        if reasons:
            return Outcome(gid, kind, metric, Status.FAIL, value, None, None, threshold,
                           "not promotable: " + "; ".join(reasons))
        return no_baseline(gid, kind, metric, value, strict, threshold)
    base = champion.get(metric)
    if base is None:
        return Outcome(gid, kind, metric, Status.FAIL, value, None, None, threshold,
                       f"the champion has no {metric}: cannot judge promotion")
    direction = policy.direction(metric) or "lower"
    change = relative_change(value, base)
    gain_rel = -change if direction == "lower" else change
    gain_abs = (base - value) if direction == "lower" else (value - base)
    if gain_rel < policy.min_improvement_rel:
        reasons.insert(0, f"{metric} improves {_pct(gain_rel):.2f}% < required "
                          f"{threshold:g}%")
    if policy.min_improvement_abs > 0 and gain_abs < policy.min_improvement_abs:
        reasons.insert(0, f"{metric} improves by {gain_abs:.6g} < required "
                          f"{policy.min_improvement_abs:g}")
    for name, cur in sorted(current.items()):
        if (policy.is_physics(name) and name in champion and math.isfinite(cur)
                and cur > champion[name] + policy.abs_tolerance):
            reasons.append(f"physics metric {name} worse than the champion "
                           f"({champion[name]:.6g} -> {cur:.6g})")
    if reasons:
        return Outcome(gid, kind, metric, Status.FAIL, value, base, _pct(change), threshold,
                       "not promotable: " + "; ".join(reasons))
    return Outcome(gid, kind, metric, Status.PASS, value, base, _pct(change), threshold,
                   f"promotable: {metric} {base:.6g} -> {value:.6g} ({_pct(change):+.2f}%), "
                   "every regression and physics gate passes")
