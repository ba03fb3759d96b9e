"""Per-sample metric vectors: ``<prefix>_samples.npz`` and the Lightning report's
``details.per_sample_<metric>`` lists, checked by one set of rules.

The npz is read member by member with :mod:`zipfile` and :mod:`numpy.lib.format`: the
declared uncompressed sizes and every array header are checked against a limit before any
byte is inflated (a zip bomb is refused, not inflated), and object arrays are refused from
their header, so nothing is ever unpickled.
"""

from __future__ import annotations

import functools
import io
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from gates.errors import GateInputError
from gates.inputs.files import check_regular

SAMPLE_ID_KEY = "sample_id"
#: Uncompressed bytes a per-sample sidecar may declare in all (8 bytes a value: 64 million
#: values); a larger archive is refused before it is inflated.
MAX_SAMPLES_BYTES = 512 * 1024 * 1024
_MAX_HEADER = 10_000


def load_samples(path: Path, *, limit: int = MAX_SAMPLES_BYTES
                 ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Per-sample vectors (float64) and the optional ``sample_id`` vector of an npz."""
    check_regular(path, "per-sample sidecar")
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
            members = archive.infolist()
            declared = sum(m.file_size for m in members)
            if declared > limit:
                raise GateInputError(path, f"the archive declares {declared} bytes "
                                           f"uncompressed, above the limit of {limit}; refused "
                                           "without inflating it")
            for member in members:
                key = member.filename.removesuffix(".npy")
                if key in arrays:
                    raise GateInputError(path, f"array {key!r} appears twice in the archive")
                arrays[key] = _member(path, archive, member, key)
    except GateInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError,
            RuntimeError) as exc:
        raise GateInputError(path, f"not a readable .npz file ({exc})") from None
    ids = arrays.pop(SAMPLE_ID_KEY, None)
    return check_vectors(path, arrays), check_ids(path, ids, arrays)


def _member(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo,
            key: str) -> np.ndarray:
    with archive.open(member) as stream:
        shape, fortran, dtype = _header(stream)
        if dtype.hasobject:
            raise GateInputError(path, f"array {key!r} holds pickled Python objects; refused "
                                       "(only plain numeric arrays are read)")
        needed = math.prod(shape) * dtype.itemsize
        if needed > member.file_size:
            raise GateInputError(path, f"array {key!r} declares shape {shape} of {dtype} "
                                       f"({needed} bytes), more than the {member.file_size} "
                                       "bytes stored; refused")
        data = stream.read(needed)
    if len(data) < needed:
        raise ValueError(f"array {key!r} ends after {len(data)} of its {needed} bytes")
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(  # writable, as np.load's
        shape, order="F" if fortran else "C")


def _header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype of the .npy array that ``stream`` begins with."""
    version = npy_format.read_magic(stream)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"unsupported .npy version {version}")
    prefix = stream.read(2 if version == (1, 0) else 4)  # the header's length
    size = int.from_bytes(prefix, "little")
    if size > _MAX_HEADER:
        raise ValueError(f"an array header of {size} bytes, above {_MAX_HEADER}")
    return _parsed_header(version, prefix + stream.read(size))


@functools.lru_cache(maxsize=256)
def _parsed_header(version: tuple[int, int], framed: bytes
                   ) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """numpy's own parse of a header (its length, then its text), once per distinct header:
    the vectors of one sidecar share theirs, and numpy parses each with
    ``ast.literal_eval`` (half of reading a 1,000-vector sidecar)."""
    read = npy_format.read_array_header_1_0 if version == (1, 0) else \
        npy_format.read_array_header_2_0
    shape, fortran, dtype = read(io.BytesIO(framed), max_header_size=_MAX_HEADER)
    return tuple(int(n) for n in shape), bool(fortran), np.dtype(dtype)


def check_vectors(path: Path | str, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One rule for every per-sample source: 1-D, real, finite, of one length."""
    vectors: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        vec = np.asarray(value)
        if np.iscomplexobj(vec):
            raise GateInputError(path, f"array {key!r} holds complex values; refused (the "
                                       "imaginary part would be dropped)")
        if vec.ndim != 1 or not np.issubdtype(vec.dtype, np.number) or vec.dtype == np.bool_:
            raise GateInputError(path, f"array {key!r} must be a 1-D numeric vector, "
                                       f"got shape {vec.shape} dtype {vec.dtype}")
        vectors[key] = vec.astype(np.float64)
    broken = {k: int(np.count_nonzero(~np.isfinite(v))) for k, v in vectors.items()
              if not np.all(np.isfinite(v))}
    if broken:
        listed = ", ".join(f"{k} ({n})" for k, n in sorted(broken.items()))
        raise GateInputError(path, f"per-sample vectors hold non-finite values: {listed}")
    if len({v.shape for v in vectors.values()}) > 1:
        listed = ", ".join(f"{k}={v.shape[0]}" for k, v in vectors.items())
        raise GateInputError(path, f"per-sample vectors differ in length: {listed}")
    return vectors


def check_ids(path: Path | str, ids: Any, vectors: Mapping[str, np.ndarray]
              ) -> np.ndarray | None:
    if ids is None:
        return None
    ids = np.asarray(ids)
    n = next(iter(vectors.values())).shape[0] if vectors else len(ids)
    if ids.ndim != 1 or len(ids) != n:
        raise GateInputError(path, f"{SAMPLE_ID_KEY} must be a vector of length {n}")
    if np.iscomplexobj(ids):
        raise GateInputError(path, f"{SAMPLE_ID_KEY} holds complex values; refused")
    if len(np.unique(ids)) != len(ids):
        raise GateInputError(path, f"{SAMPLE_ID_KEY} holds duplicate ids")
    return ids


def vectors_from_lists(path: Path, lists: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """JSON lists of numbers (the Lightning ``details``) under the npz rules."""
    arrays: dict[str, np.ndarray] = {}
    for key, values in lists.items():
        if not isinstance(values, Sequence) or isinstance(values, str | bytes):
            raise GateInputError(path, f"details.per_sample_{key} must be a list of numbers, "
                                       f"got {type(values).__name__}")
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise GateInputError(path, f"details.per_sample_{key}[{index}] must be a "
                                           f"number, got {type(value).__name__} {value!r}")
        arrays[key] = np.asarray(values, dtype=np.float64) if values else np.zeros(0)
    return check_vectors(path, arrays)
