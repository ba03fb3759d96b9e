"""The W&B sink end to end: real gate sessions in offline mode, read back from the run's
transaction log and table files (tests/wandb_run.py), plus failure isolation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Workspace
from tests.wandb_run import OfflineRun, find_offline_runs, read_offline_run


def run_session(pytester: pytest.Pytester, ws: Workspace, env: dict[str, str],
                *extra: str, wandb: str = "offline") -> pytest.RunResult:
    pytester._monkeypatch.setattr("os.environ", env)  # subprocess inherits this environment
    return pytester.runpytest_subprocess(*ws.args(*extra, wandb=wandb), timeout=180)


def the_run(folder: Path) -> OfflineRun:
    runs = find_offline_runs(folder)
    assert len(runs) == 1, runs
    return read_offline_run(runs[0])


def inject(ws: Workspace, **metrics: float) -> None:
    data = json.loads(ws.eval.read_text())
    data["metrics"].update(metrics)
    ws.eval.write_text(json.dumps(data))


def test_a_failing_session_logs_every_key_of_the_contract(
        pytester: pytest.Pytester, workspace: Workspace, subprocess_env: dict[str, str]
) -> None:
    inject(workspace, nrmse=0.02, mae=0.0055, bc_violation=1.2)
    info = workspace.root / "run_info.json"
    info.write_text(json.dumps({"id": "evalrun1", "name": "burgers-eval", "entity": "lab",
                                "project": "surrogates", "group": "exp-42",
                                "url": "https://example.invalid/lab/surrogates/evalrun1"}))
    result = run_session(pytester, workspace, subprocess_env, "--wandb-info", str(info))
    assert result.ret == 1
    run = the_run(workspace.eval.parent)
    gates = json.loads((workspace.eval.parent / "gates.json").read_text())
    assert run.exited and run.group == "exp-42" and run.job_type == "gates"
    assert run.project == "surrogates"
    assert run.config["gates"]["eval_run_id"] == "evalrun1"
    assert run.config["gates"]["suite"] == "burgers1d"

    rows = run.table_rows("gates/results")
    assert [r["gate"] for r in rows] == [g["id"] for g in gates["gates"]]
    for row, gate in zip(rows, gates["gates"], strict=True):
        assert (row["status"], row["metric"], row["message"]) == (gate["status"],
                                                                  gate["metric"],
                                                                  gate["message"])
        assert row["current"] == pytest.approx(gate["current"])
    comparison = run.table_rows("regression/comparison")
    assert {(r["Status"], r["Metric"]) for r in comparison} >= {
        ("REGRESSION", "nrmse"), ("REGRESSION", "bc_violation"), ("IMPROVEMENT", "mae")}
    assert all(set(r) == {"Status", "Metric", "Baseline", "Current", "Change"}
               for r in comparison)

    s = run.summary
    assert s["gates/verdict"] == "fail"
    assert s["gates/passed"] == sum(g["status"] in ("pass", "improved", "no_baseline")
                                    for g in gates["gates"])
    assert s["gates/failed"] == len(gates["gates"]) - s["gates/passed"]
    assert s["gates/regression/nrmse"] == "fail"
    assert s["gates/physics/bc_violation/ceiling"] == "fail"
    assert s["regression/status"] == "regressions"
    assert s["regression/num_regressions"] == 2
    assert s["regression/num_improvements"] >= 1
    assert "physics/violations" in run.charts
    bars = run.table_rows("physics/violations")
    assert {r["metric"] for r in bars} == {"bc_violation", "conservation_gap",
                                           "negativity_penalty"}

    alerts = {a["title"]: a for a in run.alerts}
    regression = alerts["Performance Regression Detected"]
    assert regression["level"] == "WARN" and regression["wait_duration"] == 1800
    assert "nrmse: 0.0162498 -> 0.02 (+23.1%)" in regression["text"].splitlines()
    assert "bc_violation: 0.00381853 -> 1.2 (+31325.7%)" in regression["text"]
    physics = alerts["Physics Constraint Violations Detected"]
    assert "physics/bc_violation/ceiling: bc_violation = 1.2 > ceiling 1" in physics["text"]
    assert "physics/bc_violation/spike" in physics["text"]

    sync = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run",
                           str(run.dir)], capture_output=True, text=True, timeout=120,
                          env=subprocess_env, cwd=workspace.root)
    assert sync.returncode == 0
    assert f"run-{run.run_id}.wandb" in sync.stdout + sync.stderr


def test_promotion_logs_the_baseline_artifact(
        pytester: pytest.Pytester, workspace: Workspace, subprocess_env: dict[str, str]
) -> None:
    result = run_session(pytester, workspace, subprocess_env, "--promote")
    assert result.ret == 0
    run = the_run(workspace.eval.parent)
    baseline = [a for a in run.artifacts if a["type"] == "baseline"]
    assert len(baseline) == 1
    artifact = baseline[0]
    assert artifact["name"] == "burgers1d"
    assert {"champion", "v2"} <= set(artifact["aliases"])
    assert artifact["metadata"]["version"] == 2
    assert artifact["metadata"]["provenance"]["eval_sha256"]
    assert {e["path"] for e in artifact["entries"]} == {"version.json", "samples.npz"}
    assert run.summary["gates/verdict"] == "pass"
    assert run.summary["regression/status"] == "pass"


def test_xdist_writes_exactly_one_run(pytester: pytest.Pytester, workspace: Workspace,
                                      subprocess_env: dict[str, str]) -> None:
    result = run_session(pytester, workspace, subprocess_env, "-n", "2")
    assert result.ret == 0
    run = the_run(workspace.eval.parent)
    assert len(run.table_rows("gates/results")) == 14


def test_wandb_dir_overrides_the_location(pytester: pytest.Pytester, workspace: Workspace,
                                          subprocess_env: dict[str, str]) -> None:
    elsewhere = workspace.root / "wandb-dir"
    elsewhere.mkdir()
    run_session(pytester, workspace, {**subprocess_env, "WANDB_DIR": str(elsewhere)})
    assert len(find_offline_runs(elsewhere)) == 1
    assert not find_offline_runs(workspace.eval.parent)


BROKEN_WANDB = "raise ImportError('wandb is not installed (simulated)')\n"


@pytest.mark.parametrize("case", ["not-installed", "init-raises", "unreachable", "off"])
def test_wandb_trouble_never_changes_a_verdict(
        pytester: pytest.Pytester, workspace: Workspace, subprocess_env: dict[str, str],
        case: str) -> None:
    env = dict(subprocess_env)
    mode = "online"
    if case == "not-installed":
        # wandb cannot be uninstalled inside a test run: a package of that name that
        # fails to import, first on the path, is what a missing wandb looks like.
        shim = workspace.root / "shim" / "wandb"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text(BROKEN_WANDB)
        env["PYTHONPATH"] = str(shim.parent)
    elif case == "init-raises":
        env.pop("WANDB_API_KEY", None)  # online without a key: wandb.init raises
        env["HOME"] = str(workspace.root)
    elif case == "unreachable":
        env.update(WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9",
                   GATES_WANDB_INIT_TIMEOUT="5")
    else:
        mode = "off"
    # a pass must stay a pass; one case also shows a fail staying a fail
    sessions: list[tuple[str, dict[str, float]]] = [("pass", {})]
    if case == "init-raises":
        sessions.append(("fail", {"nrmse": 0.03}))
    for verdict, extra in sessions:
        inject(workspace, **extra)
        result = run_session(pytester, workspace, env, wandb=mode)
        assert result.ret == (0 if verdict == "pass" else 1)
        gates = json.loads((workspace.eval.parent / "gates.json").read_text())
        assert gates["verdict"] == verdict
        for name in ("gates.md", "gates_change.png", "gates_physics.png"):
            assert (workspace.eval.parent / name).exists()
        warnings = [line for line in result.errlines if "W&B logging skipped" in line]
        assert len(warnings) == (0 if case == "off" else 1), result.errlines
    assert not find_offline_runs(workspace.eval.parent)


LAZY_CHECK = """
import sys
def pytest_unconfigure(config):
    with open(config.rootpath / "imported.txt", "w") as handle:
        handle.write(str("wandb" in sys.modules))
"""


def test_wandb_is_imported_only_when_logging(pytester: pytest.Pytester,
                                             workspace: Workspace,
                                             subprocess_env: dict[str, str]) -> None:
    plugin = workspace.root / "lazycheck.py"
    plugin.write_text(LAZY_CHECK.replace("config.rootpath", f"__import__('pathlib').Path("
                                                           f"{str(workspace.root)!r})"))
    env = {**subprocess_env, "PYTHONPATH": str(workspace.root)}
    run_session(pytester, workspace, env, "-p", "lazycheck", wandb="off")
    assert (workspace.root / "imported.txt").read_text() == "False"
    assert not find_offline_runs(workspace.eval.parent)
    # offline, wandb is imported by the child that logs (gates.forked), or in-process
    run_session(pytester, workspace, env, "-p", "lazycheck", wandb="offline")
    assert len(find_offline_runs(workspace.eval.parent)) == 1


def test_dashboards_are_logged_beside_the_gates(
        pytester: pytest.Pytester, workspace: Workspace, subprocess_env: dict[str, str]
) -> None:
    from tests.test_dashboards import (
        CONFIG_YAML,
        write_leaderboard,
        write_training_log,
        write_ttc,
    )

    folder = workspace.eval.parent
    steps = write_ttc(folder / "burgers1d_eval_ttc_step_logs.json")
    (folder / "burgers1d_eval.config.yaml").write_text(CONFIG_YAML)
    truth = write_training_log(folder / "train.jsonl")
    records = write_leaderboard(folder / "leaderboard.csv")
    result = run_session(pytester, workspace, subprocess_env, "--training-log",
                         str(folder / "train.jsonl"), "--leaderboard",
                         str(folder / "leaderboard.csv"))
    assert result.ret == 0
    run = the_run(folder)

    stages = {r["Stage"]: r for r in run.table_rows("training_summary/stage_comparison")}
    assert set(stages) == set(truth)
    for stage, expected in truth.items():
        assert stages[stage]["Final Loss"] == pytest.approx(expected.final)
        assert stages[stage]["Best Loss"] == pytest.approx(expected.best)
    config = {r["Parameter"]: r["Value"] for r in run.table_rows("training_summary/configuration")}
    assert config["ttc.beam_width"] == "3"
    summary = run.table_rows("eval_summary/full")
    assert {r["Category"] for r in summary} >= {"Accuracy", "Physics"}
    assert {"nrmse", "bc_violation"} <= {r["Metric"] for r in summary}
    full = run.table_rows("leaderboard/full_table")
    assert len(full) == len(records)
    top = run.table_rows("leaderboard/top_5_nrmse")
    numeric = sorted(float(r["metric:nrmse"]) for r in records
                     if r["metric:nrmse"] not in ("", "n/a"))
    assert [r["metric:nrmse"] for r in top] == pytest.approx(numeric[:5])
    assert len(run.table_rows("leaderboard/entry")) == 1
    assert isinstance(run.summary["leaderboard_nrmse"], float)
    assert run.summary["leaderboard_run_id"].startswith("run-")
    assert run.summary["ttc/summary"]["_type"] == "image-file"
    assert "ttc/reward_curve" in run.charts
    curve = run.table_rows("ttc/reward_curve")
    assert len(curve) == 2 * len(steps)  # chosen and mean, one point per step each
    png = folder / "burgers1d_eval_ttc_summary.png"
    assert png.stat().st_size > 10_000
    markdown = (folder / "gates.md").read_text()
    for key in ("ttc/summary", "training_summary/stage_comparison", "leaderboard/top_5_nrmse",
                "eval_summary/full", "training_summary/configuration"):
        assert key in markdown


@pytest.mark.parametrize(("mode", "resumes"), [("online", True), ("offline", False)])
def test_online_resumes_the_evaluation_run_offline_sits_beside_it(
        workspace: Workspace, mode: str, resumes: bool) -> None:
    """Online W&B cannot be reached here: this checks where the run would go."""
    from gates.context import Settings, load_context
    from gates.wandb_sink import init_options

    info = workspace.root / "info.json"
    info.write_text(json.dumps({"id": "ev123", "name": "eval-7", "project": "surrogates",
                                "entity": "lab", "group": "sweep-3"}))
    ctx = load_context(Settings(eval=workspace.eval, baselines=workspace.baselines,
                                wandb="off", wandb_info=info))
    options = init_options(ctx, mode)
    assert options["project"] == "surrogates" and options["entity"] == "lab"
    assert options["config"]["gates"]["eval_run_id"] == "ev123"
    if resumes:
        assert options["id"] == "ev123" and options["resume"] == "allow"
        assert "job_type" not in options
    else:
        assert "id" not in options
        assert options["job_type"] == "gates" and options["group"] == "sweep-3"
        assert options["dir"] == str(workspace.eval.parent)
