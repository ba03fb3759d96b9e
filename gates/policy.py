"""Gate thresholds: the defaults of the contract and a suite's ``policy.toml`` overriding them.

This is the one place where numbers such as "10 % worse fails" live. A suite's policy file
sits in its baseline folder (``baselines/<suite>/policy.toml``) so that thresholds are
reviewed and versioned in git beside the numbers they apply to.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gates.errors import GateInputError
from gates.evidence import CONFIDENT_MARGIN, DEFAULT_CONFIDENCE, DEFAULT_RULE, RULES

#: Error metrics: lower is better. Horizon variants (``nrmse@10``) and ``field/`` names
#: share their base name's direction.
LOWER_IS_BETTER = frozenset(
    {
        "mse", "mae", "rmse", "nrmse", "rel_l2", "max_error", "crmse", "brmse",
        "frmse_low", "frmse_mid", "frmse_high", "vrmse",
        "conservation_gap", "conservation_drift", "bc_violation", "negativity_penalty",
    }
)
#: Score metrics known to be higher-is-better; a policy may add more.
HIGHER_IS_BETTER = frozenset({"psnr", "pearson_r", "ssim", "r2"})
PHYSICS_METRICS = frozenset(
    {"conservation_gap", "conservation_drift", "bc_violation", "negativity_penalty"}
)



def base_name(metric: str) -> str:
    """``field/nrmse@10`` -> ``nrmse``: the name that decides direction and kind."""
    name = metric.split("/")[-1]
    return re.sub(r"@[^@]*$", "", name)


@dataclass(frozen=True)
class Policy:
    """A suite's gate thresholds. Every field has the contract's default."""

    # regression
    tolerance: float = 0.10
    improvement: float = 0.05
    abs_tolerance: float = 1e-12
    tolerances: Mapping[str, float] = field(default_factory=dict)
    higher_is_better: frozenset[str] = HIGHER_IS_BETTER
    lower_is_better: frozenset[str] = frozenset()
    rule: str = DEFAULT_RULE
    hard_limit: float = 3.0  # x tolerance: past it a regression fails whatever the evidence
    confidence: float = DEFAULT_CONFIDENCE
    margin: float = CONFIDENT_MARGIN
    seed: int = 0
    # physics
    ceilings: Mapping[str, float] = field(
        default_factory=lambda: {
            "conservation_gap": 5.0,
            "bc_violation": 1.0,
            "negativity_penalty": 0.5,
        }
    )
    spike_factors: Mapping[str, float] = field(
        default_factory=lambda: {"conservation_gap": 2.0, "bc_violation": 1.5}
    )
    # promotion
    primary_metric: str = "nrmse"
    min_improvement_rel: float = 0.01
    min_improvement_abs: float = 0.0
    # metrics
    optional: frozenset[str] = frozenset()
    ignore: frozenset[str] = frozenset()
    # field metrics layout (passed to gates.fields.FieldLayout.from_policy)
    fields: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None

    def direction(self, metric: str) -> str | None:
        """``"lower"``, ``"higher"`` or None when the direction is unknown (not gated)."""
        for name in (metric, base_name(metric)):
            if name in self.higher_is_better:
                return "higher"
            if name in self.lower_is_better or name in LOWER_IS_BETTER:
                return "lower"
        return None

    def tolerance_for(self, metric: str) -> float:
        return float(self.tolerances.get(metric, self.tolerances.get(base_name(metric),
                                                                      self.tolerance)))

    def is_physics(self, metric: str) -> bool:
        return base_name(metric) in PHYSICS_METRICS


_SCHEMA: dict[str, dict[str, str]] = {
    "regression": {
        "tolerance": "fraction", "improvement": "fraction", "abs_tolerance": "nonneg",
        "tolerances": "fraction-map", "higher_is_better": "names",
        "lower_is_better": "names", "rule": "rule", "confidence": "probability",
        "margin": "nonneg", "seed": "int", "hard_limit": "nonneg",
    },
    "physics": {"ceilings": "nonneg-map", "spike_factors": "nonneg-map"},
    "promotion": {
        "primary_metric": "name", "min_improvement_rel": "fraction",
        "min_improvement_abs": "nonneg",
    },
    "metrics": {"optional": "names", "ignore": "names"},
    "fields": {},
}


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
    """Validate a policy table: unknown keys and negative thresholds are errors."""
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section not in _SCHEMA:
            raise GateInputError(where, f"unknown policy section [{section}] "
                                        f"(known: {', '.join(_SCHEMA)})")
        if not isinstance(table, Mapping):
            raise GateInputError(where, f"[{section}] must be a table")
        if section == "fields":
            values["fields"] = dict(table)
            continue
        for key, value in table.items():
            kind = _SCHEMA[section].get(key)
            if kind is None:
                raise GateInputError(where, f"unknown policy key {section}.{key} "
                                            f"(known: {', '.join(_SCHEMA[section])})")
            values[key] = _check(where, f"{section}.{key}", kind, value)
    defaults = Policy()
    for key in ("ceilings", "spike_factors"):  # a suite overrides each, keeping the rest
        if key in values:
            values[key] = {**getattr(defaults, key), **values[key]}
    if "higher_is_better" in values:
        values["higher_is_better"] = HIGHER_IS_BETTER | values["higher_is_better"]
    if values.get("hard_limit", 1.0) < 1.0:
        raise GateInputError(where, "regression.hard_limit is a multiple of the tolerance "
                                    f"and must be at least 1, got {values['hard_limit']!r}")
    return replace(defaults, **values, path=where)


def _check(where: str, key: str, kind: str, value: Any) -> Any:
    def number(v: Any, name: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise GateInputError(where, f"{name} must be a finite number, got {v!r}")
        if v < 0:
            raise GateInputError(where, f"{name} must not be negative, got {v!r}")
        return float(v)

    if kind == "fraction":
        fraction = number(value, key)
        if fraction > 1.0:
            raise GateInputError(where, f"{key} is a fraction (0.10 means 10 %), got {value!r}")
        return fraction
    if kind == "nonneg":
        return number(value, key)
    if kind == "probability":
        p = number(value, key)
        if not 0.5 <= p < 1.0:
            raise GateInputError(where, f"{key} must be in [0.5, 1), got {value!r}")
        return p
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise GateInputError(where, f"{key} must be an integer, got {value!r}")
        return value
    if kind in ("fraction-map", "nonneg-map"):
        if not isinstance(value, Mapping):
            raise GateInputError(where, f"{key} must be a table of metric = number")
        inner = "fraction" if kind == "fraction-map" else "nonneg"
        return {str(k): _check(where, f"{key}.{k}", inner, v) for k, v in value.items()}
    if kind == "names":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise GateInputError(where, f"{key} must be a list of metric names")
        return frozenset(value)
    if kind == "name":
        if not isinstance(value, str) or not value:
            raise GateInputError(where, f"{key} must be a metric name")
        return value
    if kind == "rule":
        if value not in RULES:
            raise GateInputError(where, f"{key} must be one of {', '.join(RULES)}, "
                                        f"got {value!r}")
        return value
    raise AssertionError(kind)
