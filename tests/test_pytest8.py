"""The lower bound of pytest this package supports (``pytest>=8.0`` in pyproject.toml),
checked for real: the same gate sessions under pytest 8.0 in a virtual environment that
shares this one's other packages give the same gates.json as under the installed pytest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PACKAGE, ROOT, Workspace

LOWEST = "8.0.2"


@pytest.fixture(scope="module")
def pytest8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("pytest8") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", f"pytest=={LOWEST}"],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"pytest {LOWEST} could not be installed: {done.stderr[-500:]}")
    return python


def session(python: Path | str, ws: Workspace, *extra: str, cwd: Path) -> dict:
    # the package under test is this checkout, whichever one the environment installed
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(ROOT)}
    args = [str(python), "-m", "pytest", str(PACKAGE), "-p", "gates.plugin", "-p",
            "xdist.plugin", "--gates-eval", str(ws.eval), "--gates-baselines",
            str(ws.baselines), "--gates-wandb", "off", "--gates-no-ledger", "-q",
            "-p", "no:cacheprovider", *extra]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)
    out = ws.eval.parent / "gates-out" / "gates.json"
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    out.unlink()
    return {"ret": done.returncode, "verdict": report["verdict"],
            "promotable": report["promotable"],
            "gates": [(g["id"], g["status"]) for g in report["gates"]]}


def test_pytest8_and_this_pytest_decide_alike(pytest8: Path, workspace: Workspace,
                                              tmp_path: Path) -> None:
    version = subprocess.run([str(pytest8), "-c", "import pytest; print(pytest.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == LOWEST
    (tmp_path / "pytest.ini").write_text("[pytest]\nstrict = true\n")  # pytest's own strict
    for extra in ((), ("-n", "2")):
        assert session(pytest8, workspace, *extra, cwd=tmp_path) == \
            session(sys.executable, workspace, *extra, cwd=tmp_path)
    data = json.loads(workspace.eval.read_text())
    data["metrics"]["nrmse"] *= 1.5
    workspace.eval.write_text(json.dumps(data))
    old, new = (session(p, workspace, cwd=tmp_path) for p in (pytest8, sys.executable))
    assert old == new and old["ret"] == 1 and old["verdict"] == "fail"
    shutil.rmtree(workspace.eval.parent / "gates-out", ignore_errors=True)
