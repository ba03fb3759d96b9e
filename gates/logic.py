"""Pure gate logic: values, evidence and a policy in, an :class:`Outcome` out.

No pytest, no W&B, no file I/O: everything here is tested directly and by properties. Each
rule is decided by one function here; :func:`verdict` is the only place a session's verdict
is derived from its outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gates.evidence import relative_change, threshold_regressed
from gates.model import Kind, Outcome, Status
from gates.policy import Policy

__all__ = ["relative_change"]  # re-exported: the one definition lives in gates.evidence

#: Relative slack at every limit: 0.33 against 0.3 at 10 % is at the limit, not past it.
BOUNDARY_EPS = 1e-9
#: Statuses that make the verdict ``error`` rather than ``fail``: no gate can be trusted.
UNTRUSTED = frozenset({Status.ERROR, Status.INCOMPARABLE})


def gate_id(kind: str, metric: str, check: str | None = None) -> str:
    return f"{kind}/{metric}" + (f"/{check}" if check else "")


def pct(value: float) -> float:
    return round(100.0 * value, 6) if math.isfinite(value) else value


def describe_change(change: float, direction: str | None) -> str:
    """"is 0.4 % worse" / "improves by 25.0 %" / "moved by +3.0 %" (direction unknown)."""
    if not math.isfinite(change):
        size = "an unbounded amount (the champion's value is 0)"
    else:
        size = f"{abs(100 * change):.1f} %"
    if direction is None:
        return f"moved by {'+' if change >= 0 else '-'}{size}"
    worse = change > 0 if direction == "lower" else change < 0
    if change == 0:
        return "is unchanged"
    return f"is {size} worse" if worse else f"improves by {size}"


def apply_severity(outcome: Outcome, policy: Policy) -> Outcome:
    """A failing gate whose severity is ``warn`` is reported as ``warn`` and does not fail."""
    severity = policy.severity(outcome.kind, outcome.metric)
    # NaN, a missing value or a strict no_baseline is bad data, not a tolerated change:
    # only a threshold or evidence failure of a built-in gate can be softened
    hard = outcome.kind != Kind.CUSTOM and (
        outcome.current is None or not math.isfinite(outcome.current)
        or (outcome.baseline is None and not outcome.id.endswith("/ceiling")))
    if severity == "warn" and outcome.status in (Status.FAIL, Status.CHANGED) and not hard:
        return replace(outcome, status=Status.WARN, severity="warn",
                       message=f"warn ({outcome.status} at severity warn): {outcome.message}")
    return replace(outcome, severity=severity) if severity != outcome.severity else outcome


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


def no_baseline(gid: str, kind: str, metric: str, current: float | None, strict: bool,
                threshold: float | None) -> Outcome:
    status = Status.FAIL if strict else Status.NO_BASELINE
    note = " (--gates-strict: no_baseline fails)" if strict else ""
    return Outcome(gid, kind, metric, status, current, None, None, threshold,
                   f"{metric}: no champion value to compare with{note}")


def regression(metric: str, current: float | None, baseline: float | None, policy: Policy,
               *, strict: bool = False, evidence: Mapping[str, Any] | None = None,
               regressed: bool | None = None) -> Outcome:
    """Fail when worse than the champion by more than the tolerance (relative, after
    ``abs_tolerance``); ``changed`` when the direction is unknown and it moved that much
    either way; ``improved`` when better by more than the improvement margin.

    ``regressed`` is the noise-aware rule's decision (``gates.evidence``); None means the
    fixed threshold decides. The evidence is carried in the outcome either way.
    """
    kind = Kind.REGRESSION
    gid = gate_id(kind, metric)
    tol = policy.tolerance_for(metric)
    threshold = pct(tol)
    if current is None:
        return missing_metric(kind, metric, baseline, "report")
    if not math.isfinite(current):
        return not_finite(kind, metric, current, baseline)
    if baseline is None:
        return no_baseline(gid, kind, metric, current, strict, threshold)
    direction = policy.direction(metric)
    change = relative_change(current, baseline)
    # Limits are on the baseline's scale, so a value exactly at the limit (1.1 against 1.0
    # at 10 %) passes: the boundary is exact, not a float accident.
    allowed = max(tol * abs(baseline), policy.abs_tolerance)
    slack = BOUNDARY_EPS * abs(baseline)
    ev = {"direction": direction or "unknown", **(evidence or {})}
    arrow = f"{baseline:.6g} -> {current:.6g}"
    if direction is None:
        moved = abs(current - baseline) - allowed > slack
        status = Status.CHANGED if moved else Status.PASS
        verb = describe_change(change, None)
        hint = ("; its direction is unknown: declare it in the policy's higher_is_better or "
                "lower_is_better, or list it in metrics.ignore") if moved else ""
        return Outcome(gid, kind, metric, status, current, baseline, pct(change), threshold,
                       f"{metric} {verb}: {arrow}; allowed {tol:.0%} either way{hint}", ev)
    sign = 1.0 if direction == "lower" else -1.0
    by_threshold = threshold_regressed(current, baseline, higher_is_better=direction == "higher",
                                       tolerance=tol, abs_tolerance=policy.abs_tolerance)
    failed = by_threshold if regressed is None else (regressed and by_threshold)
    better = max(policy.improvement * abs(baseline), policy.abs_tolerance)
    improved = sign * (baseline - current) - better > slack and not failed
    if failed:
        status = Status.FAIL
    elif improved:
        status = Status.IMPROVED
    else:
        status = Status.PASS
    verb = describe_change(change, direction)
    qualifier = ""
    if by_threshold and not failed:
        qualifier = " (past the tolerance, but the evidence does not support a regression)"
    message = (f"{metric} {verb}: {arrow}{qualifier}; allowed {tol:.0%} worse "
               f"({direction} is better)")
    if ev.get("note"):
        message += f"; {ev['note']}"
    return Outcome(gid, kind, metric, status, current, baseline, pct(change), threshold,
                   message, ev)


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
          policy: Policy, *, strict: bool = False, regressed: bool | None = None,
          evidence: Mapping[str, Any] | None = None) -> Outcome:
    """The value may not jump past ``factor`` times the champion's value; with per-sample
    evidence (``regressed``, the noise-aware rule at tolerance ``factor - 1``) the jump must
    also be supported, so a rerun's noise does not trip it."""
    kind = Kind.PHYSICS
    gid = gate_id(kind, metric, "spike")
    if current is None:
        return missing_metric(kind, metric, champion, "report", "spike")
    if not math.isfinite(current):
        return not_finite(kind, metric, current, champion, "spike")
    if champion is None:
        return no_baseline(gid, kind, metric, current, strict, None)
    limit = factor * champion + policy.abs_tolerance
    past = current > limit
    ok = not past or regressed is False
    change = relative_change(current, champion)
    said = f"{metric} = {current:.6g} {'>' if past else '<='} {factor:g} x champion " \
        f"{champion:.6g}"
    if past and ok:
        said += " (past it, but the per-sample evidence does not support the jump)"
    return Outcome(gid, kind, metric, Status.PASS if ok else Status.FAIL, current, champion,
                   pct(change), limit, said, dict(evidence or {}))


def comparability(current_extra: Mapping[str, Any], champion_extra: Mapping[str, Any],
                  keys: Iterable[str], *, extra_pairs: Mapping[str, tuple[Any, Any]] = {}
                  ) -> list[Outcome]:
    """``incomparable`` for each key both sides state with different values.

    ``extra_pairs`` carries facts that are not report keys (field arrays' spatial shape,
    field-metric definitions): name -> (challenger's, champion's), None where unknown.
    """
    pairs = {k: (current_extra.get(k), champion_extra.get(k)) for k in keys}
    pairs.update(extra_pairs)
    found = []
    checked = []
    for key, (ours, theirs) in pairs.items():
        if ours is None or theirs is None:
            continue
        if _same(ours, theirs):
            checked.append(f"{key}={ours!r}")
            continue
        found.append(Outcome(
            gate_id(Kind.COMPARABILITY, key), Kind.COMPARABILITY, key, Status.INCOMPARABLE,
            message=f"incomparable: {key} is {ours!r} in this evaluation but {theirs!r} in "
                    "the champion; gate against a champion measured the same way (or another "
                    "suite)"))
    if found:
        return found
    said = ", ".join(checked) if checked else "neither states any of the comparability keys"
    return [Outcome(gate_id(Kind.COMPARABILITY, "conditions"), Kind.COMPARABILITY,
                    "conditions", Status.PASS,
                    message=f"champion and challenger were evaluated alike ({said})")]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return str(a) == str(b)


def promotion(current: Mapping[str, float], champion: Mapping[str, float] | None,
              others: Iterable[Outcome], policy: Policy, *,
              improvement_supported: bool | None = None,
              worse_supported: Mapping[str, bool] | None = None,
              evidence: Mapping[str, Any] | None = None) -> Outcome:
    """May this challenger replace the champion? ``promotable`` or ``not_promotable``.

    The primary metric must improve by the policy's minimum (relative and/or absolute) and,
    when the noise-aware rule could judge it, ``improvement_supported`` must hold; no
    physics metric may be worse than the champion's (``worse_supported`` overrides the
    point comparison per metric where evidence exists); each ``max_ratio`` metric present
    on both sides stays within its ratio; every regression and physics gate passes.
    """
    kind = Kind.PROMOTION
    metric, direction = policy.primary()
    gid = gate_id(kind, metric)
    threshold = pct(policy.min_improvement_rel)
    ev = dict(evidence or {})
    reasons = [f"{o.id} is {o.status}" for o in others
               if o.kind in (Kind.REGRESSION, Kind.PHYSICS, Kind.COMPARABILITY)
               and not o.passed]
    value = current.get(metric)
    base = champion.get(metric) if champion is not None else None

    def answer(ok: bool, change: float | None, text: str) -> Outcome:
        ev["reasons"] = list(reasons)
        status = Status.PROMOTABLE if ok else Status.NOT_PROMOTABLE
        return Outcome(gid, kind, metric, status, value, base,
                       None if change is None else pct(change), threshold, text, ev)

    if value is None or not math.isfinite(value):
        reasons.insert(0, f"{metric} is {'missing from the report' if value is None else value}")
        return answer(False, None, "not promotable: " + "; ".join(reasons))
    if champion is None:
        if reasons:
            return answer(False, None, "not promotable: " + "; ".join(reasons))
        return answer(True, None, "promotable: no champion yet, this run would be the first")
    if base is None:
        reasons.insert(0, f"the champion has no {metric}: cannot judge promotion")
        return answer(False, None, "not promotable: " + "; ".join(reasons))
    change = relative_change(value, base)
    gain_rel = -change if direction == "lower" else change
    gain_abs = (base - value) if direction == "lower" else (value - base)
    said = describe_change(change, direction)
    if policy.min_improvement_rel > 0 and gain_rel < policy.min_improvement_rel - BOUNDARY_EPS:
        reasons.insert(0, f"{metric} {said}; at least {policy.min_improvement_rel:.1%} better "
                          "is required")
    if policy.min_improvement_abs > 0 and \
            gain_abs < policy.min_improvement_abs * (1 - BOUNDARY_EPS):
        reasons.insert(0, f"{metric} {said} ({gain_abs:+.6g}); an improvement of at least "
                          f"{policy.min_improvement_abs:g} is required")
    if improvement_supported is False and gain_rel > 0:
        reasons.append(f"{metric}'s improvement is not supported by the per-sample evidence "
                       f"at {policy.confidence:.0%} confidence")
    for name, cur in sorted(current.items()):
        if not policy.physics_no_worse or not policy.is_physics(name) \
                or name in policy.ignore or name not in champion:
            continue
        worse = cur > champion[name] + policy.abs_tolerance
        if worse_supported is not None and name in worse_supported:
            worse = worse_supported[name]
        if worse:
            reasons.append(f"physics metric {name} is worse than the champion's "
                           f"({champion[name]:.6g} -> {cur:.6g})")
    for name, ratio in sorted(policy.max_ratio.items()):
        now, old = current.get(name), champion.get(name)
        if now is None or old is None or name in policy.ignore:
            continue  # a missing metric skips its ratio gate, as the orchestrator does
        if now > ratio * old + policy.abs_tolerance:
            reasons.append(f"{name} {old:.6g} -> {now:.6g} exceeds {ratio:g} x the champion's")
    if reasons:
        return answer(False, change, "not promotable: " + "; ".join(reasons))
    warned = [o.id for o in others if o.status == Status.WARN]
    also = f" ({len(warned)} at severity warn: {', '.join(warned[:3])})" if warned else ""
    return answer(True, change, f"promotable: {metric} {said} ({base:.6g} -> {value:.6g}); "
                                f"no regression or physics gate failed{also}")


def verdict(outcomes: Sequence[Outcome]) -> str:
    """``error`` when input was bad or the champion incomparable, ``fail`` when a regression,
    physics or custom gate failed, else ``pass``. Promotion never decides it."""
    if any(o.status in UNTRUSTED or o.kind == Kind.INPUT for o in outcomes):
        return "error"
    failed = any(not o.passed for o in outcomes if o.kind != Kind.PROMOTION)
    return "fail" if failed or not outcomes else "pass"
