"""Running the gates from Python (an orchestrator's gate step) and reading the verdict."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Verdict:
    """What a gate session decided, as written to ``gates.json``."""

    passed: bool
    exit_code: int
    report: dict[str, Any]
    path: Path

    @property
    def failed_gates(self) -> list[dict[str, Any]]:
        return [g for g in self.report.get("gates", [])
                if g["status"] not in ("pass", "improved", "no_baseline")]

    @property
    def new_baseline_version(self) -> int | None:
        return self.report.get("new_baseline_version")


def pytest_args(eval: str | Path | None = None, *, baselines: str | Path | None = None,
                suite: str | None = None, promote: bool = False, strict: bool = False,
                gates_out: str | Path | None = None, wandb: str | None = None,
                wandb_info: str | Path | None = None, arrays: str | Path | None = None,
                training_log: str | Path | None = None, leaderboard: str | Path | None = None,
                extra: Sequence[str] = ()) -> list[str]:
    """The command line of a gate session, for ``pytest.main`` or a subprocess."""
    args = [str(PACKAGE_DIR), "-p", "gates.plugin", "-p", "no:cacheprovider"]
    for flag, value in (("--eval", eval), ("--baselines", baselines), ("--suite", suite),
                        ("--gates-out", gates_out), ("--wandb", wandb),
                        ("--wandb-info", wandb_info), ("--arrays", arrays),
                        ("--training-log", training_log), ("--leaderboard", leaderboard)):
        if value is not None:
            args += [flag, str(value)]
    args += ["--promote"] * promote + ["--strict"] * strict
    return [*args, *extra]


def read_verdict(gates_json: Path, exit_code: int) -> Verdict:
    report = json.loads(gates_json.read_text(encoding="utf-8"))
    return Verdict(report["verdict"] == "pass" and exit_code == 0, exit_code, report,
                   gates_json)


def run_gates(eval: str | Path | None = None, *, gates_out: str | Path | None = None,
              **options: Any) -> Verdict:
    """Run a whole gate session in this process and return its verdict.

    Takes the options of :func:`pytest_args`. The outputs land in ``gates_out`` (default:
    the report's folder) as usual; the verdict is read back from its ``gates.json``.
    """
    import pytest

    from gates.context import Settings, output_dir

    out = output_dir(Settings(eval=Path(eval) if eval is not None else None,
                              gates_out=Path(gates_out) if gates_out is not None else None))
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "gates.json"
    before = marker.stat().st_mtime_ns if marker.exists() else None
    code = int(pytest.main(pytest_args(eval, gates_out=out, **options)))
    if not marker.exists() or marker.stat().st_mtime_ns == before:
        raise RuntimeError(f"the gate session wrote no {marker} (pytest exit code {code})")
    return read_verdict(marker, code)
