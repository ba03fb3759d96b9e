"""The baseline store with real files: immutable versions, the history as the commit point
of every champion change, one rule for suite names, a corrupt store as one clear error,
leftovers of killed writes cleaned, and the run ledger. (Real processes: test_store_faults.)
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gates.errors import GateInputError, PromotionConflict
from gates.model import Evaluation
from gates.store import (
    PROVENANCE_FIELDS,
    BaselineStore,
    StoreReadOnly,
    repo_relative,
    utc_now,
    validate_suite_name,
)


def evaluation(nrmse: float, n: int = 4) -> Evaluation:
    return Evaluation(Path("eval.json"), {"nrmse": nrmse, "mse": nrmse**2},
                      samples={"nrmse": np.full(n, nrmse)}, sample_ids=np.arange(n))


def promoted(root: Path, *values: float, suite: str = "s") -> BaselineStore:
    store = BaselineStore(root)
    for number, value in enumerate(values, 1):
        store.promote(suite, evaluation(value), expected=number - 1 or None,
                      provenance={"run_id": f"run-{number}"})
    return store


def writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


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
    history = store.history("s")
    assert [e["event"] for e in history] == ["promote", "promote", "rollback", "promote"]
    assert [e["seq"] for e in history] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "s" / "champion.json").read_text()) == {"version": 3,
                                                                         "seq": 4}
    assert store.versions("s") == [1, 2, 3]


def test_stale_expectation_is_a_conflict(tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3)
    with pytest.raises(PromotionConflict, match="gated against champion none .* now v1"):
        store.promote("s", evaluation(0.2), expected=None, provenance={})
    assert store.champion_version("s") == 1 and store.versions("s") == [1]


def test_rollback_of_a_first_version_is_refused(tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3)
    with pytest.raises(GateInputError, match="nothing to roll back to"):
        store.rollback("s")


def test_a_second_rollback_does_not_bring_the_bad_version_back(tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3, 0.2)
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
    ({"nrmse": True}, {}, "metrics.nrmse: Input should be a valid number"),
    ({}, {}, "metrics: Dictionary should have at least 1 item"),
])
def test_a_version_that_could_not_load_again_is_never_written(
        tmp_path: Path, metrics: dict, extra: dict, words: str) -> None:
    store = BaselineStore(tmp_path)
    with pytest.raises(GateInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        store.promote("s", Evaluation(Path("e.json"), metrics, extra), expected=None,
                      provenance={})
    assert not (tmp_path / "s").exists()


# -- 1. suite names: one rule ------------------------------------------------------------
@pytest.mark.parametrize("name", ["burgers1d", "a", "A.b_c-1", "x" * 64, "-x", "1", "a..b"])
def test_suite_names_that_follow_the_rule(name: str) -> None:
    assert validate_suite_name(name) == name


@pytest.mark.parametrize(("name", "problem"), [
    ("x\n", "contains '\\\\n'"), ("", "it is empty"), (".", "starts with '.'"),
    (".hidden", "starts with '.'"), ("..", "starts with '.'"), ("a/b", "contains '/'"),
    ("../x", "starts with '.'"), ("a b", "contains ' '"), ("x" * 65, "65 characters"),
    ("x" * 300, "300 characters"), ("d\u00e9j\u00e0", "contains '\u00e9'"),
    ("a\\b", "contains '\\\\\\\\'"), ("nul\x00", "contains '\\\\x00'"),
])
def test_suite_names_that_break_it_are_one_clear_error(tmp_path: Path, name: str,
                                                      problem: str) -> None:
    store = BaselineStore(tmp_path / "store")
    with pytest.raises(GateInputError, match=problem) as caught:
        validate_suite_name(name, store=store.root)
    message = str(caught.value)
    assert message.startswith(f"{store.root}: suite name ") and "\n" not in message
    assert "rule: letters, digits" in message and len(message) < 400
    for attempt in (lambda: store.suite_dir(name), lambda: store.check_writable(name),
                    lambda: store.promote(name, evaluation(0.1), expected=None,
                                          provenance={})):
        with pytest.raises(GateInputError, match="is not allowed"):
            attempt()
    assert not store.root.exists()  # nothing created, not even the store


def test_folders_that_break_the_rule_are_not_suites(tmp_path: Path) -> None:
    promoted(tmp_path, 0.3)
    for odd in (".tmp-1", "x\n", "a b"):
        (tmp_path / odd).mkdir()
    (tmp_path / "file").write_text("")
    assert BaselineStore(tmp_path).suites() == ["s"]


# -- 2. a corrupt store is one clear error -------------------------------------------------
def _set_version(field: str, value: Any) -> Callable[[Path], Path]:
    def corrupt(suite: Path) -> Path:
        path = writable(suite / "versions" / "v0001" / "version.json")
        data = json.loads(path.read_text())
        data[field] = value
        path.write_text(json.dumps(data))
        return path
    return corrupt


def _write(name: str, text: str, append: bool = False) -> Callable[[Path], Path]:
    def corrupt(suite: Path) -> Path:
        path = suite / name
        if path.exists():
            writable(path)
        before = path.read_text() if append and path.exists() else ""
        path.write_text(before + text)
        return path
    return corrupt


CORRUPTIONS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "provenance a string": (_set_version("provenance", "by hand"),
                            "provenance: Input should be a valid dictionary"),
    "provenance a list": (_set_version("provenance", [1]),
                          "provenance: Input should be a valid dictionary"),
    "provenance run_id a list": (_set_version("provenance", {"run_id": [1]}),
                                 "provenance.run_id: Input should be a valid string"),
    "metrics missing": (_set_version("metrics", None), "metrics: Input should be a valid"),
    "metric a boolean": (_set_version("metrics", {"nrmse": True}), "metrics.nrmse"),
    "metric NaN": (_set_version("metrics", {"nrmse": float("nan")}), "finite number"),
    "metric 400 digits": (_set_version("metrics", {"nrmse": 10**400}), "metrics.nrmse"),
    "repeats a string": (_set_version("repeats", "x"), "repeats: Input should be"),
    "version number wrong": (_set_version("version", 7), "sits at s v1"),
    "suite wrong": (_set_version("suite", "t"), "says suite 't'"),
    "version.json a list": (_write("versions/v0001/version.json", "[]"),
                            "the whole file: Input should be a valid dictionary"),
    "version.json not JSON": (_write("versions/v0001/version.json", "{oops"), "not JSON"),
    "version.json nested deep": (_write("versions/v0001/version.json", "[" * 100_000),
                                 "not JSON"),
    "version.json 5000-digit int": (_write("versions/v0001/version.json",
                                           '{"metrics": {"a": ' + "9" * 5000 + "}}"),
                                    "not JSON"),
    "version.json not UTF-8": (_write("versions/v0001/version.json", "\udcff"), "not JSON"),
    "history line a list": (_write("history.jsonl", "[1, 2]\n", append=True),
                            "line 2 is invalid: the whole file: Input should be a valid"),
    "history line a string": (_write("history.jsonl", '"promote"\n', append=True),
                              "line 2 is invalid"),
    "history line without to": (_write("history.jsonl", '{"event": "promote"}\n',
                                       append=True), "line 2 is invalid: to: Field required"),
    "history line not JSON": (_write("history.jsonl", "<<<<<<< HEAD\n{}\n", append=True),
                              "line 2 is not JSON"),
    "history unknown event": (_write("history.jsonl", '{"event": "x", "to": 1}\n',
                                     append=True), "line 2 is invalid: event"),
    "pointer a string version": (_write("champion.json", '{"version": "1"}'),
                                 "version: Input should be a valid integer"),
    "pointer a list": (_write("champion.json", "[1]"), "champion pointer"),
    "pointer extra key": (_write("champion.json", '{"version": 1, "x": 2}'),
                          "x: Extra inputs are not permitted"),
    "pointer not JSON": (_write("champion.json", ""), "champion pointer is not JSON"),
    "pointer to nothing": (_write("champion.json", '{"version": 5, "seq": 1}'),
                           "version 5, which does not exist"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_store_is_one_error_naming_the_file(tmp_path: Path, case: str) -> None:
    store = promoted(tmp_path, 0.3)
    corrupt, words = CORRUPTIONS[case]
    if case == "version.json not UTF-8":
        path = writable(tmp_path / "s" / "versions" / "v0001" / "version.json")
        path.write_bytes(b'{"a": "\xff"}')
    else:
        path = corrupt(tmp_path / "s")
    with pytest.raises(GateInputError) as caught:
        store.champion("s")
        store.versions("s")
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert words in message and "\n" not in message and len(message) < 500, message
    if path.name != "version.json":  # a promotion refuses to build on a broken history
        with pytest.raises(GateInputError):
            store.promote("s", evaluation(0.1), expected=1, provenance={})


def test_provenance_of_a_legacy_store_still_loads(tmp_path: Path) -> None:
    """A store written before history numbering: pointer without seq, history without."""
    suite = tmp_path / "s"
    (suite / "versions" / "v0001").mkdir(parents=True)
    (suite / "versions" / "v0001" / "version.json").write_text(json.dumps(
        {"suite": "s", "version": 1, "parent": None, "metrics": {"nrmse": 0.3},
         "provenance": {"run_id": "old", "gates": {"pass": 3}}}))
    (suite / "champion.json").write_text('{"version": 1}\n')
    (suite / "history.jsonl").write_text('{"event": "promote", "from": null, "to": 1, '
                                         '"time": "2025-01-01T00:00:00+00:00", "by": "x"}\n')
    store = BaselineStore(tmp_path)
    champion = store.champion("s")
    assert champion is not None and champion.provenance == {"run_id": "old",
                                                             "gates": {"pass": 3}}
    assert store.promote("s", evaluation(0.2), expected=1, provenance={}) == 2
    assert json.loads((suite / "champion.json").read_text()) == {"version": 2, "seq": 2}
    assert store.rollback("s") == (2, 1)


# -- 3. history first, the pointer mirrors it ----------------------------------------------
def test_a_pointer_behind_its_history_is_completed(tmp_path: Path) -> None:
    """What a kill between the history append and the pointer swap leaves (the drill with a
    real killed process is in test_store_faults)."""
    store = promoted(tmp_path, 0.3, 0.2)
    pointer = tmp_path / "s" / "champion.json"
    pointer.write_text('{"version": 1, "seq": 1}\n')  # the swap to v2 never happened
    assert store.champion_version("s") == 2  # the history record committed it
    assert store.state("s").pointer_stale
    assert store.rollback("s") == (2, 1)
    assert json.loads(pointer.read_text()) == {"version": 1, "seq": 3}
    pointer.unlink()  # a first promotion killed before it wrote any pointer
    assert store.champion_version("s") == 1


# -- 4. rollback only to a version that loads ------------------------------------------------
def test_rollback_only_to_a_version_that_loads(tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3, 0.2, 0.1)
    _set_version("provenance", "broken")(tmp_path / "s")
    with pytest.raises(GateInputError, match=r"cannot roll back to v1: .*provenance"):
        store.rollback("s", to=1)
    with pytest.raises(GateInputError, match="cannot roll back to v9: version 9 does not"):
        store.rollback("s", to=9)
    assert store.champion_version("s") == 3
    assert store.rollback("s", to=2) == (3, 2)
    assert len(store.history("s")) == 4  # the refused ones left no record


# -- 5. leftovers of killed writes ---------------------------------------------------------
def test_leftovers_are_ignored_when_reading_and_cleaned_on_the_next_write(
        tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3)
    suite = tmp_path / "s"
    (suite / "versions" / ".tmp-123-abcd").mkdir()
    (suite / "versions" / ".tmp-123-abcd" / "version.json").write_text("{")
    (suite / ".champion.json.123.tmp").write_text('{"version": 9}')
    orphan = suite / "versions" / "v0002"
    orphan.mkdir()
    (orphan / "version.json").write_text('{"half": ')  # a promotion killed before history
    with open(suite / "history.jsonl", "a") as handle:
        handle.write('{"seq": 2, "event": "prom')  # an append cut short
    assert store.versions("s") == [1] and store.champion_version("s") == 1
    assert len(store.history("s")) == 1
    assert store.promote("s", evaluation(0.2), expected=1, provenance={}) == 2
    assert sorted(p.name for p in (suite / "versions").iterdir()) == ["v0001", "v0002"]
    assert not (suite / ".champion.json.123.tmp").exists()
    assert store.load("s", 2).metrics["nrmse"] == 0.2
    lines = (suite / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]


def test_a_whole_last_history_line_without_newline_is_kept(tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3, 0.2)
    path = tmp_path / "s" / "history.jsonl"
    path.write_text(path.read_text().rstrip("\n"))  # edited by hand, newline lost
    assert len(store.history("s")) == 2
    store.rollback("s")
    assert [e["event"] for e in store.history("s")] == ["promote", "promote", "rollback"]


def test_transient_files_are_never_committed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    store = promoted(repo / "baselines", 0.3)
    suite = repo / "baselines" / "s"
    (suite / "versions" / ".tmp-1-ab").mkdir()
    (suite / "versions" / ".tmp-1-ab" / "version.json").write_text("{}")
    (suite / ".champion.json.9.tmp").write_text("{}")
    store.append_run("s", {"run": 1})
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=repo, capture_output=True, text=True, check=True).stdout
    listed = sorted(line[3:] for line in status.splitlines())
    assert listed == ["baselines/s/.gitignore", "baselines/s/champion.json",
                      "baselines/s/history.jsonl", "baselines/s/runs.jsonl",
                      "baselines/s/versions/v0001/samples.npz",
                      "baselines/s/versions/v0001/version.json"]
    assert (suite / ".lock").exists()


def test_a_failed_rollback_leaves_nothing_behind(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "store")
    with pytest.raises(GateInputError, match="no suite 's'"):
        store.rollback("s")
    assert not (tmp_path / "store").exists()
    (tmp_path / "store").mkdir()
    with pytest.raises(GateInputError, match="no suite 's'"):
        store.rollback("s")
    assert list((tmp_path / "store").iterdir()) == []


# -- 6. a store that does not exist ----------------------------------------------------------
def test_a_missing_store_is_an_error_unless_a_promotion_creates_it(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "nowhere")
    assert not store.exists()
    with pytest.raises(GateInputError, match="nowhere: baseline store does not exist .only"):
        store.require_exists()
    store.require_exists(creating=True)
    assert store.check_writable("s") is None and not store.root.exists()
    store.promote("s", evaluation(0.3), expected=None, provenance={})
    assert store.exists()
    store.require_exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(GateInputError, match="not a folder"):
        BaselineStore(tmp_path / "file").require_exists(creating=True)
    assert BaselineStore(tmp_path / "file" / "x").check_writable("s") == (
        f"{tmp_path / 'file'}: cannot create the baseline store here (not a folder)")


# -- 7. the clock ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", "1.5", "-1", "99999999999999999999", " "])
def test_a_bad_source_date_epoch_is_one_clear_error(tmp_path: Path, value: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    with pytest.raises(GateInputError, match=r"SOURCE_DATE_EPOCH=.* is not a time"):
        utc_now()
    store = BaselineStore(tmp_path)
    with pytest.raises(GateInputError, match="SOURCE_DATE_EPOCH"):
        store.check_writable("s")
    with pytest.raises(GateInputError, match="SOURCE_DATE_EPOCH"):
        store.promote("s", evaluation(0.3), expected=None, provenance={})
    assert list(tmp_path.iterdir()) == []


def test_source_date_epoch_fixes_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert utc_now() == "2023-11-14T22:13:20Z"


# -- 8. only the gated values enter a version ------------------------------------------------
def test_only_the_metrics_passed_enter_the_version(tmp_path: Path) -> None:
    report = Evaluation(Path("e.json"), {"nrmse": 0.2, "field/nrmse": 1e-9, "mse": 0.04},
                        extra={"repeats": {"nrmse": [0.2, 0.21], "field/nrmse": [1e-9]}},
                        samples={"nrmse": np.full(3, 0.2), "field/nrmse": np.zeros(3)},
                        sample_ids=np.arange(3))
    store = BaselineStore(tmp_path)
    store.promote("s", report, metrics={"nrmse": np.float64(0.2), "mse": 0.04},
                  expected=None, provenance={"run_id": "r", "custom": {"k": 1}})
    champion = store.champion("s")
    assert champion is not None
    assert champion.metrics == {"mse": 0.04, "nrmse": 0.2}
    assert sorted(champion.samples) == ["nrmse"] and champion.repeats == {"nrmse": [0.2, 0.21]}
    assert champion.sample_ids is not None and list(champion.sample_ids) == [0, 1, 2]
    assert set(PROVENANCE_FIELDS) <= set(champion.provenance)
    assert champion.provenance["run_id"] == "r" and champion.provenance["custom"] == {"k": 1}
    assert champion.provenance["wandb_run"] is None and champion.provenance["timestamp"]
    # without an evaluation: values alone
    store.promote("s", metrics={"nrmse": 0.1}, expected=1, provenance={})
    second = store.load("s", 2)
    assert second.metrics == {"nrmse": 0.1} and second.samples == {}


def test_paths_are_recorded_relative_to_the_repository(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "repo"
    (root / "evals").mkdir(parents=True)
    assert repo_relative(root / "evals" / "e.json", root) == "evals/e.json"
    assert repo_relative(root / "evals" / ".." / "x.json", root) == "x.json"
    assert repo_relative(tmp_path / "elsewhere.json", root) == str(tmp_path / "elsewhere.json")
    monkeypatch.chdir(root)
    assert repo_relative(Path("evals/e.json"), Path(".")) == "evals/e.json"
    assert repo_relative(root, root) == "."


# -- 9. the run ledger -------------------------------------------------------------------------
def test_the_run_ledger_appends_whole_lines_and_skips_bad_ones(tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3)
    assert store.runs("s") == ([], [])
    store.append_run("s", {"run_id": "a", "metrics": {"nrmse": 0.3}})
    store.append_run("s", {"run_id": "b", "note": "two\nlines"})
    path = tmp_path / "s" / "runs.jsonl"
    with open(path, "a") as handle:
        handle.write("[1]\n<<<<<<< HEAD\n\n{\"run_id\": \"c\"}\n{\"run_id\": ")
    records, warnings = store.runs("s")
    assert [r["run_id"] for r in records] == ["a", "b", "c"]
    assert warnings == [f"{path}: line 3 is not a JSON object; skipped",
                        f"{path}: line 4 is not JSON; skipped",
                        f"{path}: line 7 is cut short (an interrupted write); skipped"]
    store.append_run("s", {"run_id": "d"})  # the cut-short tail is dropped, not glued on
    records, warnings = store.runs("s")
    assert [r["run_id"] for r in records] == ["a", "b", "c", "d"] and len(warnings) == 2
    assert path.read_text().endswith('{"run_id": "c"}\n{"run_id": "d"}\n')
    with open(path, "a") as handle:
        handle.write('{"run_id": "e"}')  # whole, but its newline lost: kept
    store.append_run("s", {"run_id": "f"})
    assert [r["run_id"] for r in store.runs("s")[0]][-3:] == ["d", "e", "f"]
    with pytest.raises(ValueError, match="not plain finite JSON"):
        store.append_run("s", {"value": float("nan")})
    with pytest.raises(ValueError, match="not plain finite JSON"):
        store.append_run("s", {"value": object()})


def test_the_ledger_of_a_missing_or_read_only_store_is_a_specific_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreReadOnly, match="does not exist; run not recorded"):
        BaselineStore(tmp_path / "nowhere").append_run("s", {"a": 1})
    assert not (tmp_path / "nowhere").exists()
    store = promoted(tmp_path / "store", 0.3)
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(str(tmp_path / "store")) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr("gates.store.open", lambda path, mode="r", *a, **k: read_only(
        path, os.O_WRONLY if set(mode) & set("wa+") else os.O_RDONLY), raising=False)
    with pytest.raises(StoreReadOnly, match="Read-only file system") as caught:
        store.append_run("s", {"a": 1})
    assert isinstance(caught.value, OSError)  # callers that catch OSError still catch it
    problem = store.check_writable("s")
    assert problem is not None and "Read-only file system" in problem
    assert "cannot be written" in problem
    with pytest.raises(StoreReadOnly):
        store.promote("s", evaluation(0.2), expected=1, provenance={})


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_a_store_without_write_permission_is_refused_up_front(tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3)
    for folder in (tmp_path / "s", tmp_path / "s" / "versions"):
        folder.chmod(0o555)
    try:
        problem = store.check_writable("s")
        assert problem is not None and "cannot be written" in problem
        with pytest.raises(StoreReadOnly):
            store.append_run("s", {"a": 1})
    finally:
        for folder in (tmp_path / "s", tmp_path / "s" / "versions"):
            folder.chmod(0o755)


def test_locked_is_public_and_exclusive(tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3)
    with store.locked("s") as folder:
        assert folder == tmp_path / "s"
    with pytest.raises(GateInputError, match="no suite 't'"), store.locked("t"):
        pass
    with store.locked("t", create=True) as folder:
        assert folder.is_dir()


def test_what_comparability_needs_is_recorded_and_read_back(tmp_path: Path) -> None:
    report = Evaluation(Path("e.json"), {"nrmse": 0.2, "field/rmse": 0.1},
                        extra={"dataset": "burgers", "grid": [64], "details": "x" * 5000,
                               "repeats": {"nrmse": [0.2]}},
                        samples={"nrmse": np.full(3, 0.2), "field/rmse": np.full(3, 0.01)},
                        aggregation={"field/rmse": "rms", "nrmse": "mean", "other": "max"})
    store = BaselineStore(tmp_path)
    store.promote("s", report, expected=None, provenance={})
    champion = store.champion("s")
    assert champion is not None
    assert champion.extra == {"dataset": "burgers", "grid": [64]}  # big entries left out
    assert champion.aggregation == {"field/rmse": "rms"}
    store.promote("s", report, expected=1, provenance={}, extra={"dataset": "heat"})
    assert store.load("s", 2).extra == {"dataset": "heat"}


@pytest.mark.parametrize(("samples", "ids", "words"), [
    ({"nrmse": np.ones(3), "mse": np.ones(4)}, None, "differ in length"),
    ({"nrmse": np.ones((3, 2))}, None, "must be a 1-D numeric vector"),
    ({"nrmse": np.array([1.0, np.nan])}, None, "non-finite values"),
    ({"nrmse": np.ones(3)}, np.arange(4), "must be a vector of length 3"),
    ({"nrmse": np.ones(3)}, np.zeros(3), "duplicate ids"),
])
def test_per_sample_vectors_that_would_not_load_again_are_refused(
        tmp_path: Path, samples: dict, ids: Any, words: str) -> None:
    store = BaselineStore(tmp_path)
    with pytest.raises(GateInputError, match=f"not promoted: .*{words}"):
        store.promote("s", metrics={"nrmse": 0.1, "mse": 0.01}, samples=samples,
                      sample_ids=ids, expected=None, provenance={})
    assert not (tmp_path / "s").exists()


def test_a_failed_promotion_into_a_missing_suite_leaves_nothing_behind(tmp_path: Path) -> None:
    store = promoted(tmp_path, 0.3)
    with pytest.raises(PromotionConflict, match="does not exist any more"):
        store.promote("t", evaluation(0.2), expected=1, provenance={})
    assert not (tmp_path / "t").exists()
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / ".lock").write_text("")  # what an older failed write left
    assert store.suites() == ["s"]
    assert store.version_dir("s", 1) == tmp_path / "s" / "versions" / "v0001"
