"""The end-of-session record every sink reads."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gates.model import Kind, Outcome, Status

if TYPE_CHECKING:
    from gates.plan import Plan


@dataclass
class SessionResult:
    """Verdict, promotion answer and every outcome of one gate session.

    ``plan`` is the loaded session (evaluation, champion, policy, store, settings, run
    info); it is None when the input was bad and nothing could be loaded.
    """

    verdict: str
    outcomes: list[Outcome]
    suite: str | None
    baseline_version: int | None
    eval_path: str | None
    out_dir: Path
    plan: Plan | None = None
    promotable: bool = False
    promotion_reasons: list[str] = field(default_factory=list)
    promoted: bool = False
    new_baseline_version: int | None = None
    exit_code: int = 0
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    dashboards: Any = None
    wandb_run_dir: Path | None = None

    @functools.cached_property
    def evidence_lines(self) -> list[str]:
        """Each outcome's evidence line, in order: written once for the sinks that print
        every gate's (gates.md, W&B's results table)."""
        from gates.evidence import evidence_line

        return [evidence_line(o.evidence) for o in self.outcomes]

    @property
    def passed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.passed]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def input_error(self) -> str | None:
        return next((o.message for o in self.outcomes if o.kind == Kind.INPUT), None)

    def counts(self) -> dict[str, int]:
        counts = {str(s): 0 for s in Status}
        for outcome in self.outcomes:
            counts[str(outcome.status)] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "promotable": self.promotable,
            "promotion_reasons": list(self.promotion_reasons),
            "promoted": self.promoted,
            "suite": self.suite,
            "baseline_version": self.baseline_version,
            "new_baseline_version": self.new_baseline_version,
            "eval": self.eval_path,
            "exit_code": self.exit_code,
            "notes": list(self.notes),
            "gates": [o.to_json() for o in self.outcomes],
        }

    def promotion_line(self) -> str:
        if self.promoted:
            return f"promotion: promoted to champion v{self.new_baseline_version}"
        if self.promotable:
            return "promotion: promotable (pass --gates-promote to make it the champion)"
        reasons = "; ".join(self.promotion_reasons) or "no reason recorded"
        return f"promotion: not promotable: {reasons}"

    def verdict_line(self) -> str:
        if self.input_error is not None:
            return "gates: ERROR: bad input, no gate could run; the baseline store is untouched"
        counts = {k: v for k, v in self.counts().items() if v}
        parts = ", ".join(f"{v} {k}" for k, v in counts.items())
        against = f" against {self.suite} v{self.baseline_version}" \
            if self.baseline_version else f" for {self.suite} (no champion yet)"
        line = f"gates: {self.verdict.upper()}: {len(self.outcomes)} gates ({parts}){against}"
        failed = [o for o in self.failed if o.kind != Kind.PROMOTION]
        if failed:
            line += "; failed: " + ", ".join(o.id for o in failed[:5])
            if len(failed) > 5:
                line += f" and {len(failed) - 5} more"
        line += "; promotable" if self.promotable else "; not promotable"
        if self.promoted:
            line += f"; promoted to champion v{self.new_baseline_version}"
        return line
