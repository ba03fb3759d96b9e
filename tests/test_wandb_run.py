"""The pinned wandb's own reader (``wandb leet inspect``) reads back a real offline run.

One subprocess (hermetic environment, offline) writes a run with what the W&B sink logs:
tables, summary, a bar chart, an alert and a baseline artifact. This is the one test that
pins W&B's internal record format; every other W&B test goes through tests/wandb_run.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import hermetic_wandb_env
from tests.wandb_run import OfflineRun, find_offline_runs, inspect, read_offline_run

RUN_ID = "gates0001"

WRITE_RUN = textwrap.dedent(
    f"""
    import wandb

    run = wandb.init(id={RUN_ID!r}, project="p", group="g", job_type="gates",
                     config={{"gates": {{"eval_run_id": "abc"}}}})
    results = wandb.Table(columns=["gate", "status", "current"],
                          data=[["rmse", "pass", 0.01], ["mass", "fail", 2.5]])
    run.log({{"gates/results": results}})
    run.summary["gates/verdict"] = "pass"
    run.summary["gates/passed"] = 3
    bars = wandb.Table(columns=["metric", "value"], data=[["mass", 0.2], ["energy", 0.1]])
    run.log({{"physics/violations": wandb.plot.bar(bars, "metric", "value", title="V")}})
    run.alert(title="T", text="line1\\nline2", level="WARN", wait_duration=300)
    baseline = wandb.Artifact("burgers1d", type="baseline", metadata={{"version": 1}})
    with baseline.new_file("version.json") as f:
        f.write('{{"rmse": 0.01}}')
    run.log_artifact(baseline, aliases=["champion", "v1"])
    run.finish()
    wandb.teardown()
    """
)


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wandb_offline")
    proc = subprocess.run([sys.executable, "-c", WRITE_RUN], env=hermetic_wandb_env(root),
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = find_offline_runs(root)
    assert run_dir.name.endswith(f"-{RUN_ID}")
    return run_dir


@pytest.fixture(scope="module")
def run(produced: Path) -> OfflineRun:
    return read_offline_run(produced)


def test_the_direct_reader_is_the_cli_command(produced: Path) -> None:
    """``wandb leet inspect`` runs wandb-core with the same flags: same output."""
    for summary in (False, True):
        assert inspect(produced, summary=summary) == inspect(produced, summary=summary,
                                                             via_cli=True)


def test_record_format_of_the_pinned_wandb(produced: Path) -> None:
    records = [json.loads(line) for line in inspect(produced).splitlines()]
    assert records[0]["type"] == "header"
    assert records[0]["header"]["version_info"]["producer"].startswith("0.31.0")
    assert records[1]["type"] == "run" and records[-1]["type"] == "exit"
    kinds = {r["type"] for r in records}
    assert {"history", "summary", "config", "alert", "artifact"} <= kinds
    state = json.loads(inspect(produced, summary=True))
    assert state["state"] == "finished" and state["run_id"] == RUN_ID


def test_identity_config_and_summary(run: OfflineRun) -> None:
    assert (run.run_id, run.project, run.group, run.job_type) == (RUN_ID, "p", "g", "gates")
    assert run.exited and run.exit_code == 0
    assert run.config["gates"] == {"eval_run_id": "abc"}
    assert run.summary["gates/verdict"] == "pass"  # a key with "/" stays flat
    assert run.summary["gates/passed"] == 3
    assert run.summary["gates/results"]["_type"] == "table-file"


def test_tables_and_charts(run: OfflineRun) -> None:
    assert run.table_rows("gates/results") == [
        {"gate": "rmse", "status": "pass", "current": 0.01},
        {"gate": "mass", "status": "fail", "current": 2.5}]
    spec = run.charts["physics/violations"]
    assert spec["panel_config"]["panelDefId"] == "wandb/bar/v0"
    assert run.table_rows("physics/violations") == [{"metric": "mass", "value": 0.2},
                                                    {"metric": "energy", "value": 0.1}]
    with pytest.raises(KeyError):
        run.table("regression/comparison")


def test_alert_and_artifact(run: OfflineRun) -> None:
    assert run.alerts == [{"title": "T", "text": "line1\nline2", "level": "WARN",
                           "wait_duration": 300}]
    (baseline,) = [a for a in run.artifacts if a["type"] == "baseline"]
    assert baseline["name"] == "burgers1d"
    assert set(baseline["aliases"]) == {"champion", "v1", "latest"}
    assert baseline["metadata"] == {"version": 1}
    assert [(e["path"], e["size"]) for e in baseline["entries"]] == [
        ("version.json", len('{"rmse": 0.01}'))]


def test_missing_or_unreadable_runs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="found 0"):
        read_offline_run(tmp_path)
    broken = tmp_path / "offline-run-20000101_000000-broken"
    broken.mkdir()
    (broken / "run-broken.wandb").write_bytes(b"NOT A LOG")
    with pytest.raises(ValueError, match="run-broken.wandb"):
        read_offline_run(broken)


def test_sync_dry_run_lists_the_run(produced: Path) -> None:
    """Never a real ``wandb sync`` in a test: with no network it retries forever."""
    proc = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(produced)],
                          env=hermetic_wandb_env(produced.parent.parent), capture_output=True,
                          text=True, timeout=60, cwd=produced.parent.parent)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Would sync 1 run(s)" in output and f"run-{RUN_ID}.wandb" in output
