"""The W&B sink: one run per gate session, logged once at the end of the session.

Imported lazily by ``gates.finish`` only; nothing else in the package imports wandb.

Where the run goes: with the evaluation run's id known (``--wandb-info``,
``FAST_TO_SOTA_WANDB_INFO``, ``WANDB_RUN_ID``) and W&B online, the evaluation's run is
resumed. Otherwise a run with ``job_type="gates"`` is created, in the evaluation run's
group when known, with ``config["gates"]["eval_run_id"]``. Offline, the run folder goes
into the gates output folder (beside the evaluation's artifacts) unless ``WANDB_DIR`` is
set, so ``wandb sync <out>/wandb/offline-run-*`` uploads it later.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from gates.context import GateContext
from gates.forked import Forked
from gates.model import Kind, Outcome, Status
from gates.outputs import evidence_text
from gates.result import SessionResult

PROJECT = "physics-gates"
ALERT_WAIT = timedelta(minutes=30)  # the same alert is not re-sent within this window
REGRESSION_TITLE = "Performance Regression Detected"
PHYSICS_TITLE = "Physics Constraint Violations Detected"
RESULT_COLUMNS = ["gate", "kind", "metric", "baseline", "current", "change_pct", "threshold",
                  "status", "message", "evidence"]


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def results_rows(outcomes: list[Outcome]) -> list[list[Any]]:
    return [[o.id, o.kind, o.metric, _num(o.baseline), _num(o.current), _num(o.change_pct),
             _num(o.threshold), str(o.status), o.message, evidence_text(o)] for o in outcomes]


def comparison_rows(outcomes: list[Outcome]) -> list[list[Any]]:
    """One row per regression or improvement (Status, Metric, Baseline, Current, Change)."""
    rows = []
    for o in outcomes:
        if o.kind != Kind.REGRESSION or o.baseline is None:
            continue
        if o.status == Status.FAIL:
            label = "REGRESSION"
        elif o.status == Status.IMPROVED:
            label = "IMPROVEMENT"
        else:
            continue
        rows.append([label, o.metric, _num(o.baseline), _num(o.current),
                     f"{o.change_pct:+.1f}%" if o.change_pct is not None else ""])
    return rows


def regression_alert(outcomes: list[Outcome]) -> str:
    lines = []
    for o in outcomes:
        if o.kind == Kind.REGRESSION and o.status == Status.FAIL:
            if o.current is None or o.baseline is None or o.change_pct is None:
                lines.append(f"{o.metric}: {o.message}")
            else:
                lines.append(f"{o.metric}: {o.baseline:.6g} -> {o.current:.6g} "
                             f"({o.change_pct:+.1f}%)")
    return "\n".join(lines)


def physics_alert(outcomes: list[Outcome]) -> str:
    return "\n".join(f"{o.id}: {o.message}" for o in outcomes
                     if o.kind == Kind.PHYSICS and not o.passed)


def regression_status(outcomes: list[Outcome]) -> str:
    gates = [o for o in outcomes if o.kind == Kind.REGRESSION]
    if any(o.status in (Status.FAIL, Status.ERROR) for o in gates):
        return "regressions"
    if gates and all(o.status == Status.NO_BASELINE for o in gates):
        return "no_baseline"
    return "pass"


def summary_values(result: SessionResult) -> dict[str, Any]:
    outcomes = result.outcomes
    regression = [o for o in outcomes if o.kind == Kind.REGRESSION]
    values: dict[str, Any] = {
        "gates/verdict": result.verdict,
        "gates/passed": len(result.passed),
        "gates/failed": len(result.failed),
        "regression/status": regression_status(outcomes),
        "regression/num_regressions": sum(o.status == Status.FAIL for o in regression),
        "regression/num_improvements": sum(o.status == Status.IMPROVED for o in regression),
    }
    if result.promoted:
        values["gates/new_baseline_version"] = result.new_baseline_version
    values.update({f"gates/{o.id}": str(o.status) for o in outcomes})
    return values


def init_options(ctx: GateContext, mode: str) -> dict[str, Any]:
    """Where the run goes: the evaluation's own run (online, id known) or a gates run
    beside it, in its group, carrying its id."""
    info = ctx.run_info
    options: dict[str, Any] = {
        "project": info.get("project") or os.environ.get("WANDB_PROJECT") or PROJECT,
        "entity": info.get("entity") or os.environ.get("WANDB_ENTITY") or None,
        "mode": mode,
        "dir": os.environ.get("WANDB_DIR") or str(ctx.out_dir),
        "config": {"gates": {
            "eval_run_id": info.get("id") or ctx.evaluation.run_id,
            "eval": str(ctx.evaluation.path) if ctx.evaluation.path else None,
            "suite": ctx.suite,
            "baseline_version": ctx.champion.version if ctx.champion else None}},
    }
    if mode == "online" and info.get("id"):
        options.update(id=info["id"], resume="allow")
    else:
        options.update(job_type="gates", group=info.get("group"),
                       name=f"gates-{info['name']}" if info.get("name") else None)
    return options


class WandbWorker:
    """The W&B session in a child forked at session start (``gates.forked``).

    ``import wandb`` and ``wandb.init`` (which starts W&B's helper process) cost over a
    second per session; in the child they run on the other core while the gates run, and
    at the end the parent only hands over the results. Without a child (threads already
    running, as on an xdist controller) the session is logged in-process.
    """

    def __init__(self, ctx: GateContext) -> None:
        self.ctx = ctx
        self._child = Forked(lambda: open_run(ctx), lambda run, result: _log(ctx, result, run))

    def log(self, result: SessionResult) -> Path | None:
        if not self._child.running:
            return log_session(self.ctx, result)
        self._child.submit(result)
        answer: Path | None = self._child.collect(timeout=_init_timeout() + 600)
        return answer

    def close(self) -> None:
        self._child.close()


def _init_timeout() -> float:
    return float(os.environ.get("GATES_WANDB_INIT_TIMEOUT", "60"))


def open_run(ctx: GateContext) -> Any:
    import wandb

    mode = ctx.settings.wandb
    if mode not in ("offline", "online"):
        raise ValueError(f"--wandb must be off, offline or online, got {mode!r}")
    init = init_options(ctx, mode)
    init["settings"] = wandb.Settings(init_timeout=_init_timeout(), x_disable_stats=True,
                                      console="off", silent=True)
    Path(init["dir"]).mkdir(parents=True, exist_ok=True)
    return wandb.init(**init)


def log_session(ctx: GateContext, result: SessionResult) -> Path | None:
    """Log the whole session to one W&B run, in this process."""
    return _log(ctx, result, open_run(ctx))


def _log(ctx: GateContext, result: SessionResult, run: Any) -> Path | None:
    """Everything of a session into an open run, then finish it; the offline folder."""
    import wandb

    try:
        run.log(_payload(wandb, result))
        run.summary.update(summary_values(result))
        if result.dashboards is not None:
            run.summary.update(result.dashboards.summary)
        regressions = regression_alert(result.outcomes)
        if regressions:
            run.alert(title=REGRESSION_TITLE, text=regressions, level="WARN",
                      wait_duration=ALERT_WAIT)
        violations = physics_alert(result.outcomes)
        if violations:
            run.alert(title=PHYSICS_TITLE, text=violations, level="WARN",
                      wait_duration=ALERT_WAIT)
        if result.promoted and result.new_baseline_version is not None:
            _log_baseline(wandb, run, ctx, result.new_baseline_version)
        run_dir = Path(run.dir).parent if ctx.settings.wandb == "offline" else None
    finally:
        run.finish()
    return run_dir


def typed_table(wandb: Any, columns: list[str], rows: list[list[Any]],
                types: list[type]) -> Any:
    """A wandb.Table whose column types are declared, not inferred row by row.

    ``wandb.Table`` checks every row's types in Python (about 0.4 ms a row: 4 s at 10,000
    gates). Our rows have one type per column (or None) by construction, so the types
    are declared once and the rows attached as they are; the table file is identical.
    """
    table = wandb.Table(columns=columns, data=[], dtype=types, optional=True)
    table.data = rows
    return table


def frame_table(wandb: Any, frame: Any) -> Any:
    """A DataFrame as a typed table: float columns as numbers, the rest as text."""
    import pandas as pd

    types: list[type] = [float if pd.api.types.is_numeric_dtype(frame[c].dtype)
                         and not pd.api.types.is_bool_dtype(frame[c].dtype) else str
                         for c in frame.columns]
    rows = [[None if v is None else (float(v) if t is float else v)
             for v, t in zip(row, types, strict=True)]
            for row in frame.astype(object).itertuples(index=False, name=None)]
    return typed_table(wandb, [str(c) for c in frame.columns], rows, types)


RESULT_TYPES: list[type] = [str, str, str, float, float, float, float, str, str, str]


def _payload(wandb: Any, result: SessionResult) -> dict[str, Any]:
    outcomes = result.outcomes
    payload: dict[str, Any] = {
        "gates/results": typed_table(wandb, RESULT_COLUMNS, results_rows(outcomes),
                                     RESULT_TYPES),
        "regression/comparison": typed_table(
            wandb, ["Status", "Metric", "Baseline", "Current", "Change"],
            comparison_rows(outcomes), [str, str, float, float, str]),
    }
    physics = [[o.metric, _num(o.current)] for o in outcomes
               if o.kind == Kind.PHYSICS and o.id.endswith("/ceiling") and o.current is not None]
    if physics:
        table = wandb.Table(columns=["metric", "value"], data=physics)
        payload["physics/violations"] = wandb.plot.bar(
            table, "metric", "value", title="Physics metrics (against their ceilings)")
    boards = result.dashboards
    if boards is not None:
        for key, frame in boards.tables.items():
            payload[key] = frame_table(wandb, frame)
        for key, image in boards.images.items():
            payload[key] = wandb.Image(str(image))
        for key, chart in boards.lines.items():
            names = list(chart.ys)
            payload[key] = wandb.plot.line_series(
                xs=chart.xs, ys=[chart.ys[n] for n in names], keys=names, title=chart.title,
                xname=chart.x_label)
    return payload


def _log_baseline(wandb: Any, run: Any, ctx: GateContext, version: int) -> None:
    champion = ctx.store.load(ctx.suite, version)
    artifact = wandb.Artifact(
        name=ctx.suite, type="baseline",
        description=f"champion baseline v{version} of suite {ctx.suite}",
        metadata={"suite": ctx.suite, "version": version, "metrics": champion.metrics,
                  "provenance": champion.provenance})
    folder = ctx.store.suite_dir(ctx.suite) / "versions" / f"v{version:04d}"
    artifact.add_dir(str(folder))
    run.log_artifact(artifact, aliases=["champion", f"v{version}"])
