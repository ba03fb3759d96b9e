"""Reading an evaluation: the report in any of its three formats, and its per-sample sidecar.

Every problem becomes a :class:`GateInputError` naming the file, so the session ends with
one clear line instead of a traceback.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gates.errors import GateInputError
from gates.model import Evaluation
from gates.policy import LOWER_IS_BETTER, base_name

SAMPLE_ID_KEY = "sample_id"


def load_evaluation(path: Path, *, row: str | None = None,
                    samples: Path | None = None) -> Evaluation:
    """Read a MetricReport JSON, a flat JSON or a leaderboard CSV, plus its sidecar."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GateInputError(path, f"cannot read the evaluation report ({exc.strerror})") from None
    if path.suffix.lower() == ".csv":
        metrics, extra, picked = _from_leaderboard(path, raw, row)
        evaluation = Evaluation(path, metrics, extra, format="leaderboard", row=picked)
    else:
        if row is not None:
            raise GateInputError(path, "--eval-row applies to a leaderboard CSV only")
        metrics, extra, fmt = _from_json(path, raw)
        evaluation = Evaluation(path, metrics, extra, format=fmt)
    evaluation.sha256 = hashlib.sha256(raw).hexdigest()
    sidecar = samples or path.with_name(f"{path.stem}_samples.npz")
    if samples is not None or sidecar.exists():
        evaluation.samples, evaluation.sample_ids = load_samples(sidecar)
        evaluation.samples_path = sidecar
    return evaluation


def _from_json(path: Path, raw: bytes) -> tuple[dict[str, float], dict[str, Any], str]:
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_constant)
    except UnicodeDecodeError:
        raise GateInputError(path, "report is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise GateInputError(path, f"report is not valid JSON: {exc.msg} at line "
                                   f"{exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise GateInputError(path, f"report must be a JSON object, got {type(data).__name__}")
    if "metrics" in data:
        metrics = data["metrics"]
        if not isinstance(metrics, dict):
            raise GateInputError(path, f'"metrics" must be a mapping of name to number, '
                                       f"got {type(metrics).__name__}")
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise GateInputError(path, '"extra" must be a mapping')
        return check_metrics(path, metrics), dict(extra), "metric-report"
    return check_metrics(path, data), {}, "flat"


def _constant(name: str) -> float:
    # Python's json accepts NaN/Infinity; keep them as floats so the gate fails on them.
    return float(name.replace("Infinity", "inf"))


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
        number = float(value)
        if math.isfinite(number) and number < 0 and base_name(name) in LOWER_IS_BETTER:
            raise GateInputError(path, f"metric {name!r} is an error metric and cannot be "
                                       f"negative, got {number!r}")
        out[str(name)] = number
    return out


def _from_leaderboard(path: Path, raw: bytes, row: str | None
                      ) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise GateInputError(path, "leaderboard CSV is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise GateInputError(path, "leaderboard CSV is empty") from None
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise GateInputError(path, f"leaderboard CSV has duplicate columns: {', '.join(dupes)}")
    if "run_id" not in header:
        raise GateInputError(path, "leaderboard CSV has no run_id column")
    rows: list[dict[str, str]] = []
    try:
        for number, cells in enumerate(reader, start=2):
            if not any(cells):
                continue
            if len(cells) != len(header):
                raise GateInputError(path, f"line {number} has {len(cells)} cells, "
                                           f"the header has {len(header)}")
            rows.append(dict(zip(header, cells, strict=True)))
    except csv.Error as exc:
        raise GateInputError(path, f"leaderboard CSV is malformed: {exc}") from None
    if not rows:
        raise GateInputError(path, "leaderboard CSV has no rows")
    if row is None:
        picked = max(rows, key=lambda r: r.get("timestamp", ""))
    else:
        matches = [r for r in rows if row in (r.get("run_id"), r.get("label"))]
        if not matches:
            raise GateInputError(path, f"no row has run_id or label {row!r}")
        picked = matches[-1]
    metrics: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for column, cell in picked.items():
        if column.startswith("metric:"):
            name = column.removeprefix("metric:")
            if cell.strip() == "":
                continue  # a missing value; the required-metric check reports it
            try:
                metrics[name] = float(cell)
            except ValueError:
                raise GateInputError(path, f"row {picked['run_id']!r}: metric {name!r} is "
                                           f"not a number: {cell!r}") from None
        elif column.startswith("extra:"):
            extra[column.removeprefix("extra:")] = _typed(cell)
    extra.setdefault("run_id", picked["run_id"])
    if picked.get("label"):
        extra.setdefault("label", picked["label"])
    return check_metrics(path, metrics), extra, dict(picked)


def _typed(cell: str) -> Any:
    if cell == "":
        return None
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        return cell


def load_samples(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Per-sample vectors from an npz, refusing pickled objects (never unpickled)."""
    vectors: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                try:
                    vectors[key] = np.asarray(data[key])
                except ValueError:
                    raise GateInputError(path, f"array {key!r} holds pickled Python objects; "
                                               "refused (only plain numeric arrays are read)"
                                         ) from None
    except GateInputError:
        raise
    except FileNotFoundError:
        raise GateInputError(path, "per-sample sidecar not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise GateInputError(path, f"not a readable .npz file ({exc})") from None
    ids = vectors.pop(SAMPLE_ID_KEY, None)
    lengths = {k: v.shape for k, v in vectors.items()}
    for key, vec in vectors.items():
        if vec.ndim != 1 or not np.issubdtype(vec.dtype, np.number) or vec.dtype == np.bool_:
            raise GateInputError(path, f"array {key!r} must be a 1-D numeric vector, "
                                       f"got shape {vec.shape} dtype {vec.dtype}")
    broken = {k: int(np.count_nonzero(~np.isfinite(v))) for k, v in vectors.items()
              if not np.all(np.isfinite(v))}
    if broken:
        listed = ", ".join(f"{k} ({n})" for k, n in sorted(broken.items()))
        raise GateInputError(path, f"per-sample vectors hold non-finite values: {listed}")
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}={s[0]}" for k, s in lengths.items())
        raise GateInputError(path, f"per-sample vectors differ in length: {listed}")
    if ids is not None:
        n = next(iter(lengths.values()))[0] if lengths else len(ids)
        if ids.ndim != 1 or len(ids) != n:
            raise GateInputError(path, f"{SAMPLE_ID_KEY} must be a vector of length {n}")
        if len(np.unique(ids)) != len(ids):
            raise GateInputError(path, f"{SAMPLE_ID_KEY} holds duplicate ids")
    return {k: v.astype(np.float64) for k, v in vectors.items()}, ids

