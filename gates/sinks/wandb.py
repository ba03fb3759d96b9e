"""The W&B sink: one run per gate session, logged once, in a child process, under one deadline.

Registered by the plugin only when ``--gates-wandb`` is not off. Nothing else in the package
imports wandb, and only its child (``gates.sinks.wandb_child``) does.

How a session is logged
-----------------------
- :meth:`WandbSink.start` (at session start, when the plan is known) starts a fresh Python
  process (never a fork: the session may have threads) that imports wandb and opens the run
  while the gates run, on the other core. Without ``start``, the child starts at the end.
- :meth:`WandbSink.pytest_gates_session_finished` turns the :class:`SessionResult` into a
  plain record (:func:`build_record`: tables, summary, alerts, artifact, dashboards; no
  wandb objects), hands it to the child, and waits for its answer.
- One wall-clock deadline, ``gates_wandb_timeout`` (default 30 s) from the end of the
  gates, bounds everything the sink does; ``WANDB_INIT_TIMEOUT`` bounds the init inside it.
  The child runs in its own process group, so at the deadline it is killed with whatever
  it started.
- Online trouble loses nothing: online sessions start a second child beside the first, wandb
  imported but no run opened. When the online run fails (init error) or has not finished
  when the online share of the deadline ends (it is killed then), that standby child writes
  the same record as an offline run in the gates output folder, in the time kept for it
  (:func:`reserve_of`); otherwise it ends without writing anything. One warning line says
  ``wandb sync <that folder>``. W&B trouble never changes a verdict or the exit code.

Where the run goes (SPEC "W&B contract")
----------------------------------------
Online with the evaluation's run id known (run info ``id``/``run_id``,
``FAST_TO_SOTA_WANDB_INFO``, ``WANDB_RUN_ID``): that run is resumed. Otherwise a run with
``job_type="gates"`` in the evaluation run's group (``WANDB_RUN_GROUP`` too), with
``config["gates"]["eval_run_id"]``; offline it never takes the evaluation's id.
``WANDB_PROJECT``, ``WANDB_ENTITY`` and ``WANDB_DIR`` are honoured; without ``WANDB_DIR`` the
run folder goes into the gates output folder (beside the evaluation's artifacts).
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gates.model import Kind, Outcome, Status
from gates.sinks import wandb_child

if TYPE_CHECKING:
    from gates.result import SessionResult

PROJECT = "physics-gates"
DEFAULT_TIMEOUT = 30.0
REGRESSION_TITLE = "Performance Regression Detected"
PHYSICS_TITLE = "Physics Constraint Violations Detected"
RESULT_COLUMNS = ["gate", "kind", "metric", "baseline", "current", "change_pct", "threshold",
                  "status", "message"]
RESULT_TYPES = ["str", "str", "str", "float", "float", "float", "float", "str", "str"]
COMPARISON_COLUMNS = ["Status", "Metric", "Baseline", "Current", "Change"]
COMPARISON_TYPES = ["str", "str", "float", "float", "str"]
#: variables the child must not read on its own: the run's id and resumption are decided here
_CHILD_ENV_DROP = ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_RESUME_FROM", "WANDB_FORK_FROM")

Record = dict[str, Any]


# --- the record: plain data built from the session result --------------------------------


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def results_rows(outcomes: list[Outcome], evidence: list[str]) -> list[list[Any]]:
    """One row per gate; the evidence line (``SessionResult.evidence_lines``) follows the
    message, as in the terminal."""
    rows = []
    for o, line in zip(outcomes, evidence, strict=True):
        message = f"{o.message} [{line}]" if line else o.message
        rows.append([o.id, str(o.kind), o.metric, _num(o.baseline), _num(o.current),
                     _num(o.change_pct), _num(o.threshold), str(o.status), message])
    return rows


def comparison_rows(outcomes: list[Outcome]) -> list[list[Any]]:
    """One row per regression or improvement (Status, Metric, Baseline, Current, Change)."""
    rows = []
    for o in outcomes:
        if o.kind != Kind.REGRESSION or o.baseline is None:
            continue
        if o.status in (Status.FAIL, Status.CHANGED):
            label = "REGRESSION"
        elif o.status == Status.IMPROVED:
            label = "IMPROVEMENT"
        else:
            continue
        rows.append([label, o.metric, _num(o.baseline), _num(o.current),
                     f"{o.change_pct:+.1f}%" if o.change_pct is not None else ""])
    return rows


def _alerted(o: Outcome, kind: Kind) -> bool:
    return o.kind == kind and (o.status == Status.WARN or not o.passed)


def _suffix(o: Outcome) -> str:
    return " (severity warn)" if o.status == Status.WARN else ""


def regression_alert(outcomes: list[Outcome]) -> str:
    """One line per regression: ``metric: baseline -> current (+x.x%)``."""
    lines = []
    for o in outcomes:
        if not _alerted(o, Kind.REGRESSION):
            continue
        if o.current is None or o.baseline is None or o.change_pct is None:
            lines.append(f"{o.metric}: {o.message}{_suffix(o)}")
        else:
            lines.append(f"{o.metric}: {o.baseline:.6g} -> {o.current:.6g} "
                         f"({o.change_pct:+.1f}%){_suffix(o)}")
    return "\n".join(lines)


def physics_alert(outcomes: list[Outcome]) -> str:
    """One line per violated ceiling or spike."""
    return "\n".join(f"{o.id}: {o.message}{_suffix(o)}" for o in outcomes
                     if _alerted(o, Kind.PHYSICS))


def regression_status(outcomes: list[Outcome]) -> str:
    gates = [o for o in outcomes if o.kind == Kind.REGRESSION]
    if any(not o.passed for o in gates):
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
        "gates/promotable": bool(getattr(result, "promotable", False)),
        "gates/promoted": bool(result.promoted),
        "regression/status": regression_status(outcomes),
        "regression/num_regressions": sum(not o.passed for o in regression),
        "regression/num_improvements": sum(o.status == Status.IMPROVED for o in regression),
    }
    reasons = getattr(result, "promotion_reasons", None)
    if reasons:
        values["gates/promotion_reasons"] = "\n".join(reasons)
    if result.promoted:
        values["gates/new_baseline_version"] = result.new_baseline_version
    values.update({f"gates/{o.id}": str(o.status) for o in outcomes})
    return values


def _table(columns: list[str], types: list[str], rows: list[list[Any]]) -> Record:
    return {"columns": columns, "types": types, "rows": rows}


def dashboard_items(boards: Any) -> Record:
    """The dashboards (gates.dashboards.Dashboards): tables, images, line charts, summary.

    The one place that knows their shape: each table becomes a typed table (numbers as
    floats, everything else as text), each PNG an image, each line chart a line series.
    """
    items: Record = {"tables": {}, "images": {}, "lines": {}, "summary": {}}
    if boards is None:
        return items
    for key, table in (getattr(boards, "tables", None) or {}).items():
        items["tables"][key] = _board_table(table)
    for key, image in (getattr(boards, "images", None) or {}).items():
        items["images"][key] = str(image)
    for key, chart in (getattr(boards, "lines", None) or {}).items():
        items["lines"][key] = {"xs": list(chart.xs), "ys": {n: list(v) for n, v in
                                                              chart.ys.items()},
                               "title": chart.title, "x_label": chart.x_label}
    items["summary"] = dict(getattr(boards, "summary", None) or {})
    return items


def _board_table(table: Any) -> Record:
    """A dashboard :class:`~gates.sinks.dashboards.Table`: floats finite or None, every
    other cell text or None."""
    floats = [kind == "float" for kind in table.types]
    rows = [[_num(v) if is_float else (None if v is None else str(v))
             for v, is_float in zip(row, floats, strict=True)] for row in table.rows]
    return _table(list(table.columns), list(table.types), rows)


def build_record(result: SessionResult) -> Record:
    """Everything the session logs, as plain data (pickled to the child)."""
    outcomes = result.outcomes
    tables: dict[str, Record] = {
        "gates/results": _table(RESULT_COLUMNS, RESULT_TYPES,
                                results_rows(outcomes, result.evidence_lines)),
        "regression/comparison": _table(COMPARISON_COLUMNS, COMPARISON_TYPES,
                                        comparison_rows(outcomes)),
    }
    bars: dict[str, Record] = {}
    physics = [[o.metric, _num(o.current)] for o in outcomes
               if o.kind == Kind.PHYSICS and o.id.endswith("/ceiling") and o.current is not None]
    if physics:
        bars["physics/violations"] = {"table": _table(["metric", "value"], ["str", "float"],
                                                      physics),
                                      "label": "metric", "value": "value",
                                      "title": "Physics metrics (against their ceilings)"}
    boards = dashboard_items(result.dashboards)
    tables.update(boards["tables"])
    alerts = [(title, text) for title, text in
              ((REGRESSION_TITLE, regression_alert(outcomes)),
               (PHYSICS_TITLE, physics_alert(outcomes))) if text]
    return {"tables": tables, "bars": bars, "lines": boards["lines"],
            "images": boards["images"], "summary": {**summary_values(result),
                                                    **boards["summary"]},
            "alerts": alerts, "artifact": _artifact(result)}


def _artifact(result: SessionResult) -> Record | None:
    """The promoted version as an artifact ``<suite>`` of type baseline."""
    plan = getattr(result, "plan", None)
    version = result.new_baseline_version
    if not result.promoted or version is None or plan is None or result.suite is None:
        return None
    store, suite = plan.store, result.suite
    champion = store.load(suite, version)
    return {"name": suite, "type": "baseline",
            "description": f"champion baseline v{version} of suite {suite}",
            "metadata": {"suite": suite, "version": version, "metrics": champion.metrics,
                         "provenance": champion.provenance},
            "folder": str(store.suite_dir(suite) / "versions" / f"v{version:04d}"),
            "aliases": ["champion", f"v{version}"]}


# --- where the run goes --------------------------------------------------------------------


def eval_run(plan: Any) -> dict[str, Any]:
    """The evaluation's W&B run as far as it is known: id, name, entity, project, group."""
    info = dict(getattr(plan, "run_info", None) or {})
    ev = getattr(plan, "evaluation", None)
    provenance = getattr(ev, "provenance", None) or {}
    return {
        "id": info.get("id") or info.get("run_id") or os.environ.get("WANDB_RUN_ID")
        or getattr(ev, "run_id", None) or provenance.get("train_wandb_run"),
        "name": info.get("name"),
        "entity": info.get("entity") or os.environ.get("WANDB_ENTITY") or None,
        "project": info.get("project") or os.environ.get("WANDB_PROJECT") or PROJECT,
        "group": info.get("group") or os.environ.get("WANDB_RUN_GROUP") or None,
    }


def init_options(plan: Any, out_dir: Path, mode: str) -> dict[str, Any]:
    """``wandb.init`` arguments: the evaluation's own run (online, id known), or a gates run
    beside it, in its group, carrying its id (always offline: never the evaluation's id)."""
    run = eval_run(plan)
    champion = getattr(plan, "champion", None)
    ev = getattr(plan, "evaluation", None)
    path = getattr(ev, "path", None)
    options: dict[str, Any] = {
        "project": run["project"],
        "entity": run["entity"],
        "mode": mode,
        "dir": os.environ.get("WANDB_DIR") or str(out_dir),
        "config": {"gates": {
            "eval_run_id": run["id"],
            "eval": str(path) if path else None,
            "suite": getattr(plan, "suite", None),
            "baseline_version": getattr(champion, "version", None)}},
    }
    if mode == "online" and run["id"]:
        options.update(id=run["id"], resume="allow")
    else:
        options.update(id=new_run_id(), job_type="gates", group=run["group"],
                       name=f"gates-{run['name']}" if run["name"] else None)
    return options


def new_run_id() -> str:
    """A run id of W&B's own shape (8 lowercase letters and digits)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


# --- the sink -------------------------------------------------------------------------------


def _settings_of(plan: Any) -> Any:
    return getattr(plan, "settings", None)


def timeout_of(plan: Any) -> float:
    value = getattr(_settings_of(plan), "wandb_timeout", None)
    return float(value) if value else DEFAULT_TIMEOUT


def reserve_of(timeout: float) -> float:
    """Time kept at the end of the deadline for a fresh child to write the offline run."""
    return min(10.0, max(4.0, timeout / 3))


def init_timeout(window: float) -> float:
    """``WANDB_INIT_TIMEOUT`` when set; else half the time the online child has."""
    value = os.environ.get("WANDB_INIT_TIMEOUT")
    with contextlib.suppress(ValueError):
        if value:
            return max(0.1, float(value))
    return max(1.0, min(90.0, window / 2))


class WandbFailed(RuntimeError):
    """W&B could not record the session; the message says why."""


class WandbSink:
    """Logs each gate session to one W&B run (SPEC "W&B contract").

    ``mode`` is "offline" or "online"; by default the plan's ``settings.wandb``.
    """

    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode
        self._child: _Child | None = None
        self._standby: _Child | None = None
        self._init: dict[str, Any] = {}
        self._logged = False

    # -- hooks --

    def start(self, plan: Any, out_dir: Path | None = None) -> None:
        """Begin at once (import wandb, open the run) while the gates run.

        Online, a second child waits beside it, wandb imported, to write the offline copy
        if the online run fails: it opens no run unless it gets the record.
        """
        if self._child is not None:
            return
        mode = self._mode(plan)
        out = Path(out_dir) if out_dir else _out_dir_of(plan)
        timeout = timeout_of(plan)
        window = timeout - reserve_of(timeout) if mode == "online" else timeout
        self._init = init_options(plan, out, mode)
        self._child = _Child({"init": self._init, "init_timeout": init_timeout(window)})
        if mode == "online":
            offline = init_options(plan, out, "offline") | {"dir": str(out)}
            self._standby = _Child({"init": offline, "defer": True,
                                    "init_timeout": init_timeout(reserve_of(timeout))})

    @pytest.hookimpl(trylast=True)  # after the local files: W&B can never cost one
    def pytest_gates_session_finished(self, result: SessionResult) -> None:
        """Log the session; any trouble is one warning line and nothing else."""
        try:
            self._finish(result)
        except WandbFailed as exc:
            self._warn(result, f"W&B logging skipped: {exc}")
        except Exception as exc:  # noqa: BLE001 - W&B never changes a verdict
            self._warn(result, f"W&B logging skipped: {type(exc).__name__}: {exc}")
        finally:
            self.close()

    def close(self) -> None:
        """Let the children go: each ends by itself when its input ends (a run opened for
        a session that ended without a result is finished and removed first)."""
        if self._child is not None and not self._logged and self._init["mode"] == "offline":
            # nothing to finish gracefully: stop it and remove what it began
            self._child.kill()
            for begun in Path(self._init["dir"]).glob(f"wandb/offline-run-*-{self._init['id']}"):
                shutil.rmtree(begun, ignore_errors=True)
        elif self._child is not None:  # an online run is finished by the child itself
            self._child.release(wait=5.0)
        if self._standby is not None:
            self._standby.release(wait=0.0)  # it opened nothing: no need to wait for it
        self._child = self._standby = None

    # -- the work --

    def _mode(self, plan: Any) -> str:
        mode = self.mode or getattr(_settings_of(plan), "wandb", None) or "offline"
        if mode not in ("offline", "online"):
            raise ValueError(f"W&B mode must be offline or online, got {mode!r}")
        return str(mode)

    def _finish(self, result: SessionResult) -> None:
        plan = getattr(result, "plan", None)
        if plan is None:  # bad input: nothing was gated, nothing to log
            return
        deadline = time.monotonic() + timeout_of(plan)
        if self._child is None:
            self.start(plan, result.out_dir)
        assert self._child is not None
        mode = self._mode(plan)
        record = build_record(result)
        online_deadline = deadline - reserve_of(timeout_of(plan)) if mode == "online" \
            else deadline
        answer = self._child.run(record, online_deadline)
        if answer.get("run_dir"):
            result.wandb_run_dir = Path(answer["run_dir"])
            self._logged = True
            return
        if self._standby is None:
            raise WandbFailed(answer["error"])
        self._child.kill()
        kept = self._standby.run(record, deadline)
        if not kept.get("run_dir"):
            raise WandbFailed(f"{answer['error']}; the offline copy failed too: "
                              f"{kept['error']}")
        self._kept_offline(result, Path(kept["run_dir"]), answer["error"])

    def _kept_offline(self, result: SessionResult, run_dir: Path, why: str) -> None:
        result.wandb_run_dir = run_dir
        self._logged = True
        self._warn(result, f"W&B online logging failed ({why}); the session's record is "
                           f"kept offline: upload it with `wandb sync {run_dir}`")

    @staticmethod
    def _warn(result: SessionResult, message: str) -> None:
        line = message.splitlines()[0] if message else "W&B logging skipped"
        result.notes.append(line)
        print(f"gates: warning: {line}", file=sys.stderr, flush=True)


def _out_dir_of(plan: Any) -> Path:
    for owner in (plan, _settings_of(plan)):
        for name in ("out_dir", "out"):
            value = getattr(owner, name, None)
            if value:
                return Path(value)
    return Path("gates-out")


# --- the child ------------------------------------------------------------------------------


_RELEASED: list[subprocess.Popen[bytes]] = []


def child_env(mode: str) -> dict[str, str]:
    """The W&B child's environment: ours, without what would decide the run's id, and with
    ``WANDB_MODE`` the run's own mode, so that wandb's process-wide settings agree with the
    run. (Offline, wandb then builds no telemetry exporters: with only the run offline it
    imports OpenTelemetry at the first ``run.log``, 0.12 s, and starts two export threads
    that would try to reach the server.)"""
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
    env["WANDB_MODE"] = mode
    return env


class _Child:
    """A fresh interpreter in its own process group running :func:`serve`."""

    def __init__(self, job: Record) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-P", wandb_child.__file__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(job["init"]["mode"]),
            start_new_session=True)
        self._feed(job)
        self._feeder: threading.Thread | None = None

    def _feed(self, value: Any) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            wandb_child.write_frame(self.proc.stdin, value)

    def run(self, record: Record, deadline: float) -> Record:
        """Hand over the record; the answer, or ``{"error": why}`` by the deadline."""
        def feed() -> None:
            self._feed(record)
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()

        # a large record may not fit the pipe while the child is still opening the run
        self._feeder = threading.Thread(target=feed, name="gates-wandb-feed", daemon=True)
        self._feeder.start()
        began = time.monotonic()
        answer = self._answer(deadline)
        if answer is None:
            alive = self.proc.poll() is None
            self.kill()
            return {"error": f"W&B did not finish in time ({deadline - began:.1f} s)" if alive
                    else f"the W&B child exited without an answer ({self.proc.returncode})"}
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=max(0.0, min(2.0, deadline - time.monotonic())))
        return dict(answer)

    def _answer(self, deadline: float) -> Any:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        data = b""
        head = wandb_child.FRAME.size
        need = head
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            data += chunk
            if len(data) >= head:
                need = head + wandb_child.FRAME.unpack(data[:head])[0]
            if len(data) >= need > head:
                return pickle.loads(data[head:need])  # our own child's answer

    def release(self, wait: float) -> None:
        """End its input; wait up to ``wait`` seconds for it to end, else stop it."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        if wait <= 0:
            _RELEASED.append(self.proc)  # it ends by itself; no warning when collected
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=wait)
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for handle in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if handle is not None:
                    handle.close()
