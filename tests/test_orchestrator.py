"""universal-simulator's own promotion rule: with the documented policy
(``baselines/universal-simulator.policy.toml``), real gate sessions on the files its writers
produced (../shared/ups-artifacts) decide promotion as its orchestrator does, and a
promotion appends the ``<run>_champion`` leaderboard row that the orchestrator reads."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from gates.store import BaselineStore
from tests.conftest import PACKAGE, ROOT

UPS = ROOT.parent / "shared" / "ups-artifacts"
RUNS = UPS / "artifacts" / "runs"
FIRST, SECOND = "run_20251120_093000", "run_20251121_101500"
POLICY = ROOT / "baselines" / "universal-simulator.policy.toml"

pytestmark = pytest.mark.skipif(not UPS.is_dir(), reason=f"{UPS} is not here (shared/ is "
                                "laid beside the checkout in CI and in sessions)")


def orchestrator_promotes(champion: dict[str, float] | None, run: dict[str, float],
                          min_delta: float = 0.01) -> bool:
    """scripts/run_fast_to_sota.py::_check_gates as its README documents it: an absolute
    nrmse gain of at least ``min_delta``, physics ratios against the champion, a missing
    metric skips its ratio gate, and no champion is a provisional pass."""
    if champion is None:
        return True
    if champion["nrmse"] - run["nrmse"] < min_delta:
        return False
    ratios = {"conservation_gap": 1.0, "bc_violation": 1.0, "ece": 1.25, "wall_clock": 1.0}
    return all(run[m] <= r * champion[m] for m, r in ratios.items()
               if m in run and m in champion)


def metrics(path: Path) -> dict[str, float]:
    return dict(json.loads(path.read_text())["metrics"])


def session(pytester: pytest.Pytester, report: Path, store: Path, *extra: str
            ) -> tuple[int, dict]:
    result = pytester.runpytest(str(PACKAGE), "--gates-eval", str(report), "--gates-baselines",
                                str(store), "--gates-suite", "ups", "--gates-wandb", "off",
                                "--gates-out", str(report.parent / "out"),
                                "-p", "no:cacheprovider", *extra)
    out = json.loads((report.parent / "out" / "gates.json").read_text())
    return int(result.ret), out


def workspace(tmp_path: Path) -> tuple[Path, Path]:
    runs = tmp_path / "artifacts" / "runs"
    for run in (FIRST, SECOND):
        shutil.copytree(RUNS / run, runs / run)
    store = tmp_path / "baselines"
    (store / "ups").mkdir(parents=True)
    shutil.copy(POLICY, store / "ups" / "policy.toml")
    return runs, store


@pytest.mark.parametrize("stage", ["small_eval", "full_eval"])
def test_decisions_equal_the_orchestrators(pytester: pytest.Pytester, tmp_path: Path,
                                           stage: str) -> None:
    runs, store = workspace(tmp_path)
    first, second = runs / FIRST / stage / "results.json", runs / SECOND / stage / "results.json"
    code, out = session(pytester, first, store, "--gates-promote")
    assert code == 0 and out["promotable"] is orchestrator_promotes(None, metrics(first))
    assert out["promoted"] and BaselineStore(store).champion_version("ups") == 1
    code, out = session(pytester, second, store, "--gates-promote")
    expected = orchestrator_promotes(metrics(first), metrics(second))
    assert code == 0  # not promoted does not stop the pipeline
    assert out["promotable"] is expected is False, out["promotion_reasons"]
    assert any("0.01 is required" in r for r in out["promotion_reasons"])
    assert BaselineStore(store).champion_version("ups") == 1


@pytest.mark.parametrize(("nrmse_gain", "gap_factor", "bc_factor"), [
    (0.02, 1.0, 1.0), (0.02, 1.01, 1.0), (0.02, 0.9, 1.2), (0.005, 0.9, 0.9), (0.0101, 1.0, 0.5)])
def test_synthetic_challengers_decide_alike(pytester: pytest.Pytester, tmp_path: Path,
                                            nrmse_gain: float, gap_factor: float,
                                            bc_factor: float) -> None:
    runs, store = workspace(tmp_path)
    first = runs / FIRST / "full_eval" / "results.json"
    assert session(pytester, first, store, "--gates-promote")[0] == 0
    data = json.loads(first.read_text())
    champ = dict(data["metrics"])
    data["metrics"].update(nrmse=champ["nrmse"] - nrmse_gain,
                           conservation_gap=champ["conservation_gap"] * gap_factor,
                           bc_violation=champ["bc_violation"] * bc_factor)
    challenger = runs / SECOND / "full_eval" / "results.json"
    challenger.write_text(json.dumps(data))
    code, out = session(pytester, challenger, store)
    assert code == 0
    assert out["promotable"] is orchestrator_promotes(champ, data["metrics"]), \
        out["promotion_reasons"]


def test_a_first_run_with_the_latent_conservation_gap_is_accepted(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    """About 6.1 for a good run of that codebase: above the default ceiling of 5."""
    runs, store = workspace(tmp_path)
    report = runs / FIRST / "full_eval" / "results.json"
    data = json.loads(report.read_text())
    data["metrics"]["conservation_gap"] = 6.1
    report.write_text(json.dumps(data))
    code, out = session(pytester, report, store, "--gates-promote")
    assert code == 0 and out["verdict"] == "pass" and out["promoted"]


def test_promotion_appends_the_champion_row_the_orchestrator_reads(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    runs, store = workspace(tmp_path)
    board = tmp_path / "reports" / "leaderboard.csv"
    board.parent.mkdir()
    lines = (UPS / "reports" / "leaderboard.csv").read_text().splitlines(keepends=True)
    board.write_text("".join(line for line in lines if ",champion," not in line))
    board.chmod(0o640)  # a user's file keeps its permissions when it is rewritten
    before = board.read_text()
    report = runs / FIRST / "full_eval" / "results.json"
    code, out = session(pytester, report, store, "--gates-promote", "--gates-leaderboard",
                        str(board))
    assert code == 0 and out["promoted"]
    assert board.stat().st_mode & 0o777 == 0o640
    text = board.read_text()
    assert text.startswith(before.rstrip("\n").split("\n")[0])  # the same header first
    rows = list(csv.DictReader(text.splitlines()))
    assert rows[:-1] == list(csv.DictReader(before.splitlines()))  # earlier rows untouched
    last = rows[-1]
    assert last["run_id"] == f"{FIRST}_champion" and last["label"] == "champion"
    assert last["run"] == FIRST
    assert float(last["metric:nrmse"]) == metrics(report)["nrmse"]
    assert last["extra:ttc"] == "True"  # str(value), as the writer writes cells
    # the orchestrator's champion: the lowest-nrmse row labelled champion
    champions = [r for r in rows if r["label"] == "champion"]
    best = min(champions, key=lambda r: float(r["metric:nrmse"]))
    assert best["run"] == FIRST
    assert any("appended" in n for n in out["notes"])
    # the orchestrator's own file already holds that champion row: never a second one
    shutil.copy(UPS / "reports" / "leaderboard.csv", board)
    again = board.read_text()
    runs2, store2 = workspace(tmp_path / "again")
    code, out = session(pytester, runs2 / FIRST / "full_eval" / "results.json", store2,
                        "--gates-promote", "--gates-leaderboard", str(board))
    assert code == 0 and out["promoted"] and board.read_text() == again
    assert any("not appended twice" in n for n in out["notes"])
