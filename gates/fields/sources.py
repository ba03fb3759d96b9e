"""Where prediction/target fields come from: .npz, a folder of .npy files, or a zarr store.

Kept apart from the metric code so the metrics can run on any array that slices like
NumPy (memmap, zarr, in-memory), and so the optional zarr/dask extra is only imported
when a zarr store is actually opened.
"""

from __future__ import annotations

import mmap
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gates.errors import GateInputError

__all__ = ["ArrayLike", "NpyFile", "check_pair", "open_arrays", "read_block", "window_mappable"]


@runtime_checkable
class ArrayLike(Protocol):
    """A lazily readable array: ``np.memmap``, ``np.ndarray`` or a zarr array.

    Only ``shape``, ``dtype`` and basic-slice ``__getitem__`` are used, so the metrics
    never load more than the chunk they are working on.
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> Any: ...

    def __getitem__(self, key: Any) -> Any: ...


_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


def open_arrays(path: str | Path) -> tuple[ArrayLike, ArrayLike]:
    """Open ``pred`` and ``target`` without reading them (except .npz, see below).

    * ``*.npz``: loaded with ``allow_pickle=False`` (an object array is refused, never
      unpickled). npz members cannot be memory-mapped, so they are read whole.
    * a folder with ``pred.npy`` and ``target.npy``: ``np.load(mmap_mode="r")``.
    * a zarr store (folder with zarr metadata) holding arrays ``pred`` and ``target``.

    Raises GateInputError naming ``path`` for anything missing or unusable, so the
    gate reports one line instead of a traceback.
    """
    p = Path(path)
    if not p.exists():
        raise GateInputError(p, "no such file or directory")
    if p.is_dir():
        if any((p / m).exists() for m in _ZARR_MARKERS):
            pred, target = _open_zarr(p)
        elif (p / "pred.npy").exists() or (p / "target.npy").exists():
            pred, target = _open_npy_folder(p)
        else:
            raise GateInputError(
                p, "folder has neither pred.npy/target.npy nor zarr metadata (zarr.json)"
            )
    elif p.suffix == ".npz" or zipfile.is_zipfile(p):
        pred, target = _open_npz(p)
    else:
        raise GateInputError(
            p, "unsupported field file: expected .npz, a folder of .npy files or a zarr store"
        )
    check_pair(pred, target, p)
    return pred, target


def _open_npz(p: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read both members; pickled (object) members raise instead of being unpickled."""
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("pred", "target") if k not in z.files]
            if missing:
                raise GateInputError(p, f"missing array(s) {missing}; found {sorted(z.files)}")
            pred = z["pred"]
            target = z["target"]
    except GateInputError:
        raise
    except ValueError as err:  # object arrays: "cannot be loaded when allow_pickle=False"
        raise GateInputError(p, f"refusing to load npz: {err}") from err
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise GateInputError(p, f"cannot read npz: {err}") from err
    return pred, target


def _open_npy_folder(p: Path) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map both files read-only; nothing is read until a chunk is sliced."""
    out = []
    for name in ("pred", "target"):
        f = p / f"{name}.npy"
        if not f.exists():
            raise GateInputError(f, f"missing {name}.npy next to the other array")
        try:
            out.append(np.load(f, mmap_mode="r", allow_pickle=False))
        except (ValueError, OSError, EOFError) as err:
            raise GateInputError(f, f"cannot memory-map: {err}") from err
    return out[0], out[1]


def _open_zarr(p: Path) -> tuple[Any, Any]:
    """Open the store read-only (zarr imported here: it is an optional extra)."""
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise GateInputError(p, "zarr store given but zarr is not installed") from err
    try:
        group = zarr.open_group(str(p), mode="r")
    except Exception as err:  # zarr raises several types for a non-group store
        raise GateInputError(p, f"not a zarr group with arrays pred and target: {err}") from err
    out = []
    for name in ("pred", "target"):
        try:
            arr = group[name]
        except KeyError as err:
            raise GateInputError(p, f"zarr store has no array '{name}'") from err
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
            raise GateInputError(p, f"zarr member '{name}' is not an array")
        out.append(arr)
    return out[0], out[1]


def check_pair(pred: Any, target: Any, path: str | Path) -> None:
    """Same shape, real floating dtype, at least (sample, space, space) dims."""
    shape_p, shape_t = tuple(pred.shape), tuple(target.shape)
    if shape_p != shape_t:
        raise GateInputError(path, f"pred shape {shape_p} != target shape {shape_t}")
    for name, arr in (("pred", pred), ("target", target)):
        dt = np.dtype(arr.dtype)
        if not np.issubdtype(dt, np.floating):
            raise GateInputError(path, f"{name} has dtype {dt}; a real floating dtype is needed")
    if len(shape_p) < 3:
        raise GateInputError(
            path, f"fields need at least 3 dims (sample, ..., space), got shape {shape_p}"
        )
    if any(n == 0 for n in shape_p):
        raise GateInputError(path, f"empty field array, shape {shape_p}")


def _window_mappable(arr: Any) -> bool:
    """True for a memmap that covers its whole .npy payload with non-negative strides.

    Only then can a chunk be re-mapped from the file by byte range (and unmapped again,
    which keeps resident memory bounded); sliced views fall back to plain slicing.
    """
    filename = getattr(arr, "filename", None)
    if not isinstance(arr, np.memmap) or not filename:
        return False
    if any(s < 0 for s in arr.strides):
        return False
    try:
        size = os.path.getsize(filename)
    except OSError:
        return False
    return size - int(arr.offset) == arr.nbytes


def _mapped_window(
    filename: str,
    file_offset: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: np.dtype,
    index: Sequence[slice],
    populate: bool = True,
) -> np.ndarray:
    """Map only the bytes covering ``arr[index]``; unmapped when the result is released.

    ``MAP_POPULATE`` pre-faults the window in one kernel call, which is cheaper than a
    page fault per 64 KiB while NumPy computes. ``populate=False`` leaves the faults to
    the first reader: the compiled kernel's threads then take them in parallel, and
    they overlap with its arithmetic.
    """
    lo = 0
    hi = 0
    sub_shape = []
    for n, stride, sl in zip(shape, strides, index, strict=True):
        start, stop, step = sl.indices(n)
        if step != 1:
            raise ValueError("only unit-step slices are mapped")
        count = max(stop - start, 0)
        sub_shape.append(count)
        lo += start * stride
        hi += (start + max(count, 1) - 1) * stride
    itemsize = dtype.itemsize
    begin = file_offset + lo
    end = file_offset + hi + itemsize
    aligned = begin - begin % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
    with open(filename, "rb") as fh:
        mm = mmap.mmap(
            fh.fileno(), end - aligned, flags=flags, prot=mmap.PROT_READ, offset=aligned
        )
    return np.ndarray(
        tuple(sub_shape), dtype=dtype, buffer=mm, offset=begin - aligned, strides=strides
    )


def read_block(arr: Any, index: Sequence[slice], *, populate: bool = True) -> np.ndarray:
    """``arr[index]`` as a NumPy array, memory-mapping just that window for .npy memmaps.

    ``populate``: pre-fault the mapped window (see ``_mapped_window``).
    """
    if _window_mappable(arr):
        return _mapped_window(
            str(arr.filename), int(arr.offset), arr.shape, arr.strides, arr.dtype, index,
            populate,
        )
    if isinstance(arr, NpyFile):
        return arr.window(index)
    return np.asarray(arr[tuple(index)])


class NpyFile:
    """Picklable stand-in for a .npy memmap, for dask graphs sent to remote workers.

    Pickling an ``np.memmap`` would ship its whole contents; this ships the path and
    re-maps the requested window on the worker (which must see the same filesystem).
    """

    def __init__(self, filename: str, offset: int, shape: tuple[int, ...], dtype: Any,
                 strides: tuple[int, ...]) -> None:
        self.filename = filename
        self.offset = offset
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.strides = tuple(strides)
        self.ndim = len(self.shape)

    @classmethod
    def from_memmap(cls, arr: np.memmap) -> NpyFile:
        """Describe a whole-file memmap (see ``_window_mappable``)."""
        return cls(str(arr.filename), int(arr.offset), arr.shape, arr.dtype, arr.strides)

    def window(self, index: Sequence[slice]) -> np.ndarray:
        """The mapped window for ``index`` (basic unit-step slices only)."""
        return _mapped_window(
            self.filename, self.offset, self.shape, self.strides, self.dtype, index
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        """Copy of ``self[key]``; dask asks for tuples of slices."""
        if not isinstance(key, tuple):
            key = (key,)
        full = list(key) + [slice(None)] * (self.ndim - len(key))
        if all(isinstance(k, slice) and k.step in (None, 1) for k in full):
            return np.array(self.window(full))
        return np.array(self.window([slice(None)] * self.ndim)[tuple(key)])


def window_mappable(arr: Any) -> bool:
    """Public wrapper of the memmap check, used by the dask path."""
    return _window_mappable(arr)
