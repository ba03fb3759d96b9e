"""Physics gates: conservation, boundary conditions and positivity stay under their
ceilings and do not spike against the champion."""

import pytest

from gates.model import Outcome


@pytest.mark.physics
def test_physics(physics_gate: Outcome, gate_check) -> None:  # noqa: ANN001
    gate_check(physics_gate)
