"""Reading one input file safely: regular files only, bounded in size, and JSON parsed
strictly (no duplicate keys, no integer too large for a float, no runaway nesting).

Every refusal is a :class:`GateInputError` naming the file, so a session ends with one
line instead of a traceback or a hang.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from gates.errors import GateInputError

#: Reports, logs and tables larger than this are refused before they are read.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: An integer with more digits than this cannot be a float (the largest has 309).
MAX_INT_DIGITS = 308

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class InputProblem(GateInputError):
    """A problem at a known line of a file; ``str()`` reads ``<path>:<line>: <problem>``.

    Sidecar readers raise it; the dashboards turn it into one warning line.
    """

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        super().__init__(f"{path}:{line}" if line is not None else path, problem)
        self.file = Path(path)
        self.line = line


def check_regular(path: Path, what: str) -> os.stat_result:
    """``os.stat`` the path (following links) and refuse anything but a regular file.

    Checked before opening, so a FIFO never blocks the session.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise GateInputError(path, f"cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise GateInputError(path, f"the {what} is {_kind(info.st_mode)}, not a regular file; "
                                   "only regular files are read")
    return info


def read_regular(path: Path, what: str, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    info = check_regular(path, what)
    if info.st_size > limit:
        raise GateInputError(path, f"the {what} is {info.st_size} bytes, above the limit of "
                                   f"{limit} bytes")
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening still
        # returns at once and fstat below refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise GateInputError(path, f"cannot read the {what} ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise GateInputError(path, f"the {what} is {_kind(opened.st_mode)}, not a regular "
                                       "file; only regular files are read")
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise GateInputError(path, f"cannot read the {what} ({exc.strerror or exc})"
                                 ) from None
    if len(data) > limit:
        raise GateInputError(path, f"the {what} is above the limit of {limit} bytes")
    return data


def decode_text(path: Path, raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputProblem(path, f"the {what} is not UTF-8 text", line) from None


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def json_kind(value: Any) -> str:
    return {list: "array", dict: "object", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


def number(value: Any) -> float | None:
    """A JSON number as float; booleans and text are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Refused(Exception):
    """A value strict JSON reading refuses; turned into a GateInputError by the caller."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key!r} in one object (which value is meant is "
                           "ambiguous)")
        out[key] = value
    return out


def _integer(text: str) -> int:
    digits = len(text.lstrip("-+"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {digits} digits is out of range for a number")
    return int(text)


def _constant(name: str) -> float:
    # NaN and +-Infinity are kept as floats: a gate fails on them with the metric named.
    return float(name.replace("Infinity", "inf"))


def loads_json(path: Path, text: str, what: str) -> Any:
    """Strict JSON: duplicate keys, huge integers and deep nesting are bad input."""
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_int=_integer,
                          parse_constant=_constant)
    except _Refused as exc:
        raise GateInputError(path, f"the {what} is refused: {exc}") from None
    except json.JSONDecodeError as exc:
        raise GateInputError(path, f"the {what} is not valid JSON: {exc.msg} at line "
                                   f"{exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise GateInputError(path, f"the {what} is nested too deeply to be read") from None
    except ValueError as exc:  # e.g. Python's own limit on integer digits
        raise GateInputError(path, f"the {what} is refused: {exc}") from None


def read_json(path: Path, what: str, *, limit: int = MAX_FILE_BYTES) -> tuple[Any, bytes]:
    """Parsed JSON of a regular file, and its bytes (for the checksum)."""
    raw = read_regular(path, what, limit=limit)
    return loads_json(path, decode_text(path, raw, what), what), raw
