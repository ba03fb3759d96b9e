"""PNG charts of a gate session: regression changes against their thresholds, and
physics values against their ceilings. matplotlib is imported here only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from gates.model import Outcome

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_BARS = 40
COLOURS = {"pass": "#4c9a2a", "improved": "#1f77b4", "no_baseline": "#9e9e9e",
           "warn": "#ff9f1c", "fail": "#d62728", "changed": "#9467bd",
           "incomparable": "#8c564b", "error": "#8c1c13"}


def _figure(height: float) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _status_legend(ax: Axes, gates: list[Outcome], extra: bool = False) -> None:
    from matplotlib.patches import Patch

    statuses = sorted({str(o.status) for o in gates}, key=list(COLOURS).index)
    handles = [Patch(color=COLOURS[s], label=s) for s in statuses]
    if extra:
        ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], loc="lower right",
                  fontsize=8)
    else:
        ax.legend(handles=handles, loc="best", fontsize=8, title="status", title_fontsize=8)


def change_chart(outcomes: list[Outcome], path: Path) -> Path | None:
    """One bar per regression gate: change in % (positive = worse) against its limit."""
    gates = [o for o in outcomes if o.kind == "regression" and o.change_pct is not None
             and math.isfinite(o.change_pct)]
    if not gates:
        return None
    if len(gates) > MAX_BARS:  # keep it legible: the failures first, then the largest changes
        gates = sorted(gates, key=lambda o: (o.passed, -abs(o.change_pct or 0.0)))[:MAX_BARS]
    fig, ax = _figure(1.2 + 0.32 * len(gates))
    worse = [o.change_pct if (o.evidence.get("direction", "lower") == "lower") else
             -o.change_pct for o in gates if o.change_pct is not None]
    # a change of +30,000 % would flatten every other bar: clip, and print the real value
    limit = max(25.0, 2.5 * max((o.threshold or 0.0) for o in gates))
    shown_values = [min(max(w, -limit), limit) for w in worse]
    labels = [o.metric for o in gates]
    ys = range(len(gates))
    ax.barh(ys, shown_values, color=[COLOURS.get(str(o.status), "#555") for o in gates])
    for y, o, w, v in zip(ys, gates, worse, shown_values, strict=True):
        if o.threshold is not None:
            ax.plot([o.threshold, o.threshold], [y - 0.4, y + 0.4], color="black", lw=1.5)
        if w != v:
            ax.text(v * 0.97, y, f"{w:+.0f}%", va="center", ha="right" if v > 0 else "left",
                    fontsize=8, color="white", fontweight="bold")
    ax.set_xlim(-limit * 1.05, limit * 1.05)
    ax.axvline(0, color="#444", lw=0.8)
    _status_legend(ax, gates)
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    ax.set_xlabel("change against the champion, % (positive = worse; black tick = allowed)",
                  fontsize=9)
    shown = f" ({len(gates)} shown: failures and largest changes first)" \
        if len(gates) == MAX_BARS else ""
    ax.set_title("Regression gates: change against threshold" + shown)
    fig.savefig(path, dpi=110)
    return path


def physics_chart(outcomes: list[Outcome], path: Path) -> Path | None:
    """Each physics ceiling and spike: the value as a share of its limit, labelled with
    both (a spike's limit is its factor times the champion's value)."""
    gates = [o for o in outcomes if o.kind == "physics" and o.current is not None
             and o.threshold and o.id.endswith(("/ceiling", "/spike"))]
    if not gates:
        return None
    fig, ax = _figure(1.4 + 0.45 * len(gates))
    shares = [100.0 * (o.current or 0.0) / (o.threshold or 1.0) for o in gates]
    shown = [min(s, 150.0) if math.isfinite(s) else 150.0 for s in shares]
    ys = range(len(gates))
    ax.barh(ys, shown, color=[COLOURS.get(str(o.status), "#555") for o in gates])
    ax.axvline(100, color="black", lw=1.5, ls="--", label="limit")
    for y, o, s in zip(ys, gates, shown, strict=True):
        ax.text(s + 1, y, f"{o.current:.3g} / {o.threshold:.3g}", va="center", fontsize=8)
    labels = [f"{o.metric} ({o.id.rsplit('/', 1)[1]})" for o in gates]
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 175)
    ax.set_xlabel("value as % of its limit (value / limit at bar end; spike limit = factor x "
                  "champion)")
    ax.set_title("Physics gates: values against ceilings and spikes")
    _status_legend(ax, gates, extra=True)
    fig.savefig(path, dpi=110)
    return path


def render_all(outcomes: list[Outcome], out_dir: Path) -> list[Path]:
    """Every chart of a session; the paths of those drawn."""
    drawn = (change_chart(outcomes, out_dir / "gates_change.png"),
             physics_chart(outcomes, out_dir / "gates_physics.png"))
    return [p for p in drawn if p is not None]

