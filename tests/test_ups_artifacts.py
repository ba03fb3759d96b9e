"""universal-simulator's own files (../shared/ups-artifacts/, written by its writer
functions; see its README), each read as its writer meant it: one test per file, then real
gate sessions on them.

The expected values come from the files themselves (parsed here with json, csv and yaml
directly), never from the readers under test.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
import yaml

from gates.inputs import discover_sidecars, load_evaluation, load_run_info
from gates.inputs.config import read_config
from gates.inputs.leaderboard import find_row, newest, read_leaderboard
from gates.inputs.training_log import read_training_log
from gates.inputs.ttc import read_ttc_log
from gates.plan import Settings
from gates.result import SessionResult
from gates.sinks.dashboard_figures import ttc_series
from gates.sinks.dashboards import (
    LEADERBOARD_ENTRY,
    STAGE_COMPARISON,
    build_dashboards,
    dashboards_of,
    run_ids,
)
from tests.conftest import ROOT
from tests.test_bad_input import FAST

ARTIFACTS = ROOT.parent / "shared" / "ups-artifacts"
if not ARTIFACTS.is_dir():
    pytest.skip(f"universal-simulator artifacts not found at {ARTIFACTS} (CI keeps shared/ "
                "beside the clone)", allow_module_level=True)

RUNS = ARTIFACTS / "artifacts" / "runs"
FIRST, SECOND = RUNS / "run_20251120_093000", RUNS / "run_20251121_101500"
STAGES = ["operator", "diffusion_residual", "consistency_distill"]
PER_SAMPLE = ("mse", "mae", "rel_l2", "conservation_gap", "bc_violation",
              "negativity_penalty")


def files() -> list[str]:
    return sorted(str(p.relative_to(ARTIFACTS)) for p in ARTIFACTS.rglob("*")
                  if p.is_file() and p.name != "README.md")


# ----------------------------------------------------------------------------- checkers


def check_training_log(path: Path) -> None:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    stages = read_training_log(path)
    assert [s.stage for s in stages] == list(dict.fromkeys(r["stage"] for r in lines))
    for stage in stages:
        mine = [r for r in lines if r["stage"] == stage.stage]
        assert stage.final_loss == mine[-1]["loss"]
        assert stage.best_loss == mine[-1]["best_loss"]
        assert stage.epochs == len({r["epoch"] for r in mine})
        assert stage.minutes == pytest.approx(sum(r["epoch_time_sec"] for r in mine) / 60)
        assert all(math.isfinite(v) for v in (stage.final_loss, stage.best_loss,
                                              stage.epochs, stage.minutes))


def check_config(path: Path) -> None:
    config = read_config(path)
    assert config == yaml.safe_load(path.read_text())
    assert config["data"]["task"] == "burgers1d"


def check_report(path: Path) -> None:
    data = json.loads(path.read_text())
    ev = load_evaluation(path)
    assert ev.format == "metric-report" and ev.metrics == data["metrics"]
    assert ev.extra == data["extra"] and ev.samples == {}
    prefix = path.stem
    assert ev.sidecars == {"ttc_log": path.with_name(f"{prefix}_ttc_step_logs.json"),
                           "config": path.with_name(f"{prefix}.config.yaml"),
                           "preview": path.with_name(f"{prefix}_preview.npz")}


def check_results_csv(path: Path) -> None:
    with path.open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    ev = load_evaluation(path)
    assert ev.format == "results-csv"
    assert ev.metrics == {k: float(v) for k, v in row.items() if not k.startswith("extra_")}
    assert ev.extra["ttc"] is True and ev.extra["samples"] == float(row["extra_samples"])
    twin = load_evaluation(path.with_suffix(".json"))  # the JSON written beside it
    assert ev.metrics == twin.metrics


def check_preview(path: Path) -> None:
    report = path.with_name(path.name.removesuffix("_preview.npz") + ".json")
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"predicted", "target"}
    ev = load_evaluation(report)
    assert ev.sidecars["preview"] == path and ev.samples == {}  # found, never gated


def check_ttc_log(path: Path) -> None:
    entries = json.loads(path.read_text())
    steps = read_ttc_log(path)
    assert len(steps) == len(entries)
    for step, entry in zip(steps, entries, strict=True):
        assert step.step == entry["step"] and step.chosen == entry["chosen"]
        assert entry["chosen"] == int(np.argmax(entry["totals"]))  # chosen by totals
        assert step.chosen_total == max(entry["totals"])
    per_batch = max(sum(1 for e in entries if e["step"] == b) for b in {e["step"]
                                                                         for e in entries})
    assert max(s.ttc_step for s in steps) == per_batch - 1
    series = ttc_series(steps)
    assert series.by_totals and min(series.improvement) >= 0.0  # never "negative gains"


def check_lightning(path: Path) -> None:
    data = json.loads(path.read_text())
    ev = load_evaluation(path)
    assert ev.format == "lightning" and ev.metrics == data["metrics"]
    assert set(ev.samples) == {*PER_SAMPLE, "rmse"}
    for name in PER_SAMPLE:
        assert ev.samples[name].tolist() == data["details"][f"per_sample_{name}"]
    for name in ("mse", "mae", "conservation_gap", "bc_violation", "negativity_penalty"):
        assert ev.samples[name].mean() == pytest.approx(ev.metrics[name], rel=1e-6)
    assert math.sqrt(ev.samples["rmse"].mean()) == pytest.approx(ev.metrics["rmse"], rel=1e-6)
    assert ev.ttc_logs == data["details"]["ttc_step_logs"]


def check_wandb_info(path: Path) -> None:
    data = json.loads(path.read_text())
    info = load_run_info(path)
    assert info["id"] == data.get("id", data.get("run_id"))
    assert info == {k: v for k, v in {**data, "id": info["id"]}.items()
                    if k in ("id", "name", "entity", "project", "url", "group") and v}


def check_dotted_report(path: Path) -> None:
    ev = load_evaluation(path)
    assert ev.sidecars == {"ttc_log": path.with_name("eval_tau0.5_ttc_step_logs.json"),
                           "config": path.with_name("eval_tau0.5.config.yaml"),
                           "preview": path.with_name("eval_tau0.5_preview.npz")}


def check_dotted_sidecar(path: Path) -> None:
    found = discover_sidecars(path.with_name("eval_tau0.json"))
    assert path in found.values()
    if path.name.endswith("_ttc_step_logs.json"):
        check_ttc_log(path)
    elif path.name.endswith(".config.yaml"):
        check_config(path)


def check_reused(path: Path) -> None:
    flat = json.loads(path.read_text())["metrics_flat"]
    ev = load_evaluation(path)
    assert ev.format == "reused"
    assert ev.metrics == {k[7:]: v for k, v in flat.items() if k.startswith("metric:")}
    assert ev.extra == {k[6:]: v for k, v in flat.items() if k.startswith("extra:")}


def check_leaderboard(path: Path) -> None:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    board = read_leaderboard(path)
    table = board.table
    assert table["run_id"].tolist() == [r["run_id"] for r in rows]
    assert table["extra:ttc"].tolist() == [True] * len(rows)  # str(True), typed back
    assert table["commit"].tolist()[0] == "69e9161"
    assert table["train_wandb_run"].tolist()[2] is None  # the champion row leaves it blank
    newest_stamp = max(r["timestamp"] for r in rows)
    assert newest(table) == max(i for i, r in enumerate(rows) if r["timestamp"] == newest_stamp)
    for i, r in enumerate(rows):
        assert find_row(table, run_ids=[r["run_id"]], config=None) == i
        assert table["metric:nrmse"][i] == float(r["metric:nrmse"])


CHECKERS: list[tuple[Callable[[str], bool], Callable[[Path], None]]] = [
    (lambda p: p.endswith("training_log.jsonl"), check_training_log),
    (lambda p: p.startswith("edge/dotted/eval_tau0.5"), check_dotted_sidecar),
    (lambda p: p == "edge/dotted/eval_tau0.json", check_dotted_report),
    (lambda p: p.startswith("edge/reused/"), check_reused),
    (lambda p: p.endswith(".yaml"), check_config),
    (lambda p: p.endswith("_lightning/results.json"), check_lightning),
    (lambda p: p.endswith("results.json"), check_report),
    (lambda p: p.endswith(".csv") and "reports/" not in p, check_results_csv),
    (lambda p: p.endswith("_preview.npz"), check_preview),
    (lambda p: p.endswith("_ttc_step_logs.json"), check_ttc_log),
    (lambda p: "wandb" in p and p.endswith(".json"), check_wandb_info),
    (lambda p: p == "reports/leaderboard.csv", check_leaderboard),
]


@pytest.mark.parametrize("relative", files())
def test_each_file_is_read_as_its_writer_meant_it(relative: str) -> None:
    checker = next((check for match, check in CHECKERS if match(relative)), None)
    assert checker is not None, f"no reader test for {relative}"
    checker(ARTIFACTS / relative)


# ----------------------------------------------------------------------------- dashboards


def test_dashboards_of_a_run_in_the_orchestrator_layout(tmp_path: Path) -> None:
    report = SECOND / "full_eval" / "results.json"
    ev = load_evaluation(report)
    info = load_run_info(SECOND / "wandb_context.json")
    dash = build_dashboards(ev, out_dir=tmp_path, training_log=SECOND / "training_log.jsonl",
                            leaderboard=ARTIFACTS / "reports" / "leaderboard.csv",
                            run_info=info)
    assert dash.warnings == []
    stages = dash.tables[STAGE_COMPARISON]
    assert stages.column("Stage") == STAGES
    assert not any(isinstance(v, float) and math.isnan(v) for row in stages.rows for v in row)
    assert dash.tables[LEADERBOARD_ENTRY].column("run_id") == ["run_20251121_101500_full"]
    assert dash.summary["leaderboard_run_id"] == "run_20251121_101500_full"
    assert run_ids(ev, info)[:2] == ["run_20251121_101500_full", "run_20251121_101500"]


def test_dashboards_of_a_finished_session(tmp_path: Path) -> None:
    """What a sink calls: paths resolved from the settings, the plan's evaluation."""
    settings = Settings(eval=Path("full_eval/results.json"),
                        training_log=Path("training_log.jsonl"),
                        leaderboard=Path("../../../reports/leaderboard.csv"), workdir=SECOND)
    plan = SimpleNamespace(settings=settings, run_info={},
                           evaluation=load_evaluation(SECOND / "full_eval" / "results.json"))
    result = cast(SessionResult, SimpleNamespace(plan=plan, out_dir=tmp_path))
    dash = dashboards_of(result)
    assert dash is not None and dash.warnings == []
    assert {STAGE_COMPARISON, LEADERBOARD_ENTRY} <= set(dash.tables)
    assert dashboards_of(cast(SessionResult, SimpleNamespace(plan=None))) is None


def test_a_report_outside_the_layout_shows_no_other_runs_entry(tmp_path: Path) -> None:
    ev = load_evaluation(ARTIFACTS / "edge" / "dotted" / "eval_tau0.json")
    dash = build_dashboards(ev, out_dir=tmp_path,
                            leaderboard=ARTIFACTS / "reports" / "leaderboard.csv",
                            run_info=load_run_info(SECOND / "artifacts" / "wandb_run.json"))
    assert LEADERBOARD_ENTRY not in dash.tables and dash.summary == {}
    assert len(dash.warnings) == 1 and "no row is this run's" in dash.warnings[0]
    assert "ttc/summary" in dash.images  # the dotted prefix found its TTC log


def test_lightning_ttc_logs_feed_the_ttc_dashboard(tmp_path: Path) -> None:
    ev = load_evaluation(SECOND / "small_eval_lightning" / "results.json")
    dash = build_dashboards(ev, out_dir=tmp_path)
    chart = dash.lines["ttc/reward_curve"]
    assert len(chart.xs) == len(ev.ttc_logs or [])
    assert (tmp_path / "results_ttc_summary.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------- sessions


def copy_run(tmp_path: Path, run: Path, *parts: str) -> Path:
    """A run folder in the orchestrator's layout, copied so outputs land in tmp_path."""
    target = tmp_path / "artifacts" / "runs" / run.name
    for part in parts:
        source = run / part
        if source.is_dir():
            shutil.copytree(source, target / part)
        else:
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target / part)
    return target


def session(pytester: pytest.Pytester, report: Path, store: Path, out: Path,
            *extra: str) -> tuple[pytest.RunResult, dict]:
    result = pytester.runpytest_inprocess(
        str(ROOT / "gates"), "--gates-eval", str(report), "--gates-baselines", str(store),
        "--gates-out", str(out), "-p", "no:cacheprovider", *FAST, *extra)
    return result, json.loads((out / "gates.json").read_text())


def test_lightning_details_feed_the_paired_test(pytester: pytest.Pytester,
                                                tmp_path: Path) -> None:
    first = copy_run(tmp_path, FIRST, "full_eval_lightning")
    second = copy_run(tmp_path, SECOND, "full_eval_lightning")
    store = tmp_path / "baselines"
    result, gates = session(pytester, first / "full_eval_lightning" / "results.json", store,
                            tmp_path / "out1", "--gates-suite", "ups", "--gates-promote",
                            "--gates-wandb", "off")
    assert gates["promoted"] is True, result.stdout.str()
    assert (store / "ups" / "versions" / "v0001" / "samples.npz").is_file()
    result, gates = session(pytester, second / "full_eval_lightning" / "results.json", store,
                            tmp_path / "out2", "--gates-wandb", "off")
    assert gates["verdict"] in ("pass", "fail"), result.stdout.str()
    regression = {g["metric"]: g for g in gates["gates"] if g["kind"] == "regression"}
    assert regression["mse"]["evidence"]["method"] != "threshold-only"
    assert regression["mse"]["evidence"]["n"] == 240


def test_reused_results_and_a_null_extra_gate_like_any_report(pytester: pytest.Pytester,
                                                              tmp_path: Path) -> None:
    run = copy_run(tmp_path, FIRST, "full_eval")
    report = run / "full_eval" / "results.json"
    data = json.loads(report.read_text())
    report.write_text(json.dumps({"metrics": data["metrics"], "extra": None}))
    store = tmp_path / "baselines"
    result, gates = session(pytester, report, store, tmp_path / "out1", "--gates-suite", "ups",
                            "--gates-promote", "--gates-wandb", "off")
    assert gates["promoted"] is True, result.stdout.str()
    reused = tmp_path / "reused" / "results.json"
    reused.parent.mkdir()
    shutil.copy(ARTIFACTS / "edge" / "reused" / "full_eval" / "results.json", reused)
    result, gates = session(pytester, reused, store, tmp_path / "out2", "--gates-wandb", "off")
    assert gates["verdict"] == "pass", result.stdout.str()
    assert {g["metric"] for g in gates["gates"] if g["kind"] == "regression"} >= \
        set(data["metrics"])


def test_a_run_info_file_never_written_is_not_bad_input(pytester: pytest.Pytester,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    run = copy_run(tmp_path, FIRST, "full_eval")
    monkeypatch.setenv("FAST_TO_SOTA_WANDB_INFO", str(run / "artifacts" / "wandb_run.json"))
    result, gates = session(pytester, run / "full_eval" / "results.json",
                            tmp_path / "baselines", tmp_path / "out", "--gates-suite", "ups",
                            "--gates-promote", "--gates-wandb", "off")
    assert gates["verdict"] != "error" and "bad input" not in result.stdout.str()
    assert "wandb_run.json" not in result.stdout.str()  # with W&B off: nothing at all


def test_a_session_shows_every_dashboard_of_the_run(pytester: pytest.Pytester,
                                                    tmp_path: Path) -> None:
    run = copy_run(tmp_path, SECOND, "full_eval", "training_log.jsonl")
    board = tmp_path / "reports" / "leaderboard.csv"
    board.parent.mkdir()
    shutil.copy(ARTIFACTS / "reports" / "leaderboard.csv", board)
    report = run / "full_eval" / "results.json"
    result, gates = session(pytester, report, tmp_path / "baselines", tmp_path / "out",
                            "--gates-suite", "ups", "--gates-promote", "--gates-wandb", "off",
                            "--gates-training-log", str(run / "training_log.jsonl"),
                            "--gates-leaderboard", str(board))
    assert gates["verdict"] == "pass", result.stdout.str()
    text = (tmp_path / "out" / "gates.md").read_text()
    assert "| Stage | Final Loss | Best Loss | Total Epochs | Time (min) |" in text
    assert "| operator | 0.0001944 | 0.0001944 | 25 | 14.88 |" in text
    assert "| run_id | run_20251121_101500_full |" in text  # this run's entry
    assert "![Test-time compute](results_ttc_summary.png)" in text
    assert (tmp_path / "out" / "results_ttc_summary.png").is_file()


def test_a_session_says_plainly_when_no_leaderboard_row_is_this_run(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    folder = tmp_path / "dotted"
    shutil.copytree(ARTIFACTS / "edge" / "dotted", folder)
    result, gates = session(pytester, folder / "eval_tau0.json", tmp_path / "baselines",
                            tmp_path / "out", "--gates-suite", "ups", "--gates-promote",
                            "--gates-wandb", "off", "--gates-leaderboard",
                            str(ARTIFACTS / "reports" / "leaderboard.csv"))
    assert gates["verdict"] == "pass", result.stdout.str()
    text = (tmp_path / "out" / "gates.md").read_text()
    assert "(`leaderboard/entry`)" not in text and "leaderboard_run_id" not in text
    assert "no row is this run's" in text and "rather than another run's" in text
    assert "(`leaderboard/full_table`)" in text
    assert (tmp_path / "out" / "eval_tau0_ttc_summary.png").is_file()  # the dotted sidecar


def test_a_leaderboard_row_brings_its_provenance_into_the_champion(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    board = tmp_path / "reports" / "leaderboard.csv"
    board.parent.mkdir()
    shutil.copy(ARTIFACTS / "reports" / "leaderboard.csv", board)
    store = tmp_path / "baselines"
    result, gates = session(pytester, board, store, tmp_path / "out", "--gates-suite", "ups",
                            "--gates-promote", "--gates-wandb", "off",
                            "--gates-eval-row", "run_20251120_093000_full")
    assert gates["promoted"] is True, result.stdout.str()
    version = json.loads((store / "ups" / "versions" / "v0001" / "version.json").read_text())
    provenance = version["provenance"]
    assert provenance["run_id"] == "run_20251120_093000_full"
    assert (provenance["commit"], provenance["train_wandb_run"], provenance["run"]) == \
        ("69e9161", "train-20251120_093000", "run_20251120_093000")
    assert provenance["config"] == \
        "artifacts/runs/run_20251120_093000/configs/full_eval_resolved.yaml"
