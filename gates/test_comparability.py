"""Comparability gate: champion and challenger were evaluated on the same thing.

Rule (``gates.logic.comparability``): for each ``comparability.keys`` entry (default
``dataset, split, resolution, grid, horizon, rollout_steps, pde, task``) that both reports
state in their ``extra``, and for the field arrays' spatial shape and field-metric
definitions, the values must agree; otherwise ``incomparable`` and the verdict is
``error`` (no other gate can be trusted). Different sample counts alone stay comparable.
"""

from gates.checks import enforce
from gates.model import Outcome


def test_comparability(comparability_gate: Outcome) -> None:
    enforce(comparability_gate)
