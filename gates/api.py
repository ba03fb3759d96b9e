"""Running the gates from Python (an orchestrator's gate step) or as ``python -m gates run``.

Both run pytest on the gate checks of the *installed* package, with the pytest
configuration of the repository they run in: the nearest pytest configuration file from the
working directory, found by pytest's own rules (``pytest.ini``, ``.pytest.ini``,
``pytest.toml``, ``pyproject.toml`` with a pytest table, ``tox.ini``, ``setup.cfg``) and
passed as ``-c FILE --rootdir FOLDER``. So the repository's ``gates_*`` ini settings apply
exactly as ``pytest`` there would apply them, also when the package lives in a virtual
environment outside the repository (pytest alone would look for a configuration beside the
installed test files instead). An explicit ``-c`` or ``--rootdir`` is honoured.

    run = run_gates("runs/42/eval_full.json", promote=True)
    if not run.passed: ...            # something broke: stop
    elif run.promotable: ...          # better than the champion
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gates.bundled import bundled_refusal

PACKAGE_DIR = Path(__file__).parent.resolve()

#: ``python -m gates run`` options that take a value, without their ``--gates-`` prefix
VALUE_OPTIONS = ("eval", "eval-row", "baselines", "suite", "out", "wandb", "wandb-info",
                 "arrays", "training-log", "leaderboard", "dask-scheduler")
#: ``python -m gates run`` switches, without their ``--gates-`` prefix
FLAG_OPTIONS = ("promote", "require-promotion", "strict", "no-ledger")
USAGE_ERROR = int(pytest.ExitCode.USAGE_ERROR)
REIMPORTED = "Module already imported so cannot be rewritten; gates"


class GatesUsageError(RuntimeError):
    """The gate session could not start (pytest's exit code 4): no ``gates.json`` exists."""


@dataclass(frozen=True)
class GatesRun:
    """What one gate session decided, read back from its ``gates.json``.

    ``passed`` answers "did anything break" (the verdict), ``promotable`` "is it better
    than the champion": an evaluation identical to the champion has ``passed`` true and
    ``promotable`` false.
    """

    exit_code: int
    report: dict[str, Any]
    path: Path

    @property
    def verdict(self) -> str:
        return str(self.report.get("verdict"))

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def promotable(self) -> bool:
        return bool(self.report.get("promotable"))

    @property
    def promoted(self) -> bool:
        return bool(self.report.get("promoted"))

    @property
    def reasons(self) -> list[str]:
        """Why it is (or is not) promotable."""
        return [str(r) for r in self.report.get("promotion_reasons") or []]

    @property
    def new_baseline_version(self) -> int | None:
        value = self.report.get("new_baseline_version")
        return int(value) if value is not None else None

    @property
    def failed_gates(self) -> list[dict[str, Any]]:
        """The gates that failed the verdict (not ``warn``, not the promotion answer)."""
        from gates.model import PASSING

        return [g for g in self.report.get("gates", []) if g.get("status") not in PASSING]


Verdict = GatesRun  # the name of this class before promotion became its own answer


def read_run(gates_json: Path, exit_code: int) -> GatesRun:
    report = json.loads(Path(gates_json).read_text(encoding="utf-8"))
    return GatesRun(exit_code, report, Path(gates_json))


read_verdict = read_run


# -- the command line ---------------------------------------------------------------------
def gate_files() -> list[str]:
    """The gate check modules, named one by one: pytest collects a file named on its
    command line whatever the repository's ``python_files`` setting says."""
    return sorted(str(p) for p in PACKAGE_DIR.glob("test_*.py"))


def translate(argv: Sequence[str]) -> list[str]:
    """Short names (``--eval X``, ``--promote``) to the plugin's ``--gates-*`` options;
    everything else is left for pytest."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        short = name[2:] if name.startswith("--") else ""
        if short in VALUE_OPTIONS:
            if eq:
                out.append(f"--gates-{short}={value}")
            elif i + 1 < len(args):
                out += [f"--gates-{short}", args[i + 1]]
                i += 1
            else:
                raise pytest.UsageError(f"{name} needs a value")
        elif short in FLAG_OPTIONS and not eq:
            out.append(f"--gates-{short}")
        else:
            out.append(arg)
        i += 1
    return out


def _take(args: list[str], names: tuple[str, ...], *, keep: bool = False) -> list[str]:
    """Remove (unless ``keep``) the options ``names`` from ``args``; return their values."""
    values: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        hit = next((n for n in names if arg == n or arg.startswith(n + "=")
                    or (len(n) == 2 and arg.startswith(n) and len(arg) > 2)), None)
        if hit is None:
            rest.append(arg)
            i += 1
            continue
        if arg == hit:
            if i + 1 >= len(args):
                raise pytest.UsageError(f"{hit} needs a value")
            value, used = args[i + 1], args[i:i + 2]
            i += 2
        else:
            value = arg[len(hit) + 1:] if arg.startswith(hit + "=") else arg[len(hit):]
            used = [arg]
            i += 1
        values.append(value)
        if keep:
            rest += used
    args[:] = rest
    return values


def _option_value(args: Sequence[str], flag: str) -> str | None:
    """The last value of ``flag`` in an already translated command line."""
    found: str | None = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(flag + "="):
            found = arg[len(flag) + 1:]
    return found


@dataclass(frozen=True)
class RepoConfig:
    """The pytest configuration of the repository a command runs in."""

    rootdir: Path
    inifile: Path | None
    ini: dict[str, Any]

    def args(self) -> list[str]:
        if self.inifile is not None:
            return ["-c", str(self.inifile), "--rootdir", str(self.rootdir)]
        # none: pytest would look for one around the installed checks; say "none" only
        # when that search would find one (e.g. the package's own, in a clone)
        around = find_config(self.rootdir, paths=gate_files())
        blank = ["-c", os.devnull] if around.inifile is not None else []
        return [*blank, "--rootdir", str(self.rootdir)]


def find_config(invocation_dir: Path, *, inifile: str | None = None,
                rootdir: str | None = None, override_ini: Sequence[str] = (),
                paths: Sequence[str] = ()) -> RepoConfig:
    """The configuration ``pytest PATHS`` would use when run in ``invocation_dir``
    (pytest's own search, ``_pytest.config.findpaths.determine_setup``)."""
    from _pytest.config import findpaths

    common: dict[str, Any] = {"inifile": inifile, "args": list(paths),
                              "rootdir_cmd_arg": rootdir, "invocation_dir": invocation_dir}
    try:
        found = findpaths.determine_setup(override_ini=list(override_ini) or None, **common)
        overridden = True
    except TypeError:  # pytest 8: no override_ini parameter
        found = findpaths.determine_setup(**common)
        overridden = False
    ini = {key: getattr(value, "value", value) for key, value in found[2].items()}
    if not overridden:
        for item in override_ini:
            key, _, value = item.partition("=")
            ini[key.strip()] = value
    return RepoConfig(Path(found[0]), Path(found[1]) if found[1] else None, ini)


@dataclass(frozen=True)
class Invocation:
    args: list[str]
    config: RepoConfig


def prepare(argv: Sequence[str], invocation_dir: Path | None = None) -> Invocation:
    """The pytest command line for ``python -m gates run ARGV`` run in ``invocation_dir``.

    Raises ``pytest.UsageError`` (one line) for a request the gates refuse.
    """
    cwd = Path.cwd() if invocation_dir is None else invocation_dir
    args = translate(argv)
    inifiles = _take(args, ("-c", "--config-file", "--inifile"))
    rootdirs = _take(args, ("--rootdir",))
    overrides = _take(args, ("-o", "--override-ini"), keep=True)
    config = find_config(cwd, inifile=inifiles[-1] if inifiles else None,
                         rootdir=rootdirs[-1] if rootdirs else None, override_ini=overrides)
    has_eval = bool(_option_value(args, "--gates-eval") or config.ini.get("gates_eval"))
    suite = _option_value(args, "--gates-suite") or config.ini.get("gates_suite") or None
    if not has_eval:
        refusal = bundled_refusal(str(suite) if suite else None)
        if refusal:
            raise pytest.UsageError(refusal)
    head = [*gate_files(), *config.args(), "-p", "gates.plugin", "-p", "no:cacheprovider"]
    return Invocation([*head, *args], config)


def _pytest_main(args: list[str], plugins: Sequence[object] = ()) -> int:
    # pytest's assertion rewriting would cache the installed checks' bytecode beside them:
    # nothing is written into the installed package
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        return int(pytest.main(args, plugins=list(plugins)))
    finally:
        sys.dont_write_bytecode = before


RUN_HELP = """usage: python -m gates run [options] [pytest options]

Gate an evaluation (default: the bundled sample against its bundled baseline) with the
pytest configuration of the current folder (its gates_* settings apply).

  --eval PATH            evaluation report (MetricReport JSON, flat JSON, leaderboard CSV)
  --eval-row ID          leaderboard row (run id or label)
  --baselines DIR        baseline store (default ./baselines)
  --suite NAME           suite (default: the only one, or the report's extra.suite)
  --promote              promote when the verdict passes and the run is promotable
  --require-promotion    "not promotable" fails the session (exit 1)
  --strict               no_baseline fails
  --out DIR              outputs (default gates-out/ beside the report; ./gates-out)
  --wandb MODE           off, offline or online (default WANDB_MODE, else offline)
  --wandb-info PATH      run info of the evaluation's W&B run
  --arrays PATH          prediction/target arrays for field metrics
  --training-log PATH    training log
  --leaderboard PATH     leaderboard CSV
  --dask-scheduler ADDR  compute field metrics on a Dask cluster
  --no-ledger            do not append to the suite's runs.jsonl

Every other argument goes to pytest (-q, -k, -m, -n 4, --junitxml FILE, -c FILE, ...).
Exit codes: 0 verdict pass, 1 verdict fail or error, 4 usage error.
"""


def main_run(argv: list[str]) -> int:
    """``python -m gates run [options] [pytest options]``: the exit code of the session."""
    if argv[:1] in (["-h"], ["--help"]):
        print(RUN_HELP, end="")
        return 0
    try:
        invocation = prepare(argv)
    except pytest.UsageError as exc:
        print(f"gates: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return _pytest_main(invocation.args)


# -- in-process ---------------------------------------------------------------------------
class _Catch:
    """Keeps the session's result (the sinks' hook; the session state as a fallback)."""

    def __init__(self) -> None:
        self.result: Any = None
        self.out_dir: Path | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_gates_session_finished(self, result: Any) -> None:
        self.result = result

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.result is None:
            state = config.pluginmanager.get_plugin("gates-session")
            self.result = getattr(state, "result", None)
        if self.result is not None:
            self.out_dir = Path(self.result.out_dir)


def run_argv(eval: str | Path | None = None, *, eval_row: str | None = None,
             baselines: str | Path | None = None, suite: str | None = None,
             promote: bool = False, require_promotion: bool = False, strict: bool = False,
             out: str | Path | None = None, gates_out: str | Path | None = None,
             wandb: str | None = None, wandb_info: str | Path | None = None,
             arrays: str | Path | None = None, training_log: str | Path | None = None,
             leaderboard: str | Path | None = None, dask_scheduler: str | None = None,
             no_ledger: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """The ``python -m gates run`` arguments for :func:`run_gates`'s keywords."""
    argv: list[str] = []
    values = (("eval", eval), ("eval-row", eval_row), ("baselines", baselines),
              ("suite", suite), ("out", out if out is not None else gates_out),
              ("wandb", wandb), ("wandb-info", wandb_info), ("arrays", arrays),
              ("training-log", training_log), ("leaderboard", leaderboard),
              ("dask-scheduler", dask_scheduler))
    for name, value in values:
        if value is not None:
            argv += [f"--{name}", str(value)]
    for name, on in (("promote", promote), ("require-promotion", require_promotion),
                     ("strict", strict), ("no-ledger", no_ledger)):
        if on:
            argv.append(f"--{name}")
    return [*argv, *extra]


def run_gates(eval: str | Path | None = None, **options: Any) -> GatesRun:
    """Run a whole gate session in this process and return what it decided.

    Keywords are those of ``python -m gates run`` (``baselines``, ``suite``, ``promote``,
    ``require_promotion``, ``strict``, ``out``, ``wandb``, ``wandb_info``, ``arrays``,
    ``training_log``, ``leaderboard``, ``dask_scheduler``, ``no_ledger``) plus ``extra``
    (more pytest arguments). The repository's pytest configuration is read from the
    current working directory. Raises :class:`GatesUsageError` when the session could not
    start (pytest's exit code 4); bad input is an answer (``verdict == "error"``).
    """
    try:
        invocation = prepare(run_argv(eval, **options))
    except pytest.UsageError as exc:
        raise GatesUsageError(f"gates: {exc}") from None
    catch = _Catch()
    # a second session in one process finds the package imported by the first: harmless
    quiet = ["-W", f"ignore:{REIMPORTED}:pytest.PytestAssertRewriteWarning"]
    code = _pytest_main([*invocation.args[:1], *quiet, *invocation.args[1:]], [catch])
    if catch.out_dir is None or not (catch.out_dir / "gates.json").is_file():
        raise GatesUsageError(f"the gate session wrote no gates.json (pytest exit code "
                              f"{code}); its output above says why")
    return read_run(catch.out_dir / "gates.json", code)


def pytest_args(eval: str | Path | None = None, **options: Any) -> list[str]:
    """The pytest command line of a gate session run in the current folder."""
    return prepare(run_argv(eval, **options)).args
