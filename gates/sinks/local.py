"""Local sinks: the terminal summary, ``gates.json``, ``gates.md`` and the PNG charts,
written next to the evaluation (``--gates-out``)."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gates.model import Outcome, Status
from gates.result import SessionResult

if TYPE_CHECKING:
    from gates.plan import Plan
    from gates.sinks.charts import ChartProcess

COLUMNS = ("gate", "metric", "baseline", "current", "change", "threshold", "status")
#: hidden marker by which a workflow finds and updates its one pull-request comment
MARKER = "<!-- physics-gates -->"
#: passing rows shown in the terminal beyond which the table points to gates.md instead
TERMINAL_PASSING_ROWS = 40
STATUS_ICON = {Status.PASS: "✅", Status.IMPROVED: "🟢", Status.NO_BASELINE: "⚪",
               Status.WARN: "⚠️", Status.FAIL: "❌", Status.CHANGED: "❓",
               Status.INCOMPARABLE: "🚫", Status.ERROR: "💥", Status.PROMOTABLE: "🏆",
               Status.NOT_PROMOTABLE: "➖"}
COLOUR = {"fail": "red", "error": "red", "changed": "red", "incomparable": "red",
          "warn": "yellow", "no_baseline": "yellow", "not_promotable": "yellow",
          "improved": "green", "promotable": "green"}


class LocalSink:
    """Writes the charts, ``gates.json`` and ``gates.md``; runs before every other sink.

    Created when a gate session is configured, so that its chart process
    (:class:`gates.sinks.charts.ChartProcess`) loads matplotlib while pytest loads the
    plan, and draws the planned charts while the checks run. A session whose plan came
    only at its end (custom gates, no built-in ones asked for) starts one there.
    """

    def __init__(self, *, charts: bool = True) -> None:
        self.charts: ChartProcess | None = None
        self.chart_problem: str | None = None  # why the charts could not start, if so
        if charts:
            self._charts()

    def start(self, plan: Plan) -> None:
        """The plan is known: the charts draw while the checks run."""
        charts = self.charts
        if charts is not None:
            self._charts(lambda: charts.plan(plan.outcomes))

    def _charts(self, step: Callable[[], None] | None = None) -> None:
        """Start the chart process, or give it an order; trouble is a note, never an end."""
        from gates.sinks.charts import ChartProcess

        try:
            if self.charts is None:
                self.charts = ChartProcess()
            if step is not None:
                step()
        except (OSError, RuntimeError) as exc:
            self.chart_problem = str(exc)
            self.close()

    def close(self) -> None:
        """End this session's turn with the chart process (which stays for the next)."""
        if self.charts is not None:
            self.charts.abort()
            self.charts = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_gates_session_finished(self, result: SessionResult) -> None:
        out = result.out_dir
        out.mkdir(parents=True, exist_ok=True)
        pictures: list[Path] = []
        if result.plan is not None:
            if self.charts is None and self.chart_problem is None:  # planned at the end
                self._charts()
            charts, self.charts = self.charts, None
            try:
                if charts is None:
                    raise RuntimeError(self.chart_problem)
                pictures = charts.finish(result.outcomes, out)
            except (OSError, RuntimeError, ValueError) as exc:
                result.notes.append(f"charts not drawn: {exc}")
        self.close()
        result.files = [*pictures]
        result.files.append(write_markdown(result, out / "gates.md", pictures))
        result.files.insert(0, out / "gates.json")
        write_json(result, out / "gates.json")


def fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:+.2f}%" if pct else f"{value:.4g}"


def rows(outcomes: Iterable[Outcome]) -> list[tuple[str, ...]]:
    return [(o.id, o.metric, fmt(o.baseline), fmt(o.current), fmt(o.change_pct, True),
             _threshold(o), str(o.status)) for o in outcomes]


def _threshold(o: Outcome) -> str:
    if o.threshold is None:
        return "-"
    return f"{o.threshold:g}%" if o.kind in ("regression", "promotion") else f"{o.threshold:.4g}"


def evidence_text(o: Outcome) -> str:
    """change, interval, p-value, n, detectable change and seed (``gates.evidence``)."""
    from gates.evidence import evidence_line

    return evidence_line(o.evidence)


def text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return [line.format(*header), line.format(*("-" * w for w in widths)),
            *(line.format(*r) for r in body)]


def terminal_lines(result: SessionResult) -> list[tuple[str, dict[str, Any]]]:
    """The gates section of pytest's summary. A failure's message is already in pytest's
    own summary; here each gate is one table row, and evidence is shown for the rest."""
    if result.input_error is not None:
        return [(f"gates: bad input: {result.input_error}", {"red": True, "bold": True}),
                (result.verdict_line(), {"red": True, "bold": True})]
    shown = [o for o in result.outcomes if o.status != Status.PASS]
    passing = [o for o in result.outcomes if o.status == Status.PASS]
    shown += passing[:TERMINAL_PASSING_ROWS]
    rank = {id(o): i for i, o in enumerate(result.outcomes)}
    shown.sort(key=lambda o: rank[id(o)])
    out: list[tuple[str, dict[str, Any]]] = []
    table = text_table(COLUMNS, rows(shown))
    out += [(table[0], {"bold": True}), (table[1], {})]
    for text, outcome in zip(table[2:], shown, strict=True):
        colour = COLOUR.get(str(outcome.status))
        out.append((text, {colour: True} if colour else {}))
    if len(shown) < len(result.outcomes):
        out.append((f"... and {len(result.outcomes) - len(shown)} more passing gates "
                    f"(every row in gates.md and gates.json)", {}))
    with_evidence = [(o.id, evidence_text(o)) for o in shown if o.passed
                     and o.evidence.get("method") not in (None, "threshold-only")]
    if with_evidence:
        out.append(("evidence:", {"bold": True}))
        out += [(f"  {gid}: {text}", {}) for gid, text in with_evidence]
    out.append((result.promotion_line(), {"green" if result.promotable else "yellow": True}))
    for note in result.notes:
        out.append((f"note: {note}", {"yellow": True}))
    if result.files:
        out.append((f"gates: outputs in {result.out_dir}", {}))
    out.append((result.verdict_line(), {"bold": True, "green" if result.verdict == "pass"
                                        else "red": True}))
    return out


def write_json(result: SessionResult, path: Path) -> Path:
    """``gates.json``: a key a line and a gate a line. (``json.dumps(indent=...)`` runs
    Python's pure-Python encoder, 0.1 ms a gate; without indent the C encoder runs.)"""
    encode = json.JSONEncoder(allow_nan=False, default=_json_default).encode
    fields = []
    for key, value in result.to_json().items():
        text = "[\n" + ",\n".join(f"    {encode(g)}" for g in value) + "\n  ]" \
            if key == "gates" and value else encode(value)
        fields.append(f"  {encode(key)}: {text}")
    write_atomic(path, "{\n" + ",\n".join(fields) + "\n}\n")
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def write_atomic(path: Path, text: str) -> None:
    """A reader never sees half a file: write a temporary file beside it, then rename. The
    file keeps the permissions it had (new: those ``open`` gives), not mkstemp's 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, _mode_of(path))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_of(path: Path) -> int:
    """The permission bits ``path`` has, or those a new file gets under this umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        pass
    try:  # Linux says the umask without changing it (no window for other threads)
        with open("/proc/self/status", encoding="ascii") as status:
            umask = next(int(line.split()[1], 8) for line in status
                         if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def md_table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    """The one Markdown table writer: pipes escaped, newlines folded."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def markdown(result: SessionResult, charts: Sequence[Path] = ()) -> str:
    head = {"pass": "✅ PASS", "fail": "❌ FAIL"}.get(result.verdict, "💥 ERROR")
    parts = [MARKER, f"## Gates: {head}", "", result.verdict_line(), "",
             f"- evaluation: `{result.eval_path}`",
             f"- suite: `{result.suite}`, champion: "
             + (f"v{result.baseline_version}" if result.baseline_version else "none yet"),
             f"- {result.promotion_line()}"]
    if result.input_error is not None:
        parts.append(f"- bad input: {result.input_error}")
    parts += [f"- note: {n}" for n in result.notes]
    body = [(STATUS_ICON.get(o.status, "") + " " + str(o.status), *r[:-1], o.message, ev)
            for o, r, ev in zip(result.outcomes, rows(result.outcomes), result.evidence_lines,
                                strict=True)]
    if result.input_error is None:
        parts += ["", md_table(("status", *COLUMNS[:-1], "message", "evidence"), body)]
    for chart in charts:
        parts += ["", f"![{chart.stem}]({chart.name})"]
    if result.dashboards is not None:
        parts += ["", result.dashboards.markdown()]
    parts += _store_sections(result)
    return "\n".join(parts).rstrip() + "\n"


def _store_sections(result: SessionResult) -> list[str]:
    """The suite's recent runs (from its ledger) and its measured false-failure rate."""
    plan = result.plan
    if plan is None:
        return []
    from gates.calibrate import calibration_markdown
    from gates.history import history_markdown

    texts = (history_markdown(plan.store, plan.suite), calibration_markdown(plan.store,
                                                                             plan.suite))
    return [part for text in texts if text for part in ("", text)]


def write_markdown(result: SessionResult, path: Path, charts: Sequence[Path] = ()) -> Path:
    write_atomic(path, markdown(result, charts))
    return path
