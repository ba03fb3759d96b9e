"""The one error type for bad input: it names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class GateInputError(Exception):
    """Bad input (report, sidecar, baseline, policy): ends the session with one clear line.

    ``str(err)`` reads ``<path>: <problem>`` so the user sees which file is at fault
    without a traceback.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class RefusedRequest(GateInputError):
    """A request the gates refuse whatever the files hold (the bundled sample in a suite of
    yours): a usage error (exit 4) where the session can still say so at its start."""


class PromotionConflict(Exception):
    """Another promotion moved the champion pointer first."""
