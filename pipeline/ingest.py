"""Ingest: raw projections, flats, darks and angles into lazy Dask arrays.

Two layouts are read:

**Data Exchange HDF5** (APS/TomoPy; the synthetic campaigns and ``tooth.h5``)::

    exchange/data        (angles, rows, columns)  counts, any real numeric type
    exchange/data_white  (flats, rows, columns)   flat fields (beam, no sample)
    exchange/data_dark   (darks, rows, columns)   dark fields (no beam)
    exchange/theta       (angles,)                rotation angles; attribute
                                                  ``units`` "degrees" (the Data
                                                  Exchange default when absent)
                                                  or "radians"

**A folder of TIFF files**, one 2-D image per file::

    proj_*.tif   projections, in natural order of their names
                 (proj_2.tif before proj_10.tif; zero-padding not needed)
    flat_*.tif   flat fields
    dark_*.tif   dark fields
    theta.txt    one angle per projection in degrees, separated by white
                 space, commas or new lines (or pass ``theta_deg=``)

The patterns and the angle file name are arguments of :func:`read_tiff_stack`.

Everything is validated before any heavy work (DESIGN.md, principle 7): a file
that is missing, unreadable or truncated, a missing dataset, a projection
stack that is not 3-D, angles that are missing, of the wrong count or not
finite, flats or darks that are missing or whose frames differ in shape from
the projections, a flat frame that is all zero, or flats no brighter than the
darks anywhere raise :class:`IngestError` naming the file, the dataset, what
was found and what was expected. Flats and darks are read once here, frame by
frame, for these checks (memory: two frames); projections are not read.

The arrays returned are lazy. Every task opens its file by path and closes it
again (an open h5py handle cannot travel to a distributed worker), so the
graphs run on any Dask cluster that sees the same file system. Projections are
chunked by angle, whole frames, as many per chunk as
:func:`debond.storage.default_chunks` gives for ``"projections"`` (16 MiB), so
a stored ``projections`` array has the same chunks. Angles are converted to
radians here (DESIGN.md, principle 8).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import tifffile
from dask.base import tokenize

from debond.storage import default_chunks

__all__ = [
    "DARKS",
    "DATA",
    "FLATS",
    "THETA",
    "IngestError",
    "Projections",
    "read_data_exchange",
    "read_projections",
    "read_tiff_stack",
    "read_tiff_volume",
]

#: Data Exchange dataset names.
DATA = "exchange/data"
FLATS = "exchange/data_white"
DARKS = "exchange/data_dark"
THETA = "exchange/theta"

_DEGREES = {"deg", "degree", "degrees"}
_RADIANS = {"rad", "radian", "radians"}
_DTYPE = np.dtype(np.float32)


class IngestError(ValueError):
    """Raw data that cannot be ingested.

    The message names the file, the dataset (or file pattern), what was found
    and what was expected.

    Attributes
    ----------
    path : str or None
        The file or folder at fault.
    dataset : str or None
        The HDF5 dataset or TIFF role (``"projections"``, ``"flats"`` …).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        dataset: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)
        self.dataset = dataset


@dataclass(frozen=True, eq=False)
class Projections:
    """Raw projections of one sample, lazy, with their flats, darks and angles.

    Attributes
    ----------
    data : (angles, rows, columns) dask array of float32
        Detector counts, chunked by angle (whole frames per chunk).
    flats : (flats, rows, columns) dask array of float32
        Flat fields (beam on, no sample), counts.
    darks : (darks, rows, columns) dask array of float32
        Dark fields (beam off), counts.
    theta_rad : (angles,) ndarray of float64
        Rotation angle of each projection, radians.
    source : Path
        The file (Data Exchange) or folder (TIFF stack) read.
    rows : (int, int)
        The detector rows read, ``[start, stop)`` in the file's row numbers.
    layout : {"data-exchange", "tiff"}
    """

    data: da.Array
    flats: da.Array
    darks: da.Array
    theta_rad: np.ndarray
    source: Path
    rows: tuple[int, int]
    layout: str


# ----------------------------------------------------------------- readers


def _key_slices(key: Any, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A Dask getter key as one step-1 slice per axis (Dask passes slices)."""
    if not isinstance(key, tuple):
        key = (key,)
    key = key + (slice(None),) * (len(shape) - len(key))
    out = []
    for k, n in zip(key, shape, strict=True):
        if not isinstance(k, slice):
            raise TypeError(f"expected slices, got {key!r}")
        start, stop, step = k.indices(n)
        if step != 1:
            raise TypeError(f"expected step-1 slices, got {key!r}")
        out.append(slice(start, max(start, stop)))
    return tuple(out)


class _HDF5Frames:
    """Frames of one HDF5 dataset, read by path on every ``__getitem__``.

    Picklable and small: what a task carries is the path, the dataset name and
    the row window; each read opens the file, reads the region as float32 and
    closes it.
    """

    def __init__(self, path: str, dataset: str, shape: tuple[int, int, int], row0: int) -> None:
        self.path = path
        self.dataset = dataset
        self.shape = shape
        self.row0 = row0
        self.dtype = _DTYPE
        self.ndim = 3

    def __dask_tokenize__(self) -> object:
        return ("debond-hdf5-frames", _file_token(self.path), self.dataset, self.shape, self.row0)

    def __getitem__(self, key: Any) -> np.ndarray:
        frames, rows, cols = _key_slices(key, self.shape)
        rows = slice(rows.start + self.row0, rows.stop + self.row0)
        try:
            with h5py.File(self.path, "r") as f:
                block = f[self.dataset][frames, rows, cols]
        except (OSError, KeyError) as error:
            raise IngestError(
                f"{self.path}: reading {self.dataset}[{frames.start}:{frames.stop}, "
                f"{rows.start}:{rows.stop}, {cols.start}:{cols.stop}] failed ({error}); "
                "was the file changed or removed after ingest?",
                path=self.path,
                dataset=self.dataset,
            ) from error
        return np.asarray(block, dtype=_DTYPE)


class _TiffFrames:
    """Frames stored one per TIFF file, read by path on every ``__getitem__``."""

    def __init__(
        self, paths: Sequence[str], role: str, frame_shape: tuple[int, int], rows: tuple[int, int]
    ) -> None:
        self.paths = tuple(paths)
        self.role = role
        self.rows = rows
        self.shape = (len(self.paths), rows[1] - rows[0], frame_shape[1])
        self.dtype = _DTYPE
        self.ndim = 3

    def __dask_tokenize__(self) -> object:
        return (
            "debond-tiff-frames",
            [_file_token(p) for p in self.paths],
            self.role,
            self.shape,
            self.rows,
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        frames, rows, cols = _key_slices(key, self.shape)
        rows = slice(rows.start + self.rows[0], rows.stop + self.rows[0])
        out = np.empty(
            (frames.stop - frames.start, rows.stop - rows.start, cols.stop - cols.start), _DTYPE
        )
        for i, path in enumerate(self.paths[frames]):
            try:
                image = tifffile.imread(path, key=0)
            except (OSError, ValueError, IndexError, tifffile.TiffFileError) as error:
                raise IngestError(
                    f"{path}: reading {self.role} frame failed ({error}); "
                    "was the file changed or removed after ingest?",
                    path=path,
                    dataset=self.role,
                ) from error
            out[i] = image[rows, cols]
        return out


class _TiffPages:
    """Pages of one multi-page TIFF (a volume, one z-slice per page), read by path."""

    def __init__(self, path: str, shape: tuple[int, int, int], dtype: np.dtype[Any]) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.ndim = 3

    def __dask_tokenize__(self) -> object:
        return ("debond-tiff-pages", _file_token(self.path), self.shape, str(self.dtype))

    def __getitem__(self, key: Any) -> np.ndarray:
        pages, rows, cols = _key_slices(key, self.shape)
        try:
            with tifffile.TiffFile(self.path) as tif:
                planes = [
                    tif.pages[i].asarray()[rows, cols] for i in range(pages.start, pages.stop)
                ]
        except (OSError, ValueError, IndexError, tifffile.TiffFileError) as error:
            raise IngestError(
                f"{self.path}: reading pages {pages.start}:{pages.stop} failed ({error}); "
                "was the file changed or removed?",
                path=self.path,
                dataset="volume",
            ) from error
        return np.stack(planes).astype(self.dtype, copy=False)


def read_tiff_volume(path: str | os.PathLike[str], *, pages_per_chunk: int = 64) -> da.Array:
    """A multi-page TIFF volume (one 2-D page per z-slice) as a lazy Dask array.

    Used for segmentations brought by the user (a campaign sample's
    ``phases``). Every task opens the file by path.

    Parameters
    ----------
    path : path-like
    pages_per_chunk : int
        z-slices per chunk (≥ 1).

    Returns
    -------
    (pages, rows, columns) dask array
        The pages' own dtype.

    Raises
    ------
    IngestError
        The file is missing or not a TIFF, has no page, or its pages differ in
        shape or dtype or are not 2-D (the message names the file and page).
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file; expected a multi-page TIFF volume", path=path)
    try:
        with tifffile.TiffFile(path) as tif:
            shapes = [(page.shape, page.dtype) for page in tif.pages]
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise IngestError(f"{path}: cannot be read as TIFF ({error})", path=path) from error
    if not shapes:
        raise IngestError(f"{path}: has no image; expected one 2-D page per z-slice", path=path)
    first_shape, first_dtype = shapes[0]
    for i, (shape, dtype) in enumerate(shapes):
        if len(shape) != 2 or shape != first_shape or dtype != first_dtype:
            raise IngestError(
                f"{path}: page {i} is {dtype} of shape {shape}; expected 2-D pages all like "
                f"page 0 ({first_dtype}, {first_shape})",
                path=path,
                dataset="volume",
            )
    rows, columns = first_shape
    reader = _TiffPages(str(path), (len(shapes), rows, columns), np.dtype(first_dtype))
    return da.from_array(
        reader,
        chunks=(max(1, min(int(pages_per_chunk), len(shapes))), rows, columns),
        lock=False,
        asarray=False,
        name=f"tiff-volume-{tokenize(reader)}",
        meta=np.empty((0, 0, 0), reader.dtype),
    )


def _file_token(path: str) -> tuple[str, int, int]:
    """A path with its size and modification time: a changed file is a new input."""
    try:
        stat = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (path, stat.st_size, stat.st_mtime_ns)


def _lazy(reader: _HDF5Frames | _TiffFrames, frames_per_chunk: int, name: str) -> da.Array:
    """A Dask array over a reader: ``frames_per_chunk`` whole frames per chunk."""
    n, rows, cols = reader.shape
    return da.from_array(
        reader,
        chunks=(max(1, min(frames_per_chunk, n)), rows, cols),
        lock=False,
        asarray=False,
        name=f"{name}-{tokenize(reader)}",
        meta=np.empty((0, 0, 0), _DTYPE),
    )


# ------------------------------------------------------------- validation


def _check_rows(rows: slice | tuple[int, int] | None, n_rows: int, where: str) -> tuple[int, int]:
    """Normalise the ``rows`` argument to ``(start, stop)`` within ``n_rows``."""
    if rows is None:
        return 0, n_rows
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            raise ValueError(f"rows: only contiguous rows can be read; got step {rows.step}")
        start, stop, _ = rows.indices(n_rows)
    elif (
        isinstance(rows, tuple)
        and len(rows) == 2
        and all(isinstance(r, int | np.integer) for r in rows)
    ):
        start, stop = int(rows[0]), int(rows[1])
    else:
        raise TypeError(f"rows must be a slice, a (start, stop) pair or None; got {rows!r}")
    if not 0 <= start < stop <= n_rows:
        raise ValueError(
            f"rows: {where} has {n_rows} detector rows; rows [{start}, {stop}) is not a "
            f"non-empty range within [0, {n_rows})"
        )
    return start, stop


def _check_frames_content(
    flat_frames: Iterator[np.ndarray],
    dark_frames: Iterator[np.ndarray],
    source: str,
    flats_name: str,
    darks_name: str,
) -> None:
    """Flats and darks finite, no flat frame all zero, flats above darks somewhere.

    Reads one frame at a time (float64 sums of two frames in memory).
    """
    sums = {}
    for name, frames in ((flats_name, flat_frames), (darks_name, dark_frames)):
        total: np.ndarray | None = None
        count = 0
        for index, frame in enumerate(frames):
            frame = np.asarray(frame, dtype=np.float64)
            bad = ~np.isfinite(frame)
            if bad.any():
                raise IngestError(
                    f"{source}: {name} frame {index} has {int(bad.sum())} non-finite values "
                    "(NaN or inf); expected finite counts",
                    path=source,
                    dataset=name,
                )
            if name == flats_name and not frame.any():
                raise IngestError(
                    f"{source}: {name} frame {index} is all zero; expected a flat field with "
                    "counts (beam on, no sample). Remove the frame or re-record the flats.",
                    path=source,
                    dataset=name,
                )
            total = frame if total is None else total + frame
            count += 1
        assert total is not None  # frame counts were checked before
        sums[name] = total / count
    if not (sums[flats_name] > sums[darks_name]).any():
        raise IngestError(
            f"{source}: the mean of {flats_name} is not above the mean of {darks_name} at any "
            f"pixel (flat max {sums[flats_name].max():g}, dark min {sums[darks_name].min():g} "
            "counts); expected flats brighter than darks. Are the two swapped?",
            path=source,
            dataset=flats_name,
        )


def _theta_to_radians(theta: np.ndarray, units: str | None, source: str, name: str) -> np.ndarray:
    """Angles as float64 radians; degrees unless ``units`` says radians."""
    bad = np.flatnonzero(~np.isfinite(theta))
    if bad.size:
        raise IngestError(
            f"{source}: {name} has {bad.size} non-finite angles (first at index "
            f"{', '.join(str(i) for i in bad[:5])}); expected finite angles",
            path=source,
            dataset=name,
        )
    unit = (units or "degrees").strip().lower()
    if unit in _DEGREES:
        return np.deg2rad(theta.astype(np.float64))
    if unit in _RADIANS:
        return theta.astype(np.float64)
    raise IngestError(
        f"{source}: {name} has units {units!r}; expected 'degrees' (the Data Exchange "
        "default) or 'radians'",
        path=source,
        dataset=name,
    )


def _check_theta_count(theta: np.ndarray, n_angles: int, source: str, name: str, what: str) -> None:
    if theta.ndim != 1 or theta.size != n_angles:
        raise IngestError(
            f"{source}: {name} has shape {theta.shape}; expected ({n_angles},), one angle per "
            f"projection ({n_angles} in {what})",
            path=source,
            dataset=name,
        )


# ------------------------------------------------------------ Data Exchange


def _attr_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _attr_text(value.reshape(()).item())
    return str(value)


def _dataset(f: h5py.File, name: str, source: str, expected: str) -> h5py.Dataset:
    node = f.get(name)
    if node is None:
        raise IngestError(
            f"{source}: no dataset {name!r}; expected {expected} (Data Exchange layout: "
            f"{DATA}, {FLATS}, {DARKS}, {THETA})",
            path=source,
            dataset=name,
        )
    if not isinstance(node, h5py.Dataset):
        raise IngestError(
            f"{source}: {name!r} is a {type(node).__name__}, not a dataset; expected {expected}",
            path=source,
            dataset=name,
        )
    if not (np.issubdtype(node.dtype, np.integer) or np.issubdtype(node.dtype, np.floating)):
        raise IngestError(
            f"{source}: {name} has dtype {node.dtype}; expected real numbers",
            path=source,
            dataset=name,
        )
    return node


def _frame_stack(
    f: h5py.File, name: str, frame_shape: tuple[int, int], source: str, what: str
) -> h5py.Dataset:
    """A flats or darks dataset: (frames, rows, columns) with the projections' frame shape."""
    node = _dataset(f, name, source, f"{what}, shape (frames, rows, columns)")
    if node.ndim != 3 or node.shape[0] < 1 or tuple(node.shape[1:]) != frame_shape:
        raise IngestError(
            f"{source}: {name} has shape {node.shape}; expected (frames ≥ 1, "
            f"{frame_shape[0]}, {frame_shape[1]}): {what} with the projections' frame shape "
            f"(rows, columns) = {frame_shape}",
            path=source,
            dataset=name,
        )
    return node


def read_data_exchange(
    path: str | os.PathLike[str],
    *,
    rows: slice | tuple[int, int] | None = None,
    angles_per_chunk: int | None = None,
) -> Projections:
    """Open a Data Exchange HDF5 file as lazy projections with flats, darks and angles.

    Parameters
    ----------
    path : path-like
        The ``.h5`` file (layout in the module docstring).
    rows : slice or (int, int), optional
        Detector rows to read, ``[start, stop)`` (contiguous); default all.
        Applies to projections, flats and darks alike.
    angles_per_chunk : int, optional
        Projections per chunk; default as many whole frames as fit in 16 MiB
        of float32 (:func:`debond.storage.default_chunks`), at least one.

    Returns
    -------
    Projections
        ``data`` (angles, rows, columns) float32 counts, lazy; ``flats`` and
        ``darks`` (frames, rows, columns) float32, lazy; ``theta_rad``
        (angles,) float64 in radians.

    Raises
    ------
    IngestError
        The file is missing, unreadable, truncated or not HDF5; a dataset is
        missing or has the wrong shape; angles are of the wrong count, not
        finite or in unknown units; a flat frame is all zero or the flats are
        not above the darks anywhere; flats or darks are not finite.
    ValueError, TypeError
        ``rows`` or ``angles_per_chunk`` is out of range or of the wrong type.

    Examples
    --------
    >>> raw = read_data_exchange("raw/c03.h5")  # doctest: +SKIP
    >>> raw.data.shape, raw.data.dtype, float(raw.theta_rad[-1])  # doctest: +SKIP
    ((240, 128, 160), dtype('float32'), 3.1285...)
    """
    source = Path(path)
    where = os.fspath(source)
    if angles_per_chunk is not None and (
        not isinstance(angles_per_chunk, int | np.integer) or angles_per_chunk < 1
    ):
        raise ValueError(f"angles_per_chunk must be a positive integer; got {angles_per_chunk!r}")
    if not source.exists():
        raise IngestError(f"{where}: no such file; expected a Data Exchange HDF5 file", path=where)
    if source.is_dir():
        raise IngestError(
            f"{where}: is a folder; expected a Data Exchange HDF5 file (for a folder of "
            "TIFF files use read_tiff_stack)",
            path=where,
        )
    try:
        f = h5py.File(where, "r")
    except OSError as error:
        raise IngestError(
            f"{where}: cannot be opened as HDF5 ({error}); expected a complete Data Exchange "
            "HDF5 file. Is it truncated (an interrupted copy) or another format?",
            path=where,
        ) from error
    with f:
        data = _dataset(f, DATA, where, "projections, shape (angles, rows, columns)")
        if data.ndim != 3 or 0 in data.shape:
            raise IngestError(
                f"{where}: {DATA} has shape {data.shape}; expected 3-D (angles, rows, "
                "columns) with at least one projection, row and column",
                path=where,
                dataset=DATA,
            )
        n_angles, n_rows, n_cols = (int(n) for n in data.shape)
        frame_shape = (n_rows, n_cols)
        theta_node = _dataset(f, THETA, where, f"angles, shape ({n_angles},)")
        theta = np.asarray(theta_node[()], dtype=np.float64)
        _check_theta_count(theta, n_angles, where, THETA, DATA)
        theta_rad = _theta_to_radians(
            theta, _attr_text(theta_node.attrs.get("units")), where, THETA
        )
        flats = _frame_stack(f, FLATS, frame_shape, where, "flat fields")
        darks = _frame_stack(f, DARKS, frame_shape, where, "dark fields")
        r0, r1 = _check_rows(rows, n_rows, f"{where} ({DATA})")
        try:
            _check_frames_content(
                (flats[i, r0:r1, :] for i in range(flats.shape[0])),
                (darks[i, r0:r1, :] for i in range(darks.shape[0])),
                where,
                FLATS,
                DARKS,
            )
        except OSError as error:
            raise IngestError(
                f"{where}: reading {FLATS} and {DARKS} failed ({error}); expected a complete, "
                "readable file. Is it truncated?",
                path=where,
                dataset=FLATS,
            ) from error
        n_flats, n_darks = int(flats.shape[0]), int(darks.shape[0])

    absolute = os.path.abspath(where)
    shape = (n_angles, r1 - r0, n_cols)
    if angles_per_chunk is None:
        angles_per_chunk = default_chunks(shape, "projections", _DTYPE)[0]

    def stack(name: str, frames: int, per_chunk: int, label: str) -> da.Array:
        reader = _HDF5Frames(absolute, name, (frames, r1 - r0, n_cols), r0)
        return _lazy(reader, per_chunk, label)

    per_frame_chunk = default_chunks(
        (max(n_flats, n_darks), r1 - r0, n_cols), "projections", _DTYPE
    )[0]
    return Projections(
        data=stack(DATA, n_angles, int(angles_per_chunk), "ingest-projections"),
        flats=stack(FLATS, n_flats, per_frame_chunk, "ingest-flats"),
        darks=stack(DARKS, n_darks, per_frame_chunk, "ingest-darks"),
        theta_rad=theta_rad,
        source=source,
        rows=(r0, r1),
        layout="data-exchange",
    )


# -------------------------------------------------------------- TIFF stack


def _natural_key(path: Path) -> list[Any]:
    """Sort key: digit runs compare as numbers (proj_2 before proj_10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _tiff_frame_shape(path: Path, role: str) -> tuple[int, int]:
    """The shape of the first image of a TIFF file, without reading its pixels."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            shape = tuple(int(n) for n in page.shape)
            dtype = np.dtype(page.dtype) if page.dtype is not None else None
            pages = len(tif.pages)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as error:
        raise IngestError(
            f"{path}: cannot be read as TIFF ({error}); expected a 2-D image ({role})",
            path=path,
            dataset=role,
        ) from error
    if pages != 1:
        raise IngestError(
            f"{path}: holds {pages} images; expected one 2-D {role} image per file",
            path=path,
            dataset=role,
        )
    if len(shape) != 2 or 0 in shape:
        raise IngestError(
            f"{path}: {role} image has shape {shape}; expected a 2-D image (rows, columns), "
            "one frame per file",
            path=path,
            dataset=role,
        )
    if dtype is None or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise IngestError(
            f"{path}: {role} image has dtype {dtype}; expected real numbers",
            path=path,
            dataset=role,
        )
    return shape[0], shape[1]


def _tiff_files(folder: Path, pattern: str, role: str) -> list[Path]:
    files = sorted((p for p in folder.glob(pattern) if p.is_file()), key=_natural_key)
    if not files:
        raise IngestError(
            f"{folder}: no {role} files match {pattern!r}; expected at least one "
            "(layout: proj_*.tif, flat_*.tif, dark_*.tif and theta.txt)",
            path=folder,
            dataset=role,
        )
    return files


def _check_tiff_shapes(
    files: Sequence[Path], role: str, expected: tuple[int, int], reference: Path
) -> None:
    for path in files:
        shape = _tiff_frame_shape(path, role)
        if shape != expected:
            raise IngestError(
                f"{path}: {role} image has shape {shape}; expected {expected} (rows, columns), "
                f"the shape of the first projection {reference.name}",
                path=path,
                dataset=role,
            )


def _read_tiff_frame(path: Path, role: str) -> np.ndarray:
    try:
        return np.asarray(tifffile.imread(path, key=0))
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as error:
        raise IngestError(
            f"{path}: cannot read the {role} image ({error}); expected a readable TIFF file",
            path=path,
            dataset=role,
        ) from error


def _read_theta_file(path: Path) -> np.ndarray:
    try:
        text = path.read_text()
    except OSError as error:
        raise IngestError(
            f"{path}: cannot be read ({error}); expected the projection angles in degrees, one "
            "per projection (or pass theta_deg=)",
            path=path,
            dataset="theta",
        ) from error
    try:
        return np.array([float(v) for v in re.split(r"[\s,;]+", text.strip()) if v], np.float64)
    except ValueError as error:
        raise IngestError(
            f"{path}: {error}; expected numbers (angles in degrees) separated by white space or "
            "commas",
            path=path,
            dataset="theta",
        ) from error


def read_tiff_stack(
    folder: str | os.PathLike[str],
    *,
    theta_deg: Sequence[float] | np.ndarray | None = None,
    projections: str = "proj_*.tif",
    flats: str = "flat_*.tif",
    darks: str = "dark_*.tif",
    theta_file: str = "theta.txt",
    rows: slice | tuple[int, int] | None = None,
    angles_per_chunk: int | None = None,
) -> Projections:
    """Open a folder of TIFF images as lazy projections with flats, darks and angles.

    Parameters
    ----------
    folder : path-like
        The folder (layout in the module docstring): one 2-D image per file.
    theta_deg : (angles,) array-like of float, optional
        Projection angles in degrees; default: read from ``theta_file``.
    projections, flats, darks : str
        Glob patterns, relative to ``folder``, of the projection, flat-field
        and dark-field files. Files are ordered by name, digit runs compared
        as numbers.
    theta_file : str
        File in ``folder`` with one angle (degrees) per projection, used when
        ``theta_deg`` is not given.
    rows : slice or (int, int), optional
        Detector rows to read, ``[start, stop)``; default all.
    angles_per_chunk : int, optional
        Projections (files) per chunk; default as in :func:`read_data_exchange`.

    Returns
    -------
    Projections
        As :func:`read_data_exchange`; ``source`` is the folder.

    Raises
    ------
    IngestError
        The folder is missing; no files match a pattern; a file is not a
        readable 2-D TIFF or its shape differs from the first projection's;
        the angles are missing, of the wrong count or not finite; a flat is
        all zero or the flats are not above the darks anywhere.

    Examples
    --------
    >>> raw = read_tiff_stack("raw/c03")  # doctest: +SKIP
    >>> raw.data.chunks[1:]  # doctest: +SKIP
    ((128,), (160,))
    """
    source = Path(folder)
    where = os.fspath(source)
    if angles_per_chunk is not None and (
        not isinstance(angles_per_chunk, int | np.integer) or angles_per_chunk < 1
    ):
        raise ValueError(f"angles_per_chunk must be a positive integer; got {angles_per_chunk!r}")
    if not source.is_dir():
        raise IngestError(
            f"{where}: no such folder; expected a folder of TIFF files (proj_*.tif, "
            "flat_*.tif, dark_*.tif, theta.txt)",
            path=where,
        )
    proj_files = _tiff_files(source, projections, "projections")
    flat_files = _tiff_files(source, flats, "flats")
    dark_files = _tiff_files(source, darks, "darks")
    frame_shape = _tiff_frame_shape(proj_files[0], "projections")
    for files, role in ((proj_files, "projections"), (flat_files, "flats"), (dark_files, "darks")):
        _check_tiff_shapes(files, role, frame_shape, proj_files[0])
    n_angles = len(proj_files)

    if theta_deg is not None:
        theta = np.asarray(theta_deg, dtype=np.float64)
        theta_source, theta_name = where, "theta_deg"
    else:
        theta_path = source / theta_file
        if not theta_path.is_file():
            raise IngestError(
                f"{theta_path}: no such file; expected the projection angles in degrees, one "
                f"per projection ({n_angles}), or pass theta_deg=",
                path=theta_path,
                dataset="theta",
            )
        theta = _read_theta_file(theta_path)
        theta_source, theta_name = os.fspath(theta_path), "theta"
    _check_theta_count(theta, n_angles, theta_source, theta_name, f"{projections!r} in {where}")
    theta_rad = _theta_to_radians(theta, "degrees", theta_source, theta_name)

    r0, r1 = _check_rows(rows, frame_shape[0], f"{proj_files[0]}")

    def frames(files: Sequence[Path], role: str) -> Iterator[np.ndarray]:
        for path in files:
            yield _read_tiff_frame(path, role)[r0:r1]

    _check_frames_content(
        frames(flat_files, "flats"), frames(dark_files, "darks"), where, "flats", "darks"
    )

    shape = (n_angles, r1 - r0, frame_shape[1])
    if angles_per_chunk is None:
        angles_per_chunk = default_chunks(shape, "projections", _DTYPE)[0]
    per_frame_chunk = default_chunks(
        (max(len(flat_files), len(dark_files)), r1 - r0, frame_shape[1]), "projections", _DTYPE
    )[0]

    def stack(files: Sequence[Path], role: str, per_chunk: int) -> da.Array:
        paths = [os.path.abspath(p) for p in files]
        return _lazy(_TiffFrames(paths, role, frame_shape, (r0, r1)), per_chunk, f"ingest-{role}")

    return Projections(
        data=stack(proj_files, "projections", int(angles_per_chunk)),
        flats=stack(flat_files, "flats", per_frame_chunk),
        darks=stack(dark_files, "darks", per_frame_chunk),
        theta_rad=theta_rad,
        source=source,
        rows=(r0, r1),
        layout="tiff",
    )


def read_projections(
    path: str | os.PathLike[str],
    *,
    angles_per_chunk: int | None = None,
    tiff_projections: str = "proj_*.tif",
    tiff_flats: str = "flat_*.tif",
    tiff_darks: str = "dark_*.tif",
    tiff_theta_file: str = "theta.txt",
) -> Projections:
    """The ingest stage: a Data Exchange HDF5 file or a folder of TIFF projections.

    Parameters
    ----------
    path : path-like
        A Data Exchange HDF5 file (:func:`read_data_exchange`) or a folder of
        TIFF frames (:func:`read_tiff_stack`).
    angles_per_chunk : int, optional
        Projections per chunk; default as many whole frames as fit in 16 MiB.
    tiff_projections, tiff_flats, tiff_darks : str
        In a TIFF folder: glob patterns of projections, flats and darks.
    tiff_theta_file : str
        In a TIFF folder: the file of angles in degrees.

    Returns
    -------
    Projections
        Lazy projections, flats and darks, angles in radians.

    Raises
    ------
    IngestError
        As the two readers do, naming the file and what was wrong.
    """
    if Path(path).is_dir():
        return read_tiff_stack(
            path,
            projections=tiff_projections,
            flats=tiff_flats,
            darks=tiff_darks,
            theta_file=tiff_theta_file,
            angles_per_chunk=angles_per_chunk,
        )
    return read_data_exchange(path, angles_per_chunk=angles_per_chunk)
