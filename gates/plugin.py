"""The pytest plugin: options, fixtures, parametrization, outcome collection and sinks.

Loaded by the project's root ``conftest.py`` and, for other repositories, by the
``pytest11`` entry point. It stays inert in sessions that run no gates. Gate logic lives
in ``gates.logic``; local outputs in ``gates.outputs``; W&B in ``gates.wandb_sink``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gates.context import GateContext, Settings, load_context, wandb_mode
from gates.errors import GateInputError
from gates.model import Kind, Outcome, Status

if TYPE_CHECKING:
    from gates.charts import ChartWorker
    from gates.result import SessionResult
    from gates.wandb_sink import WandbWorker

PROPERTY = "gate_outcome"
PACKAGE_DIR = Path(__file__).parent.resolve()

OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("eval", "evaluation report to gate (MetricReport JSON, flat JSON or leaderboard CSV)",
     {}),
    ("eval_row", "leaderboard row (run id or label) when --gates-eval is a CSV", {}),
    ("baselines", "baseline store (default ./baselines)", {}),
    ("suite", "suite within the store (default: the only one, or from the report)", {}),
    ("promote", "promote the challenger when the verdict passes and it is promotable",
     {"action": "store_true"}),
    ("require_promotion", "'not promotable' fails the session", {"action": "store_true"}),
    ("strict", "no_baseline fails instead of passing", {"action": "store_true"}),
    ("out", "where local outputs go (default: gates-out/ beside the report)", {}),
    ("wandb", "W&B mode: off, offline or online (default: WANDB_MODE, else offline)", {}),
    ("wandb_info", "run info JSON of the evaluation's W&B run", {}),
    ("arrays", "prediction/target arrays (.npz, folder of .npy, or zarr) for field metrics",
     {}),
    ("training_log", "training log (JSON lines) for the stage comparison", {}),
    ("leaderboard", "leaderboard CSV for the leaderboard tables", {}),
    ("dask_scheduler", "compute field metrics on an existing Dask cluster (tcp://host:port)",
     {}),
    ("no_ledger", "do not append this session to the suite's runs.jsonl",
     {"action": "store_true"}),
]
FLAG_NAMES = {name: "--gates-" + name.replace("_", "-") for name, _, _ in OPTIONS}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gates", "physics ML regression gates")
    for name, help_text, extra in OPTIONS:
        group.addoption(FLAG_NAMES[name], dest=f"gates_{name}", default=None,
                        help=help_text, **extra)
        if extra.get("action") == "store_true":
            parser.addini(f"gates_{name}", help_text, type="bool")
        else:
            parser.addini(f"gates_{name}", help_text, type="string")


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"gates_{name}")
    if value in (None, False):
        ini = config.getini(f"gates_{name}")
        value = ini if ini not in ("", None) else value
    return value


def settings_from(config: pytest.Config) -> Settings:
    def path(name: str) -> Path | None:
        value = _option(config, name)
        return Path(value) if value else None

    return Settings(
        eval=path("eval"),
        eval_row=_option(config, "eval_row") or None,
        baselines=path("baselines") or Path("baselines"),
        suite=_option(config, "suite") or None,
        promote=bool(_option(config, "promote")),
        strict=bool(_option(config, "strict")),
        gates_out=path("out"),
        wandb=wandb_mode(_option(config, "wandb")),
        wandb_info=path("wandb_info"),
        arrays=path("arrays"),
        training_log=path("training_log"),
        leaderboard=path("leaderboard"),
        dask_scheduler=_option(config, "dask_scheduler") or None,
        workdir=config.invocation_params.dir,
    )


class GateSession:
    """Per-session state: the loaded context, and the outcomes reported by the tests."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings = settings_from(config)
        if self.settings.wandb not in ("off", "offline", "online"):
            raise pytest.UsageError(f"--wandb must be off, offline or online (or WANDB_MODE "
                                    f"disabled/offline/online), got {self.settings.wandb!r}")
        self.context: GateContext | None = None
        self.input_error: GateInputError | None = None
        self.outcomes: dict[str, Outcome] = {}
        self.result: SessionResult | None = None
        self.active = False
        self.charts: ChartWorker | None = None
        self.wandb_worker: WandbWorker | None = None

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def requested(self) -> bool:
        """Does this session gate an evaluation? (``--eval``, or paths into the package.)"""
        if self.config.getoption("gates_eval"):
            return True
        pyargs = self.config.getoption("pyargs", False)
        for arg in self.config.args:
            name = arg.split("::")[0]
            if pyargs and (name == "gates" or name.startswith("gates.")):
                return True
            target = (self.config.invocation_params.dir / name).resolve()
            if target == PACKAGE_DIR or PACKAGE_DIR in target.parents:
                return True
        return False

    def load(self) -> GateContext | None:
        if self.context is None and self.input_error is None:
            self.active = True
            try:
                self.context = load_context(self.settings, progress=self._progress())
            except GateInputError as exc:
                self.input_error = exc
        return self.context

    def _progress(self) -> Callable[[int, int], None] | None:
        if self.is_worker or not sys.stderr.isatty():
            return None  # quiet in CI logs and on xdist workers

        def show(done: int, total: int) -> None:
            end = "\n" if done >= total else ""
            sys.stderr.write(f"\rgates: field metrics {done}/{total}{end}")
            sys.stderr.flush()

        return show

    def add(self, outcome: Outcome) -> None:
        self.outcomes[outcome.id] = outcome

    # -- hooks of this session (registered as a plugin object per config) -----------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.requested():
            self.load()
            if self.context is not None and not self.is_worker:
                from gates.charts import ChartWorker

                self.charts = ChartWorker()  # each forks a child that prepares its sink
                if self.settings.wandb != "off":
                    from gates.wandb_sink import WandbWorker

                    self.wandb_worker = WandbWorker(self.context)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        return self.context.header() if self.context else []

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        """Bad input: run nothing (also on xdist workers), so the one message ends it."""
        if self.input_error is None:
            return
        if items:
            config.hook.pytest_deselected(items=list(items))
            items.clear()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect outcomes from reports: one path for xdist workers and serial runs."""
        if self.is_worker:
            return
        recorded = [v for k, v in report.user_properties if k == PROPERTY]
        for raw in recorded:
            self.add(Outcome.from_json(json.loads(str(raw))))
        if self.active and report.failed and not recorded and report.when in ("setup", "call"):
            self.add(Outcome(report.nodeid, Kind.CUSTOM, report.head_line or report.nodeid,
                             Status.ERROR if report.when == "setup" else Status.FAIL,
                             message=_last_line(report.longreprtext)))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker or not (self.active or self.outcomes):
            return
        from gates.finish import finish_session

        if self.input_error is not None:  # the controller learns of it here under xdist
            self.outcomes = {"input": input_outcome(self.input_error)}
        self.result = finish_session(self.context, list(self.outcomes.values()),
                                     self.settings, int(exitstatus),
                                     input_error=self.input_error, charts=self.charts,
                                     wandb_worker=self.wandb_worker)
        if self.result.exit_code and exitstatus in (pytest.ExitCode.OK,
                                                    pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = self.result.exit_code

    def pytest_unconfigure(self) -> None:
        for child in (self.charts, self.wandb_worker):
            if child is not None:
                child.close()  # a session that ended early leaves no child behind

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.result is None:
            return
        from gates.outputs import terminal_lines

        terminalreporter.section("gates")
        for line, markup in terminal_lines(self.result):
            terminalreporter.write_line(line, **markup)


_KEY = pytest.StashKey[GateSession]()


def _session(config: pytest.Config) -> GateSession:
    return config.stash[_KEY]


def pytest_configure(config: pytest.Config) -> None:
    for kind, text in (("regression", "metric regression against the champion baseline"),
                       ("physics", "physics ceilings and spikes"),
                       ("promotion", "may the challenger replace the champion")):
        config.addinivalue_line("markers", f"{kind}: {text}")
    state = GateSession(config)
    config.stash[_KEY] = state
    config.pluginmanager.register(state, "gates-session")


def input_outcome(error: GateInputError) -> Outcome:
    return Outcome("input", Kind.INPUT, "-", Status.ERROR, message=str(error))


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "failed"


GATE_FIXTURES = {"regression_gate": "regression", "physics_gate": "physics",
                 "promotion_gate": "promotion"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for fixture, attr in GATE_FIXTURES.items():
        if fixture not in metafunc.fixturenames:
            continue
        state = _session(metafunc.config)
        ctx = state.load()
        if ctx is None:
            assert state.input_error is not None
            metafunc.parametrize(fixture, [input_outcome(state.input_error)],
                                 ids=["input-error"])
            continue
        outcomes: list[Outcome] = getattr(ctx, attr)
        ids = [f"{ctx.suite}-{o.id.split('/', 1)[1].replace('/', '-')}" for o in outcomes]
        metafunc.parametrize(fixture, outcomes, ids=ids)


def _context(request: pytest.FixtureRequest) -> GateContext:
    state = _session(request.config)
    ctx = state.load()
    if ctx is None:
        pytest.fail(f"gates: bad input: {state.input_error}", pytrace=False)
    return ctx


@pytest.fixture
def gate_context(request: pytest.FixtureRequest) -> GateContext:
    """The whole loaded session: evaluation, champion, policy, store, settings."""
    return _context(request)


@pytest.fixture
def gate_evaluation(gate_context: GateContext) -> Any:
    """The evaluation under test (``.metrics``, ``.samples``, ``.extra``)."""
    return gate_context.evaluation


@pytest.fixture
def gate_champion(gate_context: GateContext) -> Any:
    """The champion baseline (``.metrics``, ``.samples``, ``.version``) or None."""
    return gate_context.champion


@pytest.fixture
def gate_policy(gate_context: GateContext) -> Any:
    """The suite's policy (thresholds)."""
    return gate_context.policy


@pytest.fixture
def gate_check(request: pytest.FixtureRequest) -> Callable[..., Outcome]:
    """Record a gate's outcome (reported and logged like a built-in) and fail if it failed.

    ``gate_check(outcome)`` with an :class:`~gates.model.Outcome`, or keywords:
    ``gate_check(metric="energy", passed=ok, current=v, baseline=b, message="...")``.
    """

    def check(outcome: Outcome | None = None, *, metric: str = "", passed: bool = True,
              kind: str = Kind.CUSTOM, **values: Any) -> Outcome:
        if outcome is None:
            name = request.node.originalname
            outcome = Outcome(id=f"{kind}/{name}" + (f"/{metric}" if metric else ""),
                              kind=kind, metric=metric or name,
                              status=Status.PASS if passed else Status.FAIL, **values)
        request.node.user_properties.append((PROPERTY, json.dumps(outcome.to_json())))
        for key in ("status", "current", "baseline", "change_pct", "threshold"):
            value = getattr(outcome, key)
            if value is not None:
                request.node.user_properties.append((f"gate.{key}", str(value)))
        if not outcome.passed:
            pytest.fail(f"{outcome.id}: {outcome.status}: {outcome.message}", pytrace=False)
        return outcome

    return check
