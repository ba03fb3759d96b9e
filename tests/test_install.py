"""A real, non-editable install into a fresh virtual environment, used as a user would:
``python -m gates run`` from an empty folder gates the bundled sample against the bundled
baseline; from a repository, it reads that repository's pytest configuration, whether the
virtual environment lives inside it or elsewhere; nothing is written into the installed
package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import BASELINES, ROOT, SAMPLE, hermetic_wandb_env

#: the development environment's editable install of this package resolves any missing
#: ``gates.*`` module from the source tree: hidden, so the wheel alone must suffice
HIDE_EDITABLE = """import sys

sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks
                     if not getattr(h, "__module__", "").startswith("__editable__")]
"""


@dataclass
class Venv:
    python: Path
    package: Path  # the installed gates package inside the environment
    env: dict[str, str]

    def gates(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), "-m", "gates", "run", *args], cwd=cwd,
                              env=self.env, capture_output=True, text=True, timeout=300)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def _source_tree(dest: Path) -> Path:
    """The files a build of the repository reads (no egg-info, build or caches)."""
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    shutil.copytree(ROOT / "gates", dest / "gates", ignore=junk)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    base = tmp_path_factory.mktemp("install")
    src = _source_tree(base / "src")
    wheels = base / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(wheels), str(src)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("physics_gates-*.whl")
    # the environment lives inside a repository ("repo-in"); the other runs come from
    # folders outside it. It reuses the installed dependencies; the package itself is the
    # wheel (installed over the editable one of the development environment).
    home = base / "repo-in" / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(home)], check=True, timeout=300)
    python = home / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "--no-deps", "--no-index", "--ignore-installed", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_path('purelib'))"], capture_output=True,
                               text=True, check=True).stdout.strip())
    (site / "sitecustomize.py").write_text(HIDE_EDITABLE, encoding="utf-8")
    env = hermetic_wandb_env(base / "wandb-home")
    del env["WANDB_DIR"]
    env.pop("PYTHONPATH", None)
    where = subprocess.run([str(python), "-c", "import gates; print(gates.__file__)"],
                           capture_output=True, text=True, env=env, cwd=base, check=True)
    package = Path(where.stdout.strip()).parent
    assert home in package.parents, f"the venv imports {package}, not its own install"
    yield Venv(python, package, env)


def gates_json(folder: Path) -> dict[str, object]:
    return dict(json.loads((folder / "gates.json").read_text(encoding="utf-8")))


def test_bundled_sample_from_an_empty_folder(venv: Venv, tmp_path: Path) -> None:
    before = snapshot(venv.package)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = venv.gates(empty)
    assert done.returncode == 0, done.stdout + done.stderr
    report = gates_json(empty / "gates-out")
    assert report["verdict"] == "pass" and report["promotable"] is True
    assert report["suite"] == "burgers1d" and report["baseline_version"] == 1
    assert "the bundled sample" in done.stdout
    refused = venv.gates(empty, "--suite", "heat1d", "--promote")
    assert refused.returncode == 4
    assert refused.stderr.strip().startswith("gates: no evaluation given")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert snapshot(venv.package) == before, "the run wrote into the installed package"


def test_repository_settings_with_the_venv_inside_and_outside(venv: Venv,
                                                              tmp_path: Path) -> None:
    before = snapshot(venv.package)
    inside = venv.python.parent.parent.parent  # repo-in/.venv/bin/python
    (inside / "pytest.ini").write_text("[pytest]\ngates_out = ini-out\ngates_wandb = off\n",
                                       encoding="utf-8")
    done = venv.gates(inside, "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    assert gates_json(inside / "ini-out")["verdict"] == "pass"
    assert not (inside / "gates-out").exists()

    outside = tmp_path / "repo-out"
    (outside / "reports").mkdir(parents=True)
    for name in ("burgers1d_eval.json", "burgers1d_eval_samples.npz"):
        shutil.copy(SAMPLE / name, outside / "reports" / name.replace("burgers1d_", ""))
    shutil.copytree(BASELINES, outside / "store")
    (outside / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\ngates_eval = \"reports/eval.json\"\n"
        "gates_baselines = \"store\"\ngates_wandb = \"off\"\n", encoding="utf-8")
    done = venv.gates(outside, "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    report = gates_json(outside / "reports" / "gates-out")  # beside the report
    assert report["verdict"] == "pass" and str(report["eval"]).endswith("eval.json")
    assert "bundled" not in done.stdout
    assert snapshot(venv.package) == before, "the run wrote into the installed package"


def test_the_wheel_ships_the_bundled_baseline(venv: Venv) -> None:
    shipped = venv.package / "sample" / "baseline" / "burgers1d"
    assert (shipped / "champion.json").is_file()
    assert sorted(p.name for p in (shipped / "versions" / "v0001").iterdir()) == \
        sorted(p.name for p in (BASELINES / "burgers1d" / "versions" / "v0001").iterdir())
    assert os.access(venv.python, os.X_OK)
