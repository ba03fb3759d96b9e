"""The chart process: it draws what the session finally gated, whatever it planned, and
leaves nothing behind when it is not used or fails."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from gates.model import Kind, Outcome, Status
from gates.sinks.charts import ChartProcess, render_all


def regression(metric: str, change: float, status: Status = Status.PASS) -> Outcome:
    return Outcome(f"regression/{metric}", Kind.REGRESSION, metric, status, current=1.0,
                   baseline=1.0, change_pct=change, threshold=10.0,
                   evidence={"direction": "lower"})


def physics(metric: str, value: float) -> Outcome:
    return Outcome(f"physics/{metric}/ceiling", Kind.PHYSICS, metric, Status.PASS,
                   current=value, threshold=1.0)


PLANNED = [regression("nrmse", -3.0), regression("mse", 4.0), physics("bc_violation", 0.2)]


def pictures(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def in_process(outcomes: list[Outcome], folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    render_all(outcomes, folder)
    return pictures(folder)


@pytest.mark.parametrize("final", [
    pytest.param(PLANNED, id="as-planned"),
    pytest.param(PLANNED[:1], id="selected-subset"),  # -k: only one regression gate ran
    pytest.param([*PLANNED, regression("custom_energy", 30.0, Status.FAIL)],
                 id="custom-regression-gate"),
    pytest.param(PLANNED[1:], id="no-regression-improved-left"),
])
def test_the_charts_show_what_ran(tmp_path: Path, final: list[Outcome]) -> None:
    charts = ChartProcess()
    charts.plan(PLANNED)
    drawn = charts.finish(final, tmp_path / "out")
    assert sorted(p.name for p in drawn) == sorted(pictures(tmp_path / "out"))
    assert pictures(tmp_path / "out") == in_process(final, tmp_path / "reference")
    assert not charts.staging.exists()


def test_without_a_plan_it_draws_at_the_end(tmp_path: Path) -> None:
    charts = ChartProcess()  # a session whose plan came only at its end
    drawn = charts.finish(PLANNED, tmp_path)
    assert [p.name for p in drawn] == ["gates_change.png", "gates_physics.png"]


def test_an_unused_chart_process_leaves_nothing(tmp_path: Path) -> None:
    charts = ChartProcess()
    charts.plan(PLANNED)
    charts.abort()
    assert charts.child.alive  # ready for the next session of this process
    assert not charts.staging.exists()


def test_sessions_of_one_process_share_one_child(tmp_path: Path) -> None:
    first, second = ChartProcess(), ChartProcess()
    assert first.child is second.child
    first.plan(PLANNED)
    second.plan(PLANNED[:1])
    assert [p.name for p in second.finish(PLANNED[:1], tmp_path / "b")] == [
        "gates_change.png"]
    assert len(first.finish(PLANNED, tmp_path / "a")) == 2


def test_a_dead_chart_process_is_an_error_not_a_hang(tmp_path: Path) -> None:
    charts = ChartProcess()
    charts.plan(PLANNED)
    charts.child.proc.kill()
    with pytest.raises(RuntimeError, match="the chart process failed"):
        charts.finish(PLANNED, tmp_path)
    assert not list(tmp_path.glob("*.png")) and not charts.staging.exists()
    again = ChartProcess()  # the next session starts a new one
    assert again.child is not charts.child
    assert len(again.finish(PLANNED, tmp_path)) == 2


def test_a_gate_session_leaves_no_chart_folder(pytester: pytest.Pytester,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Good input, bad input and --collect-only: the temporary folder is left empty."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    report = pytester.path / "eval.json"
    report.write_text('{"metrics": {"nrmse": 0.1, "conservation_gap": 0.01, '
                      '"bc_violation": 0.01, "negativity_penalty": 0.0}}')
    broken = pytester.path / "broken.json"
    broken.write_text("{not json")
    base = ["-p", "no:cacheprovider", "--gates-wandb", "off", "--gates-baselines",
            str(pytester.path / "store"), "--gates-promote", "--gates-suite", "demo"]
    from tests.conftest import PACKAGE

    first = pytester.runpytest(str(PACKAGE), "--gates-eval", str(report), *base)
    assert first.ret == 0
    assert (pytester.path / "gates-out" / "gates_physics.png").exists()
    bad = pytester.runpytest(str(PACKAGE), "--gates-eval", str(broken), *base)
    assert bad.ret == 1
    listed = pytester.runpytest(str(PACKAGE), "--gates-eval", str(report), "--collect-only",
                                *base)
    assert listed.ret == 0
    assert list(scratch.iterdir()) == []


def test_a_killed_session_leaves_no_chart_folder(tmp_path: Path) -> None:
    """The parent dies mid-session (no finish, no abort): its child removes the folder."""
    import subprocess
    import sys
    import time

    script = ("import os, sys\n"
              "from tests.test_charts import PLANNED\n"
              "from gates.sinks.charts import ChartProcess\n"
              "charts = ChartProcess()\ncharts.plan(PLANNED)\n"
              "print(charts.staging, flush=True)\nos._exit(0)\n")
    from tests.conftest import ROOT

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    staging = Path(done.stdout.strip())
    deadline = time.monotonic() + 60
    while staging.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not staging.exists()


PROBE = """
import json
import pytest

def _child_alive():
    import sys
    charts = sys.modules.get("gates.sinks.charts")
    return bool(charts and charts._CHILD and charts._CHILD[0].alive)

def pytest_load_initial_conftests(early_config):  # before any plugin's pytest_configure
    early_config._probe = {"before_configure": _child_alive()}

def pytest_sessionstart(session):
    session.config._probe["at_sessionstart"] = _child_alive()
    with open("probe.json", "w") as f:
        json.dump(session.config._probe, f)
"""


def test_a_gate_session_starts_its_chart_process_before_pytest_configures(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pytest gates/``: matplotlib loads while pytest still loads plugins and conftests.
    (Not in an xdist worker, which never charts: this test may run in one.)"""
    import json

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)

    from tests.conftest import PACKAGE

    pytester.makepyfile(probe=PROBE)
    # the plugin first (as its entry point would load it), then the probe
    done = pytester.runpytest_subprocess("-p", "gates.plugin", "-p", "probe", str(PACKAGE),
                                         "-p", "no:cacheprovider",
                                         "--gates-wandb", "off", "--gates-out",
                                         str(pytester.path / "out"))
    assert done.ret == 0, done.stdout.str()
    assert json.loads((pytester.path / "probe.json").read_text()) == {
        "before_configure": True, "at_sessionstart": True}
    assert (pytester.path / "out" / "gates_change.png").exists()


def test_a_chart_process_started_for_a_session_that_gates_nothing_is_stopped(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--gates-eval=`` (empty) looks like a gate session on the command line, but is not
    one: the chart process started ahead is stopped when pytest configures."""
    import json

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)

    pytester.makepyfile(probe=PROBE, test_plain="def test_one():\n    pass\n")
    done = pytester.runpytest_subprocess("-p", "gates.plugin", "-p", "probe", "--gates-eval=",
                                         "test_plain.py", "-p", "no:cacheprovider")
    assert done.ret == 0, done.stdout.str()
    assert json.loads((pytester.path / "probe.json").read_text()) == {
        "before_configure": True, "at_sessionstart": False}
    assert not (pytester.path / "gates-out").exists()


def test_a_usage_error_stops_the_chart_process_it_started(pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """pytest stops before configuring (an unknown option): the chart process started as
    the plugin registered does not outlive the call (an orchestrator would keep it)."""
    from gates.sinks import charts
    from tests.conftest import PACKAGE

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    charts.stop_child()
    done = pytester.runpytest_inprocess(str(PACKAGE), "--no-such-option")
    assert done.ret == pytest.ExitCode.USAGE_ERROR
    assert not charts._CHILD


def test_a_later_session_that_gates_nothing_keeps_the_shared_chart_process(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """In one process (an orchestrator), a session that gates nothing leaves the chart
    process of the earlier sessions running: it did not start it."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    shared = ChartProcess().child
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    done = pytester.runpytest_inprocess("--gates-eval=", "test_plain.py", "-p", "no:cacheprovider")
    assert done.ret == 0
    from gates.sinks import charts

    assert charts._CHILD[0] is shared and shared.alive


def test_a_path_argument_to_pytest_main_is_still_a_path(pytester: pytest.Pytester) -> None:
    """pytest.main accepts path objects: the plugin reads them as pytest does."""
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    done = pytester.run(sys.executable, "-c", "import pathlib, sys, pytest; sys.exit(pytest.main("
                        "[pathlib.Path('test_plain.py'), '-q', '-p', 'no:cacheprovider']))")
    assert done.ret == 0, done.stderr.str()
    done.stdout.fnmatch_lines(["*1 passed*"])
