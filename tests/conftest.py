"""Shared fixtures: hermetic W&B settings, and a private copy of the bundled sample and
baseline store for every test that gates something."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib.backends.backend_agg  # noqa: F401 - imported once here: pytester's
import matplotlib.figure  # noqa: F401 - in-process runs then reuse them instead of
import pandas  # noqa: F401 - importing them again in every session
import pytest

import gates.sinks.charts  # noqa: F401 - and keep one chart process for all of them

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gates"
SAMPLE = PACKAGE / "sample"
BASELINES = ROOT / "baselines"

#: folders of the test run, made at its start and removed at its end (not at import: the
#: benchmarks' helper processes import this module too): W&B's home, and the bytecode of
#: the subprocess sessions (pytester's, the CLI's), since with PYTHONDONTWRITEBYTECODE=1
#: every pytest started in a test compiled, and assertion-rewrote, each plugin's
#: distribution again (about 2 s a start on this machine)
_RUN_FOLDERS: dict[str, str] = {}
#: the bytecode settings this run changes, given back at its end
_BYTECODE_SETTINGS = {name: os.environ.get(name)
                      for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}

#: W&B switches for tests: offline, silent, nothing collected about the machine or the code
HERMETIC_WANDB_FLAGS = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_X_DISABLE_STATS": "true",
    "WANDB_X_DISABLE_META": "true",
    "WANDB_X_DISABLE_MACHINE_INFO": "true",
    "WANDB_X_SAVE_REQUIREMENTS": "false",
}


def hermetic_wandb_env(tmp: Path) -> dict[str, str]:
    """Environment for a subprocess that may use W&B: offline, every W&B folder in ``tmp``.

    A copy of ``os.environ`` without any inherited ``WANDB_*`` variable (no API key, run
    id, project, entity, resume or base URL leaks in from the developer's shell) and
    without ``FAST_TO_SOTA_WANDB_INFO``; set those on the returned dict when a test needs
    them. The folders are created.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WANDB_") and k != "FAST_TO_SOTA_WANDB_INFO"}
    for name, folder in (("WANDB_DIR", tmp), ("WANDB_CACHE_DIR", tmp / ".wandb-cache"),
                         ("WANDB_DATA_DIR", tmp / ".wandb-data"),
                         ("WANDB_CONFIG_DIR", tmp / ".wandb-config")):
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder)
    env.update(HERMETIC_WANDB_FLAGS)
    return env


def pytest_configure(config: pytest.Config) -> None:
    # W&B reads its settings once per process, at the first wandb.init: set them first.
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        del os.environ[key]
    os.environ.pop("FAST_TO_SOTA_WANDB_INFO", None)
    for name in ("wandb", "pycache"):
        _RUN_FOLDERS.setdefault(name, tempfile.mkdtemp(prefix=f"gates-tests-{name}-"))
    os.environ.update(gates_wandb_env(Path(_RUN_FOLDERS["wandb"])))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = _RUN_FOLDERS["pycache"]  # never beside the sources


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _RUN_FOLDERS.values():
        shutil.rmtree(folder, ignore_errors=True)
    _RUN_FOLDERS.clear()
    for name, value in _BYTECODE_SETTINGS.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def gates_wandb_env(home: Path) -> dict[str, str]:
    """Hermetic W&B variables, without WANDB_DIR so runs land beside the gate outputs."""
    env = hermetic_wandb_env(home)
    del env["WANDB_DIR"]
    return {k: v for k, v in env.items() if k.startswith("WANDB_")}


@pytest.fixture
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a gate session in a subprocess: hermetic W&B under tmp_path."""
    env = hermetic_wandb_env(tmp_path / "wandb-home")
    del env["WANDB_DIR"]
    return env


@dataclass
class Workspace:
    """A private evaluation folder and baseline store, as a user would have them."""

    root: Path
    eval: Path
    baselines: Path

    def args(self, *extra: str, wandb: str = "off") -> list[str]:
        return [str(PACKAGE), "--gates-eval", str(self.eval), "--gates-baselines",
                str(self.baselines), "--gates-wandb", wandb, "-p", "no:cacheprovider", *extra]


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("burgers1d_eval.json", "burgers1d_eval_samples.npz"):
        shutil.copy(SAMPLE / name, reports / name)
    shutil.copytree(BASELINES, tmp_path / "baselines")
    return Workspace(tmp_path, reports / "burgers1d_eval.json", tmp_path / "baselines")
