"""Regression gates: no metric meaningfully worse than the champion baseline.

One test per metric (``test_regression[burgers1d-nrmse]``); thresholds come from the
suite's policy (``baselines/<suite>/policy.toml``), the logic from ``gates.logic``.
"""

from collections.abc import Callable

import pytest

from gates.model import Outcome


@pytest.mark.regression
def test_regression(regression_gate: Outcome, gate_check: Callable[..., Outcome]) -> None:
    gate_check(regression_gate)
