"""The W&B sink's child process: the one place that imports wandb.

Run by :class:`gates.sinks.wandb.WandbSink` as a fresh interpreter (``python -P`` on this
file's path, so that neither the ``gates`` package nor pytest is imported here and nothing
on the current folder can shadow ``wandb``). It reads two frames on stdin, each a
length-prefixed pickle from its own parent: the job (``wandb.init`` arguments, the offline
fallback, the init timeout), opened at once while the gates run, then the record (tables,
summary, alerts, artifact; plain data). A deferred job (the offline copy kept ready
in online sessions) imports wandb at once but opens its run only when a record comes. It
answers one frame on its original stdout (``{"run_dir"}`` or ``{"error"}``) and exits.
Everything wandb prints goes to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pickle
import shutil
import struct
import sys
from pathlib import Path
from typing import IO, Any

ALERT_WAIT_S = 1800  # the same alert is not re-sent within 30 minutes
_TYPES = {"str": str, "float": float, "int": int, "bool": bool}

Record = dict[str, Any]

FRAME = struct.Struct(">Q")


def write_frame(handle: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    handle.write(FRAME.pack(len(data)) + data)
    handle.flush()


def read_frame(handle: IO[bytes]) -> Any:
    head = handle.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    size = FRAME.unpack(head)[0]
    data = handle.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)  # our own parent's frame


def serve() -> None:
    """The child: open the run (at once, or on the record when deferred), wait for the
    record, log it, finish, answer, exit."""
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever wandb prints goes to stderr, never into the answer
    incoming = sys.stdin.buffer
    answer: Record
    try:
        job = read_frame(incoming)
        run = None if job.get("defer") else _open(job)
        if run is None:
            _prepare()
        record = read_frame(incoming)
        if record is None:  # not needed, or the session ended without a result
            if run is not None:
                _abandon(run, resumed=bool(job["init"].get("resume")))
            answer = {"error": "no record"}
        else:
            answer = {"run_dir": write_record(run or _open(job), record)}
        import wandb

        wandb.teardown()
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        answer = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    with contextlib.suppress(OSError):
        write_frame(answers, answer)
        answers.close()
    os._exit(0)


def _abandon(run: Any, *, resumed: bool) -> None:
    if resumed:  # the evaluation's own run: leave its state as it was
        run.finish()
        return
    folder = Path(run.dir).parent
    offline = folder.name.startswith("offline-run-")
    run.finish(exit_code=1)
    if offline:
        shutil.rmtree(folder, ignore_errors=True)


def _open(job: Record) -> Any:
    import wandb

    settings = wandb.Settings(init_timeout=job["init_timeout"], x_disable_stats=True,
                              console="off", silent=True)
    Path(job["init"]["dir"]).mkdir(parents=True, exist_ok=True)
    run = wandb.init(**job["init"], settings=settings)
    _warm_up(wandb)
    return run


def _prepare() -> None:
    """A deferred run (the offline copy kept ready): wandb imported, its helper started."""
    import wandb

    wandb.setup()
    _warm_up(wandb)


def _warm_up(wandb: Any) -> None:
    """Import what logging needs while the gates still run; wandb's artifact module writes
    JSON through :class:`OneShotJson` in this process."""
    wandb.Table(columns=["a"], data=[["x"]])
    import wandb.plot  # noqa: F401
    from wandb.sdk.artifacts import artifact

    artifact.json = OneShotJson()  # type: ignore[assignment]
    _plain_summaries()


def _is_plain(value: Any) -> bool:
    """Text, a bool, an int, a finite float or None: what wandb's converters leave as is."""
    kind = type(value)
    return value is None or kind in (str, bool, int) or (kind is float
                                                          and math.isfinite(value))


@functools.cache
def _plain_summaries() -> None:
    """wandb's summary encoder, with a short way for a summary update of plain values.

    ``run.summary.update`` sends every value through wandb's converters (media, numpy,
    tensors, enums, compression) twice before encoding it: 10 us a key, 0.11-0.15 s for the
    10,000 ``gates/<gate id>`` keys of a 10,000-gate session, on the session's last wait.
    Each converter returns a plain value unchanged, so for an update whose values are all
    plain (:func:`_is_plain`) this encodes each value with the same call wandb ends with;
    any other update goes the general way. The records are the same byte for byte
    (tests/test_wandb_sink.py, for the pinned wandb version).
    """
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.interface.interface import InterfaceBase
    from wandb.sdk.lib import json_util
    from wandb.util import WandBJSONEncoderOld

    general = InterfaceBase._make_summary

    def make_summary(self: Any, summary_record: Any, run: Any) -> Any:
        if summary_record.remove or not all(_is_plain(item.value)
                                            for item in summary_record.update):
            return general(self, summary_record, run)
        out = pb.SummaryRecord()  # type: ignore[attr-defined]
        for item in summary_record.update:
            entry = out.update.add()
            if len(item.key) > 1:
                entry.nested_key.extend(item.key)
            else:
                entry.key = item.key[0]
            entry.value_json = json_util.dumps(item.value, cls=WandBJSONEncoderOld)
        return out

    make_summary.general = general  # type: ignore[attr-defined]
    InterfaceBase._make_summary = make_summary  # type: ignore[method-assign]


def _wandb_table(wandb: Any, spec: Record) -> Any:
    """A wandb.Table of our plain rows, with the column types declared instead of inferred.

    ``wandb.Table`` checks every added row's types in Python (about 0.4 ms a row: 4 s at
    10,000 gates), so the types are declared once and the rows attached as they are.
    """
    table = _plain_table(wandb)(columns=spec["columns"], data=[],
                                dtype=[_TYPES[t] for t in spec["types"]], optional=True)
    table.data = spec["rows"]
    return table


class OneShotJson:
    """:mod:`json` as wandb's artifact module sees it in this process: ``dump`` writes one
    ``dumps``. The standard library encodes ``json.dump`` in Python (only ``dumps`` uses
    its C encoder), and wandb writes every logged table's artifact entry with ``json.dump``:
    0.2 s for the results table of 10,000 gates. The text is the same (tested)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)

    @staticmethod
    def dump(obj: Any, fp: IO[str], **kwargs: Any) -> None:
        fp.write(json.dumps(obj, **kwargs))


@functools.cache
def _plain_table(wandb: Any) -> type:
    """``wandb.Table`` for cells that are already JSON: text, finite floats, None.

    wandb writes a logged table twice (the run's media file and the run_table artifact's
    entry) and sends every cell through its own converters first (numpy, enums, datetimes,
    media, nested lists), about 10 us a cell: 0.9 s for the 90,000 cells of the results
    table of a 10,000-gate session, the longest wait of the W&B sink. Our rows hold only
    plain cells by construction (:func:`gates.sinks.wandb.results_rows` and the other
    builders), for which each converter is the identity, so this subclass writes them as
    they are. Both JSON documents are the ones ``wandb.Table`` writes
    (tests/test_wandb_sink.py checks the cells' types and compares the documents for the
    pinned wandb version). Only what we log is handled: immutable tables (wandb's default
    log mode) without array columns, and every row, since no row cap applies.
    """
    from wandb import util
    from wandb.sdk.data_types._private import MEDIA_TMP
    from wandb.sdk.data_types.base_types.media import Media
    from wandb.sdk.lib import runid

    class PlainTable(wandb.Table):  # type: ignore[misc, name-defined]
        def bind_to_run(self, *args: Any, **kwargs: Any) -> None:
            path = os.path.join(MEDIA_TMP.name, runid.generate_id() + ".table.json")
            with open(path, "w", encoding="utf-8") as handle:  # dumps: the C encoder
                handle.write(util.json_dumps_safer({"columns": self.columns,
                                                    "data": self.data}))
            self._set_file(path, is_tmp=True, extension=".table.json")
            Media.bind_to_run(self, *args, **kwargs)

        def to_json(self, run_or_artifact: Any) -> dict[str, Any]:
            if not isinstance(run_or_artifact, wandb.Artifact):
                return super().to_json(run_or_artifact)  # type: ignore[no-any-return]
            document: dict[str, Any] = Media.to_json(self, run_or_artifact)
            document.update({"_type": wandb.Table._log_type, "columns": self.columns,
                             "data": self.data, "ncols": len(self.columns),
                             "nrows": len(self.data),
                             "column_types": self._column_types.to_json(run_or_artifact),
                             "log_mode": self.log_mode})
            return document

    return PlainTable


def write_record(run: Any, record: Record) -> str:
    """Log a record into an open run in one ``run.log``, finish it; the run folder."""
    import wandb

    # wandb silently cuts a table at Table.MAX_ROWS (10,000) rows; our tables write every
    # row, and a line series' table (one row per point and series) is wandb's own
    largest = max((len(chart["xs"]) * len(chart["ys"]) for chart in record["lines"].values()),
                  default=0)
    wandb.Table.MAX_ROWS = max(wandb.Table.MAX_ROWS, largest)
    wandb.Table.MAX_ARTIFACT_ROWS = max(wandb.Table.MAX_ARTIFACT_ROWS, largest)
    payload: dict[str, Any] = {key: _wandb_table(wandb, spec)
                               for key, spec in record["tables"].items()}
    for key, bar in record["bars"].items():
        payload[key] = wandb.plot.bar(_wandb_table(wandb, bar["table"]), bar["label"],
                                      bar["value"], title=bar["title"])
    for key, path in record["images"].items():
        payload[key] = wandb.Image(path)
    for key, chart in record["lines"].items():
        names = list(chart["ys"])
        payload[key] = wandb.plot.line_series(
            xs=chart["xs"], ys=[chart["ys"][n] for n in names], keys=names,
            title=chart["title"], xname=chart["x_label"])
    run.log(payload)
    run.summary.update(record["summary"])
    for title, text in record["alerts"]:
        run.alert(title=title, text=text, level="WARN", wait_duration=ALERT_WAIT_S)
    spec = record.get("artifact")
    if spec:
        artifact = wandb.Artifact(name=spec["name"], type=spec["type"],
                                  description=spec["description"], metadata=spec["metadata"])
        artifact.add_dir(spec["folder"])
        run.log_artifact(artifact, aliases=spec["aliases"])
    run_dir = str(Path(run.dir).parent)
    run.finish()
    return run_dir


if __name__ == "__main__":
    serve()
