"""Which axis of the arrays is what, and the geometry the kernels derive from it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from gates.errors import GateInputError

__all__ = ["DEFAULT_LAYOUT", "FieldLayout", "Plan", "canonical", "make_plan"]

_REMOVED = {
    "boundary": "bc_violation now follows universal-simulator (error against the target at "
                "the first and last grid point); there is no boundary kind to choose",
    "dirichlet_value": "bc_violation no longer compares with a Dirichlet value",
    "nonnegative": "negativity_penalty is now always computed, as universal-simulator does",
}


@dataclass(frozen=True)
class FieldLayout:
    """Axes of the arrays, (sample, time, space..., channel) by default, and conventions.

    ``time_axis``/``channel_axis`` may be None (no such axis); every axis not named is
    spatial. ``initial_step``: PDEBench's argument of that name, the number of leading
    time steps (context frames) its metrics leave out; 0 (the default) keeps them all.
    The Well's and universal-simulator's metrics always use every time step.
    """

    sample_axis: int = 0
    time_axis: int | None = 1
    channel_axis: int | None = -1
    initial_step: int = 0

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        """First invalid value, worded for the user, or None."""

        def is_int(v: object) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)

        if not is_int(self.sample_axis):
            return f"sample_axis must be an integer, got {self.sample_axis!r}"
        for name in ("time_axis", "channel_axis"):
            v = getattr(self, name)
            if v is not None and not is_int(v):
                return f"{name} must be an integer or null, got {v!r}"
        named = [a for a in (self.sample_axis, self.time_axis, self.channel_axis) if a is not None]
        if len(set(named)) != len(named):
            return f"sample/time/channel axes must differ, got {named}"
        if not is_int(self.initial_step) or self.initial_step < 0:
            return f"initial_step must be a non-negative integer, got {self.initial_step!r}"
        return None

    @classmethod
    def from_policy(cls, table: Mapping[str, Any], path: str) -> FieldLayout:
        """Build from a policy table (keys as the fields); bad input -> GateInputError(path)."""
        if not isinstance(table, Mapping):
            raise GateInputError(path, f"field layout must be a table, got {type(table).__name__}")
        removed = sorted(str(k) for k in table if k in _REMOVED)
        if removed:
            why = "; ".join(f"{k}: {_REMOVED[k]}" for k in removed)
            raise GateInputError(path, f"field layout key(s) {removed} were removed ({why})")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in table if k not in known)
        if unknown:
            raise GateInputError(path, f"unknown field layout key(s) {unknown}; known: {known}")
        try:
            return cls(**dict(table))
        except (TypeError, ValueError) as err:
            raise GateInputError(path, f"field layout: {err}") from err


DEFAULT_LAYOUT = FieldLayout()


@dataclass(frozen=True)
class Plan:
    """Where the layout's axes sit for one array shape."""

    shape: tuple[int, ...]
    sample_axis: int
    time_axis: int | None
    channel_axis: int | None
    space_axes: tuple[int, ...]
    initial_step: int = 0

    @property
    def n_samples(self) -> int:
        return self.shape[self.sample_axis]

    @property
    def n_times(self) -> int:
        return 1 if self.time_axis is None else self.shape[self.time_axis]

    @property
    def n_chan(self) -> int:
        return 1 if self.channel_axis is None else self.shape[self.channel_axis]

    @property
    def space(self) -> tuple[int, ...]:
        return tuple(self.shape[a] for a in self.space_axes)

    @property
    def points(self) -> int:
        return math.prod(self.space)

    @property
    def in_order(self) -> bool:
        """True when the axes already are (sample, time, space..., channel): no transpose."""
        order = [self.sample_axis, self.time_axis, *self.space_axes, self.channel_axis]
        present = [a for a in order if a is not None]
        return present == list(range(len(self.shape)))

    @property
    def face_points(self) -> int:
        """PDEBench's bRMSE divisor: both faces of every axis, shared points counted again."""
        return sum(2 * self.points // n for n in self.space)


def make_plan(shape: tuple[int, ...], layout: FieldLayout, path: str | Path) -> Plan:
    """Resolve (possibly negative) axes against ``shape``; any problem names ``path``."""
    nd = len(shape)

    def norm(ax: int | None, name: str) -> int | None:
        if ax is None:
            return None
        if not -nd <= ax < nd:
            raise GateInputError(path, f"{name}={ax} is out of range for {nd}-d arrays {shape}")
        return ax % nd

    s = norm(layout.sample_axis, "sample_axis")
    t = norm(layout.time_axis, "time_axis")
    c = norm(layout.channel_axis, "channel_axis")
    named = [a for a in (s, t, c) if a is not None]
    if len(set(named)) != len(named):
        raise GateInputError(path, f"layout names the same axis twice for shape {shape}")
    space = tuple(a for a in range(nd) if a not in named)
    if not space:
        raise GateInputError(path, f"no spatial axis left in shape {shape} with this layout")
    assert s is not None
    plan = Plan(tuple(int(n) for n in shape), s, t, c, space, int(layout.initial_step))
    if plan.initial_step >= plan.n_times:
        raise GateInputError(path, f"initial_step={plan.initial_step} leaves no time step of "
                                   f"the {plan.n_times} in shape {shape}")
    return plan


def canonical(x: np.ndarray, plan: Plan) -> np.ndarray:
    """View ``x`` (a sample/time slice in the original axis order) as (S, T, space..., C)."""
    order = [plan.sample_axis]
    if plan.time_axis is not None:
        order.append(plan.time_axis)
    order += plan.space_axes
    if plan.channel_axis is not None:
        order.append(plan.channel_axis)
    y = x.transpose(order)
    if plan.time_axis is None:
        y = y[:, None]
    if plan.channel_axis is None:
        y = y[..., None]
    return y
