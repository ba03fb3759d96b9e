"""Bad input of every kind: one clear message naming the file and the problem, a failing
exit code, no traceback, and an untouched baseline store. A gate never passes on any."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Workspace

MARKER = Path("/tmp") / "gates-test-pickle-was-loaded"
NO_PROMOTE = "no-promote"


class Exploit:
    """Unpickling this would create MARKER: the sidecar must never be unpickled."""

    def __reduce__(self) -> tuple:
        return (Path.touch, (MARKER,))


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def report(ws: Workspace) -> dict:
    return json.loads(ws.eval.read_text())


def set_metric(name: str, value: object) -> Callable[[Workspace], list[str]]:
    def mutate(ws: Workspace) -> list[str]:
        data = report(ws)
        data["metrics"][name] = value
        ws.eval.write_text(json.dumps(data))
        return []
    return mutate


def raw_report(text: str) -> Callable[[Workspace], list[str]]:
    def mutate(ws: Workspace) -> list[str]:
        ws.eval.write_text(text)
        return []
    return mutate


def set_extra(ws: Workspace, **extra: object) -> list[str]:
    data = report(ws)
    data["extra"].update(extra)
    ws.eval.write_text(json.dumps(data))
    return []


def move_report(ws: Workspace, where: Path) -> list[str]:
    ws.eval = where
    return []


def drop_metric(ws: Workspace) -> list[str]:
    data = report(ws)
    del data["metrics"]["rmse"]
    ws.eval.write_text(json.dumps(data))
    return []


LEADERBOARD_HEADER = "run_id,timestamp,label,config,notes,metric:nrmse,metric:mse,metric:mae," \
                     "metric:rmse,metric:rel_l2,metric:conservation_gap,metric:bc_violation," \
                     "metric:negativity_penalty"


def csv_report(rows: list[str], header: str = LEADERBOARD_HEADER, row: str | None = None
               ) -> Callable[[Workspace], list[str]]:
    def mutate(ws: Workspace) -> list[str]:
        path = ws.eval.with_name("leaderboard.csv")
        path.write_text("\n".join([header, *rows]) + "\n")
        ws.eval = path
        return ["--eval-row", row] if row else []
    return mutate


GOOD_ROW = "r1,2026-01-01,a,c.yaml,,0.0152,0.000199,0.00656,0.0117,0.0152,0.0000958," \
           "0.00361,0"


def samples_npz(**arrays: np.ndarray) -> Callable[[Workspace], list[str]]:
    def mutate(ws: Workspace) -> list[str]:
        path = ws.eval.with_name("burgers1d_eval_samples.npz")
        np.savez(path, **arrays)  # type: ignore[arg-type]
        return []
    return mutate


def pickled_npz(ws: Workspace) -> list[str]:
    path = ws.eval.with_name("burgers1d_eval_samples.npz")
    evil = np.empty(1, dtype=object)
    evil[0] = Exploit()
    np.savez(path, nrmse=evil, allow_pickle=True)
    assert b"pathlib" in path.read_bytes() and b"touch" in path.read_bytes()  # a real pickle
    return []


def baseline_file(relative: str, text: str) -> Callable[[Workspace], list[str]]:
    def mutate(ws: Workspace) -> list[str]:
        path = ws.baselines / "burgers1d" / relative
        if path.exists():
            path.chmod(0o644)
        path.write_text(text)
        return []
    return mutate


def args(*extra: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: list(extra)


# (case id, mutation, words the one message must contain)
EXIT_CASES: list[tuple[str, Callable[[Workspace], list[str]], list[str]]] = [
    ("truncated-json", raw_report('{"metrics": {"nrmse": 0.1'),
     ["burgers1d_eval.json", "not valid JSON"]),
    ("not-json", raw_report("nrmse = 0.1\n"), ["burgers1d_eval.json", "not valid JSON"]),
    ("metrics-not-mapping", raw_report('{"metrics": [0.1, 0.2]}'),
     ["burgers1d_eval.json", '"metrics" must be a mapping']),
    ("string-metric", set_metric("nrmse", "0.1"),
     ["burgers1d_eval.json", "metric 'nrmse' must be a number, got str"]),
    ("boolean-metric", set_metric("mse", True),
     ["burgers1d_eval.json", "metric 'mse' must be a number, got bool"]),
    ("negative-error-metric", set_metric("mae", -0.01),
     ["burgers1d_eval.json", "metric 'mae' is an error metric and cannot be negative"]),
    ("missing-report", lambda ws: move_report(ws, ws.root / "nope.json"),
     ["nope.json", "cannot read the evaluation report"]),
    ("unknown-eval-row", csv_report([GOOD_ROW], row="r9"),
     ["leaderboard.csv", "no row has run_id or label 'r9'"]),
    ("csv-duplicate-columns", csv_report([GOOD_ROW + ",0.1"],
                                         header=LEADERBOARD_HEADER + ",metric:nrmse"),
     ["leaderboard.csv", "duplicate columns: metric:nrmse"]),
    ("csv-not-a-number", csv_report([GOOD_ROW.replace("0.0152,", "abc,", 1)]),
     ["leaderboard.csv", "metric 'nrmse' is not a number: 'abc'"]),
    ("npz-pickled-objects", pickled_npz,
     ["burgers1d_eval_samples.npz", "pickled Python objects; refused"]),
    ("npz-different-lengths", samples_npz(nrmse=np.ones(32), mse=np.ones(31)),
     ["burgers1d_eval_samples.npz", "differ in length"]),
    ("npz-not-a-zip", lambda ws: (ws.eval.with_name("burgers1d_eval_samples.npz")
                                  .write_bytes(b"garbage"), [])[1],
     ["burgers1d_eval_samples.npz", "not a readable .npz"]),
    ("corrupt-baseline-version", baseline_file("versions/v0001/version.json", '{"metr'),
     ["version.json", "baseline version file is corrupt"]),
    ("pointer-to-missing-version", baseline_file("champion.json", '{"version": 7}'),
     ["champion.json", "names version 7, which does not exist"]),
    ("corrupt-pointer", baseline_file("champion.json", "seven"),
     ["champion.json", "champion pointer is corrupt"]),
    ("suite-escapes-store", args("--suite", "../x"), ["suite name '../x' is not allowed"]),
    ("suite-absolute-path", args("--suite", "/tmp/x"), ["suite name '/tmp/x' is not allowed"]),
    # with --promote a new suite name starts a new suite; without, it is a typo
    ("unknown-suite", args("--suite", "burgers2d", NO_PROMOTE), ["unknown suite 'burgers2d'"]),
    ("policy-unknown-key", baseline_file("policy.toml", "[regression]\ntolerence = 0.1\n"),
     ["policy.toml", "unknown policy key regression.tolerence"]),
    ("policy-negative-threshold",
     baseline_file("policy.toml", "[physics.ceilings]\nbc_violation = -1.0\n"),
     ["policy.toml", "physics.ceilings.bc_violation must not be negative"]),
    ("policy-not-toml", baseline_file("policy.toml", "[regression\n"),
     ["policy.toml", "not valid TOML"]),
    ("suite-misspelled-in-report", lambda ws: set_extra(ws, suite="burgers_1d"),
     ["unknown suite 'burgers_1d'", "name it with --suite"]),
    ("npz-non-finite-values", samples_npz(nrmse=np.array([0.1, np.nan, 0.2]),
                                          mse=np.ones(3)),
     ["burgers1d_eval_samples.npz", "non-finite values: nrmse (1)"]),
    ("policy-fraction-above-one", baseline_file("policy.toml", "[regression]\ntolerance = 10\n"),
     ["policy.toml", "is a fraction (0.10 means 10 %)"]),
    ("version-file-in-the-wrong-place",
     baseline_file("versions/v0001/version.json",
                   '{"suite": "burgers1d", "version": 3, "metrics": {"nrmse": 0.1}}'),
     ["version.json", "says suite 'burgers1d' v3, but it sits at burgers1d v1"]),
    ("wandb-info-not-json", lambda ws: ((ws.root / "info.json").write_text("{"),
                                        ["--wandb-info", str(ws.root / "info.json")])[1],
     ["info.json", "W&B run info is not valid JSON"]),
]


@pytest.fixture(autouse=True)
def no_marker() -> None:
    MARKER.unlink(missing_ok=True)


@pytest.mark.parametrize(("mutate", "words"), [c[1:] for c in EXIT_CASES],
                         ids=[c[0] for c in EXIT_CASES])
def test_bad_input_ends_with_one_clear_message(
        pytester: pytest.Pytester, workspace: Workspace,
        mutate: Callable[[Workspace], list[str]], words: list[str]) -> None:
    extra = mutate(workspace)
    before = tree_digest(workspace.baselines)
    promote = [] if NO_PROMOTE in extra else ["--promote"]
    extra = [a for a in extra if a != NO_PROMOTE]
    result = pytester.runpytest(*workspace.args(*promote), *extra)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 1, output
    lines = [line for line in output.splitlines() if "bad input:" in line]
    assert len(lines) == 1, output
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in output
    assert " passed" not in output.splitlines()[-1]
    assert tree_digest(workspace.baselines) == before
    assert not MARKER.exists()
    gates = json.loads((workspace.eval.parent / "gates.json").read_text())
    assert gates["verdict"] == "fail" and gates["promoted"] is False
    assert gates["gates"][0]["status"] == "error"


GATE_CASES = [
    ("nan-in-a-metric-of-unknown-direction", set_metric("energy_error", float("nan")),
     "energy_error", "nan: a non-finite value never passes"),
    ("nan", set_metric("nrmse", float("nan")), "nrmse", "nan: a non-finite value never passes"),
    ("plus-inf", set_metric("bc_violation", float("inf")), "bc_violation",
     "inf: a non-finite value never passes"),
    ("minus-inf", set_metric("mse", float("-inf")), "mse", "-inf: a non-finite value"),
    ("missing-required-metric", drop_metric, "rmse", "rmse is missing from the report"),
    ("empty-csv-cell", csv_report([GOOD_ROW.replace(",0.0117,", ",,")]), "rmse",
     "rmse is missing from the report"),
]


@pytest.mark.parametrize(("mutate", "metric", "words"), [c[1:] for c in GATE_CASES],
                         ids=[c[0] for c in GATE_CASES])
def test_bad_values_fail_their_gates_and_never_promote(
        pytester: pytest.Pytester, workspace: Workspace,
        mutate: Callable[[Workspace], list[str]], metric: str, words: str) -> None:
    extra = mutate(workspace)
    before = tree_digest(workspace.baselines)
    result = pytester.runpytest(*workspace.args("--promote"), *extra)
    assert result.ret == 1
    assert words in result.stdout.str()
    assert "Traceback" not in result.stdout.str()
    gates = json.loads((workspace.eval.parent / "gates.json").read_text())
    assert gates["verdict"] == "fail" and gates["promoted"] is False
    mine = [g for g in gates["gates"] if g["metric"] == metric]
    assert mine and all(g["status"] == "fail" for g in mine if g["kind"] == "regression")
    assert tree_digest(workspace.baselines) == before


def test_bad_input_under_xdist_ends_the_same_way(pytester: pytest.Pytester,
                                                 workspace: Workspace) -> None:
    set_metric("nrmse", "0.1")(workspace)
    before = tree_digest(workspace.baselines)
    result = pytester.runpytest_subprocess(*workspace.args("-n", "2", "--promote"),
                                           timeout=120)
    assert result.ret == 1
    lines = [line for line in result.outlines if "bad input:" in line]
    assert len(lines) == 1 and "metric 'nrmse' must be a number" in lines[0]
    assert json.loads((workspace.eval.parent / "gates.json").read_text())["verdict"] == "fail"
    assert tree_digest(workspace.baselines) == before
