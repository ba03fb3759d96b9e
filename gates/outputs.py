"""Local sinks: the terminal table, ``gates.json`` and ``gates.md``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gates.model import Outcome, Status
from gates.result import SessionResult

COLUMNS = ("gate", "metric", "baseline", "current", "change", "threshold", "status")


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
    ev = o.evidence
    if not ev or ev.get("method") in (None, "threshold-only"):
        return ""
    parts = [str(ev["method"])]
    if ev.get("ci_low") is not None and ev.get("ci_high") is not None:
        parts.append(f"CI [{100 * float(ev['ci_low']):+.1f}%, {100 * float(ev['ci_high']):+.1f}%]")
    if ev.get("p_value") is not None:
        parts.append(f"p={float(ev['p_value']):.3g}")
    if ev.get("n") is not None:
        parts.append(f"n={ev['n']}")
    if ev.get("detectable") is not None:
        parts.append(f"detectable {100 * float(ev['detectable']):.1f}%")
    return ", ".join(parts)


def text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return [line.format(*header), line.format(*("-" * w for w in widths)),
            *(line.format(*r) for r in body)]


def terminal_lines(result: SessionResult) -> list[tuple[str, dict[str, Any]]]:
    bad = [o for o in result.outcomes if o.kind == "input"]
    if bad:
        return [(f"gates: bad input: {o.message}", {"red": True, "bold": True}) for o in bad] \
            + [(result.verdict_line(), {"red": True, "bold": True})]
    body = rows(result.outcomes)
    out: list[tuple[str, dict[str, Any]]] = []
    table = text_table(COLUMNS, body)
    out += [(table[0], {"bold": True}), (table[1], {})]
    for text, outcome in zip(table[2:], result.outcomes, strict=True):
        colour = {"fail": "red", "error": "red", "no_baseline": "yellow",
                  "improved": "green"}.get(str(outcome.status), "")
        out.append((text, {colour: True} if colour else {}))
    with_evidence = [(o.id, evidence_text(o)) for o in result.outcomes if evidence_text(o)]
    if with_evidence:
        out.append(("evidence:", {"bold": True}))
        out += [(f"  {gid}: {text}", {}) for gid, text in with_evidence]
    for outcome in result.failed:
        out.append((f"{outcome.id}: {outcome.message}", {"red": True}))
    for note in result.notes:
        out.append((f"note: {note}", {"yellow": True}))
    if result.files:
        out.append((f"gates: outputs in {result.out_dir}", {}))
    out.append((result.verdict_line(), {"bold": True, "green" if result.verdict == "pass"
                                        else "red": True}))
    return out


def write_json(result: SessionResult, path: Path) -> Path:
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def md_table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


STATUS_ICON = {Status.PASS: "✅", Status.IMPROVED: "🟢", Status.NO_BASELINE: "⚪",
               Status.FAIL: "❌", Status.ERROR: "💥"}


def markdown(result: SessionResult, charts: Sequence[Path] = ()) -> str:
    head = "✅ PASS" if result.verdict == "pass" else "❌ FAIL"
    parts = [f"## Gates: {head}", "", result.verdict_line(), "",
             f"- evaluation: `{result.eval_path}`",
             f"- suite: `{result.suite}`, champion: "
             + (f"v{result.baseline_version}" if result.baseline_version else "none yet")]
    if result.promoted:
        parts.append(f"- promoted: new champion **v{result.new_baseline_version}**")
    parts += [f"- note: {n}" for n in result.notes]
    body = [(STATUS_ICON[o.status] + " " + str(o.status), *r[:-1], o.message,
             evidence_text(o)) for o, r in zip(result.outcomes, rows(result.outcomes),
                                                strict=True)]
    parts += ["", md_table(("status", *COLUMNS[:-1], "message", "evidence"), body)]
    for chart in charts:
        parts += ["", f"![{chart.stem}]({chart.name})"]
    if result.dashboards is not None:
        parts += ["", result.dashboards.markdown()]
    return "\n".join(parts).rstrip() + "\n"


def write_markdown(result: SessionResult, path: Path, charts: Sequence[Path] = ()) -> Path:
    text = markdown(result, charts)
    path.write_text(text, encoding="utf-8")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return path
