"""The records that flow through the suite: an evaluation, a champion, one outcome per gate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


class Status(StrEnum):
    """What one gate decided (SPEC "Statuses")."""

    PASS = "pass"
    IMPROVED = "improved"  # a pass: better than the champion beyond the improvement margin
    NO_BASELINE = "no_baseline"  # a pass with a notice, unless --gates-strict
    WARN = "warn"  # would fail, but its severity is "warn": reported and alerted, not failing
    FAIL = "fail"
    CHANGED = "changed"  # a failure: direction unknown and it moved beyond the tolerance
    INCOMPARABLE = "incomparable"  # a failure: champion and challenger measured other things
    ERROR = "error"  # bad input
    PROMOTABLE = "promotable"  # the promotion gate's answers: neither decides the verdict
    NOT_PROMOTABLE = "not_promotable"


class Kind(StrEnum):
    REGRESSION = "regression"
    PHYSICS = "physics"
    PROMOTION = "promotion"
    COMPARABILITY = "comparability"
    INPUT = "input"
    CUSTOM = "custom"


#: Statuses that do not fail the verdict. ``not_promotable`` is here because promotion is a
#: separate question (``promotable``), not a failure, unless ``--gates-require-promotion``.
PASSING = frozenset({Status.PASS, Status.IMPROVED, Status.NO_BASELINE, Status.WARN,
                     Status.PROMOTABLE, Status.NOT_PROMOTABLE})


@dataclass(frozen=True)
class Outcome:
    """One gate's verdict with its evidence; plain data so it crosses xdist workers."""

    id: str
    kind: str
    metric: str
    status: Status
    current: float | None = None
    baseline: float | None = None
    change_pct: float | None = None
    threshold: float | None = None
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str = "fail"

    @property
    def passed(self) -> bool:
        return self.status in PASSING

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": str(self.kind), "metric": self.metric,
            "status": str(self.status), "current": json_number(self.current),
            "baseline": json_number(self.baseline), "change_pct": json_number(self.change_pct),
            "threshold": json_number(self.threshold), "severity": self.severity,
            "message": self.message,
            "evidence": {k: json_number(v) for k, v in self.evidence.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            id=str(data["id"]),
            kind=str(data["kind"]),
            metric=str(data["metric"]),
            status=Status(data["status"]),
            current=_opt_float(data.get("current")),
            baseline=_opt_float(data.get("baseline")),
            change_pct=_opt_float(data.get("change_pct")),
            threshold=_opt_float(data.get("threshold")),
            message=str(data.get("message", "")),
            evidence=dict(data.get("evidence") or {}),
            severity=str(data.get("severity", "fail")),
        )


def input_outcome(message: object) -> Outcome:
    """The one outcome of a session whose input was bad: no gate could run."""
    return Outcome("input", Kind.INPUT, "-", Status.ERROR, message=str(message))


def json_number(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass
class Evaluation:
    """What one evaluation run produced, as read from its report and sidecars."""

    path: Path | None
    metrics: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    sample_ids: np.ndarray | None = None
    samples_path: Path | None = None
    sha256: str | None = None
    format: str = "metric-report"
    row: dict[str, Any] | None = None
    bundled: bool = False
    #: metric -> how its per-sample vector relates to the aggregate: "mean" (the vector
    #: averages to it, the default), "rms" (per-sample squared contributions: the aggregate
    #: is the root of their mean) or "max" (the aggregate is their maximum)
    aggregation: dict[str, str] = field(default_factory=dict)
    #: TTC step logs carried inside the report (the Lightning evaluator's details)
    ttc_logs: list[dict[str, Any]] | None = None
    #: sidecar files found beside the report: "samples", "ttc_log", "config", "preview"
    sidecars: dict[str, Path] = field(default_factory=dict)
    #: provenance the report itself states (a leaderboard row's commit, train_wandb_*, ...)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: spatial shape of the prediction/target arrays the field metrics came from
    field_shape: tuple[int, ...] | None = None

    @property
    def run_id(self) -> str | None:
        for source in (self.row or {}, self.extra):
            value = source.get("run_id")
            if value:
                return str(value)
        return None

    @property
    def prefix(self) -> str | None:
        return self.path.stem if self.path else None


@dataclass
class Champion:
    """The baseline version the challenger is compared with."""

    suite: str
    version: int
    metrics: dict[str, float]
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    sample_ids: np.ndarray | None = None
    repeats: dict[str, list[float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: the champion evaluation's ``extra`` (what it was evaluated on: dataset, grid, ...)
    extra: dict[str, Any] = field(default_factory=dict)
    aggregation: dict[str, str] = field(default_factory=dict)
