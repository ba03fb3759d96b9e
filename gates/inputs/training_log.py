"""Training logs, in the three shapes universal-simulator users have, as one summary per
stage (final loss, best loss, epochs, minutes).

- ``training_log.jsonl`` from its ``TrainingLogger``: one line per epoch,
  ``{"stage", "loss", "epoch", "epoch_time_sec", "best_loss", ...}``, appended across
  runs (only the last run counts: a stage seen before, after another stage, or an epoch
  that does not increase starts a new run);
- JSON lines with W&B-style ``training/<stage>/<metric>`` keys;
- the W&B history CSV that ``scripts/analyze_run.py`` exports (the same keys as columns,
  a blank cell for a value not logged on that row).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gates.inputs.files import InputProblem, decode_text, json_kind, number, read_regular


@dataclass(frozen=True)
class StageSummary:
    """One stage of training; NaN where the log does not say (never 0)."""

    stage: str
    final_loss: float
    best_loss: float
    epochs: float
    minutes: float


@dataclass
class _Stage:
    losses: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    epochs: set[float] = field(default_factory=set)
    steps: set[float] = field(default_factory=set)
    time_s: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    t_first: float = math.inf
    t_last: float = -math.inf
    stamps: int = 0

    def summary(self, name: str) -> StageSummary:
        nan = math.nan
        finite = [v for v in self.losses if math.isfinite(v)]
        best = [v for v in self.best if math.isfinite(v)]
        counted = self.epochs or self.steps
        if self.epoch_seconds:
            minutes = math.fsum(self.epoch_seconds) / 60.0
        elif self.time_s is not None:
            minutes = self.time_s / 60.0
        else:
            minutes = (self.t_last - self.t_first) / 60.0 if self.stamps >= 2 else nan
        return StageSummary(name, self.losses[-1] if self.losses else nan,
                            best[-1] if best else (min(finite) if finite else nan),
                            float(len(counted)) if counted else nan, minutes)


def read_training_log(path: Path) -> list[StageSummary]:
    """Every stage of the log in order of appearance (see the module docstring)."""
    text = decode_text(path, read_regular(path, "training log"), "training log")
    records = _csv_records(path, text) if path.suffix.lower() == ".csv" else \
        _json_records(path, text)
    stages: dict[str, _Stage] = {}
    last_stage: str | None = None
    for _, record in records:
        named = record.get("stage")
        if isinstance(named, str) and named:
            last_stage = _logger_line(stages, named, record, last_stage)
            continue
        _wandb_line(stages, record)
    if not stages:
        raise InputProblem(path, "no stages in the log (neither \"stage\" lines nor "
                                 "training/<stage>/<metric> keys)")
    return [s.summary(name) for name, s in stages.items()]


def _json_records(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputProblem(path, f"invalid JSON ({exc.msg} at column {exc.colno})",
                               lineno) from None
        except RecursionError:
            raise InputProblem(path, "nested too deeply to be read", lineno) from None
        if not isinstance(record, dict):
            raise InputProblem(path, f"expected one JSON object per line, got a JSON "
                                     f"{json_kind(record)}", lineno)
        yield lineno, record


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    import pandas as pd

    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputProblem(path, "the CSV is empty (no header line)", 1) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputProblem(path, f"unreadable CSV ({' '.join(str(exc).split())})") from None
    columns = [str(c) for c in frame.columns]
    for lineno, cells in enumerate(frame.itertuples(index=False, name=None), start=2):
        record: dict[str, Any] = {}
        for column, cell in zip(columns, cells, strict=True):
            text_cell = "" if cell is None else str(cell).strip()
            if text_cell == "":
                continue
            try:
                record[column] = float(text_cell)
            except ValueError:
                record[column] = text_cell
        yield lineno, record


def _logger_line(stages: dict[str, _Stage], name: str, record: dict[str, Any],
                 last: str | None) -> str:
    stage = stages.get(name)
    epoch = number(record.get("epoch"))
    restarted = stage is not None and (
        (last is not None and last != name)
        or (epoch is not None and stage.epochs and epoch <= max(stage.epochs)))
    if restarted:  # a later run appended to the same log: only the last run counts
        stages.clear()
    stage = stages.setdefault(name, _Stage())
    loss, best, seconds = (number(record.get(k)) for k in ("loss", "best_loss",
                                                            "epoch_time_sec"))
    if loss is not None:
        stage.losses.append(loss)
    if best is not None:
        stage.best.append(best)
    if epoch is not None and math.isfinite(epoch):
        stage.epochs.add(epoch)
    if seconds is not None and math.isfinite(seconds):
        stage.epoch_seconds.append(seconds)
    return name


def _wandb_line(stages: dict[str, _Stage], record: dict[str, Any]) -> None:
    seen: set[str] = set()
    for key, value in record.items():
        parts = str(key).split("/", 2)
        if len(parts) < 3 or parts[0] != "training" or not parts[1] or not parts[2]:
            continue
        stage = stages.setdefault(parts[1], _Stage())
        seen.add(parts[1])
        value_number = number(value)
        if value_number is None:
            continue
        metric = parts[2]
        if metric == "loss":
            stage.losses.append(value_number)
        elif metric == "best_loss":
            stage.best.append(value_number)
        elif metric == "epoch" and math.isfinite(value_number):
            stage.epochs.add(value_number)
        elif metric == "step" and math.isfinite(value_number):
            stage.steps.add(value_number)
        elif metric in ("time", "duration") and math.isfinite(value_number):
            stage.time_s = value_number if stage.time_s is None else max(stage.time_s,
                                                                         value_number)
    stamp = number(record.get("_timestamp"))
    if stamp is None:
        stamp = number(record.get("_runtime"))
    epoch = number(record.get("epoch"))
    for name in seen:
        stage = stages[name]
        if stamp is not None and math.isfinite(stamp):
            stage.t_first, stage.t_last = min(stage.t_first, stamp), max(stage.t_last, stamp)
            stage.stamps += 1
        if epoch is not None and math.isfinite(epoch):
            stage.epochs.add(epoch)
