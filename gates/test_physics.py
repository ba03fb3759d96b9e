"""Physics gates: conservation, boundary conditions and positivity stay under their
ceilings and do not spike against the champion."""

from collections.abc import Callable

import pytest

from gates.model import Outcome


@pytest.mark.physics
def test_physics(physics_gate: Outcome, gate_check: Callable[..., Outcome]) -> None:
    gate_check(physics_gate)
