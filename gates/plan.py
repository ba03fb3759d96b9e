"""From settings to a planned gate session: load the evaluation, the champion and the
policy once, compute field metrics once, and decide every built-in gate up front.

Planning on the controller keeps each gate check a lookup and lets the promotion gate see
every regression and physics outcome, even when those run on another xdist worker or are
deselected. Workers receive the finished :class:`Plan` (``pytest_configure_node``) and never
load inputs themselves.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gates import evidence, logic
from gates.bundled import BUNDLED_SUITE as SAMPLE_SUITE
from gates.errors import GateInputError, RefusedRequest
from gates.model import Champion, Evaluation, Kind, Outcome, Status
from gates.policy import Policy
from gates.store import BaselineStore

SAMPLE_DIR = Path(__file__).parent / "sample"
SAMPLE_REPORT = SAMPLE_DIR / "burgers1d_eval.json"
OUT_NAME = "gates-out"
FIELD_PREFIX = "field/"
SPIKE = "spike:"  # evidence key of a metric's spike check
ENV_RUN_INFO = "FAST_TO_SOTA_WANDB_INFO"


@dataclass
class Settings:
    """Everything a gate session is told, from the command line or ini options."""

    eval: Path | None = None
    eval_row: str | None = None
    baselines: Path | None = None
    suite: str | None = None
    promote: bool = False
    require_promotion: bool = False
    strict: bool = False
    out: Path | None = None
    wandb: str = "offline"
    wandb_info: Path | None = None
    wandb_timeout: float = 30.0
    arrays: Path | None = None
    training_log: Path | None = None
    leaderboard: Path | None = None
    dask_scheduler: str | None = None
    no_ledger: bool = False
    workdir: Path = field(default_factory=Path.cwd)

    def resolve(self, path: Path | None) -> Path | None:
        """Absolute, without following links (a link loop is the reader's bad input)."""
        return None if path is None else Path(os.path.abspath(self.workdir / path))

    @property
    def bundled(self) -> bool:
        return self.eval is None

    def out_dir(self) -> Path:
        """``--gates-out``, else ``gates-out/`` beside the report (``./gates-out`` for the
        bundled sample): outputs never land in the report's own folder."""
        if self.out is not None:
            return self.workdir / self.out
        if self.eval is not None:
            report = self.workdir / self.eval
            return report.parent / OUT_NAME
        return self.workdir / OUT_NAME

    def run_info_path(self) -> Path | None:
        chosen = self.wandb_info or (Path(os.environ[ENV_RUN_INFO])
                                     if os.environ.get(ENV_RUN_INFO) else None)
        return self.resolve(chosen)


@dataclass
class Plan:
    """The loaded inputs of one session and its planned built-in outcomes."""

    settings: Settings
    evaluation: Evaluation
    store: BaselineStore
    suite: str
    policy: Policy
    champion: Champion | None
    out_dir: Path
    run_info: dict[str, Any] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    field_version: str | None = None
    resampling: evidence.Resampling = field(default_factory=evidence.Resampling)
    _by_id: tuple[list[Outcome], dict[str, Outcome]] | None = field(default=None, repr=False,
                                                                     compare=False)

    @property
    def promotion_required(self) -> bool:
        """Does "not promotable" fail this session? (the option or the policy)"""
        return self.settings.require_promotion or self.policy.promotion_required

    def of_kind(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]

    def outcome(self, gid: str) -> Outcome | None:
        """A planned outcome by its id (what a check's test report carries), or None."""
        if self._by_id is None or self._by_id[0] is not self.outcomes:
            self._by_id = (self.outcomes, {o.id: o for o in self.outcomes})
        return self._by_id[1].get(gid)

    def header(self) -> list[str]:
        ev = self.evaluation
        where = "the bundled sample (a real Burgers 1D run shipped with the package)" \
            if ev.bundled else str(ev.path)
        row = f" row {ev.run_id}" if ev.format == "leaderboard" else ""
        champ = f"champion v{self.champion.version}" if self.champion else \
            "no champion yet (first run: gates report no_baseline)"
        fields = f"field metrics from {self.settings.arrays}" if self.settings.arrays else \
            "no --gates-arrays: field metrics not computed or gated"
        if self.settings.arrays and self.settings.dask_scheduler:
            fields += f" on the Dask cluster at {self.settings.dask_scheduler}"
        return [
            f"gates: evaluation {where}{row} ({ev.format}, {len(ev.metrics)} metrics)",
            f"gates: suite {self.suite} in {self.store.root}, {champ}",
            f"gates: policy {self.policy.path or 'defaults (no policy.toml)'}, "
            f"rule {self.policy.rule}; {fields}",
            *(f"gates: note: {note}" for note in self.notes),
        ]

    # -- the one comparison routine, for built-in and custom gates ------------------------
    def regression_outcome(self, metric: str, current: float | None,
                           baseline: float | None, *, samples: np.ndarray | None = None,
                           baseline_samples: np.ndarray | None = None,
                           kind: str = Kind.REGRESSION, gid: str | None = None) -> Outcome:
        """Judge one metric against a baseline with the policy's direction, tolerance, rule
        and evidence; what ``test_regression`` and ``gate_regression.check`` both call."""
        outcome = _regression(self, metric, current, baseline, samples, baseline_samples)
        if kind != Kind.REGRESSION or gid is not None:
            outcome = replace(outcome, kind=kind, id=gid or outcome.id)
        return logic.apply_severity(outcome, self.policy)


def load_plan(settings: Settings,
              progress: Callable[[int, int], None] | None = None) -> Plan:
    """Load every input once and decide every built-in gate. Bad input: GateInputError;
    a request refused before anything is read or written: RefusedRequest."""
    if settings.bundled:
        from gates.bundled import bundled_refusal

        refusal = bundled_refusal(settings.suite, "--gates-eval")
        if refusal is not None:
            raise RefusedRequest(None, refusal)
    out_dir = settings.out_dir()
    _check_writable(out_dir)
    _check_destinations(settings)
    report = SAMPLE_REPORT if settings.bundled else settings.resolve(settings.eval)
    assert report is not None
    from gates.inputs import load_evaluation

    evaluation = load_evaluation(report, row=settings.eval_row)
    evaluation.bundled = settings.bundled
    store = _store(settings)
    suite = _choose_suite(settings, store, evaluation)
    policy = store.policy(suite)
    policy.primary()  # an unknown promotion direction is a usage error, found up front
    champion = store.champion(suite)
    if settings.promote:
        problem = store.check_writable(suite)
        if problem:
            raise GateInputError(store.root, f"--gates-promote cannot write the store: "
                                             f"{problem}")
    notes: list[str] = []
    field_version = None
    if settings.arrays is not None:
        field_version = _add_field_metrics(evaluation, settings, policy, progress, notes)
    run_info: dict[str, Any] = {}
    if settings.wandb != "off":
        from gates.inputs import load_run_info

        run_info = dict(load_run_info(settings.run_info_path()))
        warning = run_info.pop("_warning", None)
        if warning:
            notes.append(str(warning))
    plan = Plan(settings, evaluation, store, suite, policy, champion, out_dir, run_info,
                notes=notes, field_version=field_version,
                resampling=evidence.Resampling(seed=policy.seed))
    plan.outcomes = planned_outcomes(plan)
    note = _regime_note(plan)
    if note:
        plan.notes.append(note)
    return plan


def _regime_note(plan: Plan) -> str | None:
    """Does this run's primary metric sit in a new, worse level than the last challengers
    in the suite's ledger? A note, never a failure."""
    if not plan.store.suite_dir(plan.suite).joinpath("runs.jsonl").is_file():
        return None
    runs, _ = plan.store.runs(plan.suite)
    if len(runs) < 3:
        return None
    from gates.history import regime_note

    metric, direction = plan.policy.primary()
    return regime_note(runs, metric, plan.evaluation.metrics.get(metric),
                       higher_is_better=direction == "higher")


def _check_writable(out_dir: Path) -> None:
    """Every output destination is checked before anything is gated or promoted."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".gates-probe-"):
            pass
    except OSError as exc:
        raise GateInputError(out_dir, f"cannot write the gate outputs here "
                                      f"({exc.strerror or exc}); choose --gates-out") from None


def _check_destinations(settings: Settings) -> None:
    """The other records a session writes: $GITHUB_OUTPUT under GitHub Actions, and the
    leaderboard a promotion appends to (an unwritable step summary is only a warning)."""
    targets: list[Path] = []
    if os.environ.get("GITHUB_ACTIONS") == "true" and os.environ.get("GITHUB_OUTPUT"):
        targets.append(Path(os.environ["GITHUB_OUTPUT"]))
    if settings.promote and settings.leaderboard is not None:
        board = settings.resolve(settings.leaderboard)
        assert board is not None
        targets.append(board)
    for target in targets:
        folder = target.parent
        if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target,
                                                                                 os.W_OK)):
            raise GateInputError(target, "cannot be written: the session's record would be "
                                         "lost, so nothing is gated or promoted")


def _store(settings: Settings) -> BaselineStore:
    """``--gates-baselines``; for the bundled sample without a store of its own, a private
    copy of the baseline shipped in the package."""
    chosen = settings.baselines or Path("baselines")
    root = settings.resolve(chosen)
    assert root is not None
    if settings.bundled and settings.promote:
        raise GateInputError(None, "no evaluation given: the bundled sample is a demonstration "
                                   "and is never promoted; pass --gates-eval REPORT to promote "
                                   "your evaluation")
    if settings.bundled and not (root / SAMPLE_SUITE).is_dir():
        if settings.baselines is not None:
            raise GateInputError(root, f"the bundled sample's suite {SAMPLE_SUITE!r} is not "
                                       "in this store; leave --gates-baselines out to use "
                                       "the bundled baseline")
        from gates.bundled import bundled_store

        return BaselineStore(bundled_store())
    store = BaselineStore(root)
    store.require_exists(creating=settings.promote)
    return store


def _choose_suite(settings: Settings, store: BaselineStore, evaluation: Evaluation) -> str:
    known = store.suites() if store.root.is_dir() else []
    named = settings.suite if settings.suite is not None else evaluation.extra.get("suite")
    if named is not None:
        name = str(named)
        store.suite_dir(name)  # validates the name
        if name not in known and not (settings.promote and settings.suite):
            holds = ", ".join(known) or "nothing"
            raise GateInputError(store.root, f"unknown suite {name!r} (the store holds: "
                                             f"{holds}); to start a new suite, name it with "
                                             "--gates-suite and pass --gates-promote")
        return name
    if len(known) == 1:
        return known[0]
    if not known:
        raise GateInputError(store.root, "the store is empty and the report names no suite: "
                                         "give --gates-suite NAME")
    raise GateInputError(store.root, f"the store holds several suites ({', '.join(known)}): "
                                     "choose one with --gates-suite")


def _add_field_metrics(evaluation: Evaluation, settings: Settings, policy: Policy,
                       progress: Callable[[int, int], None] | None, notes: list[str]) -> str:
    from gates.fields import FieldLayout, compute_field_metrics

    source = settings.resolve(settings.arrays)
    assert source is not None
    layout = FieldLayout.from_policy(policy.fields, policy.path or "policy defaults")
    try:
        found = compute_field_metrics(source, layout, progress=progress,
                                      dask_scheduler=settings.dask_scheduler)
    except (OSError, TimeoutError) as exc:  # e.g. an unreachable Dask scheduler
        where = settings.dask_scheduler or source
        raise GateInputError(where, f"field metrics failed: {type(exc).__name__}: {exc}"
                             ) from None
    n_report = next(iter(evaluation.samples.values())).shape[0] if evaluation.samples else None
    if n_report is not None and found.n_samples != n_report:
        raise GateInputError(source, f"arrays hold {found.n_samples} samples, the "
                                     f"per-sample data of the report {n_report}")
    for name, value in found.values.items():
        key = f"{FIELD_PREFIX}{name}"
        evaluation.metrics[key] = float(value)
        if name in found.samples:
            evaluation.samples[key] = found.samples[name]
        evaluation.aggregation[key] = found.aggregation.get(name, "mean")
    evaluation.field_shape = tuple(found.spatial_shape)
    notes.extend(found.notes)
    return str(found.version)


def planned_outcomes(plan: Plan) -> list[Outcome]:
    """Every built-in outcome for this evaluation, champion and policy, in report order:
    comparability, regression, physics, promotion."""
    ev, champ, policy = plan.evaluation, plan.champion, plan.policy
    base = champ.metrics if champ else {}

    def skipped(metric: str) -> bool:
        return metric in policy.ignore or (metric not in ev.metrics
                                           and metric in policy.optional)

    comparable = comparability_outcomes(plan) if champ else [Outcome(
        logic.gate_id(Kind.COMPARABILITY, "conditions"), Kind.COMPARABILITY, "conditions",
        Status.PASS, message="no champion yet: nothing to compare the conditions with")]
    names = {m for m in set(base) | set(ev.metrics) if not skipped(m)}
    if plan.settings.arrays is None:  # field metrics exist only where the gates compute them
        names = {m for m in names if not m.startswith(FIELD_PREFIX)}
    spikes = {m: f for m, f in sorted(policy.spike_factors.items()) if not skipped(m)}
    comparisons = [c for m in sorted(names)
                   if (c := comparison(plan, m, ev.metrics.get(m), base.get(m))) is not None]
    comparisons += [c for m, factor in spikes.items()
                    if (c := comparison(plan, m, ev.metrics.get(m), base.get(m),
                                        tolerance=factor - 1, key=SPIKE + m)) is not None
                    and factor >= 1 and policy.direction(m) == "lower"]
    found = judge(plan, comparisons)
    regression = [logic.apply_severity(regression_from(plan, m, ev.metrics.get(m),
                                                       base.get(m), found.get(m)), policy)
                  for m in sorted(names)]
    physics = [logic.apply_severity(logic.ceiling(m, ev.metrics.get(m), limit), policy)
               for m, limit in sorted(policy.ceilings.items()) if not skipped(m)]
    physics += [logic.apply_severity(_spike(plan, m, factor, found.get(SPIKE + m)), policy)
                for m, factor in spikes.items()]
    promotion = promotion_outcome(plan, [*comparable, *regression, *physics])
    return [*comparable, *regression, *physics, promotion]


def comparability_outcomes(plan: Plan) -> list[Outcome]:
    """Champion and challenger must state the same evaluation conditions."""
    champ, ev = plan.champion, plan.evaluation
    assert champ is not None
    prov = champ.provenance
    pairs: dict[str, tuple[Any, Any]] = {}
    champion_fields = any(m.startswith(FIELD_PREFIX) for m in champ.metrics)
    if plan.settings.arrays is not None and champion_fields:
        pairs["field spatial shape"] = (list(ev.field_shape or []) or None,
                                        prov.get("field_shape"))
        theirs = prov.get("field_metrics_version") or "unversioned (before definitions v2)"
        if str(theirs) != str(plan.field_version):
            return [Outcome(
                logic.gate_id(Kind.COMPARABILITY, "field_metrics_version"),
                Kind.COMPARABILITY, "field_metrics_version", Status.INCOMPARABLE,
                message=f"incomparable: the champion's field metrics come from definitions "
                        f"{theirs}, this session's from {plan.field_version}; recompute the "
                        f"champion's with: python -m gates baseline refresh-fields --suite "
                        f"{plan.suite} --arrays <the champion's arrays>")]
    return logic.comparability(ev.extra, champ.extra, plan.policy.comparability_keys,
                               extra_pairs=pairs)


def _spike(plan: Plan, metric: str, factor: float, found: evidence.Evidence | None) -> Outcome:
    """The spike ceiling, judged by the evidence where per-sample vectors exist."""
    base = plan.champion.metrics.get(metric) if plan.champion else None
    regressed = None if found is None or found.method == "threshold-only" or found.error \
        else found.regressed
    return logic.spike(metric, plan.evaluation.metrics.get(metric), base, factor, plan.policy,
                       strict=plan.settings.strict, regressed=regressed,
                       evidence=found.to_json() if found is not None else None)


def promotion_outcome(plan: Plan, others: list[Outcome]) -> Outcome:
    ev, champ, policy = plan.evaluation, plan.champion, plan.policy
    metric, _ = policy.primary()
    supported: bool | None = None
    worse: dict[str, bool] = {}
    found: dict[str, Any] = {}
    if champ is not None:
        supported, worse, found = _promotion_evidence(plan, metric)
    return logic.promotion(ev.metrics, champ.metrics if champ else None, others, policy,
                           improvement_supported=supported, worse_supported=worse,
                           evidence=found)


# -- evidence: the noise-aware rules of gates.evidence, fed from the plan ------------------

def comparison(plan: Plan, metric: str, current: float | None, baseline: float | None, *,
               tolerance: float | None = None, samples: np.ndarray | None = None,
               baseline_samples: np.ndarray | None = None,
               key: str | None = None) -> evidence.Comparison | None:
    """What the evidence module needs to judge one metric; None when there is nothing to
    judge (a value missing or not finite, no champion, or no known direction)."""
    champ, ev, policy = plan.champion, plan.evaluation, plan.policy
    direction = policy.direction(metric)
    if current is None or baseline is None or champ is None or direction is None \
            or not (math.isfinite(current) and math.isfinite(baseline)):
        return None
    ours = samples if samples is not None else ev.samples.get(metric)
    theirs = baseline_samples if baseline_samples is not None else champ.samples.get(metric)
    if ours is not None and theirs is not None and len(ours) != len(theirs):
        # different sample counts alone stay comparable (a small evaluation against a
        # full-evaluation champion): they cannot be paired, so the threshold rules decide
        note = (f"per-sample vectors of different sample counts (this evaluation "
                f"{len(ours)}, the champion {len(theirs)}) are not paired: the threshold "
                "rules decide those gates")
        if note not in plan.notes:
            plan.notes.append(note)
        ours = theirs = None
    repeats = champ.repeats.get(metric)
    return evidence.Comparison(
        key or metric, baseline, current, direction == "higher",
        policy.tolerance_for(metric) if tolerance is None else tolerance,
        policy.abs_tolerance, theirs, ours,
        champ.sample_ids if theirs is not None else None,
        ev.sample_ids if ours is not None else None,
        ev.aggregation.get(metric, champ.aggregation.get(metric, "mean")),
        np.asarray(repeats, dtype=float) if repeats else None,
        str(ev.samples_path or ev.path or "the challenger's samples"))


def judge(plan: Plan, comparisons: list[evidence.Comparison]) -> dict[str, Any]:
    """Evidence for every comparison of the session at once (one family for the
    session-level false-failure rate; one resampling design per sample count)."""
    policy = plan.policy
    return dict(evidence.regression_evidence(
        comparisons, rule=policy.rule, confidence=policy.confidence,  # type: ignore[arg-type]
        margin=policy.margin, resampling=plan.resampling))


def _regression(plan: Plan, metric: str, current: float | None, baseline: float | None,
                samples: np.ndarray | None, baseline_samples: np.ndarray | None) -> Outcome:
    """One metric judged on its own (a custom gate's value, known only when its test runs)."""
    comp = comparison(plan, metric, current, baseline, samples=samples,
                      baseline_samples=baseline_samples)
    found = judge(plan, [comp])[metric] if comp is not None else None
    return regression_from(plan, metric, current, baseline, found)


def regression_from(plan: Plan, metric: str, current: float | None, baseline: float | None,
                    found: evidence.Evidence | None) -> Outcome:
    """The regression outcome of one metric, given its evidence (None: threshold rule)."""
    if found is not None and found.error:  # never fall back to an unpaired test silently
        ev = plan.evaluation
        where = ev.samples_path or ev.sidecars.get("samples") or ev.path
        return Outcome(logic.gate_id(Kind.REGRESSION, metric), Kind.REGRESSION, metric,
                       Status.ERROR, current, baseline, message=f"{where}: {found.note}",
                       evidence=found.to_json())
    regressed = None if found is None or found.method == "threshold-only" else \
        found.regressed
    return logic.regression(metric, current, baseline, plan.policy,
                            strict=plan.settings.strict,
                            evidence=found.to_json() if found is not None else None,
                            regressed=regressed)


def _promotion_evidence(plan: Plan, metric: str
                        ) -> tuple[bool | None, dict[str, bool], dict[str, Any]]:
    """Is the primary metric's improvement supported, and which physics metrics are
    supported worse? (None / empty where no per-sample evidence exists.)"""
    champ, ev, policy = plan.champion, plan.evaluation, plan.policy
    assert champ is not None
    comp = comparison(plan, metric, ev.metrics.get(metric), champ.metrics.get(metric))
    supported: bool | None = None
    found: dict[str, Any] = {}
    if comp is not None:
        got = evidence.promotion_evidence(
            comp, min_improvement_rel=policy.min_improvement_rel,
            min_improvement_abs=policy.min_improvement_abs, confidence=policy.confidence,
            resampling=plan.resampling)
        found = got.to_json()
        supported = None if got.method == "threshold-only" else got.supported
    worse: dict[str, bool] = {}
    for name in sorted(ev.metrics):
        if not policy.is_physics(name) or name not in champ.metrics:
            continue
        comp = comparison(plan, name, ev.metrics[name], champ.metrics[name])
        if comp is None:
            continue
        got = evidence.physics_evidence(comp, confidence=policy.confidence,
                                        resampling=plan.resampling)
        if got.method != "threshold-only":
            worse[name] = got.supported
    return supported, worse, found


def wandb_mode(option: str | None) -> str:
    """``--gates-wandb`` if given, else ``WANDB_MODE``, else offline; W&B's words accepted."""
    mode = (option or os.environ.get("WANDB_MODE") or "offline").lower()
    return {"disabled": "off", "dryrun": "offline", "run": "online"}.get(mode, mode)


def gated_metrics(plan: Plan, outcomes: list[Outcome]) -> dict[str, float]:
    """The values a promotion may record: only metrics a gate of this session judged."""
    judged = {o.metric for o in outcomes if o.kind in (Kind.REGRESSION, Kind.PHYSICS)}
    judged.add(plan.policy.primary_metric)
    return {m: v for m, v in plan.evaluation.metrics.items() if m in judged}


def evaluated_on(plan: Plan) -> Mapping[str, Any]:
    """The report's statement of what it was evaluated on (for the next comparability)."""
    return {k: plan.evaluation.extra[k] for k in plan.policy.comparability_keys
            if k in plan.evaluation.extra}
