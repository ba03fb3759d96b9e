"""The run ledger: one JSON line per gate session in ``baselines/<suite>/runs.jsonl``.

The store remembers promotions; the ledger remembers every evaluation that was gated, so
a metric's trend can be seen across challengers and not only champions. One record::

    {"schema": "gates-run/1", "time": "2026-12-01T08:00:00Z", "suite": "burgers1d",
     "run_id": "abc123", "eval": "reports/eval.json", "eval_sha256": "...",
     "git_commit": "...", "champion": 3, "verdict": "pass", "promotable": true,
     "promoted": true, "new_champion": 4, "failed": [],
     "metrics": {"nrmse": {"value": 0.10, "baseline": 0.11, "change_pct": -9.1,
                           "status": "improved", "direction": "lower"}}}

``champion`` is the version the run was gated against (null for a suite's first run);
``metrics`` holds each gated metric: its value, the champion's value, the change in
percent and the worst status among the metric's gates. Non-finite numbers are written as
strings (``"nan"``), as in ``gates.json``, so every line stays strict JSON; readers get
them as written (:func:`value_of` treats them as missing).

Appending goes through the store (``BaselineStore.append_run``: one ``O_APPEND`` write of
the whole line under the suite's lock, then ``fsync``), so concurrent sessions never lose
or interleave a line and a killed session leaves either its whole line or none. Reading
skips a corrupt or foreign line with a warning naming its line number.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gates.store import BaselineStore, StoreReadOnly, utc_now

LEDGER = "runs.jsonl"
SCHEMA = "gates-run/1"
_PASSING = {"pass", "improved", "no_baseline", "warn", "promotable"}
_SKIPPED_KINDS = {"promotion", "input", "comparability"}


# ---------------------------------------------------------------------------------------
# building a record


def run_record(result: Any) -> dict[str, Any]:
    """The ledger line for one finished session (a ``gates.result.SessionResult``).

    Reads ``result.plan`` (evaluation, settings, store) when there is one; without it the
    record still carries the verdict and outcomes.
    """
    plan = getattr(result, "plan", None)
    evaluation = getattr(plan, "evaluation", None)
    run_info = getattr(plan, "run_info", None) or {}
    eval_path = getattr(evaluation, "path", None) or getattr(result, "eval_path", None)
    workdir = _workdir(plan, eval_path)
    commit, top = git_state(workdir)
    run_id = getattr(evaluation, "run_id", None) or run_info.get("id") or None
    outcomes = list(getattr(result, "outcomes", []) or [])
    return {
        "schema": SCHEMA,
        "time": utc_now(),
        "suite": getattr(result, "suite", None) or getattr(plan, "suite", None),
        "run_id": str(run_id) if run_id else None,
        "eval": repo_relative(eval_path, top, workdir),
        "eval_sha256": getattr(evaluation, "sha256", None),
        "git_commit": os.environ.get("GITHUB_SHA") or commit,
        "champion": getattr(result, "baseline_version", None),
        "verdict": getattr(result, "verdict", None),
        "promotable": _opt_bool(getattr(result, "promotable", None)),
        "promoted": bool(getattr(result, "promoted", False)),
        "new_champion": getattr(result, "new_baseline_version", None),
        "failed": [str(o.id) for o in outcomes if not _passed(o)],
        "metrics": metric_entries(outcomes),
    }


def metric_entries(outcomes: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per gated metric: value, champion value, change and the worst status of its gates."""
    entries: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        kind = str(getattr(outcome, "kind", ""))
        metric = str(getattr(outcome, "metric", "") or "")
        if not metric or kind in _SKIPPED_KINDS:
            continue
        entry = entries.get(metric)
        primary = kind == "regression"
        if entry is None or (primary and not entry["_primary"]):
            keep_status = entry["status"] if entry and entry["status"] not in _PASSING else None
            entry = {
                "value": _number(getattr(outcome, "current", None)),
                "baseline": _number(getattr(outcome, "baseline", None)),
                "change_pct": _number(getattr(outcome, "change_pct", None)),
                "status": keep_status or str(outcome.status),
                "direction": (getattr(outcome, "evidence", None) or {}).get("direction"),
                "_primary": primary,
            }
            entries[metric] = entry
        elif entry["status"] in _PASSING and not _passed(outcome):
            entry["status"] = str(outcome.status)  # a failing physics gate marks the metric
    for entry in entries.values():
        del entry["_primary"]
        if entry["direction"] is None:
            del entry["direction"]
    return dict(sorted(entries.items()))


def _passed(outcome: Any) -> bool:
    passed = getattr(outcome, "passed", None)
    return bool(passed) if passed is not None else str(outcome.status) in _PASSING


def _number(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else str(number)


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _workdir(plan: Any, eval_path: Any) -> Path:
    settings = getattr(plan, "settings", None)
    workdir = getattr(settings, "workdir", None)
    if workdir is not None:
        return Path(workdir)
    if eval_path:
        return Path(eval_path).resolve().parent
    return Path.cwd()


def git_state(where: Path) -> tuple[str | None, Path | None]:
    """(HEAD commit, repository top folder) of the git checkout holding ``where``."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD", "--show-toplevel"], cwd=where,
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None, None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        return None, None
    return lines[0], Path(lines[1])


def repo_relative(path: Any, top: Path | None, workdir: Path) -> str | None:
    """``path`` relative to the repository (else to the working folder), with ``/``."""
    if not path:
        return None
    target = Path(path)
    absolute = (workdir / target).resolve() if not target.is_absolute() else target.resolve()
    for base in (top, workdir):
        if base is None:
            continue
        with contextlib.suppress(ValueError):
            return absolute.relative_to(Path(base).resolve()).as_posix()
    return absolute.as_posix()


# ---------------------------------------------------------------------------------------
# appending


class LedgerSink:
    """Appends one ledger line per gate session (registered unless ``--gates-no-ledger``).

    A read-only store or any other trouble is one warning line: a sink never changes the
    verdict and never raises out of the hook.
    """

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.warn = warn or _stderr
        self.record: dict[str, Any] | None = None

    def pytest_gates_session_finished(self, result: Any) -> None:
        plan = getattr(result, "plan", None)
        if plan is None:  # bad input: nothing was gated against a suite
            return
        suite = getattr(result, "suite", None) or getattr(plan, "suite", None)
        store = getattr(plan, "store", None)
        if not suite or store is None:
            return
        try:
            record = run_record(result)
            append_run(store, suite, record)
            self.record = record
        except Exception as exc:  # noqa: BLE001 - the ledger never fails a session
            self.warn(f"gates: warning: run not recorded in the ledger of suite {suite!r}: "
                      f"{_reason(exc)}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StoreReadOnly | PermissionError):
        return f"the baseline store is read-only ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def append_run(store: BaselineStore, suite: str, record: Mapping[str, Any]) -> None:
    """Append ``record`` to the suite's ledger through the store (under its lock)."""
    store.append_run(suite, dict(record))


# ---------------------------------------------------------------------------------------
# reading


def read_runs(store: BaselineStore, suite: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Every ledger record of ``suite``, oldest first, and warnings for skipped lines.

    The store parses the file (``BaselineStore.runs``: corrupt lines skipped with their
    line number); records that are JSON objects but not gate-run records are skipped
    here, also with their line number.
    """
    raw, warnings = store.runs(suite)
    warnings = list(warnings)
    records: list[dict[str, Any]] = []
    numbers: list[int] | None = None
    for position, item in enumerate(raw):
        problem = _problem(item)
        if problem is None:
            records.append(item)
            continue
        path = store.suite_dir(suite) / LEDGER
        if numbers is None:
            numbers = _object_line_numbers(path)
        where = (f"line {numbers[position]}" if position < len(numbers)
                 else f"record {position + 1}")
        warnings.append(f"{path}: {where} skipped: {problem}")
    return records, warnings


def _object_line_numbers(path: Path) -> list[int]:
    """Line numbers of the lines holding a JSON object, as the store's reader counts them."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    numbers = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                if isinstance(json.loads(line), dict):
                    numbers.append(number)
            except (ValueError, RecursionError):
                pass
    return numbers


def _problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "not a JSON object"
    if item.get("schema") != SCHEMA:
        return f"not a gate-run record (schema {item.get('schema')!r})"
    if not isinstance(item.get("metrics"), dict) or not isinstance(item.get("time"), str):
        return "a gate-run record without time or metrics"
    return None


def metric_names(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every metric that appears in ``runs``, sorted."""
    names: set[str] = set()
    for run in runs:
        names.update(run.get("metrics", {}))
    return sorted(names)


def value_of(run: Mapping[str, Any], metric: str, key: str = "value") -> float | None:
    """A finite number from a run's metric entry, else None."""
    entry = run.get("metrics", {}).get(metric)
    if not isinstance(entry, dict):
        return None
    value: Any = entry.get(key)
    if isinstance(value, float | int) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return None


