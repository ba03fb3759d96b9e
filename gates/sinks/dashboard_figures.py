"""The test-time-compute (TTC) figure and the numbers behind it.

Kept apart from :mod:`gates.sinks.dashboards` so the table code never pays for
matplotlib: matplotlib is imported inside :func:`render_ttc_summary` only, and the figure is
drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no global
state, no display needed in CI).

What is plotted follows what the evaluator did: entries in log order (several TTC steps
may share one batch index), the chosen candidate's reward and total, the candidates' mean
reward, and the improvement measured the way the candidate was chosen, by ``totals``
(``chosen = argmax(totals)``), over candidate 0 of the same entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gates.inputs.ttc import TTCStep

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Below this many steps every point gets a marker; above it markers would only clutter.
_MARKER_STEPS = 60
_MAX_TICKS = 12


@dataclass(frozen=True)
class TTCSeries:
    """Per-entry series for the figure and the line chart, computed once."""

    positions: list[float]  # 0, 1, 2, ...: the log order
    labels: list[str]  # "b<batch>.<ttc step>"
    chosen_reward: list[float]
    chosen_total: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    all_rewards: list[float]
    chosen_counts: list[int]  # index i: how many entries chose candidate i
    improvement: list[float]
    improvement_is_percent: bool
    by_totals: bool  # False: an older log without totals, improvement by rewards

    @property
    def score_name(self) -> str:
        return "total" if self.by_totals else "reward"

    @property
    def improvement_label(self) -> str:
        return ("Improvement (%)" if self.improvement_is_percent
                else f"Improvement ({self.score_name} units, absolute)")

    @property
    def improvement_title(self) -> str:
        how = "chosen = argmax of totals" if self.by_totals else "no totals in the log: rewards"
        return (f"Improvement of the chosen candidate's {self.score_name} over candidate 0\n"
                f"({how}{'' if self.improvement_is_percent else '; absolute, not %'})")


def ttc_series(steps: Sequence[TTCStep]) -> TTCSeries:
    """Derive every plotted quantity; safe for ragged, single-step and constant rewards.

    Improvement of an entry is ``100 * (s[chosen] - s[0]) / |s[0]|`` with ``s`` its totals
    (its rewards in a log without totals). When some ``s[0]`` is 0 (or a ratio is not
    finite) a percentage means nothing, so the absolute difference is used and labelled so.
    """
    if not steps:
        raise ValueError("no TTC steps")
    by_totals = all(s.totals is not None for s in steps)
    scores = [s.scores if by_totals else s.rewards for s in steps]
    width = max(len(s.rewards) for s in steps)
    counts = [0] * width
    for s in steps:
        counts[s.chosen] += 1
    diffs = [sc[s.chosen] - sc[0] for s, sc in zip(steps, scores, strict=True)]
    firsts = [sc[0] for sc in scores]
    is_percent = all(f != 0.0 and math.isfinite(f) for f in firsts)
    percent: list[float] = []
    if is_percent:
        try:
            percent = [100.0 * d / abs(f) for d, f in zip(diffs, firsts, strict=True)]
        except (OverflowError, ZeroDivisionError):
            is_percent = False
        is_percent = is_percent and all(math.isfinite(p) for p in percent)
    return TTCSeries(
        positions=[float(i) for i in range(len(steps))],
        labels=[f"b{s.step:g}.{s.ttc_step}" for s in steps],
        chosen_reward=[s.chosen_reward for s in steps],
        chosen_total=[sc[s.chosen] for s, sc in zip(steps, scores, strict=True)],
        mean=[s.mean_reward for s in steps],
        low=[min(s.rewards) for s in steps],
        high=[max(s.rewards) for s in steps],
        all_rewards=[r for s in steps for r in s.rewards],
        chosen_counts=counts,
        improvement=percent if is_percent else diffs,
        improvement_is_percent=is_percent,
        by_totals=by_totals,
    )


def _subtitle(steps: Sequence[TTCStep]) -> str:
    widths = {len(s.rewards) for s in steps}
    batches = len({s.step for s in steps})
    parts = [f"{len(steps)} step{'s' if len(steps) != 1 else ''} over {batches} "
             f"batch{'es' if batches != 1 else ''}"]
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


def _step_axis(ax: Axes, series: TTCSeries) -> None:
    """Ticks name the batch and TTC step (``b3.1``); a lone step gets a window around it."""
    positions = series.positions
    if len(positions) == 1:
        ax.set_xlim(-1.0, 1.0)
    stride = max(1, math.ceil(len(positions) / _MAX_TICKS))
    ticks = positions[::stride]
    ax.set_xticks(ticks)
    ax.set_xticklabels(series.labels[::stride], fontsize=8,
                       rotation=45 if len(ticks) > 6 else 0)
    ax.set_xlabel("Step in log order (b<batch>.<TTC step>)")


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
    x = series.positions

    # 1. the chosen candidate's reward and total, and the mean reward, per step.
    if len(steps) > 1:
        ax_curve.fill_between(x, series.low, series.high, color="tab:gray",
                              alpha=0.2, linewidth=0, label="candidate rewards (min-max)")
    else:  # a band needs two steps: show the range as a bar
        ax_curve.vlines(x, series.low, series.high, color="tab:gray", alpha=0.3,
                        linewidth=8, label="candidate rewards (min-max)")
    ax_curve.plot(x, series.chosen_reward, marker=marker, markersize=size,
                  color="tab:blue", label="chosen candidate: reward")
    if series.by_totals:
        ax_curve.plot(x, series.chosen_total, marker=marker, markersize=size,
                      color="tab:red", linestyle=":", label="chosen candidate: total")
    ax_curve.plot(x, series.mean, linestyle="--", marker=marker, markersize=size,
                  color="tab:orange", label="mean reward of candidates")
    ax_curve.set_title("Chosen candidate (by totals) and mean reward per step"
                       if series.by_totals else "Chosen vs mean reward per step")
    ax_curve.set_ylabel("Reward / total (arb. units)")
    _step_axis(ax_curve, series)
    ax_curve.legend(loc="best", fontsize=9)
    ax_curve.grid(True, alpha=0.3)

    # 2. distribution of every candidate's reward, the chosen ones overlaid.
    bins = max(5, min(30, int(math.sqrt(len(series.all_rewards))) + 1))
    lo, hi = min(series.all_rewards), max(series.all_rewards)
    value_range = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
    ax_hist.hist(series.all_rewards, bins=bins, range=value_range, color="tab:gray",
                 alpha=0.6, label=f"all candidates (n={len(series.all_rewards)})")
    ax_hist.hist(series.chosen_reward, bins=bins, range=value_range, color="tab:blue",
                 alpha=0.8, label=f"chosen (n={len(series.chosen_reward)})")
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

    # 4. gain of the chosen candidate over candidate 0, as the evaluator measures it.
    ax_gain.axhline(0.0, color="black", linewidth=0.8)
    ax_gain.plot(x, series.improvement, marker=marker, markersize=size, color="tab:purple")
    ax_gain.set_title(series.improvement_title, fontsize=11)
    ax_gain.set_ylabel(series.improvement_label)
    _step_axis(ax_gain, series)
    ax_gain.grid(True, alpha=0.3)

    fig.savefig(path, dpi=dpi, format="png")
    return series
