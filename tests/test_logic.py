"""Pure gate logic: direct cases and Hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gates import logic
from gates.model import Outcome, Status
from gates.policy import Policy, base_name

POLICY = Policy()
values = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


def test_exact_ten_percent_boundary_passes_and_just_beyond_fails() -> None:
    assert logic.regression("nrmse", 1.1, 1.0, POLICY).status == Status.PASS
    assert logic.regression("nrmse", 1.1000001, 1.0, POLICY).status == Status.FAIL


def test_improvement_is_reported_beyond_five_percent() -> None:
    assert logic.regression("nrmse", 0.94, 1.0, POLICY).status == Status.IMPROVED
    assert logic.regression("nrmse", 0.96, 1.0, POLICY).status == Status.PASS


def test_direction_is_respected_for_higher_is_better() -> None:
    assert logic.regression("psnr", 30.0, 40.0, POLICY).status == Status.FAIL
    assert logic.regression("psnr", 50.0, 40.0, POLICY).status == Status.IMPROVED
    assert POLICY.direction("nrmse@10") == "lower"
    assert POLICY.direction("field/pearson_r") == "higher"
    assert POLICY.direction("mystery") is None
    assert base_name("field/nrmse@10") == "nrmse"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_never_passes(bad: float) -> None:
    assert logic.regression("nrmse", bad, 1.0, POLICY).status == Status.FAIL
    assert logic.ceiling("bc_violation", bad, 1.0).status == Status.FAIL
    assert logic.spike("bc_violation", bad, 0.1, 1.5, POLICY).status == Status.FAIL
    assert logic.promotion({"nrmse": bad}, {"nrmse": 1.0}, [], POLICY).status == Status.FAIL


def test_missing_metric_fails() -> None:
    out = logic.regression("nrmse", None, 1.0, POLICY)
    assert out.status == Status.FAIL and "missing" in out.message


def test_no_baseline_passes_unless_strict() -> None:
    assert logic.regression("nrmse", 1.0, None, POLICY).status == Status.NO_BASELINE
    assert logic.regression("nrmse", 1.0, None, POLICY, strict=True).status == Status.FAIL


def test_physics_ceiling_and_spike_defaults() -> None:
    assert logic.ceiling("conservation_gap", 5.0, 5.0).status == Status.PASS
    assert logic.ceiling("conservation_gap", 5.01, 5.0).status == Status.FAIL
    assert logic.spike("conservation_gap", 0.2, 0.1, 2.0, POLICY).status == Status.PASS
    assert logic.spike("conservation_gap", 0.2001, 0.1, 2.0, POLICY).status == Status.FAIL


def test_promotion_requires_margin_clean_gates_and_no_worse_physics() -> None:
    champ = {"nrmse": 1.0, "bc_violation": 0.1}
    assert logic.promotion({"nrmse": 0.98, "bc_violation": 0.1}, champ, [],
                           POLICY).status == Status.PASS
    assert logic.promotion({"nrmse": 0.995, "bc_violation": 0.1}, champ, [],
                           POLICY).status == Status.FAIL
    worse_physics = logic.promotion({"nrmse": 0.9, "bc_violation": 0.11}, champ, [], POLICY)
    assert worse_physics.status == Status.FAIL and "bc_violation" in worse_physics.message
    failed = Outcome("physics/x/ceiling", "physics", "x", Status.FAIL)
    blocked = logic.promotion({"nrmse": 0.9, "bc_violation": 0.1}, champ, [failed], POLICY)
    assert blocked.status == Status.FAIL and "physics/x/ceiling" in blocked.message
    assert logic.promotion({"nrmse": 0.9}, None, [], POLICY).status == Status.NO_BASELINE


@given(baseline=values, better=values, worse=values)
def test_a_worse_value_never_passes_where_a_better_one_fails(
        baseline: float, better: float, worse: float) -> None:
    lo, hi = sorted((better, worse))
    for metric, (good, bad) in (("nrmse", (lo, hi)), ("psnr", (hi, lo))):
        good_out = logic.regression(metric, good, baseline, POLICY)
        bad_out = logic.regression(metric, bad, baseline, POLICY)
        assert not (bad_out.passed and not good_out.passed)


@given(baseline=values, factor=st.floats(min_value=0.0, max_value=3.0))
def test_verdict_matches_the_ten_percent_rule(baseline: float, factor: float) -> None:
    current = baseline * factor
    out = logic.regression("mse", current, baseline, POLICY)
    expected_fail = current > baseline + max(0.10 * baseline, 1e-12)
    assert (out.status == Status.FAIL) == expected_fail


@given(scale=st.floats(min_value=1e-3, max_value=1e3), baseline=values, current=values)
def test_scaling_both_values_changes_no_verdict(scale: float, baseline: float,
                                                current: float) -> None:
    policy = Policy(abs_tolerance=0.0)
    a = logic.regression("nrmse", current, baseline, policy).status
    b = logic.regression("nrmse", current * scale, baseline * scale, policy).status
    ratio = current / baseline - 1
    if abs(abs(ratio) - 0.10) > 1e-9 and abs(abs(ratio) - 0.05) > 1e-9:
        assert a == b


@pytest.mark.parametrize(("baseline", "current"), [(0.3, 0.33), (0.7, 0.77), (0.6, 0.66),
                                                   (0.1, 0.11), (3e-5, 3.3e-5)])
def test_exactly_ten_percent_worse_passes_for_any_baseline(baseline: float,
                                                          current: float) -> None:
    assert logic.regression("nrmse", current, baseline, POLICY).status == Status.PASS
    assert logic.regression("nrmse", current * 1.0001, baseline, POLICY).status == Status.FAIL


def test_evidence_cannot_waive_a_regression_past_the_hard_limit() -> None:
    waived = logic.regression("nrmse", 1.25, 1.0, POLICY, regressed=False)
    assert waived.status == Status.PASS and "not supported by the evidence" in waived.message
    hard = logic.regression("nrmse", 1.31, 1.0, POLICY, regressed=False)
    assert hard.status == Status.FAIL and "whatever the noise" in hard.message


def test_a_policy_overrides_one_ceiling_and_keeps_the_others() -> None:
    from gates.policy import policy_from_mapping

    policy = policy_from_mapping({"physics": {"ceilings": {"conservation_gap": 3.0},
                                              "spike_factors": {"bc_violation": 2.0}}}, "p")
    assert policy.ceilings == {"conservation_gap": 3.0, "bc_violation": 1.0,
                               "negativity_penalty": 0.5}
    assert policy.spike_factors == {"conservation_gap": 2.0, "bc_violation": 2.0}
