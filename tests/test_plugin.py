"""The plugin through real pytest sessions (pytester): ids, markers, outputs, xdist,
custom gates, the verdict contract v2, promotion, ini options, good citizenship."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gates.store import BaselineStore
from tests.conftest import PACKAGE, SAMPLE, Workspace

N_GATES = 15  # 1 comparability + 8 regression + 5 physics + 1 promotion on the sample


def gates_json(ws: Workspace) -> dict:
    return json.loads((ws.eval.parent / "gates-out" / "gates.json").read_text())


def edit_report(ws: Workspace, **metrics: float) -> None:
    data = json.loads(ws.eval.read_text())
    data["metrics"].update(metrics)
    ws.eval.write_text(json.dumps(data))


def gate(report: dict, gate_id: str) -> dict:
    return next(g for g in report["gates"] if g["id"] == gate_id)


def test_bundled_sample_passes_with_readable_ids_and_summary(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    result = pytester.runpytest(*workspace.args("-v"))
    result.assert_outcomes(passed=N_GATES)
    result.stdout.fnmatch_lines([
        "gates: evaluation */reports/burgers1d_eval.json (metric-report, * metrics)",
        "gates: suite burgers1d in */baselines, champion v1",
        "gate*metric*baseline*current*change*threshold*status*",
        "regression/nrmse*nrmse*improved*",
        "promotion: promotable*",
        "gates: PASS: 15 gates*against burgers1d v1; promotable",
    ])
    out = result.stdout.str()
    for test_id in ("test_physics.py::test_physics[burgers1d-bc_violation-ceiling] PASSED",
                    "test_promotion.py::test_promotion[burgers1d-nrmse] PASSED",
                    "test_regression.py::test_regression[burgers1d-nrmse] PASSED",
                    "test_comparability.py::test_comparability[burgers1d-conditions] PASSED"):
        assert test_id in out
    report = gates_json(workspace)
    assert report["verdict"] == "pass" and report["baseline_version"] == 1
    assert report["promotable"] is True and report["promotion_reasons"] == []
    assert report["promoted"] is False and report["new_baseline_version"] is None
    assert len(report["gates"]) == N_GATES
    assert set(report["gates"][0]) >= {"id", "kind", "metric", "status", "current",
                                       "baseline", "change_pct", "threshold", "severity",
                                       "message", "evidence"}
    folder = workspace.eval.parent / "gates-out"
    for name in ("gates.md", "gates_change.png", "gates_physics.png"):
        assert (folder / name).stat().st_size > 500, name
    assert not (workspace.eval.parent / "gates.json").exists()  # never the report's folder


def test_no_options_gates_the_bundled_sample_and_says_so(pytester: pytest.Pytester) -> None:
    from tests.conftest import BASELINES

    shutil.copytree(BASELINES, pytester.path / "baselines")
    result = pytester.runpytest(str(PACKAGE), "--gates-wandb", "off", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=N_GATES)
    result.stdout.fnmatch_lines(["gates: evaluation the bundled sample*"])
    assert (pytester.path / "gates-out" / "gates.json").exists()


def test_the_champion_against_itself_passes_and_is_not_promotable(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    """The most common run: neither better nor worse. Exit 0, verdict pass."""
    shutil.copy(SAMPLE / "champion_eval.json", workspace.eval)
    shutil.copy(SAMPLE / "champion_eval_samples.npz",
                workspace.eval.with_name("burgers1d_eval_samples.npz"))
    result = pytester.runpytest(*workspace.args("-v"))
    assert result.ret == 0
    result.assert_outcomes(passed=N_GATES - 1)
    result.stdout.fnmatch_lines(["*test_promotion?burgers1d-nrmse? NOT PROMOTABLE*",
                                 "*promotion: not promotable: nrmse is unchanged*",
                                 "*1 not promotable*"])
    report = gates_json(workspace)
    assert report["verdict"] == "pass" and report["promotable"] is False
    assert any("nrmse is unchanged" in r for r in report["promotion_reasons"])
    assert gate(report, "promotion/nrmse")["status"] == "not_promotable"

    promote = pytester.runpytest(*workspace.args("--gates-promote"))
    assert promote.ret == 0  # the exit code stays the verdict's
    promote.stdout.fnmatch_lines(["*--gates-promote: the champion stays: nrmse is unchanged*"])
    assert BaselineStore(workspace.baselines).champion_version("burgers1d") == 1

    required = pytester.runpytest(*workspace.args("--gates-require-promotion"))
    assert required.ret == 1
    assert gates_json(workspace)["verdict"] == "pass"  # nothing broke; promotion required
    policy = workspace.baselines / "burgers1d" / "policy.toml"
    policy.write_text(policy.read_text().replace("[promotion]", "[promotion]\nrequired = true"))
    assert pytester.runpytest(*workspace.args()).ret == 1


def test_a_regression_fails_and_its_message_is_printed_once(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    edit_report(workspace, nrmse=0.0199)
    result = pytester.runpytest(*workspace.args())
    assert result.ret == 1
    result.assert_outcomes(passed=N_GATES - 2, failed=1)  # + 1 "not promotable", not failed
    result.stdout.fnmatch_lines([
        "*regression/nrmse: fail: nrmse is 22.5 % worse: 0.0162498 -> 0.0199*",
        "gates: FAIL: 15 gates*failed: regression/nrmse; not promotable",
    ])
    out = result.stdout.str()
    # the failure itself: pytest's failure entry (and its short summary line, which CI
    # terminals do not truncate); the gates section shows its table row, not the message
    assert 1 <= out.count("regression/nrmse: fail:") <= 2
    gates_section = out.split("= gates =")[1]
    assert "regression/nrmse: fail:" not in gates_section.split("short test summary")[0]
    report = gates_json(workspace)
    assert report["verdict"] == "fail" and report["promotable"] is False
    nrmse = gate(report, "regression/nrmse")
    assert nrmse["status"] == "fail" and nrmse["change_pct"] == pytest.approx(22.46, abs=0.01)
    assert "passes" not in nrmse["message"]


@pytest.mark.parametrize(("selection", "count"), [("regression", 8), ("physics", 5),
                                                  ("promotion", 1)])
def test_markers_select_gate_kinds(pytester: pytest.Pytester, workspace: Workspace,
                                   selection: str, count: int) -> None:
    result = pytester.runpytest(*workspace.args("-m", selection))
    result.assert_outcomes(passed=count)
    assert {g["kind"] for g in gates_json(workspace)["gates"]} == {selection}


def test_a_partial_selection_says_so_and_never_promotes(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    result = pytester.runpytest(*workspace.args("-k", "nrmse", "--gates-promote"))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*partial run: 13 of 15 planned gates were not selected*",
                                 "*the champion stays: not every built-in gate ran*"])
    assert BaselineStore(workspace.baselines).champion_version("burgers1d") == 1


PLAN_COUNTER = '''
import os
import gates.plan

_load = gates.plan.load_plan

def counted(*args, **kwargs):
    with open(os.environ["PLAN_COUNT_FILE"], "a") as handle:
        handle.write("load\\n")
    return _load(*args, **kwargs)

gates.plan.load_plan = counted
'''


def test_xdist_plans_once_and_gives_the_same_outputs(
        pytester: pytest.Pytester, workspace: Workspace,
        monkeypatch: pytest.MonkeyPatch) -> None:
    counter = pytester.path / "loads.txt"
    monkeypatch.setenv("PLAN_COUNT_FILE", str(counter))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    pytester.makepyfile(plancount=PLAN_COUNTER)
    serial = pytester.runpytest_subprocess(*workspace.args("-p", "plancount"))
    serial.assert_outcomes(passed=N_GATES)
    first = gates_json(workspace)
    assert counter.read_text().count("load") == 1
    counter.unlink()
    parallel = pytester.runpytest_subprocess(*workspace.args("-n", "2", "-p", "plancount"))
    parallel.assert_outcomes(passed=N_GATES)
    assert gates_json(workspace) == first
    assert counter.read_text().count("load") == 1  # the controller only: workers never load
    parallel.stdout.fnmatch_lines(["gates: PASS: 15 gates*"])


def test_junit_carries_only_readable_gate_properties(pytester: pytest.Pytester,
                                                     workspace: Workspace) -> None:
    xml = pytester.path / "junit.xml"
    pytester.runpytest(*workspace.args(f"--junitxml={xml}")).assert_outcomes(passed=N_GATES)
    case = next(c for c in ET.parse(xml).iter("testcase")
                if c.get("name") == "test_regression[burgers1d-nrmse]")
    props = {str(p.get("name")): str(p.get("value")) for p in case.iter("property")}
    assert props["gate.status"] == "improved"
    assert float(props["gate.current"]) == pytest.approx(0.0151886, rel=1e-5)
    assert float(props["gate.threshold"]) == 10.0
    names = {str(p.get("name")) for p in ET.parse(xml).iter("property")}
    assert names and all(n.startswith("gate.") for n in names)


CUSTOM_GATE = '''
import pytest

@pytest.mark.parametrize("budget", [0.0, 1.0])
def test_budget(budget, gate_evaluation, gate_champion, gate_check):
    current = gate_evaluation.metrics["mae"]
    baseline = gate_champion.metrics["mae"]
    gate_check(metric="mae_budget", passed=current <= budget * baseline,
               current=current, baseline=baseline, message=f"mae within {budget} x")
'''


def test_parametrized_custom_gates_keep_one_outcome_each(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    pytester.makepyfile(test_custom=CUSTOM_GATE)
    result = pytester.runpytest(*workspace.args(), "test_custom.py")
    assert result.ret == 1
    report = gates_json(workspace)
    assert report["verdict"] == "fail"
    custom = {g["id"]: g["status"] for g in report["gates"] if g["kind"] == "custom"}
    assert custom == {"custom/test_custom.py::test_budget[0.0]/mae_budget": "fail",
                      "custom/test_custom.py::test_budget[1.0]/mae_budget": "pass"}


def test_a_users_test_of_a_gate_parameter_records_only_what_it_records(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    """A test of the user's may take ``physics_gate`` (parametrized like the built-in
    check); it does not report those outcomes a second time, unless it records them."""
    pytester.makepyfile(test_reads="def test_reads(physics_gate):\n"
                                   "    assert physics_gate.kind == 'physics'\n")
    result = pytester.runpytest(*workspace.args(), "test_reads.py")
    assert result.ret == 0
    ids = [g["id"] for g in gates_json(workspace)["gates"]]
    assert len(ids) == len(set(ids)) == 15  # the package's gates, each once
    assert sum(i.startswith("physics/") for i in ids) == 5


REGRESSION_CHECK = '''
def test_energy(gate_regression):
    gate_regression.check("energy_error", CURRENT, baseline=1.0)

def test_champion_value(gate_regression, gate_champion):
    gate_regression.check("nrmse", gate_champion.metrics["nrmse"] * 1.02)
'''


@pytest.mark.parametrize(("current", "status"), [(1.05, "pass"), (1.5, "fail"), (0.5,
                                                                              "improved")])
def test_gate_regression_shares_the_built_in_comparison(
        pytester: pytest.Pytester, workspace: Workspace, current: float, status: str) -> None:
    pytester.makepyfile(test_mine=REGRESSION_CHECK.replace("CURRENT", str(current)))
    result = pytester.runpytest(*workspace.args(), "test_mine.py")
    assert result.ret == (1 if status == "fail" else 0)
    report = gates_json(workspace)
    energy = gate(report, "custom/test_mine.py::test_energy/energy_error")
    assert energy["status"] == status and energy["evidence"]["direction"] == "lower"
    assert energy["threshold"] == 10.0
    assert gate(report, "custom/test_mine.py::test_champion_value/nrmse")["status"] == "pass"


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


def test_gates_out_moves_every_local_output(pytester: pytest.Pytester,
                                            workspace: Workspace) -> None:
    out = pytester.path / "elsewhere"
    pytester.runpytest(*workspace.args("--gates-out", str(out))).assert_outcomes(
        passed=N_GATES)
    assert (out / "gates.json").exists() and (out / "gates.md").exists()
    assert not (workspace.eval.parent / "gates-out").exists()
    text = (out / "gates.md").read_text()
    assert text.startswith("<!-- physics-gates -->") and "promotion: promotable" in text


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
    assert gates_json(workspace)["gates"][0]["id"] == "custom/test_user.py::test_nrmse/nrmse"


def test_promote_writes_a_new_champion_and_reports_it(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    result = pytester.runpytest(*workspace.args("--gates-promote"))
    result.assert_outcomes(passed=N_GATES)
    result.stdout.fnmatch_lines(["*promoted to champion v2"])
    report = gates_json(workspace)
    assert report["promoted"] is True and report["new_baseline_version"] == 2
    store = BaselineStore(workspace.baselines)
    champion = store.champion("burgers1d")
    assert champion is not None and champion.version == 2
    assert champion.provenance["eval_sha256"] and champion.provenance["eval_report"]
    assert set(champion.samples) >= {"nrmse", "mse"}
    again = pytester.runpytest(*workspace.args("--gates-promote"))
    assert again.ret == 0  # the same numbers: not promotable, but nothing broke
    assert store.champion_version("burgers1d") == 2


def test_promote_is_refused_when_a_gate_fails(pytester: pytest.Pytester,
                                              workspace: Workspace) -> None:
    edit_report(workspace, bc_violation=0.05)
    result = pytester.runpytest(*workspace.args("--gates-promote"))
    assert result.ret == 1
    assert BaselineStore(workspace.baselines).champion_version("burgers1d") == 1
    report = gates_json(workspace)
    assert report["promoted"] is False and report["promotable"] is False
    assert any("the verdict is fail" in r for r in report["promotion_reasons"])


def flat_store(pytester: pytest.Pytester, tmp: Path, metrics: dict, *,
               extra: dict | None = None, policy: str = "") -> tuple[Path, Path]:
    """A suite ``s`` whose champion v1 has ``metrics``, made by a real first promotion."""
    report = tmp / "champion.json"
    report.write_text(json.dumps({"metrics": metrics, "extra": extra or {}}))
    store = tmp / "store"
    (store / "s").mkdir(parents=True)  # flat reports state no physics metrics
    (store / "s" / "policy.toml").write_text("[physics]\ndefault_ceilings = false\n" + policy)
    result = pytester.runpytest(str(PACKAGE), "--gates-eval", str(report), "--gates-baselines",
                                str(store), "--gates-suite", "s", "--gates-promote",
                                "--gates-wandb", "off", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    assert BaselineStore(store).champion_version("s") == 1
    return report, store


def run_flat(pytester: pytest.Pytester, store: Path, metrics: dict, *args: str,
             extra: dict | None = None) -> tuple[pytest.RunResult, dict]:
    report = store.parent / "challenger.json"
    report.write_text(json.dumps({"metrics": metrics, "extra": extra or {}}))
    result = pytester.runpytest(str(PACKAGE), "--gates-eval", str(report), "--gates-baselines",
                                str(store), "--gates-wandb", "off", "-p", "no:cacheprovider",
                                *args)
    return result, json.loads((store.parent / "gates-out" / "gates.json").read_text())


def test_metrics_whose_ids_collide_still_collect_under_strict_ids(pytester: pytest.Pytester,
                                                                  tmp_path: Path) -> None:
    """``a/b`` and ``a-b`` both read ``a-b`` in an id: made unique as pytest would, so that
    pytest's strict_parametrization_ids has nothing to reject."""
    base = {"nrmse": 0.1, "err/x": 0.2, "err-x": 0.3, "err-x0": 0.4}
    _, store = flat_store(pytester, tmp_path, base)
    result, report = run_flat(pytester, store, base, "-o", "strict_parametrization_ids=true",
                              "-v")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines_random(["*test_regression[[]s-err-x1[]] PASSED*",
                                        "*test_regression[[]s-err-x2[]] PASSED*",
                                        "*test_regression[[]s-err-x0[]] PASSED*"])
    assert {g["id"] for g in report["gates"]} >= {"regression/err/x", "regression/err-x",
                                                  "regression/err-x0"}


def test_unknown_directions_never_pass_silently(pytester: pytest.Pytester,
                                                tmp_path: Path) -> None:
    base = {"nrmse": 0.1, "vorticity_rmse": 0.2, "foo_index": 3.0}
    _, store = flat_store(pytester, tmp_path, base)
    worse, report = run_flat(pytester, store, {**base, "vorticity_rmse": 2.0})
    assert worse.ret == 1 and gate(report, "regression/vorticity_rmse")["status"] == "fail"
    moved, report = run_flat(pytester, store, {**base, "foo_index": 30.0})
    assert moved.ret == 1
    foo = gate(report, "regression/foo_index")
    assert foo["status"] == "changed" and "declare it" in foo["message"]
    down, report = run_flat(pytester, store, {**base, "foo_index": 0.3})
    assert down.ret == 1 and gate(report, "regression/foo_index")["status"] == "changed"
    same, report = run_flat(pytester, store, {**base, "foo_index": 3.1})
    assert same.ret == 0 and gate(report, "regression/foo_index")["status"] == "pass"


def test_incomparable_champion_is_an_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    base = {"nrmse": 0.1}
    _, store = flat_store(pytester, tmp_path, base, extra={"dataset": "burgers", "grid": 64})
    result, report = run_flat(pytester, store, base, extra={"dataset": "burgers", "grid": 128})
    assert result.ret == 1 and report["verdict"] == "error"
    grid = gate(report, "comparability/grid")
    assert grid["status"] == "incomparable" and "128" in grid["message"]
    fewer, report = run_flat(pytester, store, base, extra={"dataset": "burgers",
                                                           "num_samples": 8})
    assert fewer.ret == 0 and report["verdict"] == "pass"


def test_severity_warn_reports_without_failing(pytester: pytest.Pytester,
                                               tmp_path: Path) -> None:
    base = {"nrmse": 0.1, "mae": 0.1}
    _, store = flat_store(pytester, tmp_path, base, policy='[severity]\nmae = "warn"\n')
    result, report = run_flat(pytester, store, {**base, "mae": 0.2}, "-v")
    assert result.ret == 0 and report["verdict"] == "pass"
    mae = gate(report, "regression/mae")
    assert mae["status"] == "warn" and mae["severity"] == "warn"
    result.stdout.fnmatch_lines(["*test_regression?s-mae? WARN*"])


def test_promotion_ignores_ignored_physics_metrics(pytester: pytest.Pytester,
                                                   tmp_path: Path) -> None:
    base = {"nrmse": 0.1, "conservation_gap": 1.0}
    policy = '[metrics]\nignore = ["conservation_gap"]\n'
    _, store = flat_store(pytester, tmp_path, base, policy=policy)
    result, report = run_flat(pytester, store, {"nrmse": 0.05, "conservation_gap": 1.5})
    assert result.ret == 0 and report["promotable"] is True, report["promotion_reasons"]


def test_a_zero_champion_value_fails_consistently(pytester: pytest.Pytester,
                                                  tmp_path: Path) -> None:
    base = {"nrmse": 0.1, "negativity_penalty": 0.0}
    _, store = flat_store(pytester, tmp_path, base)
    result, report = run_flat(pytester, store, {**base, "negativity_penalty": 0.3})
    neg = gate(report, "regression/negativity_penalty")
    assert result.ret == 1 and neg["status"] == "fail"
    assert "worse" in neg["message"] and "passes" not in neg["message"]
    tiny, report = run_flat(pytester, store, {**base, "negativity_penalty": 1e-13})
    assert tiny.ret == 0  # within abs_tolerance


def test_pytest_strict_mode_changes_nothing(pytester: pytest.Pytester,
                                            workspace: Workspace) -> None:
    pytester.makeini("[pytest]\nstrict = true\n")
    empty = pytester.path / "new-store"
    args = [str(PACKAGE), "--gates-eval", str(workspace.eval), "--gates-baselines", str(empty),
            "--gates-wandb", "off", "-p", "no:cacheprovider"]
    first = pytester.runpytest(*args, "--gates-suite", "burgers1d", "--gates-promote")
    assert first.ret == 0, first.stdout.str()
    assert BaselineStore(empty).champion_version("burgers1d") == 1


def test_first_run_no_baseline_and_gates_strict(pytester: pytest.Pytester,
                                                workspace: Workspace) -> None:
    empty = pytester.path / "empty-store"
    args = [str(PACKAGE), "--gates-eval", str(workspace.eval), "--gates-baselines", str(empty),
            "--gates-suite", "burgers1d", "--gates-wandb", "off", "-p", "no:cacheprovider"]
    missing = pytester.runpytest(*args)
    assert missing.ret == 1  # no store and no --gates-promote: an error, not a pass
    assert gates_json(workspace)["verdict"] == "error"
    strict = pytester.runpytest(*args, "--gates-strict", "--gates-promote")
    assert strict.ret == 1 and not (empty / "burgers1d" / "champion.json").exists()
    pytester.runpytest(*args, "--gates-promote").assert_outcomes(passed=N_GATES)
    assert BaselineStore(empty).champion_version("burgers1d") == 1
    statuses = {g["status"] for g in gates_json(workspace)["gates"]}
    assert "no_baseline" in statuses


CONFLICTING = '''
def pytest_addoption(parser):
    parser.addoption("--wandb", action="store", default="theirs")
    parser.addoption("--eval", action="store", default=None)
    parser.addoption("--suite", action="store", default=None)
    parser.addoption("--strict-gates", action="store_true")

def pytest_configure(config):
    config.their_eval = config.getoption("--eval")
'''


def test_a_repository_with_options_of_its_own_keeps_them(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFLICTING)
    pytester.makepyfile(test_theirs="def test_theirs(request):\n"
                                    "    assert request.config.getoption('--wandb') == 'on'\n"
                                    "    assert request.config.their_eval == 'x.json'\n")
    result = pytester.runpytest("--wandb", "on", "--eval", "x.json", "--suite", "a",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "gates:" not in result.stdout.str()


def test_sessions_without_gates_stay_untouched(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_other="def test_x():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "gates:" not in result.stdout.str() and "= gates =" not in result.stdout.str()
    assert not list(Path(pytester.path).rglob("gates.json"))


def test_the_plugin_imports_nothing_heavy_in_other_sessions() -> None:
    code = ("import sys, gates.plugin; heavy = [m for m in ('numpy', 'pandas', 'pydantic', "
            "'wandb', 'matplotlib') if m in sys.modules]; print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == ""


def test_an_incomparable_champion_decides_the_verdict_under_any_selection(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    _, store = flat_store(pytester, tmp_path, {"nrmse": 0.1}, extra={"grid": 64})
    result, report = run_flat(pytester, store, {"nrmse": 0.1}, "-m", "regression",
                              extra={"grid": 128})
    assert result.ret == 1 and report["verdict"] == "error"
    assert any("comparability/grid" in n for n in report["notes"])


def test_the_bundled_demo_is_never_promoted(pytester: pytest.Pytester) -> None:
    from tests.conftest import BASELINES

    shutil.copytree(BASELINES, pytester.path / "baselines")
    result = pytester.runpytest(str(PACKAGE), "--gates-wandb", "off", "--gates-promote",
                                "-p", "no:cacheprovider")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*bundled sample is a demonstration and is never promoted*"])
    assert BaselineStore(pytester.path / "baselines").champion_version("burgers1d") == 1


def test_the_checks_through_a_symbolic_link_are_the_built_in_checks(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    """pytest keeps a path through a link as given: the checks are still recognised."""
    link = pytester.path / "linked"
    link.symlink_to(PACKAGE.parent, target_is_directory=True)
    args = workspace.args()
    result = pytester.runpytest(str(link / "gates"), *args[1:])
    assert result.ret == 0, result.stdout.str()
    report = gates_json(workspace)
    assert report["verdict"] == "pass" and len(report["gates"]) == 15
    result.stdout.fnmatch_lines(["*PASS: 15 gates*"])


def test_a_custom_gate_in_another_suite_without_a_report_is_bad_input(
        pytester: pytest.Pytester) -> None:
    """The same refusal, found only when a custom gate loads the plan: bad input, one
    line, no traceback (the usage error is for a session that starts with it)."""
    pytester.makepyfile(test_mine="def test_mine(gate_plan):\n    pass\n")
    result = pytester.runpytest("test_mine.py", "--gates-suite", "heat1d", "--gates-wandb",
                                "off", "-p", "gates.plugin", "-p", "no:cacheprovider")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*bad input*never in suite 'heat1d'*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_the_bundled_demo_in_another_suite_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """As ``python -m gates run --suite heat1d`` (tests/test_api.py): exit 4, one line, and
    nothing written."""
    result = pytester.runpytest(str(PACKAGE), "--gates-wandb", "off", "--gates-suite",
                                "heat1d", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no evaluation given: the bundled sample (suite burgers1d) "
                                 "is gated only against its bundled baseline, never in suite "
                                 "'heat1d'*"])
    assert not list(pytester.path.glob("gates-out*"))


TEARDOWN = '''
import pytest

@pytest.fixture
def broken():
    yield 1
    raise RuntimeError("teardown broke")

def test_with_broken_teardown(broken, gate_check):
    gate_check(metric="x", passed=True)
'''


def test_collect_only_and_teardown_errors(pytester: pytest.Pytester,
                                          workspace: Workspace) -> None:
    collected = pytester.runpytest(*workspace.args("--collect-only"))
    assert collected.ret == 0
    assert not (workspace.eval.parent / "gates-out" / "gates.json").exists()
    pytester.makepyfile(test_teardown=TEARDOWN)
    result = pytester.runpytest(*workspace.args(), "test_teardown.py")
    assert result.ret == 1
    report = gates_json(workspace)
    assert report["verdict"] == "fail" and report["promotable"] is False
    assert any(g["id"].endswith("@teardown") and g["status"] == "fail"
               for g in report["gates"])


def test_outputs_get_the_permissions_a_plain_write_gives(pytester: pytest.Pytester) -> None:
    """gates.json and gates.md are written atomically, yet readable as any file the user
    writes (not the temporary file's 0600); one that exists keeps its permissions."""
    out = pytester.path / "out"
    out.mkdir()
    (out / "gates.md").write_text("old\n")
    (out / "gates.md").chmod(0o604)
    umask = os.umask(0o027)
    try:
        done = pytester.runpytest_subprocess(str(PACKAGE), "--gates-wandb", "off",
                                             "--gates-out", str(out), "-p", "no:cacheprovider")
    finally:
        os.umask(umask)
    assert done.ret == 0
    assert (out / "gates.json").stat().st_mode & 0o777 == 0o640  # 0o666 under umask 027
    assert (out / "gates.md").stat().st_mode & 0o777 == 0o604
