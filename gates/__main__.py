"""``python -m gates``: run the gates, and look after the baseline store.

    python -m gates run [options]                    a gate session (see run --help)
    python -m gates baseline list                    versions with provenance; * = champion
    python -m gates baseline show [VERSION]          one version's metrics and provenance
    python -m gates baseline diff A [B]              metric changes between two versions
    python -m gates baseline rollback [--to N]       move the champion back
    python -m gates baseline refresh-fields --arrays PATH
                                                     recompute the champion's field metrics
    python -m gates history SUITE [--metric M] [--json]  every gated run: trends, change points
    python -m gates calibrate SUITE [--trials N]     how often each gate fails by chance

Every baseline command takes --baselines DIR (default ./baselines) and --suite NAME (needed
when the store holds several suites), before or after the action. Errors are one line on
stderr and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from gates.errors import GateInputError, PromotionConflict
from gates.logic import relative_change
from gates.sinks.local import fmt, text_table
from gates.store import BaselineStore, repo_relative, utc_now, who


class _UsageError(Exception):
    """A command line argparse refused."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message} (see --help)")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        return _run(args[1:])
    try:
        try:
            plugin = _history_commands()
            opts = _parser(plugin).parse_args(args)
            if opts.command == "baseline":
                code = _baseline(opts)
            else:
                handled = plugin.run_command(opts) if plugin is not None else None
                if handled is None:
                    raise _UsageError(f"unknown command {opts.command!r}")
                code = int(handled)
            sys.stdout.flush()
            return code
        except (_UsageError, GateInputError, PromotionConflict, OSError) as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            print(f"gates: {_one_line(exc)}", file=sys.stderr)
            return 1
    except BrokenPipeError:
        # The reader stopped reading (`| head`): not an error of this command. Exit 0, so
        # that `set -o pipefail` (GitHub Actions' default bash) does not fail the step.
        _silence_stdout()
        return 0


def _run(args: list[str]) -> int:
    from gates import api

    main_run = getattr(api, "main_run", None)
    if main_run is not None:
        return int(main_run(args))
    import pytest

    return int(pytest.main(api.pytest_args(extra=args)))


def _history_commands() -> ModuleType | None:
    """The run-ledger commands (history, calibrate), when their module is installed."""
    if importlib.util.find_spec("gates.cli_history") is None:
        return None
    return importlib.import_module("gates.cli_history")


def _parser(plugin: ModuleType | None) -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m gates", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run a gate session (pytest options follow)")
    base = sub.add_parser("baseline", help="list, show, diff, roll back or refresh baselines",
                          description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    _store_options(base, default=True)
    actions = base.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="versions with provenance; * = champion")
    show = actions.add_parser("show", help="one version's metrics and provenance")
    show.add_argument("version", nargs="?", type=_version)
    diff = actions.add_parser("diff", help="metric changes between two versions")
    diff.add_argument("a", type=_version)
    diff.add_argument("b", type=_version, nargs="?")
    back = actions.add_parser("rollback", help="move the champion back")
    back.add_argument("--to", type=_version, help="the version to go back to (must load)")
    refresh = actions.add_parser(
        "refresh-fields", help="recompute the champion's field metrics from its arrays "
                               "under the current definitions, as a new version")
    refresh.add_argument("--arrays", type=Path, required=True,
                         help="the champion's prediction/target arrays")
    refresh.add_argument("--dask-scheduler", default=None,
                         help="compute with dask (address or 'threads'/'processes')")
    for action in (listing, show, diff, back, refresh):
        _store_options(action, default=False)
    if plugin is not None:
        plugin.add_commands(sub)
    return parser


def _store_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """--baselines/--suite before the action and after it; after the action, an option
    given nowhere must not override one given before (hence SUPPRESS there)."""
    parser.add_argument("--baselines", type=Path,
                        default=Path("baselines") if default else argparse.SUPPRESS,
                        help="baseline store (default ./baselines)")
    parser.add_argument("--suite", default=None if default else argparse.SUPPRESS,
                        help="suite within the store (default: its only suite)")


def _baseline(opts: argparse.Namespace) -> int:
    store = BaselineStore(opts.baselines)
    suite = _suite(store, opts.suite)
    if opts.action == "list":
        return _list(store, suite)
    if opts.action == "show":
        return _show(store, suite, opts.version)
    if opts.action == "diff":
        return _diff(store, suite, opts.a, opts.b)
    if opts.action == "refresh-fields":
        return _refresh_fields(store, suite, opts.arrays, opts.dask_scheduler)
    old, new = store.rollback(suite, opts.to)
    print(f"{suite}: champion moved back from v{old} to v{new}")
    return 0


def _version(text: str) -> int:
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}")
    return int(digits)


def _suite(store: BaselineStore, name: str | None) -> str:
    store.require_exists()
    if name is not None:
        store.suite_dir(name)
        if name not in store.suites():
            raise GateInputError(store.root, f"no suite {name!r} (the store holds: "
                                             f"{', '.join(store.suites()) or 'none'})")
        return name
    suites = store.suites()
    if len(suites) != 1:
        raise GateInputError(store.root, f"choose a suite with --suite (found: "
                                         f"{', '.join(suites) or 'none'})")
    return suites[0]


def _list(store: BaselineStore, suite: str) -> int:
    champion = store.champion_version(suite)
    primary = store.policy(suite).primary_metric
    rows = []
    for number in store.versions(suite):
        version = store.load(suite, number)
        prov = version.provenance
        rows.append(("*" if number == champion else "", f"v{number}",
                     fmt(version.metrics.get(primary)), str(prov.get("timestamp") or "-"),
                     str(prov.get("run_id") or "-"), str(prov.get("git_commit") or "-")[:10],
                     str(prov.get("eval_report") or "-")))
    print("\n".join(text_table(("", "version", primary, "timestamp", "run_id", "commit",
                                "eval report"), rows)))
    for event in store.history(suite):
        start = f"v{event['from']}" if event.get("from") else "none"
        print(f"  {event.get('time')}: {event.get('event')} {start} -> v{event.get('to')} "
              f"by {event.get('by')}")
    return 0


def _show(store: BaselineStore, suite: str, version: int | None) -> int:
    champion = store.champion_version(suite)
    number = version or champion
    if number is None:
        raise GateInputError(store.suite_dir(suite), "suite has no champion")
    champ = store.load(suite, number)
    print(json.dumps({"suite": suite, "version": number, "champion": number == champion,
                      "metrics": champ.metrics, "provenance": champ.provenance,
                      "per_sample_vectors": sorted(champ.samples)}, indent=2))
    return 0


def _diff(store: BaselineStore, suite: str, a: int, b: int | None) -> int:
    b = b or store.champion_version(suite)
    if b is None:
        raise GateInputError(store.suite_dir(suite), "suite has no champion")
    old, new = store.load(suite, a), store.load(suite, b)
    rows = []
    for name in sorted(set(old.metrics) | set(new.metrics)):
        x, y = old.metrics.get(name), new.metrics.get(name)
        change = fmt(100 * relative_change(y, x), True) if x is not None and y is not None \
            else "-"
        rows.append((name, fmt(x), fmt(y), change))
    print("\n".join(text_table(("metric", f"v{a}", f"v{b}", "change"), rows)))
    return 0


def _refresh_fields(store: BaselineStore, suite: str, arrays: Path,
                    dask_scheduler: str | None) -> int:
    """The champion's metrics with its ``field/*`` ones recomputed from ``arrays`` under
    the current definitions, promoted as a new version (its provenance says so)."""
    from gates.fields import FieldLayout, refresh_field_metrics

    champion = store.champion(suite)
    if champion is None:
        raise GateInputError(store.suite_dir(suite), "suite has no champion to refresh")
    problem = store.check_writable(suite)
    if problem:
        raise GateInputError(None, problem)
    policy_path = store.suite_dir(suite) / "policy.toml"
    layout = FieldLayout.from_policy(store.policy(suite).fields, str(policy_path))
    computed = refresh_field_metrics(arrays, layout, dask_scheduler=dask_scheduler)
    kept = {k: v for k, v in champion.metrics.items() if not k.startswith("field/")}
    samples = {k: v for k, v in champion.samples.items() if not k.startswith("field/")}
    lengths = {len(v) for v in samples.values()}
    if lengths and lengths != {computed.n_samples}:
        raise GateInputError(arrays, f"the arrays hold {computed.n_samples} samples, the "
                                     f"champion's per-sample vectors {lengths.pop()}: they "
                                     "cannot be stored together")
    ids = champion.sample_ids
    if ids is not None and len(ids) != computed.n_samples:
        ids = None  # the ids of other vectors than these
    root = _repo_root()
    where = repo_relative(arrays, root)
    provenance = {
        **champion.provenance,
        "timestamp": utc_now(),
        "promoted_by": f"python -m gates baseline refresh-fields ({who()})",
        "promoted_from": f"v{champion.version}",
        "refreshed": f"field metrics recomputed from arrays {where} with "
                     f"field_metrics_version {computed.version}",
        "arrays": where,
        "field_metrics_version": computed.version,
        "field_shape": list(computed.spatial_shape),
    }
    number = store.promote(
        suite, expected=champion.version, provenance=provenance, event="refresh",
        metrics={**kept, **{f"field/{k}": v for k, v in computed.values.items()}},
        samples={**samples, **{f"field/{k}": v for k, v in computed.samples.items()}},
        sample_ids=ids, repeats=champion.repeats, extra=champion.extra,
        aggregation={**{k: v for k, v in champion.aggregation.items()
                        if not k.startswith("field/")},
                     **{f"field/{k}": v for k, v in computed.aggregation.items()}})
    for note in computed.notes:
        print(f"note: {note}")
    print(f"{suite}: field metrics refreshed from {where} (definitions "
          f"{computed.version}); champion moved from v{champion.version} to v{number}")
    return 0


def _repo_root() -> Path:
    """The repository the command runs in (its git top level), else the working folder."""
    try:
        done = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return Path.cwd()
    top = done.stdout.strip()
    return Path(top) if done.returncode == 0 and top else Path.cwd()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit does not fail again (the
    Python documentation's recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured)
        pass


if __name__ == "__main__":
    raise SystemExit(main())
