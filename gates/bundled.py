"""The bundled sample's own baseline, shipped inside the package.

``gates/sample/baseline/burgers1d/`` is an identical copy of the repository's
``baselines/burgers1d`` (``python -m gates.sample.generate`` writes both). A gate session of the
bundled sample reads it from a fresh temporary copy (:func:`bundled_store`), so nothing is
ever written into the installed package, and the bundled sample never becomes anyone's
champion: it is gated only against this baseline (:func:`bundled_refusal`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
#: the store shipped with the package (read only: copy it with :func:`bundled_store`)
BUNDLED_BASELINES = SAMPLE_DIR / "baseline"
#: the suite of the bundled sample evaluation
BUNDLED_SUITE = "burgers1d"


def bundled_store(dest: Path | None = None) -> Path:
    """A fresh, writable copy of the bundled baseline store; returns the store's root (the
    folder holding ``burgers1d/``).

    Without ``dest`` the copy lives in a temporary folder removed when the process exits.
    """
    source = BUNDLED_BASELINES / BUNDLED_SUITE
    if not (source / "champion.json").is_file():
        raise FileNotFoundError(f"the bundled baseline is missing from the installed "
                                f"package: {source} (reinstall physics-gates)")
    if dest is None:
        dest = Path(tempfile.mkdtemp(prefix="gates-bundled-baseline-"))
        atexit.register(shutil.rmtree, dest, ignore_errors=True)
    shutil.copytree(source, dest / BUNDLED_SUITE,
                    ignore=shutil.ignore_patterns("__pycache__", "*.lock", "runs.jsonl"))
    return dest


def bundled_refusal(suite: str | None, flag: str = "--eval") -> str | None:
    """Why the bundled sample may not be gated in ``suite`` (one line), or None; ``flag``
    is the report option of the command at hand.

    The bundled sample is a demonstration: it is gated only against its own baseline, never
    against (or promoted into) a suite of yours.
    """
    if suite is None or suite == BUNDLED_SUITE:
        return None
    return (f"no evaluation given: the bundled sample (suite {BUNDLED_SUITE}) is gated only "
            f"against its bundled baseline, never in suite {suite!r}; pass {flag} REPORT "
            f"(or gates_eval in your pytest configuration) to gate your evaluation")
