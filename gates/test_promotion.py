"""Promotion gate: may this challenger replace the champion? (It never decides the verdict.)

Rule (``gates.logic.promotion``): the primary metric (``nrmse`` by default) improves on the
champion by at least the policy's minimum (1 % relative by default; supported by the
per-sample evidence where it exists), no physics metric is worse than the champion's, and
every regression and physics gate passes. The answer is ``promotable`` or
``not_promotable``; the test passes either way unless ``--gates-require-promotion`` (or
``promotion.required``). ``--gates-promote`` then writes a promotable run as the champion.
"""

import pytest

from gates.checks import enforce
from gates.model import Outcome
from gates.plan import Plan


@pytest.mark.promotion
def test_promotion(promotion_gate: Outcome, gate_plan: Plan) -> None:
    enforce(promotion_gate, required=gate_plan.promotion_required)
