"""Dashboards from an evaluation and its sidecars, as plain data: tables, figures, lines.

The readers live in :mod:`gates.inputs`; this module only arranges what they read. Nothing
here imports wandb: the W&B sink logs what :func:`build_dashboards` returns (each
:class:`Table` as a ``wandb.Table``, each PNG as a ``wandb.Image``, each :class:`LineChart`
as a line series, :attr:`Dashboards.summary` into the run summary) and ``gates.md`` gets the
same through :meth:`Dashboards.markdown`, so the local outputs and W&B never disagree.

Every table column holds one type, because ``wandb.Table`` rejects a column mixing numbers
and strings: float (NaN for a blank), or text (``str``, ``None`` for a blank), which for a
leaderboard column of ``True``/``False`` cells holds bools (W&B gets ``"True"``/``"False"``).
Tables are plain rows: pandas is imported only where a CSV is read (the leaderboard), not
in every gate session.

A sidecar is optional evidence, not the verdict: a malformed one yields one warning line
``<file>:<line>: <problem>; the <name> dashboard is skipped`` and skips only the dashboard
it feeds. :func:`build_dashboards` never raises.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gates.errors import GateInputError
from gates.inputs.config import read_config
from gates.inputs.files import number
from gates.inputs.leaderboard import Leaderboard, find_row, read_leaderboard
from gates.inputs.sidecars import orchestrator_run
from gates.inputs.training_log import StageSummary, read_training_log
from gates.inputs.ttc import TTCStep, read_ttc_log, ttc_steps
from gates.model import Evaluation
from gates.policy import PHYSICS_METRICS, base_name
from gates.sinks.dashboard_figures import render_ttc_summary, ttc_series
from gates.sinks.local import md_table

if TYPE_CHECKING:
    import pandas as pd

    from gates.result import SessionResult

EVAL_SUMMARY = "eval_summary/full"
STAGE_COMPARISON = "training_summary/stage_comparison"
CONFIGURATION = "training_summary/configuration"
LEADERBOARD_ENTRY = "leaderboard/entry"
LEADERBOARD_FULL = "leaderboard/full_table"
LEADERBOARD_TOP5 = "leaderboard/top_5_nrmse"
TTC_SUMMARY = "ttc/summary"
TTC_REWARD_CURVE = "ttc/reward_curve"

STAGE_COLUMNS = ("Stage", "Final Loss", "Best Loss", "Total Epochs", "Time (min)")

#: Section titles for gates.md, in the order the sections appear.
TITLES: dict[str, str] = {
    EVAL_SUMMARY: "Evaluation summary",
    STAGE_COMPARISON: "Training stages",
    CONFIGURATION: "Configuration",
    LEADERBOARD_ENTRY: "Leaderboard entry of this run",
    LEADERBOARD_TOP5: "Leaderboard: five best by nrmse",
    LEADERBOARD_FULL: "Leaderboard",
    TTC_SUMMARY: "Test-time compute",
    TTC_REWARD_CURVE: "Test-time compute per step",
}

_ACCURACY_ORDER = ("mse", "mae", "rmse", "nrmse", "rel_l2")
_PHYSICS_HINT = re.compile(r"conservation|bc_|boundary|negativ|positiv|divergence")
_HORIZON = re.compile(r"@(\d+(?:\.\d+)?)$")
MAX_CONFIG_ROWS = 10_000
_MAX_VALUE_NODES = 500
_MD_MAX_ROWS = 20  # a PR comment stays readable; W&B holds every row
_MD_MAX_CELL = 60


@dataclass
class LineChart:
    """Data for one line chart: shared x values, one y list per series."""

    xs: list[float]
    ys: dict[str, list[float]]
    title: str
    x_label: str
    y_label: str


@dataclass
class Table:
    """A dashboard table as plain data: column names, each column's type (``"float"`` or
    ``"str"``), and rows of cells (see the module's docstring)."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        at = self.columns.index(name)
        return [row[at] for row in self.rows]

    def type_of(self, name: str) -> str:
        return self.types[self.columns.index(name)]

    @classmethod
    def of(cls, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> Table:
        """From ``(name, type)`` pairs and rows; float columns' cells become floats."""
        floats = [i for i, (_, kind) in enumerate(columns) if kind == "float"]
        cells = [list(row) for row in rows]
        for row in cells:
            for i in floats:
                row[i] = math.nan if row[i] is None else float(row[i])
        return cls([name for name, _ in columns], [kind for _, kind in columns], cells)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Table:
        """A read leaderboard's DataFrame: numeric columns float, every other one text."""
        import pandas as pd

        types = ["float" if pd.api.types.is_numeric_dtype(frame[c].dtype)
                 and not pd.api.types.is_bool_dtype(frame[c].dtype) else "str"
                 for c in frame.columns]
        return cls.of(list(zip([str(c) for c in frame.columns], types, strict=True)),
                      list(frame.astype(object).itertuples(index=False, name=None)))


@dataclass
class Dashboards:
    """Everything the dashboards produced, plus why any of them was skipped.

    ``tables``: key -> :class:`Table`; ``images``: key -> PNG path; ``lines``: key ->
    :class:`LineChart`; ``summary``: ``leaderboard_<key>`` values for the run summary;
    ``warnings``: one line per skipped dashboard.
    """

    tables: dict[str, Table] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    lines: dict[str, LineChart] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """gates.md sections: one ``###`` section per table and figure, then the warnings.

        Image links are bare file names: the PNGs are written where gates.md goes.
        """
        sections: list[str] = []
        for key, title in TITLES.items():
            heading = f"### {title} (`{key}`)"
            if key in self.tables:
                table = self.tables[key]
                if key == LEADERBOARD_ENTRY:
                    body = _entry_markdown(table)
                elif key == EVAL_SUMMARY:  # here NaN is a reported value, not a blank
                    body = markdown_table(table, nan="NaN")
                else:
                    body = markdown_table(table, max_rows=(_MD_MAX_ROWS if key == LEADERBOARD_FULL
                                                           else None))
                sections.append(f"{heading}\n\n{body}")
            elif key in self.images:
                sections.append(f"{heading}\n\n![{title}]({self.images[key].name})")
            elif key in self.lines:
                sections.append(f"{heading}\n\n{_line_markdown(self.lines[key])}")
        if self.warnings:
            items = "\n".join(f"- {_md_escape(w)}" for w in self.warnings)
            sections.append(f"### Dashboard warnings\n\n{items}")
        return "\n\n".join(sections) + ("\n" if sections else "")


class _Skip(Exception):
    """A problem found while arranging a dashboard (not while reading a file)."""

    def __init__(self, where: Path | str | None, problem: str) -> None:
        super().__init__(problem)
        self.where = where
        self.problem = problem


def _warning(where: Path | str | None, problem: str, dashboard: str) -> str:
    return f"{where if where is not None else '<report>'}: {problem}; the {dashboard} " \
           "dashboard is skipped"


@contextmanager
def _section(dash: Dashboards, name: str, path: Path | str | None) -> Iterator[None]:
    """Turn any failure of one dashboard into a warning: a dashboard never fails the gates."""
    try:
        yield
    except _Skip as exc:
        dash.warnings.append(_warning(exc.where or path, exc.problem, name))
    except GateInputError as exc:  # InputProblem included: its path carries the line
        dash.warnings.append(_warning(exc.path or path, exc.problem, name))
    except Exception as exc:  # an unforeseen input must not end the session either
        dash.warnings.append(_warning(path, f"unexpected {type(exc).__name__}: {exc}", name))


# --------------------------------------------------------------------------- entry point


def build_dashboards(evaluation: Evaluation, *, out_dir: Path,
                     training_log: Path | None = None, leaderboard: Path | None = None,
                     run_info: Mapping[str, Any] | None = None) -> Dashboards:
    """Build every dashboard the evaluation and its sidecars allow; never raises.

    The sidecars are the ones :func:`gates.inputs.discover_sidecars` found when the report
    was loaded (``evaluation.sidecars``); TTC logs carried in the report itself
    (``evaluation.ttc_logs``) come before a TTC sidecar. A leaderboard CSV used as the
    report doubles as the leaderboard, its picked row being the entry; with a separate
    ``leaderboard``, the entry is this run's row found by the run ids the session knows
    (see :func:`run_ids`), or no entry at all. The TTC figure is written to
    ``out_dir/<prefix>_ttc_summary.png``.
    """
    dash = Dashboards()
    report = evaluation.path
    with _section(dash, EVAL_SUMMARY, report):
        summary = eval_summary_table(evaluation.metrics, evaluation.extra)
        if len(summary):
            dash.tables[EVAL_SUMMARY] = summary

    if training_log is not None:
        with _section(dash, STAGE_COMPARISON, training_log):
            dash.tables[STAGE_COMPARISON] = stage_comparison_table(
                read_training_log(training_log))

    config_path = evaluation.sidecars.get("config")
    with _section(dash, CONFIGURATION, config_path or report):
        config = configuration_table(read_config(config_path) if config_path else None,
                                     evaluation.extra)
        if len(config):
            dash.tables[CONFIGURATION] = config

    if leaderboard is None and evaluation.format == "leaderboard":
        leaderboard = report
    if leaderboard is not None:
        _leaderboard_dashboards(dash, leaderboard, evaluation, run_info or {})

    _ttc_dashboards(dash, evaluation, out_dir)
    return dash


def dashboards_of(result: SessionResult) -> Dashboards | None:
    """The dashboards of a finished session, from its plan (None on bad input: no plan).

    The one call a sink makes: the evaluation as loaded, ``--gates-training-log`` and
    ``--gates-leaderboard`` resolved like every other path, the W&B run info of the plan.
    Never raises: a path that cannot even be resolved is one warning.
    """
    plan = result.plan
    if plan is None:
        return None
    settings = plan.settings
    try:
        training_log = settings.resolve(settings.training_log)
        leaderboard = settings.resolve(settings.leaderboard)
    except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
        return Dashboards(warnings=[f"dashboards skipped: {type(exc).__name__}: {exc}"])
    return build_dashboards(plan.evaluation, out_dir=result.out_dir,
                            training_log=training_log, leaderboard=leaderboard,
                            run_info=plan.run_info)


# --------------------------------------------------------------------------- eval summary


def _category(metric: str) -> str:
    base = base_name(metric)
    if base in PHYSICS_METRICS or _PHYSICS_HINT.search(base):
        return "Physics"
    return "Accuracy"


def _metric_order(metric: str) -> tuple[bool, int, str, float, str]:
    base = base_name(metric)
    rank = _ACCURACY_ORDER.index(base) if base in _ACCURACY_ORDER else len(_ACCURACY_ORDER)
    horizon = _HORIZON.search(metric)
    return (metric.startswith("field/"), rank, base,
            float(horizon.group(1)) if horizon else -1.0, metric)


def _info_items(extra: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    for key, value in extra.items():
        name = f"{prefix}{key}"
        if not prefix and key == "config":
            continue  # the configuration has its own table
        if isinstance(value, bool):
            yield name, 1.0 if value else 0.0
        elif isinstance(value, int | float):
            yield name, float(value)
        elif isinstance(value, Mapping):
            yield from _info_items(value, f"{name}.")


def eval_summary_table(metrics: Mapping[str, Any], extra: Mapping[str, Any]) -> Table:
    """Category, Metric, Value: Accuracy, then Physics metrics, then numeric extras as Info.

    Value is float throughout (a boolean extra reads 1.0/0.0); text extras are left out so
    the column keeps one type.
    """
    scored = [(name, number(value)) for name, value in metrics.items()]
    rows = sorted(((_category(n), n, v) for n, v in scored if v is not None),
                  key=lambda r: (r[0] != "Accuracy", _metric_order(r[1])))
    rows += [("Info", name, value) for name, value in _info_items(extra)]
    return Table.of([("Category", "str"), ("Metric", "str"), ("Value", "float")], rows)


# --------------------------------------------------------------------------- training


def stage_comparison_table(stages: Sequence[StageSummary]) -> Table:
    """Stage, Final Loss, Best Loss, Total Epochs, Time (min): every stage side by side."""
    return Table.of([(STAGE_COLUMNS[0], "str"), *((c, "float") for c in STAGE_COLUMNS[1:])],
                    [(s.stage, s.final_loss, s.best_loss, s.epochs, s.minutes) for s in stages])


def configuration_table(config: Mapping[str, Any] | None,
                        extra: Mapping[str, Any]) -> Table:
    """Parameter, Value: the evaluation's configuration, nested keys joined with dots.

    From ``<prefix>.config.yaml`` when there is one, else from ``extra["config"]`` (a
    mapping), else from the report's scalar extras. Values are text (YAML spelling), since
    a configuration mixes numbers, names and lists in one column.
    """
    data: Mapping[str, Any]
    if config is not None:
        data = config
    elif isinstance(extra.get("config"), Mapping):
        data = extra["config"]
    else:
        data = {k: v for k, v in extra.items()
                if v is None or isinstance(v, str | int | float | bool)}
    rows = list(itertools.islice(_flatten(data), MAX_CONFIG_ROWS + 1))
    if len(rows) > MAX_CONFIG_ROWS:  # e.g. YAML aliases nested into a "billion laughs"
        raise _Skip(None, f"more than {MAX_CONFIG_ROWS} settings; not shown")
    return Table.of([("Parameter", "str"), ("Value", "str")], rows)


def _flatten(data: Mapping[Any, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, _yaml_text(value)


def _yaml_text(value: Any, budget: list[int] | None = None) -> str:
    """YAML spelling of a value, cut short after a few hundred nodes (aliases can nest a
    small file into an enormous value)."""
    budget = [_MAX_VALUE_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        return "…"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ".nan" if value != value else repr(value)
    if isinstance(value, Mapping):
        parts = []
        for k, v in value.items():
            parts.append(f"{k}: {_yaml_text(v, budget)}")
            if budget[0] < 0:
                break
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list | tuple):
        items = []
        for v in value:
            items.append(_yaml_text(v, budget))
            if budget[0] < 0:
                break
        return "[" + ", ".join(items) + "]"
    return str(value)


# --------------------------------------------------------------------------- leaderboard


def run_ids(evaluation: Evaluation, run_info: Mapping[str, Any]) -> list[str]:
    """Every id this run may go by in a leaderboard, most specific first.

    The report's own ``run_id``; in the orchestrator's layout
    (``artifacts/runs/<run>/<stage>_eval/results.json``) ``<run>_<stage>`` and ``<run>``;
    the W&B run id of the run info (the leaderboard's ``train_wandb_run``).
    """
    ids: list[str] = []
    if evaluation.run_id:
        ids.append(evaluation.run_id)
    layout = orchestrator_run(evaluation.path)
    if layout is not None:
        run, stage = layout
        ids += [f"{run}_{stage}", run]
    if run_info.get("id"):
        ids.append(str(run_info["id"]))
    return list(dict.fromkeys(ids))


def _orchestrator_config(report: Path | None) -> str | None:
    layout = orchestrator_run(report)
    if report is None or layout is None:
        return None
    return str(report.parent.parent / "configs" / f"{layout[1]}_eval_resolved.yaml")


def top_by(table: pd.DataFrame, column: str, n: int = 5) -> pd.DataFrame:
    """The ``n`` rows with the lowest finite ``column``; blanks and non-numbers never rank."""
    values = table[column]
    finite = values.notna() & values.abs().lt(math.inf)
    ranked = table[finite].sort_values(column, kind="mergesort")
    return ranked.head(n).reset_index(drop=True)


def _leaderboard_dashboards(dash: Dashboards, path: Path, evaluation: Evaluation,
                            run_info: Mapping[str, Any]) -> None:
    board: Leaderboard | None = None
    with _section(dash, "leaderboard", path):
        board = read_leaderboard(path)
    if board is None:
        return
    table = board.table
    dash.tables[LEADERBOARD_FULL] = Table.from_frame(table)

    with _section(dash, LEADERBOARD_TOP5, path):
        if "metric:nrmse" not in table.columns:
            raise _Skip(f"{path}:1", "no metric:nrmse column in the header")
        top = top_by(table, "metric:nrmse")
        if not len(top):
            raise _Skip(path, "no row has a numeric metric:nrmse")
        dash.tables[LEADERBOARD_TOP5] = Table.from_frame(top)

    with _section(dash, LEADERBOARD_ENTRY, path):
        ids = run_ids(evaluation, run_info)
        config = _orchestrator_config(evaluation.path)
        position = find_row(table, run_ids=ids, config=config)
        if position is None:
            looked = ", ".join(repr(i) for i in ids) or "none known"
            raise _Skip(path, f"no row is this run's (run ids looked for: {looked}"
                              f"{f'; config {config}' if config else ''}); no entry is shown "
                              "rather than another run's")
        dash.tables[LEADERBOARD_ENTRY] = Table.from_frame(table.iloc[[position]])
        dash.summary.update(leaderboard_summary(board.row(position)))


def leaderboard_summary(row: Mapping[Any, Any]) -> dict[str, Any]:
    """``leaderboard_<key>`` values: run_id, label, timestamp as text, each metric as float.

    Blank cells and non-finite metrics are left out rather than logged as NaN.
    """
    out: dict[str, Any] = {}
    for key in ("run_id", "label", "timestamp"):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[f"leaderboard_{key}"] = str(value)
    for column, value in row.items():
        if str(column).startswith("metric:"):
            metric = number(value)
            if metric is not None and math.isfinite(metric):
                out[f"leaderboard_{str(column).removeprefix('metric:')}"] = metric
    return out


# --------------------------------------------------------------------------- TTC


def _ttc_dashboards(dash: Dashboards, evaluation: Evaluation, out_dir: Path) -> None:
    source: Path | str | None
    if evaluation.ttc_logs is not None:
        source = f"{evaluation.path}: details.ttc_step_logs"
    else:
        source = evaluation.sidecars.get("ttc_log")
    if source is None:
        return
    steps: list[TTCStep] = []
    with _section(dash, "ttc", source):
        if evaluation.ttc_logs is not None:
            steps = ttc_steps(source, evaluation.ttc_logs)
        else:
            assert isinstance(source, Path)
            steps = read_ttc_log(source)
    if not steps:
        return
    series = ttc_series(steps)
    ys = {"chosen_reward": list(series.chosen_reward)}
    if series.by_totals:
        ys["chosen_total"] = list(series.chosen_total)
    ys["mean_reward"] = list(series.mean)
    dash.lines[TTC_REWARD_CURVE] = LineChart(
        xs=list(series.positions), ys=ys,
        title=("TTC per step in log order: the chosen candidate's reward and total (chosen "
               "by totals) and the candidates' mean reward" if series.by_totals else
               "TTC per step in log order: chosen vs mean reward of candidates"),
        x_label="Step in log order (batch, TTC step)", y_label="Reward / total (arb. units)")
    prefix = evaluation.path.stem if evaluation.path is not None else "gates"
    png = out_dir / f"{prefix}_ttc_summary.png"
    with _section(dash, TTC_SUMMARY, png):
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            render_ttc_summary(steps, png)
        except OSError as exc:
            raise _Skip(png, f"cannot write the figure ({exc.strerror or exc})") from None
        dash.images[TTC_SUMMARY] = png


# --------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def format_cell(value: Any, *, nan: str = "") -> str:
    """How a cell reads in Markdown: blanks stay blank, numbers get 4 significant digits.

    Not escaped: :func:`gates.sinks.local.md_table` escapes every cell.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        figure = float(value)
        if math.isnan(figure):
            return nan
        if math.isinf(figure):
            return "inf" if figure > 0 else "-inf"
        if figure.is_integer() and abs(figure) < 1e15:
            return str(int(figure))
        return f"{figure:.4g}"
    text = str(value).replace("\r", " ")
    return text if len(text) <= _MD_MAX_CELL else text[: _MD_MAX_CELL - 1] + "…"


def markdown_table(table: Table, *, max_rows: int | None = None, nan: str = "") -> str:
    """A table through the project's one Markdown table writer, with a row cap."""
    if not len(table.columns):
        return "_(empty)_"
    shown = table.rows if max_rows is None else table.rows[:max_rows]
    body = [[format_cell(v, nan=nan) for v in row] for row in shown]
    text = md_table(table.columns, body)
    if max_rows is not None and len(table) > max_rows:
        text += (f"\n\n_{len(table) - max_rows} more rows not shown "
                 f"({len(table)} in all; every row is in W&B)._")
    elif not len(table):
        text += "\n\n_(no rows)_"
    return text


def _entry_markdown(entry: Table) -> str:
    """One wide row reads better turned on its side: Field, Value."""
    if not len(entry):
        return "_(no rows)_"
    return md_table(["Field", "Value"], [[k, format_cell(v)] for k, v in
                                         zip(entry.columns, entry.rows[0], strict=True)])


def _line_markdown(chart: LineChart) -> str:
    body = [[name, format_cell(ys[0]), format_cell(ys[-1]), format_cell(min(ys)),
             format_cell(max(ys))] for name, ys in chart.ys.items() if ys]
    return f"{chart.title}, over {len(chart.xs)} steps.\n\n" + md_table(
        ["Series", "First", "Last", "Min", "Max"], body)


__all__ = ["CONFIGURATION", "EVAL_SUMMARY", "LEADERBOARD_ENTRY", "LEADERBOARD_FULL",
           "LEADERBOARD_TOP5", "STAGE_COMPARISON", "TITLES", "TTC_REWARD_CURVE", "TTC_SUMMARY",
           "Dashboards", "LineChart", "Table", "build_dashboards", "dashboards_of",
           "markdown_table"]
