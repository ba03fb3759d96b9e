"""End of a gate session: verdict, promotion, then every sink once (local files first,
W&B last, so W&B trouble can never cost a local output or change the verdict)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gates.charts import ChartWorker
from gates.context import GateContext, Settings, output_dir
from gates.errors import GateInputError, PromotionConflict
from gates.model import Outcome
from gates.result import SessionResult
from gates.runinfo import run_path
from gates.store import utc_now, who

if TYPE_CHECKING:
    from gates.wandb_sink import WandbWorker


def order(outcomes: list[Outcome], ctx: GateContext | None) -> list[Outcome]:
    """Planned built-ins in plan order first, then custom gates in report order."""
    rank = {o.id: i for i, o in enumerate(ctx.planned)} if ctx else {}
    return sorted(outcomes, key=lambda o: rank.get(o.id, len(rank)))


def finish_session(ctx: GateContext | None, outcomes: list[Outcome], settings: Settings,
                   exitstatus: int, *, input_error: GateInputError | None = None,
                   charts: ChartWorker | None = None,
                   wandb_worker: WandbWorker | None = None) -> SessionResult:
    outcomes = order(outcomes, ctx)
    notes: list[str] = []
    ok = bool(outcomes) and all(o.passed for o in outcomes) and exitstatus == 0
    if not outcomes:
        notes.append("no gate ran (check -k/-m selection); a session without gates fails")
    elif ctx is not None:
        missing = [o.id for o in ctx.planned if o.id not in {x.id for x in outcomes}]
        if missing:
            notes.append(f"partial run: {len(missing)} of {len(ctx.planned)} planned gates "
                         f"were not selected ({', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''}); the verdict covers the rest")
    result = SessionResult(
        verdict="pass" if ok else "fail",
        outcomes=outcomes,
        suite=ctx.suite if ctx else settings.suite,
        baseline_version=ctx.champion.version if ctx and ctx.champion else None,
        eval_path=_eval_path(ctx, settings),
        out_dir=ctx.out_dir if ctx else output_dir(settings),
        notes=notes,
        exit_code=0 if ok else 1,
    )
    if settings.promote and ctx is not None:
        promote(ctx, result)
    write_local(ctx, result, charts)
    if ctx is not None and input_error is None:
        log_wandb(ctx, result, wandb_worker)
    return result


def _eval_path(ctx: GateContext | None, settings: Settings) -> str | None:
    if ctx is not None and ctx.evaluation.path is not None:
        return str(ctx.evaluation.path)
    return str(settings.eval) if settings.eval else None


def promote(ctx: GateContext, result: SessionResult) -> None:
    """Write the challenger as the new champion when every gate passed."""
    ran = {o.id for o in result.outcomes}
    if result.verdict != "pass":
        result.notes.append("--promote: not promoted, a gate failed")
        return
    if not all(o.id in ran for o in ctx.planned):  # the built-in gates, not a look-alike
        result.notes.append("--promote: not promoted, not every built-in gate ran "
                            "(promotion needs the whole suite, without -k/-m selection)")
        return
    provenance = provenance_of(ctx, result)
    try:
        number = ctx.store.promote(ctx.suite, ctx.evaluation,
                                   expected=ctx.champion.version if ctx.champion else None,
                                   provenance=provenance)
    except (PromotionConflict, GateInputError, OSError) as exc:
        result.verdict, result.exit_code = "fail", 1
        result.notes.append(f"--promote failed: {exc}")
        print(f"gates: {exc}", file=sys.stderr)
        return
    result.promoted, result.new_baseline_version = True, number


def provenance_of(ctx: GateContext, result: SessionResult) -> dict[str, Any]:
    ev = ctx.evaluation
    return {
        "run_id": ev.run_id or ctx.run_info.get("id"),
        "wandb_run": run_path(ctx.run_info),
        "git_commit": _git_commit(ctx.settings.workdir),
        "eval_report": str(ev.path) if ev.path else None,
        "eval_sha256": ev.sha256,
        "eval_format": ev.format,
        "samples": str(ev.samples_path) if ev.samples_path else None,
        "timestamp": utc_now(),
        "promoted_by": f"pytest gates --promote ({who()})",
        "promoted_from": f"v{ctx.champion.version}" if ctx.champion else None,
        "gates": result.counts(),
    }


def _git_commit(where: Path) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def write_local(ctx: GateContext | None, result: SessionResult,
                charts: ChartWorker | None = None) -> None:
    from gates import outputs

    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    worker = charts or ChartWorker(fork=False)
    worker.submit(result.outcomes, out)  # drawn meanwhile, when a child was forked
    if ctx is not None:
        result.dashboards = build_dashboards(ctx, result)
    pictures = worker.collect()
    result.files = [outputs.write_json(result, out / "gates.json"), *pictures]
    result.files.append(outputs.write_markdown(result, out / "gates.md", pictures))


def build_dashboards(ctx: GateContext, result: SessionResult) -> Any:
    """Evaluation dashboards from the sidecars; trouble there is a warning, never a verdict."""
    from gates.dashboards import build_dashboards as build
    from gates.dashboards import discover_sidecars

    ev, s = ctx.evaluation, ctx.settings
    sidecars = discover_sidecars(ev.path) if ev.path else {}
    try:
        boards = build(report_path=ev.path, metrics=ev.metrics, extra=ev.extra,
                       out_dir=result.out_dir, training_log=s.resolve(s.training_log),
                       leaderboard=s.resolve(s.leaderboard), leaderboard_row=s.eval_row,
                       **sidecars)
    except Exception as exc:  # noqa: BLE001 - dashboards never decide a verdict
        result.notes.append(f"dashboards skipped: {type(exc).__name__}: {exc}")
        return None
    result.notes.extend(boards.warnings)
    return boards


def log_wandb(ctx: GateContext, result: SessionResult,
              worker: WandbWorker | None = None) -> None:
    """Log to W&B; any trouble is one warning line and nothing else."""
    if ctx.settings.wandb == "off":
        return
    try:
        from gates.wandb_sink import log_session

        result.wandb_run_dir = worker.log(result) if worker else log_session(ctx, result)
    except Exception as exc:  # noqa: BLE001 - W&B never changes a verdict
        message = f"W&B logging skipped: {type(exc).__name__}: {exc}".splitlines()[0]
        result.notes.append(message)
        print(f"gates: warning: {message}", file=sys.stderr)
