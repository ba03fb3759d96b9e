"""Field-level metrics through a real gate session: from the bundled arrays, as an .npz,
a folder of .npy and a zarr store, locally and on a Dask cluster."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLE, Workspace


def gates(ws: Workspace) -> dict[str, dict]:
    out = ws.eval.parent / "gates-out" / "gates.json"
    report = json.loads((out if out.is_file() else ws.eval.parent / "gates.json").read_text())
    return {g["id"]: g for g in report["gates"]}


def npy_folder(root: Path) -> Path:
    folder = root / "arrays"
    folder.mkdir()
    with np.load(SAMPLE / "burgers1d_eval_arrays.npz") as data:
        np.save(folder / "pred.npy", data["pred"])
        np.save(folder / "target.npy", data["target"])
    return folder


def zarr_store(root: Path) -> Path:
    import zarr

    path = root / "arrays.zarr"
    group = zarr.open_group(str(path), mode="w")
    with np.load(SAMPLE / "burgers1d_eval_arrays.npz") as data:
        for name in ("pred", "target"):
            group.create_array(name, data=data[name], chunks=(8, 11, 64, 1))
    return path


def passed(result: pytest.RunResult) -> None:
    """A passing session: every gate test passed, none failed or errored."""
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes.get("passed", 0) > 0, result.stdout.str()[-2000:]
    assert not outcomes.get("failed") and not outcomes.get("errors")


@pytest.mark.parametrize("source", ["npz", "npy-folder", "zarr"])
def test_field_metrics_are_gated_against_the_champion(
        pytester: pytest.Pytester, workspace: Workspace, source: str) -> None:
    arrays = {"npz": lambda: SAMPLE / "burgers1d_eval_arrays.npz",
              "npy-folder": lambda: npy_folder(workspace.root),
              "zarr": lambda: zarr_store(workspace.root)}[source]()
    result = pytester.runpytest(*workspace.args("--gates-arrays", str(arrays)))
    passed(result)
    found = gates(workspace)
    field = {k: g for k, g in found.items() if g["metric"].startswith("field/")}
    assert len(field) == 18 and all(g["baseline"] is not None for g in field.values())
    # one definition per name: where the evaluator's metric is the same definition (The
    # Well's mse/mae are plain means; the physics metrics are universal-simulator's), the
    # gate computes from the fields what the evaluator reported
    for name in ("mse", "mae", "conservation_gap", "bc_violation", "negativity_penalty"):
        computed = found[f"regression/field/{name}"]["current"]
        reported = found[f"regression/{name}"]["current"]
        assert computed == pytest.approx(reported, rel=1e-5, abs=1e-12), name
    assert found["regression/field/nrmse"]["evidence"]["method"].startswith("paired")
    # no per-sample decomposition of PDEBench's batch max: the threshold rule decides
    assert not found["regression/field/max_error"]["evidence"]["method"].startswith("paired")


def test_a_worse_prediction_field_fails_its_field_gates(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    with np.load(SAMPLE / "burgers1d_eval_arrays.npz") as data:
        pred, target = data["pred"], data["target"]
    worse = workspace.root / "worse.npz"
    np.savez(worse, pred=target + 1.3 * (pred - target), target=target)
    result = pytester.runpytest(*workspace.args("--gates-arrays", str(worse)))
    assert result.ret == 1
    found = gates(workspace)
    assert found["regression/field/nrmse"]["status"] == "fail"
    assert found["regression/nrmse"]["status"] != "fail"  # the report's numbers are unchanged


def test_bad_arrays_end_the_session_with_one_message(
        pytester: pytest.Pytester, workspace: Workspace) -> None:
    bad = workspace.root / "bad.npz"
    np.savez(bad, pred=np.zeros((2, 3, 4, 1), np.float32), target=np.zeros((2, 3, 5, 1)))
    result = pytester.runpytest(*workspace.args("--gates-arrays", str(bad)))
    assert result.ret == 1
    lines = [line for line in result.stdout.lines if "bad input:" in line]
    assert len(set(lines)) == 1 and "bad.npz" in lines[0]  # one message (no traceback)
    assert "Traceback" not in result.stdout.str()


def test_field_gates_are_skipped_without_arrays(pytester: pytest.Pytester,
                                               workspace: Workspace) -> None:
    result = pytester.runpytest(*workspace.args())
    passed(result)
    result.stdout.fnmatch_lines(["*no --gates-arrays: field metrics not computed or gated*"])


def test_field_metrics_on_a_dask_cluster_match_numpy(
        pytester: pytest.Pytester, workspace: Workspace, subprocess_env: dict[str, str]
) -> None:
    """A real cluster: scheduler and worker in processes of their own, reached by address."""
    store = zarr_store(workspace.root)
    pytester._monkeypatch.setattr("os.environ", subprocess_env)
    local = pytester.runpytest_subprocess(*workspace.args("--gates-arrays", str(store)))
    passed(local)
    expected = {k: g["current"] for k, g in gates(workspace).items() if "field/" in k}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scratch = workspace.root / "dask"
    cluster = [
        subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                          "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env),
        subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                          "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                          "--local-directory", str(scratch)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env),
    ]
    try:
        remote = pytester.runpytest_subprocess(
            *workspace.args("--gates-arrays", str(store), "--gates-dask-scheduler", address),
            timeout=180)
        passed(remote)
        remote.stdout.fnmatch_lines([f"*field metrics from * on the Dask cluster at {address}"])
    finally:
        for proc in cluster:
            proc.terminate()
            proc.wait(timeout=30)
    found = gates(workspace)
    for gate_id, value in expected.items():
        assert found[gate_id]["current"] == pytest.approx(value, rel=1e-10, abs=1e-15), gate_id


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
