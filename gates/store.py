"""The baseline store: the one place that reads or writes ``baselines/``.

Layout of a suite::

    baselines/<suite>/
        policy.toml            gate thresholds (reviewed in git beside the numbers)
        history.jsonl          every champion change (promote, refresh, rollback), numbered
        champion.json          pointer: {"version": N, "seq": K} (K = history records so far)
        runs.jsonl             the run ledger: one line per gate session
        versions/v0001/        an immutable version: version.json (+ samples.npz)
        .gitignore             keeps the store's transient files (.lock, .tmp-*) out of git

Writes happen under an exclusive ``flock`` on ``.lock`` that also serialises concurrent
promotions. A promotion writes its version into a ``.tmp-*`` folder and renames it into
place, then appends the history record, then replaces the pointer. The history record is
the commit point: a pointer whose ``seq`` is behind the history is stale, and the champion
is the version the last history record names. A kill at any moment therefore leaves either
the old champion (the new version is an orphan, ignored by readers) or the new champion
with its history record; the next write under the lock removes the leftovers and brings
the pointer up to date.

Suite names follow one rule, :func:`validate_suite_name`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import json
import math
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from gates.errors import GateInputError, PromotionConflict
from gates.model import Champion, Evaluation
from gates.policy import Policy, load_policy

POINTER = "champion.json"
HISTORY = "history.jsonl"
RUNS = "runs.jsonl"
POLICY = "policy.toml"
LOCK = ".lock"
GITIGNORE = ".gitignore"
STAGING_PREFIX = ".tmp-"
GITIGNORE_TEXT = (
    "# transient files of the gates baseline store: its lock and the staging of\n"
    "# unfinished writes; never commit them\n"
    f"{LOCK}\n{STAGING_PREFIX}*\n.*.tmp\n"
)
SUITE_NAME_MAX = 64
SUITE_RULE = ("letters, digits, '.', '_', '-'; at most 64 characters; not starting "
              "with '.'")
_SUITE_FILES = (POLICY, POINTER, HISTORY, RUNS, "versions")
_SUITE_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_VERSION_DIR = re.compile(r"v(\d{4,})")
_POINTER_TMP = re.compile(rf"\.{re.escape(POINTER)}\..+\.tmp")
#: Test hook: ``point`` or ``point:pause``. At that point of a write the process kills
#: itself (SIGKILL), or announces the pause on stderr and sleeps, so that fault drills can
#: interrupt a real process at an exact moment. Points: ``staged``, ``version-written``,
#: ``history-written``, ``pointer-written``, ``run-written``.
FAULT_ENV = "GATES_STORE_FAULT"
#: Every version's provenance has these keys (null when unknown).
PROVENANCE_FIELDS = ("run_id", "wandb_run", "git_commit", "eval_report", "eval_sha256",
                     "timestamp", "promoted_by", "field_metrics_version")


class StoreReadOnly(OSError):
    """The store cannot be written here (read-only, missing or not permitted).

    Raised by :meth:`BaselineStore.append_run` (the caller warns) and by writes under
    :meth:`BaselineStore.locked`.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# -- the files' schemas -----------------------------------------------------------------
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]
VersionNumber = Annotated[StrictInt, Field(ge=1)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class Provenance(_Record):
    """Where a version came from; further keys (``gates``, ``samples``, ...) are kept."""

    run_id: str | None = None
    wandb_run: str | None = None
    git_commit: str | None = None
    eval_report: str | None = None
    eval_sha256: str | None = None
    timestamp: str | None = None
    promoted_by: str | None = None
    field_metrics_version: str | None = None


class VersionFile(_Record):
    """``versions/vNNNN/version.json``."""

    suite: str
    version: VersionNumber
    parent: VersionNumber | None = None
    metrics: Annotated[dict[str, FiniteNumber], Field(min_length=1)]
    repeats: dict[str, list[FiniteNumber]] = Field(default_factory=dict)
    #: how each per-sample vector relates to its metric (missing: "mean")
    aggregation: dict[str, Literal["mean", "rms", "max"]] = Field(default_factory=dict)
    #: what the champion was evaluated on (dataset, grid, ...), for comparability
    extra: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)


class PointerFile(_Record):
    """``champion.json``; ``seq`` is absent in stores written before history numbering."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: VersionNumber
    seq: Annotated[StrictInt, Field(ge=0)] | None = None


class HistoryRecord(_Record):
    """One line of ``history.jsonl``."""

    event: Literal["promote", "refresh", "rollback"]
    from_: VersionNumber | None = Field(default=None, alias="from")
    to: VersionNumber
    seq: StrictInt | None = None
    time: str | None = None
    by: str | None = None


@dataclass(frozen=True)
class SuiteState:
    """A suite's champion as the pointer and history together say."""

    champion: int | None
    history: list[dict[str, Any]]
    pointer: PointerFile | None
    #: the highest version a history record or the pointer names; folders above it are
    #: orphans of killed promotions
    committed: int

    @property
    def pointer_stale(self) -> bool:
        """The pointer does not carry the history's length (an interrupted move, a store
        written before history numbering, or history lines lost in a merge)."""
        if self.pointer is None:
            return bool(self.history)
        return self.pointer.seq != len(self.history)


# -- module functions -------------------------------------------------------------------
def validate_suite_name(name: str, *, store: Path | str | None = None) -> str:
    """The one rule for suite names: letters, digits, ``.``, ``_``, ``-``, at most 64
    characters, not starting with ``.`` (so never a path, a hidden or a staging folder)."""
    problem = _suite_name_problem(name)
    if problem:
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:70] + "...'"
        raise GateInputError(store, f"suite name {shown} is not allowed: {problem} "
                                    f"(rule: {SUITE_RULE})")
    return name


def _suite_name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"a suite name is text, not {type(name).__name__}"
    if not name:
        return "it is empty"
    if len(name) > SUITE_NAME_MAX:
        return f"it has {len(name)} characters"
    if name.startswith("."):
        return "it starts with '.'"
    if not _SUITE_CHARS.fullmatch(name):
        bad = next(c for c in name if not _SUITE_CHARS.fullmatch(c))
        return f"it contains {bad!r}"
    return None


def utc_now() -> str:
    """Now in UTC (ISO 8601, seconds), or ``SOURCE_DATE_EPOCH`` for reproducible records."""
    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    if fixed is None or fixed == "":
        moment = datetime.now(UTC)
    else:
        try:
            if not fixed.strip().isdigit():
                raise ValueError(fixed)
            moment = datetime.fromtimestamp(int(fixed), UTC)
        except (ValueError, OverflowError, OSError):
            shown = fixed if len(fixed) <= 40 else fixed[:40] + "..."
            raise GateInputError(None, f"SOURCE_DATE_EPOCH={shown!r} is not a time: it must "
                                       "be whole seconds since 1970-01-01 UTC") from None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def repo_relative(path: Path, root: Path) -> str:
    """``path`` relative to the repository ``root`` (POSIX separators), or absolute when it
    lies outside; how baseline records name files so that they read the same on any
    machine."""
    full = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root))
    with contextlib.suppress(OSError, RuntimeError):
        full, base = full.resolve(), base.resolve()
    try:
        return full.relative_to(base).as_posix()
    except ValueError:
        return full.as_posix()


def who() -> str:
    """Who is acting: the CI actor, else the login name."""
    try:
        return os.environ.get("GITHUB_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class BaselineStore:
    """Versions, champion pointer, history and run ledger of every suite under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- the store itself ------------------------------------------------------------------
    def exists(self) -> bool:
        return self.root.is_dir()

    def require_exists(self, *, creating: bool = False) -> None:
        """A store that does not exist is an error, unless a promotion is creating it."""
        if self.root.exists() and not self.root.is_dir():
            raise GateInputError(self.root, "the baseline store is not a folder")
        if not creating and not self.root.is_dir():
            raise GateInputError(self.root, "baseline store does not exist (only a promotion "
                                            "creates one)")

    def check_writable(self, suite: str) -> str | None:
        """Why a promotion into ``suite`` could not be written, or None when it could.

        Call it before gating when promotion is asked. A bad suite name or a bad
        ``SOURCE_DATE_EPOCH`` raises :class:`GateInputError` instead.
        """
        folder = self.suite_dir(suite)
        utc_now()
        probe = folder
        while not probe.is_dir():
            if probe.exists() or probe.parent == probe:
                return f"{probe}: cannot create the baseline store here (not a folder)"
            probe = probe.parent
        problem = _probe_dir(probe)
        if problem or probe != folder:
            return problem
        versions = folder / "versions"
        if versions.is_dir() and (problem := _probe_dir(versions)):
            return problem
        for name in (HISTORY, LOCK, RUNS):
            path = folder / name
            if path.exists():
                try:
                    with open(path, "ab"):
                        pass
                except OSError as exc:
                    return f"{path}: cannot be written ({exc.strerror or exc})"
        return None

    # -- reading ---------------------------------------------------------------------------
    def suites(self) -> list[str]:
        """Folders named by the rule that hold a suite's files (a folder holding only the
        lock or staging of a write that failed is not a suite)."""
        if not self.root.is_dir():
            return []
        try:
            entries = list(self.root.iterdir())
        except OSError as exc:
            raise GateInputError(self.root, f"cannot read the baseline store "
                                            f"({exc.strerror or exc})") from None
        return sorted(p.name for p in entries
                      if _suite_name_problem(p.name) is None and p.is_dir()
                      and any((p / name).exists() for name in _SUITE_FILES))

    def suite_dir(self, suite: str) -> Path:
        return self.root / validate_suite_name(suite, store=self.root)

    def policy(self, suite: str) -> Policy:
        return load_policy(self.suite_dir(suite) / POLICY)

    def state(self, suite: str) -> SuiteState:
        """Pointer and history read together: which version is the champion."""
        folder = self.suite_dir(suite)
        history = self.history(suite)
        pointer = _read_pointer(folder / POINTER)
        champion: int | None
        if pointer is not None and (pointer.seq is None or pointer.seq >= len(history)):
            champion, source = pointer.version, folder / POINTER
        elif history:  # the pointer move after the last history record never happened
            champion, source = history[-1]["to"], folder / HISTORY
        else:
            champion, source = None, folder / POINTER
        if champion is not None and not self.version_dir(suite, champion).is_dir():
            raise GateInputError(source, f"the champion is version {champion}, which does "
                                         "not exist")
        named = [e["to"] for e in history] + [pointer.version if pointer else 0]
        return SuiteState(champion, history, pointer, max(named, default=0))

    def champion_version(self, suite: str) -> int | None:
        return self.state(suite).champion

    def versions(self, suite: str) -> list[int]:
        """The committed versions (orphans of killed promotions are left out)."""
        committed = self.state(suite).committed
        return [n for n in self._version_dirs(suite) if n <= committed]

    def champion(self, suite: str) -> Champion | None:
        version = self.champion_version(suite)
        return None if version is None else self.load(suite, version)

    def load(self, suite: str, version: int) -> Champion:
        folder = self.version_dir(suite, version)
        path = folder / "version.json"
        if not folder.is_dir():
            raise GateInputError(path, f"baseline version {version} does not exist")
        data = _read_json(path, "baseline version file")
        try:
            record = VersionFile.model_validate(data)
        except ValidationError as exc:
            raise _invalid(path, "baseline version file", exc) from None
        if record.version != version or record.suite != suite:
            raise GateInputError(path, f"baseline version file says suite "
                                       f"{record.suite!r} v{record.version}, but it sits at "
                                       f"{suite} v{version}")
        samples: dict[str, np.ndarray] = {}
        ids = None
        if (folder / "samples.npz").exists():
            from gates.inputs.samples import load_samples  # the one reader of vectors

            samples, ids = load_samples(folder / "samples.npz")
        raw = data.get("provenance") if isinstance(data, dict) else None
        return Champion(
            suite=suite, version=version, metrics=dict(record.metrics), samples=samples,
            sample_ids=ids, repeats={k: list(v) for k, v in record.repeats.items()},
            provenance=dict(raw) if isinstance(raw, dict) else {}, extra=dict(record.extra),
            aggregation=dict(record.aggregation),
        )

    def history(self, suite: str) -> list[dict[str, Any]]:
        """Every champion change, oldest first. A last line cut short by a killed write is
        ignored; any other bad line is an error naming it."""
        path = self.suite_dir(suite) / HISTORY
        events: list[dict[str, Any]] = []
        for number, line, complete in _lines(path):
            try:
                data = json.loads(line)
                HistoryRecord.model_validate(data)
            except ValidationError as exc:  # before ValueError: it is one
                if not complete:
                    break  # an interrupted append: it never happened
                raise _invalid(path, f"line {number}", exc) from None
            except (ValueError, RecursionError) as exc:
                if not complete:
                    break
                raise GateInputError(path, f"line {number} is not JSON ({_short(exc)})"
                                     ) from None
            events.append(data)
        return events

    def runs(self, suite: str) -> tuple[list[dict[str, Any]], list[str]]:
        """The run ledger, oldest first, and a warning for each line that was skipped."""
        path = self.suite_dir(suite) / RUNS
        records: list[dict[str, Any]] = []
        warnings: list[str] = []
        try:
            lines = list(_lines(path))
        except GateInputError as exc:
            return [], [str(exc)]
        for number, line, complete in lines:
            try:
                data = json.loads(line)
            except (ValueError, RecursionError):
                data = None
                why = "is cut short (an interrupted write)" if not complete else "is not JSON"
            else:
                why = "is not a JSON object"
            if isinstance(data, dict):
                records.append(data)
            else:
                warnings.append(f"{path}: line {number} {why}; skipped")
        return records, warnings

    def version_dir(self, suite: str, version: int) -> Path:
        """The folder of one version (read-only files), e.g. to upload it elsewhere."""
        return self.suite_dir(suite) / "versions" / f"v{version:04d}"

    def _version_dirs(self, suite: str) -> list[int]:
        folder = self.suite_dir(suite) / "versions"
        if not folder.is_dir():
            return []
        found = (_VERSION_DIR.fullmatch(p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, suite: str, *, create: bool = False) -> Iterator[Path]:
        """Hold the suite's exclusive lock (the kernel releases it if we are killed).

        ``create`` makes the suite's folder (and the store) first; without it a missing
        suite is a :class:`GateInputError`. A store that cannot be written raises
        :class:`StoreReadOnly`.
        """
        folder = self.suite_dir(suite)
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _read_only(folder, exc) from None
        elif not folder.is_dir():
            raise GateInputError(folder, f"no suite {suite!r} in the baseline store")
        try:
            handle = open(folder / LOCK, "a+b")  # noqa: SIM115 (held across the yield)
        except OSError as exc:
            raise _read_only(folder / LOCK, exc) from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def promote(self, suite: str, evaluation: Evaluation | None = None, *,
                expected: int | None, provenance: Mapping[str, Any],
                metrics: Mapping[str, float] | None = None,
                samples: Mapping[str, np.ndarray] | None = None,
                sample_ids: np.ndarray | None = None,
                repeats: Mapping[str, Sequence[float]] | None = None,
                aggregation: Mapping[str, str] | None = None,
                extra: Mapping[str, Any] | None = None,
                event: Literal["promote", "refresh"] = "promote") -> int:
        """Write a new version and make it the champion; returns its number.

        ``metrics`` are the values to record: pass exactly the values the session gated
        (without it, every metric of ``evaluation`` is recorded). Per-sample vectors,
        repeats and aggregation are kept only for recorded metrics; ``samples``,
        ``sample_ids``, ``repeats`` and ``aggregation`` default to the evaluation's, and
        ``extra`` (what it was evaluated on, for comparability) to the evaluation's small
        plain-JSON entries. ``provenance`` is stored as given, with
        every key of :data:`PROVENANCE_FIELDS` present (null when not given) and the
        timestamp defaulting to now. ``expected`` is the champion version the values
        were gated against; if the champion has moved since, another promotion won and
        this one raises :class:`PromotionConflict`.
        """
        source: Path | str | None = evaluation.path if evaluation is not None else None
        if metrics is None:
            if evaluation is None:
                raise TypeError("promote() needs metrics= or an evaluation")
            metrics = evaluation.metrics
        if evaluation is not None:
            samples = evaluation.samples if samples is None else samples
            sample_ids = evaluation.sample_ids if sample_ids is None else sample_ids
            if repeats is None and isinstance(evaluation.extra.get("repeats"), dict):
                repeats = evaluation.extra["repeats"]
            aggregation = evaluation.aggregation if aggregation is None else aggregation
            if extra is None:
                extra = {k: v for k, v in evaluation.extra.items()
                         if k != "repeats" and _small_json(v)}
        kept = {k: np.asarray(v) for k, v in (samples or {}).items() if k in metrics}
        record_prov = {key: None for key in PROVENANCE_FIELDS} | dict(provenance)
        for key in PROVENANCE_FIELDS:  # a numeric run id or version, as text
            value = record_prov[key]
            if isinstance(value, int | float) and not isinstance(value, bool):
                record_prov[key] = str(value)
        if not record_prov.get("timestamp"):
            record_prov["timestamp"] = utc_now()
        body = {
            "metrics": {k: _plain(metrics[k]) for k in sorted(metrics)},
            "repeats": {k: [_plain(x) for x in v] if isinstance(v, list | tuple) else v
                        for k, v in (repeats or {}).items() if k in metrics},
            "aggregation": {k: v for k, v in (aggregation or {}).items()
                            if k in metrics and v != "mean"},
            "extra": dict(extra or {}),
            "provenance": record_prov,
        }
        _check_record(source, suite, body)
        kept, sample_ids = _check_vectors(source, kept, sample_ids)
        if expected is not None and not self.suite_dir(suite).is_dir():
            raise PromotionConflict(f"promotion conflict in suite {suite!r}: the challenger "
                                    f"was gated against champion v{expected}, but the suite "
                                    "does not exist any more")
        with self.locked(suite, create=True) as folder:
            self._repair(folder, suite)
            state = self.state(suite)
            current = state.champion
            if current != expected:
                raise PromotionConflict(
                    f"promotion conflict in suite {suite!r}: the challenger was gated against "
                    f"champion {_label(expected)}, but the champion is now {_label(current)} "
                    "(another promotion won); re-run the gates against the new champion")
            number = state.committed + 1
            versions = folder / "versions"
            versions.mkdir(exist_ok=True)
            staging = versions / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            staging.mkdir()
            try:
                record = {"suite": suite, "version": number, "parent": current, **body}
                for empty in ("repeats", "aggregation", "extra"):
                    if not record[empty]:
                        del record[empty]
                _write_version(staging, record, kept, sample_ids if kept else None)
                _fault("staged")
                os.rename(staging, self.version_dir(suite, number))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _fsync_dir(versions)
            _fault("version-written")
            self._move(folder, state, {"event": event, "from": current, "to": number,
                                       "time": record_prov["timestamp"],
                                       "by": record_prov.get("promoted_by") or who()})
            return number

    def rollback(self, suite: str, to: int | None = None) -> tuple[int, int]:
        """Move the champion back (to the one before its promotion by default), only to a
        version that loads; versions stay."""
        with self.locked(suite) as folder:
            self._repair(folder, suite)
            state = self.state(suite)
            current = state.champion
            if current is None:
                raise GateInputError(folder, "suite has no champion to roll back")
            if to is None:  # the champion before the promotion that made this one
                earlier = [e["from"] for e in state.history
                           if e.get("event") in ("promote", "refresh")
                           and e.get("to") == current and e.get("from")]
                if not earlier:
                    raise GateInputError(folder, f"v{current} was not promoted over an "
                                                 "earlier champion: nothing to roll back to "
                                                 "(name one with --to)")
                to = int(earlier[-1])
            if to not in self.versions(suite):
                raise GateInputError(folder, f"cannot roll back to v{to}: version {to} does "
                                             "not exist")
            try:
                self.load(suite, to)
            except GateInputError as exc:
                raise GateInputError(exc.path, f"cannot roll back to v{to}: {exc.problem}"
                                     ) from None
            self._move(folder, state, {"event": "rollback", "from": current, "to": to,
                                       "time": utc_now(), "by": who()})
            return current, to

    def append_run(self, suite: str, record: Mapping[str, Any]) -> None:
        """Append one record to the suite's run ledger ``runs.jsonl``.

        One ``write`` of the whole line on an ``O_APPEND`` descriptor, under the lock, then
        ``fsync``: concurrent sessions never interleave, a killed one leaves no partial
        line. Raises :class:`StoreReadOnly` when the store cannot be written (the caller
        warns) and ``ValueError`` for a record that is not finite JSON.
        """
        try:
            line = json.dumps(dict(record), allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ledger record is not plain finite JSON: {exc}") from None
        if not self.root.is_dir():
            raise StoreReadOnly(self.root, "baseline store does not exist; run not recorded")
        with self.locked(suite, create=True) as folder:
            self._sweep(folder)
            path = folder / RUNS
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                             0o644)
            except OSError as exc:
                raise _read_only(path, exc) from None
            try:
                _mend_tail(fd)
                _write_all(fd, line.encode())
                os.fsync(fd)
            except OSError as exc:
                raise _read_only(path, exc) from None
            finally:
                os.close(fd)
            _fault("run-written")

    # -- under the lock --------------------------------------------------------------------
    def _move(self, folder: Path, state: SuiteState, event: dict[str, Any]) -> None:
        """History record first (the commit point), then the pointer that mirrors it."""
        seq = len(state.history) + 1
        _append_line(folder / HISTORY, json.dumps({"seq": seq, **event}) + "\n")
        _fault("history-written")
        _write_pointer(folder, PointerFile(version=event["to"], seq=seq))
        _fault("pointer-written")

    def _repair(self, folder: Path, suite: str) -> None:
        """Clean up after killed writes: staging, pointer temp files, a cut-short history
        line, a pointer behind its history, orphan versions."""
        self._sweep(folder)
        path = folder / HISTORY
        if path.exists():
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                _mend_tail(fd, keep=_history_line_ok)
            finally:
                os.close(fd)
        state = self.state(suite)
        if state.pointer_stale and state.champion is not None:
            _write_pointer(folder, PointerFile(version=state.champion, seq=len(state.history)))
        for number in self._version_dirs(suite):
            if number > state.committed:
                _remove_tree(self.version_dir(suite, number))

    def _sweep(self, folder: Path) -> None:
        for item in [*folder.iterdir(), *_children(folder / "versions")]:
            if item.name.startswith(STAGING_PREFIX) or _POINTER_TMP.fullmatch(item.name):
                _remove_tree(item)
        ignore = folder / GITIGNORE
        if not ignore.exists():
            with contextlib.suppress(OSError):
                _write_file(ignore, GITIGNORE_TEXT.encode())


# -- helpers ----------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers; anything else as it is (the schema judges it)."""
    if isinstance(value, np.floating | np.integer) and not isinstance(value, np.bool_):
        return value.item()
    return value


def _label(version: int | None) -> str:
    return "none (empty suite)" if version is None else f"v{version}"


def _check_record(source: Path | str | None, suite: str, body: dict[str, Any]) -> None:
    """A version must load again (else the store bricks): refuse it before writing."""
    metrics = body["metrics"]
    bad = sorted(k for k, v in metrics.items()
                 if isinstance(v, float | int) and not isinstance(v, bool)
                 and not math.isfinite(v))
    if bad:
        raise GateInputError(source, f"not promoted: non-finite metric(s) {', '.join(bad)}")
    if not all(isinstance(v, list) and all(isinstance(x, float | int) and not isinstance(x, bool)
                                           and math.isfinite(x) for x in v)
               for v in body["repeats"].values()):
        raise GateInputError(source, 'not promoted: extra "repeats" must map metric names '
                                     "to lists of finite numbers")
    try:
        VersionFile.model_validate({"suite": suite, "version": 1, **body})
    except ValidationError as exc:
        raise _invalid(source, "not promoted: the version", exc) from None
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GateInputError(source, f"not promoted: provenance is not plain JSON ({exc})"
                             ) from None


def _check_vectors(source: Path | str | None, samples: dict[str, np.ndarray],
                   ids: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Per-sample vectors under the rules they are read back with."""
    if not samples:
        return {}, None
    from gates.inputs.samples import check_ids, check_vectors

    where = source if source is not None else "per-sample vectors"
    try:
        vectors = check_vectors(where, samples)
        return vectors, check_ids(where, ids, vectors)
    except GateInputError as exc:
        raise GateInputError(exc.path, f"not promoted: {exc.problem}") from None


def _small_json(value: Any) -> bool:
    try:
        return len(json.dumps(value, allow_nan=False)) <= 1000
    except (TypeError, ValueError):
        return False


def _invalid(path: Path | str | None, what: str, exc: ValidationError) -> GateInputError:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(_short(str(p), 60) for p in first["loc"]) or "the whole file"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return GateInputError(path, f"{what} is invalid: {where}: {first['msg']}{more}")


def _short(text: object, limit: int = 120) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _read_bytes(path: Path) -> bytes | None:
    """A store file's bytes (None when absent); anything but a regular file is refused."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GateInputError(path, f"cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise GateInputError(path, "is not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GateInputError(path, f"cannot read ({exc.strerror or exc})") from None


def _read_json(path: Path, what: str) -> Any:
    raw = _read_bytes(path)
    if raw is None:
        raise GateInputError(path, f"{what} does not exist")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=float)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError
        raise GateInputError(path, f"{what} is not JSON ({_short(exc)})") from None


def _read_pointer(path: Path) -> PointerFile | None:
    if _read_bytes(path) is None:
        return None
    data = _read_json(path, "champion pointer")
    try:
        return PointerFile.model_validate(data)
    except ValidationError as exc:
        raise _invalid(path, 'champion pointer (expected {"version": N, "seq": K})', exc
                       ) from None


def _lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, ends with a newline) of each non-blank line."""
    raw = _read_bytes(path)
    if raw is None:
        return
    text = raw.decode("utf-8", errors="replace")
    parts = text.split("\n")
    for number, line in enumerate(parts, 1):
        if line.strip():
            yield number, line, number < len(parts)


def _history_line_ok(text: str) -> bool:
    try:
        HistoryRecord.model_validate(json.loads(text))
    except (ValueError, RecursionError, ValidationError):
        return False
    return True


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _mend_tail(fd: int, keep: Callable[[str], bool] = _is_json) -> None:
    """Before appending: a last line without its newline is either whole (``keep`` says
    so; the newline is added) or the remains of a killed write (cut off)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start = max(0, size - (1 << 20))
    tail = os.pread(fd, size - start, start)
    cut = tail.rfind(b"\n")
    last = tail[cut + 1:]
    if keep(last.decode("utf-8", errors="replace")):
        os.pwrite(fd, b"\n", size)
        os.fsync(fd)
        return
    os.ftruncate(fd, start + cut + 1 if cut >= 0 else 0)
    os.fsync(fd)


def _write_all(fd: int, data: bytes) -> None:
    """One ``write`` call for the whole of ``data`` (a loop only if the kernel wrote less,
    which for a regular file means the disk is full)."""
    view = memoryview(data)
    while view:
        done = os.write(fd, view)
        view = view[done:]


def _append_line(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_pointer(folder: Path, pointer: PointerFile) -> None:
    tmp = folder / f".{POINTER}.{os.getpid()}.tmp"
    _write_file(tmp, (json.dumps(pointer.model_dump(exclude_none=True)) + "\n").encode())
    os.replace(tmp, folder / POINTER)
    _fsync_dir(folder)


def _write_version(staging: Path, record: dict[str, Any], samples: dict[str, np.ndarray],
                   sample_ids: np.ndarray | None) -> None:
    _write_file(staging / "version.json", (json.dumps(record, indent=2) + "\n").encode())
    if samples:
        from gates.inputs.samples import SAMPLE_ID_KEY

        arrays = dict(samples)
        if sample_ids is not None:
            arrays[SAMPLE_ID_KEY] = np.asarray(sample_ids)
        with open(staging / "samples.npz", "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)  # fixed zip stamps: reproducible
            handle.flush()
            os.fsync(handle.fileno())
    for item in staging.iterdir():
        item.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _children(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _probe_dir(folder: Path) -> str | None:
    try:
        fd, name = tempfile.mkstemp(prefix=f"{STAGING_PREFIX}probe-", dir=folder)
    except OSError as exc:
        return f"{folder}: the baseline store cannot be written here ({exc.strerror or exc})"
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)
    return None


def _read_only(path: Path, exc: OSError) -> StoreReadOnly:
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR,
                     errno.ENOSPC, errno.EDQUOT):
        return StoreReadOnly(path, f"cannot be written ({exc.strerror or exc})")
    return StoreReadOnly(path, f"cannot be written ({exc})")


def _fault(point: str) -> None:
    """The fault drills' hook (see :data:`FAULT_ENV`); nothing when unset."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted or wanted.split(":")[0] != point:
        return
    if wanted.endswith(":pause"):
        sys.stderr.write(f"gates-store: paused at {point}\n")
        sys.stderr.flush()
        time.sleep(60)
        return
    os.kill(os.getpid(), signal.SIGKILL)

