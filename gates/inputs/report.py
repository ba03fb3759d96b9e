"""The evaluation report in each format its writers use, read into one :class:`Evaluation`.

- MetricReport JSON ``{"metrics": {...}, "extra": {...} | null}`` (universal-simulator's
  ``MetricReport.to_json``; ``extra`` defaults to null there);
- the Lightning evaluator's variant with ``"details"``: its ``per_sample_<metric>`` lists
  are per-sample vectors exactly like a ``_samples.npz`` sidecar, its ``ttc_step_logs``
  the TTC log, its preview arrays are not read;
- the orchestrator's reused results ``{"reused": true, "metrics_flat": {"metric:<m>": v,
  "extra:<k>": v}}``;
- flat JSON ``{name: number}``;
- the leaderboard CSV (see :mod:`gates.inputs.leaderboard`), one row of it;
- the evaluator's one-row ``<prefix>.csv`` (metric columns, then ``extra_<k>``; told from a
  leaderboard by having neither ``run_id`` nor ``metric:`` columns).

Field metrics (``field/*``) are computed by the gates from ``--gates-arrays``; a report
that brings its own is refused, so no value enters a baseline without being computed here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gates.errors import GateInputError
from gates.inputs import leaderboard
from gates.inputs.files import json_kind, read_json, read_regular
from gates.inputs.samples import check_vectors, load_samples, vectors_from_lists
from gates.inputs.sidecars import discover_sidecars
from gates.model import Evaluation
from gates.policy import base_name

FIELD_PREFIX = "field/"
PER_SAMPLE = "per_sample_"
#: metric -> (the per-sample vector it is derived from, how): the Lightning evaluator's
#: rmse is the root of the mean of its per-sample mse.
DERIVED = {"rmse": ("mse", "rms")}
#: Norms and penalties that are never negative: a negative value marks a broken evaluation.
NON_NEGATIVE = frozenset({
    "mse", "mae", "rmse", "nrmse", "rel_l2", "max_error", "crmse", "brmse", "frmse_low",
    "frmse_mid", "frmse_high", "vrmse", "linf", "conservation_gap", "bc_violation",
    "negativity_penalty"})


def load_evaluation(path: Path, *, row: str | None = None) -> Evaluation:
    """Read the report at ``path`` (any format above) and the sidecars beside it."""
    if path.suffix.lower() == ".csv":
        evaluation, raw = _from_leaderboard(path, row), None
    else:
        if row is not None:
            raise GateInputError(path, "--gates-eval-row applies to a leaderboard CSV only")
        data, raw = read_json(path, "evaluation report")
        evaluation = _from_json(path, data)
    _refuse_field_metrics(path, evaluation.metrics)
    if raw is not None:
        evaluation.sha256 = hashlib.sha256(raw).hexdigest()
    evaluation.sidecars = discover_sidecars(path)
    npz = evaluation.sidecars.get("samples")
    if npz is not None:
        if evaluation.samples:
            raise GateInputError(npz, "per-sample vectors come both from this sidecar and from "
                                      f"the report's details ({path.name}); which are meant is "
                                      "ambiguous: keep one")
        evaluation.samples, evaluation.sample_ids = load_samples(npz)
        evaluation.samples_path = npz
    return evaluation


def _from_json(path: Path, data: Any) -> Evaluation:
    if not isinstance(data, dict):
        raise GateInputError(path, f"the report must be a JSON object, got a JSON "
                                   f"{json_kind(data)}")
    if "metrics_flat" in data:
        if "metrics" in data:
            raise GateInputError(path, 'the report has both "metrics" and "metrics_flat"; which '
                                       "are meant is ambiguous")
        return _reused(path, data)
    if "metrics" in data:
        metrics = data["metrics"]
        if not isinstance(metrics, dict):
            raise GateInputError(path, f'"metrics" must be a mapping of name to number, '
                                       f"got {type(metrics).__name__}")
        extra = data.get("extra")
        if extra is None:
            extra = {}
        if not isinstance(extra, dict):
            raise GateInputError(path, f'"extra" must be a mapping or null, got '
                                       f"{type(extra).__name__}")
        evaluation = Evaluation(path, check_metrics(path, metrics), dict(extra),
                                format="metric-report")
        if "details" in data:
            _details(path, data["details"], evaluation)
        return evaluation
    return Evaluation(path, check_metrics(path, data), {}, format="flat")


def _reused(path: Path, data: dict[str, Any]) -> Evaluation:
    flat = data["metrics_flat"]
    if not isinstance(flat, dict):
        raise GateInputError(path, f'"metrics_flat" must be a mapping, got '
                                   f"{type(flat).__name__}")
    metrics: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in flat.items():
        kind, _, name = str(key).partition(":")
        if kind == "metric" and name:
            metrics[name] = value
        elif kind == "extra" and name:
            extra[name] = value
        else:
            raise GateInputError(path, f"metrics_flat key {key!r} is neither metric:<name> "
                                       "nor extra:<name>")
    evaluation = Evaluation(path, check_metrics(path, metrics), extra, format="reused")
    evaluation.provenance = {k: v for k, v in data.items() if k != "metrics_flat"
                             and (v is None or isinstance(v, str | int | float | bool))}
    return evaluation


def _details(path: Path, details: Any, evaluation: Evaluation) -> None:
    if details is None:
        return
    if not isinstance(details, dict):
        raise GateInputError(path, f'"details" must be a mapping, got {type(details).__name__}')
    evaluation.format = "lightning"
    lists = {k.removeprefix(PER_SAMPLE): v for k, v in details.items()
             if k.startswith(PER_SAMPLE)}
    vectors = vectors_from_lists(path, lists)
    for metric, (source, how) in DERIVED.items():
        if metric in evaluation.metrics and metric not in vectors and source in vectors:
            vectors[metric] = vectors[source]
            evaluation.aggregation[metric] = how
    evaluation.samples = check_vectors(path, vectors) if vectors else {}
    if evaluation.samples:
        evaluation.samples_path = path  # where they came from, as for a sidecar
    logs = details.get("ttc_step_logs")
    if logs is not None:
        if not isinstance(logs, list) or not all(isinstance(e, dict) for e in logs):
            raise GateInputError(path, "details.ttc_step_logs must be a list of step objects")
        evaluation.ttc_logs = logs


def check_metrics(path: Path | str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numbers only: a string or boolean where a number belongs is bad input.

    NaN and infinities are kept: the gates fail on them with the metric named.
    A negative error metric is impossible and marks a broken evaluation.
    """
    out: dict[str, float] = {}
    if not metrics:
        raise GateInputError(path, "report holds no metrics")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise GateInputError(path, f"metric {name!r} must be a number, "
                                       f"got {type(value).__name__} {value!r}")
        try:
            number = float(value)
        except OverflowError:
            raise GateInputError(path, f"metric {name!r} is an integer too large for a "
                                       "number") from None
        if math.isfinite(number) and number < 0 and base_name(name) in NON_NEGATIVE:
            raise GateInputError(path, f"metric {name!r} is an error metric and cannot be "
                                       f"negative, got {number!r}")
        out[str(name)] = number
    return out


def _from_results_csv(path: Path, raw: bytes, written: Any, row: str | None) -> Evaluation:
    """universal-simulator's ``<prefix>.csv``: one row, metric columns, ``extra_<k>``."""
    if row is not None:
        raise GateInputError(path, "--gates-eval-row applies to a leaderboard CSV only (this "
                                   "CSV has no run_id column)")
    if len(written) != 1:
        raise GateInputError(path, f"a results CSV without run_id holds one row, this one "
                                   f"{len(written)}; a leaderboard needs a run_id column")
    metrics: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for column, cell in written.iloc[0].items():
        name = str(column)
        if name.startswith("extra_"):
            extra[name.removeprefix("extra_")] = leaderboard.typed_cell(cell)
        elif leaderboard.typed_cell(cell) is not None:  # a blank or None: a missing value
            metrics[name] = leaderboard.typed_cell(cell)
    evaluation = Evaluation(path, check_metrics(path, metrics), extra, format="results-csv")
    evaluation.sha256 = hashlib.sha256(raw).hexdigest()
    return evaluation


def _refuse_field_metrics(path: Path, metrics: Mapping[str, float]) -> None:
    own = sorted(m for m in metrics if m.startswith(FIELD_PREFIX))
    if own:
        raise GateInputError(path, f"the report brings its own field metrics "
                                   f"({', '.join(own)}); field/* metrics are computed by the "
                                   "gates from --gates-arrays, never taken from a report")


def _from_leaderboard(path: Path, row: str | None) -> Evaluation:
    raw = read_regular(path, "CSV report")
    header, written = leaderboard.read_cells(path, raw, "CSV report")
    if not leaderboard.is_leaderboard(header):
        return _from_results_csv(path, raw, written, row)
    board = leaderboard.read_leaderboard(path, raw)
    position = leaderboard.pick(board, row)
    metrics, extra = leaderboard.row_metrics(board, position)
    picked = board.row(position)
    extra.setdefault("run_id", picked["run_id"])
    if picked.get("label"):
        extra.setdefault("label", picked["label"])
    evaluation = Evaluation(path, check_metrics(path, metrics), extra, format="leaderboard",
                            row=picked)
    evaluation.provenance = {k: picked[k] for k in leaderboard.PROVENANCE_COLUMNS
                             if picked.get(k) is not None}
    evaluation.sha256 = hashlib.sha256(raw).hexdigest()
    return evaluation
