"""History of a suite's gated runs: the table, change points, trend charts, gates.md text.

Change points come from ``ruptures`` (``KernelCPD`` with the linear kernel: the exact
least-squares segmentation of the series into constant levels, solved by PELT in C).
Each metric's series (log values when all are positive, so a level change is relative) is
scaled by a robust noise estimate (the median absolute deviation of successive
differences, which one level change barely moves), and a new level costs a BIC-like
penalty of ``PENALTY * log(n)``; with 4, pure noise shows a spurious change in about 5 %
of 20-run series and well under 1 % of 200-run ones. Changes smaller than
``MIN_CHANGE_PCT`` are merged into their neighbours. Series longer than ``COARSE`` runs
are segmented on block means first and each change is then placed exactly within its
block (same library, one change per window), which keeps 10,000 runs well inside a
second per metric.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gates.ledger import metric_names, read_runs, value_of

if TYPE_CHECKING:
    import pandas as pd

    from gates.store import BaselineStore

#: penalty per new level, in units of log(n) x noise variance (see the module docstring)
PENALTY = 4.0
#: level changes smaller than this (percent of the earlier level) are not reported
MIN_CHANGE_PCT = 1.0
#: fewest runs on each side of a change
MIN_SIZE = 2
#: longer series are segmented on block means first
COARSE = 2000
#: how many runs ``regime_note`` compares with by default
REGIME_K = 10
_NOISE_FLOOR = 1e-6  # relative: reruns that agree to 1e-6 are treated as exact
_PASSING = {"pass", "improved", "no_baseline", "warn", "promotable"}


@dataclass(frozen=True)
class ChangePoint:
    """``index`` is the position in the runs of the first run at the new level."""

    metric: str
    index: int
    run_id: str | None
    eval: str | None
    before: float
    after: float
    change_pct: float
    time: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("time")
        return data


# ---------------------------------------------------------------------------------------
# change points


def series(runs: Sequence[Mapping[str, Any]], metric: str) -> tuple[npt.NDArray[np.int64],
                                                                   npt.NDArray[np.float64]]:
    """Positions in ``runs`` that have a finite ``metric`` value, and those values."""
    where: list[int] = []
    values: list[float] = []
    isfinite = math.isfinite
    for i, run in enumerate(runs):
        entry = run.get("metrics", {}).get(metric)
        value = entry.get("value") if isinstance(entry, dict) else None
        if isinstance(value, float | int) and not isinstance(value, bool) and isfinite(value):
            where.append(i)
            values.append(float(value))
    return np.asarray(where, dtype=np.int64), np.asarray(values, dtype=np.float64)


def levels(values: npt.ArrayLike, *, penalty: float = PENALTY, min_size: int = MIN_SIZE,
           min_change_pct: float = MIN_CHANGE_PCT) -> list[int]:
    """Positions in ``values`` where a new level starts (empty: one level throughout)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2 * min_size:
        return []
    relative = bool(np.all(x > 0))
    signal = np.log(x) if relative else x
    sigma = _noise(signal, relative)
    if sigma == 0.0:  # every value identical
        return []
    z = (signal - np.median(signal)) / sigma
    starts = _segment(z, penalty, min_size)
    return _merge_small(x, starts, min_change_pct)


def _noise(signal: npt.NDArray[np.float64], relative: bool) -> float:
    """Robust noise level: MAD of successive differences / sqrt(2), with a floor.

    The floor (1e-6 relative) only stops float dust from counting as a level when most
    reruns agree exactly; 0 means every value is identical.
    """
    if np.all(signal == signal[0]):
        return 0.0
    diffs = np.diff(signal)
    mad = float(np.median(np.abs(diffs - np.median(diffs)))) / 0.6744897501960817
    scale = 1.0 if relative else max(float(np.median(np.abs(signal))), 1e-300)
    return max(mad / math.sqrt(2.0), _NOISE_FLOOR * scale)


#: scipy modules ruptures imports at load time for estimators we never use (rank, cosine
#: and RBF costs, the window method); they cost about a second of CPU to import
_DEFERRED = {"scipy.stats.mstats": ("rankdata",), "scipy.spatial.distance": ("pdist",
             "squareform", "cdist"), "scipy.signal": ("argrelmax",)}


def _ruptures() -> Any:
    """``import ruptures``, with its unused scipy imports deferred to their first call.

    While ruptures loads, each module in ``_DEFERRED`` that is not imported yet is a stand-in
    whose functions import the real one when called; the stand-ins are removed right after,
    so any later ``import scipy...`` is the real thing. Saves ~1 s per ``history`` command.
    """
    import sys
    import types

    if "ruptures" in sys.modules:
        return sys.modules["ruptures"]
    placed = []
    for name, functions in _DEFERRED.items():
        if name in sys.modules:
            continue
        stand_in = types.ModuleType(name)
        for function in functions:
            setattr(stand_in, function, _deferred(name, function))
        sys.modules[name] = stand_in
        placed.append(name)
    try:
        import ruptures
    finally:
        for name in placed:
            if sys.modules.get(name) is not None and not hasattr(sys.modules[name], "__file__"):
                del sys.modules[name]
    return ruptures


def _deferred(module: str, name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    return call


def _segment(z: npt.NDArray[np.float64], penalty: float, min_size: int) -> list[int]:
    rpt = _ruptures()

    n = z.size
    if n <= COARSE:
        ends = rpt.KernelCPD(kernel="linear", min_size=min_size).fit(z).predict(
            pen=penalty * math.log(n))
        return [int(b) for b in ends[:-1]]
    block = math.ceil(n / (COARSE // 2))
    m = n // block
    coarse = z[: m * block].reshape(m, block).mean(axis=1) * math.sqrt(block)
    ends = rpt.KernelCPD(kernel="linear", min_size=max(1, math.ceil(min_size / block)) + 1
                         ).fit(coarse).predict(pen=penalty * math.log(m))
    starts = []
    for b in ends[:-1]:  # refine: the exact change within the two blocks around it
        lo, hi = max(0, (b - 1) * block), min(n, (b + 1) * block)
        window = z[lo:hi]
        if window.size < 2 * min_size:
            starts.append(b * block)
            continue
        inner = rpt.KernelCPD(kernel="linear", min_size=min_size).fit(window).predict(
            n_bkps=1)
        starts.append(lo + int(inner[0]))
    return sorted({int(s) for s in starts})


def _merge_small(x: npt.NDArray[np.float64], starts: list[int],
                 min_change_pct: float) -> list[int]:
    """Drop the smallest change below ``min_change_pct`` until none is left."""
    starts = list(starts)
    while starts:
        bounds = [0, *starts, x.size]
        means = [float(x[a:b].mean()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        sizes = [abs(_pct(means[i], means[i + 1])) for i in range(len(starts))]
        smallest = int(np.argmin(sizes))
        if sizes[smallest] >= min_change_pct:
            break
        del starts[smallest]
    return starts


def _pct(before: float, after: float) -> float:
    if before == 0.0:
        return 0.0 if after == 0.0 else math.copysign(math.inf, after)
    return 100.0 * (after - before) / abs(before)


def change_points(runs: Sequence[Mapping[str, Any]], metrics: Iterable[str] | None = None,
                  *, penalty: float = PENALTY,
                  min_change_pct: float = MIN_CHANGE_PCT) -> list[ChangePoint]:
    """Level changes of each metric's series, in metric then run order."""
    found: list[ChangePoint] = []
    for metric in (metric_names(runs) if metrics is None else metrics):
        where, values = series(runs, metric)
        starts = levels(values, penalty=penalty, min_change_pct=min_change_pct)
        bounds = [0, *starts, values.size]
        for k, start in enumerate(starts):
            before = float(values[bounds[k]:start].mean())
            after = float(values[start:bounds[k + 2]].mean())
            run = runs[int(where[start])]
            found.append(ChangePoint(metric, int(where[start]), run.get("run_id"),
                                     run.get("eval"), before, after,
                                     round(_pct(before, after), 6), run.get("time")))
    return found


# ---------------------------------------------------------------------------------------
# regime note for a gate session


def regime_note(runs: Sequence[Mapping[str, Any]], metric: str, current_value: float | None,
                k: int = REGIME_K, *, higher_is_better: bool | None = None,
                min_change_pct: float = MIN_CHANGE_PCT) -> str | None:
    """A note when ``current_value`` sits in a new, worse level than the last ``k`` runs.

    ``runs`` are the ledger's records before this session (oldest first). The last ``k``
    finite values of ``metric`` plus the current one are segmented as in
    :func:`change_points`; when the current value belongs to a final level that is worse
    than the level before it by at least ``min_change_pct``, the note says since which
    run, by how much, and over how many runs. Direction from ``higher_is_better``, else
    the ledger, else the policy's name rules; unknown direction: no note. Never a failure.
    """
    if current_value is None or not math.isfinite(current_value) or k < 2:
        return None
    where, values = series(runs, metric)
    where, values = where[-k:], values[-k:]
    if values.size < 3:
        return None
    higher = _direction(runs, metric) if higher_is_better is None else higher_is_better
    if higher is None:
        return None
    full = np.append(values, current_value)
    starts = levels(full, min_size=1, min_change_pct=min_change_pct)
    if not starts:
        return None
    start = starts[-1]
    bounds = [0, *starts, full.size]
    before = float(full[bounds[-3]:start].mean())
    after = float(full[start:].mean())
    change = _pct(before, after)
    if (change > 0) == higher or abs(change) < min_change_pct:
        return None
    span = full.size - start
    if span == 1:
        return (f"{metric} = {current_value:.6g} is {abs(change):.1f} % worse than the level "
                f"of the last {start} runs ({before:.6g}): a new, worse level starts with "
                "this run if the next runs confirm it")
    since = runs[int(where[start])]
    label = since.get("run_id") or since.get("eval") or f"#{int(where[start])}"
    return (f"{metric} sits in a new, worse level: {after:.6g} over this run and the "
            f"{span - 1} before it, {abs(change):.1f} % worse than {before:.6g} before, "
            f"since run {label} ({since.get('time', '?')})")


def _direction(runs: Sequence[Mapping[str, Any]], metric: str) -> bool | None:
    for run in reversed(runs):
        entry = run.get("metrics", {}).get(metric)
        if isinstance(entry, Mapping) and entry.get("direction") in ("higher", "lower"):
            return bool(entry["direction"] == "higher")
    try:
        from gates.policy import Policy

        direction = Policy().direction(metric)
    except Exception:  # noqa: BLE001 - the policy module is optional here
        return None
    return None if direction is None else direction == "higher"


# ---------------------------------------------------------------------------------------
# selecting runs


def since_filter(runs: Sequence[Mapping[str, Any]], since: str | None,
                 now: datetime | None = None) -> list[dict[str, Any]]:
    """Runs at or after ``since``: an ISO date or time (UTC unless given) or ``7d``/``12h``."""
    if not since:
        return [dict(r) for r in runs]
    cutoff = parse_since(since, now)
    kept = []
    for run in runs:
        moment = _parse_time(run.get("time"))
        if moment is not None and moment >= cutoff:
            kept.append(dict(run))
    return kept


def parse_since(text: str, now: datetime | None = None) -> datetime:
    relative = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if relative:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[relative.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: float(relative.group(1))})
    moment = _parse_time(text)
    if moment is None:
        raise ValueError(f"--since {text!r}: give an ISO date or time "
                         "(2026-12-01, 2026-12-01T08:00Z) or an age such as 7d, 12h, 2w")
    return moment


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------
# the table, the JSON and gates.md


def history_json(suite: str, runs: Sequence[Mapping[str, Any]],
                 points: Sequence[ChangePoint]) -> dict[str, Any]:
    return {"suite": suite, "runs": list(runs), "change_points": [p.to_json() for p in points]}


def table_rows(runs: Sequence[Mapping[str, Any]], metrics: Sequence[str],
               points: Sequence[ChangePoint]) -> list[tuple[str, ...]]:
    """One row per run (oldest first): champion changes marked ``*``, change points noted."""
    marks: dict[int, list[str]] = {}
    for p in points:
        if p.metric in metrics:
            marks.setdefault(p.index, []).append(f"{p.metric} level {p.change_pct:+.1f}%")
    rows = []
    previous: Any = object()
    for i, run in enumerate(runs):
        champion = run.get("champion")
        label = f"v{champion}" if champion else "none"
        if previous is not object and i > 0 and champion != previous:
            label += " *"
        previous = champion
        promoted = f"-> v{run.get('new_champion')}" if run.get("promoted") else ""
        cells = [str(i), str(run.get("time") or "-"), _short(run.get("run_id")), label,
                 str(run.get("verdict") or "-"), promoted]
        for metric in metrics:
            value = value_of(run, metric)
            change = value_of(run, metric, "change_pct")
            status = (run.get("metrics", {}).get(metric) or {}).get("status", "")
            cells.append("-" if value is None else f"{value:.6g}")
            cells.append("" if change is None else f"{change:+.1f}%")
            cells.append(str(status))
        cells.append("; ".join(marks.get(i, [])))
        rows.append(tuple(cells))
    return rows


def table_header(metrics: Sequence[str]) -> tuple[str, ...]:
    cols = ["#", "time", "run", "champion", "verdict", "promoted"]
    for metric in metrics:
        cols += [metric, "change", "status"]
    return (*cols, "change point")


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        for j, cell in enumerate(row):
            if len(cell) > widths[j]:
                widths[j] = len(cell)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines.extend(fmt.format(*row) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _short(run_id: Any) -> str:
    text = str(run_id) if run_id else "-"
    return text if len(text) <= 24 else text[:21] + "..."


def primary_metric(store: BaselineStore, suite: str) -> str:
    try:
        return str(store.policy(suite).primary_metric)
    except Exception:  # noqa: BLE001 - a broken policy must not hide the history
        return "nrmse"


def default_metrics(store: BaselineStore, suite: str,
                    runs: Sequence[Mapping[str, Any]]) -> list[str]:
    names = metric_names(runs)
    primary = primary_metric(store, suite)
    return [primary] if primary in names else names[:1]


def history_markdown(store: BaselineStore, suite: str, last: int = 20) -> str:
    """A ``history`` section for gates.md: the last ``last`` runs and the primary metric's
    level changes (detected over the last 500 runs). Empty when the ledger is empty."""
    runs, _ = read_runs(store, suite)
    if not runs:
        return ""
    metric = primary_metric(store, suite)
    window = runs[-500:]
    offset = len(runs) - len(window)
    points = change_points(window, [metric])
    shown = runs[-last:] if last > 0 else runs
    first = len(runs) - len(shown)
    lines = [f"### history: {suite}", "",
             f"The last {len(shown)} of {len(runs)} gated runs (newest last); "
             f"`*` marks a new champion.", "",
             f"| # | time | run | champion | verdict | {metric} | change | promoted |",
             "| ---: | --- | --- | --- | --- | ---: | ---: | --- |"]
    previous = runs[first - 1].get("champion") if first > 0 else None
    for i, run in enumerate(shown, first):
        champion = run.get("champion")
        label = f"v{champion}" if champion else "none"
        if i > 0 and champion != previous:
            label += " *"
        previous = champion
        value = value_of(run, metric)
        change = value_of(run, metric, "change_pct")
        promoted = f"v{run.get('new_champion')}" if run.get("promoted") else ""
        lines.append(f"| {i} | {run.get('time', '')} | {_md(_short(run.get('run_id')))} | "
                     f"{label} | {run.get('verdict', '')} | "
                     f"{'-' if value is None else f'{value:.6g}'} | "
                     f"{'' if change is None else f'{change:+.1f}%'} | {promoted} |")
    if points:
        lines.append("")
        for p in points[-5:]:
            lines.append(f"- {metric} changed level at run #{p.index + offset} "
                         f"({_md(_short(p.run_id))}): {p.before:.6g} -> {p.after:.6g} "
                         f"({p.change_pct:+.1f} %)")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def history_line_plots(store: BaselineStore, suite: str,
                       metrics: Sequence[str] | None = None,
                       runs: Sequence[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Long-form rows for a W&B line plot: one row per (run, metric).

    Columns: ``index`` (position in the ledger), ``time``, ``run_id``, ``metric``,
    ``value``, ``champion_value`` (the champion it was gated against), ``verdict``,
    ``promoted``, ``failed`` (the metric's gate did not pass), ``change_point`` (a new
    level starts at this run). E.g. ``wandb.plot.line(wandb.Table(dataframe=df[df.metric
    == "nrmse"]), "index", "value")`` or one ``line_series`` over every metric.
    """
    import pandas as pd

    if runs is None:
        runs, _ = read_runs(store, suite)
    names = list(metrics) if metrics is not None else metric_names(runs)
    starts = {(p.metric, p.index) for p in change_points(runs, names)}
    rows = []
    for metric in names:
        for i, run in enumerate(runs):
            value = value_of(run, metric)
            if value is None:
                continue
            status = (run.get("metrics", {}).get(metric) or {}).get("status")
            rows.append({"index": i, "time": run.get("time"), "run_id": run.get("run_id"),
                         "metric": metric, "value": value,
                         "champion_value": value_of(run, metric, "baseline"),
                         "verdict": run.get("verdict"), "promoted": bool(run.get("promoted")),
                         "failed": status not in _PASSING,
                         "change_point": (metric, i) in starts})
    columns = ["index", "time", "run_id", "metric", "value", "champion_value", "verdict",
               "promoted", "failed", "change_point"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------
# trend charts


def trend_png(runs: Sequence[Mapping[str, Any]], metric: str,
              points: Sequence[ChangePoint], path: Path, *, suite: str = "") -> Path:
    """Value per run, the champion's value as a step line, promotions and failed gates
    marked, each new level shaded from its first run to the next change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    where, values = series(runs, metric)
    champ = np.array([value_of(runs[i], metric, "baseline") or np.nan for i in where],
                     dtype=np.float64)
    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    many = where.size > 300
    ax.plot(where, values, color="#1f77b4", lw=0.8 if many else 1.2,
            marker=None if many else "o", ms=3, label=f"{metric} per run")
    if np.isfinite(champ).any():
        ax.plot(where, champ, drawstyle="steps-post", color="#555555", lw=1.2, ls="--",
                label="champion gated against")
    status = [(runs[i].get("metrics", {}).get(metric) or {}).get("status") for i in where]
    failed = np.array([s not in _PASSING for s in status], dtype=bool)
    promoted = np.array([bool(runs[i].get("promoted")) for i in where], dtype=bool)
    if failed.any():
        ax.scatter(where[failed], values[failed], marker="x", color="#d62728", s=28,
                   zorder=3, label="gate failed")
    if promoted.any():
        ax.scatter(where[promoted], values[promoted], marker="^", color="#2ca02c", s=36,
                   zorder=3, label="promoted")
    mine = sorted((p for p in points if p.metric == metric), key=lambda p: p.index)
    end = float(where[-1]) + 0.5 if where.size else 0.5
    higher = _direction(runs, metric)
    for k, p in enumerate(mine):
        stop = mine[k + 1].index - 0.5 if k + 1 < len(mine) else end
        worse = None if higher is None else (p.change_pct > 0) != higher
        color = {True: "#d62728", False: "#2ca02c", None: "#ff7f0e"}[worse]
        ax.axvspan(p.index - 0.5, stop, color=color, alpha=0.10, lw=0)
        ax.axvline(p.index - 0.5, color=color, lw=1.0)
        ax.annotate(f"{p.change_pct:+.1f}%", (p.index, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -12), textcoords="offset points", fontsize=8, color=color)
    ax.set_xlabel("run (position in the ledger)")
    ax.set_ylabel(metric)
    ax.set_title(f"{suite}: {metric} over {where.size} runs" if suite else metric, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.subplots_adjust(left=0.09, right=0.98, top=0.9, bottom=0.15)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def chart_name(suite: str, metric: str) -> str:
    return f"history-{suite}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', metric)}.png"


# ---------------------------------------------------------------------------------------
# the command


def run_history(store: BaselineStore, suite: str, *, metrics: Sequence[str] | None = None,
                since: str | None = None, as_json: bool = False, out: Path | None = None,
                min_change_pct: float = MIN_CHANGE_PCT, last: int = 0) -> int:
    """``python -m gates history``: prints the table (or JSON) and writes trend PNGs.

    Change points are found over the runs selected by ``since``; ``index`` is the
    position in those runs. Without ``--json`` the charts go to ``out`` (default
    ``./gates-out``); with it, only when ``out`` is given.
    """
    import json
    import sys

    runs, warnings = read_runs(store, suite)
    for line in warnings:
        print(f"gates: warning: {line}", file=sys.stderr)
    runs = since_filter(runs, since)
    names = metric_names(runs)
    unknown = [m for m in metrics or [] if m not in names]
    if unknown and runs:
        print(f"gates: warning: no run of {suite} has {', '.join(unknown)} (metrics in the "
              f"ledger: {', '.join(names) or 'none'})", file=sys.stderr)
    chosen = [m for m in metrics if m in names] if metrics else names
    points = change_points(runs, chosen, min_change_pct=min_change_pct)
    if as_json:
        print(json.dumps(history_json(suite, runs, points), allow_nan=False, default=str))
    elif not runs:
        print(f"{suite}: no gated runs in the ledger"
              + (f" since {since}" if since else "") + " (baselines/<suite>/runs.jsonl)")
    else:
        shown = list(metrics) if metrics else default_metrics(store, suite, runs)
        shown = [m for m in shown if m in names]
        rows = table_rows(runs, shown, points)
        first = max(0, len(rows) - last) if last > 0 else 0
        print(render_table(table_header(shown), rows[first:]))
        champions = sum(1 for r in runs if r.get("promoted"))
        print(f"{suite}: {len(runs)} runs, {champions} promotions, "
              f"{len(points)} level changes in {len(chosen)} metrics "
              "(* = gated against a new champion)")
        for p in points:
            print(f"  {p.metric}: level change at run #{p.index} ({_short(p.run_id)}, "
                  f"{p.time}): {p.before:.6g} -> {p.after:.6g} ({p.change_pct:+.1f} %)")
    if runs and (out is not None or not as_json):
        folder = out if out is not None else Path("gates-out")
        written = [trend_png(runs, m, points, folder / chart_name(suite, m), suite=suite)
                   for m in chosen]
        if written:
            print(f"gates: {len(written)} trend chart(s) in {folder}",
                  file=sys.stderr if as_json else sys.stdout)
    return 0
