"""Input readers, one per format: the evaluation report (``report``), the leaderboard CSV
(``leaderboard``), per-sample vectors (``samples``), sidecar discovery (``sidecars``),
training logs (``training_log``), TTC step logs (``ttc``), W&B run info (``runinfo``) and
the evaluation's configuration (``config``).

Bad input raises :class:`gates.errors.GateInputError` naming the file.
"""

from gates.inputs.report import load_evaluation
from gates.inputs.runinfo import load_run_info, run_path
from gates.inputs.sidecars import discover_sidecars

__all__ = ["discover_sidecars", "load_evaluation", "load_run_info", "run_path"]
