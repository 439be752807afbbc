"""Prep: flat/dark normalisation, the 7×7 median, ring removal, sinograms.

The projection stages of the paper's workflow before reconstruction
(DESIGN.md: "ingest → normalise → median 7×7 → sinograms")::

    counts (angles, rows, columns)
      │ normalise          −ln((I − D̄) / (F̄ − D̄)), non-positive transmissions counted;
      │                    bad pixels (NaN, ±Inf, dark ≥ flat) counted and repaired
      │ median_filter      7×7 median in every projection, scipy-exact for any chunking
      │ to_sinograms       (rows, angles, columns), whole sinograms per chunk
      │ remove_rings       optional (off by default): per-column offsets removed
      ▼
    sinograms for reconstruction

Every stage is a pure NumPy kernel on one block (``*_kernel``, the functions
the tests compare with NumPy/SciPy on a whole array) and a thin wrapper that
validates its input, derives the halo from the parameters and calls
``map_blocks`` / ``map_overlap`` / ``blockwise`` with an explicit dtype and
meta. Wrappers return lazy Dask arrays; nothing is computed here and nothing
that scales with the volume is held on the client (DESIGN.md, principles 1–3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import dask.array as da
import numpy as np
from dask.base import get_scheduler
from dask_image import ndfilters
from numpy.typing import ArrayLike
from scipy import ndimage

from debond.pipeline.blocks import halo_fits, map_exact, merge_chunks
from debond.storage import default_chunks

__all__ = [
    "MAX_BAD_FRACTION",
    "MEDIAN_MODES",
    "BadPixelError",
    "BadPixels",
    "Normalised",
    "bad_pixel_kernel",
    "check_bad_pixels",
    "detector_mask_kernel",
    "fill_from_neighbours",
    "median_filter",
    "median_kernel",
    "minus_log_kernel",
    "normalise",
    "normalise_kernel",
    "prepare",
    "remove_rings",
    "repair_kernel",
    "ring_kernel",
    "to_sinograms",
    "transmission_kernel",
]

#: Edge modes of :func:`median_filter` (scipy.ndimage names). All but the
#: wrapping ones: the array's own edges are handled by scipy on the edge
#: blocks, so any mode that needs only nearby values is exact.
MEDIAN_MODES = ("reflect", "nearest", "mirror", "constant")


def _meta(dtype: Any, ndim: int = 3) -> np.ndarray:
    return np.empty((0,) * ndim, dtype=dtype)


def _as_dask(array: Any, name: str, dims: str) -> da.Array:
    """``array`` as a Dask array with one axis per name in ``dims`` (comma-separated)
    and real numbers; NumPy input becomes chunks of whole frames (16 MiB)."""
    if not isinstance(array, da.Array):
        array = np.asarray(array)
    ndim = len(dims.split(","))
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D ({dims}); got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers; got dtype {array.dtype}")
    if isinstance(array, da.Array):
        return array
    if ndim == 3:
        return da.from_array(array, chunks=default_chunks(array.shape, "projections", array.dtype))
    return da.from_array(array)


# ------------------------------------------------------------ normalisation

#: Default of ``max_bad_fraction``: the largest share of a projection's pixels
#: that may be bad and still be repaired. A dead detector column is 1/columns
#: of every projection (1.6 % of the 64-px synthetic detectors, 0.05 % of a
#: 2048-px one), zingers and hot pixels far less. Measured on a sample of the
#: small synthetic campaign (90 projections of 48 × 64 px, FBP): with 2 % of
#: every projection bad, isolated or in 4 × 4 blobs, or one dead column, the
#: repaired scan's rotation centre is within 0.01 px of the clean scan's and its
#: reconstruction within 0.0035 1/µm rms (3 % of the silicon–pore contrast);
#: with 10 dead columns of 64 (16 %), 0.013 rms and 0.16 at worst, more than
#: that contrast. A larger share is not a few defective pixels but a broken
#: frame or flats and darks of another scan, which no interpolation recovers.
MAX_BAD_FRACTION = 0.02


class BadPixelError(ValueError):
    """A projection holds more bad pixels than may be repaired.

    The message names the source (file and dataset), the projection and its
    counts of each kind.
    """


class BadPixels(NamedTuple):
    """The bad pixels :func:`normalise` found, by kind and frame (lazy until computed).

    Bad pixels are not normalised but repaired (:func:`fill_from_neighbours`):
    NaN and ±Inf counts in a projection, and detector pixels without a usable
    flat − dark (mean dark ≥ mean flat, or no finite flat or dark frame),
    masked in every projection. Non-finite values in single flat or dark
    frames are left out of that pixel's mean instead.

    Attributes
    ----------
    nan, inf : (angles,) array of int64
        NaN and ±Inf counts in each projection.
    dark_ge_flat : 0-d array of int64
        Detector pixels masked in every projection.
    flats, darks : (frames,) array of int64
        Non-finite values in each flat and dark frame.
    repaired : (angles,) array of int64
        Pixels of each projection filled from their neighbours: the union of
        its NaN and ±Inf with the masked detector pixels.
    pixels : int
        Pixels per projection (rows × columns).

    Compute them with ``dask.compute(result.bad)[0]`` (a :class:`BadPixels`
    of NumPy arrays) and check them with :func:`check_bad_pixels`.
    """

    nan: Any
    inf: Any
    dark_ge_flat: Any
    flats: Any
    darks: Any
    repaired: Any
    pixels: int


class Normalised(NamedTuple):
    """Result of :func:`normalise`.

    Attributes
    ----------
    data : (angles, rows, columns) dask array of float32
        Line integrals of attenuation, ``−ln T`` (dimensionless; divide by the
        voxel size for attenuation per unit length after reconstruction),
        bad pixels repaired.
    clipped : 0-d dask array of int64
        How many transmissions of good pixels were not positive or not
        finite (``I ≤ D̄``) and were set to ``clip_to`` before the logarithm.
        Compute it with ``data`` (``dask.compute(result.data, result.clipped)``
        or a store followed by ``.compute()``) and record it in provenance.
    clip_to : float
        The transmission those values were given.
    bad : BadPixels
        The bad pixels found and repaired, by kind and frame (lazy).
    """

    data: da.Array
    clipped: da.Array
    clip_to: float
    bad: BadPixels


def transmission_kernel(counts: np.ndarray, flat: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """Transmission ``(I − D) / (F − D)`` of one block, float32.

    Parameters
    ----------
    counts : (angles, rows, columns) ndarray
        Projection counts ``I``.
    flat, dark : (rows, columns) ndarray
        Mean flat field ``F`` and mean dark field ``D``, counts.

    Returns
    -------
    (angles, rows, columns) ndarray of float32
        Dimensionless; may hold values ≤ 0, inf or NaN where ``I ≤ D`` or
        ``F ≤ D`` (no warnings are raised for them).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        numerator = counts.astype(np.float32, copy=False) - dark.astype(np.float32, copy=False)
        return numerator / (flat.astype(np.float32) - dark.astype(np.float32))


def _unusable(transmission: np.ndarray) -> np.ndarray:
    """True where a transmission is not positive or not finite (NaN included)."""
    return ~(np.isfinite(transmission) & (transmission > 0))


def minus_log_kernel(transmission: np.ndarray, clip_to: float) -> np.ndarray:
    """``−ln T`` of one block, non-positive or non-finite ``T`` set to ``clip_to`` first.

    Parameters
    ----------
    transmission : ndarray
        Transmission ``T`` (dimensionless).
    clip_to : float
        Positive transmission substituted for unusable values.

    Returns
    -------
    ndarray of float32, the shape of ``transmission``
    """
    t = np.where(_unusable(transmission), np.float32(clip_to), transmission).astype(np.float32)
    return -np.log(t)


def detector_mask_kernel(flat: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """Detector pixels without a usable flat − dark: ``D ≥ F``, or either not finite.

    Parameters
    ----------
    flat, dark : (rows, columns) ndarray
        Mean flat and dark fields, counts (NaN where no frame was finite).

    Returns
    -------
    (rows, columns) ndarray of bool
        True where every projection's pixel must be repaired, not normalised:
        there ``(I − D) / (F − D)`` is negative, infinite or, where both
        ``I`` and ``F`` are below ``D``, positive and meaningless.
    """
    return ~(np.isfinite(flat) & np.isfinite(dark) & (flat > dark))


def bad_pixel_kernel(counts: np.ndarray, detector: np.ndarray) -> np.ndarray:
    """Bad pixels of a block of projections: NaN or ±Inf counts, or a masked detector pixel.

    Parameters
    ----------
    counts : (angles, rows, columns) ndarray
        Projection counts.
    detector : (rows, columns) ndarray of bool
        :func:`detector_mask_kernel` of the mean flat and dark.

    Returns
    -------
    (angles, rows, columns) ndarray of bool
    """
    return ~np.isfinite(counts) | detector


def fill_from_neighbours(frame: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """One projection with each bad pixel set to the median of its nearest good pixels.

    The nearest good pixels of a bad pixel are the good ones in the smallest
    square window around it (3 × 3, then 5 × 5, …) that holds any; only
    pixels good in the input are used, so the result does not depend on the
    order of the repairs. A bad detector column takes the median of the
    columns beside it, an isolated pixel that of its eight neighbours.

    Parameters
    ----------
    frame : (rows, columns) ndarray
        One projection (any values at the bad pixels).
    bad : (rows, columns) ndarray of bool
        Pixels to repair; at least one pixel must be good.

    Returns
    -------
    (rows, columns) ndarray, the dtype of ``frame``
        ``frame`` itself when nothing is bad, else a repaired copy.

    Examples
    --------
    >>> frame = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0], [7.0, 8.0, 9.0]])
    >>> fill_from_neighbours(frame, np.isnan(frame))[1, 1]
    np.float64(5.0)
    """
    if not bad.any():
        return frame
    if bad.all():
        raise BadPixelError(f"all {bad.size} pixels of a projection are bad; none to repair from")
    n_rows, n_columns = bad.shape
    good = np.where(bad, np.nan, frame)
    out = frame.copy()
    rows, columns = np.nonzero(bad)
    radius = 1
    while rows.size:
        offsets = np.arange(-radius, radius + 1)
        r = rows[:, None, None] + offsets[None, :, None]
        c = columns[:, None, None] + offsets[None, None, :]
        inside = (r >= 0) & (r < n_rows) & (c >= 0) & (c < n_columns)
        window = good[np.clip(r, 0, n_rows - 1), np.clip(c, 0, n_columns - 1)]
        window = np.where(inside, window, np.nan).reshape(rows.size, -1)
        found = ~np.isnan(window).all(axis=1)
        out[rows[found], columns[found]] = np.nanmedian(window[found], axis=1)
        rows, columns = rows[~found], columns[~found]
        radius += 1
    return out


def _too_many(
    index: int, n_bad: int, pixels: int, max_bad_fraction: float, source: str, kinds: str = ""
) -> str:
    """The message for a projection with more bad pixels than may be repaired."""
    limit = int(np.floor(max_bad_fraction * pixels))
    detail = f": {kinds}" if kinds else ""
    return (
        f"{source}: projection {index} has {n_bad} bad pixels of {pixels} "
        f"({100 * n_bad / pixels:.3g} %{detail}); at most max_bad_fraction = "
        f"{max_bad_fraction:g} ({limit} px) may be repaired from their neighbours. "
        "Expected finite counts and flats above darks: check the file (a failed frame, "
        "or flats and darks of another scan), or raise [prep] max_bad_fraction"
    )


def repair_kernel(
    attenuation: np.ndarray,
    bad: np.ndarray,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    first: int = 0,
) -> np.ndarray:
    """Repair the bad pixels of whole projections (:func:`fill_from_neighbours`).

    Parameters
    ----------
    attenuation : (angles, rows, columns) ndarray
        Whole projections, ``−ln T``.
    bad : (angles, rows, columns) ndarray of bool
        :func:`bad_pixel_kernel` of their counts.
    max_bad_fraction : float
        Largest share of bad pixels a projection may have.
    first : int
        Index of the block's first projection in the scan (for the message).

    Returns
    -------
    (angles, rows, columns) ndarray, the dtype of ``attenuation``
        ``attenuation`` itself when nothing is bad.

    Raises
    ------
    BadPixelError
        A projection with more than ``max_bad_fraction`` bad pixels.
    """
    counts = bad.sum(axis=(1, 2))
    pixels = bad.shape[1] * bad.shape[2]
    over = np.flatnonzero(counts > max_bad_fraction * pixels)
    if over.size:
        k = int(over[0])
        raise BadPixelError(
            _too_many(first + k, int(counts[k]), pixels, max_bad_fraction, "projections")
        )
    if not counts.any():
        return attenuation
    return np.stack([fill_from_neighbours(a, b) for a, b in zip(attenuation, bad, strict=True)])


def _count_unusable_kernel(transmission: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Unusable transmissions of good pixels in a block, as a (1, 1, 1) int64 array."""
    n = np.count_nonzero(_unusable(transmission) & ~bad)
    return np.full((1,) * transmission.ndim, n, np.int64)


def normalise_kernel(
    counts: np.ndarray,
    flat: np.ndarray,
    dark: np.ndarray,
    clip_to: float = 1e-6,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> tuple[np.ndarray, int]:
    """Flat/dark normalisation, ``−ln`` and bad-pixel repair of whole projections.

    ``T = (I − D) / (F − D)``; ``T ≤ 0`` or non-finite set to ``clip_to``;
    result ``−ln T``; then the bad pixels (:func:`bad_pixel_kernel`) filled
    from their neighbours. What :func:`normalise` applies to any chunking.

    Parameters
    ----------
    counts : (angles, rows, columns) ndarray
    flat, dark : (rows, columns) ndarray
        Mean flat and dark fields, counts.
    clip_to : float
    max_bad_fraction : float

    Returns
    -------
    attenuation : (angles, rows, columns) ndarray of float32
    clipped : int
        How many values of good pixels were set to ``clip_to``.

    Raises
    ------
    BadPixelError
        A projection with more than ``max_bad_fraction`` bad pixels.
    """
    bad = bad_pixel_kernel(counts, detector_mask_kernel(flat, dark))
    transmission = transmission_kernel(counts, flat, dark)
    clipped = int(np.count_nonzero(_unusable(transmission) & ~bad))
    return repair_kernel(minus_log_kernel(transmission, clip_to), bad, max_bad_fraction), clipped


def check_bad_pixels(
    bad: BadPixels, max_bad_fraction: float = MAX_BAD_FRACTION, source: str = "projections"
) -> None:
    """Refuse computed counts with a projection above ``max_bad_fraction``.

    Parameters
    ----------
    bad : BadPixels
        Computed (NumPy) counts, ``dask.compute(result.bad)[0]``.
    max_bad_fraction : float
        Largest share of bad pixels a projection may have.
    source : str
        What the projections are, for the message (file and dataset).

    Raises
    ------
    BadPixelError
        Naming the source, the first projection over the limit, its count of
        each kind and how many projections are over it.
    """
    repaired = np.asarray(bad.repaired)
    over = np.flatnonzero(repaired > max_bad_fraction * bad.pixels)
    if not over.size:
        return
    k = int(over[0])
    kinds = (
        f"{int(bad.nan[k])} NaN, {int(bad.inf[k])} ±Inf, {int(bad.dark_ge_flat)} detector "
        "pixels whose mean dark ≥ mean flat"
    )
    others = f"; {over.size} of {repaired.size} projections are over the limit"
    raise BadPixelError(
        _too_many(k, int(repaired[k]), bad.pixels, max_bad_fraction, source, kinds) + others
    )


def _mean_frame(
    frames: Any, name: str, frame_shape: tuple[int, int], chunks: Sequence[Any]
) -> tuple[da.Array, da.Array]:
    """The mean of a (frames, rows, columns) stack or a (rows, columns) frame, lazy float32,
    chunked like the projections' (rows, columns), and each frame's non-finite count.

    Where a frame is not finite the pixel's mean is that of its finite frames
    (NaN where none is); elsewhere it is the plain mean.
    """
    stack = frames if isinstance(frames, da.Array) else np.asarray(frames)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or tuple(stack.shape[1:]) != frame_shape or stack.shape[0] < 1:
        raise ValueError(
            f"{name} must be (frames ≥ 1, {frame_shape[0]}, {frame_shape[1]}) or "
            f"({frame_shape[0]}, {frame_shape[1]}), frames of the projections' shape "
            f"(rows, columns); got shape {stack.shape}"
        )
    stack = _as_dask(stack, name, "frames, rows, columns")
    stack = stack.rechunk({1: chunks[0], 2: chunks[1]})
    finite = da.isfinite(stack)
    plain = stack.mean(axis=0, dtype=np.float64)
    n_finite = finite.sum(axis=0, dtype=np.int64)
    total = da.where(finite, stack, 0).sum(axis=0, dtype=np.float64)
    of_finite = da.where(n_finite > 0, total / da.maximum(n_finite, 1), np.nan)
    mean = da.where(n_finite == stack.shape[0], plain, of_finite).astype(np.float32)
    return mean, (~finite).sum(axis=(1, 2), dtype=np.int64)


def normalise(
    data: da.Array | np.ndarray,
    flats: ArrayLike | da.Array,
    darks: ArrayLike | da.Array,
    *,
    clip_to: float = 1e-6,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> Normalised:
    """Flat/dark normalisation: projection counts to line integrals ``−ln T``, lazily.

    ``T = (I − D̄) / (F̄ − D̄)`` with ``F̄``, ``D̄`` the per-pixel means of the flat
    and dark frames (a reduction first, then applied block by block). Values
    of ``T`` that are not positive (counts at or below the dark level) are
    set to ``clip_to`` and counted, not hidden: the count is returned lazily
    beside the data for the provenance.

    Bad pixels are found, not averaged in. A NaN or ±Inf in a flat or dark
    frame is left out of that pixel's mean. NaN and ±Inf counts in a
    projection, and detector pixels whose mean dark ≥ mean flat (or that no
    finite flat or dark frame covers), are not normalised but repaired:
    each is set to the median of the nearest good pixels of the same
    projection (:func:`fill_from_neighbours`). They are counted by kind and
    projection (``bad``, lazy). A projection whose bad pixels exceed
    ``max_bad_fraction`` of its pixels raises :class:`BadPixelError` when
    computed; compute ``bad`` first and call :func:`check_bad_pixels` to
    refuse such input before the heavy work.

    Parameters
    ----------
    data : (angles, rows, columns) dask or NumPy array
        Projection counts ``I``, real numbers.
    flats : (flats, rows, columns) or (rows, columns) array, NumPy or Dask
        Flat fields (beam on, no sample), counts.
    darks : (darks, rows, columns) or (rows, columns) array, NumPy or Dask
        Dark fields (beam off), counts.
    clip_to : float
        Transmission given to unusable values, > 0 and ≤ 1 (default 1e-6,
        i.e. ``−ln T ≈ 13.8``).
    max_bad_fraction : float
        Largest share of a projection's pixels that may be bad and repaired,
        in [0, 0.5] (default :data:`MAX_BAD_FRACTION`, 0.02).

    Returns
    -------
    Normalised
        ``data``: (angles, rows, columns) float32 dask array with the angle
        chunks of the input and whole projections per chunk (the repair
        needs them; the values do not depend on the chunking); ``clipped``:
        0-d int64 dask array; ``bad``: the bad pixels by kind and frame.

    Raises
    ------
    ValueError
        ``data`` not 3-D, flat or dark frames of another shape, ``clip_to``
        or ``max_bad_fraction`` out of range.
    TypeError
        Non-numeric input.

    Examples
    --------
    >>> import numpy as np
    >>> counts = np.full((2, 3, 4), 60.0, np.float32)
    >>> counts[1, 2, 3] = np.nan  # one pixel of 12: allowed up to 10 % here
    >>> flats, darks = np.full((3, 3, 4), 110.0), np.full((1, 3, 4), 10.0)
    >>> result = normalise(counts, flats, darks, max_bad_fraction=0.1)
    >>> round(float(result.data[1, 2, 3].compute()), 4), int(result.clipped.compute())
    (0.6931, 0)
    >>> result.bad.nan.compute().tolist()
    [0, 1]
    """
    counts = _as_dask(data, "data", "angles, rows, columns")
    clip = float(clip_to)
    if not (np.isfinite(clip) and 0 < clip <= 1):
        raise ValueError(f"clip_to must be a transmission in (0, 1]; got {clip_to!r}")
    limit = float(max_bad_fraction)
    if not 0 <= limit <= 0.5:
        raise ValueError(
            f"max_bad_fraction must be a share of a projection's pixels in [0, 0.5]; "
            f"got {max_bad_fraction!r}"
        )
    frame_shape = (int(counts.shape[1]), int(counts.shape[2]))
    flat, bad_flats = _mean_frame(flats, "flats", frame_shape, counts.chunks[1:])
    dark, bad_darks = _mean_frame(darks, "darks", frame_shape, counts.chunks[1:])
    detector = da.blockwise(
        detector_mask_kernel, "rc", flat, "rc", dark, "rc", dtype=bool, meta=_meta(bool, 2)
    )
    bad = da.blockwise(
        bad_pixel_kernel, "arc", counts, "arc", detector, "rc", dtype=bool, meta=_meta(bool)
    )
    transmission = da.blockwise(
        transmission_kernel,
        "arc",
        counts,
        "arc",
        flat,
        "rc",
        dark,
        "rc",
        dtype=np.float32,
        meta=_meta(np.float32),
    )
    attenuation = da.map_blocks(
        minus_log_kernel, transmission, clip, dtype=np.float32, meta=_meta(np.float32)
    )
    whole = {1: -1, 2: -1}
    repaired = da.map_blocks(
        _repair_block,
        attenuation.rechunk(whole),
        bad.rechunk(whole),
        limit,
        dtype=np.float32,
        meta=_meta(np.float32),
    )
    per_block = da.map_blocks(
        _count_unusable_kernel,
        transmission,
        bad,
        chunks=tuple((1,) * len(c) for c in transmission.chunks),
        dtype=np.int64,
        meta=_meta(np.int64),
    )
    found = BadPixels(
        nan=da.isnan(counts).sum(axis=(1, 2), dtype=np.int64),
        inf=da.isinf(counts).sum(axis=(1, 2), dtype=np.int64),
        dark_ge_flat=detector.sum(dtype=np.int64),
        flats=bad_flats,
        darks=bad_darks,
        repaired=bad.sum(axis=(1, 2), dtype=np.int64),
        pixels=frame_shape[0] * frame_shape[1],
    )
    return Normalised(repaired, per_block.sum(dtype=np.int64), clip, found)


def _repair_block(
    attenuation: np.ndarray,
    bad: np.ndarray,
    max_bad_fraction: float,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """:func:`repair_kernel` of one block, told where the block's first projection is."""
    first = 0 if block_info is None else int(block_info[0]["array-location"][0][0])
    return repair_kernel(attenuation, bad, max_bad_fraction, first)


# ----------------------------------------------------------------- median


def median_kernel(
    block: np.ndarray, size: int = 7, mode: str = "reflect", cval: float = 0.0
) -> np.ndarray:
    """``size × size`` median in each projection of a block (scipy.ndimage).

    Parameters
    ----------
    block : (angles, rows, columns) ndarray
    size : int
        Window edge in pixels, rows and columns.
    mode : {"reflect", "nearest", "mirror", "constant"}
        scipy.ndimage edge mode.
    cval : float
        Value outside the edge for ``mode="constant"``.

    Returns
    -------
    (angles, rows, columns) ndarray, the dtype of ``block``
    """
    return ndimage.median_filter(block, size=(1, size, size), mode=mode, cval=cval)


def median_filter(
    projections: da.Array | np.ndarray, size: int = 7, *, mode: str = "reflect", cval: float = 0.0
) -> da.Array:
    """The ``size × size`` median of every projection, lazily (the paper's 7×7 denoising).

    Equal, element for element, to ``scipy.ndimage.median_filter(whole,
    size=(1, size, size), mode=mode)`` on the whole array, for any chunking.

    The halo is ``size // 2`` rows and columns. Chunks shorter than the halo
    are merged with their neighbours first, then ``dask_image.ndfilters.
    median_filter`` exchanges halos with ``map_overlap(boundary="none")``:
    blocks on the array's edge get no padding, so scipy applies ``mode`` at
    the true edge itself (dask's own ``"reflect"`` boundary is also scipy's
    half-sample reflection, but it cannot pad an axis shorter than the halo).
    An axis shorter than the halo, such as a 2-row detector, is one chunk and
    goes to :func:`~debond.pipeline.blocks.map_exact`, which gives it no halo.

    Parameters
    ----------
    projections : (angles, rows, columns) dask or NumPy array
    size : int
        Window edge in pixels (default 7), ≥ 1; even sizes follow scipy
        (window offset towards the start).
    mode : {"reflect", "nearest", "mirror", "constant"}
        Edge mode, scipy.ndimage's meaning; default ``"reflect"``
        (``d c b a | a b c d | d c b a``).
    cval : float
        Value outside the edge for ``mode="constant"``.

    Returns
    -------
    (angles, rows, columns) dask array
        The dtype of the input; chunks as the input's (merged where a chunk
        was shorter than the halo).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(2 * 9 * 9, dtype=np.float32).reshape(2, 9, 9)
    >>> filtered = median_filter(da.from_array(x, chunks=(1, 3, 3)), 7)
    >>> np.array_equal(filtered.compute(), ndimage.median_filter(x, size=(1, 7, 7)))
    True
    """
    array = _as_dask(projections, "projections", "angles, rows, columns")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive integer (pixels); got {size!r}")
    if mode not in MEDIAN_MODES:
        raise ValueError(f"mode must be one of {', '.join(MEDIAN_MODES)}; got {mode!r}")
    size = int(size)
    halo = {1: size // 2, 2: size // 2}
    array = merge_chunks(array, halo)
    if halo_fits(array.shape, halo):
        return ndfilters.median_filter(array, size=(1, size, size), mode=mode, cval=float(cval))
    # dask-image passes its halo to map_overlap, which refuses an axis shorter
    # than the halo (a 2-row detector under a 7×7 median); map_exact takes that
    # axis as one chunk without a halo, and scipy's result is the same.
    return map_exact(
        array, median_kernel, halo, dtype=array.dtype, size=size, mode=mode, cval=float(cval)
    )


# -------------------------------------------------------------- sinograms


def _distributed_scheduler_active() -> bool:
    """True when the scheduler that would run a graph now is a distributed Client."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return False
    return bool(get_scheduler() == client.get)


def to_sinograms(
    projections: da.Array | np.ndarray, *, rows_per_chunk: int | None = None
) -> da.Array:
    """Projections (angles, rows, columns) to sinograms (rows, angles, columns), lazily.

    A transpose and a rechunk to whole sinograms: every chunk holds all
    angles and all columns of a few detector rows, as reconstruction reads
    them. The rechunk is an all-to-all exchange; it uses dask's peer-to-peer
    shuffle (``method="p2p"``, bounded memory on the workers) when a
    ``distributed`` Client is the active scheduler, and the task-based
    rechunk otherwise (p2p needs a distributed scheduler to run at all).

    Parameters
    ----------
    projections : (angles, rows, columns) dask or NumPy array
    rows_per_chunk : int, optional
        Sinograms per chunk; default as many as fit in 16 MiB
        (:func:`debond.storage.default_chunks` for ``"sinograms"``), at least one.

    Returns
    -------
    (rows, angles, columns) dask array
        The dtype of the input; chunks ``(rows_per_chunk, angles, columns)``.

    Examples
    --------
    >>> x = da.zeros((180, 8, 16), chunks=(10, 8, 16))
    >>> to_sinograms(x, rows_per_chunk=2).chunks
    ((2, 2, 2, 2), (180,), (16,))
    """
    array = _as_dask(projections, "projections", "angles, rows, columns")
    sinograms = array.transpose(1, 0, 2)
    if rows_per_chunk is None:
        rows_per_chunk = default_chunks(sinograms.shape, "sinograms", sinograms.dtype)[0]
    if isinstance(rows_per_chunk, bool) or not isinstance(rows_per_chunk, int | np.integer):
        raise TypeError(f"rows_per_chunk must be a positive integer; got {rows_per_chunk!r}")
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be a positive integer; got {rows_per_chunk!r}")
    target = (min(int(rows_per_chunk), sinograms.shape[0]), -1, -1)
    method = "p2p" if _distributed_scheduler_active() else "tasks"
    # No intermediate block larger than an input or an output block: left to
    # itself, the rechunk merges the inputs up to dask's array.chunk-size
    # (128 MiB) before the exchange, and a task splitting such a block into
    # shards took a 1 GiB worker past its limit on a 1024³ sample.
    itemsize = sinograms.dtype.itemsize
    largest = max(
        itemsize * math.prod(max(c) for c in sinograms.chunks),
        itemsize * target[0] * sinograms.shape[1] * sinograms.shape[2],
    )
    return sinograms.rechunk(target, method=method, block_size_limit=largest)


# ----------------------------------------------------------- ring removal


def ring_kernel(sinograms: np.ndarray, size: int = 11) -> np.ndarray:
    """Remove per-column offsets (ring artefacts) from whole sinograms.

    For each sinogram (one detector row), the mean over angles of every
    column is compared with its median-smoothed version along the columns;
    the difference, a detector column's constant offset, is subtracted from
    every angle. A column whose gain is off by a factor ``g`` shows in
    ``−ln T`` as the constant ``−ln g`` in every angle, i.e. as a ring after
    reconstruction; this is the mean-profile method of Boin & Haibel (2006),
    *Compensation of ring artefacts in synchrotron tomographic images*,
    Optics Express 14, 12071, with a median instead of a moving average so
    that the sample's edges in the profile are not taken for stripes.

    Limits: where the mean profile is flat (air, a sample's plateau) a stripe
    is removed completely; on a steep slope of the profile the median shifts
    by a rank and a stripe is reduced only to about the profile's change
    over the stripe's width. Peaks and kinks of the profile narrower than the
    window are slightly flattened (in the tests, under 1 % of the largest
    line integral). Stripes wider than about half the window are not seen.

    Parameters
    ----------
    sinograms : (rows, angles, columns) ndarray
        Whole sinograms (all angles and columns), float.
    size : int
        Median window along the columns, pixels; wider than the widest
        stripe (a few pixels), narrower than the sample's features in the
        mean profile.

    Returns
    -------
    (rows, angles, columns) ndarray, the dtype of ``sinograms``
    """
    profile = sinograms.mean(axis=1, dtype=np.float64)  # (rows, columns)
    smooth = ndimage.median_filter(profile, size=(1, size), mode="reflect")
    stripes = (profile - smooth).astype(sinograms.dtype)
    return sinograms - stripes[:, None, :]


def remove_rings(sinograms: da.Array | np.ndarray, *, size: int = 11) -> da.Array:
    """Remove ring artefacts (per-column stripes) from sinograms, lazily.

    Optional, off by default in a campaign: apply it when reconstructions
    show rings. See :func:`ring_kernel` for the method. Needs whole sinograms
    per chunk (as :func:`to_sinograms` makes them); other chunkings are
    rechunked along angles and columns first.

    Parameters
    ----------
    sinograms : (rows, angles, columns) dask or NumPy array of floats
        Line integrals ``−ln T``.
    size : int
        Median window along the columns, pixels (default 11), ≥ 3.

    Returns
    -------
    (rows, angles, columns) dask array
        The dtype and row chunks of the input.
    """
    array = _as_dask(sinograms, "sinograms", "rows, angles, columns")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"sinograms must be floating point (−ln T); got dtype {array.dtype}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 3:
        raise ValueError(f"size must be an integer ≥ 3 (pixels); got {size!r}")
    if len(array.chunks[1]) > 1 or len(array.chunks[2]) > 1:
        array = array.rechunk({1: -1, 2: -1})
    return da.map_blocks(
        ring_kernel, array, size=int(size), dtype=array.dtype, meta=_meta(array.dtype)
    )


def prepare(
    projections: da.Array | np.ndarray,
    flats: ArrayLike | da.Array,
    darks: ArrayLike | da.Array,
    *,
    clip_to: float = 1e-6,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    median_size: int = 1,
    ring_removal: bool = False,
) -> Normalised:
    """The prep stage: normalise, median-filter, reorder into sinograms, remove rings.

    Parameters
    ----------
    projections : (angles, rows, columns) array
        Detector counts.
    flats, darks : (n, rows, columns) arrays
        Flat and dark fields, counts.
    clip_to : float, default 1e-6
        Smallest transmission kept before −log (guards against log(0)).
    max_bad_fraction : float, default 0.02
        Largest share of a projection's pixels that may be bad (NaN, ±Inf, or
        a detector pixel whose mean dark ≥ mean flat) and still be repaired
        from their neighbours (:func:`normalise`).
    median_size : int, default 1
        Median filter of each projection, size × size px (1: none). No median
        gave the most accurate gaps over the independent test scans
        (:mod:`debond.scans`: 0.62 voxel, 3 × 3 0.72); the paper's 7 × 7
        blurs 1–2 px features (2.4 voxels).
    ring_removal : bool, default False
        Remove ring artefacts in sinogram space (:func:`remove_rings`).

    Returns
    -------
    Normalised
        ``data``: (rows, angles, columns) sinograms of line integrals, lazy;
        ``clipped``: how many transmissions were clipped (0-d, lazy);
        ``bad``: the bad pixels found and repaired (lazy).
    """
    normalised = normalise(
        projections, flats, darks, clip_to=clip_to, max_bad_fraction=max_bad_fraction
    )
    sinograms = to_sinograms(median_filter(normalised.data, median_size))
    if ring_removal:
        sinograms = remove_rings(sinograms)
    return normalised._replace(data=sinograms)
