"""End of a gate session: order the outcomes, decide the verdict and the promotion answer,
and promote when asked. The sinks then report the result (``gates.sinks``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from gates import logic
from gates.errors import GateInputError, PromotionConflict
from gates.model import Kind, Outcome, Status, input_outcome
from gates.plan import Plan, Settings, evaluated_on, gated_metrics
from gates.result import SessionResult
from gates.store import repo_relative, utc_now, who

#: pytest exit statuses after which no gate outcome can be trusted
_ABORTED = frozenset({2, 3, 4})  # interrupted, internal error, usage error


def order(outcomes: list[Outcome], plan: Plan | None) -> list[Outcome]:
    """Planned built-ins in plan order first, then custom gates in report order."""
    rank = {o.id: i for i, o in enumerate(plan.outcomes)} if plan else {}
    end = len(rank)
    return sorted(outcomes, key=lambda o: rank.get(o.id, end))


def finish(plan: Plan | None, outcomes: list[Outcome], settings: Settings, exitstatus: int,
           *, input_error: GateInputError | None = None) -> SessionResult:
    if input_error is not None:
        outcomes = [input_outcome(input_error)]
    outcomes = order(outcomes, plan)
    notes: list[str] = list(plan.notes) if plan else []
    ran = {o.id for o in outcomes}
    # an incomparable champion or bad per-sample data untrusts every gate, selected or not
    untrusted = [o for o in (plan.outcomes if plan else []) if o.id not in ran
                 and (o.status in logic.UNTRUSTED)]
    verdict = logic.verdict([*outcomes, *untrusted])
    if untrusted:
        notes.append("not selected, but decides the verdict: " + "; ".join(
            f"{o.id}: {o.message}" for o in untrusted[:3]))
    if not outcomes:
        notes.append("no gate ran (check -k/-m selection); a session without gates fails")
    if exitstatus in _ABORTED and verdict != "error":
        verdict = "error"
        notes.append(f"the pytest session ended abnormally (exit status {exitstatus})")
    result = SessionResult(
        verdict=verdict, outcomes=outcomes,
        suite=plan.suite if plan else settings.suite,
        baseline_version=plan.champion.version if plan and plan.champion else None,
        eval_path=_eval_path(plan, settings), out_dir=plan.out_dir if plan
        else settings.out_dir(), plan=plan, notes=notes)
    _promotion_answer(result)
    required = plan.promotion_required if plan else settings.require_promotion
    failed = verdict != "pass" or (required and not result.promotable)
    result.exit_code = 1 if failed else 0
    if settings.promote and plan is not None:
        promote(plan, result)
    return result


def _promotion_answer(result: SessionResult) -> None:
    plan = result.plan
    if plan is None:
        result.promotion_reasons = ["bad input: nothing was gated"]
        return
    ran = {o.id for o in result.outcomes}
    missing = [o.id for o in plan.outcomes if o.id not in ran]
    reasons: list[str] = []
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        result.notes.append(f"partial run: {len(missing)} of {len(plan.outcomes)} planned "
                            f"gates were not selected ({shown}); the verdict covers the rest")
        reasons.append("not every built-in gate ran (promotion needs the whole suite, "
                       "without -k/-m selection)")
    gate = next((o for o in result.outcomes if o.kind == Kind.PROMOTION), None)
    if gate is not None and gate.status != Status.PROMOTABLE:
        reasons += [str(r) for r in gate.evidence.get("reasons", [])] or [gate.message]
    if result.verdict != "pass":
        failed = [o.id for o in result.outcomes if not o.passed and o.kind != Kind.PROMOTION]
        reasons.append(f"the verdict is {result.verdict}"
                       + (f" ({', '.join(failed[:5])})" if failed else ""))
    result.promotion_reasons = list(dict.fromkeys(reasons))
    result.promotable = not result.promotion_reasons and gate is not None


def _eval_path(plan: Plan | None, settings: Settings) -> str | None:
    if plan is not None and plan.evaluation.path is not None:
        return str(plan.evaluation.path)
    return str(settings.eval) if settings.eval else None


def promote(plan: Plan, result: SessionResult) -> None:
    """Write the challenger as the new champion when the verdict passes and it is
    promotable; otherwise keep the champion and say why."""
    if not result.promotable:
        result.notes.append("--gates-promote: the champion stays: "
                            + "; ".join(result.promotion_reasons))
        return
    try:
        number = plan.store.promote(plan.suite, plan.evaluation,
                                    expected=plan.champion.version if plan.champion else None,
                                    provenance=provenance_of(plan, result),
                                    metrics=gated_metrics(plan, result.outcomes),
                                    extra=dict(evaluated_on(plan)))
    except (PromotionConflict, GateInputError, OSError, ValueError) as exc:
        result.verdict, result.exit_code = "error", 1
        result.notes.append(f"--gates-promote failed: {exc}")
        print(f"gates: {exc}", file=sys.stderr)
        return
    result.promoted, result.new_baseline_version = True, number


def provenance_of(plan: Plan, result: SessionResult) -> dict[str, Any]:
    ev, info = plan.evaluation, plan.run_info
    root = _repo_root(plan.settings.workdir)
    run = info.get("id") or info.get("run_id")
    wandb_run = "/".join(str(p) for p in (info.get("entity"), info.get("project"), run)
                         if p) if run else None
    record: dict[str, Any] = {
        "run_id": ev.run_id or run,
        "wandb_run": wandb_run,
        "git_commit": _git_commit(plan.settings.workdir),
        "eval_report": _relative(ev.path, root),
        "eval_sha256": ev.sha256,
        "eval_format": ev.format,
        "samples": _relative(ev.samples_path, root),
        "timestamp": utc_now(),
        "promoted_by": f"gates --gates-promote ({who()})",
        "promoted_from": f"v{plan.champion.version}" if plan.champion else None,
        "gates": {k: v for k, v in result.counts().items() if v},
    }
    if plan.field_version is not None:
        record["field_metrics_version"] = plan.field_version
        record["field_shape"] = list(ev.field_shape or [])
        record["field_arrays"] = _relative(plan.settings.resolve(plan.settings.arrays), root)
    for key, value in ev.provenance.items():  # what the report states (leaderboard row)
        record.setdefault(key, value)
    return record


def _relative(path: Path | None, root: Path | None) -> str | None:
    """Paths inside the repository are stored relative to its root (absolute outside it)."""
    if path is None:
        return None
    return repo_relative(path, root) if root is not None else str(Path(path).resolve())


def _repo_root(where: Path) -> Path | None:
    top = _git(where, "rev-parse", "--show-toplevel")
    return Path(top).resolve() if top else None


def _git_commit(where: Path) -> str | None:
    return _git(where, "rev-parse", "HEAD")


def _git(where: Path, *args: str) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                              timeout=10, check=False, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None
