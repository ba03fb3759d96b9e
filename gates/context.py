"""From settings to a planned gate session: load the evaluation, the champion and the
policy, and compute every built-in gate's outcome up front.

Planning everything at the start keeps each gate check a lookup (cheap, identical on every
xdist worker) and lets the promotion gate see every regression and physics outcome, even
when those run on another worker or are deselected.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from gates import evidence, logic
from gates.errors import GateInputError
from gates.evidence import Rule
from gates.model import Champion, Evaluation, Kind, Outcome, Status
from gates.policy import Policy
from gates.reports import load_evaluation
from gates.runinfo import load_run_info
from gates.store import BaselineStore

SAMPLE_DIR = Path(__file__).parent / "sample"
SAMPLE_REPORT = SAMPLE_DIR / "burgers1d_eval.json"
SAMPLE_OUT = "gates-report"
FIELD_PREFIX = "field/"


@dataclass
class Settings:
    """Everything a gate session is told, from the command line or ini options."""

    eval: Path | None = None
    eval_row: str | None = None
    baselines: Path = Path("baselines")
    suite: str | None = None
    promote: bool = False
    strict: bool = False
    gates_out: Path | None = None
    wandb: str = "offline"
    wandb_info: Path | None = None
    arrays: Path | None = None
    training_log: Path | None = None
    leaderboard: Path | None = None
    dask_scheduler: str | None = None
    workdir: Path = field(default_factory=Path.cwd)

    def resolve(self, path: Path | None) -> Path | None:
        return None if path is None else (self.workdir / path).resolve()


@dataclass
class GateContext:
    """The loaded inputs of one session and its planned built-in outcomes."""

    settings: Settings
    evaluation: Evaluation
    store: BaselineStore
    suite: str
    policy: Policy
    champion: Champion | None
    out_dir: Path
    run_info: dict[str, Any] = field(default_factory=dict)
    regression: list[Outcome] = field(default_factory=list)
    physics: list[Outcome] = field(default_factory=list)
    promotion: list[Outcome] = field(default_factory=list)

    @property
    def planned(self) -> list[Outcome]:
        return [*self.regression, *self.physics, *self.promotion]

    def header(self) -> list[str]:
        ev = self.evaluation
        where = "the bundled sample (a real Burgers 1D run shipped with the package)" \
            if ev.bundled else str(ev.path)
        row = f" row {ev.run_id}" if ev.format == "leaderboard" else ""
        champ = f"champion v{self.champion.version}" if self.champion else \
            "no champion yet (first run: gates report no_baseline)"
        fields = f"field metrics from {self.settings.arrays}" if self.settings.arrays else \
            "no --arrays: field metrics not computed or gated"
        if self.settings.arrays and self.settings.dask_scheduler:
            fields += f" on the Dask cluster at {self.settings.dask_scheduler}"
        return [
            f"gates: evaluation {where}{row} ({ev.format}, {len(ev.metrics)} metrics)",
            f"gates: suite {self.suite} in {self.store.root}, {champ}",
            f"gates: policy {self.policy.path or 'defaults (no policy.toml)'}, "
            f"rule {self.policy.rule}; {fields}",
        ]


def load_context(settings: Settings,
                 progress: Callable[[int, int], None] | None = None) -> GateContext:
    bundled = settings.eval is None
    report = SAMPLE_REPORT if bundled else settings.resolve(settings.eval)
    assert report is not None
    evaluation = load_evaluation(report, row=settings.eval_row)
    evaluation.bundled = bundled
    root = settings.resolve(settings.baselines)
    assert root is not None
    store = BaselineStore(root)
    suite = _choose_suite(settings, store, evaluation)
    policy = store.policy(suite)
    champion = store.champion(suite)
    if settings.arrays is not None:
        _add_field_metrics(evaluation, settings, policy, progress)
    out_dir = output_dir(settings)
    run_info = load_run_info(settings.resolve(settings.wandb_info))
    ctx = GateContext(settings, evaluation, store, suite, policy, champion, out_dir, run_info)
    plan(ctx)
    return ctx


def output_dir(settings: Settings) -> Path:
    """``--gates-out``, else the report's folder (``./gates-report`` for the sample)."""
    chosen = settings.gates_out or (settings.eval.parent if settings.eval else None)
    resolved = settings.resolve(chosen)
    return resolved if resolved is not None else settings.workdir / SAMPLE_OUT


def _choose_suite(settings: Settings, store: BaselineStore, evaluation: Evaluation) -> str:
    known = store.suites()
    named = settings.suite or evaluation.extra.get("suite")
    if named is not None:
        name = str(named)
        store.suite_dir(name)  # validates the name
        if known and name not in known and not (settings.promote and settings.suite):
            raise GateInputError(store.root, f"unknown suite {name!r} (the store holds: "
                                             f"{', '.join(known)}); to start a new suite, "
                                             "name it with --suite and pass --promote")
        return name
    if len(known) == 1:
        return known[0]
    if not known:
        raise GateInputError(store.root, "the store is empty and the report names no suite: "
                                         "give --suite NAME")
    raise GateInputError(store.root, f"the store holds several suites ({', '.join(known)}): "
                                     "choose one with --suite")


def _add_field_metrics(evaluation: Evaluation, settings: Settings, policy: Policy,
                       progress: Callable[[int, int], None] | None) -> None:
    from gates.fields import FieldLayout, compute_field_metrics

    source = settings.resolve(settings.arrays)
    assert source is not None
    layout = FieldLayout.from_policy(policy.fields, policy.path or "policy defaults")
    try:
        vectors = compute_field_metrics(source, layout, progress=progress,
                                        dask_scheduler=settings.dask_scheduler)
    except (OSError, TimeoutError) as exc:  # e.g. an unreachable Dask scheduler
        where = settings.dask_scheduler or source
        raise GateInputError(where, f"field metrics failed: {type(exc).__name__}: {exc}"
                             ) from None
    n_report = next(iter(evaluation.samples.values())).shape[0] if evaluation.samples else None
    for name, vector in vectors.items():
        key = f"{FIELD_PREFIX}{name}"
        if n_report is not None and vector.shape[0] != n_report:
            raise GateInputError(source, f"arrays hold {vector.shape[0]} samples, the "
                                         f"per-sample sidecar {n_report}")
        evaluation.samples[key] = vector
        evaluation.metrics[key] = float(vector.mean())


def plan(ctx: GateContext) -> None:
    """Compute every built-in outcome for this evaluation, champion and policy."""
    ev, champ, policy, strict = ctx.evaluation, ctx.champion, ctx.policy, ctx.settings.strict
    base = champ.metrics if champ else {}

    def skipped(metric: str) -> bool:
        return metric in policy.ignore or (metric not in ev.metrics
                                           and metric in policy.optional)

    # every report metric is looked at (a NaN never slips through as "unknown direction")
    names = {m for m in set(base) | set(ev.metrics) if not skipped(m)}
    if ctx.settings.arrays is None:  # field metrics exist only where the gates compute them
        names = {m for m in names if not m.startswith(FIELD_PREFIX)}
    ctx.regression.extend(regression_outcome(ctx, m) for m in sorted(names))
    ctx.physics.extend(logic.ceiling(m, ev.metrics.get(m), limit)
                       for m, limit in sorted(policy.ceilings.items()) if not skipped(m))
    ctx.physics.extend(logic.spike(m, ev.metrics.get(m), base.get(m), factor, policy,
                                   strict=strict)
                       for m, factor in sorted(policy.spike_factors.items()) if not skipped(m))
    ctx.promotion.append(logic.promotion(ev.metrics, base if champ else None,
                                         [*ctx.regression, *ctx.physics], policy,
                                         strict=strict))


def regression_outcome(ctx: GateContext, metric: str) -> Outcome:
    ev, champ, policy = ctx.evaluation, ctx.champion, ctx.policy
    current = ev.metrics.get(metric)
    baseline = champ.metrics.get(metric) if champ else None
    if policy.direction(metric) is None and current is not None:
        if not math.isfinite(current):
            return logic.not_finite(Kind.REGRESSION, metric, current, baseline)
        return Outcome(logic.gate_id(Kind.REGRESSION, metric), Kind.REGRESSION, metric,
                       Status.PASS, current, baseline, None, None,
                       f"{metric} present and finite; direction unknown, not compared "
                       "(declare it in the policy's higher_is_better or lower_is_better)")
    gid = logic.gate_id(Kind.REGRESSION, metric)
    try:
        found, regressed = noise_evidence(ctx, metric, current, baseline)
    except SampleSetError as exc:  # never fall back to an unpaired comparison silently
        return Outcome(gid, Kind.REGRESSION, metric, Status.ERROR, current, baseline,
                       message=f"per-sample vectors do not match: {exc}")
    return logic.regression(metric, current, baseline, policy, strict=ctx.settings.strict,
                            evidence=found, regressed=regressed)


def noise_evidence(ctx: GateContext, metric: str, current: float | None,
                   baseline: float | None) -> tuple[dict[str, Any], bool | None]:
    """How much the evaluation can tell: evidence for one regression gate.

    Per-sample vectors on both sides give a paired test; repeated baseline runs give their
    spread; otherwise the fixed threshold rule applies and the outcome says so. Returns
    the evidence and the rule's verdict (None: judge by the threshold alone).
    """
    policy, champ, ev = ctx.policy, ctx.champion, ctx.evaluation
    direction = policy.direction(metric)
    if current is None or baseline is None or champ is None or direction is None \
            or not math.isfinite(current):
        return {}, None
    options: dict[str, Any] = {"higher_is_better": direction == "higher",
                               "threshold": policy.tolerance_for(metric)}
    rule = cast(Rule, policy.rule)
    ours, theirs = ev.samples.get(metric), champ.samples.get(metric)
    repeats = champ.repeats.get(metric, [])
    paired = ours is not None and theirs is not None

    def fallback(reason: str) -> tuple[dict[str, Any], None]:
        found = evidence.threshold_evidence(baseline, current, **options)
        return {**asdict(found), "note": f"{found.note} ({reason})"}, None

    # data whose mean is not the reported number cannot judge it: trust neither silently
    if paired:
        mismatch = _aggregate_mismatch(metric, ours, current, ev.samples_path) or \
            _aggregate_mismatch(metric, theirs, baseline, "the champion's samples.npz")
    elif len(repeats) >= 2:
        mismatch = _aggregate_mismatch(metric, np.asarray(repeats), baseline,
                                       "the champion's repeats")
    else:
        mismatch = None
    if mismatch:
        return fallback(mismatch)
    if paired and (champ.sample_ids is None) != (ev.sample_ids is None):
        raise SampleSetError(f"{ev.samples_path}: {metric}: sample ids are given on one side "
                             "only; give sample_id in both or in neither")
    try:
        if ours is not None and theirs is not None:
            found = evidence.paired_evidence(
                theirs, ours, rule=rule, confidence=policy.confidence, seed=policy.seed,
                baseline_ids=champ.sample_ids, current_ids=ev.sample_ids,
                margin=policy.margin, **options)
        elif len(repeats) >= 2:
            found = evidence.repeats_evidence(np.asarray(repeats), current, rule=rule,
                                              confidence=policy.confidence,
                                              margin=policy.margin, **options)
        else:
            found = evidence.threshold_evidence(baseline, current, **options)
    except evidence.SampleMismatch as exc:
        where = ev.samples_path or ev.path
        raise SampleSetError(f"{where}: {metric}: {exc}") from None
    except ValueError as exc:  # e.g. a zero baseline mean: the fixed rule still applies
        return fallback(f"paired test not possible: {exc}")
    return asdict(found), (found.regressed if found.method != "threshold-only" else None)


def _aggregate_mismatch(metric: str, vector: np.ndarray | None, value: float,
                        where: object) -> str | None:
    """A per-sample vector whose mean is not the reported aggregate cannot judge it."""
    if vector is None or vector.size == 0:
        return None
    mean = float(np.mean(vector))
    if math.isclose(mean, value, rel_tol=1e-6, abs_tol=1e-12):
        return None
    return (f"the per-sample mean of {metric} in {where} is {mean:.6g}, the reported value "
            f"{value:.6g}; the paired test was not used")


class SampleSetError(Exception):
    """Per-sample vectors of champion and challenger do not describe the same samples."""


def wandb_mode(option: str | None) -> str:
    """``--wandb`` if given, else ``WANDB_MODE``, else offline; W&B's own words accepted."""
    mode = (option or os.environ.get("WANDB_MODE") or "offline").lower()
    return {"disabled": "off", "dryrun": "offline", "run": "online"}.get(mode, mode)
