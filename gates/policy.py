"""Gate thresholds: the contract's defaults and a suite's ``policy.toml`` overriding them.

This is the one place where numbers such as "10 % worse fails" live, and the one place that
decides a metric's direction. A suite's policy file sits in its baseline folder
(``baselines/<suite>/policy.toml``) so that thresholds are reviewed and versioned in git
beside the numbers they apply to.

The file's schema is the pydantic declaration below (``PolicyFile``); :class:`Policy` is the
flat, frozen record the gate logic reads.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gates.errors import GateInputError
from gates.evidence import CONFIDENT_MARGIN, DEFAULT_CONFIDENCE, DEFAULT_RULE, RULES

#: Name fragments that make a metric error-like (lower is better) or score-like (higher is
#: better) when the policy does not declare its direction. A name matching both families,
#: or neither, has no known direction and is gated two-sided (status ``changed``).
LOWER_HINTS = ("mse", "mae", "rmse", "err", "loss", "gap", "violation", "penalty", "drift",
               "linf", "l1", "l2", "max_error")
HIGHER_HINTS = ("psnr", "ssim", "acc", "r2", "pearson", "corr", "score")
PHYSICS_METRICS = frozenset({"conservation_gap", "bc_violation", "negativity_penalty"})
DEFAULT_CEILINGS = {"conservation_gap": 5.0, "bc_violation": 1.0, "negativity_penalty": 0.5}
DEFAULT_SPIKES = {"conservation_gap": 2.0, "bc_violation": 1.5}
#: ``extra`` keys whose values must agree between champion and challenger
DEFAULT_COMPARABILITY = ("dataset", "split", "resolution", "grid", "horizon", "rollout_steps",
                         "pde", "task")
GATE_KINDS = ("regression", "physics", "promotion", "custom", "comparability")
Severity = Literal["fail", "warn"]


@functools.cache  # asked about every metric by several rules: 11 times a gate
def base_name(metric: str) -> str:
    """``field/nrmse@10`` -> ``nrmse``: the name that decides direction and kind."""
    name = metric.split("/")[-1]
    return re.sub(r"@[^@]*$", "", name)


def infer_direction(metric: str) -> str | None:
    """``"lower"`` or ``"higher"`` from well-known name fragments, else None (unknown)."""
    name = base_name(metric).lower()
    lower = any(hint in name for hint in LOWER_HINTS)
    higher = any(hint in name for hint in HIGHER_HINTS)
    if lower == higher:
        return None
    return "lower" if lower else "higher"


# -- the file's schema --------------------------------------------------------------------

def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


Number = Annotated[float, BeforeValidator(_no_bool), Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, BeforeValidator(_no_bool), Field(ge=0, le=1, allow_inf_nan=False)]
Names = frozenset[Annotated[str, Field(min_length=1)]]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegressionSection(_Section):
    tolerance: Fraction = 0.10
    improvement: Fraction = 0.05
    abs_tolerance: Number = 1e-12
    tolerances: dict[str, Fraction] = {}
    higher_is_better: Names = frozenset()
    lower_is_better: Names = frozenset()
    rule: str = DEFAULT_RULE
    confidence: Annotated[float, BeforeValidator(_no_bool), Field(ge=0.5, lt=1)] = \
        DEFAULT_CONFIDENCE
    margin: Number = CONFIDENT_MARGIN
    seed: Annotated[int, BeforeValidator(_no_bool)] = 0


class PhysicsSection(_Section):
    ceilings: dict[str, Number] = {}
    spike_factors: dict[str, Number] = {}
    default_ceilings: bool = True  # false: only the ceilings and spikes named here apply


class PromotionSection(_Section):
    primary_metric: Annotated[str, Field(min_length=1)] = "nrmse"
    primary_direction: Literal["lower", "higher"] | None = None
    min_improvement_rel: Fraction = 0.01
    min_improvement_abs: Number = 0.0
    required: bool = False  # "not promotable" fails the session, as --gates-require-promotion
    max_ratio: dict[str, Number] = {}  # metric may not exceed ratio x champion (missing: skip)
    physics_no_worse: bool = True  # no physics metric (supported) worse than the champion's


class MetricsSection(_Section):
    optional: Names = frozenset()
    ignore: Names = frozenset()


class ComparabilitySection(_Section):
    keys: tuple[str, ...] = DEFAULT_COMPARABILITY


class PolicyFile(_Section):
    regression: RegressionSection = RegressionSection()
    physics: PhysicsSection = PhysicsSection()
    promotion: PromotionSection = PromotionSection()
    metrics: MetricsSection = MetricsSection()
    comparability: ComparabilitySection = ComparabilitySection()
    severity: dict[str, Severity] = {}  # a gate kind or a metric -> "fail" | "warn"
    fields: dict[str, Any] = {}  # layout of --gates-arrays (gates.fields.FieldLayout)


# -- what the gates read -------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """A suite's gate thresholds, flat. Every field has the contract's default."""

    tolerance: float = 0.10
    improvement: float = 0.05
    abs_tolerance: float = 1e-12
    tolerances: Mapping[str, float] = field(default_factory=dict)
    higher_is_better: frozenset[str] = frozenset()
    lower_is_better: frozenset[str] = frozenset()
    rule: str = DEFAULT_RULE
    confidence: float = DEFAULT_CONFIDENCE
    margin: float = CONFIDENT_MARGIN
    seed: int = 0
    ceilings: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_CEILINGS))
    spike_factors: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPIKES))
    primary_metric: str = "nrmse"
    primary_direction: str | None = None
    min_improvement_rel: float = 0.01
    min_improvement_abs: float = 0.0
    promotion_required: bool = False
    max_ratio: Mapping[str, float] = field(default_factory=dict)
    physics_no_worse: bool = True
    optional: frozenset[str] = frozenset()
    ignore: frozenset[str] = frozenset()
    comparability_keys: tuple[str, ...] = DEFAULT_COMPARABILITY
    severities: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None

    def direction(self, metric: str) -> str | None:
        """``"lower"``, ``"higher"``, or None when unknown (then gated two-sided)."""
        for name in (metric, base_name(metric)):
            if name in self.higher_is_better:
                return "higher"
            if name in self.lower_is_better:
                return "lower"
        return infer_direction(metric)

    def primary(self) -> tuple[str, str]:
        """The promotion metric and its direction; an unknown direction is a usage error."""
        direction = self.primary_direction or self.direction(self.primary_metric)
        if direction is None:
            raise GateInputError(self.path, f"promotion.primary_metric "
                                 f"{self.primary_metric!r} has no known direction: set "
                                 "promotion.primary_direction (\"lower\" or \"higher\")")
        return self.primary_metric, direction

    def tolerance_for(self, metric: str) -> float:
        return float(self.tolerances.get(metric, self.tolerances.get(base_name(metric),
                                                                      self.tolerance)))

    def is_physics(self, metric: str) -> bool:
        return base_name(metric) in PHYSICS_METRICS

    def severity(self, kind: str, metric: str) -> str:
        """``"warn"`` or ``"fail"``: a metric's own entry beats its gate kind's."""
        for key in (metric, base_name(metric), str(kind)):
            if key in self.severities:
                return self.severities[key]
        return "fail"


def load_policy(path: Path) -> Policy:
    """Read ``policy.toml``; a missing file means the defaults."""
    if not path.exists():
        return Policy()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise GateInputError(path, f"policy file is not valid TOML ({exc})") from None
    return policy_from_mapping(data, str(path))


def policy_from_mapping(data: Mapping[str, Any], where: str) -> Policy:
    """Validate a policy table against :class:`PolicyFile`; the first problem is the error."""
    try:
        parsed = PolicyFile.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "policy"
        problem = first["msg"]
        if first["type"] == "extra_forbidden":
            problem = "unknown policy key"
        raise GateInputError(where, f"{key}: {problem} (got {first.get('input')!r})") from None
    reg, phys, prom = parsed.regression, parsed.physics, parsed.promotion
    if reg.rule not in RULES:
        raise GateInputError(where, f"regression.rule must be one of {', '.join(RULES)}, "
                                    f"got {reg.rule!r}")
    for metric in parsed.severity:
        if not metric:
            raise GateInputError(where, "severity: empty metric name")
    ceilings = {**(DEFAULT_CEILINGS if phys.default_ceilings else {}), **phys.ceilings}
    spikes = {**(DEFAULT_SPIKES if phys.default_ceilings else {}), **phys.spike_factors}
    return Policy(
        tolerance=reg.tolerance, improvement=reg.improvement, abs_tolerance=reg.abs_tolerance,
        tolerances=dict(reg.tolerances), higher_is_better=reg.higher_is_better,
        lower_is_better=reg.lower_is_better, rule=reg.rule,
        confidence=reg.confidence, margin=reg.margin, seed=reg.seed,
        ceilings=ceilings, spike_factors=spikes,
        primary_metric=prom.primary_metric, primary_direction=prom.primary_direction,
        min_improvement_rel=prom.min_improvement_rel,
        min_improvement_abs=prom.min_improvement_abs, promotion_required=prom.required,
        max_ratio=dict(prom.max_ratio), physics_no_worse=prom.physics_no_worse,
        optional=parsed.metrics.optional, ignore=parsed.metrics.ignore,
        comparability_keys=tuple(parsed.comparability.keys),
        severities=dict(parsed.severity), fields=dict(parsed.fields), path=where,
    )
