"""The plugin through real pytest sessions (pytester): ids, markers, outputs, xdist,
custom gates, promotion, ini options, the in-process API."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gates.api import run_gates
from gates.store import BaselineStore
from tests.conftest import PACKAGE, Workspace


def gates_json(ws: Workspace) -> dict:
    return json.loads((ws.eval.parent / "gates.json").read_text())


def edit_report(ws: Workspace, **metrics: float) -> None:
    data = json.loads(ws.eval.read_text())
    data["metrics"].update(metrics)
    ws.eval.write_text(json.dumps(data))


def test_bundled_sample_passes_with_readable_ids_and_summary(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    result = pytester.runpytest(*workspace.args("-v"))
    result.assert_outcomes(passed=14)
    result.stdout.fnmatch_lines([
        "gates: evaluation */reports/burgers1d_eval.json (metric-report, 8 metrics)",
        "gates: suite burgers1d in */baselines, champion v1",
        "gate*metric*baseline*current*change*threshold*status*",
        "regression/nrmse*nrmse*0.01625*0.01519*-6.53%*10%*improved*",
        "gates: PASS: 14 gates (7 pass, 7 improved) against burgers1d v1",
    ])
    out = result.stdout.str()
    for test_id in ("test_physics.py::test_physics[burgers1d-bc_violation-ceiling] PASSED",
                    "test_promotion.py::test_promotion[burgers1d-nrmse] PASSED",
                    "test_regression.py::test_regression[burgers1d-nrmse] PASSED"):
        assert test_id in out
    report = gates_json(workspace)
    assert report["verdict"] == "pass" and report["baseline_version"] == 1
    assert report["promoted"] is False and report["new_baseline_version"] is None
    assert len(report["gates"]) == 14
    assert set(report["gates"][0]) >= {"id", "kind", "metric", "status", "current",
                                       "baseline", "change_pct", "threshold", "message"}
    folder = workspace.eval.parent
    for name in ("gates.md", "gates_change.png", "gates_physics.png"):
        assert (folder / name).stat().st_size > 500, name


def test_no_options_gates_the_bundled_sample_and_says_so(pytester: pytest.Pytester) -> None:
    import shutil

    from tests.conftest import BASELINES

    shutil.copytree(BASELINES, pytester.path / "baselines")
    result = pytester.runpytest(str(PACKAGE), "--wandb", "off", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=14)
    result.stdout.fnmatch_lines(["gates: evaluation the bundled sample*"])
    assert (pytester.path / "gates-report" / "gates.json").exists()


def test_regression_fails_the_session_and_names_the_metric(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    edit_report(workspace, nrmse=0.0199)
    result = pytester.runpytest(*workspace.args())
    assert result.ret == 1
    result.assert_outcomes(passed=12, failed=2)
    result.stdout.fnmatch_lines([
        "*regression/nrmse: fail: nrmse regressed: 0.0162498 -> 0.0199 (+22.5%)*",
        "gates: FAIL: 14 gates*failed: regression/nrmse, promotion/nrmse",
    ])
    report = gates_json(workspace)
    assert report["verdict"] == "fail"
    nrmse = next(g for g in report["gates"] if g["id"] == "regression/nrmse")
    assert nrmse["status"] == "fail" and nrmse["change_pct"] == pytest.approx(22.46, abs=0.01)


@pytest.mark.parametrize(("selection", "count"), [("regression", 8), ("physics", 5),
                                                  ("promotion", 1)])
def test_markers_select_gate_kinds(pytester: pytest.Pytester, workspace: Workspace,
                                   selection: str, count: int) -> None:
    result = pytester.runpytest(*workspace.args("-m", selection))
    result.assert_outcomes(passed=count)
    assert {g["kind"] for g in gates_json(workspace)["gates"]} == {selection}


def test_k_selection(pytester: pytest.Pytester, workspace: Workspace) -> None:
    result = pytester.runpytest(*workspace.args("-k", "nrmse"))
    result.assert_outcomes(passed=2)


def test_xdist_gives_the_same_outputs_as_a_serial_run(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    serial = pytester.runpytest_subprocess(*workspace.args())
    serial.assert_outcomes(passed=14)
    first = gates_json(workspace)
    (workspace.eval.parent / "gates.json").unlink()
    parallel = pytester.runpytest_subprocess(*workspace.args("-n", "2"))
    parallel.assert_outcomes(passed=14)
    assert gates_json(workspace) == first
    parallel.stdout.fnmatch_lines(["gates: PASS: 14 gates (7 pass, 7 improved)*"])


def test_junit_properties_carry_gate_values(pytester: pytest.Pytester,
                                            workspace: Workspace) -> None:
    xml = pytester.path / "junit.xml"
    pytester.runpytest(*workspace.args(f"--junitxml={xml}")).assert_outcomes(passed=14)
    case = next(c for c in ET.parse(xml).iter("testcase")
                if c.get("name") == "test_regression[burgers1d-nrmse]")
    props = {str(p.get("name")): str(p.get("value")) for p in case.iter("property")}
    assert props["gate.status"] == "improved"
    assert float(props["gate.current"]) == pytest.approx(0.0151886, rel=1e-5)
    assert float(props["gate.threshold"]) == 10.0
    assert json.loads(props["gate_outcome"])["id"] == "regression/nrmse"


CUSTOM_GATE = '''
def test_energy_spectrum(gate_evaluation, gate_champion, gate_policy, gate_check):
    current = gate_evaluation.metrics["mae"]
    baseline = gate_champion.metrics["mae"]
    gate_check(metric="mae_budget", passed=current <= LIMIT * baseline,
               current=current, baseline=baseline, message="mae within budget")
'''


@pytest.mark.parametrize(("limit", "verdict"), [(1.0, "pass"), (0.5, "fail")])
def test_a_custom_gate_is_reported_like_a_built_in(
        pytester: pytest.Pytester, workspace: Workspace, limit: float, verdict: str) -> None:
    pytester.makepyfile(test_custom=CUSTOM_GATE.replace("LIMIT", str(limit)))
    result = pytester.runpytest(*workspace.args(), "test_custom.py")
    assert result.ret == (0 if verdict == "pass" else 1)
    report = gates_json(workspace)
    assert report["verdict"] == verdict
    custom = next(g for g in report["gates"] if g["kind"] == "custom")
    assert custom["id"] == "custom/test_energy_spectrum/mae_budget"
    assert custom["status"] == verdict
    result.stdout.fnmatch_lines(["custom/test_energy_spectrum/mae_budget*mae_budget*"])


def test_a_plain_failing_custom_test_fails_the_verdict(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    pytester.makepyfile(test_plain="def test_plain(gate_evaluation):\n"
                                   "    assert gate_evaluation.metrics['nrmse'] < 0.001\n")
    result = pytester.runpytest(*workspace.args(), "test_plain.py")
    assert result.ret == 1
    report = gates_json(workspace)
    assert report["verdict"] == "fail"
    assert any(g["id"].endswith("::test_plain") and g["status"] == "fail"
               for g in report["gates"])


def test_step_summary_is_appended(pytester: pytest.Pytester, workspace: Workspace,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    summary = pytester.path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.runpytest(*workspace.args()).assert_outcomes(passed=14)
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "## Gates: ✅ PASS" in text
    assert "| regression/nrmse | nrmse |" in text


def test_gates_out_moves_every_local_output(pytester: pytest.Pytester,
                                            workspace: Workspace) -> None:
    out = pytester.path / "elsewhere"
    pytester.runpytest(*workspace.args("--gates-out", str(out))).assert_outcomes(passed=14)
    assert (out / "gates.json").exists() and (out / "gates.md").exists()
    assert not (workspace.eval.parent / "gates.json").exists()


def test_ini_options_configure_the_gates_once(pytester: pytest.Pytester,
                                              workspace: Workspace) -> None:
    pytester.makepyprojecttoml(f'''
[tool.pytest.ini_options]
gates_eval = "{workspace.eval}"
gates_baselines = "{workspace.baselines}"
gates_wandb = "off"
''')
    pytester.makepyfile(test_user="def test_nrmse(gate_evaluation, gate_check):\n"
                                  "    gate_check(metric='nrmse', passed=True)\n")
    result = pytester.runpytest("test_user.py", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert gates_json(workspace)["gates"][0]["id"] == "custom/test_nrmse/nrmse"


def test_promote_writes_a_new_champion_and_reports_it(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    result = pytester.runpytest(*workspace.args("--promote"))
    result.assert_outcomes(passed=14)
    result.stdout.fnmatch_lines(["*promoted to champion v2"])
    report = gates_json(workspace)
    assert report["promoted"] is True and report["new_baseline_version"] == 2
    store = BaselineStore(workspace.baselines)
    champion = store.champion("burgers1d")
    assert champion is not None and champion.version == 2
    assert champion.provenance["eval_sha256"] and champion.provenance["eval_report"]
    assert set(champion.samples) >= {"nrmse", "mse"}
    again = pytester.runpytest(*workspace.args("--promote"))
    assert again.ret == 1  # same numbers: the promotion gate wants a 1 % improvement
    assert store.champion_version("burgers1d") == 2


def test_promote_is_refused_when_a_gate_fails(pytester: pytest.Pytester,
                                              workspace: Workspace) -> None:
    edit_report(workspace, bc_violation=0.05)
    result = pytester.runpytest(*workspace.args("--promote"))
    assert result.ret == 1
    assert BaselineStore(workspace.baselines).champion_version("burgers1d") == 1
    assert gates_json(workspace)["promoted"] is False


def test_first_run_is_no_baseline_and_promote_establishes_version_one(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    empty = pytester.path / "empty-store"
    args = [str(PACKAGE), "--eval", str(workspace.eval), "--baselines", str(empty),
            "--wandb", "off", "-p", "no:cacheprovider"]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=14)
    statuses = {g["status"] for g in gates_json(workspace)["gates"]}
    assert statuses == {"no_baseline", "pass"}
    strict = pytester.runpytest(*args, "--strict")
    assert strict.ret == 1
    pytester.runpytest(*args, "--promote").assert_outcomes(passed=14)
    assert BaselineStore(empty).champion_version("burgers1d") == 1


def test_run_gates_in_process_returns_the_verdict(workspace: Workspace) -> None:
    verdict = run_gates(workspace.eval, baselines=workspace.baselines, wandb="off")
    assert verdict.passed and verdict.exit_code == 0
    assert verdict.report["suite"] == "burgers1d" and not verdict.failed_gates
    edit_report(workspace, mae=0.01)
    failed = run_gates(workspace.eval, baselines=workspace.baselines, wandb="off")
    assert not failed.passed and failed.exit_code == 1
    assert [g["id"] for g in failed.failed_gates] == ["regression/mae", "promotion/nrmse"]


def test_cli_run_is_pytest_on_the_installed_gates(workspace: Workspace) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "gates", "run", "--eval", str(workspace.eval),
         "--baselines", str(workspace.baselines), "--wandb", "off", "-q"],
        capture_output=True, text=True, cwd=workspace.root, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "14 passed" in done.stdout
    assert json.loads((workspace.eval.parent / "gates.json").read_text())["verdict"] == "pass"


def test_sessions_without_gates_stay_untouched(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_other="def test_x():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "gates:" not in result.stdout.str()
    assert not list(Path(pytester.path).rglob("gates.json"))


def test_a_partial_selection_says_so_and_never_promotes(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    result = pytester.runpytest(*workspace.args("-k", "nrmse", "--promote"))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*partial run: 12 of 14 planned gates were not selected*",
                                 "*--promote: not promoted, not every built-in gate ran*"])
    assert BaselineStore(workspace.baselines).champion_version("burgers1d") == 1
