"""Verdict-quality benchmark: how often does each regression rule fail a model?

Simulated evaluation sets of N = 20, 100 and 1,000 samples.  Per-sample errors are
log-normal (sigma of log 0.5), lower is better, the gated metric is the mean error.  The
challenger's per-sample errors correlate with the baseline's (correlation of logs 0.8),
and a true regression r multiplies them by 1+r (r = 0, 5, 10, 20 %), so the true relative
change of the mean is exactly r.  1,000 trials per cell; the same draws are reused across r
(common random numbers) so rows are comparable.

Rules compared (tolerance 10 % wherever a rule has one):

* ``fixed 10 %`` - today's default: fail when mean(current)/mean(baseline) - 1 > 10 %.
* ``MLflow min_relative_change`` - ``mlflow.models.MetricThreshold(min_relative_change=m,
  greater_is_better=False)``: the candidate passes only if its metric is
  <= baseline * (1 - m), i.e. it is a *required improvement*, not a tolerance.  Shown for
  m = 0 (must not be worse at all) and m = 0.10 (must be 10 % better).
* ``github-action-benchmark 200 %`` - its default ``alert-threshold: "200%"``: alert when
  current > 2 x previous.
* ``asv-style`` - as ``asv compare``: flag when the ratio > factor 1.1 AND a two-sided
  Mann-Whitney U test (unpaired) gives p < 0.002 (asv's default ``p_threshold``).  The
  ratio is of the means here, the gated metric; asv uses its own reported statistic.
* this project's rules through :func:`gates.evidence.paired_evidence` at the default 99 %
  interval: ``threshold``, ``significant``, ``confident`` with margins 1.0 (the interval
  excludes the tolerance), 0.5, 0.25 (the default) and 0 (estimate past the tolerance and
  the regression significant: asv's rule, but paired).  A second table explores margin x
  confidence for ``confident`` on the cells that bind.

Targets for the default rule: at most 1 % failing at 0 % and 5 % at 5 % for every N; at
least 95 % failing at 20 % for N >= 100 and 99.9 % at N = 1,000.

Run: ``pytest tests/bench_verdicts.py -m slow -s`` or ``python -m tests.bench_verdicts``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from gates.evidence import (
    CONFIDENT_MARGIN,
    DEFAULT_CONFIDENCE,
    DEFAULT_RULE,
    Rule,
    decide,
    paired_evidence,
)

SIZES = (20, 100, 1000)
EFFECTS = (0.0, 0.05, 0.10, 0.20)
TRIALS = 1000
SIGMA = 0.5
RHO = 0.8
TOLERANCE = 0.10
EXPLORE_CONFIDENCES = (0.95, 0.98, 0.99, 0.995)
EXPLORE_MARGINS = (0.0, 0.25, 0.4, 0.5, 0.75, 1.0)
EXPLORE_SIZES = (20, 100)  # at N=1000 `confident` equals the fixed rule: never binding

Array = npt.NDArray[np.float64]
Table = dict[str, dict[tuple[int, float], float]]  # rule -> (N, r) -> % failing
Explore = dict[tuple[float, float, int, float], float]  # (confidence, margin, N, r) -> %


def draws(n: int, trials: int = TRIALS) -> tuple[Array, Array]:
    """Standard-normal draws for one N, fixed per N so every rule sees the same data."""
    rng = np.random.default_rng([2024, n])
    return rng.standard_normal((trials, n)), rng.standard_normal((trials, n))


def pair(z1: Array, z2: Array, effect: float) -> tuple[Array, Array]:
    """Baseline and challenger per-sample errors (rows are trials)."""
    baseline = np.exp(SIGMA * z1)
    current = (1.0 + effect) * np.exp(SIGMA * (RHO * z1 + np.sqrt(1.0 - RHO**2) * z2))
    return baseline, current


# --- other tools' rules, vectorized over trials -------------------------------------------


def fixed_rule(b: Array, c: Array) -> npt.NDArray[np.bool_]:
    return np.asarray(c.mean(1) / b.mean(1) - 1.0 > TOLERANCE)


def mlflow_rule(min_relative_change: float) -> Callable[[Array, Array], npt.NDArray[np.bool_]]:
    def rule(b: Array, c: Array) -> npt.NDArray[np.bool_]:
        return np.asarray(c.mean(1) > b.mean(1) * (1.0 - min_relative_change))

    return rule


def gab_rule(b: Array, c: Array) -> npt.NDArray[np.bool_]:
    return np.asarray(c.mean(1) / b.mean(1) > 2.0)


def asv_rule(b: Array, c: Array) -> npt.NDArray[np.bool_]:
    p = stats.mannwhitneyu(b, c, alternative="two-sided", axis=1).pvalue
    return np.asarray((c.mean(1) / b.mean(1) > 1.1) & (p < 0.002))


EXTERNAL: dict[str, Callable[[Array, Array], npt.NDArray[np.bool_]]] = {
    "fixed 10 % on mean (today)": fixed_rule,
    "MLflow min_relative_change=0": mlflow_rule(0.0),
    "MLflow min_relative_change=0.10": mlflow_rule(0.10),
    "github-action-benchmark 200 %": gab_rule,
    "asv-style MWU p<0.002, ratio>1.1": asv_rule,
}

# label -> (rule, margin) applied to the same paired_evidence result
OURS: dict[str, tuple[Rule, float]] = {
    "evidence threshold": ("threshold", CONFIDENT_MARGIN),
    "evidence significant": ("significant", CONFIDENT_MARGIN),
    "evidence confident margin=1.0": ("confident", 1.0),
    "evidence confident margin=0.5": ("confident", 0.5),
    "evidence confident margin=0.25 *": ("confident", 0.25),
    "evidence confident margin=0": ("confident", 0.0),
}
DEFAULT_LABEL = "evidence confident margin=0.25 *"


# --- this project's rules: one paired_evidence call per trial ------------------------------


def evidence_cell(n: int, effect: float, confidence: float) -> tuple[Array, float]:
    """paired_evidence on every trial of one cell: (change, ci_low, ci_high, verdict) rows."""
    z1, z2 = draws(n)
    b, c = pair(z1, z2, effect)
    out = np.empty((b.shape[0], 4))
    start = time.perf_counter()
    for t in range(b.shape[0]):
        e = paired_evidence(
            b[t],
            c[t],
            higher_is_better=False,
            threshold=TOLERANCE,
            rule=DEFAULT_RULE,
            confidence=confidence,
        )
        assert e.ci_low is not None and e.ci_high is not None
        out[t] = (e.change, e.ci_low, e.ci_high, float(e.regressed))
    return out, (time.perf_counter() - start) / b.shape[0]


def _run_cells(
    cells: list[tuple[int, float, float]], workers: int
) -> dict[tuple[int, float, float], tuple[Array, float]]:
    cells = sorted(cells, key=lambda cell: -cell[0])  # heaviest first
    if workers <= 1:
        return {cell: evidence_cell(*cell) for cell in cells}
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {cell: pool.submit(evidence_cell, *cell) for cell in cells}
        return {cell: f.result() for cell, f in futures.items()}


def rates(rows: Array, rule: Rule, margin: float) -> float:
    """% of trials that ``rule`` fails, from the recorded evidence."""
    verdicts = [
        decide(ch, lo, hi, higher_is_better=False, threshold=TOLERANCE, rule=rule, margin=margin)
        for ch, lo, hi, _ in rows
    ]
    return 100.0 * float(np.mean(verdicts))


def run(workers: int | None = None) -> tuple[Table, Explore, dict[str, float]]:
    """Compute the main table, the margin x confidence exploration, and timings."""
    workers = workers or min(2, os.cpu_count() or 1)
    t0 = time.perf_counter()
    table: Table = {label: {} for label in [*EXTERNAL, *OURS]}
    for n in SIZES:
        z1, z2 = draws(n)
        for r in EFFECTS:
            b, c = pair(z1, z2, r)
            for label, fn in EXTERNAL.items():
                table[label][(n, r)] = 100.0 * float(np.mean(fn(b, c)))

    cells = [(n, r, DEFAULT_CONFIDENCE) for n in SIZES for r in EFFECTS]
    cells += [
        (n, r, conf)
        for conf in EXPLORE_CONFIDENCES
        if conf != DEFAULT_CONFIDENCE
        for n in EXPLORE_SIZES
        for r in (0.0, 0.05, 0.20)
    ]
    results = _run_cells(cells, workers)

    for n in SIZES:
        for r in EFFECTS:
            rows, _ = results[(n, r, DEFAULT_CONFIDENCE)]
            for label, (rule, margin) in OURS.items():
                table[label][(n, r)] = rates(rows, rule, margin)
            # the verdict paired_evidence returned is the one decide() gives
            assert np.array_equal(
                rows[:, 3],
                [
                    decide(
                        ch, lo, hi, higher_is_better=False, threshold=TOLERANCE, rule=DEFAULT_RULE
                    )
                    for ch, lo, hi, _ in rows
                ],
            )

    explore: Explore = {}
    for conf in EXPLORE_CONFIDENCES:
        for margin in EXPLORE_MARGINS:
            for n in EXPLORE_SIZES:
                for r in (0.0, 0.05, 0.20):
                    rows, _ = results[(n, r, conf)]
                    explore[(conf, margin, n, r)] = rates(rows, "confident", margin)

    timing = {
        f"paired_evidence ms/call N={n}": 1e3 * results[(n, 0.0, DEFAULT_CONFIDENCE)][1]
        for n in SIZES
    }
    timing["total s"] = time.perf_counter() - t0
    timing["workers"] = float(workers)
    return table, explore, timing


# --- targets and printing ------------------------------------------------------------------


def target_misses(row: dict[tuple[int, float], float]) -> list[str]:
    """Which of the default-rule targets a row of the table misses."""
    misses = []
    for n in SIZES:
        if row[(n, 0.0)] > 1.0:
            misses.append(f"N={n} 0%>1")
        if row[(n, 0.05)] > 5.0:
            misses.append(f"N={n} 5%>5")
        if n >= 100 and row[(n, 0.20)] < 95.0:
            misses.append(f"N={n} 20%<95")
    if row[(1000, 0.20)] < 99.9:
        misses.append("N=1000 20%<99.9")
    return misses


def format_table(table: Table) -> str:
    width = max(len(label) for label in table) + 1
    head1 = " " * width + " | ".join(f"{'N=' + str(n):^23}" for n in SIZES) + " | targets"
    head2 = (
        f"{'rule':<{width}}"
        + " | ".join(" ".join(f"{f'{r:.0%}':>5}" for r in EFFECTS) for _ in SIZES)
        + " |"
    )
    lines = [
        "failing verdicts, % of 1,000 trials (columns: true regression of the mean)",
        head1,
        head2,
        "-" * len(head2) + "-" * 10,
    ]
    for label, row in table.items():
        cells = " | ".join(" ".join(f"{row[(n, r)]:5.1f}" for r in EFFECTS) for n in SIZES)
        misses = target_misses(row)
        lines.append(f"{label:<{width}}{cells} | {'met' if not misses else ', '.join(misses)}")
    lines.append(
        f"* = DEFAULT_RULE ({DEFAULT_RULE}, margin {CONFIDENT_MARGIN}, "
        f"{DEFAULT_CONFIDENCE:.0%} interval)"
    )
    return "\n".join(lines)


def format_explore(explore: Explore) -> str:
    cols = [(20, 0.0, "<=1"), (20, 0.05, "<=5"), (100, 0.05, "<=5"), (100, 0.20, ">=95")]
    head = f"{'confidence':>10} {'margin':>6} " + " ".join(
        f"{f'N={n} {r:.0%} ({t})':>16}" for n, r, t in cols
    )
    lines = [
        "confident rule: binding cells by margin and interval confidence "
        "(N=1000 never binds: the estimate must also pass the 10 % tolerance)",
        head,
    ]
    for conf in EXPLORE_CONFIDENCES:
        for margin in EXPLORE_MARGINS:
            vals = [explore[(conf, margin, n, r)] for n, r, _ in cols]
            ok = vals[0] <= 1 and vals[1] <= 5 and vals[2] <= 5 and vals[3] >= 95
            lines.append(
                f"{conf:>10.3f} {margin:>6.2f} "
                + " ".join(f"{v:>16.1f}" for v in vals)
                + ("   meets" if ok else "")
            )
    return "\n".join(lines)


def report(workers: int | None = None) -> Table:
    table, explore, timing = run(workers)
    print()
    print(format_table(table))
    print()
    print(format_explore(explore))
    print()
    print("timing: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()))
    return table


@pytest.mark.slow
def test_verdict_quality() -> None:
    table = report()
    assert target_misses(table[DEFAULT_LABEL]) == []
    assert target_misses(table["fixed 10 % on mean (today)"]) != []


if __name__ == "__main__":
    report()
