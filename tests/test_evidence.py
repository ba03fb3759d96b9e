"""Unit tests and properties of gates.evidence: the statistics behind noise-aware verdicts."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gates import evidence as ev
from gates.evidence import (
    DEFAULT_RULE,
    RULES,
    Comparison,
    Evidence,
    Resampling,
    Rule,
    SampleMismatch,
    evidence_line,
    paired_evidence,
    physics_evidence,
    promotion_evidence,
    regression_evidence,
    relative_change,
    repeats_evidence,
    threshold_evidence,
    threshold_regressed,
)

Array = npt.NDArray[np.float64]


def lognormal_pair(
    seed: int, n: int, sigma: float = 0.5, rho: float = 0.8, effect: float = 0.0
) -> tuple[Array, Array]:
    """Correlated per-sample errors, as in the verdict benchmark."""
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    base = np.exp(sigma * z1)
    cur = (1 + effect) * np.exp(sigma * (rho * z1 + math.sqrt(1 - rho**2) * z2))
    return base, cur


def pe(
    base: npt.ArrayLike,
    cur: npt.ArrayLike,
    rule: Rule = DEFAULT_RULE,
    *,
    hib: bool = False,
    seed: int = 0,
    confidence: float = ev.DEFAULT_CONFIDENCE,
    baseline_ids: npt.ArrayLike | None = None,
    current_ids: npt.ArrayLike | None = None,
    abs_tolerance: float = 0.0,
    aggregation: str = "mean",
    n_flips: int | None = None,
) -> Evidence:
    """paired_evidence with the test defaults: 10 % tolerance, lower is better."""
    return paired_evidence(
        base, cur, higher_is_better=hib, threshold=0.10, rule=rule, seed=seed,
        confidence=confidence, baseline_ids=baseline_ids, current_ids=current_ids,
        abs_tolerance=abs_tolerance, aggregation=aggregation, n_resamples=n_flips)


def comparison(metric: str, base: Array, cur: Array, *, hib: bool = False,
               tolerance: float = 0.10, aggregation: str = "mean",
               abs_tolerance: float = 0.0) -> Comparison:
    agg = np.sqrt if aggregation == "rms" else (lambda x: x)
    return Comparison(metric, float(agg(base.mean())), float(agg(cur.mean())), hib, tolerance,
                      abs_tolerance, base, cur, aggregation=aggregation)


# --- the sign-flip design -------------------------------------------------------------


def test_small_designs_enumerate_every_swap() -> None:
    rs = Resampling()
    for n in (2, 5, 12):
        design = rs.subset_sums(n, np.eye(n))  # F @ I = F
        assert design.shape == (2**n, n) and rs.exact(n)
        assert not design[0].any()  # row 0 is the observed data
        assert np.unique(design, axis=0).shape[0] == 2**n


def test_large_designs_are_reproducible_and_shared() -> None:
    x = np.random.default_rng(0).random((40, 3))
    a, b = Resampling(seed=5), Resampling(seed=5)
    assert np.array_equal(a.subset_sums(40, x), b.subset_sums(40, x))
    assert not np.array_equal(a.subset_sums(40, x), Resampling(seed=6).subset_sums(40, x))
    design = a.subset_sums(40, np.eye(40))
    assert design.shape == (ev.DEFAULT_FLIPS, 40) and not design[0].any()
    assert 0.45 < design[1:].mean() < 0.55  # each sample swapped half the time
    assert np.allclose(a.subset_sums(40, x[:, 0]), design @ x[:, 0])


def test_streamed_designs_equal_cached_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(1).random(300)
    cached = Resampling(seed=2).subset_sums(300, x)
    monkeypatch.setattr("gates.stats._CACHE_LIMIT", 10)
    monkeypatch.setattr("gates.stats._BLOCK", 300 * 7)  # blocks that do not divide the rows
    assert np.allclose(Resampling(seed=2).subset_sums(300, x), cached, rtol=1e-13)


# --- against scipy: exact permutation tests and their inversion ------------------------


@pytest.mark.parametrize(("n", "effect"), [(6, 0.3), (9, 0.1), (12, 0.25)])
def test_exact_p_value_is_scipys_paired_permutation_test(n: int, effect: float) -> None:
    base, cur = lognormal_pair(n, n, effect=effect)
    e = pe(base, cur, "significant", confidence=0.9)
    ref = stats.permutation_test((cur, base), lambda x, y, axis: np.sum(x - y, axis=axis),
                                 permutation_type="samples", alternative="greater",
                                 n_resamples=np.inf)
    assert e.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    better = promotion_evidence(comparison("m", base, cur), min_improvement_rel=0.0,
                                confidence=0.9)
    ref_less = stats.permutation_test((cur, base), lambda x, y, axis: np.sum(x - y, axis=axis),
                                      permutation_type="samples", alternative="less",
                                      n_resamples=np.inf)
    assert better.p_value == pytest.approx(ref_less.pvalue, rel=1e-12)


@pytest.mark.parametrize("n", [10, 40])
def test_interval_is_the_inversion_of_the_permutation_test(n: int) -> None:
    """Each end of the 90 % interval is where scipy's test of "ratio = k" turns at 5 %."""
    base, cur = lognormal_pair(n, n, effect=0.1)
    e = pe(base, cur, confidence=0.9)
    assert e.ci_low is not None and e.ci_high is not None

    def p_greater(k: float) -> float:
        # the same swap patterns as the gate: exact for n=10, the gate's design for n=40
        if n <= 12:
            res = stats.permutation_test(
                (cur, k * base), lambda x, y, axis: np.sum(x - y, axis=axis),
                permutation_type="samples", alternative="greater", n_resamples=np.inf)
            return float(res.pvalue)
        order = np.lexsort((np.abs(cur - base), cur + base))
        d = (cur - k * base)[order]
        design = Resampling().subset_sums(n, np.eye(n))
        return float(np.mean(d.sum() - 2 * design @ d >= d.sum()))

    lo = 1 + e.ci_low
    assert p_greater(lo * (1 - 1e-9)) <= 0.05 < p_greater(lo * (1 + 1e-9))


def test_interval_matches_the_delta_method_for_large_n() -> None:
    rng = np.random.default_rng(2)
    n = 3000
    base = rng.normal(10.0, 1.0, n)
    cur = base + rng.normal(0.4, 1.0, n)
    e = pe(base, cur, confidence=0.95)
    ratio = cur.mean() / base.mean()
    se = math.sqrt(((cur - ratio * base) ** 2).sum() / (n * (n - 1))) / base.mean()
    half = stats.norm.ppf(0.975) * se
    assert e.ci_low is not None and e.ci_high is not None
    assert abs(e.ci_low - (ratio - 1 - half)) < 0.08 * half
    assert abs(e.ci_high - (ratio - 1 + half)) < 0.08 * half


def test_p_value_matches_a_t_test_for_large_n() -> None:
    rng = np.random.default_rng(3)
    n = 400
    cur = rng.normal(1.045, 0.5, n)
    e = pe(np.ones(n), cur, "significant")
    p = stats.ttest_1samp(cur - 1.0, 0.0, alternative="greater").pvalue
    assert e.p_value == pytest.approx(p, abs=0.01)
    assert 0.005 < p < 0.2


# --- rules --------------------------------------------------------------------------------


def test_rules_on_a_precise_small_regression() -> None:
    """8 % worse, measured precisely: real but within the 10 % tolerance."""
    rng = np.random.default_rng(5)
    base = rng.lognormal(0, 0.5, 5000)
    cur = base * 1.08 * rng.lognormal(0, 0.01, 5000)
    verdicts = {rule: pe(base, cur, rule).regressed for rule in RULES}
    assert verdicts == {"threshold": False, "confident": False, "significant": True}


def test_rules_on_a_noisy_large_change() -> None:
    """15 % worse on 8 noisy samples: past the tolerance, but not supported by the data."""
    base = np.array([1.0, 2.0, 0.5, 1.5, 3.0, 0.8, 1.2, 2.5])
    noise = np.array([1.9, 0.6, 1.4, 0.7, 1.5, 0.9, 1.2, 1.2])
    cur = base * noise
    cur *= 1.15 * base.mean() / cur.mean()
    e = pe(base, cur)
    assert e.change == pytest.approx(0.15)
    assert not e.regressed and not e.supported
    assert "more samples would decide" in e.note and "passes" in e.note
    assert pe(base, cur, "threshold").regressed


def test_rules_on_a_clear_regression_and_an_improvement() -> None:
    base, cur = lognormal_pair(6, 300, effect=0.3)
    assert all(pe(base, cur, rule).regressed for rule in RULES)
    base, cur = lognormal_pair(6, 300, effect=-0.3)
    assert not any(pe(base, cur, rule).regressed for rule in RULES)


def test_margin_condition_decides_in_the_middle() -> None:
    """Past the tolerance and surely worse, but not surely more than half of it worse."""
    rng = np.random.default_rng(9)
    base = rng.lognormal(0, 0.5, 120)
    cur = base * rng.lognormal(0, 0.35, 120)
    cur *= 1.105 * base.mean() / cur.mean()
    e = pe(base, cur)
    assert e.p_value is not None and e.p_value <= 0.01
    assert e.p_margin is not None and e.p_margin > ev.MARGIN_LEVEL
    assert not e.regressed and "not surely more than 5 % worse" in e.note
    assert pe(base, cur, "significant").regressed


def test_higher_is_better_direction() -> None:
    """Accuracy-like metric: a drop is the regression, and `change` keeps its plain sign."""
    base, cur = lognormal_pair(7, 300, effect=-0.3)
    e = pe(base, cur, hib=True)
    assert e.change < -0.2 and e.regressed
    assert e.p_value is not None and e.p_value < 0.01
    assert "worse" in e.note
    up = pe(cur, base, "significant", hib=True)
    assert up.change > 0 and not up.regressed
    assert up.p_value is not None and up.p_value > 0.9


def test_negative_values_higher_is_better() -> None:
    """Log-likelihoods: -12 is worse than -10, and the sign of `change` says "went down"."""
    base, cur = lognormal_pair(8, 200, effect=0.2)
    e = pe(-base, -cur, hib=True)
    assert e.change == pytest.approx(-0.2, abs=0.05) and e.regressed
    assert e.ci_low is not None and e.ci_high is not None
    assert e.ci_low <= e.change <= e.ci_high < 0
    mirrored = pe(base, cur)
    assert mirrored.ci_low is not None and mirrored.ci_high is not None
    assert (e.ci_low, e.ci_high) == pytest.approx((-mirrored.ci_high, -mirrored.ci_low))


def test_default_rule() -> None:
    assert DEFAULT_RULE == "confident"
    assert ev.CONFIDENT_MARGIN == 0.5 and ev.DEFAULT_CONFIDENCE == 0.99
    assert ev.MARGIN_LEVEL == 0.05


# --- abs_tolerance, zero champions, aggregation kinds ---------------------------------------


def test_round_off_gaps_never_fail() -> None:
    """1e-12 against 3e-13: 230 % worse, supported, but below abs_tolerance."""
    base = np.full(64, 3e-13) * np.linspace(0.9, 1.1, 64)
    cur = base * (1e-12 / 3e-13)
    for rule in RULES:
        assert not pe(base, cur, rule, abs_tolerance=1e-12).regressed
        assert pe(base, cur, rule, abs_tolerance=0.0).regressed
    found = regression_evidence([comparison("mse", base, cur, abs_tolerance=1e-12)])["mse"]
    assert not found.regressed and "passes" in found.note
    assert not threshold_evidence(3e-13, 1e-12, higher_is_better=False, threshold=0.1,
                                  abs_tolerance=1e-12).regressed


def test_relative_change_and_the_threshold_rule_with_a_zero_champion() -> None:
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(0.01, 0.0) == math.inf
    assert relative_change(-0.01, 0.0) == -math.inf
    assert relative_change(1.1, 1.0) == pytest.approx(0.1)
    assert relative_change(-12.0, -10.0) == pytest.approx(-0.2)
    assert threshold_regressed(0.01, 0.0, higher_is_better=False, tolerance=0.1,
                               abs_tolerance=1e-12)
    assert not threshold_regressed(1e-13, 0.0, higher_is_better=False, tolerance=0.1,
                                   abs_tolerance=1e-12)
    assert not threshold_regressed(1.1, 1.0, higher_is_better=False, tolerance=0.1)  # at it
    e = threshold_evidence(0.0, 0.01, higher_is_better=False, threshold=0.1,
                           abs_tolerance=1e-12)
    assert e.regressed and e.change == math.inf
    assert "fails" in e.note and "passes" not in e.note and "champion's value is 0" in e.note
    zeros = regression_evidence([Comparison("gap", 0.0, 0.01, False, 0.1, 1e-12,
                                            np.zeros(8), np.full(8, 0.01))])["gap"]
    assert zeros.method == "threshold-only" and zeros.regressed
    assert "average to 0" in zeros.note


def test_rms_aggregation_compares_root_mean_squares() -> None:
    base, cur = lognormal_pair(10, 200, effect=0.44)  # squared errors 44 % up: rms +20 %
    e = pe(base, cur, aggregation="rms")
    assert e.change == pytest.approx(math.sqrt(cur.mean() / base.mean()) - 1)
    mean_e = pe(base, cur)
    assert e.ci_low == pytest.approx(math.sqrt(1 + mean_e.ci_low) - 1)  # type: ignore[operator]
    assert e.p_value == pytest.approx(mean_e.p_value)
    assert e.regressed
    found = regression_evidence([comparison("rmse", base, cur, aggregation="rms")])["rmse"]
    assert found.method == "paired-sign-flip" and found.change == pytest.approx(e.change)


def test_max_aggregation_and_mismatched_aggregates_fall_back_with_a_reason() -> None:
    base, cur = lognormal_pair(11, 50)
    maxed = Comparison("linf", float(base.max()), float(cur.max()), False, 0.1, 0.0, base, cur,
                       aggregation="max")
    wrong = Comparison("mae", float(base.mean()), 1.5 * float(cur.mean()), False, 0.1, 0.0,
                       base, cur, where="run/x_samples.npz")
    found = regression_evidence([maxed, wrong])
    assert found["linf"].method == "threshold-only"
    assert "max-aggregated" in found["linf"].note
    assert found["mae"].method == "threshold-only" and found["mae"].regressed
    assert "the paired test was not used" in found["mae"].note
    assert "run/x_samples.npz" in found["mae"].note


# --- the session: simultaneous p-values -----------------------------------------------------


def test_copies_of_one_metric_cost_nothing_and_independent_ones_are_adjusted() -> None:
    rng = np.random.default_rng(12)
    n = 40
    base, cur = lognormal_pair(12, n, effect=0.15)
    alone = regression_evidence([comparison("nrmse", base, cur)])["nrmse"]
    copies = regression_evidence([comparison(f"m{i}", base * (i + 1), cur * (i + 1))
                                  for i in range(4)])
    for e in copies.values():
        assert e.p_value == pytest.approx(alone.p_value) and e.adjusted_for == 4
    others = [comparison(f"x{i}", *lognormal_pair(100 + i, n)) for i in range(9)]
    mixed = regression_evidence([comparison("nrmse", base, cur), *others])
    assert alone.p_value is not None and mixed["nrmse"].p_value is not None
    assert alone.p_value < mixed["nrmse"].p_value <= min(1.0, 10 * alone.p_value) + 1e-12
    assert mixed["nrmse"].adjusted_for == 10
    del rng


def test_families_on_other_samples_split_the_level() -> None:
    a = comparison("a", *lognormal_pair(13, 30, effect=0.2))
    b = comparison("b", *lognormal_pair(14, 50, effect=0.2))
    both = regression_evidence([a, b])
    alone = regression_evidence([a])["a"]
    assert both["a"].p_value == pytest.approx(min(1.0, 2 * alone.p_value))  # type: ignore[operator]


def test_mismatched_samples_are_an_error_in_a_session() -> None:
    base, cur = lognormal_pair(15, 10)
    bad = Comparison("nrmse", float(base.mean()), float(cur.mean()), False, 0.1, 0.0, base, cur,
                     baseline_ids=np.arange(10), current_ids=np.arange(10) + 100)
    one_side = Comparison("mse", float(base.mean()), float(cur.mean()), False, 0.1, 0.0, base,
                          cur, baseline_ids=np.arange(10))
    found = regression_evidence([bad, one_side, comparison("ok", base, cur)])
    assert found["nrmse"].error and "missing from current" in found["nrmse"].error
    assert found["mse"].error and "one side only" in found["mse"].error
    assert found["ok"].error is None


def test_a_session_of_a_thousand_metrics_is_fast() -> None:
    """1,000 metrics of 64 samples: under the 0.5 ms per gate of the budget (CPU time, so a
    machine shared with other jobs does not decide it; measured ~0.25 ms)."""
    rng = np.random.default_rng(16)
    comps = [comparison(f"m{i}", *lognormal_pair(int(rng.integers(1 << 30)), 64))
             for i in range(1000)]
    rs = Resampling()
    regression_evidence(comps[:10], resampling=rs)  # the design of 64 samples, drawn once
    start = time.process_time()
    found = regression_evidence(comps, resampling=rs)
    per_gate = (time.process_time() - start) / 1000
    assert len(found) == 1000
    assert per_gate < 1e-3  # slack for a slow CI machine


# --- promotion and physics ------------------------------------------------------------------


def test_promotion_needs_a_supported_improvement() -> None:
    base, cur = lognormal_pair(17, 400, effect=-0.12)
    e = promotion_evidence(comparison("nrmse", base, cur), min_improvement_rel=0.01)
    assert e.question == "improvement" and e.supported and not e.regressed
    assert e.p_value is not None and e.p_value <= 0.01
    same = promotion_evidence(comparison("nrmse", base, base * 0.995),
                              min_improvement_rel=0.01)
    assert not same.supported and "does not meet" in same.note
    noisy = promotion_evidence(comparison("nrmse", *lognormal_pair(18, 12, effect=-0.05)),
                               min_improvement_rel=0.01)
    assert not noisy.supported
    absolute = promotion_evidence(comparison("nrmse", base, cur), min_improvement_rel=0.0,
                                  min_improvement_abs=10.0)
    assert not absolute.supported
    plain = promotion_evidence(Comparison("nrmse", 1.0, 0.9, False, 0.1),
                               min_improvement_rel=0.01)
    assert plain.method == "threshold-only" and plain.supported
    assert "threshold rule decides promotion" in plain.note


def test_physics_blocks_only_when_supported_worse() -> None:
    rng = np.random.default_rng(19)
    base = rng.lognormal(0, 0.6, 32)
    cur = base * rng.lognormal(0, 0.5, 32)
    cur *= 1.003 * base.mean() / cur.mean()
    e = physics_evidence(comparison("conservation_gap", base, cur))
    assert e.change == pytest.approx(0.003)
    assert e.ci_low is not None and e.ci_high is not None and e.ci_low < -0.1 < 0.1 < e.ci_high
    assert not e.supported and "not supported worse" in e.note
    clear = physics_evidence(comparison("conservation_gap", base, base * 1.3))
    assert clear.supported and clear.regressed
    plain = physics_evidence(Comparison("bc_violation", 1.0, 1.003, False, 0.1))
    assert plain.method == "threshold-only" and plain.supported


# --- the record -----------------------------------------------------------------------------


def test_evidence_fields_note_json_and_line() -> None:
    base, cur = lognormal_pair(20, 64, effect=0.05)
    e = pe(base, cur, seed=42)
    assert e.method == "paired-sign-flip" and e.n == 64 and e.seed == 42
    assert e.ci_low is not None and e.ci_high is not None and e.detectable is not None
    assert e.ci_low <= e.change <= e.ci_high and e.interval == (e.ci_low, e.ci_high)
    assert e.note.startswith("with 64 samples, changes under ")
    assert "cannot be told from noise" in e.note and "99 % CI" in e.note
    data = json.loads(json.dumps(e.to_json()))
    assert data["seed"] == 42 and data["confidence"] == 0.99 and data["rule"] == "confident"
    line = evidence_line(data)
    assert line == e.describe() == evidence_line(e)
    assert line.startswith("paired-sign-flip: change +")
    assert "99 % CI [" in line and "n=64" in line and "seed 42" in line and "p=" in line
    assert evidence_line({}) == ""
    plain = threshold_evidence(1.0, 1.2, higher_is_better=False, threshold=0.1)
    assert "threshold rule" in evidence_line(plain) and "seed" not in evidence_line(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.regressed = True  # type: ignore[misc]


def test_a_failing_note_never_says_passes() -> None:
    for seed, effect, n in [(21, 0.4, 30), (22, 0.3, 500), (23, 0.25, 100)]:
        base, cur = lognormal_pair(seed, n, effect=effect)
        for rule in RULES:
            e = pe(base, cur, rule)
            assert e.regressed and "fails" in e.note and "passes" not in e.note


def test_unbounded_interval_when_one_sample_dominates() -> None:
    base = np.array([1.0, 1.1, 0.9, 50.0, 1.2, 0.8])
    cur = np.array([1.1, 1.0, 1.0, 70.0, 1.1, 0.9])
    e = pe(base, cur)
    assert e.ci_high == math.inf and not e.regressed
    assert e.detectable == math.inf and "inf" in evidence_line(e)
    assert json.loads(json.dumps(e.to_json()))["ci_high"] == "inf"


def test_reproducible_with_fixed_seed() -> None:
    base, cur = lognormal_pair(24, 50, effect=0.1)
    a, b, c = pe(base, cur, seed=3), pe(base, cur, seed=3), pe(base, cur, seed=4)
    assert a == b
    assert c.change == a.change and c.ci_low != a.ci_low


def test_identical_runs() -> None:
    base = np.linspace(0.1, 0.9, 12)
    for rule in RULES:
        e = pe(base, base.copy(), rule)
        assert (e.change, e.ci_low, e.ci_high, e.p_value, e.regressed) == (0, 0, 0, 1.0, False)
    tiny = pe(base[:4], base[:4].copy())  # 16 swap patterns cannot resolve 99 %: no bounds
    assert (tiny.change, tiny.p_value, tiny.regressed) == (0, 1.0, False)
    assert tiny.ci_low == -1.0 and tiny.ci_high == math.inf


# --- pairing by id and bad input ------------------------------------------------------------


def test_lengths_differ_without_ids() -> None:
    with pytest.raises(SampleMismatch, match=r"baseline has 100 samples and current 98"):
        pe(np.ones(100), np.ones(98))


def test_id_sets_differ() -> None:
    bid = np.array([f"s{i}" for i in range(100)])
    cid = np.array([f"s{i}" for i in range(2, 100)] + ["x1"])
    with pytest.raises(SampleMismatch) as info:
        pe(np.ones(100), np.ones(99), baseline_ids=bid, current_ids=cid)
    msg = str(info.value)
    assert "baseline has 100 samples and current 99" in msg
    assert "2 baseline id(s) missing from current" in msg and "'s0'" in msg
    assert "1 current id(s) not in baseline" in msg and "'x1'" in msg


def test_duplicate_and_mistyped_ids() -> None:
    with pytest.raises(SampleMismatch, match="repeat 1 id"):
        pe([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], baseline_ids=["a", "b", "b"],
           current_ids=["a", "b", "c"])
    with pytest.raises(SampleMismatch, match="never match"):
        pe([1.0, 2.0], [1.0, 2.0], baseline_ids=["1", "2"], current_ids=[1, 2])
    with pytest.raises(SampleMismatch, match="one side only"):
        pe([1.0, 2.0], [1.0, 2.0], baseline_ids=["a", "b"])


def test_ids_reorder_to_the_same_answer() -> None:
    base, cur = lognormal_pair(25, 200, effect=0.08)
    ids = np.array([f"case-{i:04d}" for i in range(200)])
    rng = np.random.default_rng(0)
    pb, pc = rng.permutation(200), rng.permutation(200)
    by_id = pe(base, cur, baseline_ids=ids, current_ids=ids)
    shuffled = pe(base[pb], cur[pc], baseline_ids=ids[pb], current_ids=ids[pc])
    assert shuffled == by_id
    assert pe(base[pb], cur[pc]) != pe(base, cur)  # a wrong pairing is a different answer


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_raise(bad: float) -> None:
    good = np.array([1.0, 2.0, 3.0])
    with_bad = np.array([1.0, bad, 3.0])
    for b, c in ((with_bad, good), (good, with_bad)):
        with pytest.raises(ValueError, match="non-finite"):
            pe(b, c)
        with pytest.raises(ValueError, match="non-finite"):
            repeats_evidence(b, c, higher_is_better=False, threshold=0.1)
    with pytest.raises(ValueError, match="non-finite"):
        threshold_evidence(1.0, bad, higher_is_better=False, threshold=0.1)
    found = regression_evidence([Comparison("m", 2.0, 2.0, False, 0.1, 0.0, good, with_bad)])
    assert found["m"].method == "threshold-only" and "non-finite" in found["m"].note


def test_bad_options_raise() -> None:
    b = np.array([1.0, 2.0, 3.0])
    call = paired_evidence
    with pytest.raises(ValueError, match="unknown rule"):
        call(b, b, higher_is_better=False, threshold=0.1, rule="strict")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        call(b, b, higher_is_better=False, threshold=-0.1)
    with pytest.raises(ValueError, match="confidence"):
        call(b, b, higher_is_better=False, threshold=0.1, confidence=1.0)
    with pytest.raises(ValueError, match="n_flips"):
        call(b, b, higher_is_better=False, threshold=0.1, n_resamples=10)
    with pytest.raises(ValueError, match="at least 2 samples"):
        call([1.0], [2.0], higher_is_better=False, threshold=0.1)
    with pytest.raises(ValueError, match="empty"):
        call([], [], higher_is_better=False, threshold=0.1)
    with pytest.raises(ValueError, match="unknown aggregation"):
        call(b, b, higher_is_better=False, threshold=0.1, aggregation="median")
    with pytest.raises(ValueError, match="change sign"):
        pe([-1.0, 1.2, -0.5, 0.4], [-1.0, 1.0, -0.5, 0.5])


# --- repeats (seeds) -----------------------------------------------------------------------


def test_repeats_single_run_is_a_t_prediction_interval() -> None:
    runs = np.array([0.100, 0.104, 0.097, 0.101, 0.099])
    current = 0.108
    e = repeats_evidence(runs, current, higher_is_better=False, threshold=0.05,
                         rule="significant", confidence=0.95)
    k, m, s = runs.size, runs.mean(), runs.std(ddof=1)
    se = s * math.sqrt(1 + 1 / k)
    half = stats.t.ppf(0.975, k - 1) * se / m
    assert e.method == "seed-t" and e.n == 5 and e.seed is None
    assert e.change == pytest.approx(current / m - 1)
    assert e.ci_low == pytest.approx(e.change - half)
    assert e.ci_high == pytest.approx(e.change + half)
    assert e.p_value == pytest.approx(stats.t.sf((current - m) / se, k - 1), rel=1e-9)
    assert "5 baseline runs" in e.note


@pytest.mark.parametrize("higher_is_better", [False, True])
def test_repeats_several_runs_is_welch(higher_is_better: bool) -> None:
    runs = np.array([0.90, 0.91, 0.89, 0.905])
    cur = np.array([0.86, 0.875, 0.87])
    e = repeats_evidence(runs, cur, higher_is_better=higher_is_better, threshold=0.02,
                         rule="significant", confidence=0.95)
    alternative = "less" if higher_is_better else "greater"
    res = stats.ttest_ind(cur, runs, equal_var=False, alternative=alternative)
    assert e.p_value == pytest.approx(res.pvalue, rel=1e-8)
    ci = stats.ttest_ind(cur, runs, equal_var=False).confidence_interval(0.95)
    assert e.ci_low == pytest.approx(ci.low / runs.mean(), rel=1e-8)
    assert e.ci_high == pytest.approx(ci.high / runs.mean(), rel=1e-8)
    assert e.regressed is higher_is_better  # a 4 % drop is a regression only if higher wins


def test_repeats_in_a_session_and_without_spread() -> None:
    runs = np.array([2.0, 2.0, 2.0])
    e = repeats_evidence(runs, 2.02, higher_is_better=False, threshold=0.1, rule="significant")
    assert (e.ci_low, e.ci_high, e.p_value) == pytest.approx((0.01, 0.01, 0.0))
    assert e.regressed
    assert not repeats_evidence(runs, 2.02, higher_is_better=False, threshold=0.1).regressed
    with pytest.raises(ValueError, match="at least 2 baseline runs"):
        repeats_evidence([1.0], 1.0, higher_is_better=False, threshold=0.1)
    found = regression_evidence([Comparison("nrmse", 2.0, 3.0, False, 0.1,
                                            baseline_repeats=[1.9, 2.0, 2.1])])
    assert found["nrmse"].method == "seed-t" and found["nrmse"].regressed
    off = regression_evidence([Comparison("nrmse", 5.0, 6.0, False, 0.1,
                                          baseline_repeats=[1.9, 2.0, 2.1])])
    assert off["nrmse"].method == "threshold-only" and "repeats" in off["nrmse"].note


# --- properties --------------------------------------------------------------------------

pairs = st.builds(
    lognormal_pair,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(5, 60),
    sigma=st.floats(0.05, 1.0),
    rho=st.floats(0.0, 0.95),
    effect=st.floats(-0.3, 0.5),
)
FAST = settings(max_examples=40, deadline=None)
FLIPS = 512  # Monte Carlo designs in property tests: the properties hold for any size


def width(e: Evidence) -> float:
    assert e.ci_low is not None and e.ci_high is not None
    return e.ci_high - e.ci_low


@FAST
@given(data=pairs, hib=st.booleans())
def test_more_of_the_same_data_never_widens_the_interval(
    data: tuple[Array, Array], hib: bool
) -> None:
    """Every sample twice (the same data, twice the samples): the interval never widens.

    Exact designs (n <= 12) against exact or Monte Carlo ones: the swapped ratios of 2n
    samples concentrate by about 1/sqrt(2), far more than the design's Monte Carlo error.
    """
    base, cur = data
    one = pe(base, cur, hib=hib, n_flips=FLIPS)
    two = pe(np.tile(base, 2), np.tile(cur, 2), hib=hib, n_flips=FLIPS)
    assert width(two) <= width(one) * (1 + 1e-9) + 1e-12
    assert two.change == pytest.approx(one.change, rel=1e-12, abs=1e-15)


@FAST
@given(data=pairs, hib=st.booleans(), scale=st.sampled_from([1e-4, 0.37, 3.0, 7.3, 1e5]))
def test_scaling_both_runs_changes_no_verdict(
    data: tuple[Array, Array], hib: bool, scale: float
) -> None:
    base, cur = data
    for rule in RULES:
        a = pe(base, cur, rule, hib=hib, n_flips=FLIPS)
        b = pe(base * scale, cur * scale, rule, hib=hib, n_flips=FLIPS)
        assert a.regressed == b.regressed
        assert b.change == pytest.approx(a.change, rel=1e-9, abs=1e-12)
        assert b.ci_low == pytest.approx(a.ci_low, rel=1e-9, abs=1e-12)
        assert b.p_value == pytest.approx(a.p_value, rel=1e-9)


@FAST
@given(data=pairs, hib=st.booleans())
def test_swapping_champion_and_challenger_flips_the_sign(
    data: tuple[Array, Array], hib: bool
) -> None:
    """The change's sign flips, the interval maps through x -> 1/(1+x) - 1, and the
    p-value for "worse" becomes the p-value for "better"."""
    base, cur = data
    a = pe(base, cur, "significant", hib=hib, n_flips=FLIPS)
    b = pe(cur, base, "significant", hib=hib, n_flips=FLIPS)
    assert np.sign(b.change) == -np.sign(a.change)
    assert a.ci_low is not None and a.ci_high is not None

    def mirror(x: float) -> float:
        return math.inf if x == -1 else 1 / (1 + x) - 1

    assert b.ci_low == pytest.approx(mirror(a.ci_high), rel=1e-9, abs=1e-12)
    assert b.ci_high == pytest.approx(mirror(a.ci_low), rel=1e-9, abs=1e-12)
    better = promotion_evidence(comparison("m", base, cur, hib=hib),
                                min_improvement_rel=0.0, resampling=Resampling(0, FLIPS))
    assert b.p_value == pytest.approx(better.p_value, rel=1e-9)


@FAST
@given(data=pairs, hib=st.booleans(), worse_by=st.floats(0.0, 0.5))
def test_a_worse_challenger_never_passes_where_a_better_one_fails(
    data: tuple[Array, Array], hib: bool, worse_by: float
) -> None:
    base, cur = data
    ids = np.arange(base.size)  # ids fix the sample order, so both see the same swaps
    worse = cur * (1 - worse_by) if hib else cur * (1 + worse_by)
    for rule in RULES:
        good = pe(base, cur, rule, hib=hib, baseline_ids=ids, current_ids=ids, n_flips=FLIPS)
        bad = pe(base, worse, rule, hib=hib, baseline_ids=ids, current_ids=ids, n_flips=FLIPS)
        assert bad.regressed or not good.regressed
        assert good.p_value is not None and bad.p_value is not None
        assert bad.p_value <= good.p_value + 1e-12


@FAST
@given(data=pairs, order_seed=st.integers(0, 2**32 - 1))
def test_the_order_of_the_samples_does_not_matter(
    data: tuple[Array, Array], order_seed: int
) -> None:
    base, cur = data
    perm = np.random.default_rng(order_seed).permutation(base.size)
    assert pe(base, cur, n_flips=FLIPS) == pe(base[perm], cur[perm], n_flips=FLIPS)


@FAST
@given(data=pairs, hib=st.booleans(), rule=st.sampled_from(RULES))
def test_evidence_is_well_formed(data: tuple[Array, Array], hib: bool, rule: Rule) -> None:
    base, cur = data
    e = pe(base, cur, rule, hib=hib, n_flips=FLIPS)
    assert e.ci_low is not None and e.ci_high is not None
    assert e.ci_low <= e.change <= e.ci_high
    assert e.p_value is not None and 0.0 <= e.p_value <= 1.0
    assert e.detectable is not None and e.detectable >= 0.0
    assert e.n == base.size and e.regressed == e.supported
    assert ("fails" in e.note) == e.regressed and ("passes" in e.note) != e.regressed


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(2, 12),
    shift=st.floats(-0.3, 0.3),
    worse_by=st.floats(0.0, 0.3),
    scale=st.sampled_from([1e-3, 2.5, 1e4]),
    hib=st.booleans(),
)
def test_repeats_properties(
    seed: int, k: int, shift: float, worse_by: float, scale: float, hib: bool
) -> None:
    rng = np.random.default_rng(seed)
    runs = rng.normal(1.0, 0.05, k)
    cur = 1.0 + shift
    worse = cur * (1 - worse_by) if hib else cur * (1 + worse_by)
    for rule in RULES:
        a = repeats_evidence(runs, cur, higher_is_better=hib, threshold=0.1, rule=rule)
        b = repeats_evidence(runs * scale, cur * scale, higher_is_better=hib, threshold=0.1,
                             rule=rule)
        w = repeats_evidence(runs, worse, higher_is_better=hib, threshold=0.1, rule=rule)
        assert a.regressed == b.regressed
        assert b.change == pytest.approx(a.change, rel=1e-9, abs=1e-12)
        assert w.regressed or not a.regressed


def test_a_session_identical_to_the_champion_is_judged_not_crashed() -> None:
    """Every metric equal to the champion's on every sample (a rerun of the champion's own
    report): nothing to reject, every gate passes, p = 1."""
    import numpy as np

    from gates.evidence import Comparison, Resampling, regression_evidence

    rng = np.random.default_rng(3)
    comps = []
    for name in ("mse", "mae", "nrmse"):
        vector = rng.lognormal(-3.0, 0.5, 32)
        comps.append(Comparison(name, float(vector.mean()), float(vector.mean()), False, 0.1,
                                1e-12, vector, vector.copy()))
    found = regression_evidence(comps, resampling=Resampling(0))
    assert all(not e.regressed and e.p_value == 1.0 for e in found.values())
