"""The GitHub Actions sink: annotations, ``$GITHUB_OUTPUT`` and the job summary."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from gates.model import Outcome, Status
from gates.result import SessionResult
from gates.sinks.github import GithubSink, command, enabled, output_block

from .conftest import SAMPLE, Workspace


def session(tmp_path: Path, *, verdict: str = "fail", promotable: bool = False,
            promoted: bool = False, version: int | None = None) -> SessionResult:
    out = tmp_path / "gates-out"
    out.mkdir(exist_ok=True)
    outcomes = [
        Outcome("regression/nrmse", "regression", "nrmse", Status.PASS, 0.1, 0.1, 0.0, 10.0),
        Outcome("regression/mae", "regression", "mae", Status.FAIL, 0.02, 0.01, 100.0, 10.0,
                message="mae is 100.0 % worse, more than 10 %"),
        Outcome("regression/foo_index", "regression", "foo_index", Status.CHANGED, 10.0,
                1.0, 900.0, 10.0, message="moved by 900 %: declare its direction"),
        Outcome("physics/bc_violation", "physics", "bc_violation", Status.WARN, 1.2,
                message="bc_violation 1.2 > 1.0, severity warn"),
        Outcome("promotion/nrmse", "promotion", "nrmse", Status.NOT_PROMOTABLE,
                message="nrmse improves by 0.0 %, less than 1 %"),
    ]
    (out / "gates.md").write_text("<!-- physics-gates -->\n## Gates: FAIL\n\n"
                                  "![gates_change](gates_change.png)\n| a |\n",
                                  encoding="utf-8")
    result = SessionResult(verdict=verdict, outcomes=outcomes, suite="burgers1d",
                           baseline_version=3, eval_path="reports/eval.json", out_dir=out,
                           promotable=promotable,
                           promotion_reasons=[] if promotable else
                           ["nrmse improves by 0.0 %, less than 1 %"],
                           promoted=promoted, new_baseline_version=version,
                           exit_code=0 if verdict == "pass" else 1)
    result.files.append(out / "gates.md")
    return result


def github_env(tmp_path: Path) -> dict[str, str]:
    return {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp_path / "output"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}


def parse_outputs(text: str) -> dict[str, str]:
    """``$GITHUB_OUTPUT`` as the runner reads it (both forms)."""
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line:
            key, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            values[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def test_annotations_outputs_and_summary(tmp_path: Path) -> None:
    env, stream = github_env(tmp_path), io.StringIO()
    result = session(tmp_path)
    GithubSink(env, stream).pytest_gates_session_finished(result)
    assert stream.getvalue().startswith("\n::error")  # on a line of its own
    lines = stream.getvalue().splitlines()[1:]
    assert lines == [
        "::error title=gates%3A regression/mae fail::mae is 100.0 %25 worse, more than 10 %25",
        "::error title=gates%3A regression/foo_index changed::moved by 900 %25: declare its "
        "direction",
        "::warning title=gates%3A physics/bc_violation warn::bc_violation 1.2 > 1.0, "
        "severity warn",
    ]  # a failing verdict: no separate "not promotable" warning
    outputs = parse_outputs((tmp_path / "output").read_text(encoding="utf-8"))
    assert outputs["verdict"] == "fail" and outputs["promotable"] == "false"
    assert outputs["promoted"] == "false" and outputs["new_baseline_version"] == ""
    report = json.loads(outputs["gates_json"])
    assert report["verdict"] == "fail"
    assert [g["id"] for g in report["gates"]][:2] == ["regression/nrmse", "regression/mae"]
    assert outputs["gates_json_path"] == str(result.out_dir / "gates.json")
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("<!-- physics-gates -->\n## Gates: FAIL")
    assert "gates_change.png" not in summary  # the runner's files cannot be shown there


def test_passing_but_not_promotable_is_a_warning(tmp_path: Path) -> None:
    env, stream = github_env(tmp_path), io.StringIO()
    result = session(tmp_path, verdict="pass")
    result.outcomes[:] = [o for o in result.outcomes if o.status in (Status.PASS,
                                                                   Status.NOT_PROMOTABLE)]
    GithubSink(env, stream).pytest_gates_session_finished(result)
    assert stream.getvalue().splitlines()[1:] == [
        "::warning title=gates%3A burgers1d not promotable::nrmse improves by 0.0 %25, "
        "less than 1 %25"]
    outputs = parse_outputs((tmp_path / "output").read_text(encoding="utf-8"))
    assert outputs["verdict"] == "pass" and outputs["promotable"] == "false"


def test_promoted_session_outputs_its_version(tmp_path: Path) -> None:
    env, stream = github_env(tmp_path), io.StringIO()
    result = session(tmp_path, verdict="pass", promotable=True, promoted=True, version=4)
    result.outcomes[:] = result.outcomes[:1]
    GithubSink(env, stream).pytest_gates_session_finished(result)
    assert stream.getvalue() == ""
    outputs = parse_outputs((tmp_path / "output").read_text(encoding="utf-8"))
    assert (outputs["promotable"], outputs["promoted"]) == ("true", "true")
    assert outputs["new_baseline_version"] == "4"


def test_output_values_survive_newlines_and_appends(tmp_path: Path) -> None:
    target = tmp_path / "output"
    target.write_text("earlier=step\n", encoding="utf-8")
    with target.open("a", encoding="utf-8") as handle:
        handle.write(output_block({"gates_json": '{"a": "x\ny"}', "verdict": "pass"}))
    assert parse_outputs(target.read_text(encoding="utf-8")) == {
        "earlier": "step", "gates_json": '{"a": "x\ny"}', "verdict": "pass"}


def test_unwritable_step_summary_is_a_warning(tmp_path: Path) -> None:
    env, stream = github_env(tmp_path), io.StringIO()
    folder = tmp_path / "summary-folder"
    folder.mkdir()
    env["GITHUB_STEP_SUMMARY"] = str(folder)  # appending to it fails, even for root
    GithubSink(env, stream).pytest_gates_session_finished(session(tmp_path))
    warnings = [line for line in stream.getvalue().splitlines()
                if "GITHUB_STEP_SUMMARY" in line]
    assert len(warnings) == 1 and warnings[0].startswith("::warning title=gates::could not")
    assert parse_outputs((tmp_path / "output").read_text(encoding="utf-8"))["verdict"] == \
        "fail"


def test_bad_input_is_one_error(tmp_path: Path) -> None:
    env, stream = github_env(tmp_path), io.StringIO()
    result = SessionResult(verdict="error", outcomes=[
        Outcome("input", "input", "-", Status.ERROR, message="reports/x.json: not found")],
        suite=None, baseline_version=None, eval_path="reports/x.json",
        out_dir=tmp_path, exit_code=1)
    GithubSink(env, stream).pytest_gates_session_finished(result)
    assert stream.getvalue().splitlines()[1:] == [
        "::error title=gates%3A input error::reports/x.json: not found"]
    assert parse_outputs((tmp_path / "output").read_text(encoding="utf-8"))["verdict"] == \
        "error"


@pytest.mark.parametrize(("text", "expected"), [
    ("100% worse\nsee gates.md", "::error title=a%3Ab%2Cc::100%25 worse%0Asee gates.md"),
])
def test_command_escaping(text: str, expected: str) -> None:
    assert command("error", text, title="a:b,c") == expected


def test_enabled_only_in_github_actions() -> None:
    assert enabled({"GITHUB_ACTIONS": "true"})
    assert not enabled({}) and not enabled({"GITHUB_ACTIONS": "false"})


# -- from real gate sessions (the plugin registers the sink when GITHUB_ACTIONS=true) -----
@pytest.fixture
def actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    files = {"output": tmp_path / "github-output", "summary": tmp_path / "step-summary.md"}
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(files["output"]))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(files["summary"]))
    return files


def commands(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(("::error", "::warning"))]


def test_session_annotates_a_regression(pytester: pytest.Pytester, workspace: Workspace,
                                        actions: dict[str, Path]) -> None:
    data = json.loads(workspace.eval.read_text(encoding="utf-8"))
    data["metrics"]["mae"] *= 10
    workspace.eval.write_text(json.dumps(data), encoding="utf-8")
    result = pytester.runpytest(*workspace.args("-q"))
    assert result.ret == 1
    errors = [c for c in commands(result.outlines) if c.startswith("::error")]
    assert len(errors) == 1
    assert errors[0].startswith("::error title=gates%3A regression/mae fail::")
    outputs = parse_outputs(actions["output"].read_text(encoding="utf-8"))
    assert (outputs["verdict"], outputs["promotable"], outputs["promoted"]) == \
        ("fail", "false", "false")
    report = json.loads(outputs["gates_json"])
    assert report == json.loads((Path(outputs["out_dir"]) / "gates.json").read_text())
    summary = actions["summary"].read_text(encoding="utf-8")
    assert summary.startswith("<!-- physics-gates -->") and "regression/mae" in summary


def test_session_warns_when_not_promotable(pytester: pytest.Pytester, workspace: Workspace,
                                           actions: dict[str, Path]) -> None:
    shutil.copy(SAMPLE / "champion_eval.json", workspace.eval)
    shutil.copy(SAMPLE / "champion_eval_samples.npz",
                workspace.eval.with_name("burgers1d_eval_samples.npz"))
    result = pytester.runpytest(*workspace.args("-q"))
    assert result.ret == 0
    (warning,) = commands(result.outlines)
    assert warning.startswith("::warning title=gates%3A burgers1d not promotable::")
    outputs = parse_outputs(actions["output"].read_text(encoding="utf-8"))
    assert (outputs["verdict"], outputs["promotable"], outputs["new_baseline_version"]) == \
        ("pass", "false", "")


def test_session_outputs_a_promotion(pytester: pytest.Pytester, workspace: Workspace,
                                     actions: dict[str, Path]) -> None:
    result = pytester.runpytest(*workspace.args("-q", "--gates-promote"))
    assert result.ret == 0 and not commands(result.outlines)
    outputs = parse_outputs(actions["output"].read_text(encoding="utf-8"))
    assert (outputs["verdict"], outputs["promotable"], outputs["promoted"]) == \
        ("pass", "true", "true")
    assert outputs["new_baseline_version"] == "2"


def test_no_github_output_outside_actions(pytester: pytest.Pytester, workspace: Workspace,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "never"))
    result = pytester.runpytest(*workspace.args("-q"))
    assert result.ret == 0 and not commands(result.outlines)
    assert not (tmp_path / "never").exists()


def test_huge_outputs_are_cut_to_what_github_accepts(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from gates.sinks import github

    monkeypatch.setattr(github, "MAX_SUMMARY", 2000)
    monkeypatch.setattr(github, "MAX_OUTPUT", 3000)
    env, stream = github_env(tmp_path), io.StringIO()
    result = session(tmp_path)
    result.outcomes.extend(Outcome(f"regression/m{i}", "regression", f"m{i}", Status.PASS,
                                   1.0, 1.0, 0.0, 10.0) for i in range(100))
    (result.out_dir / "gates.md").write_text(
        "<!-- physics-gates -->\n" + "".join(f"| m{i} | pass |\n" for i in range(500)),
        encoding="utf-8")
    GithubSink(env, stream).pytest_gates_session_finished(result)
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert len(summary.encode()) < 2200 and "cut at 1 KiB" in summary
    assert [line for line in summary.splitlines() if line][-2].endswith("pass |")
    report = json.loads(parse_outputs((tmp_path / "output").read_text())["gates_json"])
    assert report["gates_omitted"] == 102  # pass and not_promotable; failures and warn kept
    assert [g["status"] for g in report["gates"]] == ["fail", "changed", "warn"]
