"""The input readers one by one: every format as its writer meant it, every refusal with
the file named. Session-level behaviour is in test_bad_input.py and test_ups_artifacts.py."""

from __future__ import annotations

import io
import json
import math
import os
import resource
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gates.errors import GateInputError
from gates.inputs import discover_sidecars, load_evaluation, load_run_info, run_path
from gates.inputs.config import read_config
from gates.inputs.files import read_regular
from gates.inputs.leaderboard import find_row, newest, pick, read_leaderboard, timestamps
from gates.inputs.samples import load_samples
from gates.inputs.training_log import read_training_log
from gates.inputs.ttc import read_ttc_log, ttc_steps

METRICS = {"nrmse": 0.1, "mse": 0.01, "rmse": 0.1}


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


# ----------------------------------------------------------------------------- reports


def test_metric_report_with_null_extra_is_an_empty_extra(tmp_path: Path) -> None:
    ev = load_evaluation(write(tmp_path / "r.json", {"metrics": METRICS, "extra": None}))
    assert ev.extra == {} and ev.metrics == METRICS and ev.format == "metric-report"
    assert ev.sha256 is not None and ev.sidecars == {}


def test_flat_json_report(tmp_path: Path) -> None:
    ev = load_evaluation(write(tmp_path / "r.json", METRICS))
    assert ev.format == "flat" and ev.metrics == METRICS


def test_reused_metrics_flat_gates_like_any_report(tmp_path: Path) -> None:
    path = write(tmp_path / "results.json", {
        "reused": True, "source": "checkpoint_metadata",
        "metrics_flat": {"metric:nrmse": 0.07, "metric:mse": 0.005, "extra:samples": 64.0,
                         "extra:ttc": 1.0}})
    ev = load_evaluation(path)
    assert ev.format == "reused"
    assert ev.metrics == {"nrmse": 0.07, "mse": 0.005}
    assert ev.extra == {"samples": 64.0, "ttc": 1.0}
    assert ev.provenance == {"reused": True, "source": "checkpoint_metadata"}


def test_lightning_details_are_per_sample_vectors_and_ttc_logs(tmp_path: Path) -> None:
    mse = [0.01, 0.03, 0.02, 0.04]
    logs = [{"step": 0, "rewards": [0.1, 0.2], "totals": [0.1, 0.3], "chosen": 1}]
    path = write(tmp_path / "results.json", {
        "metrics": {"mse": 0.025, "rmse": math.sqrt(0.025), "mae": 0.1},
        "extra": {"samples": 4},
        "details": {"per_sample_mse": mse, "per_sample_mae": [0.1] * 4,
                    "preview_predicted": [[1.0, 2.0]], "preview_target": [[1.0, 2.0]],
                    "ttc_step_logs": logs}})
    ev = load_evaluation(path)
    assert ev.format == "lightning"
    assert set(ev.samples) == {"mse", "mae", "rmse"}  # previews are not per-sample data
    assert ev.samples["mse"].tolist() == mse and ev.samples["mse"].dtype == np.float64
    assert ev.aggregation == {"rmse": "rms"}  # rmse = sqrt(mean(per-sample mse))
    assert math.isclose(math.sqrt(ev.samples["rmse"].mean()), ev.metrics["rmse"])
    assert ev.ttc_logs == logs and ev.samples_path == path


def test_details_nan_vector_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"metrics": {"mse": 0.1}, "details": {"per_sample_mse": [0.1, NaN]}}')
    with pytest.raises(GateInputError, match=r"r\.json: per-sample vectors hold non-finite"):
        load_evaluation(path)


def test_nan_metric_is_kept_for_its_gate_to_fail(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"metrics": {"nrmse": NaN, "mse": Infinity}}')
    ev = load_evaluation(path)
    assert math.isnan(ev.metrics["nrmse"]) and ev.metrics["mse"] == math.inf


@pytest.mark.parametrize(("text", "problem"), [
    ('{"metrics": {"nrmse": 0.1, "nrmse": 0.2}}', "duplicate key 'nrmse'"),
    ('{"metrics": {"nrmse": ' + "9" * 400 + "}}", "integer of 400 digits"),
    ('{"metrics": {"nrmse": ' + "9" * 5000 + "}}", "integer of 5000 digits"),
    ('{"metrics": {"nrmse": 0.1}, "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "nested too deeply"),
    ('{"metrics": {"field/nrmse": 1e-9, "nrmse": 0.1}}', "brings its own field metrics"),
    ('{"metrics": {"nrmse": 0.1}, "extra": 3}', '"extra" must be a mapping or null'),
    ('{"metrics_flat": {"nrmse": 0.1}}', "neither metric:<name> nor extra:<name>"),
])
def test_ambiguous_or_impossible_json_is_refused(tmp_path: Path, text: str,
                                                 problem: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(GateInputError) as caught:
        load_evaluation(path)
    assert caught.value.path == str(path) and problem in caught.value.problem


def test_only_regular_files_are_read_and_a_fifo_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "r.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(GateInputError, match="FIFO"):
        load_evaluation(fifo)
    assert time.monotonic() - started < 5
    loop = tmp_path / "loop.json"
    os.symlink(tmp_path / "other.json", loop)
    os.symlink(loop, tmp_path / "other.json")
    with pytest.raises(GateInputError, match="symbolic links"):
        load_evaluation(loop)
    with pytest.raises(GateInputError, match="is a directory"):
        read_regular(tmp_path, "evaluation report")


# ----------------------------------------------------------------------------- sidecars


def test_sidecars_by_prefix_and_the_dotted_prefix(tmp_path: Path) -> None:
    for name in ("eval_tau0.json", "eval_tau0.5_ttc_step_logs.json", "eval_tau0.5.config.yaml",
                 "eval_tau0.5_preview.npz", "other_ttc_step_logs.json"):
        (tmp_path / name).write_text("x")
    assert discover_sidecars(tmp_path / "eval_tau0.json") == {
        "ttc_log": tmp_path / "eval_tau0.5_ttc_step_logs.json",
        "config": tmp_path / "eval_tau0.5.config.yaml",
        "preview": tmp_path / "eval_tau0.5_preview.npz"}
    (tmp_path / "eval_tau0_ttc_step_logs.json").write_text("x")  # its own prefix wins
    assert discover_sidecars(tmp_path / "eval_tau0.json")["ttc_log"] == \
        tmp_path / "eval_tau0_ttc_step_logs.json"
    (tmp_path / "eval_tau0.7.config.yaml").write_text("x")
    with pytest.raises(GateInputError, match="several config sidecars"):
        discover_sidecars(tmp_path / "eval_tau0.json")


def test_a_samples_sidecar_and_details_together_are_ambiguous(tmp_path: Path) -> None:
    path = write(tmp_path / "r.json", {"metrics": {"mse": 0.1},
                                       "details": {"per_sample_mse": [0.1]}})
    np.savez(tmp_path / "r_samples.npz", mse=np.array([0.1]))
    with pytest.raises(GateInputError, match="both from this sidecar and from the report"):
        load_evaluation(path)


# ----------------------------------------------------------------------------- samples


def test_samples_npz_is_read_with_ids(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, nrmse=np.arange(4, dtype=np.float32), sample_id=np.array(list("abcd")))
    vectors, ids = load_samples(path)
    assert vectors["nrmse"].dtype == np.float64 and ids is not None and ids.tolist() == \
        list("abcd")


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """64 MiB of zeros compress to about 64 KiB; with a 16 MiB limit nothing is inflated."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("nrmse.npy", "w") as member:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": (8 * 1024 * 1024,)})
        member.write(header.getvalue())
        chunk = bytes(1024 * 1024)
        for _ in range(64):
            member.write(chunk)
    assert path.stat().st_size < 1024 * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(GateInputError, match="refused without inflating it"):
        load_samples(path, limit=16 * 1024 * 1024)
    assert time.monotonic() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 32 * 1024  # KiB
    vectors, _ = load_samples(path, limit=128 * 1024 * 1024)  # within a larger limit: fine
    assert vectors["nrmse"].shape == (8 * 1024 * 1024,)


@pytest.mark.parametrize(("arrays", "problem"), [
    ({"nrmse": np.ones(3) * (1 + 2j)}, "holds complex values"),
    ({"nrmse": np.array([1.0, np.inf])}, "non-finite values: nrmse (1)"),
    ({"nrmse": np.ones(3), "mse": np.ones(2)}, "differ in length"),
    ({"nrmse": np.ones(2), "sample_id": np.array([1, 1])}, "duplicate ids"),
])
def test_bad_sample_vectors(tmp_path: Path, arrays: dict[str, np.ndarray],
                            problem: str) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(GateInputError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_samples(path)


# ----------------------------------------------------------------------------- leaderboard


HEADER = "run_id,timestamp,label,config,notes,commit,run,train_wandb_run,metric:nrmse," \
         "extra:ttc,extra:samples,extra:note"


def leaderboard(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "leaderboard.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_cells_are_typed_one_type_per_column(tmp_path: Path) -> None:
    path = leaderboard(tmp_path,
                       "a_small,2026-01-01T00:00:00,small_eval,c/a.yaml,,1234567,a,w-a,0.1,True,"
                       "64,None",
                       "a_full,2026-01-01T00:00:01,full_eval,c/b.yaml,,1234567,a,w-a,nan,False,"
                       ",x",
                       "b_full,2026-01-02T00:00:00,full_eval,c/c.yaml,,89ab,b,w-b,None,,32,")
    board = read_leaderboard(path)
    table = board.table
    assert table["commit"].tolist() == ["1234567", "1234567", "89ab"]  # tags stay text
    assert table["extra:ttc"].tolist() == [True, False, None]
    assert table["extra:samples"].dtype == float and math.isnan(table["extra:samples"][1])
    assert table["extra:note"].tolist() == [None, "x", None]
    nrmse = table["metric:nrmse"].tolist()
    assert nrmse[0] == 0.1 and math.isnan(nrmse[1]) and math.isnan(nrmse[2])
    assert board.row(0)["extra:samples"] == 64.0 and type(board.row(0)["extra:samples"]) is \
        float


def test_newest_row_by_parsed_timestamp_ties_to_the_later_row() -> None:
    table = pd.DataFrame({"run_id": ["a", "b", "c", "d"],
                          "timestamp": ["2026-01-01T10:00:00+02:00", "2026-01-01T08:30:00",
                                        "1767256200", "2026-01-01T08:30:00Z"]})
    keys = timestamps(table)
    assert keys[0] < keys[1] == keys[2] == keys[3]  # +02:00, naive UTC, epoch, Z
    assert newest(table) == 3
    assert newest(pd.DataFrame({"timestamp": [None, "junk"]})) == 1  # none known: the last


def test_duplicate_run_ids_are_refused(tmp_path: Path) -> None:
    path = leaderboard(tmp_path, "a,2026-01-01,x,,,,,,0.1,,,", "a,2026-01-02,y,,,,,,0.2,,,")
    with pytest.raises(GateInputError, match="run_id 'a' appears on lines 2 and 3"):
        read_leaderboard(path)


def test_find_row_by_the_ids_this_run_knows(tmp_path: Path) -> None:
    path = leaderboard(tmp_path,
                       "r1_small,2026-01-01,small_eval,art/runs/r1/configs/small.yaml,,,r1,w1,"
                       "0.1,,,",
                       "r1_full,2026-01-02,full_eval,art/runs/r1/configs/full.yaml,,,r1,w1,0.2,,,",
                       "r2_full,2026-01-03,full_eval,art/runs/r2/configs/full.yaml,,,r2,w2,0.3,,,")
    table = read_leaderboard(path).table
    assert find_row(table, run_ids=["r1_full"], config=None) == 1
    assert find_row(table, run_ids=["w2"], config=None) == 2  # train_wandb_run
    assert find_row(table, run_ids=["r2"], config=None) == 2  # the run column, one row
    assert find_row(table, run_ids=["r1"], config=None) is None  # two rows: ambiguous
    assert find_row(table, run_ids=["nope"],
                    config="/home/u/art/runs/r1/configs/small.yaml") == 0
    assert find_row(table, run_ids=["nope"], config=None) is None  # never the newest


def test_eval_row_picks_by_run_id_or_label_and_provenance_flows(tmp_path: Path) -> None:
    path = leaderboard(tmp_path, "r1_small,2026-01-01,small_eval,c.yaml,,abc123,r1,w1,0.1,,,",
                       "r1_full,2026-01-01,full_eval,c.yaml,,abc123,r1,w1,0.2,,,")
    board = read_leaderboard(path)
    assert pick(board, None) == 1 and pick(board, "small_eval") == 0
    ev = load_evaluation(path, row="r1_small")
    assert ev.metrics == {"nrmse": 0.1} and ev.format == "leaderboard"
    assert ev.provenance == {"run": "r1", "commit": "abc123", "train_wandb_run": "w1",
                             "config": "c.yaml"}
    assert ev.run_id == "r1_small"


# ----------------------------------------------------------------------------- run info


@pytest.mark.parametrize(("data", "expected"), [
    ({"run_id": "abc", "project": "p", "entity": "e", "url": None},
     {"id": "abc", "project": "p", "entity": "e"}),
    ({"id": "abc", "name": "n", "project": "p", "entity": "e", "url": "https://x/abc"},
     {"id": "abc", "name": "n", "project": "p", "entity": "e", "url": "https://x/abc"}),
    ({"id": "abc", "name": "n", "entity": "", "project": "p", "url": None},
     {"id": "abc", "name": "n", "project": "p"}),
])
def test_run_info_in_each_of_its_shapes(tmp_path: Path, data: dict, expected: dict) -> None:
    assert load_run_info(write(tmp_path / "info.json", data)) == expected


def test_a_missing_run_info_file_is_a_warning(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("FAST_TO_SOTA_WANDB_INFO", raising=False)
    assert load_run_info(None) == {}
    info = load_run_info(tmp_path / "artifacts" / "wandb_run.json")
    assert list(info) == ["_warning"] and "wandb_run.json" in info["_warning"]
    monkeypatch.setenv("FAST_TO_SOTA_WANDB_INFO", str(tmp_path / "absent.json"))
    monkeypatch.setenv("WANDB_RUN_ID", "env-id")
    info = load_run_info(None)
    assert info["id"] == "env-id" and "absent.json" in info["_warning"]
    with pytest.raises(GateInputError, match="not found"):
        load_run_info(tmp_path / "absent.json", required=True)
    assert run_path({"id": "i", "entity": "e", "project": "p"}) == "e/p/i"


# ----------------------------------------------------------------------------- logs, config


def test_training_logger_lines_and_appended_runs(tmp_path: Path) -> None:
    def lines(stage: str, epochs: int, loss0: float) -> list[dict]:
        return [{"stage": stage, "loss": loss0 / (e + 1), "epoch": e, "epoch_time_sec": 30.0,
                 "best_loss": loss0 / (e + 1)} for e in range(epochs)]
    old = lines("operator", 3, 9.0)
    new = lines("operator", 4, 1.0) + lines("diffusion_residual", 2, 0.5)
    path = tmp_path / "training_log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in old + new))
    stages = read_training_log(path)
    assert [s.stage for s in stages] == ["operator", "diffusion_residual"]
    operator = stages[0]
    assert operator.final_loss == 0.25 and operator.best_loss == 0.25  # the last run only
    assert operator.epochs == 4 and operator.minutes == 2.0


def test_wandb_history_csv_export(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("_step,_timestamp,training/operator/loss,training/operator/step,"
                    "training/diffusion_residual/loss,training/diffusion_residual/step\n"
                    "0,1000,0.5,0,,\n1,1060,0.25,1,,\n2,1120,0.3,2,,\n"
                    "3,1180,,,0.2,0\n4,1300,,,0.1,1\n")
    stages = {s.stage: s for s in read_training_log(path)}
    op = stages["operator"]
    assert (op.final_loss, op.best_loss, op.epochs, op.minutes) == (0.3, 0.25, 3.0, 2.0)
    diff = stages["diffusion_residual"]
    assert (diff.final_loss, diff.best_loss, diff.epochs, diff.minutes) == (0.1, 0.1, 2.0, 2.0)


def test_ttc_entries_sharing_a_batch_are_numbered_within_it(tmp_path: Path) -> None:
    entries = [{"step": b, "rewards": [0.1, 0.2], "totals": [0.3, 0.1], "chosen": 0}
               for b in (0, 0, 1, 1)]
    steps = read_ttc_log(write(tmp_path / "t.json", entries))
    assert [(s.step, s.ttc_step) for s in steps] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert steps[0].chosen_total == 0.3 and steps[0].chosen_reward == 0.1
    assert steps == ttc_steps("details", entries)


def test_config_yaml_via_pyyaml(tmp_path: Path) -> None:
    path = tmp_path / "results.config.yaml"
    path.write_text("model:\n  dim: 16\n  stages: [a, b]\nflag: true\n")
    assert read_config(path) == {"model": {"dim": 16, "stages": ["a", "b"]}, "flag": True}
    path.write_text("- a\n- b\n")
    with pytest.raises(GateInputError, match="expected a mapping"):
        read_config(path)
