"""The bundled baseline store: ``baselines/burgers1d`` built from the champion sample.

Deterministic (fixed provenance, fixed zip stamps), so ``python -m gates.burgers``
regenerates it byte for byte along with the sample.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from gates.evidence import CONFIDENT_MARGIN, DEFAULT_CONFIDENCE
from gates.fields import FieldLayout, compute_field_metrics
from gates.policy import policy_from_mapping
from gates.inputs import load_evaluation
from gates.store import BaselineStore

SUITE = "burgers1d"
POLICY = """\
# Gate policy of the burgers1d suite: reviewed and versioned beside its baselines.
# Every key is optional; the values below are the contract's defaults, written out.

[regression]
tolerance = 0.10            # fail when a metric is more than 10 % worse than the champion
improvement = 0.05          # report "improved" when more than 5 % better
abs_tolerance = 1e-12       # changes smaller than this are noise, whatever their ratio
higher_is_better = []       # e.g. ["psnr", "pearson_r"]; error metrics are lower-is-better
rule = "{rule}"          # threshold | confident | significant (see README)
confidence = {confidence}           # two-sided level of the interval the rule reads
margin = {margin}               # confident: the interval's bound must pass margin x tolerance

[physics.ceilings]
conservation_gap = 5.0
bc_violation = 1.0
negativity_penalty = 0.5

[physics.spike_factors]     # at most this many times the champion's value
conservation_gap = 2.0
bc_violation = 1.5

[promotion]
primary_metric = "nrmse"
min_improvement_rel = 0.01  # the challenger must beat the champion by at least 1 %
min_improvement_abs = 0.0

[metrics]
optional = []               # metrics a report may lack without failing

[fields]                    # layout of --arrays (sample, time, x, channel)
boundary = "periodic"
nonnegative = false
"""


def write_baseline(root: Path, sample_dir: Path, rule: str) -> list[Path]:
    """Recreate ``root/burgers1d`` with the champion sample as version 1."""
    suite_dir = root / SUITE
    if suite_dir.exists():
        shutil.rmtree(suite_dir)
    suite_dir.mkdir(parents=True)
    text = POLICY.format(rule=rule, confidence=DEFAULT_CONFIDENCE, margin=CONFIDENT_MARGIN)
    (suite_dir / "policy.toml").write_text(text, encoding="utf-8")
    report = sample_dir / "champion_eval.json"
    champion = load_evaluation(report)
    # the champion's field metrics, so that --arrays is gated against it too
    layout = FieldLayout.from_policy(policy_from_mapping(tomllib.loads(text), "policy").fields,
                                     str(suite_dir / "policy.toml"))
    for name, vector in compute_field_metrics(sample_dir / "champion_arrays.npz",
                                              layout).items():
        champion.samples[f"field/{name}"] = vector
        champion.metrics[f"field/{name}"] = float(vector.mean())
    provenance = {
        "run_id": champion.extra.get("model"),
        "wandb_run": None,
        "git_commit": None,
        "eval_report": f"gates/sample/{report.name}",
        "eval_sha256": champion.sha256,
        "eval_format": champion.format,
        "samples": f"gates/sample/{report.stem}_samples.npz",
        "arrays": "gates/sample/champion_arrays.npz",
        "timestamp": str(champion.extra.get("generated_at", "2025-01-01T00:00:00Z")),
        "promoted_by": "python -m gates.burgers (bundled sample)",
        "promoted_from": None,
    }
    BaselineStore(root).promote(SUITE, champion, expected=None, provenance=provenance)
    (suite_dir / ".lock").unlink()
    return sorted(p for p in suite_dir.rglob("*") if p.is_file())
