"""The end-of-session record every sink reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gates.model import Outcome, Status


@dataclass
class SessionResult:
    verdict: str
    outcomes: list[Outcome]
    suite: str | None
    baseline_version: int | None
    eval_path: str | None
    out_dir: Path
    promoted: bool = False
    new_baseline_version: int | None = None
    exit_code: int = 0
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    dashboards: Any = None
    wandb_run_dir: Path | None = None

    @property
    def passed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.passed]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    def counts(self) -> dict[str, int]:
        counts = {str(s): 0 for s in Status}
        for outcome in self.outcomes:
            counts[str(outcome.status)] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "suite": self.suite,
            "baseline_version": self.baseline_version,
            "promoted": self.promoted,
            "new_baseline_version": self.new_baseline_version,
            "eval": self.eval_path,
            "gates": [o.to_json() for o in self.outcomes],
        }

    def verdict_line(self) -> str:
        if any(o.kind == "input" for o in self.outcomes):
            return "gates: FAIL: bad input, no gate could run; the baseline store is untouched"
        counts = {k: v for k, v in self.counts().items() if v}
        parts = ", ".join(f"{v} {k}" for k, v in counts.items())
        against = f" against {self.suite} v{self.baseline_version}" \
            if self.baseline_version else f" for {self.suite} (no champion yet)"
        line = f"gates: {self.verdict.upper()}: {len(self.outcomes)} gates ({parts}){against}"
        if self.failed:
            line += "; failed: " + ", ".join(o.id for o in self.failed[:5])
            if len(self.failed) > 5:
                line += f" and {len(self.failed) - 5} more"
        if self.promoted:
            line += f"; promoted to champion v{self.new_baseline_version}"
        return line
