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
    assert logic.promotion({"nrmse": bad}, {"nrmse": 1.0}, [], POLICY).status == \
        Status.NOT_PROMOTABLE


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
    yes = logic.promotion({"nrmse": 0.98, "bc_violation": 0.1}, champ, [], POLICY)
    assert yes.status == Status.PROMOTABLE and "improves by 2.0 %" in yes.message
    small = logic.promotion({"nrmse": 0.995, "bc_violation": 0.1}, champ, [], POLICY)
    assert small.status == Status.NOT_PROMOTABLE and small.passed
    assert "improves by 0.5 %; at least 1.0% better is required" in small.message
    worse = logic.promotion({"nrmse": 1.004, "bc_violation": 0.1}, champ, [], POLICY)
    assert "nrmse is 0.4 % worse" in worse.message
    worse_physics = logic.promotion({"nrmse": 0.9, "bc_violation": 0.11}, champ, [], POLICY)
    assert worse_physics.status == Status.NOT_PROMOTABLE
    assert "bc_violation" in worse_physics.message
    waived = logic.promotion({"nrmse": 0.9, "bc_violation": 0.11}, champ, [], POLICY,
                             worse_supported={"bc_violation": False})
    assert waived.status == Status.PROMOTABLE
    failed = Outcome("physics/x/ceiling", "physics", "x", Status.FAIL)
    blocked = logic.promotion({"nrmse": 0.9, "bc_violation": 0.1}, champ, [failed], POLICY)
    assert blocked.status == Status.NOT_PROMOTABLE and "physics/x/ceiling" in blocked.message
    assert blocked.evidence["reasons"] == ["physics/x/ceiling is fail"]
    assert logic.promotion({"nrmse": 0.9}, None, [], POLICY).status == Status.PROMOTABLE
    unsupported = logic.promotion({"nrmse": 0.9, "bc_violation": 0.1}, champ, [], POLICY,
                                  improvement_supported=False)
    assert unsupported.status == Status.NOT_PROMOTABLE


def test_promotion_as_the_orchestrator_decides_it() -> None:
    """Absolute 0.01 on nrmse, physics ratios 1.0, a missing metric skips its ratio."""
    policy = Policy(min_improvement_rel=0.0, min_improvement_abs=0.01,
                    max_ratio={"conservation_gap": 1.0, "ece": 1.25})
    champ = {"nrmse": 0.2, "conservation_gap": 6.0}
    assert logic.promotion({"nrmse": 0.185, "conservation_gap": 6.0}, champ, [],
                           policy).status == Status.PROMOTABLE
    assert logic.promotion({"nrmse": 0.195, "conservation_gap": 6.0}, champ, [],
                           policy).status == Status.NOT_PROMOTABLE
    ratio = logic.promotion({"nrmse": 0.1, "conservation_gap": 6.5, "ece": 9.0}, champ, [],
                            policy)
    assert ratio.status == Status.NOT_PROMOTABLE and "exceeds 1 x" in ratio.message
    assert "ece" not in ratio.message  # the champion has no ece: skipped


def test_an_unknown_primary_direction_is_a_usage_error() -> None:
    from gates.errors import GateInputError

    with pytest.raises(GateInputError, match="primary_direction"):
        logic.promotion({"foo": 1.0}, {"foo": 2.0}, [], Policy(primary_metric="foo"))
    declared = Policy(primary_metric="foo", primary_direction="higher")
    assert logic.promotion({"foo": 2.1}, {"foo": 2.0}, [], declared).status == \
        Status.PROMOTABLE


@pytest.mark.parametrize(("name", "direction"), [
    ("vorticity_rmse", "lower"), ("nrmse@10", "lower"), ("field/frmse_high", "lower"),
    ("train_loss", "lower"), ("bc_violation", "lower"), ("rel_l2", "lower"),
    ("psnr", "higher"), ("ssim", "higher"), ("top1_accuracy", "higher"),
    ("pearson_r", "higher"), ("spectral_corr", "higher"), ("foo_index", None),
    ("score_error", None)])
def test_directions_are_inferred_from_names_in_one_place(name: str,
                                                        direction: str | None) -> None:
    from gates.policy import infer_direction

    assert infer_direction(name) == direction
    assert POLICY.direction(name) == direction


def test_an_unknown_direction_is_gated_two_sided() -> None:
    assert logic.regression("foo_index", 30.0, 3.0, POLICY).status == Status.CHANGED
    assert logic.regression("foo_index", 0.3, 3.0, POLICY).status == Status.CHANGED
    assert logic.regression("foo_index", 3.2, 3.0, POLICY).status == Status.PASS
    declared = Policy(higher_is_better=frozenset({"foo_index"}))
    assert logic.regression("foo_index", 30.0, 3.0, declared).status == Status.IMPROVED


def test_a_zero_champion_value_and_abs_tolerance() -> None:
    bad = logic.regression("mse", 0.5, 0.0, POLICY)
    assert bad.status == Status.FAIL and "worse" in bad.message and "passes" not in bad.message
    assert logic.regression("mse", 1e-13, 0.0, POLICY).status == Status.PASS
    # a noise-aware rule saying "regressed" cannot fail a round-off-level gap
    assert logic.regression("mse", 1e-12, 3e-13, POLICY, regressed=True).status == Status.PASS


def test_severity_warn_turns_a_failure_into_a_warning() -> None:
    policy = Policy(severities={"regression": "warn", "nrmse": "fail"})
    warned = logic.apply_severity(logic.regression("mae", 2.0, 1.0, policy), policy)
    assert warned.status == Status.WARN and warned.passed and warned.severity == "warn"
    kept = logic.apply_severity(logic.regression("nrmse", 2.0, 1.0, policy), policy)
    assert kept.status == Status.FAIL


def test_comparability_names_both_values() -> None:
    found = logic.comparability({"grid": 128, "dataset": "b"}, {"grid": 64, "dataset": "b"},
                                ["grid", "dataset", "split"])
    assert [o.status for o in found] == [Status.INCOMPARABLE]
    assert "128" in found[0].message and "64" in found[0].message
    same = logic.comparability({"grid": 64}, {"grid": 64.0}, ["grid"])
    assert same[0].status == Status.PASS


def test_the_verdict_ignores_promotion_and_errors_on_bad_input() -> None:
    ok = Outcome("regression/a", "regression", "a", Status.PASS)
    nope = Outcome("promotion/a", "promotion", "a", Status.NOT_PROMOTABLE)
    assert logic.verdict([ok, nope]) == "pass"
    assert logic.verdict([ok, Outcome("x", "regression", "x", Status.FAIL)]) == "fail"
    assert logic.verdict([ok, Outcome("c", "comparability", "c", Status.INCOMPARABLE)]) == \
        "error"
    assert logic.verdict([]) == "fail"


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
    limit = baseline + max(0.10 * baseline, 1e-12)
    if abs(current - limit) > logic.BOUNDARY_EPS * baseline:  # at the limit: passes, exactly
        assert (out.status == Status.FAIL) == (current > limit)


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


def test_the_evidence_decides_past_the_tolerance() -> None:
    waived = logic.regression("nrmse", 1.25, 1.0, POLICY, regressed=False)
    assert waived.status == Status.PASS and "does not support a regression" in waived.message
    failed = logic.regression("nrmse", 1.25, 1.0, POLICY, regressed=True)
    assert failed.status == Status.FAIL and "passes" not in failed.message


def test_a_policy_overrides_one_ceiling_and_keeps_the_others() -> None:
    from gates.policy import policy_from_mapping

    policy = policy_from_mapping({"physics": {"ceilings": {"conservation_gap": 3.0},
                                              "spike_factors": {"bc_violation": 2.0}}}, "p")
    assert policy.ceilings == {"conservation_gap": 3.0, "bc_violation": 1.0,
                               "negativity_penalty": 0.5}
    assert policy.spike_factors == {"conservation_gap": 2.0, "bc_violation": 2.0}


def test_severity_warn_never_softens_bad_data() -> None:
    policy = Policy(severities={"regression": "warn", "physics": "warn"})
    for outcome in (logic.regression("nrmse", math.nan, 1.0, policy),
                    logic.regression("nrmse", None, 1.0, policy),
                    logic.regression("nrmse", 1.0, None, policy, strict=True),
                    logic.ceiling("conservation_gap", math.inf, 5.0)):
        assert logic.apply_severity(outcome, policy).status == Status.FAIL
    assert logic.apply_severity(logic.ceiling("conservation_gap", 6.0, 5.0), policy).status \
        == Status.WARN
