"""The W&B sink: what it logs and where, checked on the real offline run (read back with
W&B's own reader, tests/wandb_run.py), from hand-built results and from real gate sessions."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from gates.model import Outcome, Status
from gates.sinks.wandb import (
    WandbSink,
    build_record,
    dashboard_items,
    init_options,
    physics_alert,
    regression_alert,
)
from tests.conftest import Workspace, hermetic_wandb_env
from tests.test_dashboards import (
    CONFIG_YAML,
    EXTRA,
    METRICS,
    build_realistic,
    write_leaderboard,
    write_realistic,
    write_training_log,
    write_ttc,
)
from tests.wandb_run import find_offline_runs, session_result, the_run


def outcome(id: str, status: Status, **fields: object) -> Outcome:
    kind, metric = id.split("/")[:2]
    return Outcome(id=id, kind=kind, metric=metric, status=status, **fields)  # type: ignore[arg-type]


OUTCOMES = [
    outcome("regression/nrmse", Status.FAIL, current=0.02, baseline=0.0162498,
            change_pct=23.08, threshold=5.0, message="nrmse is 23.1 % worse",
            evidence={"method": "paired-bootstrap", "change": 0.2308, "ci_low": 0.1,
                      "ci_high": 0.3, "p_value": 0.001, "n": 32, "detectable": 0.05,
                      "seed": 7}),
    outcome("regression/mae", Status.IMPROVED, current=0.005, baseline=0.0065,
            change_pct=-23.0, threshold=5.0, message="mae improves by 23.0 %"),
    outcome("regression/rmse", Status.WARN, current=0.013, baseline=0.0117,
            change_pct=11.1, threshold=5.0, message="rmse is 11.1 % worse", severity="warn"),
    outcome("physics/bc_violation/ceiling", Status.FAIL, current=1.2, threshold=1.0,
            message="bc_violation = 1.2 > ceiling 1"),
    outcome("physics/bc_violation/spike", Status.FAIL, current=1.2, baseline=0.0038,
            message="bc_violation jumped 315x"),
    outcome("physics/conservation_gap/ceiling", Status.PASS, current=0.5, threshold=5.0,
            message="within ceiling"),
    outcome("promotion/nrmse", Status.NOT_PROMOTABLE, message="not promotable"),
]


# --- the record, without wandb --------------------------------------------------------------


def test_alert_lines() -> None:
    lines = regression_alert(OUTCOMES).splitlines()
    assert lines == ["nrmse: 0.0162498 -> 0.02 (+23.1%)",
                     "rmse: 0.0117 -> 0.013 (+11.1%) (severity warn)"]
    physics = physics_alert(OUTCOMES).splitlines()
    assert physics == ["physics/bc_violation/ceiling: bc_violation = 1.2 > ceiling 1",
                       "physics/bc_violation/spike: bc_violation jumped 315x"]


def test_the_evidence_line_follows_the_message(tmp_path: Path) -> None:
    """The terminal's evidence line (change, interval, p-value, n, detectable, seed)."""
    from gates.sinks.local import evidence_text

    row = build_record(session_result(tmp_path, OUTCOMES))["tables"]["gates/results"]["rows"][0]
    assert row[-1] == f"nrmse is 23.1 % worse [{evidence_text(OUTCOMES[0])}]"
    assert "p=0.001" in row[-1] and "n=32" in row[-1] and "seed 7" in row[-1]


def test_record_holds_the_contract(tmp_path: Path) -> None:
    result = session_result(tmp_path, OUTCOMES, promotable=False,
                            promotion_reasons=["nrmse improves by 0.0 % < required 1 %"])
    record = build_record(result)
    assert set(record["tables"]) == {"gates/results", "regression/comparison"}
    assert record["tables"]["gates/results"]["columns"] == [
        "gate", "kind", "metric", "baseline", "current", "change_pct", "threshold",
        "status", "message"]
    comparison = record["tables"]["regression/comparison"]["rows"]
    assert [r[:2] for r in comparison] == [["REGRESSION", "nrmse"], ["IMPROVEMENT", "mae"]]
    s = record["summary"]
    assert (s["gates/verdict"], s["gates/promotable"], s["gates/promoted"]) == \
        ("fail", False, False)
    assert s["gates/passed"] + s["gates/failed"] == len(OUTCOMES)
    assert s["gates/regression/rmse"] == "warn"
    assert (s["regression/status"], s["regression/num_regressions"],
            s["regression/num_improvements"]) == ("regressions", 1, 1)
    assert s["gates/promotion_reasons"].startswith("nrmse improves")
    assert record["bars"]["physics/violations"]["table"]["rows"] == [
        ["bc_violation", 1.2], ["conservation_gap", 0.5]]
    assert record["artifact"] is None


# --- placement --------------------------------------------------------------------------------


def plan_of(run_info: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(run_info=run_info, evaluation=SimpleNamespace(path=None),
                           champion=None, suite="burgers1d")


def test_online_resumes_the_evaluation_run(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    info = {"run_id": "ev123", "name": "eval-7", "project": "surrogates", "entity": "lab",
            "group": "sweep-3"}  # wandb_context.json names the id run_id
    options = init_options(plan_of(info), tmp_path, "online")
    assert (options["id"], options["resume"]) == ("ev123", "allow")
    assert (options["project"], options["entity"]) == ("surrogates", "lab")
    assert "job_type" not in options
    assert options["config"]["gates"]["eval_run_id"] == "ev123"


def test_the_child_runs_in_its_runs_mode_without_the_evaluations_id(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """wandb's process-wide mode is the run's (offline: no telemetry exporters trying to
    reach the server), and nothing from the environment decides the run's id."""
    from gates.sinks.wandb import child_env

    for name in ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_RESUME_FROM", "WANDB_FORK_FROM"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_PROJECT", "kept")
    for mode in ("offline", "online"):
        env = child_env(mode)
        assert env["WANDB_MODE"] == mode and env["WANDB_PROJECT"] == "kept"
        assert not {"WANDB_RUN_ID", "WANDB_RESUME", "WANDB_RESUME_FROM",
                    "WANDB_FORK_FROM"} & set(env)


def test_offline_never_takes_the_evaluation_id(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_RUN_ID", "fromenv1")
    monkeypatch.setenv("WANDB_RUN_GROUP", "grp-env")
    monkeypatch.setenv("WANDB_PROJECT", "proj-env")
    monkeypatch.setenv("WANDB_ENTITY", "ent-env")
    for mode in ("offline", "online"):
        options = init_options(plan_of({}), tmp_path, mode)
        assert options["config"]["gates"]["eval_run_id"] == "fromenv1"
        assert (options["project"], options["entity"]) == ("proj-env", "ent-env")
    offline = init_options(plan_of({}), tmp_path, "offline")
    assert offline["id"] != "fromenv1" and "resume" not in offline
    assert (offline["job_type"], offline["group"]) == ("gates", "grp-env")
    assert offline["dir"] == str(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    assert init_options(plan_of({}), tmp_path, "offline")["dir"] == str(tmp_path / "elsewhere")


def test_a_hand_built_session_is_read_back(tmp_path: Path) -> None:
    result = session_result(tmp_path, OUTCOMES, run_info={"id": "ev1", "group": "g"})
    WandbSink().pytest_gates_session_finished(result)
    run = the_run(tmp_path)
    assert result.wandb_run_dir == run.dir and not result.notes
    assert (run.group, run.job_type, run.config["gates"]["eval_run_id"]) == \
        ("g", "gates", "ev1")
    assert [r["gate"] for r in run.table_rows("gates/results")] == [o.id for o in OUTCOMES]
    assert run.summary["gates/regression/rmse"] == "warn"
    assert {a["title"] for a in run.alerts} == {"Performance Regression Detected",
                                                "Physics Constraint Violations Detected"}


def test_more_rows_than_wandbs_table_limit_are_all_logged(tmp_path: Path) -> None:
    """wandb cuts a run's table at 10,000 rows unless told otherwise: 10,000 gates fit."""
    many = [outcome(f"regression/m{i}", Status.PASS, current=0.1, baseline=0.1,
                    change_pct=0.0, threshold=10.0, message="ok") for i in range(10_005)]
    result = session_result(tmp_path, many)
    WandbSink().pytest_gates_session_finished(result)
    run = the_run(tmp_path)
    rows = run.table_rows("gates/results")
    assert len(rows) == len(many) and rows[-1]["gate"] == "regression/m10004"
    assert run.summary["gates/regression/m10004"] == "pass"


SAME_TABLES = """
import json, pickle, sys
import wandb
from gates.sinks.wandb_child import _TYPES, _plain_table

run = wandb.init(mode="offline", project="p", dir=sys.argv[1])
out, payload = {}, {}
for key, spec in pickle.loads(sys.stdin.buffer.read()).items():  # the sink pickles too
    tables = []
    for cls in (wandb.Table, _plain_table(wandb)):
        table = cls(columns=spec["columns"], data=[], optional=True,
                    dtype=[_TYPES[t] for t in spec["types"]])
        table.data = spec["rows"]
        tables.append(table)
    out[key] = [t.to_json(wandb.Artifact("t", "run_table")) for t in tables]
    payload |= {f"stock/{key}": tables[0], f"plain/{key}": tables[1]}
run.log(payload)  # in one call, as the sink logs
out["run_dir"] = run.dir
run.finish()
print(json.dumps(out))
"""


def test_plain_tables_write_what_wandb_table_writes(tmp_path: Path) -> None:
    """The child's fast table (gates.sinks.wandb_child._plain_table) is for plain cells
    only, and every table a session logs holds only those; for them it writes the
    documents the pinned wandb.Table writes: the run's media file byte for byte, and the
    artifact entry."""
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "eval.json").write_text(json.dumps({"metrics": METRICS, "extra": EXTRA}))
    write_realistic(boards)
    record = build_record(session_result(tmp_path, OUTCOMES))
    record["tables"].update(dashboard_items(build_realistic(boards))["tables"])
    tables = {**record["tables"], **{key: bar["table"] for key, bar in record["bars"].items()}}
    assert {"gates/results", "physics/violations", "training_summary/stage_comparison",
            "leaderboard/full_table"} <= set(tables)
    cells = [v for spec in tables.values() for row in spec["rows"] for v in row]
    assert {type(v) for v in cells} == {str, float, type(None)}
    assert all(math.isfinite(v) for v in cells if isinstance(v, float))
    done = subprocess.run([sys.executable, "-c", SAME_TABLES, str(tmp_path / "run")],
                          input=pickle.dumps(tables), capture_output=True,
                          env=hermetic_wandb_env(tmp_path / "home"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:].decode(errors="replace")
    out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    media = Path(out.pop("run_dir")) / "media" / "table"
    assert set(out) == set(tables)
    for key, (stock, plain) in out.items():
        assert plain == stock, key
        assert stock["nrows"] == len(tables[key]["rows"])
        (a,) = media.glob(f"stock/{key}_0_*.table.json")
        (b,) = media.glob(f"plain/{key}_0_*.table.json")
        assert b.read_bytes() == a.read_bytes(), key


SAME_SUMMARY = """
import json, pickle, sys
import wandb
from wandb.sdk.interface import summary_record as sr
from wandb.sdk.interface.interface import InterfaceBase
from gates.sinks.wandb_child import _plain_summaries

run = wandb.init(mode="offline", project="p", dir=sys.argv[1])
_plain_summaries()
plain = InterfaceBase._make_summary
out = []
for summary in pickle.loads(sys.stdin.buffer.read()):
    record = sr.SummaryRecord()  # as wandb_summary.Summary.update builds it
    for key, value in summary.items():
        item = sr.SummaryItem()
        item.key, item.value = (key,), value
        record.update.append(item)
    iface = run._interface
    stock = plain.general(iface, record, run).SerializeToString()
    ours = plain(iface, record, run).SerializeToString()
    out.append([stock == ours, len(stock)])
run.finish()
print(json.dumps(out))
"""


def test_plain_summaries_encode_what_wandb_encodes(tmp_path: Path) -> None:
    """The child's short way for a summary update of plain values
    (gates.sinks.wandb_child._plain_summaries) gives wandb's own record byte for byte, for
    everything a session puts in the summary; a value that is not plain goes wandb's way."""
    from gates.sinks.wandb_child import _is_plain

    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "eval.json").write_text(json.dumps({"metrics": METRICS, "extra": EXTRA}))
    write_realistic(boards)
    result = session_result(tmp_path, OUTCOMES, promotable=False,
                            promotion_reasons=["nrmse improves by 0.0 % < required 1 %"])
    summary = {**build_record(result)["summary"],
               **dashboard_items(build_realistic(boards))["summary"]}
    assert any(k.startswith("leaderboard_") for k in summary)
    assert all(_is_plain(v) for v in summary.values())
    edge = {"text": "é ✅ \"quoted\"\n", "tiny": 1e-300, "big": -2.5e17, "int": 2**70,
            "yes": True, "none": None}
    odd = {"gates/verdict": "pass", "nan": float("nan")}  # not plain: wandb's own way
    assert not all(_is_plain(v) for v in odd.values())
    done = subprocess.run([sys.executable, "-c", SAME_SUMMARY, str(tmp_path / "run")],
                          input=pickle.dumps([summary, edge, odd]), capture_output=True,
                          env=hermetic_wandb_env(tmp_path / "home"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:].decode(errors="replace")
    same = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert [s for s, _ in same] == [True, True, True]
    assert all(size > 0 for _, size in same)


def test_the_childs_json_dump_writes_what_json_dump_writes() -> None:
    """OneShotJson, through which wandb's artifact module writes table entries in the
    W&B child, writes json.dump's text."""
    import io

    from gates.sinks.wandb_child import OneShotJson

    document = {"_type": "table", "columns": ["gate", "current"], "nrows": 3,
                "data": [["regression/nrmse", 0.1], ["é ✅", 1e-300], [None, -2.5e17]],
                "column_types": {"params": {"type_map": {}}, "wb_type": "typedDict"}}
    for options in ({}, {"sort_keys": True}, {"indent": 2}):
        stock, ours = io.StringIO(), io.StringIO()
        json.dump(document, stock, **options)  # type: ignore[arg-type]
        OneShotJson.dump(document, ours, **options)
        assert ours.getvalue() == stock.getvalue()
    assert OneShotJson().loads("[1]") == [1]  # the rest of json, unchanged


def test_without_wandb_one_warning_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # wandb cannot be uninstalled inside a test run: a package of that name that fails
    # to import, first on the child's path, is what a missing wandb looks like.
    shim = tmp_path / "shim" / "wandb"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('wandb is not installed')\n")
    monkeypatch.setenv("PYTHONPATH", str(shim.parent))
    result = session_result(tmp_path / "out", OUTCOMES)
    WandbSink().pytest_gates_session_finished(result)
    err = capsys.readouterr().err
    assert err.count("gates: warning:") == 1
    assert "W&B logging skipped: ImportError: wandb is not installed" in err
    assert (result.verdict, result.exit_code) == ("fail", 1)
    assert not find_offline_runs(tmp_path)


def test_an_abandoned_session_leaves_no_run(tmp_path: Path) -> None:
    result = session_result(tmp_path, OUTCOMES)
    sink = WandbSink()
    sink.start(result.plan, tmp_path)
    sink.close()
    assert not find_offline_runs(tmp_path)


# --- real gate sessions -----------------------------------------------------------------------


def run_session(pytester: pytest.Pytester, ws: Workspace, env: dict[str, str],
                *extra: str, wandb: str = "offline") -> pytest.RunResult:
    pytester._monkeypatch.setattr("os.environ", env)  # the subprocess inherits this
    return pytester.runpytest_subprocess(*ws.args(*extra, wandb=wandb), timeout=120)


def out_of(ws: Workspace) -> Path:
    return ws.eval.parent / "gates-out"


def inject(ws: Workspace, **metrics: float) -> None:
    data = json.loads(ws.eval.read_text())
    data["metrics"].update(metrics)
    ws.eval.write_text(json.dumps(data))


def test_a_failing_session_logs_every_key_of_the_contract_and_the_dashboards(
        pytester: pytest.Pytester, workspace: Workspace, subprocess_env: dict[str, str]
) -> None:
    inject(workspace, nrmse=0.02, mae=0.0055, bc_violation=1.2)
    info = workspace.root / "run_info.json"
    info.write_text(json.dumps({"id": "evalrun1", "name": "burgers-eval", "entity": "lab",
                                "project": "surrogates", "group": "exp-42"}))
    env = {**subprocess_env, "WANDB_RUN_ID": "evalrun1"}
    folder = workspace.eval.parent  # every sidecar, for the dashboards
    steps = write_ttc(folder / "burgers1d_eval_ttc_step_logs.json")
    (folder / "burgers1d_eval.config.yaml").write_text(CONFIG_YAML)
    truth = write_training_log(folder / "train.jsonl")
    records = write_leaderboard(folder / "leaderboard.csv")
    result = run_session(pytester, workspace, env, "--gates-wandb-info", str(info),
                         "--gates-training-log", str(folder / "train.jsonl"),
                         "--gates-leaderboard", str(folder / "leaderboard.csv"))
    assert result.ret == 1
    out = out_of(workspace)
    run = the_run(out)
    assert run.dir.parent == out / "wandb"  # beside the evaluation's outputs
    gates = json.loads((out / "gates.json").read_text())
    assert run.exited and run.group == "exp-42" and run.job_type == "gates"
    assert run.project == "surrogates" and run.run_id != "evalrun1"
    assert run.config["gates"]["eval_run_id"] == "evalrun1"
    assert run.config["gates"]["suite"] == "burgers1d"

    rows = run.table_rows("gates/results")
    assert [r["gate"] for r in rows] == [g["id"] for g in gates["gates"]]
    for row, gate in zip(rows, gates["gates"], strict=True):
        assert (row["status"], row["metric"]) == (gate["status"], gate["metric"])
        assert row["message"].startswith(gate["message"])
        assert row["current"] == pytest.approx(gate["current"])
    comparison = run.table_rows("regression/comparison")
    assert {(r["Status"], r["Metric"]) for r in comparison} >= {
        ("REGRESSION", "nrmse"), ("REGRESSION", "bc_violation")}

    s = run.summary
    assert s["gates/verdict"] == "fail" and s["gates/promoted"] is False
    assert s["gates/promotable"] == gates["promotable"]
    assert s["gates/passed"] + s["gates/failed"] == len(gates["gates"])
    assert s["gates/regression/nrmse"] == "fail"
    assert s["gates/physics/bc_violation/ceiling"] == "fail"
    assert (s["regression/status"], s["regression/num_regressions"]) == ("regressions", 2)
    assert "physics/violations" in run.charts
    assert "bc_violation" in {r["metric"] for r in run.table_rows("physics/violations")}

    alerts = {a["title"]: a for a in run.alerts}
    regression = alerts["Performance Regression Detected"]
    assert regression["level"] == "WARN" and regression["wait_duration"] == 1800
    nrmse = gates["gates"][[g["id"] for g in gates["gates"]].index("regression/nrmse")]
    assert (f"nrmse: {nrmse['baseline']:.6g} -> 0.02 ({nrmse['change_pct']:+.1f}%)"
            in regression["text"].splitlines())
    physics = alerts["Physics Constraint Violations Detected"]
    assert "physics/bc_violation/ceiling: " in physics["text"]

    # the dashboards, in the same run
    stages = {r["Stage"]: r for r in run.table_rows("training_summary/stage_comparison")}
    assert set(stages) == set(truth)
    for stage, expected in truth.items():
        assert stages[stage]["Final Loss"] == pytest.approx(expected.final)
    config = {r["Parameter"]: r["Value"] for r in run.table_rows("training_summary/configuration")}
    assert config["ttc.beam_width"] == "3"
    assert {"Accuracy", "Physics"} <= {r["Category"] for r in run.table_rows("eval_summary/full")}
    assert len(run.table_rows("leaderboard/full_table")) == len(records)
    assert len(run.table_rows("leaderboard/top_5_nrmse")) == 5
    assert run.summary["ttc/summary"]["_type"] == "image-file"
    assert "ttc/reward_curve" in run.charts
    curve = run.table_rows("ttc/reward_curve")
    series = {r["lineKey"] for r in curve}
    assert {"chosen_reward", "mean_reward"} <= series
    assert len(curve) == len(series) * len(steps)  # one point per step and series

    sync = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(run.dir)],
                          capture_output=True, text=True, timeout=60, env=subprocess_env,
                          cwd=workspace.root)
    assert sync.returncode == 0
    assert f"run-{run.run_id}.wandb" in sync.stdout + sync.stderr


def test_promotion_logs_the_baseline_artifact(
        pytester: pytest.Pytester, workspace: Workspace, subprocess_env: dict[str, str]
) -> None:
    inject(workspace, nrmse=0.012)  # clearly better than the champion: promotable
    result = run_session(pytester, workspace, subprocess_env, "--gates-promote")
    assert result.ret == 0, result.stdout.str()
    run = the_run(out_of(workspace))
    (artifact,) = [a for a in run.artifacts if a["type"] == "baseline"]
    assert artifact["name"] == "burgers1d"
    assert {"champion", "v2"} <= set(artifact["aliases"])
    assert artifact["metadata"]["version"] == 2
    assert "version.json" in {e["path"] for e in artifact["entries"]}
    assert (run.summary["gates/promoted"], run.summary["gates/promotable"]) == (True, True)
    assert run.summary["gates/new_baseline_version"] == 2


def test_xdist_and_wandb_dir(pytester: pytest.Pytester, workspace: Workspace,
                             subprocess_env: dict[str, str]) -> None:
    """Under xdist exactly one run, written by the controller; WANDB_DIR is honoured."""
    elsewhere = workspace.root / "wandb-dir"
    elsewhere.mkdir()
    result = run_session(pytester, workspace, {**subprocess_env, "WANDB_DIR": str(elsewhere)},
                         "-n", "2")
    assert result.ret == 0
    gates = json.loads((out_of(workspace) / "gates.json").read_text())
    run = the_run(elsewhere)
    assert len(run.table_rows("gates/results")) == len(gates["gates"])
    assert not find_offline_runs(out_of(workspace))


LAZY_CHECK = """
import sys
def pytest_unconfigure(config):
    with open({path!r}, "a") as handle:
        handle.write(str("wandb" in sys.modules) + "\\n")
"""


@pytest.mark.parametrize(("mode", "verdict"), [("online", "fail"), ("off", "pass")])
def test_wandb_trouble_never_changes_a_verdict(
        pytester: pytest.Pytester, workspace: Workspace, subprocess_env: dict[str, str],
        mode: str, verdict: str) -> None:
    """Online without a key (wandb.init raises): the record is kept offline, one warning
    line says how to upload it, the verdict and exit code stay. wandb is imported by the
    sink's child only, never by the session's own process."""
    marker = workspace.root / "imported.txt"
    (workspace.root / "lazycheck.py").write_text(LAZY_CHECK.format(path=str(marker)))
    env = {**subprocess_env, "PYTHONPATH": str(workspace.root), "HOME": str(workspace.root)}
    env.pop("WANDB_API_KEY", None)
    if verdict == "fail":
        inject(workspace, nrmse=0.03)
    result = run_session(pytester, workspace, env, "-p", "lazycheck", wandb=mode)
    assert result.ret == (0 if verdict == "pass" else 1)
    out = out_of(workspace)
    assert json.loads((out / "gates.json").read_text())["verdict"] == verdict
    assert marker.read_text().split() == ["False"]
    warnings = [line for line in result.errlines if line.startswith("gates: warning:")]
    if mode == "off":
        assert not warnings and not find_offline_runs(out)
        return
    assert len(warnings) == 1, result.errlines
    assert "W&B online logging failed" in warnings[0]
    run = the_run(out)
    assert f"wandb sync {run.dir}" in warnings[0]
    assert run.summary["gates/verdict"] == "fail"
    assert run.summary["gates/regression/nrmse"] == "fail"
