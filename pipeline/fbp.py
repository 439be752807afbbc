"""Filtered back-projection on NumPy or CuPy slabs, in ASTRA's geometry.

The reconstruction for GPU workers where ASTRA's CUDA build is not installed
(its wheel needs CUDA 12's cuFFT): the filter is a product in Fourier space
(``xp.fft``) and the back-projection a linear interpolation per angle, both
written once for the array module of the input (:mod:`debond.pipeline.arrays`).
On NumPy it is the reference the CuPy path is checked against
(``benchmarks/gpu_check.sh``), and it agrees with ASTRA's CPU FBP
(``tests/pipeline/test_fbp.py``).

Geometry (as :mod:`debond.pipeline.recon`): parallel beam; at angle θ the
point ``(x, y)`` (voxels from the grid centre, ``y`` up, so row ``i`` is at
``y = (n_y - 1)/2 - i``) projects onto detector column
``x cos θ + y sin θ + centre_px``.

Examples
--------
>>> theta = np.linspace(0, np.pi, 90, endpoint=False)
>>> disc = np.zeros((1, 90, 33), np.float32); disc[0, :, 14:19] = 1.0
>>> fbp(disc, theta, 16.0).shape
(1, 33, 33)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from debond.pipeline.arrays import array_module

#: Filters, as :data:`debond.pipeline.recon.FBP_FILTERS` (ASTRA's names).
FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
#: Angles back-projected together: bounds the (angles, y, x) work array.
ANGLE_BATCH = 8


def ramp_filter(size: int, name: str = "ram-lak", xp: Any = np) -> Any:
    """The FBP filter's response on ``xp.fft.rfftfreq(size)``, for unit pixel spacing.

    The ramp is the Fourier transform of the band-limited spatial kernel of
    Kak & Slaney (1/4 at 0, −1/(πk)² at odd k, 0 at even k), which has no DC
    bias; the windows multiply it.

    Parameters
    ----------
    size : int
        Padded detector width, ≥ 2.
    name : str
        One of :data:`FILTERS`.
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    (size // 2 + 1,) float32 array of ``xp``

    Examples
    --------
    >>> response = ramp_filter(64)  # |f| at 1/64 … 0.5 cycles per pixel, small at 0
    >>> round(float(response[0]), 4), round(float(response[16]), 3), round(float(response[-1]), 3)
    (0.0032, 0.25, 0.497)
    """
    if name not in FILTERS:
        raise ValueError(f"fbp_filter must be one of {', '.join(FILTERS)}; got {name!r}")
    k = np.arange(size)
    k = np.minimum(k, size - k)  # circular distance: the kernel is even
    kernel = np.zeros(size)
    kernel[0] = 0.25
    odd = k % 2 == 1
    kernel[odd] = -1.0 / (np.pi * k[odd]) ** 2
    response = np.abs(np.fft.rfft(kernel))
    f = np.fft.rfftfreq(size)  # cycles per pixel, 0 … 0.5
    windows = {
        "ram-lak": np.ones_like(f),
        "shepp-logan": np.sinc(f),
        "cosine": np.cos(np.pi * f),
        "hamming": 0.54 + 0.46 * np.cos(2 * np.pi * f),
        "hann": 0.5 + 0.5 * np.cos(2 * np.pi * f),
    }
    return xp.asarray(response * windows[name], dtype=xp.float32)


def filter_sinograms(sinograms: Any, name: str = "ram-lak", shift: float = 0.0) -> Any:
    """Sinograms filtered along the detector, zero-padded to avoid wrap-around.

    Parameters
    ----------
    sinograms : (..., columns) NumPy or CuPy array
    name : str
        Filter, one of :data:`FILTERS`.
    shift : float
        Columns to move the result by, ``out[c] = filtered[c + shift]``, as a
        phase ramp in the same transform: exact for any fraction, where
        interpolating in the back-projection would blur.

    Returns
    -------
    (..., columns) float32 array of the same kind
    """
    xp = array_module(sinograms)
    n_columns = sinograms.shape[-1]
    size = max(64, 1 << (2 * n_columns - 1).bit_length())  # ≥ 2 columns: no circular overlap
    response = ramp_filter(size, name, xp).astype(xp.complex64)
    if shift:
        ramp = np.exp(2j * np.pi * np.fft.rfftfreq(size) * shift)
        response = response * xp.asarray(ramp, dtype=xp.complex64)
    spectrum = xp.fft.rfft(xp.asarray(sinograms, dtype=xp.float32), n=size, axis=-1)
    filtered = xp.fft.irfft(spectrum * response, n=size, axis=-1)
    return filtered[..., :n_columns].astype(xp.float32)


def backproject(
    filtered: Any, angles: ArrayLike, centre_px: float, shape_yx: tuple[int, int]
) -> Any:
    """Sum over angles of the filtered projections at each voxel, times π / angles.

    Parameters
    ----------
    filtered : (rows, angles, columns) NumPy or CuPy float32 array
    angles : (angles,) array
        Radians, spanning [0, π).
    centre_px : float
        Detector column of the rotation axis (may lie off the detector's
        centre, also beyond its edge for a widened detector).
    shape_yx : (int, int)
        Grid, centred on the axis.

    Returns
    -------
    (rows, y, x) float32 array of the same kind
    """
    xp = array_module(filtered)
    n_rows, n_angles, n_columns = filtered.shape
    n_y, n_x = shape_yx
    theta = np.asarray(angles, dtype=np.float64)
    x = xp.arange(n_x, dtype=xp.float32) - np.float32((n_x - 1) / 2)
    y = np.float32((n_y - 1) / 2) - xp.arange(n_y, dtype=xp.float32)
    out = xp.zeros((n_rows, n_y * n_x), dtype=xp.float32)
    flat = filtered.reshape(n_rows, n_angles * n_columns)
    for start in range(0, n_angles, ANGLE_BATCH):
        batch = slice(start, min(start + ANGLE_BATCH, n_angles))
        cos = xp.asarray(np.cos(theta[batch]), dtype=xp.float32)[:, None, None]
        sin = xp.asarray(np.sin(theta[batch]), dtype=xp.float32)[:, None, None]
        column = x[None, None, :] * cos + y[None, :, None] * sin + np.float32(centre_px)
        left = xp.floor(column)
        weight = (column - left).reshape(column.shape[0], -1)
        left = left.astype(xp.int64).reshape(column.shape[0], -1)
        offset = (xp.arange(batch.start, batch.stop) * n_columns)[:, None]
        for index, share in ((left, 1 - weight), (left + 1, weight)):
            inside = (index >= 0) & (index < n_columns)
            gathered = flat[:, xp.where(inside, index, 0) + offset]  # (rows, batch, voxels)
            out += (gathered * (share * inside)[None]).sum(axis=1)
    out *= np.float32(np.pi / n_angles)
    return out.reshape(n_rows, n_y, n_x)


def fbp(
    sinograms: Any,
    angles: ArrayLike,
    centre_px: float,
    *,
    fbp_filter: str = "ram-lak",
    shape_yx: tuple[int, int] | None = None,
    widen_px: int = 0,
) -> Any:
    """FBP of a slab of sinogram rows on its own device (NumPy: CPU, CuPy: GPU).

    Parameters
    ----------
    sinograms : (rows, angles, columns) NumPy or CuPy array
        Line integrals in voxel units.
    angles : (angles,) array
        Radians over [0, π).
    centre_px : float
        Detector column onto which the rotation axis projects.
    fbp_filter : str
        One of :data:`FILTERS`.
    shape_yx : (int, int), optional
        Default (columns, columns).
    widen_px : int
        Columns of edge values added on either side before filtering, for a
        sample wider than the detector (local tomography), as the CPU path of
        :mod:`debond.pipeline.recon` does: the ramp filter then raises no
        bright rim at the edge of the field of view. The grid stays the same.

    Returns
    -------
    (rows, y, x) float32 array of the input's kind
        Attenuation per voxel (divide by the voxel size for 1/µm).
    """
    n_columns = sinograms.shape[-1]
    grid = (n_columns, n_columns) if shape_yx is None else shape_yx
    if widen_px:
        xp = array_module(sinograms)
        widths = [(0, 0)] * (sinograms.ndim - 1) + [(widen_px, widen_px)]
        sinograms = xp.pad(sinograms, widths, mode="edge")
        centre_px += widen_px
    middle = (sinograms.shape[-1] - 1) / 2
    # the axis brought to the detector's middle in Fourier space, not by interpolation
    filtered = filter_sinograms(sinograms, fbp_filter, shift=centre_px - middle)
    return backproject(filtered, angles, middle, grid)


def peak_bytes(
    rows: int, angles: int, columns: int, shape_yx: tuple[int, int] | None = None
) -> int:
    """Estimated peak memory of :func:`fbp` on one slab, bytes (on its device).

    The larger of the filtering step (input, padded spectrum, padded result,
    cropped result) and the back-projection step (filtered slab, output, one
    batch of :data:`ANGLE_BATCH` angles: coordinates, weights, indices and
    the gathered values for every row).

    Examples
    --------
    >>> peak_bytes(1, 1500, 2048) / 2**20 > 100  # the padded spectrum dominates
    True
    """
    n_y, n_x = (columns, columns) if shape_yx is None else shape_yx
    size = max(64, 1 << (2 * columns - 1).bit_length())
    slab = rows * angles
    filtering = slab * (4 * columns + 8 * (size // 2 + 1) + 4 * size + 4 * columns)
    voxels = n_y * n_x
    batch = min(ANGLE_BATCH, angles) * voxels
    # per voxel of a batch: float32 column, floor, weight; int64 index, its
    # clipped copy and offsets; bool mask; then the gathered float32 values and
    # their weighted copy for every row
    projecting = slab * columns * 4 + rows * voxels * 4 + batch * (3 * 4 + 3 * 8 + 1 + 2 * 4 * rows)
    return int(max(filtering, projecting))
