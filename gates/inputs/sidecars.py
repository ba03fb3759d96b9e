"""The one discovery of the files an evaluator wrote beside its report.

universal-simulator's writer names its outputs from one prefix: ``<prefix>.json``,
``<prefix>_samples.npz``, ``<prefix>_ttc_step_logs.json``, ``<prefix>.config.yaml``,
``<prefix>_preview.npz``. The report's name comes from ``Path(prefix).with_suffix(".json")``,
so a prefix with a dot (``eval_tau0.5``) gives the report ``eval_tau0.json`` while the
sidecars keep ``eval_tau0.5_*``: a sidecar is found under the report's stem, or under the
stem plus one dotted part when no file of that kind has the stem itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gates.errors import GateInputError

#: kind -> file-name endings after the prefix, in order of preference
SUFFIXES: dict[str, tuple[str, ...]] = {
    "samples": ("_samples.npz",),
    "ttc_log": ("_ttc_step_logs.json",),
    "config": (".config.yaml", ".config.yml"),
    "preview": ("_preview.npz",),
}


#: universal-simulator's orchestrator layout: artifacts/runs/<run>/<stage>_eval/results.json
_ORCHESTRATOR_EVAL = re.compile(r"^(small|full)_eval(?:_lightning)?$")


def orchestrator_run(report: Path | None) -> tuple[str, str] | None:
    """``(run, stage)`` of a report in the orchestrator's layout
    (``artifacts/runs/<run>/{small,full}_eval[_lightning]/results.json``), else None."""
    if report is None:
        return None
    match = _ORCHESTRATOR_EVAL.match(report.parent.name)
    if match is None or not report.parent.parent.name:
        return None
    return report.parent.parent.name, match.group(1)


def discover_sidecars(report_path: Path) -> dict[str, Path]:
    """Sidecars beside ``report_path`` that exist, keyed by kind (see :data:`SUFFIXES`).

    Anything present under a sidecar's name is returned, also when it is not a regular
    file: its reader refuses it then, instead of it being skipped without a word. Two
    dotted prefixes for one kind (``eval_tau0.5_*`` and ``eval_tau0.7_*`` beside
    ``eval_tau0.json``) are ambiguous and refused.
    """
    folder, stem = report_path.parent, report_path.stem
    found: dict[str, Path] = {}
    dotted = _dotted_names(folder, stem)
    for kind, endings in SUFFIXES.items():
        exact = [folder / f"{stem}{end}" for end in endings
                 if os.path.lexists(folder / f"{stem}{end}")]
        if exact:
            found[kind] = exact[0]
            continue
        for end in endings:
            matches = sorted(name for name in dotted if _dotted_prefix(name, stem, end))
            if len(matches) > 1:
                listed = ", ".join(matches)
                raise GateInputError(report_path, f"several {kind} sidecars match the report's "
                                                  f"prefix: {listed}; which one is meant is "
                                                  "ambiguous (give the report its own prefix)")
            if matches:
                found[kind] = folder / matches[0]
                break
    return found


def _dotted_names(folder: Path, stem: str) -> list[str]:
    start = f"{stem}."
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if e.name.startswith(start)]
    except OSError:
        return []


def _dotted_prefix(name: str, stem: str, end: str) -> bool:
    """``name`` is ``<stem>.<part><end>`` with one dot-free, non-empty ``part``."""
    if not name.endswith(end):
        return False
    part = name[len(stem) + 1: len(name) - len(end)]
    return bool(part) and "." not in part and "/" not in part
