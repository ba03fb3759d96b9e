"""Fault drills on the baseline store with real processes: concurrent promoters, SIGKILL at
the exact points of a write (through the store's fault hook) and at random moments,
rollback racing promotion, concurrent ledger appends. After each, the store loads and its
history and champion agree."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gates.store import FAULT_ENV, BaselineStore

WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from gates.errors import GateInputError, PromotionConflict
    from gates.store import BaselineStore
    store = BaselineStore(Path(sys.argv[1]))
    mode, go = sys.argv[2], Path(sys.argv[3])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    n = 0
    while True:
        n += 1
        tag = f"{os.getpid()}-{n}"
        if mode in ("promote", "promote-once", "compete"):
            expected = 1 if mode == "compete" else store.champion_version("s")
            try:
                v = store.promote("s", metrics={"nrmse": 1.0 / (n + 1)}, expected=expected,
                                  provenance={"run_id": tag})
                print("won", v, flush=True)
            except PromotionConflict as exc:
                print("conflict", exc, flush=True)
                if mode == "compete":
                    sys.exit(3)
        if mode in ("rollback", "rollback-once"):
            try:
                print("rolled", *store.rollback("s"), flush=True)
            except GateInputError as exc:
                print("refused", exc, flush=True)
        if mode == "append":
            store.append_run("s", {"run_id": tag, "pad": "x" * 4000})
            if n == 40:
                break
        if mode.endswith("-once") or mode == "compete":
            break
""")


def start(root: Path, mode: str, go: Path, fault: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(root), mode, str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n", proc.stderr
    return proc


def seeded(root: Path, *values: float) -> BaselineStore:
    store = BaselineStore(root)
    for number, value in enumerate(values, 1):
        store.promote("s", metrics={"nrmse": value}, samples={"nrmse": np.full(3, value)},
                      expected=number - 1 or None, provenance={"run_id": f"seed-{number}"})
    return store


def assert_consistent(store: BaselineStore) -> None:
    """Every committed version loads; the history is one chain ending at the champion."""
    state = store.state("s")
    versions = store.versions("s")
    for number in versions:
        store.load("s", number)
    previous = None
    for record in state.history:
        assert record["from"] == previous, state.history
        assert record["to"] in versions
        previous = record["to"]
    assert previous == state.champion
    champion = store.champion("s")
    assert champion is not None and champion.version == state.champion


def assert_clean_after_next_write(store: BaselineStore) -> None:
    champion = store.champion_version("s")
    number = store.promote("s", metrics={"nrmse": 0.01}, expected=champion, provenance={})
    folder = store.root / "s"
    leftovers = [p.name for p in [*folder.iterdir(), *(folder / "versions").iterdir()]
                 if p.name.startswith(".tmp-") or p.name.endswith(".tmp")]
    assert leftovers == []
    assert [f"v{n:04d}" for n in store.versions("s")] == sorted(
        p.name for p in (folder / "versions").iterdir())
    assert not store.state("s").pointer_stale and store.champion_version("s") == number
    assert_consistent(store)


@pytest.mark.parametrize("round_", range(2))
def test_concurrent_promoters_exactly_one_wins(tmp_path: Path, round_: int) -> None:
    store = seeded(tmp_path / "store", 0.3)
    go = tmp_path / "go"
    procs = [start(store.root, "compete", go) for _ in range(4)]
    go.touch()
    results = [(p.wait(timeout=30), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3, 3, 3], results
    for code, (out, err) in results:
        assert err == ""
        if code == 3:
            assert "conflict promotion conflict in suite 's'" in out
            assert "another promotion won" in out and "champion is now v2" in out
    assert store.champion_version("s") == 2 and store.versions("s") == [1, 2]
    assert_consistent(store)


@pytest.mark.parametrize(("mode", "point", "champion", "history"), [
    ("promote-once", "staged", 2, 2),
    ("promote-once", "version-written", 2, 2),
    ("promote-once", "history-written", 3, 3),  # the pointer/history boundary
    ("promote-once", "pointer-written", 3, 3),
    ("rollback-once", "history-written", 1, 3),
])
def test_a_kill_at_each_point_of_a_write_leaves_a_consistent_store(
        tmp_path: Path, mode: str, point: str, champion: int, history: int) -> None:
    store = seeded(tmp_path / "store", 0.3, 0.2)
    go = tmp_path / "go"
    go.touch()
    proc = start(store.root, mode, go, fault=point)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert store.champion_version("s") == champion
    assert len(store.history("s")) == history
    assert_consistent(store)
    if mode == "promote-once" and champion == 3:  # the record made it: rollback undoes it
        assert store.history("s")[-1]["to"] == 3
        assert store.rollback("s") == (3, 2)
    assert_clean_after_next_write(store)


def test_a_first_promotion_killed_before_its_pointer_is_the_champion(tmp_path: Path) -> None:
    go = tmp_path / "go"
    go.touch()
    root = tmp_path / "store"
    root.mkdir()
    proc = start(root, "promote-once", go, fault="history-written")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (root / "s" / "champion.json").exists()
    store = BaselineStore(root)
    assert store.champion_version("s") == 1 and store.history("s")[0]["to"] == 1
    assert_clean_after_next_write(store)


def test_kills_at_random_moments_leave_a_loadable_consistent_store(tmp_path: Path) -> None:
    store = seeded(tmp_path / "store", 0.3, 0.2)
    go = tmp_path / "go"
    go.touch()
    rng = random.Random(13)
    for round_ in range(6):
        mode = ("promote", "rollback")[round_ % 2]
        proc = start(store.root, mode, go)
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait(timeout=30)
        assert_consistent(store)
    assert len(store.history("s")) > 8  # the workers did write between the kills
    assert_clean_after_next_write(store)


def test_rollback_waits_for_a_paused_promotion_and_sees_its_record(tmp_path: Path) -> None:
    store = seeded(tmp_path / "store", 0.3, 0.2)
    go = tmp_path / "go"
    go.touch()
    promoter = start(store.root, "promote-once", go, fault="history-written:pause")
    assert promoter.stderr is not None
    assert promoter.stderr.readline() == "gates-store: paused at history-written\n"
    roller = start(store.root, "rollback-once", go)
    time.sleep(0.5)
    assert roller.poll() is None  # waiting for the lock the paused promoter holds
    promoter.kill()
    promoter.wait(timeout=30)
    out, err = roller.communicate(timeout=30)
    assert (roller.returncode, out, err) == (0, "rolled 3 2\n", "")
    assert store.champion_version("s") == 2
    assert [e["event"] for e in store.history("s")] == ["promote"] * 3 + ["rollback"]
    assert_clean_after_next_write(store)


def test_rollback_racing_promotion_keeps_one_history_chain(tmp_path: Path) -> None:
    store = seeded(tmp_path / "store", 0.3, 0.2)
    go = tmp_path / "go"
    procs = [start(store.root, "promote", go), start(store.root, "rollback", go),
             start(store.root, "promote", go)]
    go.touch()
    time.sleep(1.5)
    for proc in procs:
        proc.kill()  # at whatever moment each one is
        proc.wait(timeout=30)
    events = [e["event"] for e in store.history("s")]
    assert events.count("promote") > 3 and events.count("rollback") > 1, events
    assert_consistent(store)
    assert_clean_after_next_write(store)


def test_concurrent_ledger_appends_lose_and_interleave_nothing(tmp_path: Path) -> None:
    store = seeded(tmp_path / "store", 0.3)
    go = tmp_path / "go"
    procs = [start(store.root, "append", go) for _ in range(4)]
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.communicate()
    killed = start(store.root, "append", go)
    time.sleep(0.15)
    killed.kill()
    killed.wait(timeout=30)
    records, warnings = store.runs("s")
    assert warnings == []
    counts: dict[str, int] = {}
    for record in records:
        assert record["pad"] == "x" * 4000
        pid = record["run_id"].split("-")[0]
        counts[pid] = counts.get(pid, 0) + 1
    assert sorted(counts.values())[-4:] == [40] * 4
    lines = (store.root / "s" / "runs.jsonl").read_text().split("\n")
    assert lines[-1] == "" and all(json.loads(line) for line in lines[:-1])
