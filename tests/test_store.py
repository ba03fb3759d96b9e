"""The baseline store with real files and real processes: immutable versions, atomic
pointer moves, one winner among concurrent promotions, survival of a killed promotion."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gates.__main__ import main as cli
from gates.errors import GateInputError, PromotionConflict
from gates.model import Evaluation
from gates.store import BaselineStore


def evaluation(nrmse: float, n: int = 4) -> Evaluation:
    return Evaluation(Path("eval.json"), {"nrmse": nrmse, "mse": nrmse**2},
                      samples={"nrmse": np.full(n, nrmse)}, sample_ids=np.arange(n))


def test_promote_rollback_and_history(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    assert store.promote("s", evaluation(0.3), expected=None, provenance={"run_id": "a"}) == 1
    assert store.promote("s", evaluation(0.2), expected=1, provenance={"run_id": "b"}) == 2
    champion = store.champion("s")
    assert champion is not None and champion.version == 2
    assert champion.metrics["nrmse"] == 0.2 and champion.provenance["run_id"] == "b"
    np.testing.assert_array_equal(champion.samples["nrmse"], np.full(4, 0.2))
    version_file = tmp_path / "s" / "versions" / "v0002" / "version.json"
    assert version_file.stat().st_mode & 0o222 == 0  # written read-only: never edited
    assert store.rollback("s") == (2, 1)
    assert store.champion_version("s") == 1
    assert store.promote("s", evaluation(0.1), expected=1, provenance={}) == 3
    assert [e["event"] for e in store.history("s")] == ["promote", "promote", "rollback",
                                                        "promote"]
    assert store.versions("s") == [1, 2, 3]


def test_stale_expectation_is_a_conflict(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.promote("s", evaluation(0.3), expected=None, provenance={})
    with pytest.raises(PromotionConflict, match="gated against champion none .* now v1"):
        store.promote("s", evaluation(0.2), expected=None, provenance={})
    assert store.champion_version("s") == 1 and store.versions("s") == [1]


def test_rollback_of_a_first_version_is_refused(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.promote("s", evaluation(0.3), expected=None, provenance={})
    with pytest.raises(GateInputError, match="nothing to roll back to"):
        store.rollback("s")


PROMOTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from gates.errors import PromotionConflict
    from gates.model import Evaluation
    from gates.store import BaselineStore
    root, go, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    ev = Evaluation(Path("e.json"), {"nrmse": 0.1}, samples={"nrmse": np.ones(n)})
    while not go.exists():
        time.sleep(0.001)
    try:
        v = BaselineStore(root).promote("s", ev, expected=1, provenance={})
        print("won", v)
    except PromotionConflict as exc:
        print("conflict", exc)
        sys.exit(3)
""")


def start(tmp_path: Path, go: Path, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", PROMOTER, str(tmp_path / "store"), str(go),
                             str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("round_", range(3))
def test_two_concurrent_promotions_one_wins(tmp_path: Path, round_: int) -> None:
    store = BaselineStore(tmp_path / "store")
    store.promote("s", evaluation(0.3), expected=None, provenance={})
    go = tmp_path / "go"
    procs = [start(tmp_path, go, 100_000) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    results = [(p.wait(timeout=60), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3], results
    loser = next(out for code, (out, _) in results if code == 3)
    assert "promotion conflict in suite 's'" in loser and "another promotion won" in loser
    assert store.champion_version("s") == 2 and store.versions("s") == [1, 2]


def test_a_killed_promotion_leaves_the_champion_intact(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "store")
    store.promote("s", evaluation(0.3), expected=None, provenance={})
    go = tmp_path / "go"
    go.touch()
    proc = start(tmp_path, go, 60_000_000)  # ~480 MB of samples: a long write to interrupt
    versions = tmp_path / "store" / "s" / "versions"
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".tmp-") for p in versions.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "promotion never started"
        time.sleep(0.005)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    champion = store.champion("s")
    assert champion is not None and champion.version == 1 and champion.metrics["nrmse"] == 0.3
    assert store.versions("s") == [1]
    # the kernel released the lock: the next promotion goes through
    assert store.promote("s", evaluation(0.2), expected=1, provenance={}) == 2


def test_cli_lists_shows_diffs_and_rolls_back(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    store = BaselineStore(tmp_path)
    store.promote("s", evaluation(0.3), expected=None,
                  provenance={"run_id": "run-a", "timestamp": "2026-01-01T00:00:00Z"})
    store.promote("s", evaluation(0.2), expected=1, provenance={"run_id": "run-b"})
    base = ["baseline", "--baselines", str(tmp_path)]
    assert cli([*base, "list"]) == 0
    out = capsys.readouterr().out
    assert "*  v2" in out and "run-a" in out and "promote none -> v1" in out
    assert cli([*base, "show", "v1"]) == 0
    assert '"nrmse": 0.3' in capsys.readouterr().out
    assert cli([*base, "diff", "1", "2"]) == 0
    assert "-33.33%" in capsys.readouterr().out
    assert cli([*base, "rollback"]) == 0
    assert "from v2 to v1" in capsys.readouterr().out
    assert store.champion_version("s") == 1
    assert cli([*base, "--suite", "../x", "list"]) == 1
    assert "not allowed" in capsys.readouterr().err


def test_a_second_rollback_does_not_bring_the_bad_version_back(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.promote("s", evaluation(0.3), expected=None, provenance={})
    store.promote("s", evaluation(0.2), expected=1, provenance={})
    assert store.rollback("s") == (2, 1)
    with pytest.raises(GateInputError, match="nothing to roll back to"):
        store.rollback("s")
    assert store.champion_version("s") == 1
    assert store.rollback("s", to=2) == (1, 2)  # forward again only when asked by name


@pytest.mark.parametrize(("metrics", "extra", "words"), [
    ({"nrmse": float("nan")}, {}, "non-finite metric(s) nrmse"),
    ({"nrmse": 0.1, "energy": float("inf")}, {}, "non-finite metric(s) energy"),
    ({"nrmse": 0.1}, {"repeats": {"nrmse": "see wandb"}}, '"repeats" must map'),
    ({"nrmse": 0.1}, {"repeats": {"nrmse": [0.1, float("nan")]}}, '"repeats" must map'),
])
def test_a_version_that_could_not_load_again_is_never_written(
        tmp_path: Path, metrics: dict, extra: dict, words: str) -> None:
    store = BaselineStore(tmp_path)
    with pytest.raises(GateInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        store.promote("s", Evaluation(Path("e.json"), metrics, extra), expected=None,
                      provenance={})
    assert store.versions("s") == [] and store.champion_version("s") is None
