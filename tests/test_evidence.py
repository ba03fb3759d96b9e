"""Unit tests and properties of gates.evidence: the statistics behind noise-aware verdicts."""

from __future__ import annotations

import dataclasses
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
    Evidence,
    Rule,
    SampleMismatch,
    decide,
    paired_evidence,
    repeats_evidence,
    threshold_evidence,
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
    rule: Rule = "threshold",
    *,
    hib: bool = False,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = ev.DEFAULT_CONFIDENCE,
    baseline_ids: npt.ArrayLike | None = None,
    current_ids: npt.ArrayLike | None = None,
) -> Evidence:
    """paired_evidence with the test defaults: 10 % tolerance, lower is better."""
    return paired_evidence(
        base,
        cur,
        higher_is_better=hib,
        threshold=0.10,
        rule=rule,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        baseline_ids=baseline_ids,
        current_ids=current_ids,
    )


def rp(
    runs: npt.ArrayLike,
    cur: float | npt.ArrayLike,
    rule: Rule = "threshold",
    *,
    hib: bool = False,
    threshold: float = 0.10,
) -> Evidence:
    """repeats_evidence with the test defaults."""
    return repeats_evidence(runs, cur, higher_is_better=hib, threshold=threshold, rule=rule)


def verdicts(base: Array, cur: Array, hib: bool = False) -> dict[str, bool]:
    return {rule: pe(base, cur, rule, hib=hib).regressed for rule in RULES}


# --- Student t without scipy -----------------------------------------------------------


@pytest.mark.parametrize("df", [1, 1.5, 2, 3, 4.7, 9, 30, 250, 5_000, 60_000])
def test_t_distribution_matches_scipy(df: float) -> None:
    for t in (-40.0, -4.0, -1.96, -0.3, 0.0, 0.7, 2.5, 12.0):
        assert ev._t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), rel=1e-9, abs=1e-12)
    for p in (1e-6, 1e-3, 0.025, 0.2, 0.5, 0.9, 0.975, 0.9999):
        assert ev._t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-12)


def test_t_far_tail_and_normal_limit() -> None:
    assert ev._t_cdf(-1e6, 3) == pytest.approx(stats.t.cdf(-1e6, 3), rel=1e-6)
    assert ev._t_ppf(0.975, 1e9) == pytest.approx(1.959964, abs=1e-6)


# --- paired bootstrap against analytic intervals ------------------------------------------


def test_bootstrap_ci_of_mean_matches_t_interval_for_large_n() -> None:
    """Constant baseline: the change is mean(current) - 1, whose t-interval is textbook."""
    rng = np.random.default_rng(1)
    n = 2000
    cur = rng.normal(1.2, 0.3, n)
    e = pe(np.ones(n), cur, n_resamples=20_000, confidence=0.95)
    half = stats.t.ppf(0.975, n - 1) * cur.std(ddof=1) / math.sqrt(n)
    assert e.change == pytest.approx(cur.mean() - 1, abs=1e-12)
    assert e.ci_low is not None and e.ci_high is not None
    assert abs(e.ci_low - (cur.mean() - 1 - half)) < 0.05 * half
    assert abs(e.ci_high - (cur.mean() - 1 + half)) < 0.05 * half
    assert e.detectable == pytest.approx(half, rel=0.05)


def test_bootstrap_ci_of_ratio_matches_delta_method_for_large_n() -> None:
    rng = np.random.default_rng(2)
    n = 3000
    base = rng.normal(10.0, 1.0, n)
    cur = base + rng.normal(0.4, 1.0, n)
    e = pe(base, cur, n_resamples=20_000, confidence=0.95)
    ratio = cur.mean() / base.mean()
    se = math.sqrt(((cur - ratio * base) ** 2).sum() / (n * (n - 1))) / base.mean()
    half = stats.t.ppf(0.975, n - 1) * se
    assert e.ci_low is not None and e.ci_high is not None
    assert abs(e.ci_low - (ratio - 1 - half)) < 0.06 * half
    assert abs(e.ci_high - (ratio - 1 + half)) < 0.06 * half


@pytest.mark.parametrize("higher_is_better", [False, True])
def test_p_value_matches_one_sided_t_test(higher_is_better: bool) -> None:
    rng = np.random.default_rng(3)
    n = 400
    shift = 0.045 if not higher_is_better else -0.045  # ~1.8 standard errors worse
    cur = rng.normal(1.0 + shift, 0.5, n)
    e = pe(np.ones(n), cur, "significant", hib=higher_is_better, n_resamples=20_000)
    alternative = "less" if higher_is_better else "greater"
    p = stats.ttest_1samp(cur - 1.0, 0.0, alternative=alternative).pvalue
    assert e.p_value == pytest.approx(p, abs=0.01)
    assert 0.005 < p < 0.2


def test_interval_coverage_on_normal_data() -> None:
    """The worse-side bound of a 95 % interval is a 97.5 % one-sided bound: check it."""
    rng = np.random.default_rng(4)
    misses = 0
    trials = 300
    for _ in range(trials):
        cur = rng.normal(1.0, 0.4, 30)
        e = pe(np.ones(30), cur, n_resamples=500, seed=1, confidence=0.95)
        assert e.ci_low is not None
        misses += e.ci_low > 0.0
    assert misses / trials < 0.06  # nominal 0.025; binomial slack for 300 trials


# --- rules ------------------------------------------------------------------------------


def test_rules_on_a_precise_small_regression() -> None:
    """8 % worse, measured precisely: real but within the 10 % tolerance."""
    rng = np.random.default_rng(5)
    base = rng.lognormal(0, 0.5, 5000)
    cur = base * 1.08 * rng.lognormal(0, 0.01, 5000)
    v = verdicts(base, cur)
    assert v == {"threshold": False, "confident": False, "significant": True}


def test_rules_on_a_noisy_large_change() -> None:
    """15 % worse on 8 noisy samples: past the tolerance, but not supported by the data."""
    base = np.array([1.0, 2.0, 0.5, 1.5, 3.0, 0.8, 1.2, 2.5])
    noise = np.array([1.9, 0.6, 1.4, 0.7, 1.5, 0.9, 1.2, 1.2])
    cur = base * noise
    cur *= 1.15 * base.mean() / cur.mean()
    e = pe(base, cur, "confident")
    assert e.change == pytest.approx(0.15)
    assert not e.regressed
    assert "more samples would decide" in e.note
    assert pe(base, cur).regressed


def test_rules_on_a_clear_regression_and_an_improvement() -> None:
    base, cur = lognormal_pair(6, 300, effect=0.3)
    assert verdicts(base, cur) == dict.fromkeys(RULES, True)
    base, cur = lognormal_pair(6, 300, effect=-0.3)
    assert verdicts(base, cur) == dict.fromkeys(RULES, False)


def test_higher_is_better_direction() -> None:
    """Accuracy-like metric: a drop is the regression, and `change` keeps its plain sign."""
    base, cur = lognormal_pair(7, 300, effect=-0.3)
    e = pe(base, cur, DEFAULT_RULE, hib=True)
    assert e.change < -0.2 and e.regressed
    assert e.p_value is not None and e.p_value < 0.01
    assert "worse" in e.note
    up = pe(cur, base, "significant", hib=True)
    assert up.change > 0 and not up.regressed
    assert up.p_value is not None and up.p_value > 0.9


@pytest.mark.parametrize("rule", RULES)
def test_decide_is_the_rule_used(rule: Rule) -> None:
    for seed, effect in [(8, 0.0), (9, 0.12), (10, 0.25)]:
        base, cur = lognormal_pair(seed, 80, effect=effect)
        for hib in (False, True):
            e = pe(base, cur, rule, hib=hib)
            assert e.ci_low is not None and e.ci_high is not None
            assert e.regressed == decide(
                e.change, e.ci_low, e.ci_high, higher_is_better=hib, threshold=0.1, rule=rule
            )


def test_confident_margin_one_is_the_strict_reading() -> None:
    """margin=1: the interval's worse end must itself be past the tolerance."""
    assert decide(
        0.2, 0.11, 0.3, higher_is_better=False, threshold=0.1, rule="confident", margin=1.0
    )
    assert not decide(
        0.2, 0.09, 0.3, higher_is_better=False, threshold=0.1, rule="confident", margin=1.0
    )
    assert decide(0.2, 0.06, 0.3, higher_is_better=False, threshold=0.1, rule="confident")
    assert not decide(0.09, 0.08, 0.1, higher_is_better=False, threshold=0.1, rule="confident")


def test_default_rule_is_confident() -> None:
    assert DEFAULT_RULE == "confident"
    assert ev.CONFIDENT_MARGIN == 0.25 and ev.DEFAULT_CONFIDENCE == 0.99


# --- Evidence record ----------------------------------------------------------------------


def test_evidence_fields_and_note() -> None:
    base, cur = lognormal_pair(11, 64, effect=0.05)
    e = pe(base, cur, "confident", seed=42)
    assert e.method == "paired-bootstrap" and e.n == 64 and e.seed == 42
    assert e.ci_low is not None and e.ci_high is not None and e.detectable is not None
    assert e.ci_low <= e.change <= e.ci_high
    assert e.detectable == pytest.approx(e.change - e.ci_low)
    assert e.note.startswith("with 64 samples, changes under ")
    assert "cannot be told from noise" in e.note and "99 % CI" in e.note
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.regressed = True  # type: ignore[misc]


def test_reproducible_with_fixed_seed() -> None:
    base, cur = lognormal_pair(12, 50, effect=0.1)
    a = pe(base, cur, "confident", seed=3)
    b = pe(base, cur, "confident", seed=3)
    c = pe(base, cur, "confident", seed=4)
    assert a == b
    assert c.change == a.change and c.ci_low != a.ci_low


def test_identical_runs() -> None:
    base = np.array([0.3, 0.1, 0.7, 0.2])
    for rule in RULES:
        e = paired_evidence(base, base.copy(), higher_is_better=False, threshold=0.0, rule=rule)
        assert (e.change, e.ci_low, e.ci_high, e.p_value, e.regressed) == (0, 0, 0, 1.0, False)


def test_one_call_is_fast() -> None:
    """n=1000, 2000 resamples: a few ms (vectorized); 150 ms leaves room for a loaded CI."""
    base, cur = lognormal_pair(13, 1000, effect=0.05)
    pe(base, cur, "confident")
    times = []
    for _ in range(5):
        start = time.perf_counter()
        pe(base, cur, "confident")
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.15


# --- pairing by id -------------------------------------------------------------------------


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


def test_same_count_but_different_ids() -> None:
    with pytest.raises(SampleMismatch, match="missing from current"):
        pe([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], baseline_ids=[1, 2, 3], current_ids=[1, 2, 4])


def test_duplicate_ids() -> None:
    with pytest.raises(SampleMismatch, match="repeat 1 id"):
        pe(
            [1.0, 2.0, 3.0],
            [1.0, 2.0, 3.0],
            baseline_ids=["a", "b", "b"],
            current_ids=["a", "b", "c"],
        )


def test_text_ids_never_match_numbers() -> None:
    with pytest.raises(SampleMismatch, match="never match"):
        pe([1.0, 2.0], [1.0, 2.0], baseline_ids=["1", "2"], current_ids=[1, 2])


def test_ids_on_one_side_only() -> None:
    with pytest.raises(ValueError, match="both baseline_ids and current_ids"):
        pe([1.0, 2.0], [1.0, 2.0], baseline_ids=["a", "b"])


def test_ids_reorder_to_the_same_answer() -> None:
    base, cur = lognormal_pair(14, 200, effect=0.08)
    ids = np.array([f"case-{i:04d}" for i in range(200)])
    rng = np.random.default_rng(0)
    pb, pc = rng.permutation(200), rng.permutation(200)
    aligned = pe(base, cur, "confident")
    shuffled = pe(base[pb], cur[pc], "confident", baseline_ids=ids[pb], current_ids=ids[pc])
    assert shuffled == aligned
    # a wrong pairing is a different answer: ids do matter
    assert pe(base[pb], cur[pc], "confident") != aligned


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_raise(bad: float) -> None:
    good = np.array([1.0, 2.0, 3.0])
    with_bad = np.array([1.0, bad, 3.0])
    for b, c in ((with_bad, good), (good, with_bad)):
        with pytest.raises(ValueError, match="non-finite"):
            pe(b, c)
        with pytest.raises(ValueError, match="non-finite"):
            rp(b, c)
    with pytest.raises(ValueError, match="non-finite"):
        rp(good, bad)
    with pytest.raises(ValueError, match="non-finite"):
        threshold_evidence(1.0, bad, higher_is_better=False, threshold=0.1)
    with pytest.raises(ValueError, match="non-finite"):
        threshold_evidence(bad, 1.0, higher_is_better=False, threshold=0.1)


def test_bad_options_raise() -> None:
    b = np.array([1.0, 2.0, 3.0])
    call = paired_evidence
    with pytest.raises(ValueError, match="unknown rule"):
        call(b, b, higher_is_better=False, threshold=0.1, rule="strict")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        call(b, b, higher_is_better=False, threshold=-0.1, rule="threshold")
    with pytest.raises(ValueError, match="confidence"):
        call(b, b, higher_is_better=False, threshold=0.1, rule="threshold", confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        call(b, b, higher_is_better=False, threshold=0.1, rule="threshold", n_resamples=10)
    with pytest.raises(ValueError, match="at least 2 samples"):
        call([1.0], [2.0], higher_is_better=False, threshold=0.1, rule="threshold")
    with pytest.raises(ValueError, match="empty"):
        call([], [], higher_is_better=False, threshold=0.1, rule="threshold")


def test_zero_baseline_mean_raises() -> None:
    with pytest.raises(ValueError, match="baseline mean is 0"):
        pe([-1.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="flip its sign"):
        pe([-1.0, 1.2, -0.5, 0.4], [-1.0, 1.0, -0.5, 0.5])


# --- repeats (seeds) -----------------------------------------------------------------------


def test_repeats_single_run_is_a_t_prediction_interval() -> None:
    runs = np.array([0.100, 0.104, 0.097, 0.101, 0.099])
    current = 0.108
    e = repeats_evidence(
        runs, current, higher_is_better=False, threshold=0.05, rule="significant", confidence=0.95
    )
    k, m, s = runs.size, runs.mean(), runs.std(ddof=1)
    se = s * math.sqrt(1 + 1 / k)
    half = stats.t.ppf(0.975, k - 1) * se / m
    assert e.method == "seed-t" and e.n == 5 and e.seed is None
    assert e.change == pytest.approx(current / m - 1)
    assert e.ci_low == pytest.approx(e.change - half)
    assert e.ci_high == pytest.approx(e.change + half)
    assert e.p_value == pytest.approx(stats.t.sf((current - m) / se, k - 1), rel=1e-9)
    assert e.detectable == pytest.approx(half)
    assert "5 baseline runs" in e.note


@pytest.mark.parametrize("higher_is_better", [False, True])
def test_repeats_several_runs_is_welch(higher_is_better: bool) -> None:
    runs = np.array([0.90, 0.91, 0.89, 0.905])
    cur = np.array([0.86, 0.875, 0.87])
    e = repeats_evidence(
        runs,
        cur,
        higher_is_better=higher_is_better,
        threshold=0.02,
        rule="significant",
        confidence=0.95,
    )
    alternative = "less" if higher_is_better else "greater"
    res = stats.ttest_ind(cur, runs, equal_var=False, alternative=alternative)
    assert e.p_value == pytest.approx(res.pvalue, rel=1e-8)
    ci = stats.ttest_ind(cur, runs, equal_var=False).confidence_interval(0.95)
    assert e.ci_low == pytest.approx(ci.low / runs.mean(), rel=1e-8)
    assert e.ci_high == pytest.approx(ci.high / runs.mean(), rel=1e-8)
    assert e.regressed is higher_is_better  # a 4 % drop is a regression only if higher wins


def test_repeats_without_spread() -> None:
    runs = np.array([2.0, 2.0, 2.0])
    e = repeats_evidence(runs, 2.02, higher_is_better=False, threshold=0.1, rule="significant")
    assert (e.ci_low, e.ci_high, e.p_value) == pytest.approx((0.01, 0.01, 0.0))
    assert e.regressed
    assert not repeats_evidence(
        runs, 2.02, higher_is_better=False, threshold=0.1, rule="confident"
    ).regressed


def test_repeats_needs_two_runs() -> None:
    with pytest.raises(ValueError, match="at least 2 baseline runs"):
        repeats_evidence([1.0], 1.0, higher_is_better=False, threshold=0.1, rule="threshold")


# --- fixed-threshold fallback -------------------------------------------------------------


def test_threshold_evidence() -> None:
    e = threshold_evidence(0.20, 0.23, higher_is_better=False, threshold=0.1)
    assert e.method == "threshold-only" and e.regressed
    assert e.change == pytest.approx(0.15)
    assert (e.ci_low, e.ci_high, e.p_value, e.detectable, e.seed) == (None,) * 5
    assert "fell back to the fixed 10 % threshold rule" in e.note
    assert not threshold_evidence(0.90, 0.85, higher_is_better=True, threshold=0.1).regressed
    assert threshold_evidence(0.90, 0.80, higher_is_better=True, threshold=0.1).regressed


def test_threshold_evidence_zero_and_negative_baseline() -> None:
    assert threshold_evidence(0.0, 0.0, higher_is_better=False, threshold=0.1).change == 0.0
    e = threshold_evidence(0.0, 0.01, higher_is_better=False, threshold=0.1)
    assert e.change == math.inf and e.regressed
    # log-likelihood, higher is better: -12 is worse than -10, and the sign says "went down"
    e = threshold_evidence(-10.0, -12.0, higher_is_better=True, threshold=0.1)
    assert e.change == pytest.approx(-0.2) and e.regressed


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
B = 400  # resamples in property tests: properties hold for any count, so keep them fast


@FAST
@given(data=pairs, hib=st.booleans())
def test_more_of_the_same_data_never_widens_the_interval(
    data: tuple[Array, Array], hib: bool
) -> None:
    base, cur = data
    one = pe(base, cur, hib=hib, n_resamples=B)
    two = pe(np.tile(base, 2), np.tile(cur, 2), hib=hib, n_resamples=B)
    assert one.ci_low is not None and one.ci_high is not None
    assert two.ci_low is not None and two.ci_high is not None
    assert two.ci_high - two.ci_low <= one.ci_high - one.ci_low + 1e-12
    assert two.change == pytest.approx(one.change, rel=1e-12, abs=1e-15)


@FAST
@given(data=pairs, hib=st.booleans(), scale=st.sampled_from([1e-4, 0.37, 3.0, 7.3, 1e5]))
def test_scaling_both_runs_changes_no_verdict(
    data: tuple[Array, Array], hib: bool, scale: float
) -> None:
    base, cur = data
    for rule in RULES:
        a = pe(base, cur, rule, hib=hib, n_resamples=B)
        b = pe(base * scale, cur * scale, rule, hib=hib, n_resamples=B)
        assert a.regressed == b.regressed
        assert b.change == pytest.approx(a.change, rel=1e-9, abs=1e-12)
        assert b.ci_low == pytest.approx(a.ci_low, rel=1e-9, abs=1e-12)


@FAST
@given(data=pairs, hib=st.booleans(), worse_by=st.floats(0.0, 0.5))
def test_a_worse_challenger_never_passes_where_a_better_one_fails(
    data: tuple[Array, Array], hib: bool, worse_by: float
) -> None:
    base, cur = data
    worse = cur * (1 - worse_by) if hib else cur * (1 + worse_by)
    for rule in RULES:
        good = pe(base, cur, rule, hib=hib, n_resamples=B)
        bad = pe(base, worse, rule, hib=hib, n_resamples=B)
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
    a = pe(base, cur, "confident", n_resamples=B)
    b = pe(base[perm], cur[perm], "confident", n_resamples=B)
    assert a == b


@FAST
@given(data=pairs, hib=st.booleans(), rule=st.sampled_from(RULES))
def test_evidence_is_well_formed(data: tuple[Array, Array], hib: bool, rule: Rule) -> None:
    base, cur = data
    e = pe(base, cur, rule, hib=hib, n_resamples=B)
    assert isinstance(e, Evidence)
    assert e.ci_low is not None and e.ci_high is not None
    assert e.ci_low <= e.change <= e.ci_high
    assert e.p_value is not None and 0.0 <= e.p_value <= 1.0
    assert e.detectable is not None and e.detectable >= 0.0
    assert e.n == base.size


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
        a = rp(runs, cur, rule, hib=hib)
        b = rp(runs * scale, cur * scale, rule, hib=hib)
        w = rp(runs, worse, rule, hib=hib)
        assert a.regressed == b.regressed
        assert b.change == pytest.approx(a.change, rel=1e-9, abs=1e-12)
        assert w.regressed or not a.regressed
