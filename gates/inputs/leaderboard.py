"""The one leaderboard reader (universal-simulator's ``update_leaderboard`` CSV), with pandas.

Columns: ``run_id, timestamp, label, config, notes``, tag columns (``pipeline, commit,
branch, run, train_wandb_run, train_wandb_project, train_wandb_entity, stage``), then
``metric:<name>`` and ``extra:<name>``. The writer stores every cell as ``str(value)``, so
cells are typed back here, one type per column (``wandb.Table`` refuses mixed columns):

- ``metric:`` columns are float: a blank or ``None`` cell is NaN, ``nan``/``inf`` are
  themselves, other text is NaN in the table (and bad input where a report row needs it);
- identity and tag columns stay text (a commit like ``1234567`` is not a number);
- any other column is float when every filled cell is a number, boolean when every filled
  cell is ``True``/``False``, else text; a blank or ``None`` cell is ``None`` (NaN in a
  float column).

The newest row is the one with the newest parsed ``timestamp`` (ISO 8601 with or without
an offset, naive meaning UTC, or epoch seconds); on a tie the later row in the file.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from gates.errors import GateInputError
from gates.inputs.files import InputProblem, decode_text, read_regular

if TYPE_CHECKING:
    import pandas as pd

TEXT_COLUMNS = frozenset({"run_id", "timestamp", "label", "config", "notes", "pipeline",
                          "commit", "branch", "run", "train_wandb_run", "train_wandb_project",
                          "train_wandb_entity", "stage"})
#: Row columns that say where a run came from (Evaluation.provenance of a leaderboard row).
PROVENANCE_COLUMNS = ("run", "commit", "branch", "train_wandb_run", "train_wandb_project",
                      "train_wandb_entity", "config", "pipeline", "stage")
_BLANK = frozenset({"", "None"})
_BOOLS = {"True": True, "true": True, "False": False, "false": False}


@dataclass(frozen=True)
class Leaderboard:
    """A read leaderboard: the typed table and every cell as written (for messages)."""

    path: Path
    table: pd.DataFrame
    text: pd.DataFrame

    def row(self, position: int) -> dict[str, Any]:
        """One row as plain Python values: str, bool, float (NaN in a float column), None."""
        out: dict[str, Any] = {}
        for column, value in self.table.iloc[position].items():
            out[str(column)] = value.item() if isinstance(value, np.generic) else value
        return out


def read_cells(path: Path, raw: bytes | None = None,
               what: str = "leaderboard CSV") -> tuple[list[str], pd.DataFrame]:
    """The header and every cell as written (text, ``""`` for a blank) of a CSV file."""
    import pandas as pd

    if raw is None:
        raw = read_regular(path, what)
    text = decode_text(path, raw, what)
    try:
        cells = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False,
                            na_filter=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise InputProblem(path, "the CSV is empty (no header line)", 1) from None
    except (pd.errors.ParserError, ValueError) as exc:
        message = " ".join(str(exc).split())
        found = re.search(r"line (\d+)", message)
        detail = re.sub(r"^Error tokenizing data\. C error: ", "", message)
        raise InputProblem(path, f"unreadable CSV ({detail})",
                           int(found.group(1)) if found else None) from None
    header = [str(c).strip() for c in cells.iloc[0].tolist()]
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise InputProblem(path, f"the CSV has duplicate columns: {', '.join(dupes)}", 1)
    body = cells.iloc[1:].reset_index(drop=True)
    if not len(body):
        raise InputProblem(path, "the CSV has a header but no rows", 2)
    written = pd.DataFrame({name: pd.Series([_cell(v) for v in body[i].tolist()], dtype=object)
                            for i, name in enumerate(header)})
    return header, written


def read_leaderboard(path: Path, raw: bytes | None = None) -> Leaderboard:
    """Read and type the CSV; duplicate columns or duplicate run ids are refused."""
    import pandas as pd

    header, written = read_cells(path, raw)
    if "run_id" not in header:
        raise InputProblem(path, "the CSV has no run_id column", 1)
    _refuse_duplicate_ids(path, written)
    table = pd.DataFrame({name: _typed_column(name, written[name].tolist())
                          for name in header})
    return Leaderboard(path, table, written)


def typed_cell(cell: str) -> Any:
    """One cell as its writer's ``str(value)`` meant it: bool, None, number or text."""
    if cell in _BLANK:
        return None
    if cell in _BOOLS:
        return _BOOLS[cell]
    value = _float(cell)
    return cell if value is None else value


def is_leaderboard(header: Sequence[str]) -> bool:
    """A leaderboard has run ids or ``metric:`` columns; else it is a one-row results CSV."""
    return "run_id" in header or any(c.startswith("metric:") for c in header)


def _cell(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else str(value).strip()


def _refuse_duplicate_ids(path: Path, written: pd.DataFrame) -> None:
    seen: dict[str, int] = {}
    for line, run_id in enumerate(written["run_id"].tolist(), start=2):
        if run_id == "":
            raise InputProblem(path, "a row has no run_id", line)
        if run_id in seen:
            raise InputProblem(path, f"run_id {run_id!r} appears on lines {seen[run_id]} and "
                                     f"{line}; which row is meant is ambiguous", line)
        seen[run_id] = line


def _float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _typed_column(name: str, cells: list[str]) -> pd.Series:
    import pandas as pd

    filled = [c for c in cells if c not in _BLANK]
    if name.startswith("metric:"):
        values = [math.nan if c in _BLANK else _float(c) for c in cells]
        return pd.Series([math.nan if v is None else v for v in values], dtype=float)
    if name not in TEXT_COLUMNS and filled:
        numbers = [_float(c) for c in filled]
        if all(n is not None for n in numbers):
            return pd.Series([math.nan if c in _BLANK else float(c) for c in cells],
                             dtype=float)
        if all(c in _BOOLS for c in filled):
            return pd.Series([None if c in _BLANK else _BOOLS[c] for c in cells],
                             dtype=object)
    return pd.Series([None if c in _BLANK else c for c in cells], dtype=object)


def timestamps(table: pd.DataFrame) -> list[float]:
    """Each row's timestamp as epoch seconds (NaN where missing or unreadable)."""
    if "timestamp" not in table.columns:
        return [math.nan] * len(table)
    out: list[float] = []
    for cell in table["timestamp"].tolist():
        out.append(_seconds(cell))
    return out


def _seconds(cell: Any) -> float:
    import pandas as pd

    if cell is None:
        return math.nan
    if isinstance(cell, int | float):
        return float(cell)
    text = str(cell).strip()
    number = _float(text)
    if number is not None:
        return number if math.isfinite(number) else math.nan
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return math.nan
    if stamp is pd.NaT:
        return math.nan
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float((stamp - pd.Timestamp(0, tz="UTC")).total_seconds())


def newest(table: pd.DataFrame, candidates: Sequence[int] | None = None) -> int:
    """Position of the newest row among ``candidates`` (default: all); ties: the later row.

    Rows without a readable timestamp count as older than any that has one.
    """
    rows = list(range(len(table))) if candidates is None else list(candidates)
    keys = timestamps(table)
    known = [i for i in rows if not math.isnan(keys[i])]
    if not known:
        return rows[-1]
    best = max(keys[i] for i in known)
    return [i for i in known if keys[i] == best][-1]


def pick(board: Leaderboard, wanted: str | None) -> int:
    """``--gates-eval-row``: the row whose run_id (else label) is ``wanted``; else newest."""
    table = board.table
    if wanted is None:
        return newest(table)
    for column in ("run_id", "label"):
        if column in table.columns:
            rows = [i for i, v in enumerate(table[column].tolist()) if v == wanted]
            if rows:
                return newest(table, rows)
    raise GateInputError(board.path, f"no row has run_id or label {wanted!r}")


def find_row(table: pd.DataFrame, *, run_ids: Sequence[str],
             config: str | None) -> int | None:
    """Position of *this* run's row, or None when no row can be said to be it.

    For each id in ``run_ids`` in order: a row whose ``run_id`` is it; else the one row
    whose ``run`` or ``train_wandb_run`` is it (several such rows, say ``_small`` and
    ``_full`` of one orchestrator run, are ambiguous and give nothing). Then the one row
    whose ``config`` path is ``config``. Never "the newest row" of someone else.
    """
    def rows(column: str, value: str) -> list[int]:
        if column not in table.columns:
            return []
        return [i for i, v in enumerate(table[column].tolist()) if v is not None
                and str(v) == value]

    for run_id in [r for r in run_ids if r]:
        exact = rows("run_id", run_id)
        if exact:
            return newest(table, exact)
        tagged = sorted(set(rows("run", run_id)) | set(rows("train_wandb_run", run_id)))
        if len(tagged) == 1:
            return tagged[0]
    if config and "config" in table.columns:
        same = [i for i, v in enumerate(table["config"].tolist())
                if v is not None and same_path(str(v), config)]
        if len(same) == 1:
            return same[0]
    return None


def same_path(cell: str, config: str) -> bool:
    """``cell`` (as written, often relative) names the file ``config``."""
    if cell == config:
        return True
    written, given = PurePath(cell).parts, PurePath(config).parts
    if not written or len(written) > len(given):
        return False
    return given[len(given) - len(written):] == written and ".." not in written


def row_metrics(board: Leaderboard, position: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row's ``metric:`` cells (as numbers; a text cell is bad input) and ``extra:``."""
    text = board.text.iloc[position]
    typed = board.row(position)
    run_id = typed.get("run_id")
    metrics: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for column, value in typed.items():
        if column.startswith("metric:"):
            name = column.removeprefix("metric:")
            cell = str(text[column])
            if cell in _BLANK:
                continue  # a missing value; the required-metric check reports it
            if _float(cell) is None:
                raise GateInputError(board.path, f"row {run_id!r}: metric {name!r} is not a "
                                                 f"number: {cell!r}")
            metrics[name] = float(cell)
        elif column.startswith("extra:"):
            extra[column.removeprefix("extra:")] = value
    return metrics, extra
