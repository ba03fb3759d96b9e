"""Bad input of every kind ends a real gate session the same way: exit code 1, no
traceback, one ``bad input:`` line naming the file and the problem, ``gates.json`` with
verdict ``error`` and nothing promoted, and the baseline store byte for byte unchanged.

Each case is one mutation of a private copy of the bundled sample and store. The sessions
run in-process (``pytester.runpytest_inprocess``, W&B off), so the whole table costs a
fraction of a second per case; the modules are imported once for all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Workspace

#: Imported here once: pytester drops modules first imported inside an in-process session,
#: so without this every case would import the plan, the readers and the sinks again.
#: (A process pool re-imported between sessions cannot pickle its own worker function.)
for _module in ("concurrent.futures.process", "gates.plan", "gates.session", "gates.inputs",
                "gates.sinks.local", "gates.sinks.charts", "gates.sinks.dashboards",
                "gates.ledger", "gates.store", "gates.fields"):
    with contextlib.suppress(ImportError):  # a module being reworked: only slower then
        importlib.import_module(_module)

#: Inner sessions leave out what they do not need: the unraisable-exception plugin's five
#: gc.collect calls, assertion rewriting, and third-party plugins whose modules pytester
#: would import (and rewrite) afresh in every session. That keeps a case near 0.1 s.
FAST = ("--assert=plain", "-p", "no:unraisableexception", "-p", "no:hypothesispytest",
        "-p", "no:benchmark", "-p", "no:zarr", "-p", "no:anyio", "-p", "no:pytest-datadir")
MARKER = "pickle-was-loaded"  # in each case's own workspace: parallel cases never share it
REPORT = "burgers1d_eval.json"
SAMPLES = "burgers1d_eval_samples.npz"

Mutation = Callable[[Workspace], list[str]]


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, and the words its one message must contain."""

    id: str
    mutate: Mutation
    words: tuple[str, ...]
    promote: bool = True  # with --gates-promote: the store must stay untouched even then
    env: tuple[tuple[str, str], ...] = ()
    known_bug: str | None = None  # xfail with this reason until the code is fixed

    def param(self) -> object:
        marks = [pytest.mark.xfail(reason=self.known_bug)] if self.known_bug else []
        return pytest.param(self, id=self.id, marks=marks)


class Exploit:
    """Unpickling this would create ``path``: the sidecar must never be unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- mutations


def report(ws: Workspace) -> dict:
    return json.loads(ws.eval.read_text())


def write_report(ws: Workspace, data: object) -> None:
    ws.eval.write_text(json.dumps(data))


def set_metric(name: str, value: object) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        data = report(ws)
        data["metrics"][name] = value
        write_report(ws, data)
        return []
    return mutate


def raw_metric(name: str, literal: str) -> Mutation:
    """A metric written as a raw JSON literal (huge integers, NaN)."""
    def mutate(ws: Workspace) -> list[str]:
        data = report(ws)
        data["metrics"][name] = "@@"
        ws.eval.write_text(json.dumps(data).replace('"@@"', literal))
        return []
    return mutate


def raw_report(text: str | bytes) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        if isinstance(text, bytes):
            ws.eval.write_bytes(text)
        else:
            ws.eval.write_text(text)
        return []
    return mutate


def edit_report(change: Callable[[dict], object]) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        data = report(ws)
        change(data)
        write_report(ws, data)
        return []
    return mutate


def duplicate_key(ws: Workspace) -> list[str]:
    text = ws.eval.read_text()
    ws.eval.write_text(text.replace('"nrmse":', '"nrmse": 0.5, "nrmse":', 1))
    return []


def deep_extra(ws: Workspace) -> list[str]:
    text = ws.eval.read_text().rstrip().removesuffix("}")
    ws.eval.write_text(text + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return []


def replace_report(make: Callable[[Path], None], name: str = REPORT) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        path = ws.eval.with_name(name)
        if path.exists() or path.is_symlink():
            path.unlink()
        make(path)
        ws.eval = path
        return []
    return mutate


def symlink_loop(path: Path) -> None:
    other = path.with_name(path.name + ".loop")
    os.symlink(other, path)
    os.symlink(path, other)


def details(**fields: object) -> Mutation:
    """A Lightning report: the sample's metrics with ``details``, its npz sidecar gone."""
    def mutate(ws: Workspace) -> list[str]:
        data = report(ws)
        data["details"] = dict(fields)
        write_report(ws, data)
        ws.eval.with_name(SAMPLES).unlink()
        return []
    return mutate


def details_beside_npz(ws: Workspace) -> list[str]:
    data = report(ws)
    data["details"] = {"per_sample_mse": [0.1, 0.2]}
    write_report(ws, data)
    return []


def reused(flat: object) -> Mutation:
    return raw_report(json.dumps({"reused": True, "source": "checkpoint_metadata",
                                  "metrics_flat": flat}))


LEADERBOARD_HEADER = "run_id,timestamp,label,config,notes,metric:nrmse,metric:mse,metric:mae," \
                     "metric:rmse,metric:rel_l2,metric:conservation_gap,metric:bc_violation," \
                     "metric:negativity_penalty"
GOOD_ROW = "r1,2026-01-01T00:00:00,a,c.yaml,,0.0152,0.000199,0.00656,0.0117,0.0152," \
           "0.0000958,0.00361,0"


def csv_report(rows: list[str], header: str = LEADERBOARD_HEADER, row: str | None = None,
               raw: bytes | None = None) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        path = ws.eval.with_name("leaderboard.csv")
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text("\n".join([header, *rows]) + "\n" if header else "")
        ws.eval = path
        return ["--gates-eval-row", row] if row else []
    return mutate


def samples_npz(**arrays: object) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        np.savez(ws.eval.with_name(SAMPLES), **arrays)  # type: ignore[arg-type]
        return []
    return mutate


def samples_bytes(content: bytes) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        ws.eval.with_name(SAMPLES).write_bytes(content)
        return []
    return mutate


def samples_path(make: Callable[[Path], None]) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        path = ws.eval.with_name(SAMPLES)
        path.unlink()
        make(path)
        return []
    return mutate


def pickled_npz(ws: Workspace) -> list[str]:
    path = ws.eval.with_name(SAMPLES)
    evil = np.empty(1, dtype=object)
    evil[0] = Exploit(ws.root / MARKER)
    np.savez(path, nrmse=evil, allow_pickle=True)
    assert b"pathlib" in path.read_bytes() and b"touch" in path.read_bytes()  # a real pickle
    return []


def npz_declaring(size: int) -> bytes:
    """A small, valid npz whose central directory declares ``size`` uncompressed bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        member = io.BytesIO()
        np.save(member, np.ones(32))
        archive.writestr("nrmse.npy", member.getvalue())
    data = bytearray(buffer.getvalue())
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, size)
    return bytes(data)


def npz_over_32_values(shape: tuple[int, ...]) -> bytes:
    """An npz whose array header declares ``shape`` over 32 stored float64 values: a
    billion values is more than the member stores; 40 values is within the member's stored
    size (the header counts too), so only reading the values finds them short."""
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("nrmse.npy", member.getvalue() + np.ones(32).tobytes())
    return buffer.getvalue()


def baseline_file(relative: str, text: str) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        path = ws.baselines / "burgers1d" / relative
        if path.exists():
            path.chmod(0o644)
        path.write_text(text)
        return []
    return mutate


def edit_version(change: Callable[[dict], None]) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        path = ws.baselines / "burgers1d" / "versions" / "v0001" / "version.json"
        path.chmod(0o644)
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
        return []
    return mutate


def run_info(text: str) -> Mutation:
    def mutate(ws: Workspace) -> list[str]:
        path = ws.root / "info.json"
        path.write_text(text)
        return ["--gates-wandb-info", str(path)]
    return mutate


def args(*extra: str) -> Mutation:
    return lambda ws: list(extra)


def missing_baselines(ws: Workspace) -> list[str]:
    ws.baselines = ws.root / "no-such-store"
    return []


def set_key(key: str, value: object) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data[key] = value
    return change


NAN_NPZ = {"nrmse": np.array([0.1, np.nan, 0.2]), "mse": np.ones(3)}

CASES: list[Case] = [
    # --- the report as JSON
    Case("truncated-json", raw_report('{"metrics": {"nrmse": 0.1'), (REPORT, "not valid JSON")),
    Case("not-json", raw_report("nrmse = 0.1\n"), (REPORT, "not valid JSON")),
    Case("empty-report", raw_report(""), (REPORT, "not valid JSON")),
    Case("not-utf8", raw_report(b'{"metrics": {"nrmse": 0.1}, "extra": {"x": "\xff"}}'),
         (REPORT, "not UTF-8 text")),
    Case("top-level-array", raw_report("[0.1, 0.2]"), (REPORT, "must be a JSON object")),
    Case("metrics-not-mapping", raw_report('{"metrics": [0.1, 0.2]}'),
         (REPORT, '"metrics" must be a mapping')),
    Case("extra-not-mapping", edit_report(lambda d: d.update(extra=[1, 2])),
         (REPORT, '"extra" must be a mapping or null')),
    Case("no-metrics", raw_report('{"metrics": {}, "extra": null}'),
         (REPORT, "report holds no metrics")),
    Case("string-metric", set_metric("nrmse", "0.1"),
         (REPORT, "metric 'nrmse' must be a number, got str")),
    Case("boolean-metric", set_metric("mse", True),
         (REPORT, "metric 'mse' must be a number, got bool")),
    Case("null-metric", set_metric("mae", None), (REPORT, "metric 'mae' must be a number")),
    Case("list-metric", set_metric("mae", [0.1]), (REPORT, "metric 'mae' must be a number")),
    Case("negative-error-metric", set_metric("mae", -0.01),
         (REPORT, "metric 'mae' is an error metric and cannot be negative")),
    Case("flat-json-with-text", raw_report('{"nrmse": 0.1, "note": "fine"}'),
         (REPORT, "metric 'note' must be a number")),
    Case("duplicate-metric-key", duplicate_key, (REPORT, "duplicate key 'nrmse'")),
    Case("duplicate-top-level-key", raw_report('{"metrics": {"nrmse": 0.1}, '
                                               '"metrics": {"nrmse": 0.2}}'),
         (REPORT, "duplicate key 'metrics'")),
    Case("integer-of-400-digits", raw_metric("mse", "1" * 400),
         (REPORT, "an integer of 400 digits is out of range")),
    Case("integer-of-5000-digits", raw_metric("mse", "7" * 5000),
         (REPORT, "an integer of 5000 digits is out of range")),
    Case("json-nested-100000-deep", deep_extra, (REPORT, "nested too deeply")),
    Case("field-metric-in-the-report", set_metric("field/nrmse", 1e-9),
         (REPORT, "brings its own field metrics (field/nrmse)")),
    Case("nan-field-metric-in-the-report", raw_metric("field/vrmse", "NaN"),
         (REPORT, "brings its own field metrics (field/vrmse)")),
    Case("eval-row-with-a-json-report", args("--gates-eval-row", "r1"),
         (REPORT, "--gates-eval-row applies to a leaderboard CSV only")),
    # --- the report is not a regular file
    Case("missing-report", replace_report(lambda p: None, "nope.json"),
         ("nope.json", "cannot read the evaluation report")),
    Case("report-is-a-directory", replace_report(lambda p: p.mkdir()),
         (REPORT, "is a directory, not a regular file")),
    Case("report-is-a-fifo", replace_report(lambda p: os.mkfifo(p)),
         (REPORT, "is a FIFO (named pipe), not a regular file")),
    Case("report-is-a-symlink-loop", replace_report(symlink_loop),
         (REPORT, "Too many levels of symbolic links")),
    # --- the Lightning report's details
    Case("details-not-mapping", edit_report(lambda d: d.update(details=[1])),
         (REPORT, '"details" must be a mapping')),
    Case("details-vector-of-text", details(per_sample_mse=[0.1, "x"]),
         (REPORT, "details.per_sample_mse[1] must be a number")),
    Case("details-vector-not-a-list", details(per_sample_mse=0.1),
         (REPORT, "details.per_sample_mse must be a list of numbers")),
    Case("details-vector-with-nan", details(per_sample_mse=[0.1, float("nan")]),
         (REPORT, "per-sample vectors hold non-finite values: mse (1)")),
    Case("details-vector-of-booleans", details(per_sample_mae=[True, False]),
         (REPORT, "details.per_sample_mae[0] must be a number, got bool")),
    Case("details-vectors-differ-in-length", details(per_sample_mse=[0.1, 0.2],
                                                     per_sample_mae=[0.1]),
         (REPORT, "per-sample vectors differ in length")),
    Case("details-ttc-logs-not-a-list", details(ttc_step_logs={"step": 0}),
         (REPORT, "details.ttc_step_logs must be a list")),
    Case("details-and-a-samples-sidecar", details_beside_npz,
         (SAMPLES, "both from this sidecar and from the report's details")),
    # --- the orchestrator's reused results
    Case("metrics-flat-not-mapping", reused([1, 2]), (REPORT, '"metrics_flat" must be a mapping')),
    Case("metrics-flat-unknown-key", reused({"metric:nrmse": 0.1, "nrmse": 0.1}),
         (REPORT, "metrics_flat key 'nrmse' is neither metric:<name> nor extra:<name>")),
    Case("metrics-and-metrics-flat", raw_report('{"metrics": {"nrmse": 0.1}, '
                                                '"metrics_flat": {"metric:nrmse": 0.2}}'),
         (REPORT, 'both "metrics" and "metrics_flat"')),
    Case("metrics-flat-text-metric", reused({"metric:nrmse": "0.1"}),
         (REPORT, "metric 'nrmse' must be a number, got str")),
    # --- the report as a leaderboard CSV
    Case("unknown-eval-row", csv_report([GOOD_ROW], row="r9"),
         ("leaderboard.csv", "no row has run_id or label 'r9'")),
    Case("csv-duplicate-columns", csv_report([GOOD_ROW + ",0.1"],
                                             header=LEADERBOARD_HEADER + ",metric:nrmse"),
         ("leaderboard.csv", "duplicate columns: metric:nrmse")),
    Case("csv-not-a-number", csv_report([GOOD_ROW.replace("0.0152,", "abc,", 1)]),
         ("leaderboard.csv", "metric 'nrmse' is not a number: 'abc'")),
    Case("csv-duplicate-run-ids", csv_report([GOOD_ROW, GOOD_ROW.replace(",a,", ",b,")]),
         ("leaderboard.csv", "run_id 'r1' appears on lines 2 and 3")),
    Case("csv-without-run-id", csv_report(["x,1"], header="name,metric:nrmse"),
         ("leaderboard.csv", "no run_id column")),
    Case("csv-empty", csv_report([], header=""), ("leaderboard.csv", "the CSV is empty")),
    Case("csv-header-only", csv_report([]), ("leaderboard.csv", "a header but no rows")),
    Case("csv-ragged-row", csv_report([GOOD_ROW + ",surplus"]),
         ("leaderboard.csv", "unreadable CSV")),
    Case("csv-not-utf8", csv_report([], raw=(LEADERBOARD_HEADER + "\n").encode()
                                    + GOOD_ROW.replace("c.yaml", "c\xff").encode("latin-1")),
         ("leaderboard.csv", "not UTF-8 text")),
    Case("csv-field-metric-column",
         csv_report([GOOD_ROW + ",0.001"], header=LEADERBOARD_HEADER + ",metric:field/nrmse"),
         ("leaderboard.csv", "brings its own field metrics (field/nrmse)")),
    # --- the per-sample sidecar
    Case("npz-pickled-objects", pickled_npz, (SAMPLES, "pickled Python objects; refused")),
    Case("npz-different-lengths", samples_npz(nrmse=np.ones(32), mse=np.ones(31)),
         (SAMPLES, "differ in length")),
    Case("npz-not-a-zip", samples_bytes(b"garbage"), (SAMPLES, "not a readable .npz")),
    Case("npz-non-finite-values", samples_npz(**NAN_NPZ),
         (SAMPLES, "non-finite values: nrmse (1)")),
    Case("npz-complex-values", samples_npz(nrmse=np.ones(32) + 1j),
         (SAMPLES, "array 'nrmse' holds complex values; refused")),
    Case("npz-matrix", samples_npz(nrmse=np.ones((4, 8))),
         (SAMPLES, "array 'nrmse' must be a 1-D numeric vector")),
    Case("npz-booleans", samples_npz(nrmse=np.ones(32, dtype=bool)),
         (SAMPLES, "array 'nrmse' must be a 1-D numeric vector")),
    Case("npz-zip-bomb-declared-size", samples_bytes(npz_declaring(0xFFFF0000)),
         (SAMPLES, "refused without inflating it")),
    Case("npz-header-larger-than-stored", samples_bytes(npz_over_32_values((10**9,))),
         (SAMPLES, "more than the", "bytes stored; refused")),
    Case("npz-array-shorter-than-its-header", samples_bytes(npz_over_32_values((40,))),
         (SAMPLES, "not a readable .npz", "ends after 256 of its 320 bytes")),
    Case("npz-duplicate-sample-ids", samples_npz(nrmse=np.ones(3), sample_id=np.zeros(3)),
         (SAMPLES, "sample_id holds duplicate ids")),
    Case("npz-sample-ids-wrong-length", samples_npz(nrmse=np.ones(3), sample_id=np.arange(4)),
         (SAMPLES, "sample_id must be a vector of length 3")),
    Case("npz-is-a-fifo", samples_path(lambda p: os.mkfifo(p)),
         (SAMPLES, "is a FIFO (named pipe), not a regular file")),
    Case("npz-is-a-symlink-loop", samples_path(symlink_loop),
         (SAMPLES, "Too many levels of symbolic links")),
    # --- W&B run info (read when W&B is on; the bad file ends the session before W&B starts)
    Case("wandb-info-not-json", run_info("{"), ("info.json", "W&B run info is not valid JSON"),
         env=(("WANDB_MODE", "offline"),)),
    Case("wandb-info-not-an-object", run_info("[1]"),
         ("info.json", "W&B run info must be a JSON object"), env=(("WANDB_MODE", "offline"),)),
    Case("wandb-info-id-not-text", run_info('{"id": 7}'),
         ("info.json", "W&B run info fields must be strings: ['id']"),
         env=(("WANDB_MODE", "offline"),)),
    Case("wandb-info-names-two-runs", run_info('{"id": "a", "run_id": "b"}'),
         ("info.json", "names two runs"), env=(("WANDB_MODE", "offline"),)),
    # --- the baseline store and its policy
    Case("corrupt-baseline-version", baseline_file("versions/v0001/version.json", '{"metr'),
         ("version.json",)),
    Case("pointer-to-missing-version", baseline_file("champion.json", '{"version": 7}'),
         ("champion.json", "7")),
    Case("corrupt-pointer", baseline_file("champion.json", "seven"), ("champion.json",)),
    Case("version-provenance-not-an-object", edit_version(set_key("provenance", [1])),
         ("version.json", "provenance")),
    Case("version-file-in-the-wrong-place", edit_version(set_key("version", 3)),
         ("version.json", "v3")),
    Case("history-line-not-an-object", baseline_file("history.jsonl", "[1, 2]\n"),
         ("history.jsonl",)),
    Case("policy-unknown-key", baseline_file("policy.toml", "[regression]\ntolerence = 0.1\n"),
         ("policy.toml", "tolerence")),
    Case("policy-negative-threshold",
         baseline_file("policy.toml", "[physics.ceilings]\nbc_violation = -1.0\n"),
         ("policy.toml", "bc_violation")),
    Case("policy-not-toml", baseline_file("policy.toml", "[regression\n"),
         ("policy.toml", "TOML")),
    Case("policy-fraction-above-one", baseline_file("policy.toml",
                                                    "[regression]\ntolerance = 10\n"),
         ("policy.toml", "tolerance")),
    Case("baselines-folder-missing", missing_baselines, ("no-such-store",), promote=False),
    # --- the suite name
    Case("suite-escapes-store", args("--gates-suite", "../x"), ("'../x'",)),
    Case("suite-absolute-path", args("--gates-suite", "/tmp/x"), ("'/tmp/x'",)),
    Case("suite-with-a-newline", args("--gates-suite", "x\n"), ("'x\\n'",)),
    Case("suite-empty", args("--gates-suite", ""), ("suite",)),
    Case("suite-of-300-characters", args("--gates-suite", "s" * 300), ("s" * 40,)),
    # with --gates-promote a new suite name starts a new suite; without, it is a typo
    Case("unknown-suite", args("--gates-suite", "burgers2d"), ("unknown suite 'burgers2d'",),
         promote=False),
    Case("suite-misspelled-in-the-report",
         edit_report(lambda d: d["extra"].update(suite="burgers_1d")),
         ("unknown suite 'burgers_1d'",)),
    Case("source-date-epoch-not-a-number", args(), ("SOURCE_DATE_EPOCH",),
         env=(("SOURCE_DATE_EPOCH", "abc"),)),
]


def test_the_table_is_large_and_its_ids_distinct() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input_ends_with_one_clear_message(
        pytester: pytest.Pytester, workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
        case: Case) -> None:
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    extra = case.mutate(workspace)
    store = workspace.baselines
    before = tree_digest(store) if store.exists() else None
    out = workspace.root / "out"
    promote = ["--gates-promote"] if case.promote else []
    wandb = "offline" if case.env and case.env[0][0] == "WANDB_MODE" else "off"
    result = pytester.runpytest_inprocess(*workspace.args(*promote, "--gates-out", str(out),
                                                          *FAST, wandb=wandb), *extra)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 1, output
    lines = sorted({line for line in output.splitlines() if "bad input:" in line})
    assert len(lines) == 1, output
    for word in case.words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in output
    assert " passed" not in output.splitlines()[-1]
    assert (tree_digest(store) if store.exists() else None) == before
    assert not (workspace.root / MARKER).exists()
    gates = json.loads((out / "gates.json").read_text())
    assert gates["verdict"] == "error" and gates["promoted"] is False
    assert gates["gates"][0]["status"] == "error"


#: metric -> the value written into one report, and the words its gate's message holds
BAD_VALUES: dict[str, tuple[object, str]] = {
    "energy_error": (float("nan"), "energy_error is nan: a non-finite value never passes"),
    "nrmse": (float("nan"), "nrmse is nan: a non-finite value never passes"),
    "bc_violation": (float("inf"), "bc_violation is inf: a non-finite value never passes"),
    "mse": (float("-inf"), "mse is -inf: a non-finite value"),
    "rmse": (None, "rmse is missing from the report"),
}


def bad_values(ws: Workspace) -> list[str]:
    data = report(ws)
    for metric, (value, _) in BAD_VALUES.items():
        if value is None:
            del data["metrics"][metric]
        else:
            data["metrics"][metric] = value
    write_report(ws, data)
    return []


@pytest.mark.parametrize(("mutate", "expected"), [
    pytest.param(bad_values, {m: words for m, (_, words) in BAD_VALUES.items()},
                 id="nan-inf-and-a-missing-metric"),
    pytest.param(csv_report([GOOD_ROW.replace(",0.0117,", ",,")]),
                 {"rmse": "rmse is missing from the report"}, id="empty-csv-cell"),
])
def test_bad_values_fail_their_gates_and_never_promote(
        pytester: pytest.Pytester, workspace: Workspace, mutate: Mutation,
        expected: dict[str, str]) -> None:
    """Values that are not bad input but can never pass: each fails its own gate."""
    extra = mutate(workspace)
    before = tree_digest(workspace.baselines)
    out = workspace.root / "out"
    # without the ledger (it records every session in the store, by design), nothing
    # may touch the store when no gate passed
    result = pytester.runpytest_inprocess(*workspace.args("--gates-promote", "--gates-out",
                                                          str(out), "--gates-no-ledger",
                                                          *FAST), *extra)
    assert result.ret == 1
    assert "Traceback" not in result.stdout.str()
    gates = json.loads((out / "gates.json").read_text())
    assert gates["verdict"] == "fail" and gates["promoted"] is False
    for metric, words in expected.items():
        assert words in result.stdout.str()
        mine = [g for g in gates["gates"] if g["metric"] == metric]
        assert mine and all(g["status"] == "fail" for g in mine if g["kind"] == "regression")
    assert tree_digest(workspace.baselines) == before


def test_bad_input_under_xdist_ends_the_same_way(pytester: pytest.Pytester,
                                                 workspace: Workspace) -> None:
    set_metric("nrmse", "0.1")(workspace)
    before = tree_digest(workspace.baselines)
    out = workspace.root / "out"
    result = pytester.runpytest_subprocess(*workspace.args("-n", "2", "--gates-promote",
                                                           "--gates-out", str(out)),
                                           timeout=120)
    assert result.ret == 1
    lines = sorted({line for line in result.outlines if "bad input:" in line})
    assert len(lines) == 1 and "metric 'nrmse' must be a number" in lines[0]
    assert json.loads((out / "gates.json").read_text())["verdict"] == "error"
    assert tree_digest(workspace.baselines) == before
