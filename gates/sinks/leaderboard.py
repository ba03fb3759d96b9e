"""On promotion, the ``<run>_champion`` row that universal-simulator's orchestrator reads
to find its champion, appended to ``--gates-leaderboard``, so the two never disagree.

The row is written the way that codebase's ``update_leaderboard`` writes rows: the
columns ``run_id, timestamp, label, config, notes``, tags, ``metric:<name>``,
``extra:<name>``; every cell ``str(value)``; a new column appended at the end (earlier rows
blank); ``csv`` minimal quoting; the whole file replaced atomically (a temporary file and a
rename). The ``csv`` module is used rather than pandas because pandas would re-type and
re-format every existing cell; here each existing cell is copied as it was written.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gates.result import SessionResult
from gates.sinks.local import write_atomic

ID_COLUMNS = ("run_id", "timestamp", "label", "config", "notes")


def run_name(result: SessionResult) -> str | None:
    """The orchestrator's run id: the leaderboard row's ``run``, else the run folder of its
    layout (``artifacts/runs/<run>/<stage>_eval/results.json``), else the report's run id."""
    plan = result.plan
    if plan is None:
        return None
    ev = plan.evaluation
    if ev.provenance.get("run"):
        return str(ev.provenance["run"])
    if ev.path is not None and ev.path.parent.name.endswith(("_eval", "_eval_lightning")):
        return ev.path.parent.parent.name
    return ev.run_id


def champion_row(result: SessionResult, now: datetime | None = None) -> dict[str, str]:
    plan = result.plan
    assert plan is not None
    ev, run = plan.evaluation, run_name(result)
    stamp = (now or datetime.now(UTC)).replace(microsecond=0, tzinfo=None).isoformat()
    row: dict[str, Any] = {
        "run_id": f"{run}_champion", "timestamp": stamp, "label": "champion",
        "config": ev.provenance.get("config", ""),
        "notes": f"run={run} promoted by physics-gates to {plan.suite} "
                 f"v{result.new_baseline_version}",
    }
    for key in ("pipeline", "commit", "branch", "train_wandb_run", "train_wandb_project",
                "train_wandb_entity"):
        if ev.provenance.get(key) is not None:
            row[key] = ev.provenance[key]
    row["run"] = run
    row["stage"] = "champion"
    row.update({f"metric:{k}": v for k, v in ev.metrics.items() if not k.startswith("field/")})
    row.update({f"extra:{k}": v for k, v in ev.extra.items()
                if isinstance(v, str | int | float | bool) or v is None})
    return {k: "" if v is None else str(v) for k, v in row.items()}


def append_row(path: Path, row: dict[str, str]) -> None:
    """Append ``row``; columns it brings that the file lacks go at the end."""
    rows: list[list[str]] = []
    if path.exists():
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    header = rows[0] if rows else list(ID_COLUMNS)
    header += [c for c in row if c not in header]
    width = len(header)
    body = [r + [""] * (width - len(r)) for r in rows[1:]]
    body.append([row.get(c, "") for c in header])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    write_atomic(path, text.getvalue())


class LeaderboardSink:
    """Registered with ``--gates-leaderboard``; writes only when this session promoted
    (before the local files, so that gates.json carries its note)."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_gates_session_finished(self, result: SessionResult) -> None:
        plan = result.plan
        if plan is None or not result.promoted or plan.settings.leaderboard is None:
            return
        if run_name(result) is None:
            result.notes.append("leaderboard: no run id known for this evaluation; no "
                                "champion row appended")
            return
        path = plan.settings.resolve(plan.settings.leaderboard)
        assert path is not None
        row = champion_row(result)
        if path.exists():
            with open(path, newline="", encoding="utf-8") as handle:
                known = {r.get("run_id") for r in csv.DictReader(handle)}
            if row["run_id"] in known:  # the orchestrator (or an earlier session) wrote it
                result.notes.append(f"leaderboard: {row['run_id']} is already in {path}; "
                                    "not appended twice")
                return
        append_row(path, row)
        result.notes.append(f"leaderboard: appended {row['run_id']} to {path}")
