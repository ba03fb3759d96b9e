"""Promotion gate: the primary metric beats the champion by the policy's margin, every
regression and physics gate passes, and no physics metric is worse than the champion's.
``--promote`` writes the challenger as the new champion when every gate passed."""

from collections.abc import Callable

import pytest

from gates.model import Outcome


@pytest.mark.promotion
def test_promotion(promotion_gate: Outcome, gate_check: Callable[..., Outcome]) -> None:
    gate_check(promotion_gate)
