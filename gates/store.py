"""The baseline store: the one place that reads or writes ``baselines/``.

Layout of a suite::

    baselines/<suite>/
        policy.toml            gate thresholds (reviewed in git beside the numbers)
        champion.json          pointer: {"version": N}
        history.jsonl          every pointer move (promote, rollback), appended
        versions/v0001/        an immutable version: version.json (+ samples.npz)

A version is written into a temporary folder and renamed into place; the pointer is
replaced atomically afterwards, under an exclusive ``flock`` that also serialises
concurrent promotions. A killed promotion therefore leaves the old champion in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import math
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gates.errors import GateInputError, PromotionConflict
from gates.model import Champion, Evaluation
from gates.policy import Policy, load_policy
from gates.reports import SAMPLE_ID_KEY, check_metrics, load_samples

SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
POINTER = "champion.json"
HISTORY = "history.jsonl"
POLICY = "policy.toml"


def utc_now() -> str:
    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(fixed), UTC) if fixed else datetime.now(UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class BaselineStore:
    """Versions, champion pointer and history of every suite under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading -------------------------------------------------------------------------
    def suites(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and SUITE_NAME.match(p.name))

    def suite_dir(self, suite: str) -> Path:
        if not SUITE_NAME.match(suite) or ".." in suite:
            raise GateInputError(self.root, f"suite name {suite!r} is not allowed (letters, "
                                            "digits, '.', '_', '-'; no path separators)")
        return self.root / suite

    def policy(self, suite: str) -> Policy:
        return load_policy(self.suite_dir(suite) / POLICY)

    def champion_version(self, suite: str) -> int | None:
        pointer = self.suite_dir(suite) / POINTER
        if not pointer.exists():
            return None
        try:
            data = json.loads(pointer.read_text(encoding="utf-8"))
            version = data["version"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise GateInputError(pointer, 'champion pointer is corrupt; expected '
                                          '{"version": N}') from None
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise GateInputError(pointer, f"champion pointer names an invalid version "
                                          f"{version!r}")
        if not self._version_dir(suite, version).is_dir():
            raise GateInputError(pointer, f"champion pointer names version {version}, "
                                          "which does not exist")
        return version

    def versions(self, suite: str) -> list[int]:
        folder = self.suite_dir(suite) / "versions"
        if not folder.is_dir():
            return []
        found = (re.fullmatch(r"v(\d+)", p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def champion(self, suite: str) -> Champion | None:
        version = self.champion_version(suite)
        return None if version is None else self.load(suite, version)

    def load(self, suite: str, version: int) -> Champion:
        folder = self._version_dir(suite, version)
        path = folder / "version.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=float)
        except FileNotFoundError:
            raise GateInputError(path, f"baseline version {version} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GateInputError(path, f"baseline version file is corrupt ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            raise GateInputError(path, 'baseline version file needs a "metrics" mapping')
        if data.get("version") != version or data.get("suite") != suite:
            raise GateInputError(path, f"baseline version file says suite "
                                       f"{data.get('suite')!r} v{data.get('version')}, but it "
                                       f"sits at {suite} v{version}")
        metrics = check_metrics(path, data["metrics"])
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise GateInputError(path, f"baseline metric(s) not finite: {', '.join(bad)}")
        repeats = data.get("repeats") or {}
        if not isinstance(repeats, dict) or not all(
            isinstance(v, list) and all(isinstance(x, int | float) for x in v)
            for v in repeats.values()
        ):
            raise GateInputError(path, '"repeats" must map metric names to lists of numbers')
        samples: dict[str, np.ndarray] = {}
        ids = None
        if (folder / "samples.npz").exists():
            samples, ids = load_samples(folder / "samples.npz")
        return Champion(
            suite=suite, version=version, metrics=metrics, samples=samples, sample_ids=ids,
            repeats={k: [float(x) for x in v] for k, v in repeats.items()},
            provenance=dict(data.get("provenance") or {}),
        )

    def history(self, suite: str) -> list[dict[str, Any]]:
        path = self.suite_dir(suite) / HISTORY
        if not path.exists():
            return []
        events = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    raise GateInputError(path, f"line {number} is not JSON") from None
        return events

    def _version_dir(self, suite: str, version: int) -> Path:
        return self.suite_dir(suite) / "versions" / f"v{version:04d}"

    # -- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, suite: str) -> Iterator[Path]:
        folder = self.suite_dir(suite)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if we are killed
            try:
                yield folder
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def promote(self, suite: str, evaluation: Evaluation, *, expected: int | None,
                provenance: Mapping[str, Any]) -> int:
        """Write ``evaluation`` as a new version and point the champion at it.

        ``expected`` is the champion version the evaluation was gated against; if the
        pointer has moved since, another promotion won and this one fails.
        """
        _check_record(evaluation)
        with self._locked(suite) as folder:
            current = self.champion_version(suite)
            if current != expected:
                raise PromotionConflict(
                    f"promotion conflict in suite {suite!r}: the challenger was gated against "
                    f"champion {_label(expected)}, but the champion is now {_label(current)} "
                    "(another promotion won); re-run the gates against the new champion")
            number = max(self.versions(suite), default=0) + 1
            versions = folder / "versions"
            versions.mkdir(exist_ok=True)
            staging = versions / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
            staging.mkdir()
            try:
                self._write_version(staging, suite, number, current, evaluation, provenance)
                os.rename(staging, self._version_dir(suite, number))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _fsync_dir(versions)
            self._move_pointer(folder, number)
            self._append_history(folder, {"event": "promote", "from": current, "to": number,
                                          "time": provenance.get("timestamp", utc_now()),
                                          "by": provenance.get("promoted_by")})
            return number

    def rollback(self, suite: str, to: int | None = None) -> tuple[int, int]:
        """Move the pointer back (to the previous champion by default); versions stay."""
        with self._locked(suite) as folder:
            current = self.champion_version(suite)
            if current is None:
                raise GateInputError(folder, "suite has no champion to roll back")
            if to is None:  # the champion before the promotion that made this one
                earlier = [e["from"] for e in self.history(suite)
                           if e.get("event") == "promote" and e.get("to") == current
                           and e.get("from")]
                if not earlier:
                    raise GateInputError(folder, f"v{current} was not promoted over an "
                                                 "earlier champion: nothing to roll back to "
                                                 "(name one with --to)")
                to = earlier[-1]
            if not self._version_dir(suite, to).is_dir():
                raise GateInputError(folder, f"version {to} does not exist")
            self._move_pointer(folder, to)
            self._append_history(folder, {"event": "rollback", "from": current, "to": to,
                                          "time": utc_now(), "by": who()})
            return current, to

    def _write_version(self, staging: Path, suite: str, number: int, parent: int | None,
                       evaluation: Evaluation, provenance: Mapping[str, Any]) -> None:
        record = {
            "suite": suite,
            "version": number,
            "parent": parent,
            "metrics": {k: evaluation.metrics[k] for k in sorted(evaluation.metrics)},
            "provenance": dict(provenance),
        }
        repeats = evaluation.extra.get("repeats")
        if isinstance(repeats, dict):
            record["repeats"] = repeats
        _write_file(staging / "version.json",
                    (json.dumps(record, indent=2, sort_keys=False) + "\n").encode())
        if evaluation.samples:
            arrays = dict(evaluation.samples)
            if evaluation.sample_ids is not None:
                arrays[SAMPLE_ID_KEY] = evaluation.sample_ids
            with open(staging / "samples.npz", "wb") as handle:
                np.savez(handle, allow_pickle=False, **arrays)  # fixed zip stamps: reproducible
                handle.flush()
                os.fsync(handle.fileno())
        for item in staging.iterdir():
            item.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)

    def _move_pointer(self, folder: Path, version: int) -> None:
        tmp = folder / f".{POINTER}.{os.getpid()}.tmp"
        _write_file(tmp, (json.dumps({"version": version}) + "\n").encode())
        os.replace(tmp, folder / POINTER)
        _fsync_dir(folder)

    def _append_history(self, folder: Path, event: Mapping[str, Any]) -> None:
        with open(folder / HISTORY, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(event)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _label(version: int | None) -> str:
    return "none (empty suite)" if version is None else f"v{version}"


def who() -> str:
    """Who is acting: the CI actor, else the login name."""
    try:
        return os.environ.get("GITHUB_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _check_record(evaluation: Evaluation) -> None:
    """A version must load again: finite metrics, numeric repeats (else the store bricks)."""
    bad = sorted(k for k, v in evaluation.metrics.items() if not math.isfinite(v))
    if bad:
        raise GateInputError(evaluation.path, f"not promoted: non-finite metric(s) "
                                              f"{', '.join(bad)}")
    repeats = evaluation.extra.get("repeats")
    if repeats is not None and not (isinstance(repeats, dict) and all(
            isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool)
                                        and math.isfinite(x) for x in v)
            for v in repeats.values())):
        raise GateInputError(evaluation.path, 'not promoted: extra "repeats" must map '
                                              "metric names to lists of finite numbers")


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
