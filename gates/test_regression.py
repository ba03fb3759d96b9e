"""Regression gates: no metric meaningfully worse than the champion baseline.

Rule (``gates.logic.regression``): for every metric in the report or the champion, fail
when it is worse than the champion by more than the policy's tolerance (10 % relative by
default, after ``abs_tolerance``); with per-sample vectors on both sides the regression must
also be supported by the noise-aware evidence (``gates.evidence``). A metric whose
direction is neither declared nor inferable from its name is ``changed`` (a failure) when
it moved beyond the tolerance either way. NaN, infinite or missing values fail.
One test per metric: ``test_regression[burgers1d-nrmse]``.
"""

import pytest

from gates.checks import enforce
from gates.model import Outcome


@pytest.mark.regression
def test_regression(regression_gate: Outcome) -> None:
    enforce(regression_gate)
