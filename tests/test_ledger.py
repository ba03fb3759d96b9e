"""The run ledger: one line per gate session, concurrent and killed writers, bad lines."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gates.ledger import SCHEMA, LedgerSink, append_run, read_runs, run_record
from gates.model import Outcome, Status
from gates.store import BaselineStore
from tests.conftest import hermetic_wandb_env

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "gates" / "sample"


def gate_workspace(tmp: Path) -> Path:
    """A copy of the repository's baseline store and the bundled evaluation."""
    shutil.copytree(ROOT / "baselines", tmp / "baselines")
    for item in SAMPLE.glob("burgers1d_eval*"):
        shutil.copy(item, tmp / item.name)
    return tmp


def run_session(work: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = hermetic_wandb_env(work)
    return subprocess.run(
        [sys.executable, "-m", "gates", "run", "--eval", "burgers1d_eval.json",
         "--baselines", "baselines", "--wandb", "off", "-q", "-p", "no:cacheprovider",
         *extra],
        cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False)


def ledger_lines(store_root: Path, suite: str = "burgers1d") -> list[str]:
    path = store_root / suite / "runs.jsonl"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_a_real_session_appends_one_record(tmp_path: Path) -> None:
    work = gate_workspace(tmp_path)
    done = run_session(work)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = ledger_lines(work / "baselines")
    assert len(lines) == 1
    record = json.loads(lines[0])
    report = work / "burgers1d_eval.json"
    assert record["schema"] == SCHEMA
    assert record["suite"] == "burgers1d"
    assert record["champion"] == 1
    assert record["verdict"] == "pass"
    assert record["promotable"] is True and record["promoted"] is False
    assert record["eval"] == "burgers1d_eval.json"  # relative to where the session ran
    assert record["eval_sha256"] == hashlib.sha256(report.read_bytes()).hexdigest()
    reported = json.loads(report.read_text())["metrics"]["nrmse"]
    nrmse = record["metrics"]["nrmse"]
    assert nrmse["value"] == pytest.approx(reported)
    assert nrmse["status"] == "improved" and nrmse["direction"] == "lower"
    assert nrmse["change_pct"] < 0 and nrmse["baseline"] > nrmse["value"]
    assert record["time"].endswith("Z") and record["failed"] == []


def test_no_ledger_leaves_the_ledger_alone(tmp_path: Path) -> None:
    work = gate_workspace(tmp_path)
    done = run_session(work, "--no-ledger")
    assert done.returncode == 0, done.stdout + done.stderr
    assert ledger_lines(work / "baselines") == []


def _result(store: BaselineStore | None, suite: str = "demo",
            plan: bool = True) -> SimpleNamespace:
    outcomes = [
        Outcome("regression/nrmse", "regression", "nrmse", Status.FAIL, 0.13, 0.10, 30.0,
                10.0, "worse", {"direction": "lower"}),
        Outcome("regression/bc_violation", "regression", "bc_violation", Status.PASS, 0.4,
                0.3, 33.3, 10.0, "", {"direction": "lower"}),
        Outcome("physics/bc_violation/spike", "physics", "bc_violation", Status.FAIL, 0.4,
                0.3, 33.3, 0.45, ""),
        Outcome("regression/odd", "regression", "odd", Status.FAIL, float("nan"), 1.0),
        Outcome("promotion/nrmse", "promotion", "nrmse", Status.NOT_PROMOTABLE, 0.13, 0.10),
    ]
    evaluation = SimpleNamespace(path=Path("reports/eval.json"), sha256="ab" * 32,
                                 run_id="run-7")
    the_plan = SimpleNamespace(evaluation=evaluation, store=store, suite=suite,
                               run_info={}, settings=SimpleNamespace(workdir=Path("/nowhere")))
    return SimpleNamespace(verdict="fail", promotable=False, promoted=False,
                           new_baseline_version=None, outcomes=outcomes, suite=suite,
                           baseline_version=3, eval_path="reports/eval.json",
                           plan=the_plan if plan else None)


def test_run_record_holds_each_gated_metric() -> None:
    record = run_record(_result(None))
    assert record["run_id"] == "run-7" and record["champion"] == 3
    assert record["eval"] == "reports/eval.json"
    # not promotable is not a failed gate (the verdict does not include promotion)
    assert record["failed"] == ["regression/nrmse", "physics/bc_violation/spike",
                                "regression/odd"]
    assert record["metrics"]["nrmse"] == {"value": 0.13, "baseline": 0.10, "change_pct": 30.0,
                                          "status": "fail", "direction": "lower"}
    # the regression gate passed, the spike failed: the metric is marked failed
    assert record["metrics"]["bc_violation"]["status"] == "fail"
    assert record["metrics"]["odd"]["value"] == "nan"  # strict JSON
    json.dumps(record, allow_nan=False)


def test_sink_appends_and_reads_back(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "baselines")
    store.promote("demo", expected=None, provenance={}, metrics={"nrmse": 0.1})
    sink = LedgerSink()
    sink.pytest_gates_session_finished(_result(store))
    sink.pytest_gates_session_finished(_result(store))
    runs, warnings = read_runs(store, "demo")
    assert warnings == [] and len(runs) == 2
    assert runs[0]["metrics"]["odd"]["value"] == "nan"  # as written: strict JSON


def test_read_only_store_is_one_warning_line(tmp_path: Path) -> None:
    lines: list[str] = []
    missing = BaselineStore(tmp_path / "not-there")
    sink = LedgerSink(warn=lines.append)
    sink.pytest_gates_session_finished(_result(missing))  # must not raise
    assert len(lines) == 1 and "read-only" in lines[0] and "demo" in lines[0]
    assert sink.record is None


def test_no_plan_no_record(tmp_path: Path) -> None:
    lines: list[str] = []
    LedgerSink(warn=lines.append).pytest_gates_session_finished(_result(None, plan=False))
    assert lines == []


def test_corrupt_and_foreign_lines_are_skipped_by_line_number(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "baselines")
    store.promote("demo", expected=None, provenance={}, metrics={"nrmse": 0.1})
    good = json.dumps({"schema": SCHEMA, "time": "2026-01-01T00:00:00Z", "metrics": {}})
    path = tmp_path / "baselines" / "demo" / "runs.jsonl"
    path.write_text("\n".join([good, "{not json", '{"event": "something else"}', "[1, 2]",
                               good, '{"schema": "gates-run/1", "time": "t", "metr']))
    runs, warnings = read_runs(store, "demo")
    assert len(runs) == 2
    text = "\n".join(warnings)
    for number in (2, 3, 4, 6):
        assert f"line {number}" in text, text
    assert "line 1 " not in text and "line 5" not in text


_APPENDER = textwrap.dedent("""
    import sys
    from gates.ledger import append_run
    from gates.store import BaselineStore
    store = BaselineStore(sys.argv[1])
    who, count = sys.argv[2], int(sys.argv[3])
    pad = "x" * 20000  # far beyond a pipe buffer: one write must still be one line
    i = 0
    while count < 0 or i < count:
        append_run(store, "demo", {"schema": "gates-run/1", "time": "2026-01-01T00:00:00Z",
                                   "who": who, "i": i, "pad": pad, "metrics": {}})
        i += 1
""")


def _appenders(root: Path, n: int, count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", _APPENDER, str(root), f"p{k}", str(count)],
                             cwd=ROOT) for k in range(n)]


def test_concurrent_appends_lose_no_line_and_never_interleave(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    BaselineStore(root).promote("demo", expected=None, provenance={}, metrics={"x": 1.0})
    procs = _appenders(root, 4, 40)
    assert all(p.wait(timeout=300) == 0 for p in procs)
    lines = (root / "demo" / "runs.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 160
    seen = {(r["who"], r["i"]) for r in records}
    assert seen == {(f"p{k}", i) for k in range(4) for i in range(40)}
    for k in range(4):  # each writer's own lines stay in order
        mine = [r["i"] for r in records if r["who"] == f"p{k}"]
        assert mine == sorted(mine)


def test_killed_appenders_leave_no_partial_line(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    store = BaselineStore(root)
    store.promote("demo", expected=None, provenance={}, metrics={"x": 1.0})
    path = root / "demo" / "runs.jsonl"
    procs = _appenders(root, 3, -1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 200_000):
        time.sleep(0.05)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.wait(timeout=30)
    data = path.read_bytes()
    assert data.endswith(b"\n")
    for line in data.split(b"\n")[:-1]:
        json.loads(line)
    runs, warnings = read_runs(store, "demo")
    assert warnings == [] and len(runs) == data.count(b"\n") >= 10
    # and the ledger takes the next line as usual
    append_run(store, "demo", {"schema": SCHEMA, "time": "t", "metrics": {}})
    assert len(read_runs(store, "demo")[0]) == len(runs) + 1


def test_records_are_strict_json_even_with_numpy_numbers(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "baselines")
    store.promote("demo", expected=None, provenance={}, metrics={"x": 1.0})
    outcome = Outcome("regression/x", "regression", "x", Status.PASS, float(np.float64(0.5)),
                      1.0)
    result: Any = _result(store)
    result.outcomes = [outcome]
    LedgerSink().pytest_gates_session_finished(result)
    runs, _ = read_runs(store, "demo")
    assert runs[0]["metrics"]["x"]["value"] == 0.5


def test_concurrent_real_sessions_and_a_killed_one(tmp_path: Path) -> None:
    """Three gate sessions at once each leave one whole line; one killed mid-way leaves its
    whole line or none."""
    work = gate_workspace(tmp_path)
    env = hermetic_wandb_env(work)
    command = [sys.executable, "-m", "gates", "run", "--eval", "burgers1d_eval.json",
               "--baselines", "baselines", "--wandb", "off", "-q", "-p", "no:cacheprovider"]
    procs = [subprocess.Popen([*command, "--out", f"out{k}"], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for k in range(4)]
    time.sleep(float(np.random.default_rng().uniform(1.0, 4.0)))
    os.kill(procs[3].pid, signal.SIGKILL)
    assert [p.wait(timeout=300) for p in procs[:3]] == [0, 0, 0]
    procs[3].wait(timeout=30)
    data = (work / "baselines" / "burgers1d" / "runs.jsonl").read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) in (3, 4)
    assert all(json.loads(line)["schema"] == SCHEMA for line in lines)
    runs, warnings = read_runs(BaselineStore(work / "baselines"), "burgers1d")
    assert warnings == [] and len(runs) == len(lines)
