"""Physics gates: conservation, boundary conditions and positivity.

Rule (``gates.logic.ceiling`` and ``gates.logic.spike``): each physics metric stays at or
under its absolute ceiling (``conservation_gap <= 5``, ``bc_violation <= 1``,
``negativity_penalty <= 0.5`` by default) and does not jump past a multiple of the
champion's value (``conservation_gap <= 2 x``, ``bc_violation <= 1.5 x``).
"""

import pytest

from gates.checks import enforce
from gates.model import Outcome


@pytest.mark.physics
def test_physics(physics_gate: Outcome) -> None:
    enforce(physics_gate)
