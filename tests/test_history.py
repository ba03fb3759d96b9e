"""``python -m gates history``: table, JSON, change points, trend charts, gates.md text."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gates.api import run_gates
from gates.history import (
    change_points,
    history_line_plots,
    history_markdown,
    levels,
    regime_note,
    since_filter,
    trend_png,
)
from gates.ledger import SCHEMA, append_run, read_runs
from gates.store import BaselineStore
from tests.test_ledger import gate_workspace

ROOT = Path(__file__).resolve().parent.parent


def record(i: int, nrmse: float, *, champion: int = 1, promoted: bool = False,
           status: str = "pass", mae: float | None = 0.2) -> dict[str, Any]:
    metrics: dict[str, Any] = {"nrmse": {"value": nrmse, "baseline": 0.1, "change_pct": 0.0,
                                         "status": status, "direction": "lower"}}
    if mae is not None:
        metrics["mae"] = {"value": mae, "baseline": 0.2, "change_pct": 0.0, "status": "pass",
                          "direction": "lower"}
    return {"schema": SCHEMA, "time": f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00Z",
            "suite": "demo", "run_id": f"run-{i}", "eval": f"evals/{i}.json",
            "eval_sha256": None, "git_commit": None, "champion": champion,
            "verdict": "fail" if status == "fail" else "pass", "promotable": promoted,
            "promoted": promoted, "new_champion": champion + 1 if promoted else None,
            "failed": ["regression/nrmse"] if status == "fail" else [], "metrics": metrics}


def step_store(tmp: Path, n: int = 60, step_at: int = 40, seed: int = 1) -> BaselineStore:
    """A suite whose nrmse steps up 20 % at run ``step_at`` (1 % noise); mae stays flat."""
    store = BaselineStore(tmp / "baselines")
    store.promote("demo", expected=None, provenance={}, metrics={"nrmse": 0.1, "mae": 0.2})
    rng = np.random.default_rng(seed)
    for i in range(n):
        level = 0.10 if i < step_at else 0.12
        append_run(store, "demo", record(i, level * (1 + 0.01 * rng.standard_normal()),
                                         mae=0.2 * (1 + 0.01 * rng.standard_normal()),
                                         status="fail" if i == step_at + 3 else "pass"))
    return store


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gates", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


def test_a_known_step_is_found_at_its_run(tmp_path: Path) -> None:
    step_store(tmp_path)
    done = cli("history", "demo", "--baselines", str(tmp_path / "baselines"), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["suite"] == "demo" and len(data["runs"]) == 60
    assert [r["run_id"] for r in data["runs"][:2]] == ["run-0", "run-1"]  # oldest first
    points = data["change_points"]
    assert [(p["metric"], p["index"]) for p in points] == [("nrmse", 40)], points
    p = points[0]
    assert p["run_id"] == "run-40" and p["eval"] == "evals/40.json"
    assert p["before"] == pytest.approx(0.10, rel=0.01)
    assert p["after"] == pytest.approx(0.12, rel=0.01)
    assert p["change_pct"] == pytest.approx(20.0, abs=2.0)
    assert set(p) == {"metric", "index", "run_id", "eval", "before", "after", "change_pct"}
    assert not (tmp_path / "gates-out").exists()  # --json alone writes no chart


def test_table_marks_champion_changes_and_writes_charts(tmp_path: Path) -> None:
    store = step_store(tmp_path, n=12, step_at=6)
    append_run(store, "demo", record(12, 0.09, promoted=True))
    append_run(store, "demo", record(13, 0.09, champion=2))
    out = tmp_path / "charts"
    done = cli("history", "demo", "--baselines", str(tmp_path / "baselines"), "--out",
               str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines[0].split()
    assert header[:6] == ["#", "time", "run", "champion", "verdict", "promoted"]
    assert "nrmse" in header  # the policy's primary metric
    rows = [line for line in lines if line.startswith(("12 ", "13 "))]
    assert "-> v2" in rows[0] and "v2 *" in rows[1]  # promotion, then the new champion
    assert lines.index(rows[1]) > lines.index(rows[0])  # newest last
    assert "level change at run #6" in done.stdout
    charts = sorted(p.name for p in out.iterdir())
    assert charts == ["history-demo-mae.png", "history-demo-nrmse.png"]
    assert (out / "history-demo-nrmse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metric_and_since_select(tmp_path: Path) -> None:
    step_store(tmp_path)
    done = cli("history", "demo", "--baselines", str(tmp_path / "baselines"), "--json",
               "--metric", "mae", "--since", "2026-11-02T12:00:00Z")
    data = json.loads(done.stdout)
    assert [r["run_id"] for r in data["runs"]][0] == "run-36"
    assert data["change_points"] == []  # mae is flat; nrmse not asked for
    bad = cli("history", "demo", "--baselines", str(tmp_path / "baselines"), "--since",
              "yesterday-ish")
    assert bad.returncode == 4 and "--since" in bad.stderr


def test_unknown_suite_and_empty_ledger(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "baselines")
    store.promote("demo", expected=None, provenance={}, metrics={"nrmse": 0.1})
    missing = cli("history", "other", "--baselines", str(tmp_path / "baselines"))
    assert missing.returncode == 1 and "no suite 'other'" in missing.stderr
    empty = cli("history", "demo", "--baselines", str(tmp_path / "baselines"), "--json")
    assert json.loads(empty.stdout) == {"suite": "demo", "runs": [], "change_points": []}
    assert history_markdown(store, "demo") == ""


def test_history_of_real_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = gate_workspace(tmp_path)
    monkeypatch.chdir(work)
    monkeypatch.delenv("FAST_TO_SOTA_WANDB_INFO", raising=False)
    for promote in (False, True, False):  # in this process: the CLI is tested elsewhere
        done = run_gates("burgers1d_eval.json", baselines="baselines", wandb="off",
                         promote=promote, extra=["-q", "-p", "no:cacheprovider"])
        assert done.exit_code == 0 and done.passed, (done.exit_code, done.verdict)
    shown = cli("history", "burgers1d", "--baselines", "baselines", cwd=work)
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if line[:2] in ("0 ", "1 ", "2 ")]
    assert len(rows) == 3
    assert "-> v2" in rows[1] and "v2 *" in rows[2] and "v1" in rows[0]
    assert (work / "gates-out" / "history-burgers1d-nrmse.png").is_file()
    md = history_markdown(BaselineStore(work / "baselines"), "burgers1d")
    assert md.startswith("### history: burgers1d") and md.count("\n| ") == 5  # head, rule, 3
    assert "v2 *" in md


def test_markdown_shows_the_last_runs_and_the_level_change(tmp_path: Path) -> None:
    store = step_store(tmp_path)
    md = history_markdown(store, "demo", last=20)
    table = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 21  # header + 20 runs
    assert table[1].startswith("| 40 |") and table[-1].startswith("| 59 |")
    assert "nrmse changed level at run #40 (run-40)" in md and "+20" in md


def test_line_plot_rows(tmp_path: Path) -> None:
    store = step_store(tmp_path, n=20, step_at=10)
    frame = history_line_plots(store, "demo")
    assert list(frame.columns) == ["index", "time", "run_id", "metric", "value",
                                   "champion_value", "verdict", "promoted", "failed",
                                   "change_point"]
    assert len(frame) == 40
    nrmse = frame[frame.metric == "nrmse"]
    assert list(nrmse[nrmse.change_point]["index"]) == [10]
    assert bool(nrmse[nrmse["index"] == 13].failed.iloc[0])


def test_noise_alone_shows_no_level_change() -> None:
    rng = np.random.default_rng(7)
    false = sum(bool(levels(1 + 0.03 * rng.standard_normal(50))) for _ in range(200))
    assert false <= 10  # about 1 % expected; 5 % allowed


def test_exact_reruns_and_a_small_step() -> None:
    assert levels([0.1] * 30) == []
    assert levels([0.1] * 15 + [0.105] * 15) == [15]  # 5 %, no noise: found exactly
    assert levels([0.1] * 15 + [0.1005] * 15) == []  # 0.5 %: below the reported size


def test_long_series_is_placed_exactly() -> None:
    rng = np.random.default_rng(3)
    x = 0.1 * (1 + 0.02 * rng.standard_normal(10_000))
    x[6_789:] *= 1.15
    assert levels(x) == [6_789]


def _regime_runs(values: list[float]) -> list[dict[str, Any]]:
    return [record(i, v) for i, v in enumerate(values)]


def test_regime_note_for_a_new_worse_level() -> None:
    rng = np.random.default_rng(5)
    flat = list(0.10 * (1 + 0.01 * rng.standard_normal(12)))
    assert regime_note(_regime_runs(flat), "nrmse", 0.1005) is None
    worse = _regime_runs(flat[:9] + [0.125, 0.124, 0.126])
    note = regime_note(worse, "nrmse", 0.125, k=10)
    assert note is not None and "new, worse level" in note and "run run-9" in note
    assert "25" in note or "24" in note
    better = _regime_runs(flat[:9] + [0.08, 0.081, 0.079])
    assert regime_note(better, "nrmse", 0.08, k=10) is None  # better is no warning
    single = regime_note(_regime_runs(flat), "nrmse", 0.14, k=10)
    assert single is not None and "if the next runs confirm it" in single
    assert regime_note(_regime_runs(flat[:2]), "nrmse", 0.2) is None  # too little history
    assert regime_note(_regime_runs(flat), "nrmse", float("nan")) is None


def test_since_accepts_dates_and_ages() -> None:
    runs = _regime_runs([0.1] * 48)
    assert len(since_filter(runs, "2026-11-02")) == 24
    from datetime import UTC, datetime

    now = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)
    assert len(since_filter(runs, "12h", now=now)) == 12


@pytest.mark.slow
def test_bench_history_of_10000_runs(tmp_path: Path) -> None:
    """Figures for the closing note: history of 10,000 runs (slow; run with -m slow)."""
    store = BaselineStore(tmp_path / "baselines")
    store.promote("demo", expected=None, provenance={}, metrics={"nrmse": 0.1})
    rng = np.random.default_rng(0)
    path = tmp_path / "baselines" / "demo" / "runs.jsonl"
    names = ["nrmse", "mae", "rmse", "conservation_gap", "bc_violation"]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(10_000):
            rec = record(i, 0.1 * (1.2 if i > 7000 else 1.0) * (1 + 0.02 * rng.standard_normal()),
                         champion=1 + i // 1000, promoted=i % 1000 == 999)
            for name in names[1:]:
                rec["metrics"][name] = {"value": float(rng.lognormal()), "baseline": 1.0,
                                        "change_pct": 1.0, "status": "pass"}
            handle.write(json.dumps(rec) + "\n")
    import resource

    for args in (("--metric", "nrmse"), ()):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = cli("history", "demo", "--baselines", str(tmp_path / "baselines"), "--out",
                   str(tmp_path / "out"), *args)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert done.returncode == 0, done.stderr
        started, cpu = time.perf_counter(), time.process_time()
        runs, _ = read_runs(store, "demo")
        chosen = list(args[1:]) or names
        points = change_points(runs, chosen)
        for metric in chosen:
            trend_png(runs, metric, points, tmp_path / "inner" / f"{metric}.png")
        inner_wall, inner_cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"\nhistory of 10,000 runs, {len(chosen)} metric chart(s): command "
              f"{wall:.2f} s wall / {child_cpu:.2f} s CPU (interpreter start and imports "
              f"included); in process (read, change points, charts) {inner_wall:.2f} s wall "
              f"/ {inner_cpu:.2f} s CPU; {len(points)} change point(s)")
