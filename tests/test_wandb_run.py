"""The offline-run reader, checked against real runs written by the pinned wandb.

One subprocess (hermetic environment, offline) writes two runs: ``gates0001`` with what the
W&B sink logs (tables, summary, bar chart, alert, baseline artifact) and ``big00001``
whose 100 KB config value spans several 32 KiB blocks of the log.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.wandb_run import (
    BLOCK_LEN,
    CHUNK_HEADER_LEN,
    FIRST,
    FULL,
    HEADER_IDENT,
    HEADER_MAGIC,
    HEADER_VERSION,
    LAST,
    MIDDLE,
    OfflineRun,
    _iter_payloads,
    find_offline_runs,
    hermetic_wandb_env,
    read_offline_run,
    read_records,
)

RUN_ID = "gates0001"
BIG_RUN_ID = "big00001"
BLOB_LEN = 100_000

WRITE_RUNS = textwrap.dedent(
    f"""
    import wandb

    run = wandb.init(
        id={RUN_ID!r}, project="p", group="g", job_type="gates",
        config={{"gates": {{"eval_run_id": "abc"}}}},
    )
    run.define_metric("loss", summary="min")
    results = wandb.Table(
        columns=["gate", "status", "current"],
        data=[["rmse", "pass", 0.01], ["mass", "fail", 2.5], ["energy", "pass", 1e-6]],
    )
    run.log({{"gates/results": results, "loss": 0.5}})
    run.log({{"loss": 0.25}})
    run.summary["gates/verdict"] = "pass"
    run.summary["gates/passed"] = 3
    violations = wandb.Table(columns=["metric", "value"], data=[["mass", 0.2], ["energy", 0.1]])
    run.log({{"physics/violations": wandb.plot.bar(violations, "metric", "value", title="V")}})
    run.alert(title="T", text="line1\\nline2", level=wandb.AlertLevel.WARN, wait_duration=300)
    baseline = wandb.Artifact(
        "burgers1d", type="baseline", metadata={{"version": 1, "metrics": {{"rmse": 0.01}}}}
    )
    with baseline.new_file("baseline.json") as f:
        f.write('{{"rmse": 0.01}}')
    run.log_artifact(baseline, aliases=["champion", "v1"])
    run.finish()

    big = wandb.init(id={BIG_RUN_ID!r}, project="p", config={{"blob": "x" * {BLOB_LEN}}})
    big.finish()
    wandb.teardown()
    """
)


@dataclass
class Produced:
    root: Path
    run_dir: Path
    big_dir: Path


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> Produced:
    root = tmp_path_factory.mktemp("wandb_offline")
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_RUNS],
        env=hermetic_wandb_env(root),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    runs = find_offline_runs(root)
    by_id = {p.name.rsplit("-", 1)[-1]: p for p in runs}
    assert set(by_id) == {RUN_ID, BIG_RUN_ID}, runs
    return Produced(root=root, run_dir=by_id[RUN_ID], big_dir=by_id[BIG_RUN_ID])


@pytest.fixture(scope="module")
def run(produced: Produced) -> OfflineRun:
    return read_offline_run(produced.run_dir)


def _encode_log(payloads: list[bytes]) -> bytes:
    """A writer following the documented format, to check the reader against."""
    out = bytearray(struct.pack("<4sHB", HEADER_IDENT, HEADER_MAGIC, HEADER_VERSION))
    for payload in payloads:
        rest, first = payload, True
        while True:
            room = BLOCK_LEN - len(out) % BLOCK_LEN
            if room < CHUNK_HEADER_LEN:
                out += b"\x00" * room
                room = BLOCK_LEN
            piece, rest = rest[: room - CHUNK_HEADER_LEN], rest[room - CHUNK_HEADER_LEN :]
            last = not rest
            kind = FULL if first and last else FIRST if first else LAST if last else MIDDLE
            crc = zlib.crc32(bytes([kind]) + piece)
            out += struct.pack("<IHB", crc, len(piece), kind) + piece
            first = False
            if last:
                break
    return bytes(out)


def _record_of_size(size: int) -> bytes:
    """A serialized Record of exactly ``size`` bytes."""
    from wandb.proto import wandb_internal_pb2

    pb: Any = wandb_internal_pb2
    for n in range(size, -1, -1):
        payload = pb.Record(uuid="u" * n).SerializeToString()
        if len(payload) == size:
            return bytes(payload)
    raise AssertionError(f"no Record of {size} bytes")


# --- finding and identifying runs ---------------------------------------------------------


def test_find_offline_runs_lists_each_run_once_sorted(produced: Produced) -> None:
    runs = find_offline_runs(produced.root)
    assert runs == sorted(runs)
    assert runs == sorted([produced.run_dir, produced.big_dir])
    assert (produced.root / "wandb" / "latest-run").is_symlink()  # not listed again
    assert all(p.parent == produced.root / "wandb" for p in runs)


def test_run_identity_and_exit(run: OfflineRun, produced: Produced) -> None:
    assert run.dir == produced.run_dir
    assert run.run_id == RUN_ID
    assert (run.project, run.group, run.job_type) == ("p", "g", "gates")
    assert run.exited and run.exit_code == 0
    assert run.wandb_version is not None and run.wandb_version.startswith("0.31.0")
    kinds = [r.WhichOneof("record_type") for r in run.records]
    assert kinds[:2] == ["header", "run"]
    assert kinds[-1] == "exit"


def test_read_offline_run_accepts_the_log_file_itself(produced: Produced) -> None:
    wandb_file = produced.run_dir / f"run-{RUN_ID}.wandb"
    assert read_offline_run(wandb_file).run_id == RUN_ID


# --- config, summary, history -------------------------------------------------------------


def test_config_rebuilds_nested_values(run: OfflineRun) -> None:
    assert run.config["gates"] == {"eval_run_id": "abc"}
    assert run.config["gates"]["eval_run_id"] == "abc"


def test_summary_keys_stay_flat(run: OfflineRun) -> None:
    assert run.summary["gates/verdict"] == "pass"
    assert run.summary["gates/passed"] == 3
    assert "gates" not in run.summary
    # define_metric(summary="min") replaces the last value with {"min": ...}.
    assert run.summary["loss"] == {"min": 0.25}
    table = run.summary["gates/results"]
    assert table["_type"] == "table-file"
    assert table["path"].startswith("media/table/gates/results_")
    assert (table["nrows"], table["ncols"]) == (3, 3)


def test_summary_assignment_is_recorded_with_a_flat_key(run: OfflineRun) -> None:
    items = [
        (item.key, list(item.nested_key))
        for record in run.records
        if record.WhichOneof("record_type") == "summary"
        for item in record.summary.update
        if "gates/passed" in (item.key, *item.nested_key)
    ]
    assert items == [("gates/passed", [])]
    history_items = [
        list(item.nested_key)
        for record in run.records
        if record.WhichOneof("record_type") == "history"
        for item in record.history.item
        if item.nested_key and item.nested_key[0] == "gates/results"
    ]
    assert ["gates/results", "path"] in history_items


def test_history_rows(run: OfflineRun) -> None:
    assert [row["_step"] for row in run.history] == [0, 1, 2]
    assert [row.get("loss") for row in run.history] == [0.5, 0.25, None]
    assert run.history[0]["gates/results"]["_type"] == "table-file"
    assert run.history[0]["gates/results"]["path"] == run.summary["gates/results"]["path"]
    assert run.history[2]["physics/violations_table"]["_type"] == "table-file"


# --- tables and charts --------------------------------------------------------------------


def test_table_rows_come_from_the_table_json(run: OfflineRun) -> None:
    assert run.media_file("gates/results").is_file()
    content = run.table("gates/results")
    assert content["columns"] == ["gate", "status", "current"]
    assert run.table_rows("gates/results") == [
        {"gate": "rmse", "status": "pass", "current": 0.01},
        {"gate": "mass", "status": "fail", "current": 2.5},
        {"gate": "energy", "status": "pass", "current": 1e-6},
    ]
    assert run.table_keys() == ["gates/results", "physics/violations_table"]


def test_bar_chart_spec_and_table(run: OfflineRun) -> None:
    spec = run.charts["physics/violations"]
    assert spec["panel_config"]["panelDefId"] == "wandb/bar/v0"
    assert spec["panel_config"]["fieldSettings"] == {"label": "metric", "value": "value"}
    assert run.table_rows("physics/violations") == [
        {"metric": "mass", "value": 0.2},
        {"metric": "energy", "value": 0.1},
    ]
    assert run.table("physics/violations") == run.table("physics/violations_table")


def test_unknown_table_key_raises_key_error(run: OfflineRun) -> None:
    with pytest.raises(KeyError, match="gates/results"):
        run.table("regression/comparison")
    with pytest.raises(KeyError):
        run.table("gates/verdict")


# --- alerts and artifacts -----------------------------------------------------------------


def test_alert(run: OfflineRun) -> None:
    assert run.alerts == [
        {
            "title": "T",
            "text": "line1\nline2",
            "level": "WARN",
            "wait_duration": 300,
            "wait_duration_ms": 300_000,
        }
    ]


def test_baseline_artifact(run: OfflineRun, produced: Produced) -> None:
    baselines = [a for a in run.artifacts if a["type"] == "baseline"]
    assert len(baselines) == 1
    art = baselines[0]
    assert art["name"] == "burgers1d"
    assert set(art["aliases"]) == {"champion", "v1", "latest"}
    assert art["metadata"] == {"version": 1, "metrics": {"rmse": 0.01}}
    assert len(art["digest"]) == 32
    (entry,) = art["entries"]
    assert (entry["path"], entry["size"]) == ("baseline.json", len('{"rmse": 0.01}'))
    assert entry["local_path"].startswith(str(produced.root))  # staging stayed in tmp
    tables = sorted(a["name"] for a in run.artifacts if a["type"] == "run_table")
    assert len(tables) == 2
    assert tables[0].startswith(f"run-{RUN_ID}-gatesresults-")


# --- the log format -----------------------------------------------------------------------


def test_record_spanning_blocks(produced: Produced) -> None:
    big = read_offline_run(produced.big_dir)
    assert big.config["blob"] == "x" * BLOB_LEN
    assert big.exited
    assert (produced.big_dir / f"run-{BIG_RUN_ID}.wandb").stat().st_size > 3 * BLOCK_LEN


@pytest.mark.parametrize("which", ["run_dir", "big_dir"])
def test_documented_format_rewrites_the_real_log_byte_for_byte(
    produced: Produced, which: str
) -> None:
    run_dir: Path = getattr(produced, which)
    wandb_file = next(run_dir.glob("run-*.wandb"))
    data = wandb_file.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00"
    payloads = list(_iter_payloads(data, wandb_file, allow_incomplete=False))
    assert _encode_log(payloads) == data


def test_block_trailer_and_zero_length_first_chunk(tmp_path: Path) -> None:
    # Record 1 leaves 3 bytes in block 0 (zero trailer); record 3 leaves exactly a
    # chunk header's worth in block 1, so record 4 starts with an empty FIRST chunk.
    first = _record_of_size(BLOCK_LEN - 7 - CHUNK_HEADER_LEN - 3)
    second = _record_of_size(1000)
    third = _record_of_size(BLOCK_LEN - CHUNK_HEADER_LEN - 1000 - CHUNK_HEADER_LEN * 2)
    fourth = _record_of_size(50)
    payloads = [first, second, third, fourth]
    data = _encode_log(payloads)
    assert data[BLOCK_LEN - 3 : BLOCK_LEN] == b"\x00\x00\x00"
    assert struct.unpack("<IHB", data[2 * BLOCK_LEN - 7 : 2 * BLOCK_LEN])[1:] == (0, FIRST)
    log = tmp_path / "run-synth.wandb"
    log.write_bytes(data)
    assert [r.SerializeToString() for r in read_records(log)] == payloads


# --- damaged logs -------------------------------------------------------------------------


@pytest.fixture
def log_copy(produced: Produced, tmp_path: Path) -> tuple[Path, bytes]:
    data = (produced.run_dir / f"run-{RUN_ID}.wandb").read_bytes()
    copy = tmp_path / "offline-run-20000101_000000-damaged" / f"run-{RUN_ID}.wandb"
    copy.parent.mkdir()
    return copy, data


def test_truncated_log_raises_value_error_naming_the_file(
    log_copy: tuple[Path, bytes], run: OfflineRun
) -> None:
    path, data = log_copy
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated") as err:
        read_offline_run(path.parent)
    assert str(path) in str(err.value)
    # A run still being written: everything before the torn record is kept.
    partial = read_offline_run(path.parent, allow_incomplete=True)
    assert len(partial.records) == len(run.records) - 1
    assert not partial.exited


def test_corrupt_byte_raises_crc_error(log_copy: tuple[Path, bytes]) -> None:
    path, data = log_copy
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="crc mismatch") as err:
        read_records(path)
    assert str(path) in str(err.value)


def test_bad_header_raises_value_error(log_copy: tuple[Path, bytes]) -> None:
    path, data = log_copy
    path.write_bytes(b"NOTWANDB" + data[8:])
    with pytest.raises(ValueError, match="not a W&B transaction log") as err:
        read_records(path)
    assert str(path) in str(err.value)
    path.write_bytes(b":W&B")
    with pytest.raises(ValueError, match="no header"):
        read_records(path)


def test_header_only_log_has_no_run(log_copy: tuple[Path, bytes]) -> None:
    path, data = log_copy
    path.write_bytes(data[:7])
    assert read_records(path) == []
    with pytest.raises(ValueError, match="no run record") as err:
        read_offline_run(path.parent)
    assert str(path) in str(err.value)


def test_missing_run_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_offline_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="found 0"):
        read_offline_run(tmp_path)


# --- environment and wandb sync -----------------------------------------------------------


def test_hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_PROJECT", "leaked")
    monkeypatch.setenv("WANDB_MODE", "online")
    env = hermetic_wandb_env(tmp_path)
    assert "WANDB_PROJECT" not in env
    assert env["WANDB_MODE"] == "offline"
    assert env["PATH"] == os.environ["PATH"]
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        assert Path(env[name]).is_dir()
        assert Path(env[name]).is_relative_to(tmp_path)


def test_sync_dry_run_lists_the_run(produced: Produced) -> None:
    # Prints on stderr, paths relative to cwd:
    #   wandb: Would sync 1 run(s):
    #   wandb:   wandb/offline-run-<ts>-gates0001/run-gates0001.wandb
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run", str(produced.run_dir)],
        env=hermetic_wandb_env(produced.root),
        cwd=produced.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Would sync 1 run(s)" in output
    assert f"run-{RUN_ID}.wandb" in output
    assert BIG_RUN_ID not in output
