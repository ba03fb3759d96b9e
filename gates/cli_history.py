"""``python -m gates history`` and ``python -m gates calibrate``.

    python -m gates history SUITE [--baselines DIR] [--metric M ...] [--since WHEN]
                                  [--json] [--out DIR] [--last N] [--min-change PCT]
    python -m gates calibrate SUITE [--baselines DIR] [--trials 1000] [--seed 0]
                                    [--method resample|split] [--json] [--no-store]

``add_commands`` registers both on the ``python -m gates`` subparsers; ``run_command``
runs one of them (None when the command is another one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gates.errors import GateInputError
from gates.store import BaselineStore

COMMANDS = ("history", "calibrate")


def add_commands(subparsers: Any) -> None:
    """Register ``history`` and ``calibrate`` on an argparse subparsers object."""
    history = subparsers.add_parser(
        "history", help="every gated run of a suite: table, change points, trend charts",
        description="The run ledger of a suite (baselines/<suite>/runs.jsonl): a table of "
                    "the runs (newest last), level changes per metric and a trend PNG per "
                    "metric.")
    history.add_argument("suite")
    history.add_argument("--baselines", default="baselines", type=Path,
                         help="baseline store (default ./baselines)")
    history.add_argument("--metric", action="append", default=None,
                         help="metric to show (repeatable; default: the table shows the "
                              "primary metric, charts and change points cover every one)")
    history.add_argument("--since", help="only runs at or after this time: ISO date/time "
                                         "or an age (7d, 12h, 2w)")
    history.add_argument("--json", action="store_true",
                         help='print {"suite", "runs", "change_points"} as JSON')
    history.add_argument("--out", type=Path, default=None,
                         help="folder for the trend PNGs (default ./gates-out; with --json "
                              "only when given)")
    history.add_argument("--last", type=int, default=0,
                         help="show only the last N runs in the table (default: all)")
    history.add_argument("--min-change", type=float, default=None,
                         help="smallest level change reported, in percent (default 1)")
    calibrate = subparsers.add_parser(
        "calibrate", help="A/A calibration: how often a pure rerun fails each gate",
        description="Estimate, from the champion's own per-sample vectors (or repeats), how "
                    "often each gate and the whole session would fail a pure rerun, and "
                    "store the estimate with the suite (calibration.json).")
    calibrate.add_argument("suite")
    calibrate.add_argument("--baselines", default="baselines", type=Path,
                           help="baseline store (default ./baselines)")
    calibrate.add_argument("--trials", type=int, default=1000)
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--method", choices=("resample", "split"), default="resample",
                           help="resample: two independent draws of n samples with "
                                "replacement; split: two random halves")
    calibrate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    calibrate.add_argument("--no-store", action="store_true",
                           help="do not write calibration.json")


def run_command(opts: argparse.Namespace) -> int | None:
    """Run ``history`` or ``calibrate``; None when ``opts.command`` is another command."""
    command = getattr(opts, "command", None)
    if command not in COMMANDS:
        return None
    store = BaselineStore(opts.baselines)
    try:
        suite = _suite(store, opts.suite)
        if command == "history":
            from gates.history import MIN_CHANGE_PCT, run_history

            return run_history(store, suite, metrics=opts.metric, since=opts.since,
                               as_json=opts.json, out=opts.out, last=opts.last,
                               min_change_pct=MIN_CHANGE_PCT if opts.min_change is None
                               else opts.min_change)
        from gates.calibrate import run_calibrate

        if opts.trials < 1:
            raise GateInputError(None, f"--trials must be at least 1, got {opts.trials}")
        return run_calibrate(store, suite, trials=opts.trials, seed=opts.seed,
                             method=opts.method, as_json=opts.json, keep=not opts.no_store)
    except GateInputError as exc:
        print(f"gates: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. an unreadable --since
        print(f"gates: {exc}", file=sys.stderr)
        return 4


def _suite(store: BaselineStore, name: str) -> str:
    store.suite_dir(name)  # validates the name
    if not store.root.is_dir():
        raise GateInputError(store.root, "baseline store does not exist")
    if name not in store.suites():
        raise GateInputError(store.root, f"no suite {name!r} (the store holds: "
                                         f"{', '.join(store.suites()) or 'none'})")
    return name


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m gates.cli_history``) until ``gates.__main__`` wires in."""
    parser = argparse.ArgumentParser(prog="python -m gates")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    result = run_command(parser.parse_args(argv))
    return 0 if result is None else result


if __name__ == "__main__":
    raise SystemExit(main())
