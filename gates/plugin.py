"""The pytest plugin: options, the plan's hand-over to xdist workers, fixtures, and the
sinks at the end.

Loaded by the project's root ``conftest.py`` and, for other repositories, by the
``pytest11`` entry point. In a session that gates nothing it imports nothing heavy, runs
no per-test hook and adds no output. Gate logic lives in ``gates.logic``, planning in
``gates.plan``, what a check calls and the per-test hooks in ``gates.checks``, the end of a
session in ``gates.session``, and every output in ``gates.sinks``.
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from gates.checks import RegressionCheck
    from gates.errors import GateInputError
    from gates.model import Outcome
    from gates.plan import Plan, Settings
    from gates.result import SessionResult
    from gates.sinks.local import LocalSink

PACKAGE_DIR = Path(__file__).parent.resolve()
WORKER_PLAN = "gates_plan"  # workerinput key: the pickled plan (controller -> workers)
WORKER_ERROR = "gates_input_error"
REPORT_ATTR = "gates"  # TestReport attribute carrying a test's outcomes (survives xdist)

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
    ("training_log", "training log (JSON lines or W&B history CSV) for the stage comparison",
     {}),
    ("leaderboard", "leaderboard CSV for the leaderboard tables", {}),
    ("dask_scheduler", "compute field metrics on an existing Dask cluster (tcp://host:port)",
     {}),
    ("no_ledger", "do not append this session to the suite's runs.jsonl",
     {"action": "store_true"}),
]
FLAG_NAMES = {name: "--gates-" + name.replace("_", "-") for name, _, _ in OPTIONS}
_EARLY_CHARTS = pytest.StashKey[bool]()  # the chart process started before configure


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("gates", "physics ML regression gates")
    for name, help_text, extra in OPTIONS:
        group.addoption(FLAG_NAMES[name], dest=f"gates_{name}", default=None,
                        help=help_text, **extra)
        parser.addini(f"gates_{name}", help_text,
                      type="bool" if extra.get("action") == "store_true" else "string")
    parser.addini("gates_wandb_timeout", "seconds the whole W&B sink may take (default 30)",
                  type="string", default="30")
    _start_charts_early(pluginmanager)


def names_the_checks(args: list[str], *, pyargs: bool, where: Path) -> bool:
    """Do these command-line paths (or ``--pyargs`` modules) lead into the package's checks?"""
    for arg in args:
        name = arg.split("::")[0]
        if pyargs and (name == "gates" or name.startswith("gates.")):
            return True
        target = (where / name).resolve()
        if target == PACKAGE_DIR or PACKAGE_DIR in target.parents:
            return True
    return False


def _start_charts_early(pluginmanager: pytest.PytestPluginManager) -> None:
    """A command line that names the checks or an evaluation (``pytest gates/``) starts the
    chart process as this plugin registers, while pytest still loads the other plugins and
    conftests: matplotlib's import then overlaps with them rather than with the checks
    (0.5-0.6 s of a 100-gate session here, which otherwise waited for the charts at its
    end). :func:`_stop_unused_charts` stops it when no gate session takes it. An xdist
    worker never charts, so it starts none; a pytest run from inside a worker inherits
    ``PYTEST_XDIST_WORKER`` and so starts its chart process at configure instead. Only a
    speed-up: nothing here may stop a session."""
    try:
        config = pluginmanager.get_plugin("pytestconfig")
        known = getattr(config, "known_args_namespace", None)
        if not isinstance(config, pytest.Config) or known is None \
                or os.environ.get("PYTEST_XDIST_WORKER") or known.collectonly or known.help \
                or known.version:
            return
        flag = FLAG_NAMES["eval"]
        args = [os.fspath(a) for a in config.invocation_params.args]
        if not any(a == flag or a.startswith(flag + "=") for a in args) \
                and not names_the_checks(list(known.file_or_dir or []),
                                         pyargs=bool(known.pyargs),
                                         where=config.invocation_params.dir):
            return
        from gates.sinks import charts

        if charts.start_child():
            config.stash[_EARLY_CHARTS] = True
            config.add_cleanup(lambda: _stop_unused_charts(config))
    except Exception:  # noqa: BLE001 - the session starts the charts later, or says why
        return


def _stop_unused_charts(config: pytest.Config) -> None:
    """Stop the chart process :func:`_start_charts_early` started if no gate session took
    it: at configure, when the session gates nothing; at the end, when pytest stopped
    before configuring (a usage error, a conftest that failed to import)."""
    if not config.stash.get(_EARLY_CHARTS, False):
        return
    config.stash[_EARLY_CHARTS] = False
    state = config.stash.get(_KEY, None)
    if state is None or state.local is None:
        from gates.sinks import charts

        charts.stop_child()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from gates.sinks import GatesHookSpec

    pluginmanager.add_hookspecs(GatesHookSpec)


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"gates_{name}")
    if value in (None, False):
        ini = config.getini(f"gates_{name}")
        value = ini if ini not in ("", None) else value
    return value


def settings_from(config: pytest.Config) -> Settings:
    from gates.plan import Settings, wandb_mode

    def path(name: str) -> Path | None:
        """A command-line path is relative to where pytest runs; an ini path, as pytest's
        own ini paths, to the folder of the configuration file that sets it."""
        given = config.getoption(f"gates_{name}")
        if given:
            return Path(given)
        value = config.getini(f"gates_{name}")
        if not value:
            return None
        where = config.inipath.parent if config.inipath else config.rootpath
        return where / value

    wandb = wandb_mode(_option(config, "wandb"))
    if wandb not in ("off", "offline", "online"):
        raise pytest.UsageError(f"--gates-wandb must be off, offline or online (or WANDB_MODE "
                                f"disabled/offline/online), got {wandb!r}")
    try:
        timeout = float(config.getini("gates_wandb_timeout"))
    except ValueError:
        raise pytest.UsageError("gates_wandb_timeout must be a number of seconds") from None
    return Settings(
        eval=path("eval"), eval_row=_option(config, "eval_row") or None,
        baselines=path("baselines"), suite=_option(config, "suite"),
        promote=bool(_option(config, "promote")),
        require_promotion=bool(_option(config, "require_promotion")),
        strict=bool(_option(config, "strict")), out=path("out"), wandb=wandb,
        wandb_info=path("wandb_info"), wandb_timeout=timeout, arrays=path("arrays"),
        training_log=path("training_log"), leaderboard=path("leaderboard"),
        dask_scheduler=_option(config, "dask_scheduler") or None,
        no_ledger=bool(_option(config, "no_ledger")), workdir=config.invocation_params.dir,
    )


class GateSession:
    """Per-session state: the plan, and the outcomes the tests reported."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings: Settings | None = None
        self.plan: Plan | None = None
        self.input_error: GateInputError | None = None
        self.outcomes: list[Outcome] = []
        self.result: SessionResult | None = None
        self.active = False
        self.frozen = False
        self.local: LocalSink | None = None

    def prepare(self) -> None:
        """A gate session's local sink (and its chart process) starts at once, so that
        matplotlib loads while pytest collects and the plan loads."""
        if not self.is_worker and not self.config.option.collectonly and self.requested():
            from gates.sinks.local import LocalSink

            self.local = LocalSink()

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def requested(self) -> bool:
        """Does this session gate an evaluation? (``--gates-eval``, or paths into the
        package's checks.)"""
        if self.config.getoption("gates_eval") or self.config.getini("gates_eval"):
            return True
        return names_the_checks(self.config.args, pyargs=self.config.getoption("pyargs", False),
                                where=self.config.invocation_params.dir)

    def load(self) -> Plan | None:
        """The plan: loaded once on the controller, received by workers."""
        if self.active:
            return self.plan
        self.active = True
        self.report_outcomes()
        if self.is_worker:
            info = self.config.workerinput  # type: ignore[attr-defined]
            from gates.errors import GateInputError

            if WORKER_ERROR in info:
                self.input_error = GateInputError(None, info[WORKER_ERROR])
            elif WORKER_PLAN in info:
                import pickle

                self.plan = pickle.loads(info[WORKER_PLAN])  # noqa: S301 - our controller's
                self._freeze()
            else:
                self.input_error = GateInputError(None, (
                    "this xdist worker received no plan: the controller plans only a gate "
                    "session (--gates-eval or gates_eval, or paths into the gates package)"))
            return self.plan
        from gates.errors import GateInputError
        from gates.plan import load_plan

        self.settings = settings_from(self.config)
        try:
            self.plan = load_plan(self.settings, progress=self._progress())
        except GateInputError as exc:
            self.input_error = exc
        self._freeze()
        return self.plan

    def report_outcomes(self) -> None:
        """Register the per-test hooks that carry outcomes on test reports (once)."""
        manager = self.config.pluginmanager
        if manager.get_plugin("gates-reports") is None:
            from gates.checks import ReportHooks

            manager.register(ReportHooks(self), "gates-reports")

    def _freeze(self) -> None:
        """The plan lives as long as the session: keep it (and pytest's own start-up) out
        of the garbage collector's full passes, whose cost otherwise grows with every gate
        (16 % of a 4,000-gate session). Undone by :meth:`unfreeze`."""
        if self.plan is not None and not self.frozen:
            gc.freeze()
            self.frozen = True

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The collected items live as long as the session too: out of the full passes
        they go (pytest's five collections at its end scanned them: 1 s at 10,000 gates)."""
        if self.frozen:
            gc.freeze()

    def pytest_unconfigure(self) -> None:
        if self.local is not None:
            self.local.close()

    def unfreeze(self) -> None:
        """The session's objects go back to the collector after every clean-up registered
        at configure, so that the five full collections of pytest's unraisable-exception
        clean-up skip them (0.25-0.3 s of a 100-gate session). A reference cycle among them
        is then not collected there, so a ``__del__`` error in one is not reported."""
        if self.frozen:
            gc.unfreeze()
            self.frozen = False

    def _progress(self) -> Callable[[int, int], None] | None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        tty = getattr(reporter, "isatty", False)  # a method in pytest 9, a bool in pytest 8
        if reporter is None or not (tty() if callable(tty) else tty) or os.environ.get("CI"):
            return None  # quiet in CI logs

        def show(done: int, total: int) -> None:
            reporter.rewrite(f"gates: field metrics {done}/{total}", erase=True)
            if done >= total:
                reporter.write_line("")

        return show

    def _register_sinks(self, *, early: bool) -> None:
        """Each sink only when enabled; bad input gets the local files and CI output only.
        ``early``: at session start, when the charts can still draw while the checks run."""
        manager = self.config.pluginmanager
        if self.settings is None or manager.get_plugin("gates-local") is not None:
            return
        from gates.sinks.local import LocalSink

        charts = self.plan is not None and not self.config.option.collectonly
        self.local = local = self.local or LocalSink(charts=charts)
        manager.register(local, "gates-local")
        if self.plan is not None and early:
            local.start(self.plan)  # the charts draw while the checks run
        if os.environ.get("GITHUB_ACTIONS") == "true":
            from gates.sinks.github import GithubSink

            manager.register(GithubSink(), "gates-github")
        if self.plan is not None and self.settings.leaderboard is not None \
                and self.settings.promote:
            from gates.sinks.leaderboard import LeaderboardSink

            manager.register(LeaderboardSink(), "gates-leaderboard")
        # the bundled demo does not write the repository's ledger on every demo run
        if self.plan is not None and not self.settings.no_ledger and not self.settings.bundled:
            from gates.ledger import LedgerSink

            manager.register(LedgerSink(), "gates-ledger")
        if self.plan is not None and self.settings.wandb != "off":
            from gates.sinks.wandb import WandbSink

            sink = WandbSink()
            manager.register(sink, "gates-wandb")
            sink.start(self.plan)  # W&B's start overlaps with the checks

    # -- hooks ---------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.requested():
            self.load()
            from gates.errors import RefusedRequest

            if isinstance(self.input_error, RefusedRequest):  # as `python -m gates run`
                raise pytest.UsageError(str(self.input_error))
            if not self.is_worker:
                self._register_sinks(early=True)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: hand the controller's plan to each worker, so none reloads or recomputes."""
        if self.plan is not None:
            import pickle  # not at import: 4 ms that a session without gates would pay

            node.workerinput[WORKER_PLAN] = pickle.dumps(self.plan)
        elif self.input_error is not None:
            node.workerinput[WORKER_ERROR] = str(self.input_error)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        return self.plan.header() if self.plan else []  # bad input: said once, at the end

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        """Bad input: run nothing (also on xdist workers), so the one message ends it."""
        if self.input_error is not None and items:
            config.hook.pytest_deselected(items=list(items))
            items.clear()

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker or not self.active or self.config.option.collectonly:
            return  # --collect-only gates nothing: no verdict, no outputs, no ledger line
        from gates.plan import Settings
        from gates.session import finish
        from gates.sinks import report

        settings = self.settings or Settings(workdir=self.config.invocation_params.dir)
        self.result = finish(self.plan, self.outcomes, settings, int(exitstatus),
                             input_error=self.input_error)
        self._register_sinks(early=False)  # no-op when sessionstart did it
        from gates.sinks.dashboards import dashboards_of

        self.result.dashboards = dashboards_of(self.result)  # for every sink; never raises
        if self.result.dashboards is not None:
            self.result.notes.extend(self.result.dashboards.warnings)
        report(self.config.pluginmanager, self.result)
        if self.result.exit_code and exitstatus in (pytest.ExitCode.OK,
                                                    pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = self.result.exit_code

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.result is None:
            return
        from gates.sinks.local import terminal_lines

        terminalreporter.section("gates")
        for line, markup in terminal_lines(self.result):
            terminalreporter.write_line(line, **markup)


_KEY = pytest.StashKey[GateSession]()


def _session(config: pytest.Config) -> GateSession:
    return config.stash[_KEY]


@pytest.hookimpl(tryfirst=True)  # its clean-up then runs after every other plugin's
def pytest_configure(config: pytest.Config) -> None:
    for kind, text in (("regression", "metric regression against the champion baseline"),
                       ("physics", "physics ceilings and spikes"),
                       ("promotion", "may the challenger replace the champion")):
        config.addinivalue_line("markers", f"{kind}: {text}")
    state = GateSession(config)
    config.stash[_KEY] = state
    config.pluginmanager.register(state, "gates-session")
    config.add_cleanup(state.unfreeze)
    state.prepare()
    _stop_unused_charts(config)


#: the built-in checks' parameters and the kind of outcome each is parametrized with
GATE_FIXTURES = {"regression_gate": "regression", "physics_gate": "physics",
                 "promotion_gate": "promotion", "comparability_gate": "comparability"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for fixture, kind in GATE_FIXTURES.items():
        if fixture not in metafunc.fixturenames:
            continue
        state = _session(metafunc.config)
        plan = state.load()
        if plan is None:
            message = str(state.input_error) if state.input_error else \
                "not a gate session: pass --gates-eval, or run pytest on the gates package"
            from gates.model import input_outcome

            metafunc.parametrize(fixture, [input_outcome(message)], ids=["input-error"])
            continue
        outcomes = plan.of_kind(kind)
        ids = unique_ids([f"{plan.suite}-{o.id.split('/', 1)[1].replace('/', '-')}"
                          for o in outcomes])
        metafunc.parametrize(fixture, outcomes, ids=ids)


def unique_ids(ids: list[str]) -> list[str]:
    """Ids made unique the way pytest makes them (``a-b`` twice: ``a-b0``, ``a-b1``), here,
    so that pytest's ``strict_parametrization_ids`` (or ``strict = true``) never sees two
    gates with one id (metrics ``a/b`` and ``a-b``, whose ids both read ``a-b``)."""
    counts = Counter(ids)
    if len(counts) == len(ids):
        return ids
    taken = set(ids)
    next_suffix: Counter[str] = Counter()
    out = []
    for name in ids:
        if counts[name] > 1:
            sep = "_" if name[-1:].isdigit() else ""
            candidate = f"{name}{sep}{next_suffix[name]}"
            while candidate in taken:
                next_suffix[name] += 1
                candidate = f"{name}{sep}{next_suffix[name]}"
            next_suffix[name] += 1
            taken.add(candidate)
            name = candidate
        out.append(name)
    return out


def _plan(request: pytest.FixtureRequest) -> Plan:
    state = _session(request.config)
    plan = state.load()
    if plan is None:
        pytest.fail(f"gates: bad input: {state.input_error}", pytrace=False)
    return plan


@pytest.fixture
def gate_plan(request: pytest.FixtureRequest) -> Plan:
    """The whole loaded session: evaluation, champion, policy, store, settings."""
    return _plan(request)


@pytest.fixture
def gate_evaluation(gate_plan: Plan) -> Any:
    """The evaluation under test (``.metrics``, ``.samples``, ``.extra``)."""
    return gate_plan.evaluation


@pytest.fixture
def gate_champion(gate_plan: Plan) -> Any:
    """The champion baseline (``.metrics``, ``.samples``, ``.version``) or None."""
    return gate_plan.champion


@pytest.fixture
def gate_policy(gate_plan: Plan) -> Any:
    """The suite's policy (thresholds)."""
    return gate_plan.policy


@pytest.fixture
def gate_check(request: pytest.FixtureRequest) -> Callable[..., Outcome]:
    """Record a verdict the user decides (reported and logged like a built-in gate) and
    fail if it failed.

    ``gate_check(outcome)`` with an :class:`~gates.model.Outcome`, or keywords:
    ``gate_check(metric="energy", passed=ok, current=v, baseline=b, message="...")``.
    Ids are unique per test item: ``custom/<node id>/<metric>``.
    """
    from gates.checks import custom_check

    return custom_check(request.node)


@pytest.fixture
def gate_regression(request: pytest.FixtureRequest, gate_plan: Plan) -> RegressionCheck:
    """Compare a value of your own against the champion with the built-in rule."""
    from gates.checks import RegressionCheck

    return RegressionCheck(request.node, gate_plan)
