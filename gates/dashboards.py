"""Dashboards from an evaluation's sidecars, as plain data: tables, figures, line charts.

Nothing here imports wandb. The W&B sink logs what :func:`build_dashboards` returns (each
DataFrame as a ``wandb.Table``, each PNG as a ``wandb.Image``, each :class:`LineChart` as
``wandb.plot.line``) and ``gates.md`` gets the same through :meth:`Dashboards.markdown`,
so the local outputs and W&B never disagree.

Every table column holds a single type, either float (NaN for a blank) or text (``str``,
``None`` for a blank), because ``wandb.Table`` rejects a column mixing numbers and strings.

A sidecar is optional evidence, not the verdict: a malformed one yields one warning line
``<file>:<line>: <problem>; the <name> dashboard is skipped`` and skips only the dashboard
it feeds. :func:`build_dashboards` never raises.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gates.dashboard_figures import TTCStep, render_ttc_summary, ttc_series
from gates.policy import PHYSICS_METRICS, base_name

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
    TTC_REWARD_CURVE: "Test-time compute reward per step",
}

_ACCURACY_ORDER = ("mse", "mae", "rmse", "nrmse", "rel_l2")
_PHYSICS_HINT = re.compile(r"conservation|bc_|boundary|negativ|positiv|divergence")
_HORIZON = re.compile(r"@(\d+(?:\.\d+)?)$")
_MD_MAX_ROWS = 20  # a PR comment stays readable; W&B holds every row
_MD_MAX_CELL = 60


@dataclass
class LineChart:
    """Data for one ``wandb.plot.line``-style chart: shared x values, one y list per series."""

    xs: list[float]
    ys: dict[str, list[float]]
    title: str
    x_label: str
    y_label: str


@dataclass
class Dashboards:
    """Everything the dashboards produced, plus why any of them was skipped."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
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
                    body = markdown_table(table, cell=_value_cell)
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
    """A sidecar problem: one warning line, one dashboard skipped."""

    def __init__(self, path: Path | str | None, line: int | None, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.line = line
        self.problem = problem


def _warning(path: Path | str | None, line: int | None, problem: str, dashboard: str) -> str:
    where = str(path) if path is not None else "<report>"
    if line is not None:
        where = f"{where}:{line}"
    return f"{where}: {problem}; the {dashboard} dashboard is skipped"


@contextmanager
def _section(dash: Dashboards, name: str, path: Path | str | None) -> Iterator[None]:
    """Turn any failure of one dashboard into a warning: a dashboard never fails the gates."""
    try:
        yield
    except _Skip as exc:
        dash.warnings.append(_warning(exc.path or path, exc.line, exc.problem, name))
    except Exception as exc:  # an unforeseen input must not end the session either
        problem = f"unexpected {type(exc).__name__}: {exc}"
        dash.warnings.append(_warning(path, None, problem, name))


# --------------------------------------------------------------------------- entry points


def discover_sidecars(report_path: Path) -> dict[str, Path]:
    """Sidecars the evaluator wrote beside its report, keyed like build_dashboards' arguments.

    ``reports/eval.json`` -> ``ttc_log``: ``reports/eval_ttc_step_logs.json`` and
    ``config_path``: ``reports/eval.config.yaml`` (``.config.yml`` also accepted); only files
    that exist are returned.
    """
    folder, prefix = report_path.parent, report_path.stem
    found: dict[str, Path] = {}
    ttc = folder / f"{prefix}_ttc_step_logs.json"
    if ttc.is_file():
        found["ttc_log"] = ttc
    for suffix in (".config.yaml", ".config.yml"):
        config = folder / f"{prefix}{suffix}"
        if config.is_file():
            found["config_path"] = config
            break
    return found


def build_dashboards(
    *,
    report_path: Path | None,
    metrics: Mapping[str, float],
    extra: Mapping[str, Any],
    out_dir: Path,
    training_log: Path | None = None,
    leaderboard: Path | None = None,
    leaderboard_row: str | None = None,
    ttc_log: Path | None = None,
    config_path: Path | None = None,
) -> Dashboards:
    """Build every dashboard the available inputs allow; never raises.

    Sidecars not given explicitly are discovered beside the report. A leaderboard CSV used
    as the report doubles as the leaderboard. The TTC figure is written to
    ``out_dir/<prefix>_ttc_summary.png``.
    """
    dash = Dashboards()
    found = discover_sidecars(report_path) if report_path is not None else {}
    ttc_log = ttc_log or found.get("ttc_log")
    config_path = config_path or found.get("config_path")
    if leaderboard is None and report_path is not None and report_path.suffix.lower() == ".csv":
        leaderboard = report_path

    with _section(dash, EVAL_SUMMARY, report_path):
        summary = eval_summary_table(metrics, extra)
        if len(summary):
            dash.tables[EVAL_SUMMARY] = summary

    if training_log is not None:
        with _section(dash, STAGE_COMPARISON, training_log):
            dash.tables[STAGE_COMPARISON] = stage_comparison_table(training_log)

    with _section(dash, CONFIGURATION, config_path or report_path):
        config = configuration_table(config_path, extra)
        if len(config):
            dash.tables[CONFIGURATION] = config

    if leaderboard is not None:
        _leaderboard_dashboards(dash, leaderboard, leaderboard_row, extra)

    if ttc_log is not None:
        _ttc_dashboards(dash, ttc_log, out_dir, _prefix(report_path, ttc_log))
    return dash


def _prefix(report_path: Path | None, ttc_log: Path) -> str:
    if report_path is not None:
        return report_path.stem
    name = ttc_log.name
    return name.removesuffix("_ttc_step_logs.json") if name.endswith(
        "_ttc_step_logs.json") else ttc_log.stem


# --------------------------------------------------------------------------- reading helpers


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _Skip(path, None, f"cannot read the file ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _Skip(path, line, "is not UTF-8 text") from None


def _number(value: Any) -> float | None:
    """A JSON number as float; booleans and text are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


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


def eval_summary_table(metrics: Mapping[str, Any], extra: Mapping[str, Any]) -> pd.DataFrame:
    """Category, Metric, Value: Accuracy, then Physics metrics, then numeric extras as Info.

    Value is float throughout (a boolean extra reads 1.0/0.0); text extras are left out so
    the column keeps one type.
    """
    scored = [(name, _number(value)) for name, value in metrics.items()]
    rows = sorted(((_category(n), n, v) for n, v in scored if v is not None),
                  key=lambda r: (r[0] != "Accuracy", _metric_order(r[1])))
    rows += [("Info", name, value) for name, value in _info_items(extra)]
    return pd.DataFrame({
        "Category": pd.Series([r[0] for r in rows], dtype=object),
        "Metric": pd.Series([r[1] for r in rows], dtype=object),
        "Value": pd.Series([r[2] for r in rows], dtype=float),
    })


# --------------------------------------------------------------------------- training log


@dataclass
class _Stage:
    losses: list[float] = field(default_factory=list)
    max_epoch: float | None = None
    epochs: set[float] = field(default_factory=set)
    time_s: float | None = None
    t_first: float = math.inf
    t_last: float = -math.inf
    stamps: int = 0


def stage_comparison_table(path: Path) -> pd.DataFrame:
    """Stage, Final Loss, Best Loss, Total Epochs, Time (min): every stage of the log.

    Stages are discovered from ``training/<stage>/<metric>`` keys in order of appearance.
    Final Loss is the stage's last ``loss``, Best Loss its lowest finite one. Epochs are the
    largest ``training/<stage>/epoch``, else the number of distinct ``epoch`` values on the
    stage's lines. Time is ``training/<stage>/time`` or ``duration`` (seconds, cumulative:
    the largest), else the ``_timestamp`` span of the stage's lines. Unknown is NaN, never 0.
    """
    text = _read_text(path)
    stages: dict[str, _Stage] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _Skip(path, lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise _Skip(path, lineno, f"expected one JSON object per line, got a JSON "
                                      f"{_json_kind(record)}")
        seen: set[str] = set()
        for key, value in record.items():
            parts = key.split("/", 2)
            if len(parts) < 3 or parts[0] != "training" or not parts[1] or not parts[2]:
                continue
            stage = stages.setdefault(parts[1], _Stage())
            seen.add(parts[1])
            number = _number(value)
            if number is None:
                continue
            metric = parts[2]
            if metric == "loss":
                stage.losses.append(number)
            elif metric == "epoch" and math.isfinite(number):
                stage.max_epoch = number if stage.max_epoch is None else max(stage.max_epoch,
                                                                             number)
            elif metric in ("time", "duration") and math.isfinite(number):
                stage.time_s = number if stage.time_s is None else max(stage.time_s, number)
        stamp = _number(record.get("_timestamp"))
        epoch = _number(record.get("epoch"))
        for name in seen:
            stage = stages[name]
            if stamp is not None and math.isfinite(stamp):
                stage.t_first, stage.t_last = min(stage.t_first, stamp), max(stage.t_last, stamp)
                stage.stamps += 1
            if epoch is not None:
                stage.epochs.add(epoch)
    if not stages:
        raise _Skip(path, None, "no training/<stage>/<metric> keys in the log")
    nan = math.nan
    rows: list[tuple[str, float, float, float, float]] = []
    for name, s in stages.items():
        finite = [v for v in s.losses if math.isfinite(v)]
        epochs = s.max_epoch if s.max_epoch is not None else (
            float(len(s.epochs)) if s.epochs else nan)
        if s.time_s is not None:
            minutes = s.time_s / 60.0
        else:
            minutes = (s.t_last - s.t_first) / 60.0 if s.stamps >= 2 else nan
        rows.append((name, s.losses[-1] if s.losses else nan, min(finite) if finite else nan,
                     epochs, minutes))
    table = pd.DataFrame(rows, columns=list(STAGE_COLUMNS))
    table["Stage"] = table["Stage"].astype(object)
    return table


def _json_kind(value: Any) -> str:
    return {list: "array", dict: "object", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


# --------------------------------------------------------------------------- configuration


def configuration_table(config_path: Path | None, extra: Mapping[str, Any]) -> pd.DataFrame:
    """Parameter, Value: the evaluation's configuration, nested keys joined with dots.

    Read from ``<prefix>.config.yaml`` when there is one, else from ``extra["config"]``
    (a mapping), else from the report's scalar extras. Values are text (YAML spelling), since
    a configuration mixes numbers, names and lists in one column.
    """
    data: Any
    if config_path is not None:
        text = _read_text(config_path)
        data = parse_yaml(config_path, text)
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise _Skip(config_path, 1, f"expected a mapping of settings, got a "
                                        f"{type(data).__name__}")
    else:
        config = extra.get("config")
        if isinstance(config, Mapping):
            data = config
        else:
            data = {k: v for k, v in extra.items()
                    if v is None or isinstance(v, str | int | float | bool)}
    rows = list(_flatten(data))
    return pd.DataFrame({
        "Parameter": pd.Series([r[0] for r in rows], dtype=object),
        "Value": pd.Series([r[1] for r in rows], dtype=object),
    })


def _flatten(data: Mapping[Any, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, _yaml_text(value)


def _yaml_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ".nan" if value != value else repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    return str(value)


def parse_yaml(path: Path, text: str) -> Any:
    """PyYAML's ``safe_load`` when installed (it is not a dependency), else the small parser."""
    try:
        import yaml
    except ImportError:
        try:
            return parse_simple_yaml(text)
        except _YamlError as exc:
            raise _Skip(path, exc.line, f"invalid YAML ({exc.problem})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _Skip(path, line, f"invalid YAML ({problem})") from None


class _YamlError(Exception):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


_Line = tuple[int, int, str]  # line number, indentation, content without the comment
_KEY_ITEM = re.compile(r"^[^\s\[\]{}#,'\"-][^:]*:(\s|$)")
_YAML_BOOL = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_YAML_INT = re.compile(r"^[-+]?[0-9]+$")
_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


def parse_simple_yaml(text: str) -> Any:
    """The YAML subset an evaluator's config dump uses, for when PyYAML is absent.

    Indentation-nested mappings, block lists (``- item``, also of mappings), inline lists
    and mappings, quoted and plain scalars, ``null``/booleans/ints/floats, comments.
    Block scalars (``|``, ``>``), anchors and multi-document streams are out of scope.
    """
    lines: list[_Line] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        content = _strip_comment(raw.rstrip("\r")).rstrip()
        stripped = content.lstrip(" ")
        if not stripped or stripped == "---":
            continue
        if stripped == "...":
            break
        if stripped.startswith("\t") or "\t" in content[: len(content) - len(stripped)]:
            raise _YamlError(number, "tabs cannot indent YAML")
        lines.append((number, len(content) - len(stripped), stripped))
    if not lines:
        return None
    value, end = _yaml_block(lines, 0, lines[0][1])
    if end < len(lines):
        raise _YamlError(lines[end][0], "unexpected indentation")
    return value


def _strip_comment(line: str) -> str:
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"" and (i == 0 or line[i - 1] in " \t[{,:-"):
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _yaml_block(lines: list[_Line], i: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[i][2]):
        return _yaml_list(lines, i, indent)
    return _yaml_map(lines, i, indent)


def _yaml_nested(lines: list[_Line], i: int, indent: int, *, list_ok: bool) -> tuple[Any, int]:
    """The value of a ``key:`` with nothing after it: a deeper block, or null."""
    if i < len(lines) and lines[i][1] > indent:
        return _yaml_block(lines, i, lines[i][1])
    if list_ok and i < len(lines) and lines[i][1] == indent and _is_item(lines[i][2]):
        return _yaml_list(lines, i, indent)  # "key:\n- a" lists may sit at the key's indent
    return None, i


def _yaml_map(lines: list[_Line], i: int, indent: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(lines):
        number, ind, content = lines[i]
        if ind < indent:
            break
        if ind > indent:
            raise _YamlError(number, "unexpected indentation")
        if _is_item(content):
            if not out:
                raise _YamlError(number, "a list item where a key was expected")
            break  # the list belonged to the previous key at this indentation
        key, rest = _yaml_key(number, content)
        if rest == "":
            out[key], i = _yaml_nested(lines, i + 1, indent, list_ok=True)
        else:
            out[key], i = _yaml_scalar(number, rest), i + 1
    return out, i


def _yaml_list(lines: list[_Line], i: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(lines):
        number, ind, content = lines[i]
        if ind < indent or (ind == indent and not _is_item(content)):
            break
        if ind > indent:
            raise _YamlError(number, "unexpected indentation")
        rest = content[1:].lstrip(" ")
        if rest == "":
            value, i = _yaml_nested(lines, i + 1, indent, list_ok=False)
        elif _KEY_ITEM.match(rest) or (rest[0] in "'\"" and _yaml_key_or_none(rest)):
            # "- name: a" starts a mapping whose keys line up with "name".
            sub = ind + len(content) - len(rest)
            lines[i] = (number, sub, rest)
            value, i = _yaml_map(lines, i, sub)
        else:
            value, i = _yaml_scalar(number, rest), i + 1
        out.append(value)
    return out, i


def _yaml_key_or_none(content: str) -> tuple[str, str] | None:
    try:
        return _yaml_key(0, content)
    except _YamlError:
        return None


def _yaml_key(number: int, content: str) -> tuple[str, str]:
    if content[0] in "'\"":
        end = _quote_end(content, 0)
        if end < 0:
            raise _YamlError(number, "unterminated quoted key")
        key = _yaml_scalar(number, content[: end + 1])
        after = content[end + 1:].lstrip(" ")
        if not after.startswith(":"):
            raise _YamlError(number, "expected ':' after the key")
        return str(key), after[1:].strip()
    split = content.find(": ")
    if split < 0:
        if not content.endswith(":"):
            raise _YamlError(number, f"expected 'key: value', got {content!r}")
        return content[:-1].strip(), ""
    return content[:split].strip(), content[split + 2:].strip()


def _quote_end(text: str, start: int) -> int:
    quote, i = text[start], start + 1
    while i < len(text):
        if quote == "'" and text.startswith("''", i):
            i += 2
            continue
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i
        i += 1
    return -1


def _split_flow(number: int, inner: str) -> list[str]:
    """Split ``a, [b, c], {d: e}`` at top-level commas."""
    parts: list[str] = []
    depth, start, i = 0, 0, 0
    while i < len(inner):
        char = inner[i]
        if char in "'\"":
            end = _quote_end(inner, i)
            if end < 0:
                raise _YamlError(number, "unterminated quoted string")
            i = end
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
        i += 1
    parts.append(inner[start:])
    return [p.strip() for p in parts if p.strip()]


def _yaml_scalar(number: int, text: str) -> Any:
    text = text.strip()
    if text[:1] in ("|", ">"):
        raise _YamlError(number, "block scalars (| or >) need PyYAML")
    if text.startswith("["):
        if not text.endswith("]"):
            raise _YamlError(number, "unterminated inline list")
        return [_yaml_scalar(number, p) for p in _split_flow(number, text[1:-1])]
    if text.startswith("{"):
        if not text.endswith("}"):
            raise _YamlError(number, "unterminated inline mapping")
        pairs = (_yaml_key(number, p) for p in _split_flow(number, text[1:-1]))
        return {k: (_yaml_scalar(number, v) if v else None) for k, v in pairs}
    if text[:1] in "'\"":
        end = _quote_end(text, 0)
        if end != len(text) - 1:
            raise _YamlError(number, "text after a quoted string" if end >= 0
                             else "unterminated quoted string")
        if text[0] == "'":
            return text[1:-1].replace("''", "'")
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text[1:-1]
    lowered = text.lower()
    if lowered in ("null", "~"):
        return None
    if lowered in _YAML_BOOL and text in (lowered, lowered.capitalize(), lowered.upper()):
        return _YAML_BOOL[lowered]
    if _YAML_INT.match(text):
        return int(text)
    if _YAML_FLOAT.match(text):
        return float(text)
    if lowered in (".inf", "+.inf", "-.inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return text


# --------------------------------------------------------------------------- leaderboard


def read_leaderboard(path: Path) -> pd.DataFrame:
    """The leaderboard, typed: ``metric:`` columns as float (a blank or non-number is NaN),
    ``extra:`` columns as float when every filled cell is a number, the rest as text
    (``None`` for a blank cell).
    """
    text = _read_text(path)
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                          na_filter=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise _Skip(path, 1, "the CSV is empty (no header line)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        message = " ".join(str(exc).split())
        found = re.search(r"line (\d+)", message)
        detail = re.sub(r"^Error tokenizing data\. C error: ", "", message)
        raise _Skip(path, int(found.group(1)) if found else None,
                    f"unreadable CSV ({detail})") from None
    if not len(raw):
        raise _Skip(path, 2, "the CSV has a header but no rows")
    columns: dict[str, pd.Series] = {}
    for column in raw.columns:
        name = str(column).strip()
        cells = [str(c).strip() for c in raw[column].tolist()]
        blank = [c == "" for c in cells]
        numbers = pd.to_numeric(pd.Series([None if b else c for c, b in zip(cells, blank,
                                                                             strict=True)],
                                          dtype=object), errors="coerce").astype(float)
        filled_numeric = all(b or not math.isnan(n)
                             for b, n in zip(blank, numbers.tolist(), strict=True))
        if name.startswith("metric:") or (name.startswith("extra:") and filled_numeric
                                          and not all(blank)):
            columns[name] = numbers
        else:
            columns[name] = pd.Series([None if b else c for c, b in zip(cells, blank,
                                                                        strict=True)],
                                      dtype=object)
    return pd.DataFrame(columns)


def _timestamp_key(table: pd.DataFrame) -> list[float] | None:
    """Timestamps as sortable floats (epoch seconds or ISO 8601), NaN where unknown."""
    if "timestamp" not in table.columns:
        return None
    stamps = table["timestamp"]
    if stamps.dtype != object:
        return [float(v) for v in stamps.tolist()]
    numbers = pd.to_numeric(stamps, errors="coerce").astype(float)
    dates = pd.to_datetime(stamps, errors="coerce", utc=True, format="ISO8601")
    if numbers.notna().sum() > dates.notna().sum():
        return [float(v) for v in numbers.tolist()]
    seconds = (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return [float(v) for v in seconds.tolist()]


def _newest(candidates: Sequence[int], key: list[float] | None) -> int:
    """The candidate row with the newest timestamp; the last one when none is known."""
    if key is not None:
        known = [i for i in candidates if not math.isnan(key[i])]
        if known:
            best = max(key[i] for i in known)
            return [i for i in known if key[i] == best][-1]
    return candidates[-1]


def pick_leaderboard_row(table: pd.DataFrame, wanted: str | None,
                         run_id: str | None) -> int | None:
    """Row position of this run: ``wanted`` (run id or label), else ``run_id``, else newest.

    ``None`` when ``wanted`` matches no row.
    """
    key = _timestamp_key(table)

    def matching(column: str, value: str) -> list[int]:
        if column not in table.columns:
            return []
        return [i for i, cell in enumerate(table[column].tolist()) if cell == value]

    if wanted is not None:
        rows = matching("run_id", wanted) or matching("label", wanted)
        return _newest(rows, key) if rows else None
    if run_id:
        rows = matching("run_id", run_id)
        if rows:
            return _newest(rows, key)
    return _newest(range(len(table)), key)


def top_by(table: pd.DataFrame, column: str, n: int = 5) -> pd.DataFrame:
    """The ``n`` rows with the lowest finite ``column``; blanks and non-numbers never rank."""
    values = table[column]
    finite = values.notna() & values.abs().lt(math.inf)
    ranked = table[finite].sort_values(column, kind="mergesort")
    return ranked.head(n).reset_index(drop=True)


def _leaderboard_dashboards(dash: Dashboards, path: Path, wanted: str | None,
                            extra: Mapping[str, Any]) -> None:
    table: pd.DataFrame | None = None
    with _section(dash, "leaderboard", path):
        table = read_leaderboard(path)
    if table is None:
        return
    dash.tables[LEADERBOARD_FULL] = table

    with _section(dash, LEADERBOARD_TOP5, path):
        if "metric:nrmse" not in table.columns:
            raise _Skip(path, 1, "no metric:nrmse column in the header")
        top = top_by(table, "metric:nrmse")
        if not len(top):
            raise _Skip(path, None, "no row has a numeric metric:nrmse")
        dash.tables[LEADERBOARD_TOP5] = top

    with _section(dash, LEADERBOARD_ENTRY, path):
        run_id = extra.get("run_id")
        position = pick_leaderboard_row(table, wanted, str(run_id) if run_id else None)
        if position is None:
            raise _Skip(path, None, f"no row has run_id or label {wanted!r}")
        entry = table.iloc[[position]].reset_index(drop=True)
        dash.tables[LEADERBOARD_ENTRY] = entry
        dash.summary.update(leaderboard_summary(entry.iloc[0].to_dict()))


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
            number = _number(value)
            if number is not None and math.isfinite(number):
                out[f"leaderboard_{str(column).removeprefix('metric:')}"] = number
    return out


# --------------------------------------------------------------------------- TTC


def read_ttc_log(path: Path) -> list[TTCStep]:
    """Validated TTC step entries; a bad entry names the line of the offending field."""
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Skip(path, exc.lineno, f"invalid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        start = len(text) - len(text.lstrip())
        raise _Skip(path, _line_of(text, start), f"expected a list of step entries, got a "
                                                 f"JSON {_json_kind(data)}")
    if not data:
        raise _Skip(path, 1, "the list of steps is empty")
    return [_ttc_step(path, text, position, start, end, entry)
            for position, (start, end, entry) in enumerate(_array_items(text))]


def _array_items(text: str) -> Iterator[tuple[int, int, Any]]:
    """(start, end, value) of each element of a top-level JSON array already known valid."""
    decoder = json.JSONDecoder()
    space = re.compile(r"[ \t\n\r]*")

    def skip(pos: int) -> int:
        match = space.match(text, pos)
        return match.end() if match else pos

    pos = skip(skip(0) + 1)  # past "["
    while pos < len(text) and text[pos] != "]":
        value, end = decoder.raw_decode(text, pos)
        yield pos, end, value
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)


def _ttc_step(path: Path, text: str, position: int, start: int, end: int,
              entry: Any) -> TTCStep:
    def fail(key: str | None, problem: str) -> _Skip:
        found = text.find(f'"{key}"', start, end) if key else -1
        return _Skip(path, _line_of(text, found if found >= 0 else start),
                     f"step entry {position}: {problem}")

    if not isinstance(entry, dict):
        raise fail(None, f"expected an object, got a JSON {_json_kind(entry)}")
    step = entry.get("step", position)
    step_number = _number(step)
    if step_number is None or not math.isfinite(step_number):
        raise fail("step", f"step must be a number, got {step!r}")
    rewards = entry.get("rewards")
    if not isinstance(rewards, list) or not rewards:
        raise fail("rewards", "rewards must be a non-empty list of numbers")
    values = [_number(r) for r in rewards]
    for index, value in enumerate(values):
        if value is None or not math.isfinite(value):
            raise fail("rewards", f"rewards[{index}] is {rewards[index]!r}, not a finite number")
    chosen = entry.get("chosen")
    if isinstance(chosen, bool) or not isinstance(chosen, int):
        raise fail("chosen", f"chosen must be a candidate index, got {chosen!r}")
    if not 0 <= chosen < len(rewards):
        raise fail("chosen", f"chosen={chosen} is out of range for {len(rewards)} rewards "
                             f"(valid: 0..{len(rewards) - 1})")

    def optional_int(key: str) -> int | None:
        value = entry.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return TTCStep(step=step_number, rewards=tuple(v for v in values if v is not None),
                   chosen=chosen, beam_width=optional_int("beam_width"),
                   horizon=optional_int("horizon"))


def _ttc_dashboards(dash: Dashboards, path: Path, out_dir: Path, prefix: str) -> None:
    steps: list[TTCStep] = []
    with _section(dash, "ttc", path):
        steps = read_ttc_log(path)
    if not steps:
        return
    series = ttc_series(steps)
    dash.lines[TTC_REWARD_CURVE] = LineChart(
        xs=list(series.steps), ys={"chosen": list(series.chosen), "mean": list(series.mean)},
        title="TTC reward per step: chosen vs mean of candidates",
        x_label="TTC step", y_label="Reward (arb. units)")
    png = out_dir / f"{prefix}_ttc_summary.png"
    with _section(dash, TTC_SUMMARY, png):
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            render_ttc_summary(steps, png)
        except OSError as exc:
            raise _Skip(png, None, f"cannot write the figure ({exc.strerror or exc})") from None
        dash.images[TTC_SUMMARY] = png


# --------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def format_cell(value: Any) -> str:
    """How a cell reads in Markdown: blanks stay blank, numbers get 4 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
        if math.isnan(number):
            return ""
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number))
        return f"{number:.4g}"
    text = _md_escape(str(value))
    return text if len(text) <= _MD_MAX_CELL else text[: _MD_MAX_CELL - 1] + "…"


def _value_cell(value: Any) -> str:
    return "NaN" if isinstance(value, float) and math.isnan(value) else format_cell(value)


def markdown_table(table: pd.DataFrame, *, max_rows: int | None = None,
                   cell: Callable[[Any], str] = format_cell) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs tabulate, not a dependency)."""
    if not len(table.columns):
        return "_(empty)_"
    numeric = [pd.api.types.is_numeric_dtype(table[c].dtype) for c in table.columns]
    head = "| " + " | ".join(_md_escape(str(c)) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    shown = table if max_rows is None else table.head(max_rows)
    body = ["| " + " | ".join(cell(v) for v in row) + " |"
            for row in shown.itertuples(index=False, name=None)]
    lines = [head, rule, *body]
    if max_rows is not None and len(table) > max_rows:
        lines.append(f"\n_{len(table) - max_rows} more rows not shown "
                     f"({len(table)} in all; every row is in W&B)._")
    elif not len(table):
        lines.append("\n_(no rows)_")
    return "\n".join(lines)


def _entry_markdown(entry: pd.DataFrame) -> str:
    """One wide row reads better turned on its side: Field, Value."""
    if not len(entry):
        return "_(no rows)_"
    row = entry.iloc[0]
    lines = ["| Field | Value |", "|---|---|"]
    lines += [f"| {_md_escape(str(k))} | {format_cell(v)} |" for k, v in row.items()]
    return "\n".join(lines)


def _line_markdown(chart: LineChart) -> str:
    lines = [f"{chart.title}, over {len(chart.xs)} steps.", "",
             "| Series | First | Last | Min | Max |", "|---|---:|---:|---:|---:|"]
    for name, ys in chart.ys.items():
        if ys:
            lines.append(f"| {_md_escape(name)} | {format_cell(ys[0])} | {format_cell(ys[-1])} "
                         f"| {format_cell(min(ys))} | {format_cell(max(ys))} |")
    return "\n".join(lines)
