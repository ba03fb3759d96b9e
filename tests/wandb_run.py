"""Read back what an offline W&B run recorded, so tests can check the W&B sink.

wandb 0.31 has no Python reader for its transaction log any more
(``wandb.sdk.internal.datastore`` is gone; the log is written by the Go ``wandb-core``
helper), and ``wandb.Api()`` needs a server. This module reads the files an offline run
leaves behind. The log format is internal to W&B: it was checked byte by byte against
wandb 0.31.0 (the version pinned in pyproject.toml) and ``tests/test_wandb_run.py``
reads a real run, so a wandb upgrade that changes it fails loudly there.

Layout of ``<WANDB_DIR>/wandb/offline-run-<YYYYmmdd_HHMMSS>-<id>/``
---------------------------------------------------------------
- ``run-<id>.wandb``: the transaction log (what ``wandb sync`` uploads).
- ``files/media/table/<key>_<step>_<hash>.table.json`` for each ``wandb.Table``; a key
  with ``/`` becomes sub-folders (``media/table/gates/results_0_<hash>.table.json``).
  Images go to ``files/media/images/``. The path is recorded relative to ``files/``.
- ``logs/``. Offline there is no ``wandb-summary.json`` and no ``config.yaml``.
- ``<WANDB_DIR>/wandb/latest-run`` is a symlink to the newest run folder.

The ``.wandb`` file (LevelDB log format, verified on real files)
-----------------------------------------------------------------
- A 7-byte file header ``<4sHB``: ident ``b":W&B"``, magic ``0xBEE1`` (little-endian,
  bytes ``e1 be``), version ``0``.
- Then 32 KiB blocks counted from the start of the file (the header sits in block 0).
  Each chunk: ``<IHB`` = crc (u32), length (u16), type (u8: 1 FULL, 2 FIRST, 3 MIDDLE,
  4 LAST), then ``length`` bytes. A chunk never crosses a block boundary.
- When fewer than 7 bytes remain in a block the writer pads them with zeros and starts
  the next chunk on the next block. When exactly 7 remain it writes a zero-length FIRST
  chunk there (both cases seen in real files).
- The crc is the plain CRC-32 (IEEE, ``zlib.crc32``) of the type byte followed by the
  data, not masked, not CRC-32C (LevelDB's own choice). Every chunk of real logs
  (~9000 chunks, 1 MiB) matched that, and none matched CRC-32C or masked CRC-32C.
- Each reassembled payload is a ``wandb.proto.wandb_internal_pb2.Record``. The file ends
  right after the last chunk (no padding at the end).

What the records hold (wandb 0.31.0 offline)
--------------------------------------------
Record order for a typical run: header (``version_info.producer`` = wandb version), run,
telemetry..., then what the script did, in order, then summary and ``exit``.

- run: ``run_id``, ``project``, ``run_group``, ``job_type``, ``display_name``, ``tags``
  and the init config as items, one per top-level key, the value as JSON
  (``key="gates"``, ``value_json='{"eval_run_id":"abc"}'``), plus ``_wandb: {}``.
- config: later ``run.config`` updates, same shape (``key``, whole value as JSON). A key
  with ``/`` stays one flat key (``"c/d"``). wandb itself writes nested updates with
  ``nested_key``: ``wandb.plot.bar`` logged as ``"physics/violations"`` writes the chart
  spec at ``nested_key=["_wandb", "visualize", "physics/violations"]``; the spec names the
  table key (``"physics/violations_table"``) in its ``userQuery``.
- summary: ``run.summary["gates/passed"] = 3`` writes one update with the flat
  ``key="gates/passed"`` (the ``/`` is never split). Each ``run.log`` row also produces a
  summary record, written by wandb-core with ``nested_key``: a one-element
  ``nested_key=["loss"]`` for plain values, ``["gates/results", "path"]`` etc. for each
  field of a media value (the logged key is always the first element, whole, with its
  ``/``). ``run.summary["d"]["k"] = 2`` writes ``nested_key=["d", "k"]``; ``del
  run.summary["x"]`` writes a ``remove`` item. With ``define_metric(name, summary="max")``
  the summary value becomes ``{"max": <value>}`` instead of the last value.
  wandb-core also writes ``_wandb.runtime = 0`` and ``_runtime = 0`` (sic) several times,
  the last one after the last row: do not rely on ``summary["_runtime"]``.
- history: one record per committed ``run.log`` row; items use ``nested_key`` like the
  summary ones, values in ``value_json`` (``NaN``/``Infinity`` as bare words, which
  ``json.loads`` accepts), plus ``_step``, ``_runtime``, ``_timestamp``. A nested dict
  logged as ``{"a": {"b": 1}}`` becomes ``nested_key=["a", "b"]``.
- A ``wandb.Table`` logged with ``run.log({"gates/results": table})`` appears in that
  history row and in the summary as
  ``{"_type": "table-file", "path": "media/table/gates/results_0_<hash>.table.json",
  "sha256", "size", "nrows", "ncols", "artifact_path", "_latest_artifact_path",
  "log_mode": "IMMUTABLE"}``, and also produces an artifact record of type ``run_table``
  (name ``run-<id>-gatesresults-<suffix>``, the ``/`` dropped) and a ``files`` record.
  ``wandb.plot.bar/line`` log their table under ``<key>_table``.
- alert: ``title``, ``text`` (newlines kept), ``level`` as a string (``"WARN"``; the
  default is ``"INFO"``) and ``wait_duration`` in *milliseconds* (``wait_duration=300``
  seconds is recorded as ``300000``; a ``timedelta`` of 60.5 s as ``60500``).
- artifact: ``name``, ``type``, ``digest`` (manifest MD5), ``metadata`` as a JSON string,
  ``aliases`` with ``"latest"`` always added (``aliases=["champion", "v1"]`` was recorded
  as ``["v1", "champion", "latest"]``: compare as sets), and the manifest entries
  (``path``, ``digest``, ``size``, ``local_path`` = a read-only staging copy under
  ``WANDB_DATA_DIR/artifacts/staging``, which may already be deleted when the run is
  read). No version number exists offline.
- metric: one per ``define_metric`` (``name``, ``summary {max: true}``, ...).
- exit: ``exit_code`` (proto3 omits 0). It is the last record; ``run.finish()`` can
  return a few ms before it is written, so call ``wandb.teardown()`` first.

``wandb sync --dry-run <run dir>`` (offline, no key needed, ~0.7 s) prints on *stderr*
``wandb: Would sync 1 run(s):`` then ``wandb:   <path>/run-<id>.wandb`` (path relative to
the current directory), and exits 0; with no run under the path it prints ``wandb: No runs
to sync.``. Never run a real ``wandb sync`` in a test: with no network it retries forever.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

HEADER_FORMAT = "<4sHB"
HEADER_IDENT = b":W&B"
HEADER_MAGIC = 0xBEE1
HEADER_VERSION = 0
HEADER_LEN = 7
BLOCK_LEN = 32768
CHUNK_FORMAT = "<IHB"
CHUNK_HEADER_LEN = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

RUN_DIR_PREFIX = "offline-run-"

_HERMETIC_FLAGS = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_X_DISABLE_STATS": "true",
    "WANDB_X_DISABLE_META": "true",
    "WANDB_X_DISABLE_MACHINE_INFO": "true",
    "WANDB_X_SAVE_REQUIREMENTS": "false",
}


def hermetic_wandb_env(tmp: Path) -> dict[str, str]:
    """Environment for a subprocess that may use W&B: offline, every W&B folder in ``tmp``.

    A copy of ``os.environ`` without any inherited ``WANDB_*`` variable (no API key, run
    id, project, entity, resume or base URL leaks in from the developer's shell) and
    without ``FAST_TO_SOTA_WANDB_INFO``; set those on the returned dict when a test needs
    them. Runs land in ``tmp/wandb/offline-run-*`` unless ``dir=`` is given to
    ``wandb.init``. The folders are created.
    """
    tmp = Path(tmp)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WANDB_") and k != "FAST_TO_SOTA_WANDB_INFO"
    }
    folders = {
        "WANDB_DIR": tmp,
        "WANDB_CACHE_DIR": tmp / ".wandb-cache",
        "WANDB_DATA_DIR": tmp / ".wandb-data",
        "WANDB_CONFIG_DIR": tmp / ".wandb-config",
    }
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder)
    env.update(_HERMETIC_FLAGS)
    return env


def _iter_payloads(data: bytes, path: Path, allow_incomplete: bool) -> Iterator[bytes]:
    """Reassemble the log's chunks into record payloads, checking every crc."""
    if len(data) < HEADER_LEN:
        raise ValueError(f"{path}: not a W&B transaction log: {len(data)} bytes, no header")
    ident, magic, version = struct.unpack(HEADER_FORMAT, data[:HEADER_LEN])
    if ident != HEADER_IDENT or magic != HEADER_MAGIC:
        raise ValueError(
            f"{path}: not a W&B transaction log: header {data[:HEADER_LEN]!r}, "
            f"expected {HEADER_IDENT!r} and magic {HEADER_MAGIC:#06x}"
        )
    if version != HEADER_VERSION:
        raise ValueError(f"{path}: unsupported W&B log version {version} (read {HEADER_VERSION})")

    pos = HEADER_LEN
    pending: bytearray | None = None
    pending_start = 0
    end = len(data)
    while pos < end:
        room = BLOCK_LEN - pos % BLOCK_LEN
        if room < CHUNK_HEADER_LEN:
            trailer = data[pos : pos + room]
            if trailer.strip(b"\x00"):
                raise ValueError(f"{path}: corrupt W&B log: non-zero block trailer at {pos}")
            pos += room
            continue
        if end - pos < CHUNK_HEADER_LEN:
            if allow_incomplete:
                return
            raise ValueError(
                f"{path}: truncated W&B log: {end - pos} bytes at offset {pos}, "
                "less than a chunk header"
            )
        crc, length, kind = struct.unpack(CHUNK_FORMAT, data[pos : pos + CHUNK_HEADER_LEN])
        start = pos + CHUNK_HEADER_LEN
        if CHUNK_HEADER_LEN + length > room:
            raise ValueError(
                f"{path}: corrupt W&B log: chunk at offset {pos} (length {length}) "
                "crosses a block boundary"
            )
        if start + length > end:
            if allow_incomplete:
                return
            raise ValueError(
                f"{path}: truncated W&B log: chunk at offset {pos} needs {length} bytes, "
                f"{end - start} left"
            )
        chunk = data[start : start + length]
        if zlib.crc32(bytes([kind]) + chunk) != crc:
            raise ValueError(f"{path}: corrupt W&B log: crc mismatch in chunk at offset {pos}")
        if kind == FULL:
            if pending is not None:
                raise ValueError(
                    f"{path}: corrupt W&B log: record at offset {pending_start} not finished"
                )
            yield chunk
        elif kind == FIRST:
            if pending is not None:
                raise ValueError(
                    f"{path}: corrupt W&B log: record at offset {pending_start} not finished"
                )
            pending, pending_start = bytearray(chunk), pos
        elif kind in (MIDDLE, LAST):
            if pending is None:
                raise ValueError(
                    f"{path}: corrupt W&B log: continuation chunk at offset {pos} "
                    "without a first chunk"
                )
            pending += chunk
            if kind == LAST:
                yield bytes(pending)
                pending = None
        else:
            raise ValueError(f"{path}: corrupt W&B log: chunk type {kind} at offset {pos}")
        pos = start + length
    if pending is not None and not allow_incomplete:
        raise ValueError(
            f"{path}: truncated W&B log: record starting at offset {pending_start} "
            "has no last chunk"
        )


def read_records(wandb_file: Path, *, allow_incomplete: bool = False) -> list[Any]:
    """Every ``wandb_internal_pb2.Record`` in a ``.wandb`` log, in order.

    Raises ``ValueError`` naming the file for a bad header, a crc mismatch, a broken
    chunk sequence, an unparsable record or a truncated tail. ``allow_incomplete=True``
    stops quietly at a torn last record instead (a run still being written); corruption
    before it is still an error. A header-only file (a process killed before anything
    was flushed) gives ``[]``.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    pb: Any = wandb_internal_pb2  # generated code, no stubs
    path = Path(wandb_file)
    data = path.read_bytes()
    records: list[Any] = []
    for payload in _iter_payloads(data, path, allow_incomplete):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError as err:
            raise ValueError(
                f"{path}: corrupt W&B log: record {len(records) + 1} does not parse: {err}"
            ) from err
        records.append(record)
    return records


def find_offline_runs(root: Path) -> list[Path]:
    """Every ``offline-run-*`` folder under ``root`` (recursive, symlinks such as
    ``latest-run`` not followed), sorted by path; timestamps in the names make runs of
    one ``wandb/`` folder come out oldest first."""
    found: list[Path] = []
    for parent, dirnames, _files in os.walk(root):
        runs = [d for d in dirnames if d.startswith(RUN_DIR_PREFIX)]
        for name in runs:
            candidate = Path(parent) / name
            if not candidate.is_symlink():
                found.append(candidate)
        dirnames[:] = [d for d in dirnames if not d.startswith(RUN_DIR_PREFIX)]
    return sorted(found)


def _item_path(item: Any) -> list[str]:
    return list(item.nested_key) or ([item.key] if item.key else [])


def _item_value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    oneof = item.DESCRIPTOR.oneofs_by_name.get("value")
    which = item.WhichOneof("value") if oneof is not None else None
    if which is None or which == "none":
        return None
    if which == "json":
        return json.loads(item.json)
    return getattr(item, which)


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _remove_path(target: dict[str, Any], path: list[str]) -> None:
    node: Any = target
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _apply(target: dict[str, Any], updates: Iterable[Any], removes: Iterable[Any]) -> None:
    for item in updates:
        path = _item_path(item)
        if path:
            _set_path(target, path, _item_value(item))
    for item in removes:
        path = _item_path(item)
        if path:
            _remove_path(target, path)


def _is_media(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and isinstance(value.get("path"), str) and "_type" in value


def _chart_table_key(spec: Any) -> str | None:
    """The ``tableKey`` a ``wandb.plot.*`` chart spec (config ``_wandb.visualize``) reads."""
    if isinstance(spec, dict):
        if spec.get("name") == "tableKey" and isinstance(spec.get("value"), str):
            return str(spec["value"])
        values: Iterable[Any] = spec.values()
    elif isinstance(spec, list):
        values = spec
    else:
        return None
    for value in values:
        found = _chart_table_key(value)
        if found is not None:
            return found
    return None


@dataclass
class OfflineRun:
    """What an offline run recorded, rebuilt from its transaction log.

    ``summary`` and each ``history`` row are keyed by the keys as logged (``"gates/passed"``,
    ``"gates/results"``: a ``/`` is never split); only real nesting (``nested_key`` with
    several parts, e.g. the fields of a table value) becomes nested dicts.
    """

    dir: Path
    run_id: str
    project: str | None
    group: str | None
    job_type: str | None
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]
    records: list[Any]
    exited: bool
    exit_code: int | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    wandb_version: str | None = None

    @property
    def charts(self) -> dict[str, Any]:
        """Chart specs of ``wandb.plot.*`` values, by logged key (config ``_wandb.visualize``)."""
        wandb_cfg = self.config.get("_wandb")
        charts = wandb_cfg.get("visualize") if isinstance(wandb_cfg, dict) else None
        return charts if isinstance(charts, dict) else {}

    def _media_value(self, key: str) -> dict[str, Any] | None:
        value = self.summary.get(key)
        if _is_media(value):
            return dict(value)
        for row in reversed(self.history):
            if _is_media(row.get(key)):
                return dict(row[key])
        return None

    def media_file(self, key: str) -> Path:
        """Local file of the media value (table, image...) last logged under ``key``."""
        value = self._media_value(key)
        if value is None:
            raise KeyError(f"{self.dir}: no media value logged under {key!r}")
        return self.dir / "files" / str(value["path"])

    def table_keys(self) -> list[str]:
        """Keys holding a ``wandb.Table`` in the summary or any history row."""
        keys: set[str] = set()
        for values in [self.summary, *self.history]:
            keys.update(k for k, v in values.items() if _is_media(v) and v["_type"] == "table-file")
        return sorted(keys)

    def table(self, key: str) -> dict[str, Any]:
        """The ``.table.json`` content (``{"columns": [...], "data": [[...]]}``) of the
        table last logged under ``key``.

        ``key`` may also be the key of a ``wandb.plot.*`` chart: its table is then read
        from the key the chart spec names (``"physics/violations"`` ->
        ``"physics/violations_table"``).
        """
        value = self._media_value(key)
        if value is None and key in self.charts:
            table_key = _chart_table_key(self.charts[key]) or f"{key}_table"
            value = self._media_value(table_key)
        if value is None or value.get("_type") != "table-file":
            raise KeyError(
                f"{self.dir}: no table logged under {key!r}; tables: {self.table_keys()}"
            )
        path = self.dir / "files" / str(value["path"])
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable table file for {key!r}: {err}") from err
        if not isinstance(content, dict) or "columns" not in content or "data" not in content:
            raise ValueError(f"{path}: table file for {key!r} has no columns/data")
        return content

    def table_rows(self, key: str) -> list[dict[str, Any]]:
        """The table under ``key`` as one dict per row, keyed by column name."""
        content = self.table(key)
        columns = list(content["columns"])
        return [dict(zip(columns, row, strict=True)) for row in content["data"]]


def _alert(record: Any) -> dict[str, Any]:
    ms = int(record.wait_duration)
    return {
        "title": record.title,
        "text": record.text,
        "level": record.level,
        "wait_duration": ms / 1000,  # seconds, as given to run.alert
        "wait_duration_ms": ms,  # as recorded
    }


def _artifact(record: Any, path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(record.metadata) if record.metadata else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: artifact {record.name!r} metadata is not JSON") from err
    entries = [
        {
            "path": entry.path,
            "digest": entry.digest,
            "size": int(entry.size),
            "ref": entry.ref or None,
            "local_path": entry.local_path or None,
        }
        for entry in record.manifest.contents
    ]
    return {
        "name": record.name,
        "type": record.type,
        "aliases": list(record.aliases),
        "metadata": metadata,
        "digest": record.digest,
        "description": record.description or None,
        "tags": list(record.tags),
        "entries": entries,
    }


def _wandb_file(run_dir: Path) -> Path:
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such W&B run folder")
    logs = sorted(run_dir.glob("run-*.wandb"))
    if len(logs) != 1:
        raise FileNotFoundError(
            f"{run_dir}: expected one run-<id>.wandb transaction log, found {len(logs)}"
        )
    return logs[0]


def read_offline_run(run_dir: Path, *, allow_incomplete: bool = False) -> OfflineRun:
    """Rebuild an offline run from its folder (or from its ``run-<id>.wandb`` file).

    Raises ``FileNotFoundError`` when there is no log and ``ValueError`` (naming the
    file) when the log is corrupt, truncated or has no run record.
    """
    from google.protobuf.json_format import MessageToDict

    wandb_file = _wandb_file(Path(run_dir))
    records = read_records(wandb_file, allow_incomplete=allow_incomplete)

    run_record: Any = None
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    exit_code: int | None = None
    wandb_version: str | None = None
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "header":
            wandb_version = record.header.version_info.producer or None
        elif kind == "run":
            run_record = record.run
            _apply(config, run_record.config.update, run_record.config.remove)
            _apply(summary, run_record.summary.update, run_record.summary.remove)
        elif kind == "config":
            _apply(config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            row: dict[str, Any] = {}
            _apply(row, record.history.item, [])
            if "_step" not in row and record.history.HasField("step"):
                row["_step"] = int(record.history.step.num)
            history.append(row)
        elif kind == "alert":
            alerts.append(_alert(record.alert))
        elif kind == "artifact":
            artifacts.append(_artifact(record.artifact, wandb_file))
        elif kind == "metric":
            metric = MessageToDict(record.metric, preserving_proto_field_name=True)
            metric.pop("_info", None)
            metric.pop("_control", None)
            metrics.append(metric)
        elif kind == "exit":
            exit_code = int(record.exit.exit_code)

    if run_record is None:
        raise ValueError(
            f"{wandb_file}: no run record in {len(records)} records "
            "(was the run killed before it flushed?)"
        )
    return OfflineRun(
        dir=wandb_file.parent,
        run_id=run_record.run_id or wandb_file.stem.removeprefix("run-"),
        project=run_record.project or None,
        group=run_record.run_group or None,
        job_type=run_record.job_type or None,
        config=config,
        summary=summary,
        history=history,
        alerts=alerts,
        artifacts=artifacts,
        records=records,
        exited=exit_code is not None,
        exit_code=exit_code,
        name=run_record.display_name or None,
        tags=list(run_record.tags),
        metrics=metrics,
        wandb_version=wandb_version,
    )
