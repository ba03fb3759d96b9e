"""``python -m gates baseline ...`` through the real command line: options before or after
the action, a closed pipe ends quietly, every error is one line and exit 1."""

from __future__ import annotations

import importlib.machinery
import json
import subprocess
import sys
import types
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from gates.__main__ import main as cli
from gates.store import BaselineStore

SAMPLE = Path(__file__).resolve().parent.parent / "gates" / "sample"


def gates(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gates", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, check=False)


def one_error_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 1, done
    assert done.stdout == "" and "Traceback" not in done.stderr, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gates: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def store(tmp_path: Path) -> BaselineStore:
    store = BaselineStore(tmp_path / "baselines")
    for number, value in enumerate((0.3, 0.2), 1):
        store.promote("s", metrics={"nrmse": value, "mse": value**2},
                      samples={"nrmse": np.full(4, value)}, expected=number - 1 or None,
                      provenance={"run_id": f"run-{'ab'[number - 1]}",
                                  "timestamp": f"2026-01-0{number}T00:00:00Z"})
    return store


@pytest.mark.parametrize("order", [
    ["baseline", "list", "--baselines", "{root}", "--suite", "s"],
    ["baseline", "--baselines", "{root}", "--suite", "s", "list"],
    ["baseline", "--baselines", "{root}", "list", "--suite", "s"],
    ["baseline", "--suite", "other", "list", "--baselines", "{root}", "--suite", "s"],
])
def test_store_options_before_or_after_the_action(store: BaselineStore,
                                                  order: list[str]) -> None:
    BaselineStore(store.root).promote("other", metrics={"nrmse": 1.0}, expected=None,
                                      provenance={})
    done = gates(*(arg.format(root=store.root) for arg in order))
    assert done.returncode == 0 and done.stderr == "", done
    assert "*  v2" in done.stdout and "run-a" in done.stdout
    assert "promote none -> v1" in done.stdout


def test_default_store_and_only_suite_from_the_working_folder(store: BaselineStore) -> None:
    done = gates("baseline", "list", cwd=store.root.parent)
    assert done.returncode == 0 and "run-b" in done.stdout, done


def test_show_diff_and_rollback(store: BaselineStore) -> None:
    base = ["--baselines", str(store.root)]
    shown = gates("baseline", "show", "v1", *base)
    assert shown.returncode == 0 and json.loads(shown.stdout)["metrics"]["nrmse"] == 0.3
    assert json.loads(gates("baseline", "show", *base).stdout)["champion"] is True
    diff = gates("baseline", "diff", "1", "2", *base)
    assert diff.returncode == 0 and "-33.33%" in diff.stdout
    back = gates("baseline", "rollback", *base)
    assert (back.returncode, back.stdout) == (0, "s: champion moved back from v2 to v1\n")
    assert store.champion_version("s") == 1
    ahead = gates("baseline", "rollback", "--to", "v2", *base)
    assert ahead.returncode == 0 and store.champion_version("s") == 2


def test_a_closed_pipe_ends_quietly(store: BaselineStore) -> None:
    for number in range(3, 60):  # enough output to fill a pipe's buffer and more
        store.promote("s", metrics={"nrmse": 1 / number}, expected=number - 1,
                      provenance={"eval_report": "evals/" + "x" * 200 + ".json"})
    proc = subprocess.Popen([sys.executable, "-m", "gates", "baseline", "list",
                             "--baselines", str(store.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0  # a reader stopping early is not an error
    assert err == ""
    piped = subprocess.run(f"set -o pipefail; '{sys.executable}' -m gates baseline list "
                           f"--baselines '{store.root}' | head -n 2", shell=True,
                           executable="/bin/bash", capture_output=True, text=True,
                           timeout=60, check=False)
    assert piped.returncode == 0 and piped.stderr == "", piped
    assert len(piped.stdout.splitlines()) == 2


def test_errors_are_one_line_and_exit_1(store: BaselineStore, tmp_path: Path) -> None:
    root = str(store.root)
    one_error_line(gates("baseline", "list", "--baselines", root, "--suite", "../x"),
                   "suite name '../x' is not allowed")
    one_error_line(gates("baseline", "list", "--baselines", root, "--suite", "x" * 300),
                   "300 characters")
    one_error_line(gates("baseline", "list", "--baselines", root, "--suite", "t"),
                   "no suite 't' (the store holds: s)")
    one_error_line(gates("baseline", "list", "--baselines", str(tmp_path / "none")),
                   "none: baseline store does not exist")
    one_error_line(gates("baseline", "lst", "--baselines", root), "invalid choice: 'lst'")
    one_error_line(gates("baseline", "show", "v0", "--baselines", root),
                   "not a version number: 'v0'")
    one_error_line(gates("baseline", "show", "9", "--baselines", root),
                   "baseline version 9 does not exist")
    one_error_line(gates("baseline", "--baselines", root, "rollback", "--to", "7"),
                   "cannot roll back to v7")
    one_error_line(gates("nonsense"), "invalid choice: 'nonsense'")


def test_a_corrupt_store_is_one_line_for_every_action(store: BaselineStore) -> None:
    path = store.root / "s" / "versions" / "v0001" / "version.json"
    path.chmod(0o644)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "provenance": "edited by hand"}))
    for action in (["list"], ["show", "1"], ["diff", "1", "2"], ["rollback"]):
        one_error_line(gates("baseline", *action, "--baselines", str(store.root)),
                       f"gates: {path}: ", "baseline version file is invalid: provenance")
    assert store.champion_version("s") == 2  # the refused rollback moved nothing
    with open(store.root / "s" / "history.jsonl", "a") as handle:
        handle.write("[1]\n")
    one_error_line(gates("baseline", "list", "--baselines", str(store.root)),
                   "history.jsonl: line 3 is invalid")


def test_refresh_fields_records_a_new_version_from_the_arrays(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "baselines")
    store.promote("b", metrics={"nrmse": 0.02, "field/nrmse": 1e-9, "field/old": 1.0},
                  samples={"nrmse": np.full(32, 0.02)}, sample_ids=np.arange(32),
                  extra={"dataset": "burgers"}, expected=None,
                  provenance={"run_id": "champ", "eval_report": "evals/e.json"})
    arrays = tmp_path / "champion_arrays.npz"
    arrays.write_bytes((SAMPLE / "champion_arrays.npz").read_bytes())
    done = gates("baseline", "refresh-fields", "--baselines", str(store.root), "--arrays",
                 str(arrays), cwd=tmp_path)
    assert done.returncode == 0, done
    assert "champion moved from v1 to v2" in done.stdout
    champion = store.champion("b")
    assert champion is not None and champion.version == 2
    assert champion.metrics["nrmse"] == 0.02 and "field/old" not in champion.metrics
    assert champion.metrics["field/nrmse"] > 1e-6  # recomputed, not the report's value
    assert champion.extra == {"dataset": "burgers"}
    prov = champion.provenance
    assert prov["run_id"] == "champ" and prov["promoted_from"] == "v1"
    assert prov["arrays"] == "champion_arrays.npz"  # relative to the working repository
    assert "field metrics recomputed from arrays champion_arrays.npz" in prov["refreshed"]
    assert prov["field_metrics_version"] and "field/nrmse" in champion.samples
    assert champion.sample_ids is not None and len(champion.sample_ids) == 32
    other = BaselineStore(tmp_path / "other")
    other.promote("b", metrics={"nrmse": 0.02}, samples={"nrmse": np.ones(5)}, expected=None,
                  provenance={})
    one_error_line(gates("baseline", "refresh-fields", "--baselines", str(other.root),
                         "--arrays", str(arrays)),
                   "the arrays hold 32 samples, the champion's per-sample vectors 5")
    assert store.history("b")[-1]["event"] == "refresh"
    assert gates("baseline", "rollback", "--baselines", str(store.root)).returncode == 0
    assert store.champion_version("b") == 1


def test_run_hands_over_to_the_session_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    import gates.api

    seen: list[list[str]] = []

    def main_run(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    monkeypatch.setattr(gates.api, "main_run", main_run, raising=False)
    assert cli(["run", "--eval", "x.json", "--promote"]) == 7
    assert seen == [["--eval", "x.json", "--promote"]]


def test_history_commands_are_wired_when_their_module_exists(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    module = types.ModuleType("gates.cli_history")
    module.__spec__ = importlib.machinery.ModuleSpec("gates.cli_history", None)

    def add_commands(subparsers: object) -> None:
        history = subparsers.add_parser("history")  # type: ignore[attr-defined]
        history.add_argument("suite")

    def run_command(opts: Namespace) -> int | None:
        print(f"history of {opts.suite}")
        return 0 if opts.command == "history" else None

    module.add_commands = add_commands  # type: ignore[attr-defined]
    module.run_command = run_command  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gates.cli_history", module)
    assert cli(["history", "burgers1d"]) == 0
    assert capsys.readouterr().out == "history of burgers1d\n"
