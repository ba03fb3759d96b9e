"""``python -m gates``: run the gates, and look after the baseline store.

    python -m gates run [pytest options]           same as pytest on the installed gates
    python -m gates baseline list [--suite S]      versions with provenance; * = champion
    python -m gates baseline show [VERSION]        one version's metrics and provenance
    python -m gates baseline diff A B              metric changes between two versions
    python -m gates baseline rollback [--to N]     move the champion pointer back
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gates.errors import GateInputError
from gates.logic import relative_change
from gates.outputs import fmt, text_table
from gates.store import BaselineStore


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        import pytest

        from gates.api import pytest_args

        return int(pytest.main(pytest_args(extra=args[1:])))
    parser = argparse.ArgumentParser(prog="python -m gates", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser("baseline", help="list, show, diff or roll back baselines")
    base.add_argument("--baselines", default="baselines", type=Path)
    base.add_argument("--suite")
    actions = base.add_subparsers(dest="action", required=True)
    actions.add_parser("list")
    show = actions.add_parser("show")
    show.add_argument("version", nargs="?", type=_version)
    diff = actions.add_parser("diff")
    diff.add_argument("a", type=_version)
    diff.add_argument("b", type=_version, nargs="?")
    back = actions.add_parser("rollback")
    back.add_argument("--to", type=_version)
    sub.add_parser("run", help="run the gate checks (pytest options follow)")
    opts = parser.parse_args(args)
    store = BaselineStore(opts.baselines)
    try:
        suite = _suite(store, opts.suite)
        if opts.action == "list":
            return _list(store, suite)
        if opts.action == "show":
            return _show(store, suite, opts.version)
        if opts.action == "diff":
            return _diff(store, suite, opts.a, opts.b)
        old, new = store.rollback(suite, opts.to)
        print(f"{suite}: champion moved back from v{old} to v{new}")
        return 0
    except GateInputError as exc:
        print(f"gates: {exc}", file=sys.stderr)
        return 1


def _version(text: str) -> int:
    return int(text.lstrip("vV"))


def _suite(store: BaselineStore, name: str | None) -> str:
    if name:
        store.suite_dir(name)
        if name not in store.suites():
            raise GateInputError(store.root, f"no suite {name!r}")
        return name
    suites = store.suites()
    if len(suites) != 1:
        raise GateInputError(store.root, f"choose a suite with --suite (found: "
                                         f"{', '.join(suites) or 'none'})")
    return suites[0]


def _list(store: BaselineStore, suite: str) -> int:
    champion = store.champion_version(suite)
    rows = []
    for number in store.versions(suite):
        version = store.load(suite, number)
        prov = version.provenance
        primary = store.policy(suite).primary_metric
        rows.append(("*" if number == champion else "", f"v{number}",
                     fmt(version.metrics.get(primary)), str(prov.get("timestamp", "-")),
                     str(prov.get("run_id") or "-"), str(prov.get("git_commit") or "-")[:10],
                     str(prov.get("eval_report") or "-")))
    print("\n".join(text_table(("", "version", "primary", "timestamp", "run_id", "commit",
                                "eval report"), rows)))
    for event in store.history(suite):
        start = f"v{event['from']}" if event.get("from") else "none"
        print(f"  {event.get('time')}: {event.get('event')} {start} -> v{event.get('to')} "
              f"by {event.get('by')}")
    return 0


def _show(store: BaselineStore, suite: str, version: int | None) -> int:
    number = version or store.champion_version(suite)
    if number is None:
        raise GateInputError(store.suite_dir(suite), "suite has no champion")
    champ = store.load(suite, number)
    print(json.dumps({"suite": suite, "version": number,
                      "champion": number == store.champion_version(suite),
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


if __name__ == "__main__":
    raise SystemExit(main())
