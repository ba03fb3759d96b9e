"""GitHub Actions output: annotations, step outputs and the job summary.

Registered by ``gates.plugin`` when ``GITHUB_ACTIONS=true``:

- one ``::error title=...::`` line per gate that failed the verdict, ``::warning`` for a
  ``warn`` gate and for a run that is not promotable (with its reasons);
- ``$GITHUB_OUTPUT``: ``verdict`` (pass/fail/error), ``promotable`` and ``promoted``
  (true/false), ``new_baseline_version`` (empty unless promoted), ``gates_json`` (the
  whole ``gates.json``, in the multi-line-safe ``key<<DELIMITER`` form), ``gates_json_path``
  and ``out_dir``;
- ``gates.md`` appended to ``$GITHUB_STEP_SUMMARY``.

A file it cannot write is a warning line, never a failure.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gates.model import Outcome
    from gates.result import SessionResult

#: failing statuses: an ``::error`` annotation each
ERROR_STATUSES = ("fail", "changed", "incomparable", "error")
#: the largest ``gates_json`` output written whole (GitHub allows 1 MiB per output)
MAX_OUTPUT = 512 * 1024
#: the largest job summary written whole (GitHub allows 1 MiB per step)
MAX_SUMMARY = 1000 * 1024
_IMAGE = re.compile(r"^!\[[^\]]*\]\((?!https?://)[^)]*\)\s*$")


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **properties: str) -> str:
    """One workflow command line, e.g. ``::error title=x::message``."""
    props = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items() if v)
    return f"::{kind}{' ' + props if props else ''}::{escape_data(message)}"


def _describe(outcome: Outcome) -> str:
    parts = [outcome.message] if outcome.message else []
    values = [f"{name} {value:.6g}" for name, value in (("current", outcome.current),
                                                       ("baseline", outcome.baseline))
              if isinstance(value, int | float)]
    if values and not outcome.message:
        parts.append(", ".join(values))
    return "; ".join(parts) or str(outcome.status)


def annotation_lines(result: SessionResult) -> list[str]:
    """The annotation lines of a session."""
    lines: list[str] = []
    for outcome in result.outcomes:
        status = str(outcome.status)
        if status in ERROR_STATUSES:
            kind = "error"
        elif status == "warn":
            kind = "warning"
        else:
            continue
        title = f"gates: {outcome.id} {status}"
        lines.append(command(kind, _describe(outcome), title=title))
    if result.verdict == "pass" and not result.promotable and not result.promoted:
        reasons = "; ".join(result.promotion_reasons) or "no reason recorded"
        lines.append(command("warning", reasons,
                             title=f"gates: {result.suite or 'suite'} not promotable"))
    return lines


def _report(result: SessionResult) -> dict[str, Any]:
    to_json = getattr(result, "to_json", None)
    if callable(to_json):
        return dict(to_json())
    path = Path(result.out_dir) / "gates.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _compact(report: Mapping[str, Any]) -> str:
    text = json.dumps(report, separators=(",", ":"), default=str)
    if len(text.encode("utf-8")) <= MAX_OUTPUT:
        return text
    # too large for one step output: keep everything but the passing gates
    gates = list(report.get("gates", []))
    kept = [g for g in gates if g.get("status") in (*ERROR_STATUSES, "warn")]
    smaller = {**report, "gates": kept, "gates_omitted": len(gates) - len(kept)}
    return json.dumps(smaller, separators=(",", ":"), default=str)


def outputs(result: SessionResult) -> dict[str, str]:
    """The ``$GITHUB_OUTPUT`` values of a session."""
    out_dir = Path(result.out_dir)
    version = result.new_baseline_version if result.promoted else None
    return {
        "verdict": str(result.verdict),
        "promotable": "true" if result.promotable else "false",
        "promoted": "true" if result.promoted else "false",
        "new_baseline_version": "" if version is None else str(version),
        "gates_json": _compact(_report(result)),
        "gates_json_path": str(out_dir / "gates.json"),
        "out_dir": str(out_dir),
    }


def output_block(values: Mapping[str, str]) -> str:
    """``$GITHUB_OUTPUT`` text: every value in the ``key<<DELIMITER`` form."""
    chunks = []
    for key, value in values.items():
        delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
        while delimiter in value:  # pragma: no cover - a 128-bit collision
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
        chunks.append(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(chunks)


def summary_markdown(result: SessionResult) -> str | None:
    """``gates.md`` for the job summary, without its local chart pictures (the summary
    cannot show files of the runner's disk)."""
    md = next((Path(f) for f in result.files if Path(f).name == "gates.md"),
              Path(result.out_dir) / "gates.md")
    if not md.is_file():
        return None
    lines = [line for line in md.read_text(encoding="utf-8").splitlines()
             if not _IMAGE.match(line)]
    text = "\n".join(lines).rstrip() + "\n"
    if len(text.encode("utf-8")) > MAX_SUMMARY:  # GitHub refuses a larger step summary
        cut = text.encode("utf-8")[:MAX_SUMMARY].decode("utf-8", "ignore").rsplit("\n", 1)[0]
        text = f"{cut}\n\n(cut at {MAX_SUMMARY // 1024} KiB: the whole file is {md})\n"
    return text


def _append(variable: str, text: str, env: Mapping[str, str], stream: IO[str]) -> None:
    target = env.get(variable)
    if not target:
        return
    try:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        message = f"could not write ${variable} ({target}): {exc.strerror or exc}"
        stream.write(command("warning", message, title="gates") + "\n")


class GithubSink:
    """The GitHub Actions sink (a plugin of the ``pytest_gates_session_finished`` hook)."""

    def __init__(self, env: Mapping[str, str] | None = None,
                 stream: IO[str] | None = None) -> None:
        self.env = env
        self.stream = stream

    def pytest_gates_session_finished(self, result: SessionResult) -> None:
        env = os.environ if self.env is None else self.env
        lines = annotation_lines(result)
        problems = io.StringIO()
        _append("GITHUB_OUTPUT", output_block(outputs(result)), env, problems)
        summary = summary_markdown(result)
        if summary is not None:
            _append("GITHUB_STEP_SUMMARY", summary + "\n", env, problems)
        lines += problems.getvalue().splitlines()
        if lines:
            # a workflow command counts only at the start of a line, and pytest's progress
            # line may still be open: start a fresh one
            stream = self.stream or sys.stdout
            stream.write("\n" + "\n".join(lines) + "\n")
            stream.flush()


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Is this session running in GitHub Actions?"""
    return (os.environ if env is None else env).get("GITHUB_ACTIONS", "").lower() == "true"
