"""Dashboards from an evaluation's sidecars: tables, the TTC figure, warnings, markdown.

The sidecars are written here at realistic sizes (50 TTC steps of 8 candidates, a training
log of three stages with thousands of lines, a 200-row leaderboard with blanks) so the
tables are checked against values the test itself wrote, not against the code's own output.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gates.inputs import discover_sidecars, load_evaluation
from gates.inputs.ttc import TTCStep
from gates.model import Evaluation
from gates.sinks.dashboard_figures import ttc_series
from gates.sinks.dashboards import (
    CONFIGURATION,
    EVAL_SUMMARY,
    LEADERBOARD_ENTRY,
    LEADERBOARD_FULL,
    LEADERBOARD_TOP5,
    STAGE_COMPARISON,
    TITLES,
    TTC_REWARD_CURVE,
    TTC_SUMMARY,
    Dashboards,
    Table,
    build_dashboards,
    markdown_table,
)

METRICS = {"mse": 8.8e-4, "mae": 0.0217, "rmse": 0.0297, "nrmse": 0.0626, "rel_l2": 0.071,
           "nrmse@10": 0.081, "field/nrmse": 0.064, "conservation_gap": 1.3,
           "bc_violation": 0.21, "negativity_penalty": 0.0, "field/conservation_gap": 1.1}
EXTRA = {"samples": 64, "tau": 0.5, "ttc": True, "run_id": "run-0042", "note": "text"}
STAGES = {"operator": 2000, "diff_residual": 1500, "consistency_distill": 1000}
CONFIG_YAML = """\
# written by the evaluator
model:
  latent_dim: 32
  name: "ups-burgers"   # quoted, with a comment
  layers: [64, 64, 128]
training:
  lr: 0.001
  use_ema: true
  stages:
    - operator
    - diff_residual
  schedule: {warmup: 100, kind: cosine}
ttc:
  beam_width: 3
  horizon: null
"""


# ----------------------------------------------------------------------------- builders


def write_ttc(path: Path, *, steps: int = 50, candidates: int = 8, beam: int = 3,
              seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    entries = []
    for step in range(steps):
        rewards = [rng.gauss(0.4 + 0.01 * step, 0.1) for _ in range(candidates)]
        best = max(range(candidates), key=rewards.__getitem__)
        entries.append({"step": step, "rewards": rewards, "totals": [2 * r for r in rewards],
                        "chosen": best if rng.random() < 0.8 else rng.randrange(candidates),
                        "beam_width": beam, "horizon": 5})
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    return entries


@dataclass
class StageTruth:
    final: float
    best: float
    epochs: float
    minutes: float


def write_training_log(path: Path, seed: int = 1) -> dict[str, StageTruth]:
    """Three stages one after another, W&B-style keys, noisy losses (best != final)."""
    rng = random.Random(seed)
    lines: list[str] = []
    truth: dict[str, StageTruth] = {}
    stamp = 1_718_000_000.0
    for stage, count in STAGES.items():
        losses: list[float] = []
        first = stamp
        for i in range(count):
            stamp += 1.5
            loss = 1.0 / (1 + i) + rng.uniform(0.0, 0.01)
            losses.append(loss)
            lines.append(json.dumps({
                f"training/{stage}/loss": loss, f"training/{stage}/lr": 1e-3,
                f"training/{stage}/grad_norm": rng.random(),
                f"training/{stage}/epoch": i // 100, "epoch": i // 100, "step": i,
                "_timestamp": stamp}))
        truth[stage] = StageTruth(losses[-1], min(losses), float((count - 1) // 100 + 1),
                                  (stamp - first - 1.5) / 60.0)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return truth


LEADERBOARD_HEADER = ["run_id", "timestamp", "label", "config", "notes", "tag:model",
                      "metric:nrmse", "metric:mse", "extra:samples", "extra:ttc"]


def write_leaderboard(path: Path, rows: int = 200, seed: int = 2,
                      header: list[str] | None = None) -> list[dict[str, str]]:
    """Every cell text; blanks and a few non-numbers in metric:nrmse."""
    rng = random.Random(seed)
    header = header or LEADERBOARD_HEADER
    records: list[dict[str, str]] = []
    for i in range(rows):
        nrmse = f"{rng.uniform(0.03, 0.3):.6f}"
        if i % 9 == 0:
            nrmse = ""
        elif i % 31 == 0:
            nrmse = "n/a"
        record = {"run_id": f"run-{i:04d}", "timestamp": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"
                  f"T{i % 24:02d}:00:00Z", "label": f"exp{i}", "config": f"cfg/{i}.yaml",
                  "notes": "" if i % 3 else "baseline, rerun", "tag:model": f"m{i % 4}",
                  "metric:nrmse": nrmse, "metric:mse": f"{rng.uniform(1e-4, 1e-3):.3e}",
                  "extra:samples": "" if i % 5 == 0 else "64", "extra:ttc": "true"}
        records.append(record)
    text = ",".join(header) + "\n" + "".join(
        ",".join(_csv_cell(r.get(c, "")) for c in header) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")
    return records


def _csv_cell(text: str) -> str:
    return f'"{text}"' if "," in text else text


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "eval.json").write_text(json.dumps({"metrics": METRICS, "extra": EXTRA}))
    return folder


def evaluation_of(report: Path | None, metrics: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None) -> Evaluation:
    """An evaluation as the loader leaves it: metrics, extra, the sidecars beside it."""
    ev = Evaluation(report, dict(METRICS if metrics is None else metrics),
                    dict(EXTRA if extra is None else extra))
    ev.sidecars = discover_sidecars(report) if report is not None else {}
    return ev


def build(folder: Path, *, metrics: dict[str, Any] | None = None,
          extra: dict[str, Any] | None = None, out_dir: Path | None = None,
          **kwargs: Any) -> Dashboards:
    ev = evaluation_of(folder / "eval.json", metrics, extra)
    return build_dashboards(ev, out_dir=out_dir or folder, **kwargs)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def assert_wandb_safe(table: Table) -> None:
    """wandb.Table rejects a column mixing numbers and text: one type per column."""
    for column in table.columns:
        values = table.column(column)
        kinds = {type(v) for v in values if v is not None}
        if table.type_of(column) == "float":
            assert kinds <= {float}, (column, values[:5])
            continue
        assert table.type_of(column) == "str", column
        assert kinds in ({str}, {bool}, set()), (column, values[:5])


# ----------------------------------------------------------------------------- realistic


def write_realistic(folder: Path) -> tuple[dict[str, StageTruth], list[dict[str, str]]]:
    write_ttc(folder / "eval_ttc_step_logs.json")
    (folder / "eval.config.yaml").write_text(CONFIG_YAML)
    truth = write_training_log(folder / "train.jsonl")
    return truth, write_leaderboard(folder / "leaderboard.csv")


def build_realistic(folder: Path) -> Dashboards:
    return build(folder, training_log=folder / "train.jsonl",
                 leaderboard=folder / "leaderboard.csv")


@dataclass
class Realistic:
    folder: Path
    truth: dict[str, StageTruth]
    records: list[dict[str, str]]
    dash: Dashboards


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Realistic:
    """Built once: the read-only checks below share it (the PNG is the slow part)."""
    folder = tmp_path_factory.mktemp("realistic")
    (folder / "eval.json").write_text(json.dumps({"metrics": METRICS, "extra": EXTRA}))
    truth, records = write_realistic(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pandas, numpy or matplotlib warnings either
        dash = build_realistic(folder)
    return Realistic(folder, truth, records, dash)


def test_realistic_sidecars_give_every_dashboard(realistic: Realistic) -> None:
    dash = realistic.dash
    assert dash.warnings == []
    assert set(dash.tables) == {EVAL_SUMMARY, STAGE_COMPARISON, CONFIGURATION,
                                LEADERBOARD_ENTRY, LEADERBOARD_FULL, LEADERBOARD_TOP5}
    assert dash.images == {TTC_SUMMARY: realistic.folder / "eval_ttc_summary.png"}
    assert set(dash.lines) == {TTC_REWARD_CURVE}
    for table in dash.tables.values():
        assert_wandb_safe(table)


def test_stage_comparison_matches_the_log(realistic: Realistic) -> None:
    truth = realistic.truth
    table = realistic.dash.tables[STAGE_COMPARISON]
    assert list(table.columns) == ["Stage", "Final Loss", "Best Loss", "Total Epochs",
                                   "Time (min)"]
    assert table.column("Stage") == list(STAGES)
    for row in table.rows:
        expected = truth[row[0]]
        assert row[1] == expected.final  # exactly what was written
        assert row[2] == expected.best
        assert row[1] != row[2]
        assert row[3] == expected.epochs
        assert row[4] == pytest.approx(expected.minutes)
    for column in ("Final Loss", "Best Loss", "Total Epochs", "Time (min)"):
        assert table.type_of(column) == "float"


def test_leaderboard_tables_are_typed_and_top5_ignores_blanks(realistic: Realistic) -> None:
    dash, records = realistic.dash, realistic.records
    full = dash.tables[LEADERBOARD_FULL]
    assert (len(full), len(full.columns)) == (200, len(LEADERBOARD_HEADER))
    assert list(full.columns) == LEADERBOARD_HEADER
    assert full.type_of("metric:nrmse") == "float" and full.type_of("metric:mse") == "float"
    assert full.type_of("extra:samples") == "float"  # every filled cell is a number
    assert full.column("extra:ttc") == [True] * 200  # a column of booleans is typed
    assert full.column("notes")[:3] == ["baseline, rerun", None, None]  # blank -> None

    numeric = []
    for r in records:
        try:
            numeric.append((float(r["metric:nrmse"]), r["run_id"]))
        except ValueError:
            continue
    expected = [run for _, run in sorted(numeric)[:5]]
    top = dash.tables[LEADERBOARD_TOP5]
    assert top.column("run_id") == expected
    assert top.column("metric:nrmse") == sorted(v for v, _ in numeric)[:5]
    assert list(top.columns) == LEADERBOARD_HEADER


def test_leaderboard_entry_and_summary_follow_the_report_run_id(reports: Path) -> None:
    records = write_leaderboard(reports / "leaderboard.csv")
    extra = dict(EXTRA, run_id="run-0017")
    dash = build(reports, extra=extra, leaderboard=reports / "leaderboard.csv")
    entry = dash.tables[LEADERBOARD_ENTRY]
    assert (len(entry), len(entry.columns)) == (1, len(LEADERBOARD_HEADER))
    assert entry.column("run_id") == ["run-0017"]
    record = records[17]
    assert dash.summary == {
        "leaderboard_run_id": "run-0017", "leaderboard_label": "exp17",
        "leaderboard_timestamp": record["timestamp"],
        "leaderboard_nrmse": float(record["metric:nrmse"]),
        "leaderboard_mse": float(record["metric:mse"])}
    assert all(type(dash.summary[k]) is float for k in ("leaderboard_nrmse", "leaderboard_mse"))


@pytest.mark.parametrize(("row", "expected"), [("exp33", "run-0033"), ("run-0150", "run-0150")])
def test_leaderboard_report_row_by_label_or_run_id(reports: Path, row: str, expected: str
                                                   ) -> None:
    write_leaderboard(reports / "lb.csv")
    ev = load_evaluation(reports / "lb.csv", row=row)
    dash = build_dashboards(ev, out_dir=reports)
    assert dash.tables[LEADERBOARD_ENTRY].column("run_id") == [expected]
    assert dash.summary["leaderboard_run_id"] == expected


def test_leaderboard_report_defaults_to_the_newest_timestamp(reports: Path) -> None:
    records = write_leaderboard(reports / "lb.csv", rows=40)
    for record in records:  # a row whose metric is not a number cannot be the report
        if record["metric:nrmse"] == "n/a":
            record["metric:nrmse"] = ""
    text = ",".join(LEADERBOARD_HEADER) + "\n" + "".join(
        ",".join(_csv_cell(r[c]) for c in LEADERBOARD_HEADER) + "\n" for r in records)
    (reports / "lb.csv").write_text(text)
    dash = build_dashboards(load_evaluation(reports / "lb.csv"), out_dir=reports)
    newest = max(records, key=lambda r: r["timestamp"])
    assert dash.tables[LEADERBOARD_ENTRY].column("run_id") == [newest["run_id"]]


def test_a_json_report_never_gets_another_runs_entry(reports: Path) -> None:
    write_leaderboard(reports / "lb.csv", rows=10)
    dash = build(reports, extra={"run_id": "nope"}, leaderboard=reports / "lb.csv",
                 run_info={"id": "wandb-xyz"})
    assert LEADERBOARD_ENTRY not in dash.tables
    assert {LEADERBOARD_FULL, LEADERBOARD_TOP5} <= set(dash.tables)
    assert dash.warnings == [f"{reports / 'lb.csv'}: no row is this run's (run ids looked "
                             f"for: 'nope', 'wandb-xyz'); no entry is shown rather than "
                             f"another run's; the leaderboard/entry dashboard is skipped"]
    assert dash.summary == {}


def test_realistic_png_is_a_readable_size(realistic: Realistic) -> None:
    png = realistic.dash.images[TTC_SUMMARY]
    assert png.is_file() and png.stat().st_size > 10_000
    assert png_size(png) == (1200, 800)


def test_reward_curve_holds_chosen_and_mean(reports: Path) -> None:
    entries = write_ttc(reports / "eval_ttc_step_logs.json")
    chart = build(reports).lines[TTC_REWARD_CURVE]
    assert chart.xs == [float(i) for i in range(len(entries))]  # log order
    assert chart.ys["chosen_reward"] == [e["rewards"][e["chosen"]] for e in entries]
    assert chart.ys["chosen_total"] == [e["totals"][e["chosen"]] for e in entries]
    assert chart.ys["mean_reward"] == pytest.approx([sum(e["rewards"]) / 8 for e in entries])
    assert "chosen by totals" in chart.title and "log order" in chart.x_label
    assert "Reward" in chart.y_label


def test_eval_summary_groups_accuracy_physics_info(reports: Path) -> None:
    table = build(reports).tables[EVAL_SUMMARY]
    assert list(table.columns) == ["Category", "Metric", "Value"]
    groups = {c: [metric for category, metric, _ in table.rows if category == c]
              for c in ("Accuracy", "Physics", "Info")}
    assert groups["Accuracy"] == ["mse", "mae", "rmse", "nrmse", "nrmse@10", "rel_l2",
                                  "field/nrmse"]
    assert groups["Physics"] == ["bc_violation", "conservation_gap", "negativity_penalty",
                                 "field/conservation_gap"]
    assert groups["Info"] == ["samples", "tau", "ttc"]  # text extras stay out of a float column
    assert table.type_of("Value") == "float"
    values = dict(zip(table.column("Metric"), table.column("Value"), strict=True))
    assert values["nrmse"] == 0.0626 and values["samples"] == 64.0 and values["ttc"] == 1.0
    nan = build(reports, metrics={"nrmse": math.nan}, extra={})
    assert "| Accuracy | nrmse | NaN |" in nan.markdown()  # a reported NaN is not a blank
    assert table.column("Category").index("Physics") > table.column("Category").index(
        "Accuracy")


# ----------------------------------------------------------------------------- configuration


EXPECTED_CONFIG = {
    "model.latent_dim": "32", "model.name": "ups-burgers", "model.layers": "[64, 64, 128]",
    "training.lr": "0.001", "training.use_ema": "true",
    "training.stages": "[operator, diff_residual]",
    "training.schedule.warmup": "100", "training.schedule.kind": "cosine",
    "ttc.beam_width": "3", "ttc.horizon": "null"}


def test_configuration_from_the_yaml_sidecar(reports: Path) -> None:
    (reports / "eval.config.yaml").write_text(CONFIG_YAML)
    table = build(reports).tables[CONFIGURATION]
    assert list(table.columns) == ["Parameter", "Value"]
    assert dict(zip(table.column("Parameter"), table.column("Value"), strict=True)) == \
        EXPECTED_CONFIG


def test_bad_yaml_names_the_line_and_skips_only_the_configuration(reports: Path) -> None:
    (reports / "eval.config.yaml").write_text("model:\n  dim: 3\n    deeper: 4\n")
    dash = build(reports)
    assert CONFIGURATION not in dash.tables and EVAL_SUMMARY in dash.tables
    assert len(dash.warnings) == 1
    assert dash.warnings[0].startswith(f"{reports / 'eval.config.yaml'}:3: invalid YAML (")
    assert dash.warnings[0].endswith("; the training_summary/configuration dashboard is "
                                     "skipped")


def test_configuration_falls_back_to_the_report_extra(reports: Path) -> None:
    nested = build(reports, extra={"config": {"model": {"dim": 8}, "lr": 0.01}})
    table = nested.tables[CONFIGURATION]
    assert table.rows == [["model.dim", "8"], ["lr", "0.01"]]
    flat = build(reports, extra={"samples": 64, "ttc": False, "curve": [1, 2]})
    assert flat.tables[CONFIGURATION].rows == [["samples", "64"], ["ttc", "false"]]


# ----------------------------------------------------------------------------- TTC edge cases


def ttc_entry(step: int, rewards: list[float], chosen: int) -> dict[str, Any]:
    return {"step": step, "rewards": rewards, "totals": rewards, "chosen": chosen,
            "beam_width": 3, "horizon": 4}


EDGE_CASES: dict[str, list[dict[str, Any]]] = {
    "ragged": [ttc_entry(0, [0.1, 0.5], 1), ttc_entry(1, [0.2, 0.4, 0.9, 0.3, 0.1], 2),
               ttc_entry(2, [0.7], 0)],
    "single_step": [ttc_entry(0, [0.3, 0.4, 0.2], 1)],
    "all_equal": [ttc_entry(i, [1.5] * 8, 0) for i in range(10)],
    "zero_first_reward": [ttc_entry(0, [0.0, 0.2], 1), ttc_entry(1, [0.1, 0.3], 1)],
    "single_candidate": [ttc_entry(i, [-0.5 * i], 0) for i in range(4)],
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_ttc_edge_cases_render_without_numpy_warnings(reports: Path, case: str) -> None:
    (reports / "eval_ttc_step_logs.json").write_text(json.dumps(EDGE_CASES[case]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dash = build(reports)
    assert dash.warnings == []
    png = dash.images[TTC_SUMMARY]
    assert png.stat().st_size > 10_000 and png_size(png) == (1200, 800)
    chart = dash.lines[TTC_REWARD_CURVE]
    assert len(chart.xs) == len(EDGE_CASES[case])
    assert all(math.isfinite(v) for ys in chart.ys.values() for v in ys)


def test_improvement_is_by_totals_over_candidate_zero_of_the_same_step() -> None:
    # chosen by totals: candidate 1 has the lower reward but the higher total
    steps = [TTCStep(0, (2.0, 1.0), 1, totals=(2.0, 3.0)),
             TTCStep(0, (1.0, 4.0), 1, totals=(1.0, 4.0), ttc_step=1),
             TTCStep(1, (-1.0,), 0, totals=(-1.0,))]
    series = ttc_series(steps)
    assert series.by_totals and series.improvement_is_percent
    assert series.improvement == [50.0, 300.0, 0.0]  # never negative: argmax of totals
    assert series.chosen_reward == [1.0, 4.0, -1.0] and series.chosen_total == [3.0, 4.0, -1.0]
    assert series.labels == ["b0.0", "b0.1", "b1.0"]
    assert series.improvement_label == "Improvement (%)"
    assert "argmax of totals" in series.improvement_title
    negative = ttc_series([TTCStep(0, (-2.0, -1.0), 1, totals=(-2.0, -1.0))])
    assert negative.improvement == [50.0]  # |s0|: less negative is better


def test_zero_first_total_falls_back_to_an_absolute_difference() -> None:
    series = ttc_series([TTCStep(0, (0.0, 0.25), 1, totals=(0.0, 0.25)),
                         TTCStep(1, (0.5, 0.75), 0, totals=(0.5, 0.75))])
    assert not series.improvement_is_percent
    assert series.improvement == [0.25, 0.0]
    assert "absolute" in series.improvement_label


def test_a_log_without_totals_says_it_measures_rewards() -> None:
    series = ttc_series([TTCStep(0, (1.0, 2.0), 1)])
    assert not series.by_totals and series.improvement == [100.0]
    assert "rewards" in series.improvement_title


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def ttc_steps(draw: Callable[..., Any]) -> list[TTCStep]:
    count = draw(st.integers(min_value=1, max_value=12))
    out = []
    for i in range(count):
        rewards = draw(st.lists(finite, min_size=1, max_size=9))
        totals = tuple(draw(st.lists(finite, min_size=len(rewards), max_size=len(rewards))))
        out.append(TTCStep(float(i // 2), tuple(rewards),
                           draw(st.integers(min_value=0, max_value=len(rewards) - 1)),
                           totals=totals, ttc_step=i % 2))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ttc_steps())
def test_ttc_series_is_finite_for_any_valid_log(steps: list[TTCStep]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        series = ttc_series(steps)
    assert len(series.improvement) == len(steps)
    assert all(math.isfinite(v) for v in series.improvement + series.mean)
    assert sum(series.chosen_counts) == len(steps)
    assert all(lo <= m <= hi or math.isclose(m, lo) or math.isclose(m, hi)
               for lo, m, hi in zip(series.low, series.mean, series.high, strict=True))


# ----------------------------------------------------------------------------- malformed


def test_chosen_out_of_range_names_the_line_and_skips_only_ttc(reports: Path) -> None:
    folder = reports
    write_realistic(folder)
    path = folder / "eval_ttc_step_logs.json"
    entries = json.loads(path.read_text())
    entries[7]["chosen"] = 8
    path.write_text(json.dumps(entries, indent=2))
    line = next(n for n, text in enumerate(path.read_text().split("\n"), start=1)
                if '"chosen": 8' in text)
    dash = build_realistic(folder)
    assert dash.warnings == [f"{path}:{line}: step entry 7: chosen=8 is out of range for 8 "
                             f"rewards (valid: 0..7); the ttc dashboard is skipped"]
    assert TTC_SUMMARY not in dash.images and TTC_REWARD_CURVE not in dash.lines
    assert not (folder / "eval_ttc_summary.png").exists()
    assert len(dash.tables) == 6


@pytest.mark.parametrize(("text", "line", "problem"), [
    ('{"step": 0, "rewards": [1.0], "chosen": 0}', 1,
     "expected a list of step entries, got a JSON object"),
    ('[\n  {"step": 0, "rewards": [1.0], "chosen": 0},\n  {"step": 1,, }\n]', 3,
     "invalid JSON (Expecting property name enclosed in double quotes)"),
    ("[]", 1, "the list of steps is empty"),
    ('[\n {"step": 0,\n  "rewards": [],\n  "chosen": 0}\n]', 3,
     "step entry 0: rewards must be a non-empty list of numbers"),
    ('[\n {"step": 0, "rewards": [1.0, "x"], "chosen": 0}\n]', 2,
     "step entry 0: rewards[1] is 'x', not a finite number"),
    ('[\n {"step": 0, "rewards": [1.0], "chosen": true}\n]', 2,
     "step entry 0: chosen must be a candidate index, got True"),
])
def test_malformed_ttc_log_warns_with_file_and_line(reports: Path, text: str, line: int,
                                                    problem: str) -> None:
    path = reports / "eval_ttc_step_logs.json"
    path.write_text(text)
    dash = build(reports)
    assert dash.warnings == [f"{path}:{line}: {problem}; the ttc dashboard is skipped"]
    assert dash.images == {} and dash.lines == {}
    assert EVAL_SUMMARY in dash.tables


def test_bad_json_line_in_training_log_skips_only_the_stage_comparison(reports: Path) -> None:
    folder = reports
    write_realistic(folder)
    path = folder / "train.jsonl"
    lines = path.read_text().split("\n")
    lines[2500] = lines[2500][:40]  # a torn write in the middle
    path.write_text("\n".join(lines))
    dash = build_realistic(folder)
    assert len(dash.warnings) == 1
    assert dash.warnings[0].startswith(f"{path}:2501: invalid JSON (")
    assert dash.warnings[0].endswith("; the training_summary/stage_comparison dashboard is "
                                     "skipped")
    assert STAGE_COMPARISON not in dash.tables
    assert {EVAL_SUMMARY, CONFIGURATION, LEADERBOARD_FULL} <= set(dash.tables)
    assert TTC_SUMMARY in dash.images


def test_leaderboard_without_nrmse_skips_only_top5(reports: Path) -> None:
    header = [c for c in LEADERBOARD_HEADER if c != "metric:nrmse"]
    write_leaderboard(reports / "lb.csv", rows=20, header=header)
    dash = build(reports, extra=dict(EXTRA, run_id="run-0007"), leaderboard=reports / "lb.csv")
    assert dash.warnings == [f"{reports / 'lb.csv'}:1: no metric:nrmse column in the header; "
                             f"the leaderboard/top_5_nrmse dashboard is skipped"]
    assert {LEADERBOARD_FULL, LEADERBOARD_ENTRY} <= set(dash.tables)
    assert LEADERBOARD_TOP5 not in dash.tables


@pytest.mark.parametrize(("content", "line", "fragment"), [
    (b"run_id,timestamp,metric:nrmse\nr1,2024-01-01,0.1\nr2,2024-01-02,0.2,extra\n", 3,
     "unreadable CSV (Expected 3 fields in line 3, saw 4)"),
    (b"run_id,timestamp,metric:nrmse\nr1,2024-01-01,0.1\nr2,\xff\xfe,0.2\n", 3,
     "the leaderboard CSV is not UTF-8 text"),
    (b"", 1, "the CSV is empty (no header line)"),
])
def test_unreadable_leaderboard_skips_the_leaderboard_dashboards(
        reports: Path, content: bytes, line: int, fragment: str) -> None:
    path = reports / "lb.csv"
    path.write_bytes(content)
    dash = build(reports, leaderboard=path)
    assert dash.warnings == [f"{path}:{line}: {fragment}; the leaderboard dashboard is skipped"]
    assert not any(key.startswith("leaderboard/") for key in dash.tables)
    assert EVAL_SUMMARY in dash.tables


def test_missing_explicit_sidecar_is_a_warning(reports: Path) -> None:
    dash = build(reports, training_log=reports / "absent.jsonl")
    assert len(dash.warnings) == 1
    assert dash.warnings[0].startswith(f"{reports / 'absent.jsonl'}: cannot read the training "
                                       "log (No such file or directory)")
    assert EVAL_SUMMARY in dash.tables


def test_unwritable_out_dir_keeps_the_line_chart(reports: Path) -> None:
    write_ttc(reports / "eval_ttc_step_logs.json", steps=5)
    blocker = reports / "blocked"
    blocker.write_text("a file where the folder should be")
    dash = build(reports, out_dir=blocker / "out")
    assert TTC_REWARD_CURVE in dash.lines and TTC_SUMMARY not in dash.images
    assert len(dash.warnings) == 1
    assert dash.warnings[0].endswith("; the ttc/summary dashboard is skipped")


# ----------------------------------------------------------------------------- training log


def test_stages_are_discovered_and_unknowns_stay_blank(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    records = [
        {"training/warmup/lr": 0.1, "epoch": 0, "_timestamp": 100.0},
        {"training/warmup/lr": 0.2, "epoch": 1, "_timestamp": 160.0},
        {"training/my_custom_stage/loss": 0.5, "training/my_custom_stage/duration": 90.0},
        {"training/my_custom_stage/loss": 0.25},
        {"training/my_custom_stage/loss": 0.375, "training/other/metric/nested": 1},
        {"step": 3},
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    dash = build_dashboards(evaluation_of(None, {}, {}), out_dir=tmp_path, training_log=log)
    table = dash.tables[STAGE_COMPARISON]
    rows = {r[0]: tuple(r[1:]) for r in table.rows}
    assert list(rows) == ["warmup", "my_custom_stage", "other"]
    final, best, epochs, minutes = rows["warmup"]
    assert math.isnan(final) and math.isnan(best)  # no loss: blank, not 0
    assert epochs == 2.0 and minutes == 1.0  # distinct epochs; timestamp span
    assert rows["my_custom_stage"][:2] == (0.375, 0.25)
    assert math.isnan(rows["my_custom_stage"][2]) and rows["my_custom_stage"][3] == 1.5
    assert all(math.isnan(v) for v in rows["other"])
    assert "|  |  |" in dash.markdown()  # blanks render blank


def test_training_log_without_stages_warns(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text('{"loss": 1.0}\n')
    dash = build_dashboards(evaluation_of(None, {}, {}), out_dir=tmp_path, training_log=log)
    assert dash.warnings == [f"{log}: no stages in the log (neither \"stage\" lines nor "
                             "training/<stage>/<metric> keys); the "
                             "training_summary/stage_comparison dashboard is skipped"]


# ----------------------------------------------------------------------------- plumbing


def test_discover_sidecars_by_report_prefix(tmp_path: Path) -> None:
    report = tmp_path / "eval.json"
    assert discover_sidecars(report) == {}
    (tmp_path / "eval_ttc_step_logs.json").write_text("[]")
    (tmp_path / "eval.config.yaml").write_text("a: 1\n")
    (tmp_path / "other.config.yaml").write_text("a: 1\n")
    assert discover_sidecars(report) == {"ttc_log": tmp_path / "eval_ttc_step_logs.json",
                                         "config": tmp_path / "eval.config.yaml"}


def test_markdown_has_a_section_for_each_dashboard(realistic: Realistic) -> None:
    text = realistic.dash.markdown()
    for key, title in TITLES.items():
        assert f"### {title} (`{key}`)" in text
    assert "![Test-time compute](eval_ttc_summary.png)" in text  # relative to gates.md
    assert "| Stage | Final Loss | Best Loss | Total Epochs | Time (min) |" in text
    assert "180 more rows not shown (200 in all" in text
    assert "baseline, rerun" in text


def test_markdown_lists_warnings_and_is_empty_without_dashboards(tmp_path: Path) -> None:
    assert Dashboards().markdown() == ""
    dash = Dashboards(warnings=["a.csv:3: bad | cell; the leaderboard dashboard is skipped"])
    assert "### Dashboard warnings\n\n- a.csv:3: bad \\| cell;" in dash.markdown()


def test_markdown_table_renderer() -> None:
    table = Table.of([("name", "str"), ("value", "float"), ("count", "float")],
                     [["a|b", 8.8e-4, 3.0], [None, math.nan, 1e20]])
    assert markdown_table(table) == (
        "| name | value | count |\n|---|---|---|\n| a\\|b | 0.00088 | 3 |\n|  |  | 1e+20 |")


def test_yaml_aliases_cannot_blow_the_configuration_up(reports: Path) -> None:
    """A few lines of aliases nest into 9**9 values or 3**20 settings: cut short, quickly."""
    lists = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n"
        for i in range(8))
    (reports / "eval.config.yaml").write_text(lists)
    table = build(reports).tables[CONFIGURATION]
    assert len(table) == 9 and all(len(v) < 5_000 for v in table.column("Value"))
    maps = "a: &a {x: 1, y: 2}\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} {{p: *{chr(97 + i)}, q: *{chr(97 + i)}}}\n"
        for i in range(20))
    (reports / "eval.config.yaml").write_text(maps)
    dash = build(reports)
    assert CONFIGURATION not in dash.tables
    assert dash.warnings == [f"{reports / 'eval.config.yaml'}: more than 10000 settings; not "
                             "shown; the training_summary/configuration dashboard is skipped"]
