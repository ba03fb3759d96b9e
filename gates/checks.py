"""What the checks and the custom-gate fixtures call, and the per-test hooks that put
every outcome on its test report.

A built-in check (``gates/test_*.py``) is parametrized with its planned outcome and calls
:func:`enforce`; a custom gate records its own through :func:`record` (``gate_check``,
``gate_regression``). :class:`ReportHooks`, registered by ``gates.plugin`` when a session
becomes a gate session, carries both on the test reports to the controller.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gates.model import Kind, Outcome, Status
from gates.plugin import GATE_FIXTURES, PACKAGE_DIR, REPORT_ATTR, _session

if TYPE_CHECKING:
    from gates.plan import Plan
    from gates.plugin import GateSession

OUTCOMES = pytest.StashKey[list[Outcome]]()  # a test item's custom outcomes


def item_id(node: pytest.Item) -> str:
    """A test item's node id, unique per item (a file outside the rootdir keeps its name)."""
    nodeid = node.nodeid
    return f"{node.path.name}{nodeid}" if nodeid.startswith("::") else nodeid


def planned_outcome(item: pytest.Item) -> Outcome | None:
    """The outcome a built-in check (``gates/test_*.py``) was parametrized with; a test of
    the user's that takes ``regression_gate`` records only what it records itself."""
    params = getattr(getattr(item, "callspec", None), "params", None)
    if params and _in_package(item.path.parent):
        for name in GATE_FIXTURES:
            if name in params:
                return params[name]  # type: ignore[no-any-return]
    return None


@functools.cache
def _in_package(folder: Path) -> bool:
    """Is ``folder`` the package's own (resolved once per folder: pytest keeps a path
    through a symbolic link as given)?"""
    return folder.resolve() == PACKAGE_DIR


def junit_properties(outcome: Outcome) -> list[tuple[str, str]]:
    """A gate's readable values for pytest's ``--junitxml`` (``gate.*`` properties)."""
    return [(f"gate.{key}", str(value)) for key in
            ("status", "current", "baseline", "change_pct", "threshold")
            if (value := getattr(outcome, key)) is not None]


def enforce(outcome: Outcome, *, required: bool = False) -> None:
    """Fail the running test when its gate failed; "not promotable" fails only when
    promotion is ``required``. What every check's body calls."""
    if outcome.kind == Kind.PROMOTION and outcome.status == Status.NOT_PROMOTABLE:
        if required:
            pytest.fail(f"{outcome.id}: not promotable and promotion is required: "
                        f"{outcome.message}", pytrace=False)
        return
    if not outcome.passed:
        from gates.sinks.local import evidence_text

        extra = evidence_text(outcome)
        pytest.fail(f"{outcome.id}: {outcome.status}: {outcome.message}"
                    + (f" [{extra}]" if extra else ""), pytrace=False)


def record(item: pytest.Item, outcome: Outcome) -> Outcome:
    """Attach a custom gate's outcome to the running test (and its readable values to
    JUnit), then fail the test if the gate failed."""
    plan = _session(item.config).plan
    if plan is not None and outcome.kind == Kind.CUSTOM:
        from gates.logic import apply_severity

        outcome = apply_severity(outcome, plan.policy)  # [severity] custom = "warn"
    _session(item.config).report_outcomes()
    item.stash.setdefault(OUTCOMES, []).append(outcome)
    item.user_properties.extend(junit_properties(outcome))  # type: ignore[attr-defined]
    enforce(outcome, required=plan is not None and plan.promotion_required)
    return outcome


def custom_check(node: pytest.Item) -> Callable[..., Outcome]:
    """``gate_check``'s callable for one test item."""

    def check(outcome: Outcome | None = None, *, metric: str = "", passed: bool = True,
              kind: str = Kind.CUSTOM, **values: Any) -> Outcome:
        if outcome is None:
            outcome = Outcome(id=f"{kind}/{item_id(node)}" + (f"/{metric}" if metric else ""),
                              kind=kind, metric=metric or node.name,
                              status=Status.PASS if passed else Status.FAIL, **values)
        return record(node, outcome)

    return check


class RegressionCheck:
    """``gate_regression.check(metric, current, baseline=None, samples=None)``: the built-in
    comparison (direction, tolerance, noise-aware rule, ``no_baseline``) for a value the
    user computes, recorded like a built-in gate."""

    def __init__(self, node: pytest.Item, plan: Plan) -> None:
        self._node, self._plan = node, plan

    def check(self, metric: str, current: float, *, baseline: float | None = None,
              samples: Any = None, baseline_samples: Any = None) -> Outcome:
        import numpy as np

        champ = self._plan.champion
        if baseline is None and champ is not None:
            baseline = champ.metrics.get(metric)
        ours = None if samples is None else np.asarray(samples, dtype=float)
        theirs = None if baseline_samples is None else np.asarray(baseline_samples,
                                                                   dtype=float)
        if ours is not None and theirs is None and champ is not None:
            theirs = champ.samples.get(metric)
        gid = f"{Kind.CUSTOM}/{item_id(self._node)}/{metric}"
        outcome = self._plan.regression_outcome(metric, float(current), baseline,
                                                samples=ours, baseline_samples=theirs,
                                                kind=Kind.CUSTOM, gid=gid)
        return record(self._node, outcome)


class ReportHooks:
    """The per-test hooks, registered when a session becomes a gate session (a session
    that gates nothing runs none of them)."""

    def __init__(self, state: GateSession) -> None:
        self.state = state

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        """A built-in check's planned outcome and the outcomes a test recorded ride on its
        report: a planned one by its id (every process holds the plan), others as data."""
        planned = planned_outcome(item) if call.when == "call" else None
        custom: list[Outcome] = item.stash.get(OUTCOMES, [])
        if planned is not None and any(o is planned for o in custom):
            planned = None  # the check recorded it itself: gate_check(regression_gate)
        if planned is not None:
            item.user_properties.extend(junit_properties(planned))  # type: ignore[attr-defined]
        report = yield
        if report.when == "call":
            recorded = [planned, *custom] if planned is not None else custom
            if recorded:
                setattr(report, REPORT_ATTR, [self._wire(o) for o in recorded])
        return report

    def _wire(self, outcome: Outcome) -> str | dict[str, Any]:
        plan = self.state.plan
        planned = plan is not None and plan.outcome(outcome.id) is outcome
        return outcome.id if planned else outcome.to_json()

    def _outcomes(self, report: pytest.TestReport) -> list[Outcome]:
        plan, found = self.state.plan, []
        for entry in getattr(report, REPORT_ATTR, None) or ():
            outcome = Outcome.from_json(entry) if isinstance(entry, dict) else \
                plan.outcome(entry) if plan is not None else None
            if outcome is None:  # a bug, not bad input: every process holds one plan
                raise RuntimeError(f"gates: {report.nodeid} reported {entry!r}, not planned")
            found.append(outcome)
        return found

    def pytest_report_teststatus(self, report: pytest.TestReport,
                                 config: pytest.Config) -> tuple[str, str, Any] | None:
        """A promotion gate that is not promotable, or a warning, shows as such."""
        if report.when != "call" or not report.passed or not hasattr(report, REPORT_ATTR):
            return None
        statuses = {o.status for o in self._outcomes(report)}
        if Status.NOT_PROMOTABLE in statuses:
            return "not promotable", "N", ("NOT PROMOTABLE", {"yellow": True})
        if Status.WARN in statuses:
            return "warned", "W", ("WARN", {"yellow": True})
        return None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.state.is_worker:
            return
        outcomes = self._outcomes(report)
        if outcomes:
            self.state.outcomes.extend(outcomes)
        elif report.failed:  # a plain failing test, or a broken fixture
            self.state.outcomes.append(Outcome(
                f"{report.nodeid}" + ("" if report.when == "call" else f"@{report.when}"),
                Kind.CUSTOM, report.head_line or report.nodeid, Status.FAIL,
                message=_last_line(report.longreprtext)))


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "failed"
