"""``python -m gates run`` and ``run_gates``: short names, the repository's pytest
configuration wherever the package lives, the bundled sample's own baseline, the result."""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import pytest

from gates import api, bundled
from gates.api import GatesRun, GatesUsageError, prepare, run_gates, translate

from .conftest import BASELINES, SAMPLE

HEADERS = {"pytest.ini": "[pytest]", "pyproject.toml": "[tool.pytest.ini_options]",
           "tox.ini": "[pytest]", "setup.cfg": "[tool:pytest]"}


def repo(tmp_path: Path, name: str = "pytest.ini", **ini: str) -> Path:
    """A repository folder with one pytest configuration file holding ``ini``."""
    root = tmp_path / "repo"
    (root / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    quote = '"' if name.endswith(".toml") else ""
    lines = [HEADERS[name], *(f"{k} = {quote}{v}{quote}" for k, v in ini.items())]
    (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def option(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


# -- translation --------------------------------------------------------------------------
def test_short_names_become_gates_options_and_the_rest_goes_to_pytest() -> None:
    assert translate(["--eval", "r.json", "--eval-row=run7", "--promote", "--strict", "-q",
                      "--out", "o", "--no-ledger", "--require-promotion", "-k", "nrmse",
                      "--gates-arrays", "a.npz", "--wandb", "off"]) == [
        "--gates-eval", "r.json", "--gates-eval-row=run7", "--gates-promote",
        "--gates-strict", "-q", "--gates-out", "o", "--gates-no-ledger",
        "--gates-require-promotion", "-k", "nrmse", "--gates-arrays", "a.npz",
        "--gates-wandb", "off"]
    assert translate(["--evaluate", "x", "--strict-markers"]) == ["--evaluate", "x",
                                                                  "--strict-markers"]
    with pytest.raises(pytest.UsageError, match="--suite needs a value"):
        translate(["--suite"])


def test_every_short_name_is_a_plugin_option() -> None:
    from gates.plugin import pytest_addoption

    seen: list[str] = []

    class Group:
        def addoption(self, *names: str, **_: object) -> None:
            seen.extend(names)

    class Parser:
        def getgroup(self, *_: object) -> Group:
            return Group()

        def addini(self, *_: object, **__: object) -> None:
            pass

    pytest_addoption(Parser(), pytest.PytestPluginManager())  # type: ignore[arg-type]
    for short in (*api.VALUE_OPTIONS, *api.FLAG_OPTIONS):
        assert f"--gates-{short}" in seen


# -- the repository's configuration -------------------------------------------------------
@pytest.mark.parametrize("name", sorted(HEADERS))
def test_the_nearest_config_from_the_working_directory(tmp_path: Path, name: str) -> None:
    root = repo(tmp_path, name, gates_out="ini-out")
    for where in (root, root / "sub" / "deeper"):
        invocation = prepare(["--wandb", "off"], where)
        assert option(invocation.args, "-c") == str(root / name)
        assert option(invocation.args, "--rootdir") == str(root)
        assert invocation.config.ini["gates_out"] == "ini-out"


def test_package_outside_or_inside_the_repository(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = repo(tmp_path, "pyproject.toml", gates_eval="reports/eval.json")
    outside = prepare([], root)  # this package lives in another folder than ``root``
    inside_pkg = root / ".venv" / "lib" / "python3.11" / "site-packages" / "gates"
    shutil.copytree(api.PACKAGE_DIR, inside_pkg,
                    ignore=shutil.ignore_patterns("__pycache__", "sample"))
    monkeypatch.setattr(api, "PACKAGE_DIR", inside_pkg)
    inside = prepare([], root)
    for invocation in (outside, inside):
        assert option(invocation.args, "-c") == str(root / "pyproject.toml")
        assert option(invocation.args, "--rootdir") == str(root)
        assert invocation.config.ini["gates_eval"] == "reports/eval.json"
    files = [a for a in inside.args if a.endswith(".py")]
    assert files and all(Path(f).parent == inside_pkg for f in files)


def test_explicit_config_file_and_rootdir_win(tmp_path: Path) -> None:
    root = repo(tmp_path, gates_out="from-repo")
    other = tmp_path / "elsewhere.ini"
    other.write_text("[pytest]\ngates_out = from-elsewhere\n", encoding="utf-8")
    chosen = prepare(["-c", str(other), "-q"], root)
    assert option(chosen.args, "-c") == str(other)
    assert option(chosen.args, "--rootdir") == str(tmp_path)  # pytest: the file's folder
    assert chosen.config.ini["gates_out"] == "from-elsewhere"
    assert chosen.args.count("-c") == 1 and "-q" in chosen.args
    moved = prepare([f"--rootdir={tmp_path}"], root)
    assert option(moved.args, "-c") == str(root / "pytest.ini")
    assert option(moved.args, "--rootdir") == str(tmp_path)
    both = prepare(["--config-file", str(other), "--rootdir", str(root)], root)
    assert (option(both.args, "-c"), option(both.args, "--rootdir")) == (str(other), str(root))
    overridden = prepare(["-o", "gates_out=cli"], root)
    assert overridden.config.ini["gates_out"] == "cli"
    assert option(overridden.args, "-o") == "gates_out=cli"  # pytest applies it too


def test_no_config_anywhere(tmp_path: Path) -> None:
    invocation = prepare([], tmp_path)
    assert option(invocation.args, "--rootdir") == str(tmp_path)
    assert invocation.config.inifile is None
    # a clone's own pyproject.toml (around the checks) must not be read instead
    assert option(invocation.args, "-c") in (None, os.devnull)


# -- the bundled sample -------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--suite", "heat1d", "--promote"], ["--suite=heat1d"]])
def test_bundled_sample_never_gated_in_another_suite(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     argv: list[str]) -> None:
    with pytest.raises(pytest.UsageError, match="bundled sample"):
        prepare(argv, tmp_path)
    root = repo(tmp_path, gates_suite="heat1d")
    with pytest.raises(pytest.UsageError, match="never in suite 'heat1d'"):
        prepare([], root)
    assert prepare(["--eval", "r.json", *argv], tmp_path).args  # a report of yours: fine
    assert prepare(["--suite", "burgers1d"], tmp_path).args
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert api.main_run(argv) == 4
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gates: no evaluation given")
    assert not list(tmp_path.glob("gates-out*"))


def test_bundled_store_is_a_fresh_copy(tmp_path: Path) -> None:
    first, second = bundled.bundled_store(), bundled.bundled_store(tmp_path / "mine")
    assert first != second and second == tmp_path / "mine"
    for store in (first, second):
        assert (store / "burgers1d" / "champion.json").is_file()
        assert not str(store).startswith(str(api.PACKAGE_DIR))
    (first / "burgers1d" / "champion.json").write_text('{"version": 9}', encoding="utf-8")
    assert json.loads((bundled.BUNDLED_BASELINES / "burgers1d" / "champion.json")
                      .read_text(encoding="utf-8")) != {"version": 9}


def test_bundled_baseline_is_the_repository_baseline() -> None:
    shipped = bundled.BUNDLED_BASELINES / "burgers1d"
    ours = BASELINES / "burgers1d"
    names = sorted(str(p.relative_to(ours)) for p in ours.rglob("*")
                   if p.is_file() and p.name != "runs.jsonl" and "__pycache__" not in p.parts)
    assert names == sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*")
                           if p.is_file() and "__pycache__" not in p.parts)
    for name in names:
        assert (ours / name).read_bytes() == (shipped / name).read_bytes(), name


# -- the result ---------------------------------------------------------------------------
def test_gates_run_answers(tmp_path: Path) -> None:
    path = tmp_path / "gates.json"
    report = {"verdict": "pass", "promotable": False, "promoted": False,
              "promotion_reasons": ["nrmse improves by 0.0 %, less than 1 %"],
              "new_baseline_version": None,
              "gates": [{"id": "regression/a", "status": "pass"},
                        {"id": "regression/b", "status": "warn"},
                        {"id": "regression/c", "status": "changed"},
                        {"id": "promotion/nrmse", "status": "not_promotable"}]}
    path.write_text(json.dumps(report), encoding="utf-8")
    run = api.read_run(path, 0)
    assert run.passed and not run.promotable and not run.promoted
    assert run.reasons == report["promotion_reasons"] and run.new_baseline_version is None
    assert [g["id"] for g in run.failed_gates] == ["regression/c"]
    assert (run.exit_code, run.path, run.verdict) == (0, path, "pass")


def test_run_gates_reads_the_repository_settings(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = repo(tmp_path, "pyproject.toml", gates_baselines="store", gates_out="ini-out",
                gates_wandb="off", gates_eval="reports/eval.json")
    (root / "reports").mkdir()
    for name in ("burgers1d_eval.json", "burgers1d_eval_samples.npz"):
        shutil.copy(SAMPLE / name, root / "reports" / name.replace("burgers1d_", ""))
    shutil.copytree(BASELINES, root / "store")
    monkeypatch.chdir(root / "sub")
    with pytest.raises(GatesUsageError):
        run_gates(extra=["--no-such-option"])  # the session never starts: no answer
    monkeypatch.chdir(root)
    frozen = gc.get_freeze_count()
    run = run_gates(extra=["-q"])
    assert gc.get_freeze_count() == frozen  # the session's objects are collectable again
    assert isinstance(run, GatesRun) and run.path == root / "ini-out" / "gates.json"
    assert run.passed and run.promotable and not run.promoted and run.exit_code == 0
    assert run.report["eval"].endswith("eval.json") and run.report["suite"] == "burgers1d"
    promoted = run_gates(promote=True, extra=["-q"])
    assert promoted.promoted and promoted.new_baseline_version == 2
    again = run_gates(extra=["-q"])  # the champion itself: passes, not promotable
    assert again.passed and not again.promotable and again.reasons


def test_run_help_lists_the_short_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert api.main_run(["--help"]) == 0
    text = capsys.readouterr().out
    for short in (*api.VALUE_OPTIONS, *api.FLAG_OPTIONS):
        assert f"  --{short} " in text
