"""The test-time-compute (TTC) figure and the numbers behind it.

Kept apart from :mod:`gates.dashboards` so the table code never pays for matplotlib:
matplotlib is imported inside :func:`render_ttc_summary` only, and the figure is drawn on
a :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no global state, no
display needed in CI).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Below this many steps every point gets a marker; above it markers would only clutter.
_MARKER_STEPS = 60


@dataclass(frozen=True)
class TTCStep:
    """One validated entry of ``<prefix>_ttc_step_logs.json``."""

    step: float
    rewards: tuple[float, ...]
    chosen: int
    beam_width: int | None = None
    horizon: int | None = None

    @property
    def chosen_reward(self) -> float:
        return self.rewards[self.chosen]

    @property
    def mean_reward(self) -> float:
        # math.fsum: exact, and no numpy "mean of empty slice" path (rewards are non-empty).
        return math.fsum(self.rewards) / len(self.rewards)


@dataclass(frozen=True)
class TTCSeries:
    """Per-step series for the figure and the line chart, computed once."""

    steps: list[float]
    chosen: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    all_rewards: list[float]
    chosen_counts: list[int]  # index i: how many steps chose candidate i
    improvement: list[float]
    improvement_is_percent: bool
    reference: float  # rewards of the first step, first candidate

    @property
    def improvement_label(self) -> str:
        return ("Improvement (%)" if self.improvement_is_percent
                else "Improvement (reward units, absolute)")


def ttc_series(steps: Sequence[TTCStep]) -> TTCSeries:
    """Derive every plotted quantity; safe for ragged, single-step and constant rewards.

    Improvement per step is ``100 * (chosen - r0) / |r0|`` with ``r0`` the first candidate's
    reward at the first step. When ``r0`` is 0 (or the ratio is not finite) a percentage
    means nothing, so the absolute difference ``chosen - r0`` is used and labelled so.
    """
    if not steps:
        raise ValueError("no TTC steps")
    chosen = [s.chosen_reward for s in steps]
    reference = steps[0].rewards[0]
    width = max(len(s.rewards) for s in steps)
    counts = [0] * width
    for s in steps:
        counts[s.chosen] += 1
    diffs = [c - reference for c in chosen]
    percent: list[float] = []
    is_percent = reference != 0.0 and math.isfinite(reference)
    if is_percent:
        try:
            percent = [100.0 * d / abs(reference) for d in diffs]
        except (OverflowError, ZeroDivisionError):
            is_percent = False
        is_percent = is_percent and all(math.isfinite(p) for p in percent)
    return TTCSeries(
        steps=[s.step for s in steps],
        chosen=chosen,
        mean=[s.mean_reward for s in steps],
        low=[min(s.rewards) for s in steps],
        high=[max(s.rewards) for s in steps],
        all_rewards=[r for s in steps for r in s.rewards],
        chosen_counts=counts,
        improvement=percent if is_percent else diffs,
        improvement_is_percent=is_percent,
        reference=reference,
    )


def _subtitle(steps: Sequence[TTCStep]) -> str:
    widths = {len(s.rewards) for s in steps}
    parts = [f"{len(steps)} step{'s' if len(steps) != 1 else ''}"]
    if len(widths) == 1:
        parts.append(f"{widths.pop()} candidates per step")
    else:
        parts.append(f"{min(widths)}-{max(widths)} candidates per step")
    for name, values in (("beam width", {s.beam_width for s in steps}),
                         ("horizon", {s.horizon for s in steps})):
        known = sorted(v for v in values if v is not None)
        if len(known) == 1:
            parts.append(f"{name} {known[0]}")
        elif known:
            parts.append(f"{name} {known[0]}-{known[-1]}")
    return "Test-time compute: " + " · ".join(parts)


def _step_axis(ax: Axes, steps: Sequence[float]) -> None:
    """Whole-number step ticks; a lone step gets a window around it, not +-0.05 ticks."""
    from matplotlib.ticker import MaxNLocator

    if min(steps) == max(steps):
        ax.set_xlim(steps[0] - 1.0, steps[0] + 1.0)
        ax.set_xticks([steps[0]])
    elif all(float(s).is_integer() for s in steps):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def render_ttc_summary(steps: Sequence[TTCStep], path: Path, *, dpi: int = 100) -> TTCSeries:
    """Draw the 4-panel TTC summary to ``path`` (PNG, 1200 x 800 px at the default dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series = ttc_series(steps)
    fig = Figure(figsize=(12, 8), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(_subtitle(steps), fontsize=14)
    (ax_curve, ax_hist), (ax_freq, ax_gain) = fig.subplots(2, 2)
    marker = "o" if len(steps) <= _MARKER_STEPS else None
    size = 6 if len(steps) <= 3 else 3

    # 1. chosen vs mean reward per step, with the candidates' range as context.
    if len(steps) > 1:
        ax_curve.fill_between(series.steps, series.low, series.high, color="tab:gray",
                              alpha=0.2, linewidth=0, label="candidate range (min-max)")
    else:  # a band needs two steps: show the range as a bar
        ax_curve.vlines(series.steps, series.low, series.high, color="tab:gray", alpha=0.3,
                        linewidth=8, label="candidate range (min-max)")
    ax_curve.plot(series.steps, series.chosen, marker=marker, markersize=size,
                  color="tab:blue", label="chosen candidate")
    ax_curve.plot(series.steps, series.mean, linestyle="--", marker=marker, markersize=size,
                  color="tab:orange", label="mean of candidates")
    ax_curve.set_title("Chosen vs mean reward per step")
    ax_curve.set_xlabel("TTC step")
    ax_curve.set_ylabel("Reward (arb. units)")
    _step_axis(ax_curve, series.steps)
    ax_curve.legend(loc="best", fontsize=9)
    ax_curve.grid(True, alpha=0.3)

    # 2. distribution of every candidate's reward, the chosen ones overlaid.
    bins = max(5, min(30, int(math.sqrt(len(series.all_rewards))) + 1))
    lo, hi = min(series.all_rewards), max(series.all_rewards)
    value_range = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
    ax_hist.hist(series.all_rewards, bins=bins, range=value_range, color="tab:gray",
                 alpha=0.6, label=f"all candidates (n={len(series.all_rewards)})")
    ax_hist.hist(series.chosen, bins=bins, range=value_range, color="tab:blue",
                 alpha=0.8, label=f"chosen (n={len(series.chosen)})")
    ax_hist.set_title("Reward distribution")
    ax_hist.set_xlabel("Reward (arb. units)")
    ax_hist.set_ylabel("Count (candidates)")
    ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_hist.legend(loc="best", fontsize=9)
    ax_hist.grid(True, axis="y", alpha=0.3)

    # 3. how often each candidate index won.
    indices = list(range(len(series.chosen_counts)))
    bars = ax_freq.bar(indices, series.chosen_counts, color="tab:green")
    total = sum(series.chosen_counts)
    if len(indices) <= 16:
        ax_freq.bar_label(bars, labels=[f"{100.0 * c / total:.0f}%" if c else ""
                                        for c in series.chosen_counts], fontsize=8)
        ax_freq.set_xticks(indices)
    else:
        ax_freq.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_freq.margins(y=0.15)
    ax_freq.set_title("Candidate selection frequency")
    ax_freq.set_xlabel("Candidate index")
    ax_freq.set_ylabel("Times chosen (steps)")
    ax_freq.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_freq.grid(True, axis="y", alpha=0.3)

    # 4. gain of the chosen candidate over the first step's first candidate.
    ax_gain.axhline(0.0, color="black", linewidth=0.8)
    ax_gain.plot(series.steps, series.improvement, marker=marker, markersize=size,
                 color="tab:purple")
    reference = f"step {series.steps[0]:g}, candidate 0: reward {series.reference:.4g}"
    ax_gain.set_title("Improvement of the chosen reward over the first candidate\n"
                      + (f"({reference})" if series.improvement_is_percent
                         else f"({reference}, so an absolute difference, not %)"),
                      fontsize=11)
    ax_gain.set_xlabel("TTC step")
    ax_gain.set_ylabel(series.improvement_label)
    _step_axis(ax_gain, series.steps)
    ax_gain.grid(True, alpha=0.3)

    fig.savefig(path, dpi=dpi, format="png")
    return series
